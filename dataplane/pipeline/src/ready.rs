//! A bounded queue whose consumers never wait for a producer: for queues that relay cores
//! (real-time threads) pop and normal-priority threads fill.
//!
//! crossbeam's `ArrayQueue` lets a consumer see a slot a producer has claimed but not yet
//! written, and then `pop` spins until the producer finishes, calling `yield_now` between
//! tries. A real-time thread yields only to other real-time threads: if the producer runs at
//! normal priority and was preempted in that window on a busy machine (a CPU hog), a core
//! that pops spins at real-time priority on the same CPU for as long as the scheduler takes
//! to move the producer elsewhere, sending nothing (cover builders did this to relay cores
//! for up to 175 ms, docs/perf.md).
//!
//! [`ReadyQueue`] counts what its producers have finished pushing (`published`), and a
//! consumer first reserves one of those (`taken`): the slot at the head is then always
//! written, and the pop returns at once. Producers push one at a time (a lock that only
//! producers take; consumers never do), since with two pushing at once the one that
//! finished second could publish the other's unfinished slot. Every queue here has one
//! producer thread, so the lock is never contended; it only makes a second producer safe.

use std::sync::{
    Mutex, MutexGuard, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use crossbeam::queue::ArrayQueue;

/// See the module docs.
pub struct ReadyQueue<T> {
    queue: ArrayQueue<T>,
    /// Items producers have pushed, counted after each push returns.
    published: AtomicU64,
    /// Items consumers have reserved (each then pops one).
    taken: AtomicU64,
    /// Held by a producer from before its push until it has counted it.
    producers: Mutex<()>,
}

impl<T> core::fmt::Debug for ReadyQueue<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReadyQueue")
            .field("capacity", &self.queue.capacity())
            .field("len", &self.len())
            .finish()
    }
}

/// The right to push, held by one producer at a time: see [`ReadyQueue::producer`].
pub struct Producer<'q, T> {
    queue: &'q ReadyQueue<T>,
    _one_at_a_time: MutexGuard<'q, ()>,
}

impl<T> core::fmt::Debug for Producer<'_, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Producer")
            .field("queue", self.queue)
            .finish()
    }
}

impl<T> Producer<'_, T> {
    /// Whether a push would be refused now. Only consumers act meanwhile, and they only
    /// make room: while this producer holds its right, a queue that is not full takes
    /// the next push.
    pub fn is_full(&self) -> bool {
        self.queue.queue.is_full()
    }

    /// Queues `item`; gives it back if the queue is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        self.queue.queue.push(item)?;
        self.queue.published.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

impl<T> ReadyQueue<T> {
    /// A queue of `capacity` items (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            published: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            producers: Mutex::new(()),
        }
    }

    /// The right to push, waiting for another producer's push to end. Not for real-time
    /// threads unless they are the only producer.
    pub fn producer(&self) -> Producer<'_, T> {
        Producer {
            queue: self,
            _one_at_a_time: self
                .producers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Queues `item` (a producer); gives it back if the queue is full.
    pub fn push(&self, item: T) -> Result<(), T> {
        self.producer().push(item)
    }

    /// Whether the queue holds as many items as it can.
    pub fn is_full(&self) -> bool {
        self.queue.is_full()
    }

    /// Items written and not yet taken.
    pub fn len(&self) -> usize {
        let published = self.published.load(Ordering::Acquire);
        let taken = self.taken.load(Ordering::Acquire);
        usize::try_from(published.saturating_sub(taken)).unwrap_or(usize::MAX)
    }

    /// Whether no written item waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The oldest item, if one is written: never waits for a producer.
    pub fn pop(&self) -> Option<T> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.published.load(Ordering::Acquire)).then_some(taken + 1)
            })
            .ok()?;
        // Every item up to the one reserved is written, and no other consumer pops without
        // a reservation of its own: the head slot is ready, and `pop` takes it at once.
        self.queue.pop()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn it_hands_out_what_was_pushed_in_order() {
        let q = ReadyQueue::new(3);
        assert_eq!(q.len(), 0);
        assert!(q.is_empty() && q.pop().is_none());
        assert!(q.push(1).is_ok() && q.push(2).is_ok() && q.push(3).is_ok());
        assert!(q.is_full() && q.producer().is_full());
        assert_eq!(q.push(4), Err(4));
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(), Some(1));
        assert!(!q.producer().is_full());
        assert!(q.push(5).is_ok());
        let rest: Vec<u64> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(rest, [2, 3, 5]);
        assert!(q.is_empty());
    }

    /// What a producer has put in the queue but not yet counted is not handed out: a
    /// consumer's pop returns at once. (In that window crossbeam's own `pop` would spin on
    /// the head slot, were the producer still writing it.)
    #[test]
    fn it_hands_out_only_what_a_producer_has_counted() {
        let q = ReadyQueue::new(4);
        // A push stopped between the queue and the count.
        assert!(q.queue.push(1).is_ok());
        assert_eq!(q.len(), 0);
        assert!(q.pop().is_none());
        q.published.fetch_add(1, Ordering::Release);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(), Some(1));
    }

    /// A second producer waits while one holds the right to push: the push it would
    /// otherwise make between the first's push and its count could publish the first's
    /// unwritten slot.
    #[test]
    fn producers_push_one_at_a_time() {
        let q = ReadyQueue::new(4);
        let first = q.producer();
        let blocked = std::sync::atomic::AtomicBool::new(true);
        std::thread::scope(|s| {
            let second = s.spawn(|| {
                q.push(2).unwrap();
                blocked.load(Ordering::Acquire)
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            blocked.store(false, Ordering::Release);
            drop(first);
            assert!(
                !second.join().unwrap(),
                "the second push waited for the first"
            );
        });
        assert_eq!(q.pop(), Some(2));
    }

    /// Two producers and two consumers at once: every item comes out once, and each
    /// consumer sees each producer's items in the order pushed.
    #[test]
    fn it_loses_and_repeats_nothing_under_contention() {
        const N: u64 = 50_000;
        let q = ReadyQueue::<[u64; 32]>::new(16);
        let seen: Vec<Vec<u64>> = std::thread::scope(|s| {
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut got = Vec::new();
                        loop {
                            match q.pop() {
                                Some(item) => {
                                    let [n, rest @ ..] = item;
                                    assert!(rest.iter().all(|r| *r == n), "a whole item");
                                    got.push(n);
                                }
                                None if q.taken.load(Ordering::Acquire) >= 2 * N => break,
                                None => std::hint::spin_loop(),
                            }
                        }
                        got
                    })
                })
                .collect();
            for producer in 0..2u64 {
                let q = &q;
                s.spawn(move || {
                    for n in 0..N {
                        let mut item = [producer * N + n; 32];
                        while let Err(back) = q.push(item) {
                            item = back;
                            std::hint::spin_loop();
                        }
                    }
                });
            }
            consumers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for got in &seen {
            for producer in 0..2 {
                let mine: Vec<u64> = got.iter().copied().filter(|n| n / N == producer).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "in order");
            }
        }
        let mut all: Vec<u64> = seen.concat();
        all.sort_unstable();
        assert_eq!(all, (0..2 * N).collect::<Vec<_>>());
    }
}
