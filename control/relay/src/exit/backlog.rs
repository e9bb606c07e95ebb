//! The exit's own queue of client messages, sans-IO: what the cores delivered, taken out
//! of their queue at once and answered a bounded number per turn, established sessions
//! first.
//!
//! The cores' queue ([`super::ExitInbox`]) is first come, first served, and session ids
//! are free: a client that opens a fresh session with every message can keep it full, and
//! then an established session's messages wait behind thousands of the flood's, or find
//! it full and are lost, for as long as the flood lasts (`pb-perf attack`'s
//! `exit_slow_dns` did that to the honest fetch). So the exit takes every message out
//! at once and files it: a session first heard at least [`super::limits::YOUNG`] ago is
//! *settled* and has a queue of its own, and the settled queues are served in turn, one
//! message each, before any other; every other message (a fresh or young session's, or
//! one without a session) waits in one queue in the order it came. When the backlog holds
//! its most, the newest of those others is dropped; a settled session's queue holds at
//! most its own bound, past which its newest is dropped.
//!
//! What it does not do: tell an attacker's settled sessions from honest ones (an attacker
//! who keeps sessions alive for [`super::limits::YOUNG`] gets turns like anyone), or help
//! a user whose session is younger than that (it waits with the flood).

use std::collections::{HashMap, VecDeque};

use pb_proto::SessionId;

/// Messages the backlog holds at most: less than the cores' queue, so that slots stay
/// free for the cores while the exit sheds.
pub const MOST: usize = 3072;
/// Messages one settled session may have waiting: far more than a session's window of
/// messages in flight.
pub const SESSION_MOST: usize = 512;
/// Messages answered per turn of the exit's loop, between which it expires lookups, reads
/// its connections and sends.
pub const PER_TURN: usize = 64;

/// The messages waiting for the exit (see the module docs).
pub struct Backlog<M> {
    most: usize,
    session_most: usize,
    /// Settled sessions' messages.
    settled: HashMap<SessionId, VecDeque<M>>,
    /// The settled sessions with messages, in the order they are served.
    turns: VecDeque<SessionId>,
    /// Everyone else's, in the order they came.
    others: VecDeque<M>,
    len: usize,
}

impl<M> Backlog<M> {
    /// Empty, holding at most `most` messages and `session_most` of one settled session.
    pub fn new(most: usize, session_most: usize) -> Self {
        Self {
            most: most.max(1),
            session_most: session_most.max(1),
            settled: HashMap::new(),
            turns: VecDeque::new(),
            others: VecDeque::new(),
            len: 0,
        }
    }

    /// Files `message` of `session` (`None`: it names none, and waits with the others);
    /// `settled` if the session was first heard long enough ago. Returns a message the
    /// backlog drops to stay within its bounds (this one, or another's), to be given back
    /// and counted.
    pub fn push(&mut self, session: Option<SessionId>, settled: bool, message: M) -> Option<M> {
        match session.filter(|_| settled) {
            Some(id) => {
                let queue = self.settled.entry(id).or_default();
                if queue.len() >= self.session_most {
                    return Some(message);
                }
                if queue.is_empty() {
                    self.turns.push_back(id);
                }
                queue.push_back(message);
            }
            None => self.others.push_back(message),
        }
        self.len += 1;
        if self.len <= self.most {
            return None;
        }
        // Over the bound: the newest of the others goes; with none, the newest of the
        // session that just added one.
        if let Some(dropped) = self.others.pop_back() {
            self.len -= 1;
            return Some(dropped);
        }
        let id = session?;
        let queue = self.settled.get_mut(&id)?;
        let dropped = queue.pop_back()?;
        if queue.is_empty() {
            self.settled.remove(&id);
            self.turns.retain(|t| *t != id);
        }
        self.len -= 1;
        Some(dropped)
    }

    /// The next message to answer: the next settled session's oldest, else the oldest of
    /// the others.
    pub fn pop(&mut self) -> Option<M> {
        while let Some(id) = self.turns.pop_front() {
            let Some(queue) = self.settled.get_mut(&id) else {
                continue;
            };
            let Some(message) = queue.pop_front() else {
                self.settled.remove(&id);
                continue;
            };
            if queue.is_empty() {
                self.settled.remove(&id);
            } else {
                self.turns.push_back(id);
            }
            self.len -= 1;
            return Some(message);
        }
        let message = self.others.pop_front()?;
        self.len -= 1;
        Some(message)
    }

    /// Messages waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn id(n: u8) -> Option<SessionId> {
        Some(SessionId([n; 16]))
    }

    /// A settled session's message is answered before a flood of fresh sessions' that came
    /// first, and settled sessions take turns.
    #[test]
    fn settled_sessions_go_first_and_take_turns() {
        let mut b = Backlog::new(100, 10);
        for k in 0..50u32 {
            assert_eq!(b.push(id(200), false, 1000 + k), None);
        }
        assert_eq!(b.push(id(1), true, 1), None);
        assert_eq!(b.push(id(1), true, 2), None);
        assert_eq!(b.push(id(1), true, 3), None);
        assert_eq!(b.push(id(2), true, 10), None);
        assert_eq!(b.push(None, true, 99), None, "no session: with the others");
        let first: Vec<u32> = (0..5).map(|_| b.pop().unwrap()).collect();
        assert_eq!(first, [1, 10, 2, 3, 1000]);
        assert_eq!(b.len(), 50);
        let rest: Vec<u32> = std::iter::from_fn(|| b.pop()).collect();
        assert_eq!(rest.len(), 50);
        assert_eq!(rest.last(), Some(&99), "the others in the order they came");
        assert!(b.is_empty());
    }

    /// A full backlog drops the newest of the others, never a settled session's; a settled
    /// session holds at most its bound; a backlog full of settled sessions drops the newest
    /// of the one that adds.
    #[test]
    fn a_full_backlog_sheds_the_others_first() {
        let mut b = Backlog::new(4, 2);
        assert_eq!(b.push(id(9), false, 90), None);
        assert_eq!(b.push(id(8), false, 80), None);
        assert_eq!(b.push(id(1), true, 1), None);
        assert_eq!(b.push(id(1), true, 2), None);
        assert_eq!(b.push(id(1), true, 3), Some(3), "over the session's bound");
        assert_eq!(b.push(id(2), true, 20), Some(80), "the newest other goes");
        assert_eq!(b.push(id(7), false, 70), Some(70));
        assert_eq!(b.push(id(2), true, 21), Some(90));
        assert_eq!(b.push(id(2), true, 22), Some(22), "nothing else to shed");
        assert_eq!(b.len(), 4);
        let all: Vec<u32> = std::iter::from_fn(|| b.pop()).collect();
        assert_eq!(all, [1, 20, 2, 21]);
        assert_eq!(b.len(), 0);
    }
}
