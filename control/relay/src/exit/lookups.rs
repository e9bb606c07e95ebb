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
//!
//! Slow names must not starve everyone else's, and session ids are free, so when the exit is
//! full it takes places back rather than refuse (the lookups it takes back are answered 0x04
//! as if past their deadline, [`Lookups::poll_preempted`]): a new lookup takes the place of
//! one of the session holding the most (if it holds two more than the asker's), else the
//! waiting one of the youngest session, if it is younger than the asker's
//! ([`Lookups::submit_for`]: fresh ids holding one lookup each cannot keep an established
//! session out), and while lookups wait, one resolving for [`PREEMPT_AFTER`] gives its slot
//! to the next. A name that
//! resolves at all resolves well within that; one that does not holds a slot no longer.
//! That time counts from when the resolver took the lookup ([`Lookups::taken`]), not from
//! when the exit handed it over: on a loaded machine the resolver's thread can wait seconds
//! for a CPU with hundreds of lookups queued, and a name must not lose its slot before it
//! was asked at all (`pb-perf attack`'s `exit_slow_dns` lost honest lookups that way).
//! What it does not do: make a slow name fast, or tell an attacker's old sessions from
//! honest ones.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap, VecDeque},
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

/// While lookups wait, a lookup resolving this long gives its slot to the next (it is
/// answered 0x04): a name that resolves at all, through a working resolver, does so sooner.
pub const PREEMPT_AFTER: Duration = Duration::from_millis(500);

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
    /// When the exit first heard from the session (young sessions give way to old ones).
    since: Duration,
    stream: StreamId,
    deadline: Duration,
    /// When it went to the resolver (while waiting: when it was asked).
    started: Duration,
    /// When the exit saw that the resolver had taken it ([`Lookups::taken`]); `None` while
    /// waiting or queued for the resolver.
    taken: Option<Duration>,
}

