//! The delay queue: holds each packet until the time its header asks for.
//!
//! A timer wheel with one-millisecond ticks and one slot per tick up to the longest delay
//! allowed: inserting and releasing are O(1), and the entries live in a slab allocated once,
//! so nothing allocates per packet. A packet whose delay is `d` ms, inserted at time `t`, is
//! released by the first [`poll_due`](DelayQueue::poll_due) at or after `t + d` rounded up to
//! the next whole millisecond: it is held at least `d` and less than `d + 1` ms longer than
//! the caller's polling granularity. Packets due in the same tick leave in arrival order.

use pb_sphinx::DelayMs;

use crate::{ConfigError, Time};

/// The largest wheel: delays up to about 18 minutes.
const MAX_TICKS: u64 = 1 << 20;

/// Marks the end of a slot's list.
const NONE: u32 = u32::MAX;

/// Why a packet was not queued (it comes back with the error, so the caller can free it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DelayError {
    /// The queue holds its capacity of packets.
    #[error("delay queue full")]
    Full,
    /// The header asks for a longer delay than this relay allows.
    #[error("delay longer than the relay's maximum")]
    TooLong,
    /// The caller has not polled the queue for longer than a wheel revolution; poll first.
    #[error("delay queue not polled recently")]
    Lagging,
}

struct Entry<T> {
    item: Option<T>,
    next: u32,
}

/// A bounded delay queue of `T` (frame handles).
pub struct DelayQueue<T> {
    heads: Box<[u32]>,
    tails: Box<[u32]>,
    entries: Box<[Entry<T>]>,
    free: u32,
    len: usize,
    /// The next tick to release (every tick before it has been released).
    cursor: u64,
    mask: u64,
    max_delay: DelayMs,
}

impl<T> core::fmt::Debug for DelayQueue<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DelayQueue")
            .field("len", &self.len)
            .field("capacity", &self.entries.len())
            .field("max_delay", &self.max_delay)
            .finish_non_exhaustive()
    }
}

