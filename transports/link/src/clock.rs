//! A constant rate, sans I/O: slot `k` is due at `start + floor(k × 10⁹ / rate)` ns plus
//! its secret offset ([`SlotClock::with_jitter`]), the same schedule as a relay link's
//! (`pb_mix::Link`). A caller that fell behind gets a few late slots at once, and the rest
//! are counted as missed rather than sent in a burst.

use std::time::Duration;

/// Late slots given at once; older ones are missed.
pub const MAX_BURST: u32 = 4;

/// The largest secret offset of a link's slots either way (at most half an interval):
/// the gaps an observer measures spread over it whatever the machine's load does to the
/// sender's timing (a few tens of microseconds once the sender paces precisely).
pub const SLOT_JITTER: Duration = Duration::from_millis(2);

/// Slots at a constant rate.
#[derive(Clone, Debug)]
pub struct SlotClock {
    start: Duration,
    rate: u32,
    next: u64,
    missed: u64,
    /// The slots' offsets: a key and the largest (ns; 0: none).
    jitter: Option<(zeroize::Zeroizing<[u8; 32]>, u64)>,
}

impl SlotClock {
    /// `rate` slots a second (at least 1) from `start` on; the first is at `start`.
    pub fn new(rate: u32, start: Duration) -> Self {
        Self {
            start,
            rate: rate.max(1),
            next: 0,
            missed: 0,
            jitter: None,
        }
    }

    /// Offsets each slot from its nominal time by a secret amount below `max` (at most half
    /// an interval, so slots keep their order and the rate holds): a keyed hash of the
    /// slot's number under `key`, which nobody else has.
    #[must_use]
    pub fn with_jitter(mut self, max: Duration, key: [u8; 32]) -> Self {
        let max = u64::try_from(max.as_nanos())
            .unwrap_or(u64::MAX)
            .min(1_000_000_000 / u64::from(self.rate) / 2);
        self.jitter = (max > 0).then(|| (zeroize::Zeroizing::new(key), max));
        self
    }

    /// Slots a second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn at(&self, k: u64) -> Duration {
        let ns = u128::from(k) * 1_000_000_000 / u128::from(self.rate);
        let offset = self.jitter.as_ref().map_or(0, |(key, max)| {
            let hash = blake3::keyed_hash(key, &k.to_le_bytes());
            let mut word = [0u8; 8];
            word.copy_from_slice(&hash.as_bytes()[..8]);
            u64::from_le_bytes(word) % max
        });
        self.start
            + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX).saturating_add(offset))
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
        let mut last =
            u64::try_from(elapsed * u128::from(self.rate) / 1_000_000_000).unwrap_or(u64::MAX);
        // Only the last nominally due slot can still be ahead (offsets are below half an
        // interval); the one before it is due, since `next`'s is.
        if last > self.next && self.at(last) > now {
            last -= 1;
        }
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
    fn jittered_slots_keep_the_rate_and_order_and_differ_by_key() {
        let schedule = |key: [u8; 32]| {
            let mut c = SlotClock::new(100, Duration::ZERO).with_jitter(SLOT_JITTER, key);
            let mut times = Vec::new();
            let mut now = Duration::ZERO;
            while now < Duration::from_secs(10) {
                for _ in 0..c.take(now) {
                    times.push(now);
                }
                now += Duration::from_micros(50);
            }
            (times, c.missed())
        };
        let (a, missed) = schedule([1; 32]);
        assert_eq!((a.len(), missed), (1000, 0), "the rate holds");
        for (k, t) in a.iter().enumerate() {
            let nominal = Duration::from_millis(10 * k as u64);
            assert!(*t >= nominal && *t < nominal + SLOT_JITTER + Duration::from_micros(50));
        }
        assert_ne!(a, schedule([2; 32]).0, "another key, other offsets");
        // Capped at half an interval.
        let c = SlotClock::new(1000, Duration::ZERO).with_jitter(SLOT_JITTER, [1; 32]);
        assert!((0..100).all(|k| c.at(k) < Duration::from_micros(1000 * k + 500)));
    }

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
