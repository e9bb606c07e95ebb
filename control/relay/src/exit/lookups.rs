//! Name lookups for the exit's streams, sans-IO: a queue with a deadline per lookup
//! ([`Lookups`]); the resolver that runs them is [`super::resolver`].
//!
//! The resolver blocks no thread: a lookup resolving holds one UDP socket and a few hundred
//! bytes, and a lookup answered at its deadline, or abandoned, frees its place at once (the
//! resolver is told to drop it: [`Lookups::poll_cancelled`]). So up to [`RESOLVING`] resolve
//! at once and the rest wait; a lookup not answered by [`LOOKUP_DEADLINE`] is answered for
//! its stream (0x04) and forgotten, waiting or resolving. One session has at most
//! [`super::limits::SESSION_LOOKUPS`] waiting or resolving, and at most half of
//! [`RESOLVING`] resolving: the next lookup to go is the oldest of a session below that.
//! What it does not do: make a slow name fast. Clients that open many sessions can still
//! fill every place with slow names, for as long as the resolver takes to give up on them
//! (4 s at most); then other lookups wait or are refused (0x01), never answered later than
//! their deadline.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use pb_proto::{SessionId, StreamId};

use super::limits::Refusal;

/// Lookups resolving at once. Each holds one UDP socket (its A and AAAA queries share it)
/// until it is answered, given up (4 s at most) or abandoned: these are within the file
/// descriptors [`super::limits::RESERVED_FDS`] keeps for the rest of the relay.
pub const RESOLVING: usize = 128;
/// Lookups waiting or resolving in all: room for 4 sessions' worth at
/// [`super::limits::SESSION_LOOKUPS`] each. One waiting holds its name (255 bytes at most).
pub const MAX_LOOKUPS: usize = 256;
/// A name not resolved this long after the stream asked is answered 0x04: longer than a
/// working resolver takes, shorter than the time a SOCKS client waits, and it bounds how
/// long a queue of slow names can hold up anyone else's.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);

/// One lookup's number, to match its answer.
pub type LookupId = u64;

/// A lookup for the resolver.
pub struct Job {
    /// Its number.
    pub id: LookupId,
    /// The name.
    pub name: String,
    /// The port the stream asked for.
    pub port: u16,
}

/// Opaque in `Debug`: it holds a name a user asked for.
impl core::fmt::Debug for Job {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Job")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The stream a lookup is for, until it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Owner {
    session: SessionId,
    stream: StreamId,
    deadline: Duration,
}

struct Waiting {
    id: LookupId,
    owner: Owner,
    name: String,
    port: u16,
}

/// The lookups the exit has asked for, sans-IO.
pub struct Lookups {
    slots: usize,
    most: usize,
    deadline: Duration,
    next_id: LookupId,
    /// In the order asked, so by deadline.
    waiting: VecDeque<Waiting>,
    /// With the resolver.
    resolving: HashMap<LookupId, Owner>,
    /// Taken from the resolving (past their deadline, or their stream gone): the resolver
    /// is to drop them.
    cancelled: Vec<LookupId>,
}

impl Lookups {
    /// None yet, at most `slots` resolving at once and `most` in all, each answered within
    /// `deadline`.
    pub fn new(slots: usize, most: usize, deadline: Duration) -> Self {
        Self {
            slots,
            most,
            deadline,
            next_id: 0,
            waiting: VecDeque::new(),
            resolving: HashMap::new(),
            cancelled: Vec::new(),
        }
    }

