//! Applications' DNS questions waiting for the exit's lookups (SOCKS5 UDP and VPN mode):
//! each lookup is a `resolve` of a session, and every query for the same name and family
//! that comes meanwhile (an application's retries) waits for the same answer.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use pb_proto::{
    SessionId, StreamId,
    dns::{Family, Question},
    frame::Resolution,
};

/// A lookup the exit has not answered after this long is answered SERVFAIL, and forgotten.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most queries that wait for one lookup; more get SERVFAIL at once.
pub(crate) const MAX_WAITERS: usize = 8;

/// A lookup's key: its session and number.
pub(crate) type Key = (SessionId, StreamId);

/// Lookups asked, each with the queries waiting for it and where their answers go (`W`).
pub(crate) struct Pending<W> {
    lookups: HashMap<Key, Lookup<W>>,
}

struct Lookup<W> {
    name: String,
    family: Family,
    asked_at: Instant,
    waiters: Vec<(W, Question)>,
}

/// What became of a question offered to [`Pending::join`].
pub(crate) enum Joined<W> {
    /// It waits for the lookup of its name already asked for.
    Waiting,
    /// No lookup of its name yet: ask the exit, then [`Pending::insert`] it.
    Ask(W, Question),
    /// Too many wait for its name already: answer SERVFAIL.
    Full(W, Question),
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Self {
            lookups: HashMap::new(),
        }
    }
}

impl<W> Pending<W> {
    /// Joins `question` to the lookup of its name and family, if there is one.
    pub(crate) fn join(&mut self, waiter: W, question: Question) -> Joined<W> {
        let Some(lookup) = self
            .lookups
            .values_mut()
            .find(|l| l.name == question.name && l.family == question.family)
        else {
            return Joined::Ask(waiter, question);
        };
        if lookup.waiters.len() >= MAX_WAITERS {
            return Joined::Full(waiter, question);
        }
        lookup.waiters.push((waiter, question));
        Joined::Waiting
    }

    /// A lookup just asked of the exit, under `key`, for `question`.
    pub(crate) fn insert(&mut self, key: Key, waiter: W, question: Question, now: Instant) {
        self.lookups.insert(
            key,
            Lookup {
                name: question.name.clone(),
                family: question.family,
                asked_at: now,
                waiters: vec![(waiter, question)],
            },
        );
    }

    /// The queries waiting for lookup `key` (which is forgotten), if it is one of these.
    pub(crate) fn take(&mut self, key: Key) -> Option<Vec<(W, Question)>> {
        self.lookups.remove(&key).map(|l| l.waiters)
    }

    /// The lookups asked over [`LOOKUP_TIMEOUT`] before `now`, or whose session is no longer
    /// `alive` (its gateway or exit went), forgotten.
    pub(crate) fn expired(
        &mut self,
        now: Instant,
        alive: &[SessionId],
    ) -> Vec<(Key, Vec<(W, Question)>)> {
        let old: Vec<Key> = self
            .lookups
            .iter()
            .filter(|((session, _), l)| {
                now.saturating_duration_since(l.asked_at) > LOOKUP_TIMEOUT
                    || !alive.contains(session)
            })
            .map(|(k, _)| *k)
            .collect();
        old.into_iter()
            .filter_map(|k| Some((k, self.take(k)?)))
            .collect()
    }

    /// Forgets the queries whose answers would go to a place `gone` says is gone (a
    /// connection that closed: its handle may be another's by the time an answer comes).
    pub(crate) fn forget_waiters(&mut self, gone: impl Fn(&W) -> bool) {
        for lookup in self.lookups.values_mut() {
            lookup.waiters.retain(|(w, _)| !gone(w));
        }
        self.lookups.retain(|_, l| !l.waiters.is_empty());
    }

    /// Every lookup's key.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &Key> {
        self.lookups.keys()
    }
}

/// The DNS answer to `question` from the exit's `answer`, and whether it is SERVFAIL.
pub(crate) fn answer(question: &Question, answer: &Resolution) -> (Vec<u8>, bool) {
    match answer {
        Resolution::Found(addresses) => (question.answer(addresses), false),
        Resolution::NoSuchName => (question.no_such_name(), false),
        Resolution::Failed => (question.failed(), true),
    }
}
