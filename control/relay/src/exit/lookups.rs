//! Name lookups for the exit's streams: a queue with a deadline per lookup, sans-IO
//! ([`Lookups`]), and the resolver threads that run them ([`Resolvers`]).
//!
//! Names are resolved with the system resolver (`getaddrinfo`, so `/etc/hosts` and the
//! host's DNS setup apply), which blocks: a slow name holds its thread until the resolver
//! gives up. So a lookup goes to a thread only when one is free, a lookup not answered by
//! [`LOOKUP_DEADLINE`] is answered for its stream (0x04) and forgotten, whether it still
//! waits (it is dropped) or is resolving (its answer is dropped when it comes, and until then
//! it counts against [`MAX_LOOKUPS`] and holds its thread). One session has at most
//! [`super::limits::SESSION_LOOKUPS`] waiting or resolving, and at most half the threads
//! resolving: the next lookup to go is the oldest of a session below that. What it does not
//! do: make a slow name fast. Clients that open many sessions can still keep every thread busy with slow
//! names; then other lookups are answered at their deadline, never later.

use std::{
    collections::{HashMap, VecDeque},
    net::{SocketAddr, ToSocketAddrs as _},
    sync::Arc,
    thread,
    time::Duration,
};

use crossbeam::channel::{Receiver, Sender, unbounded};
use mio::Waker;
use pb_proto::{SessionId, StreamId};

use super::limits::Refusal;

/// Resolver threads: as many slow names as can be resolving at once. A thread blocked in
/// `getaddrinfo` costs its stack and one socket.
pub const RESOLVERS: usize = 16;
/// Lookups waiting or resolving in all (including those past their deadline still holding
/// a thread): room for 16 sessions' worth at [`super::limits::SESSION_LOOKUPS`] each while
/// the threads are busy.
pub const MAX_LOOKUPS: usize = 256;
/// A name not resolved this long after the stream asked is answered 0x04: longer than a
/// working resolver takes, shorter than the time a SOCKS client waits, and it bounds how
/// long a queue of slow names can hold up anyone else's.
pub const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);

/// One lookup's number, to match its answer.
pub type LookupId = u64;

/// A lookup for a resolver thread.
pub struct Job {
    /// Its number.
    pub id: LookupId,
    /// The name.
    pub name: String,
    /// The port the stream asked for.
    pub port: u16,
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
    threads: usize,
    most: usize,
    deadline: Duration,
    next_id: LookupId,
    /// In the order asked, so by deadline.
    waiting: VecDeque<Waiting>,
    /// On a thread; `None`: past its deadline or its stream gone, the answer to be dropped.
    resolving: HashMap<LookupId, Option<Owner>>,
}

impl Lookups {
    /// None yet, for `threads` resolver threads, at most `most` lookups in all, each
    /// answered within `deadline`.
    pub fn new(threads: usize, most: usize, deadline: Duration) -> Self {
        Self {
            threads,
            most,
            deadline,
            next_id: 0,
            waiting: VecDeque::new(),
            resolving: HashMap::new(),
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

    /// The next lookup for a resolver thread, if one is free: the oldest waiting one whose
    /// session has fewer than half the threads resolving (so one session's slow names never
    /// hold every thread).
    pub fn next_job(&mut self) -> Option<Job> {
        if self.resolving.len() >= self.threads {
            return None;
        }
        let share = (self.threads / 2).max(1);
        let busy = |session: SessionId| {
            self.resolving
                .values()
                .filter(|o| o.is_some_and(|o| o.session == session))
                .count()
        };
        let at = self
            .waiting
            .iter()
            .position(|w| busy(w.owner.session) < share)?;
        let w = self.waiting.remove(at)?;
        self.resolving.insert(w.id, Some(w.owner));
        Some(Job {
            id: w.id,
            name: w.name,
            port: w.port,
        })
    }

    /// A thread has answered `id` (and is free again): the stream to carry on with, or
    /// `None` if the lookup was already answered or abandoned.
    pub fn answered(&mut self, id: LookupId) -> Option<(SessionId, StreamId)> {
        self.resolving
            .remove(&id)
            .flatten()
            .map(|o| (o.session, o.stream))
    }

    /// The streams whose lookups are past their deadline at `now`, to be answered
    /// [`Refusal::LookupTimedOut`]; the lookups are forgotten (one on a thread keeps it
    /// until its answer comes, and is then dropped).
    pub fn expire(&mut self, now: Duration) -> Vec<(SessionId, StreamId)> {
        let mut expired = Vec::new();
        while let Some(w) = self.waiting.front()
            && w.owner.deadline <= now
        {
            expired.push((w.owner.session, w.owner.stream));
            self.waiting.pop_front();
        }
        for slot in self.resolving.values_mut() {
            if let Some(o) = *slot
                && o.deadline <= now
            {
                expired.push((o.session, o.stream));
                *slot = None;
            }
        }
        expired
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
        let before = self.waiting.len();
        self.waiting.retain(|w| !which(&w.owner));
        let mut n = before - self.waiting.len();
        for slot in self.resolving.values_mut() {
            if slot.as_ref().is_some_and(&which) {
                *slot = None;
                n += 1;
            }
        }
        n
    }

    /// Lookups waiting or resolving, the abandoned ones still on a thread included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len() + self.resolving.len()
    }
}

/// A thread's answer: the lookup and the addresses (or the error).
pub type Answer = (LookupId, std::io::Result<Vec<SocketAddr>>);

/// The resolver threads.
pub struct Resolvers {
    jobs: Sender<Job>,
    answers: Receiver<Answer>,
}

impl Resolvers {
    /// Starts `threads` threads, which wake the exit's poll through `waker` when they answer.
    /// They end when this is dropped.
    pub fn start(threads: usize, waker: Arc<Waker>) -> std::io::Result<Self> {
        let (jobs, requests) = unbounded::<Job>();
        let (answer, answers) = unbounded();
        for i in 0..threads {
            let requests = requests.clone();
            let answer = answer.clone();
            let waker = waker.clone();
            thread::Builder::new()
                .name(format!("pb-exit-dns-{i}"))
                .spawn(move || {
                    while let Ok(job) = requests.recv() {
                        let result = (job.name.as_str(), job.port)
                            .to_socket_addrs()
                            .map(Iterator::collect);
                        if answer.send((job.id, result)).is_err() {
                            return;
                        }
                        let _ = waker.wake();
                    }
                })?;
        }
        Ok(Self { jobs, answers })
    }