impl<T> DelayQueue<T> {
    /// A queue for up to `capacity` packets with delays up to `max_delay`, starting at `now`.
    pub fn new(capacity: usize, max_delay: DelayMs, now: Time) -> Result<Self, ConfigError> {
        if capacity == 0 || capacity >= NONE as usize {
            return Err(ConfigError::Capacity(capacity, NONE as usize - 1));
        }
        // One slot per tick of the longest delay, plus the rounding tick and the current one.
        let ticks = (u64::from(max_delay.0) + 2).next_power_of_two();
        if ticks > MAX_TICKS {
            return Err(ConfigError::Capacity(
                max_delay.0 as usize,
                (MAX_TICKS - 2) as usize,
            ));
        }
        let entries = (0..capacity)
            .map(|i| Entry {
                item: None,
                next: if i + 1 < capacity { i as u32 + 1 } else { NONE },
            })
            .collect();
        Ok(Self {
            heads: vec![NONE; ticks as usize].into_boxed_slice(),
            tails: vec![NONE; ticks as usize].into_boxed_slice(),
            entries,
            free: 0,
            len: 0,
            cursor: now.0 / Time::MS,
            mask: ticks - 1,
            max_delay,
        })
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Holds `item`, which arrived at `now`, for `delay`.
    pub fn insert(&mut self, now: Time, delay: DelayMs, item: T) -> Result<(), (DelayError, T)> {
        if delay > self.max_delay {
            return Err((DelayError::TooLong, item));
        }
        let due_nanos = now.0.saturating_add(u64::from(delay.0) * Time::MS);
        let due = due_nanos.div_ceil(Time::MS).max(self.cursor);
        if due - self.cursor > self.mask {
            return Err((DelayError::Lagging, item));
        }
        if self.free == NONE {
            return Err((DelayError::Full, item));
        }
        let index = self.free;
        let entry = &mut self.entries[index as usize];
        self.free = entry.next;
        entry.item = Some(item);
        entry.next = NONE;
        let slot = (due & self.mask) as usize;
        match self.tails[slot] {
            NONE => self.heads[slot] = index,
            tail => self.entries[tail as usize].next = index,
        }
        self.tails[slot] = index;
        self.len += 1;
        Ok(())
    }

    /// Releases, in due order, every packet due at or before `now`.
    pub fn poll_due(&mut self, now: Time, mut release: impl FnMut(T)) {
        let now_tick = now.0 / Time::MS;
        while self.cursor <= now_tick {
            if self.len == 0 {
                // Nothing held: jump straight to now.
                self.cursor = now_tick + 1;
                break;
            }
            let slot = (self.cursor & self.mask) as usize;
            let mut index = self.heads[slot];
            self.heads[slot] = NONE;
            self.tails[slot] = NONE;
            while index != NONE {
                let entry = &mut self.entries[index as usize];
                let next = entry.next;
                if let Some(item) = entry.item.take() {
                    self.len -= 1;
                    release(item);
                }
                entry.next = self.free;
                self.free = index;
                index = next;
            }
            self.cursor += 1;
        }
    }

    /// The time of the next tick that holds a packet, if any (for a caller that sleeps).
    pub fn next_due(&self) -> Option<Time> {
        if self.len == 0 {
            return None;
        }
        (0..=self.mask)
            .map(|step| self.cursor + step)
            .find(|tick| self.heads[(tick & self.mask) as usize] != NONE)
            .map(|tick| Time(tick * Time::MS))
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn ms(v: u64) -> Time {
        Time(v * Time::MS)
    }

    #[test]
    fn holds_for_the_delay_and_keeps_arrival_order() {
        let mut q = DelayQueue::new(8, DelayMs(100), ms(0)).expect("queue");
        q.insert(ms(0), DelayMs(10), 'a').expect("a");
        q.insert(Time(3 * Time::MS + 1), DelayMs(7), 'b')
            .expect("b"); // due 10.000001 → tick 11
        q.insert(ms(5), DelayMs(5), 'c').expect("c");
        let mut out = Vec::new();
        q.poll_due(Time(10 * Time::MS - 1), |x| out.push(x));
        assert!(out.is_empty());
        q.poll_due(ms(10), |x| out.push(x));
        assert_eq!(out, ['a', 'c']);
        q.poll_due(ms(11), |x| out.push(x));
        assert_eq!(out, ['a', 'c', 'b']);
        assert!(q.is_empty());
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn bounded_and_typed_refusals() {
        let mut q = DelayQueue::new(2, DelayMs(50), ms(0)).expect("queue");
        assert_eq!(
            q.insert(ms(0), DelayMs(51), 1).unwrap_err(),
            (DelayError::TooLong, 1)
        );
        q.insert(ms(0), DelayMs(1), 1).expect("1");
        q.insert(ms(0), DelayMs(2), 2).expect("2");
        assert_eq!(
            q.insert(ms(0), DelayMs(3), 3).unwrap_err(),
            (DelayError::Full, 3)
        );
        // Not polled for a long time: inserting now would alias in the wheel.
        assert_eq!(
            q.insert(ms(10_000), DelayMs(3), 4).unwrap_err(),
            (DelayError::Lagging, 4)
        );
        let mut out = Vec::new();
        q.poll_due(ms(10_000), |x| out.push(x));
        assert_eq!(out, [1, 2]);
        q.insert(ms(10_000), DelayMs(3), 4).expect("after polling");
        assert_eq!(q.next_due(), Some(ms(10_003)));
    }

    #[test]
    fn config_errors() {
        assert!(DelayQueue::<u8>::new(0, DelayMs(1), ms(0)).is_err());
        assert!(DelayQueue::<u8>::new(1, DelayMs(u32::MAX), ms(0)).is_err());
    }
}
