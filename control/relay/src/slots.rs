//! A bounded queue of fixed-size items between threads, with its buffers allocated once:
//! cores hand delivered messages to the gateway's client link or to the exit without
//! allocating per packet and without a lock (crossbeam `ArrayQueue`s). A full queue refuses
//! the item; the caller counts it.
//!
//! The cores (real-time) take free buffers that the consumer gives back, and the exit
//! runs at normal priority: the free buffers are a [`ReadyQueue`], so that a core never
//! waits for a consumer the machine's load has preempted in the middle of a give-back.

use crossbeam::queue::ArrayQueue;
use pb_pipeline::ready::ReadyQueue;

/// `depth` slots of `T`.
pub struct Slots<T> {
    queue: ArrayQueue<Box<T>>,
    /// Given back by the one consumer thread, taken by the cores.
    free: ReadyQueue<Box<T>>,
}

impl<T> Slots<T> {
    /// A queue of `depth` items, each buffer made by `make` now.
    pub fn new(depth: usize, make: impl Fn() -> T) -> Self {
        let depth = depth.max(1);
        let free = ReadyQueue::new(depth);
        for _ in 0..depth {
            let _ = free.push(Box::new(make()));
        }
        Self {
            queue: ArrayQueue::new(depth),
            free,
        }
    }

    /// Fills a free slot with `fill` and queues it; `false` if none is free.
    pub fn push_with(&self, fill: impl FnOnce(&mut T)) -> bool {
        let Some(mut slot) = self.free.pop() else {
            return false;
        };
        fill(&mut slot);
        match self.queue.push(slot) {
            Ok(()) => true,
            Err(slot) => {
                // Unreachable: the queue holds `depth` and there are `depth` slots, one of
                // them in hand.
                self.give_back(slot);
                false
            }
        }
    }

    /// The oldest queued item; hand it back with [`give_back`](Self::give_back).
    pub fn pop(&self) -> Option<Box<T>> {
        self.queue.pop()
    }

    /// Returns a slot once its item is used.
    pub fn give_back(&self, slot: Box<T>) {
        // The free queue has room for every slot ever made.
        let _ = self.free.push(slot);
    }
}