    /// Hands a lookup to a thread ([`Lookups::next_job`] ensures one is free).
    pub fn run(&self, job: Job) {
        // The threads hold the receiver until this is dropped, so the send cannot fail.
        let _ = self.jobs.send(job);
    }

    /// The next answer, if any.
    pub fn try_answer(&self) -> Option<Answer> {
        self.answers.try_recv().ok()
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

    /// A lookup still waiting at its deadline is returned for its 0x04 and never reaches a
    /// thread; one resolving at its deadline is returned too, and its late answer is dropped
    /// while its thread stays counted busy until then.
    #[test]
    fn a_lookup_past_its_deadline_is_answered_and_its_late_answer_dropped() {
        let mut l = Lookups::new(1, 8, secs(5));
        l.submit(session(1), StreamId(1), "slow.example".into(), 80, secs(0))
            .unwrap();
        l.submit(session(2), StreamId(1), "fast.example".into(), 80, secs(1))
            .unwrap();
        let slow = l.next_job().unwrap();
        assert_eq!(slow.name, "slow.example");
        assert!(l.next_job().is_none(), "the one thread is busy");
        assert!(l.expire(secs(4)).is_empty());
        assert_eq!(l.expire(secs(5)), vec![(session(1), StreamId(1))]);
        assert_eq!(l.expire(secs(6)), vec![(session(2), StreamId(1))]);
        assert!(
            l.next_job().is_none(),
            "the expired lookup never reaches a thread"
        );
        assert_eq!(l.len(), 1, "the slow one still holds its thread");
        assert_eq!(l.answered(slow.id), None, "its late answer is dropped");
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
        assert_eq!(jobs.len(), 2, "two threads");
        let expired = l.expire(secs(6));
        assert_eq!(expired.len(), 4);
        assert!(expired.contains(&(session(2), StreamId(1))));
        // Once a thread answers, the next lookup goes to it.
        l.submit(session(2), StreamId(2), "next.example".into(), 443, secs(7))
            .unwrap();
        assert!(l.next_job().is_none());
        assert_eq!(l.answered(jobs[0].id), None);
        let next = l.next_job().unwrap();
        assert_eq!((next.name.as_str(), next.port), ("next.example", 443));
        assert_eq!(l.answered(next.id), Some((session(2), StreamId(2))));
    }

    /// One session with many slow names resolves at most half the threads' worth at once;
    /// another session's lookup, asked later, goes to a free thread ahead of the rest.
    #[test]
    fn one_session_resolves_at_most_half_the_threads_at_once() {
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
        // A thread frees: session 1's next name goes.
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
        l.forget_session(session(1));
        assert_eq!(l.answered(a.id), None);
        let c = l.next_job().unwrap();
        assert_eq!(c.name, "c.example", "b was dropped with its session");
        assert_eq!(l.expire(secs(10)), vec![(session(2), StreamId(1))]);
    }
}