/// What one session holds, kept as lookups come and go: the exit asks for a lookup on
/// every stream a message opens, and counting them afresh each time cost it more than the
/// rest of the message (a flood of names slowed it to a few dozen messages a second).
#[derive(Clone, Copy, Debug, Default)]
struct Held {
    /// Waiting or resolving.
    all: usize,
    /// Resolving.
    resolving: usize,
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
    /// Streams whose lookups gave their place to others, to be answered 0x04.
    preempted: Vec<(SessionId, StreamId)>,
    /// What each session holding a lookup holds.
    held: HashMap<SessionId, Held>,
    /// The same sessions by how many they hold (the largest last; of two holding as many,
    /// the lower id).
    ranks: BTreeSet<(usize, Reverse<[u8; 16]>)>,
    /// Jobs handed to the resolver so far.
    sent: u64,
    /// Jobs handed over that the resolver has not been seen to take: (their number among
    /// those sent, their lookup), in the order handed over.
    untaken: VecDeque<(u64, LookupId)>,
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
            preempted: Vec::new(),
            held: HashMap::new(),
            ranks: BTreeSet::new(),
            sent: 0,
            untaken: VecDeque::new(),
        }
    }

    /// Asks for `name` for `stream` of `session` at `now`. When the exit has its most
    /// lookups, takes the place of a lookup of the session holding the most (its newest
    /// waiting one, else its longest resolving), if that session holds at least two more
    /// than `session`; otherwise refuses.
    #[cfg(test)]
    pub fn submit(
        &mut self,
        session: SessionId,
        stream: StreamId,
        name: String,
        port: u16,
        now: Duration,
    ) -> Result<(), Refusal> {
        self.submit_for(session, now, stream, name, port, now)
    }

    /// As [`submit`](Self::submit), for a session first heard at `since`. When no session
    /// holds two more than this one, a waiting lookup of the youngest session, if it is
    /// younger than this one, gives its place: session ids are free, so an attacker's are
    /// fresh, and a flood of them each holding one lookup would otherwise keep an
    /// established session's lookups out for as long as it lasts.
    pub fn submit_for(
        &mut self,
        session: SessionId,
        since: Duration,
        stream: StreamId,
        name: String,
        port: u16,
        now: Duration,
    ) -> Result<(), Refusal> {
        if self.waiting.len() + self.resolving.len() >= self.most
            && !self.make_room(session)
            && !self.give_way(since)
        {
            return Err(Refusal::Lookups);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.count(session, 1, 0);
        self.waiting.push_back(Waiting {
            id,
            owner: Owner {
                session,
                since,
                stream,
                deadline: now + self.deadline,
                started: now,
                taken: None,
            },
            name,
            port,
        });
        Ok(())
    }

    /// Frees a place for `asker` from the session holding the most, if it holds at least two
    /// more; true if it did.
    fn make_room(&mut self, asker: SessionId) -> bool {
        let mine = self.held.get(&asker).map_or(0, |h| h.all);
        let Some(&(most, Reverse(largest))) = self.ranks.last() else {
            return false;
        };
        if most < mine + 2 {
            return false;
        }
        let largest = SessionId(largest);
        if let Some(at) = self
            .waiting
            .iter()
            .rposition(|w| w.owner.session == largest)
            && let Some(w) = self.waiting.remove(at)
        {
            self.count(w.owner.session, -1, 0);
            self.preempted.push((w.owner.session, w.owner.stream));
            return true;
        }
        let oldest = self
            .resolving
            .iter()
            .filter(|(_, o)| o.session == largest)
            .min_by_key(|(id, o)| (o.started, **id))
            .map(|(id, _)| *id);
        if let Some(id) = oldest
            && let Some(o) = self.resolving.remove(&id)
        {
            self.count(o.session, -1, -1);
            self.cancelled.push(id);
            self.preempted.push((o.session, o.stream));
            return true;
        }
        false
    }

    /// Adds `all` to what `session` holds and `resolving` to what it has resolving.
    fn count(&mut self, session: SessionId, all: isize, resolving: isize) {
        let held = self.held.entry(session).or_default();
        self.ranks.remove(&(held.all, Reverse(session.0)));
        held.all = held.all.saturating_add_signed(all);
        held.resolving = held.resolving.saturating_add_signed(resolving);
        if held.all == 0 {
            self.held.remove(&session);
        } else {
            self.ranks.insert((held.all, Reverse(session.0)));
        }
    }

    /// Takes the newest waiting lookup of the youngest session holding one, if that session
    /// is younger than one first heard at `since`.
    fn give_way(&mut self, since: Duration) -> bool {
        let Some(at) = self
            .waiting
            .iter()
            .enumerate()
            .filter(|(_, w)| w.owner.since > since)
            .max_by_key(|(i, w)| (w.owner.since, *i))
            .map(|(i, _)| i)
        else {
            return false;
        };
        match self.waiting.remove(at) {
            Some(w) => {
                self.count(w.owner.session, -1, 0);
                self.preempted.push((w.owner.session, w.owner.stream));
                true
            }
            None => false,
        }
    }

    /// The next lookup for the resolver at `now`, if it has room: the oldest waiting one
    /// whose session has fewer than half the slots resolving (so one session's slow names
    /// never hold every slot). With every slot taken and lookups waiting, the lookup the
    /// resolver has been at longest gives up its slot if that is [`PREEMPT_AFTER`] (one
    /// the resolver has not taken yet keeps it). The jobs must reach the resolver in the
    /// order returned, for [`Lookups::taken`].
    pub fn next_job(&mut self, now: Duration) -> Option<Job> {
        if self.resolving.len() >= self.slots {
            if self.waiting.is_empty() {
                return None;
            }
            let (&id, _) = self
                .resolving
                .iter()
                .filter_map(|(id, o)| Some((id, o.taken?)))
                .filter(|(_, taken)| now.saturating_sub(*taken) >= PREEMPT_AFTER)
                .min_by_key(|(id, taken)| (*taken, **id))?;
            if let Some(o) = self.resolving.remove(&id) {
                self.count(o.session, -1, -1);
                self.cancelled.push(id);
                self.preempted.push((o.session, o.stream));
            }
        }
        let share = (self.slots / 2).max(1);
        let held = &self.held;
        let busy = |session: &SessionId| held.get(session).map_or(0, |h| h.resolving);
        let at = self
            .waiting
            .iter()
            .position(|w| busy(&w.owner.session) < share)?;
        let mut w = self.waiting.remove(at)?;
        self.count(w.owner.session, 0, 1);
        w.owner.started = now;
        self.resolving.insert(w.id, w.owner);
        self.untaken.push_back((self.sent, w.id));
        self.sent += 1;
        Some(Job {
            id: w.id,
            name: w.name,
            port: w.port,
        })
    }

    /// The resolver has taken the first `count` jobs [`Lookups::next_job`] returned (its
    /// own count: [`super::resolver::Resolver::taken`]), as seen at `now`: from now on the
    /// lookups among them still resolving count as being resolved.
    pub fn taken(&mut self, count: u64, now: Duration) {
        while let Some(&(n, id)) = self.untaken.front()
            && n < count
        {
            self.untaken.pop_front();
            if let Some(o) = self.resolving.get_mut(&id) {
                o.taken.get_or_insert(now);
            }
        }
    }

    /// The resolver has answered `id`: the stream to carry on with, or `None` if the lookup
    /// was already answered or abandoned.
    pub fn answered(&mut self, id: LookupId) -> Option<(SessionId, StreamId)> {
        let o = self.resolving.remove(&id)?;
        self.count(o.session, -1, -1);
        Some((o.session, o.stream))
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
        let waited = expired.len();
        let cancelled = &mut self.cancelled;
        self.resolving.retain(|id, o| {
            let late = o.deadline <= now;
            if late {
                expired.push((o.session, o.stream));
                cancelled.push(*id);
            }
            !late
        });
        for (k, &(session, _)) in expired.iter().enumerate() {
            self.count(session, -1, if k < waited { 0 } else { -1 });
        }
        expired
    }

    /// A stream whose lookup gave its place to another since the last call, to be answered
    /// 0x04.
    pub fn poll_preempted(&mut self) -> Option<(SessionId, StreamId)> {
        self.preempted.pop()
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
        let mut gone = Vec::new();
        self.waiting.retain(|w| {
            let hit = which(&w.owner);
            if hit {
                gone.push((w.owner.session, 0));
            }
            !hit
        });
        let cancelled = &mut self.cancelled;
        self.resolving.retain(|id, o| {
            let hit = which(o);
            if hit {
                cancelled.push(*id);
                gone.push((o.session, -1));
            }
            !hit
        });
        for &(session, resolving) in &gone {
            self.count(session, -1, resolving);
        }
        gone.len()
    }

    /// Lookups waiting or resolving (and, being for tests, checks that the counts kept per
    /// session are what counting afresh gives).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        let mut fresh: HashMap<SessionId, (usize, usize)> = HashMap::new();
        for w in &self.waiting {
            fresh.entry(w.owner.session).or_default().0 += 1;
        }
        for o in self.resolving.values() {
            let e = fresh.entry(o.session).or_default();
            e.0 += 1;
            e.1 += 1;
        }
        let kept: HashMap<SessionId, (usize, usize)> = self
            .held
            .iter()
            .map(|(id, h)| (*id, (h.all, h.resolving)))
            .collect();
        assert_eq!(kept, fresh, "the counts kept per session");
        assert_eq!(self.ranks.len(), self.held.len());
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
        let slow = l.next_job(secs(0)).unwrap();
        assert_eq!(slow.name, "slow.example");
        assert!(l.next_job(secs(0)).is_none(), "the one slot is taken");
        assert!(l.expire(secs(4)).is_empty());
        assert_eq!(l.poll_cancelled(), None);
        assert_eq!(l.expire(secs(5)), vec![(session(1), StreamId(1))]);
        assert_eq!(l.poll_cancelled(), Some(slow.id), "the resolver drops it");
        assert_eq!(l.poll_cancelled(), None);
        let fast = l.next_job(secs(0)).unwrap();
        assert_eq!(fast.name, "fast.example", "the slot is free at once");
        assert_eq!(l.answered(slow.id), None, "its late answer is dropped");
        assert_eq!(l.answered(fast.id), Some((session(2), StreamId(1))));
        assert_eq!(l.len(), 0);
        assert!(l.expire(secs(60)).is_empty(), "answered once only");
    }

    /// A full exit takes a place from the session holding the most (two more than the
    /// asker), and refuses when nobody does; a lookup resolving for half a second gives its
    /// slot to a waiting one; what gave way is answered, and the resolver drops it.
    #[test]
    fn a_full_exit_takes_places_from_the_largest_holder_and_slots_from_slow_names() {
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
        l.submit(session(2), StreamId(1), "fast.example".into(), 443, secs(0))
            .unwrap();
        let jobs: Vec<Job> = std::iter::from_fn(|| l.next_job(secs(0))).collect();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            ["slow1.example", "fast.example"],
            "one slot per session"
        );
        // Full: session 1 holds 3, session 3 none, so session 1's newest waiting gives way.
        l.submit(session(3), StreamId(1), "x.example".into(), 80, secs(0))
            .unwrap();
        assert_eq!(l.poll_preempted(), Some((session(1), StreamId(3))));
        // Now 2, 1, 1: session 1 still holds two more than a new session.
        l.submit(session(4), StreamId(1), "y.example".into(), 80, secs(0))
            .unwrap();
        assert_eq!(l.poll_preempted(), Some((session(1), StreamId(2))));
        // 1, 1, 1, 1: nobody does.
        assert_eq!(
            l.submit(session(5), StreamId(1), "z.example".into(), 80, secs(0)),
            Err(Refusal::Lookups)
        );
        assert_eq!(l.poll_preempted(), None);
        // Both slots busy, two waiting, the resolver has both: nothing moves before half a
        // second...
        l.taken(2, secs(0));
        assert!(l.next_job(PREEMPT_AFTER / 2).is_none());
        // ...then the lookup resolving longest gives its slot to the oldest waiting one.
        let next = l.next_job(PREEMPT_AFTER).unwrap();
        assert_eq!(next.name, "x.example");
        assert_eq!(l.poll_preempted(), Some((session(1), StreamId(1))));
        assert_eq!(
            l.poll_cancelled(),
            Some(jobs[0].id),
            "the resolver drops it"
        );
        assert_eq!(l.answered(jobs[0].id), None, "its late answer is dropped");
        assert_eq!(l.len(), 3);
    }

    /// A flood of fresh sessions, one lookup each, fills every place: an established
    /// session's lookup takes the place of the youngest session's waiting one; a session as
    /// young as the flood's gets none.
    #[test]
    fn fresh_sessions_give_way_to_an_established_one() {
        let mut l = Lookups::new(2, 4, secs(5));
        for n in 10..14u8 {
            l.submit_for(
                session(n),
                secs(10) + Duration::from_millis(u64::from(n)),
                StreamId(1),
                format!("slow{n}.example"),
                80,
                secs(10),
            )
            .unwrap();
        }
        // Two resolving, two waiting (sessions 12 and 13, 13 the youngest).
        assert!(l.next_job(secs(10)).is_some() && l.next_job(secs(10)).is_some());
        l.submit_for(
            session(1),
            secs(1),
            StreamId(7),
            "honest.example".into(),
            80,
            secs(10),
        )
        .unwrap();
        assert_eq!(l.poll_preempted(), Some((session(13), StreamId(1))));
        // Another fresh session finds no younger one to take from.
        assert_eq!(
            l.submit_for(
                session(20),
                secs(11),
                StreamId(1),
                "x.example".into(),
                80,
                secs(11)
            ),
            Err(Refusal::Lookups)
        );
        assert_eq!(l.poll_preempted(), None);
    }

    /// A lookup's half second counts from when the resolver took it: one handed over to a
    /// resolver that has not got to it (its thread waiting for a CPU) keeps its slot
    /// however long it waits there, and the lookups taken give way first.
    #[test]
    fn a_lookup_the_resolver_has_not_taken_keeps_its_slot() {
        let mut l = Lookups::new(2, 8, secs(5));
        for (n, name) in ["slow.example", "queued.example", "next.example"]
            .into_iter()
            .enumerate()
        {
            let n = u8::try_from(n).unwrap();
            l.submit(session(n), StreamId(1), name.into(), 80, secs(0))
                .unwrap();
        }
        let slow = l.next_job(secs(0)).unwrap();
        let queued = l.next_job(secs(0)).unwrap();
        assert_eq!(queued.name, "queued.example");
        // The resolver has taken only the first, at 1 s.
        l.taken(1, secs(1));
        assert!(l.next_job(secs(1) + PREEMPT_AFTER / 2).is_none());
        assert_eq!(l.poll_preempted(), None);
        // Four seconds on, the one never taken still keeps its slot; the slow one gives
        // way.
        let next = l.next_job(secs(4)).unwrap();
        assert_eq!(next.name, "next.example");
        assert_eq!(l.poll_preempted(), Some((session(0), StreamId(1))));
        assert_eq!(l.poll_cancelled(), Some(slow.id));
        // The resolver now gets to the queued one (and the next): only after half a second
        // of that does it give way, and only to a waiting lookup.
        l.taken(3, secs(4));
        l.submit(session(9), StreamId(1), "late.example".into(), 80, secs(4))
            .unwrap();
        assert!(l.next_job(secs(4) + PREEMPT_AFTER / 2).is_none());
        assert_eq!(
            l.next_job(secs(4) + PREEMPT_AFTER).unwrap().name,
            "late.example"
        );
        assert_eq!(l.poll_preempted(), Some((session(1), StreamId(1))));
        assert_eq!(l.answered(queued.id), None);
        assert_eq!(l.answered(next.id), Some((session(2), StreamId(1))));
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
        let jobs: Vec<Job> = std::iter::from_fn(|| l.next_job(secs(0))).collect();
        let names: Vec<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        assert_eq!(names, ["s1.example", "s2.example", "other.example"]);
        // A slot frees: session 1's next name goes.
        assert_eq!(l.answered(jobs[0].id), Some((session(1), StreamId(1))));
        assert_eq!(
            l.next_job(secs(0)).map(|j| j.name),
            Some("s3.example".into())
        );
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
        let a = l.next_job(secs(0)).unwrap();
        assert!(l.forget(session(1), StreamId(1)));
        assert!(!l.forget(session(1), StreamId(1)), "once");
        assert_eq!(l.poll_cancelled(), Some(a.id), "the resolver drops it");
        l.forget_session(session(1));
        assert_eq!(l.answered(a.id), None);
        let c = l.next_job(secs(0)).unwrap();
        assert_eq!(c.name, "c.example", "b was dropped with its session");
        assert_eq!(l.expire(secs(10)), vec![(session(2), StreamId(1))]);
    }

    /// The counts kept per session (which choose whose place a full exit takes) stay what
    /// counting afresh gives, through any mix of asking, resolving, answering, expiring,
    /// taking back and forgetting (`len` checks them).
    #[test]
    fn the_counts_kept_per_session_match_the_lookups_through_every_change() {
        let mut l = Lookups::new(4, 12, secs(5));
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        let mut jobs = Vec::new();
        let mut now = Duration::ZERO;
        for step in 0..20_000u32 {
            let who = session(next(6) as u8);
            let stream = StreamId(next(4) as u32);
            match next(8) {
                0..=2 => {
                    let since = Duration::from_millis(next(4_000));
                    let _ = l.submit_for(who, since, stream, "a.example".into(), 80, now);
                }
                3 => jobs.extend(std::iter::from_fn(|| l.next_job(now)).map(|j| j.id)),
                4 => {
                    if !jobs.is_empty() {
                        let k = next(jobs.len() as u64) as usize;
                        let _ = l.answered(jobs.swap_remove(k));
                    }
                }
                5 => {
                    let _ = l.expire(now);
                }
                6 => {
                    let _ = l.forget(who, stream);
                }
                _ => {
                    if next(16) == 0 {
                        l.forget_session(who);
                    }
                    l.taken(l.sent, now);
                }
            }
            while l.poll_preempted().is_some() || l.poll_cancelled().is_some() {}
            now += Duration::from_millis(next(300));
            assert!(l.len() <= 12, "step {step}");
        }
    }
}
