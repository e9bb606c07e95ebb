//! A constant rate, sans I/O: slot `k` is due at `start + floor(k × 10⁹ / rate)` ns, the
//! same schedule as a relay link's (`pb_mix::Link`). A caller that fell behind gets a few
//! late slots at once, and the rest are counted as missed rather than sent in a burst.

use std::time::Duration;

/// Late slots given at once; older ones are missed.
pub const MAX_BURST: u32 = 4;

/// Slots at a constant rate.
#[derive(Clone, Debug)]
pub struct SlotClock {
    start: Duration,
    rate: u32,
    next: u64,
    missed: u64,
}

impl SlotClock {
    /// `rate` slots a second (at least 1) from `start` on; the first is at `start`.
    pub fn new(rate: u32, start: Duration) -> Self {
        Self {
            start,
            rate: rate.max(1),
            next: 0,
            missed: 0,
        }
    }

    /// Slots a second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn at(&self, k: u64) -> Duration {
        let ns = u128::from(k) * 1_000_000_000 / u128::from(self.rate);
        self.start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// When the next slot is due.
    pub fn next_due(&self) -> Duration {
        self.at(self.next)
    }

    /// How many slots are due at `now` (at most [`MAX_BURST`]); those are taken.
    pub fn take(&mut self, now: Duration) -> u32 {
        if now < self.next_due() {
            return 0;
        }
        // The last slot due: the greatest k with at(k) <= now.
        let elapsed = (now - self.start).as_nanos();
        let last =
            u64::try_from(elapsed * u128::from(self.rate) / 1_000_000_000).unwrap_or(u64::MAX);
        let due = last + 1 - self.next;
        let given = due.min(u64::from(MAX_BURST));
        self.missed += due - given;
        self.next = last + 1;
        given as u32
    }

    /// Slots skipped because the caller was more than [`MAX_BURST`] behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_fall_at_their_times_and_a_late_caller_misses_all_but_a_few() {
        let ms = Duration::from_millis;
        let mut c = SlotClock::new(100, ms(5));
        assert_eq!(c.take(ms(4)), 0);
        assert_eq!(c.take(ms(5)), 1, "the first slot is at start");
        assert_eq!(c.next_due(), ms(15));
        assert_eq!(c.take(ms(14)), 0);
        assert_eq!(c.take(ms(35)), 3, "15, 25 and 35");
        assert_eq!(c.take(ms(1005)), MAX_BURST);
        assert_eq!(c.missed(), 97 - u64::from(MAX_BURST));
        assert_eq!(c.next_due(), ms(1015));
        // Over a long run, exactly `rate` a second.
        let mut c = SlotClock::new(7, Duration::ZERO);
        let mut n = 0;
        for t in 0..10_000u64 {
            n += c.take(ms(t));
        }
        assert_eq!(u64::from(n), 70);
        assert_eq!(c.missed(), 0);
    }
}