    /// Asks for `name` for `stream` of `session` at `now`, or refuses when the exit has its
    /// most lookups.
    pub fn submit(
        &mut self,
        session: SessionId,
        stream: StreamId,
        name: String,
        port: u16,
        now: Duration,
    ) -> Result<(), Refusal> {
        if self.waiting.len() + self.resolving.len() >= self.most {
            return Err(Refusal::Lookups);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.waiting.push_back(Waiting {
            id,
            owner: Owner {
                session,
                stream,
                deadline: now + self.deadline,
            },
            name,
            port,
        });
        Ok(())
    }

    /// The next lookup for the resolver, if it has room: the oldest waiting one whose
    /// session has fewer than half the slots resolving (so one session's slow names never
    /// hold every slot).
    pub fn next_job(&mut self) -> Option<Job> {
        if self.resolving.len() >= self.slots {
            return None;
        }
        let share = (self.slots / 2).max(1);
        let busy = |session: SessionId| {
            self.resolving
                .values()
                .filter(|o| o.session == session)
                .count()
        };
        let at = self
            .waiting
            .iter()
            .position(|w| busy(w.owner.session) < share)?;
        let w = self.waiting.remove(at)?;
        self.resolving.insert(w.id, w.owner);
        Some(Job {
            id: w.id,
            name: w.name,
            port: w.port,
        })
    }

    /// The resolver has answered `id`: the stream to carry on with, or `None` if the lookup
    /// was already answered or abandoned.
    pub fn answered(&mut self, id: LookupId) -> Option<(SessionId, StreamId)> {
        self.resolving.remove(&id).map(|o| (o.session, o.stream))
    }

    /// The streams whose lookups are past their deadline at `now`, to be answered
    /// [`Refusal::LookupTimedOut`]; the lookups are forgotten and their places free at
    /// once (those resolving are for [`Lookups::poll_cancelled`]).
    pub fn expire(&mut self, now: Duration) -> Vec<(SessionId, StreamId)> {
        let mut expired = Vec::new();
        while let Some(w) = self.waiting.front()
            && w.owner.deadline <= now
        {
            expired.push((w.owner.session, w.owner.stream));
            self.waiting.pop_front();
        }
        let cancelled = &mut self.cancelled;
        self.resolving.retain(|id, o| {
            let late = o.deadline <= now;
            if late {
                expired.push((o.session, o.stream));
                cancelled.push(*id);
            }
            !late
        });
        expired
    }

    /// A lookup taken from the resolving since the last call (past its deadline, or its
    /// stream gone), which the resolver is to drop.
    pub fn poll_cancelled(&mut self) -> Option<LookupId> {
        self.cancelled.pop()
    }

    /// Abandons the lookup for `stream` of `session` (the client reset the stream); true if
    /// there was one.
    pub fn forget(&mut self, session: SessionId, stream: StreamId) -> bool {
        let mine = |o: &Owner| o.session == session && o.stream == stream;
        self.abandon(mine) > 0
    }

    /// Abandons every lookup of `session` (it is forgotten).
    pub fn forget_session(&mut self, session: SessionId) {
        self.abandon(|o| o.session == session);
    }

    fn abandon(&mut self, which: impl Fn(&Owner) -> bool) -> usize {
        let before = self.waiting.len() + self.resolving.len();
        self.waiting.retain(|w| !which(&w.owner));
        let cancelled = &mut self.cancelled;
        self.resolving.retain(|id, o| {
            let gone = which(o);
            if gone {
                cancelled.push(*id);
            }
            !gone
        });
        before - self.waiting.len() - self.resolving.len()
    }

    /// Lookups waiting or resolving.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len() + self.resolving.len()
    }
}

/// Opaque in `Debug`: it holds names users asked for.
impl core::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Lookups")
            .field("waiting", &self.waiting.len())
            .field("resolving", &self.resolving.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn session(n: u8) -> SessionId {
        SessionId([n; 16])
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A lookup still waiting at its deadline is returned for its 0x04 and never reaches
    /// the resolver; one resolving at its deadline is returned too, its place is free at
    /// once (the resolver is told to drop it) and its late answer is dropped.
    #[test]
    fn a_lookup_past_its_deadline_is_answered_and_frees_its_place_at_once() {
        let mut l = Lookups::new(1, 8, secs(5));
        l.submit(session(1), StreamId(1), "slow.example".into(), 80, secs(0))
            .unwrap();
        l.submit(session(2), StreamId(1), "fast.example".into(), 80, secs(1))
            .unwrap();
        let slow = l.next_job().unwrap();
        assert_eq!(slow.name, "slow.example");
        assert!(l.next_job().is_none(), "the one slot is taken");
        assert!(l.expire(secs(4)).is_empty());
        assert_eq!(l.poll_cancelled(), None);
        assert_eq!(l.expire(secs(5)), vec![(session(1), StreamId(1))]);
        assert_eq!(l.poll_cancelled(), Some(slow.id), "the resolver drops it");
        assert_eq!(l.poll_cancelled(), None);
        let fast = l.next_job().unwrap();
        assert_eq!(fast.name, "fast.example", "the slot is free at once");
        assert_eq!(l.answered(slow.id), None, "its late answer is dropped");
        assert_eq!(l.answered(fast.id), Some((session(2), StreamId(1))));
        assert_eq!(l.len(), 0);
        assert!(l.expire(secs(60)).is_empty(), "answered once only");
    }

    /// A queue full of one session's slow names holds up another session's lookup no longer
    /// than its deadline, and the exit refuses lookups past its total.
    #[test]
    fn slow_names_hold_others_up_no_longer_than_the_deadline() {
        let mut l = Lookups::new(2, 4, secs(5));
        for s in 1..=3 {
            l.submit(
                session(1),
                StreamId(s),
                format!("slow{s}.example"),
                80,
                secs(0),
            )
            .unwrap();
        }
        l.submit(session(2), StreamId(1), "fast.example".into(), 443, secs(1))
            .unwrap();
        assert_eq!(
            l.submit(session(3), StreamId(1), "x.example".into(), 80, secs(1)),
            Err(Refusal::Lookups)
        );
        let jobs: Vec<Job> = std::iter::from_fn(|| l.next_job()).collect();
        assert_eq!(jobs.len(), 2, "two slots");
        let expired = l.expire(secs(6));
        assert_eq!(expired.len(), 4);
        assert!(expired.contains(&(session(2), StreamId(1))));
        let mut cancelled: Vec<LookupId> = std::iter::from_fn(|| l.poll_cancelled()).collect();
        cancelled.sort_unstable();
        assert_eq!(cancelled, [jobs[0].id, jobs[1].id]);
        // The expired ones freed their slots: the next lookup goes at once.
        l.submit(session(2), StreamId(2), "next.example".into(), 443, secs(7))
            .unwrap();
        assert_eq!(l.answered(jobs[0].id), None);
        let next = l.next_job().unwrap();
        assert_eq!((next.name.as_str(), next.port), ("next.example", 443));
        assert_eq!(l.answered(next.id), Some((session(2), StreamId(2))));
    }

    /// One session with many slow names resolves at most half the slots' worth at once;
    /// another session's lookup, asked later, goes to a free slot ahead of the rest.
    #[test]
    fn one_session_resolves_at_most_half_the_slots_at_once() {
        let mut l = Lookups::new(4, 100, secs(5));
        for s in 1..=10 {
            l.submit(
                session(1),
                StreamId(s),
                format!("s{s}.example"),
                80,
                secs(0),
            )
            .unwrap();
        }
        l.submit(session(2), StreamId(1), "other.example".into(), 80, secs(1))
            .unwrap();
        let jobs: Vec<Job> = std::iter::from_fn(|| l.next_job()).collect();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["s1.example", "s2.example", "other.example"]);
        // A slot frees: session 1's next name goes.
        assert_eq!(l.answered(jobs[0].id), Some((session(1), StreamId(1))));
        assert_eq!(l.next_job().map(|j| j.name), Some("s3.example".into()));
    }

    /// A lookup whose stream is reset, or whose session is forgotten, is never answered.
    #[test]
    fn forgotten_lookups_are_not_answered() {
        let mut l = Lookups::new(1, 8, secs(5));
        l.submit(session(1), StreamId(1), "a.example".into(), 80, secs(0))
            .unwrap();
        l.submit(session(1), StreamId(2), "b.example".into(), 80, secs(0))
            .unwrap();
        l.submit(session(2), StreamId(1), "c.example".into(), 80, secs(0))
            .unwrap();
        let a = l.next_job().unwrap();
        assert!(l.forget(session(1), StreamId(1)));
        assert!(!l.forget(session(1), StreamId(1)), "once");
        assert_eq!(l.poll_cancelled(), Some(a.id), "the resolver drops it");
        l.forget_session(session(1));
        assert_eq!(l.answered(a.id), None);
        let c = l.next_job().unwrap();
        assert_eq!(c.name, "c.example", "b was dropped with its session");
        assert_eq!(l.expire(secs(10)), vec![(session(2), StreamId(1))]);
    }
}
