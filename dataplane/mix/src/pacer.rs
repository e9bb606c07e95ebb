//! One outgoing link: a bounded queue of packets ready to go, and a pacer that gives the link
//! exactly `rate` transmission slots in every second, whatever the load.
//!
//! Slot `k` is at `origin + floor(k * 10^9 / rate)` ns, so every second from the origin holds
//! exactly `rate` slots and no rounding drift accumulates. At each slot the oldest queued real
//! packet goes out; if none is queued a cover packet does. An observer of the link therefore
//! sees one packet per slot, busy or idle. If the caller polls late, the slots it missed are
//! sent at once (up to `max_burst` of them; older ones are counted as missed, never silently
//! skipped). Past its capacity the queue refuses packets (counted); it never grows.
//!
//! Whether a slot is sent never depends on what is queued: before a slot is filled the
//! link asks its [`Filler`] whether cover is ready, real packet queued or not. Without cover
//! the slot is missed, and a queued real packet waits for the next one, so a link short of
//! cover looks the same busy and idle (a pacer that sent real packets regardless would show
//! exactly the real traffic in the gaps of its cover).

use std::collections::VecDeque;

use crate::{ConfigError, Time};

/// What filled a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// A forwarded packet.
    Real,
    /// A cover packet.
    Cover,
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Slots filled with real packets.
    pub real: u64,
    /// Slots filled with cover.
    pub cover: u64,
    /// Packets refused because the queue was full.
    pub dropped_full: u64,
    /// Slots that went unfilled: more than `max_burst` late, or no cover packet to hand.
    pub missed: u64,
}

/// What a link asks for at each slot: whether cover is ready (asked at every slot, so that
/// the answer decides the slot whatever is queued) and, for an idle slot, the cover packet.
pub trait Filler<T> {
    /// Whether a cover packet could fill this slot now.
    fn ready(&mut self) -> bool;
    /// A cover packet for this slot (`None`: it could not be made after all; the slot is
    /// missed).
    fn cover(&mut self) -> Option<T>;
}

/// Cover from a closure that is always ready (tests, and sources that build on demand).
impl<T, F: FnMut() -> Option<T>> Filler<T> for F {
    fn ready(&mut self) -> bool {
        true
    }
    fn cover(&mut self) -> Option<T> {
        self()
    }
}

/// A link's queue and pacer, holding the caller's frame handles `T`.
pub struct Link<T> {
    queue: VecDeque<T>,
    capacity: usize,
    rate: u64,
    origin: Time,
    /// Index of the next slot to fill.
    next_slot: u64,
    /// Its time, kept so that the cores' every-turn look at the next deadline costs no
    /// hash of the slot's offset.
    next_time: Time,
    max_burst: u64,
    /// Each slot's offset from its nominal time: a keyed hash of its number below `max`
    /// (0: none). See [`Link::with_jitter`].
    jitter: Option<Jitter>,
    /// Counters.
    pub stats: LinkStats,
}

/// A link's secret slot offsets.
struct Jitter {
    key: zeroize::Zeroizing<[u8; 32]>,
    max: u64,
}

impl Jitter {
    /// Slot `k`'s offset, in `0..max` nanoseconds.
    fn of(&self, k: u64) -> u64 {
        let hash = blake3::keyed_hash(&self.key, &k.to_le_bytes());
        let mut word = [0u8; 8];
        word.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(word) % self.max
    }
}

impl<T> core::fmt::Debug for Link<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Link")
            .field("rate", &self.rate)
            .field("queued", &self.queue.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<T> Link<T> {
    /// A link sending `rate` packets per second from `origin` on, queueing at most `capacity`
    /// real packets and catching up at most `max_burst` late slots per poll.
    pub fn new(
        rate: u32,
        capacity: usize,
        max_burst: u32,
        origin: Time,
    ) -> Result<Self, ConfigError> {
        if rate == 0 {
            return Err(ConfigError::ZeroRate);
        }
        if capacity == 0 || capacity > 1 << 24 {
            return Err(ConfigError::Capacity(capacity, 1 << 24));
        }
        Ok(Self {
            queue: VecDeque::with_capacity(capacity),
            capacity,
            rate: u64::from(rate),
            origin,
            next_slot: 0,
            next_time: origin,
            max_burst: u64::from(max_burst.max(1)),
            jitter: None,
            stats: LinkStats::default(),
        })
    }

    /// Offsets each slot from its nominal time by a secret amount below `max` nanoseconds
    /// (at most half the slot interval, so slots keep their order and the rate per second
    /// holds): a keyed hash of the slot's number under `key`, drawn afresh for every link.
    /// The gaps an observer measures then spread over `max` whatever the machine does, and
    /// the tens of microseconds that load can still move a send are lost in that spread;
    /// without the key nobody can take the offsets out. Zero turns it off.
    #[must_use]
    pub fn with_jitter(mut self, max: u64, key: [u8; 32]) -> Self {
        let max = max.min(Time::SECOND / self.rate / 2);
        self.jitter = (max > 0).then(|| Jitter {
            key: zeroize::Zeroizing::new(key),
            max,
        });
        self.next_time = self.slot_time(self.next_slot);
        self
    }

    /// Packets per second.
    pub fn rate(&self) -> u32 {
        self.rate as u32
    }

    /// Real packets waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The time of slot `k`.
    fn slot_time(&self, k: u64) -> Time {
        let offset = u128::from(k) * u128::from(Time::SECOND) / u128::from(self.rate);
        let jitter = self.jitter.as_ref().map_or(0, |j| j.of(k));
        self.origin
            .plus(u64::try_from(offset).unwrap_or(u64::MAX))
            .plus(jitter)
    }

    /// The time of the next slot (for a caller that sleeps until then).
    pub fn next_slot_time(&self) -> Time {
        self.next_time
    }

    /// Takes every queued packet out (the link is going away).
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.queue.drain(..)
    }

    /// Queues a real packet for the next free slot; gives it back when the queue is full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        if self.queue.len() >= self.capacity {
            self.stats.dropped_full += 1;
            return Err(item);
        }
        self.queue.push_back(item);
        Ok(())
    }

    /// Queues a packet ahead of every other (an answer that should not wait behind a queue
    /// of bulk data); gives it back when the queue is full.
    pub fn push_front(&mut self, item: T) -> Result<(), T> {
        if self.queue.len() >= self.capacity {
            self.stats.dropped_full += 1;
            return Err(item);
        }
        self.queue.push_front(item);
        Ok(())
    }

    /// Fills every slot due at or before `now`: `send(packet, kind, slot_time)` for each, real
    /// packets first-in first-out, `filler.cover()` when none is queued; a slot for which
    /// `filler.ready()` says no is missed whatever is queued.
    pub fn poll_transmit(
        &mut self,
        now: Time,
        filler: &mut impl Filler<T>,
        mut send: impl FnMut(T, Sent, Time),
    ) {
        if now < self.origin {
            return;
        }
        // Slots due: the number of k with slot_time(k) <= now, i.e. floor((now - origin) *
        // rate / 10^9) + 1.
        let elapsed = u128::from(now.0 - self.origin.0);
        let mut due = u64::try_from(elapsed * u128::from(self.rate) / u128::from(Time::SECOND) + 1)
            .unwrap_or(u64::MAX);
        // Of the slots whose nominal time has come, only the last can still be ahead: its
        // offset is below half an interval.
        if due > self.next_slot && self.slot_time(due - 1) > now {
            due -= 1;
        }
        if due <= self.next_slot {
            return;
        }
        let late = due - self.next_slot;
        if late > self.max_burst {
            self.stats.missed += late - self.max_burst;
            self.next_slot = due - self.max_burst;
        }
        while self.next_slot < due {
            let at = self.slot_time(self.next_slot);
            self.next_slot += 1;
            if !filler.ready() {
                self.stats.missed += 1;
            } else if let Some(item) = self.queue.pop_front() {
                self.stats.real += 1;
                send(item, Sent::Real, at);
            } else if let Some(item) = filler.cover() {
                self.stats.cover += 1;
                send(item, Sent::Cover, at);
            } else {
                self.stats.missed += 1;
            }
        }
        self.next_time = self.slot_time(self.next_slot);
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn exactly_rate_slots_per_second_with_uneven_spacing() {
        // 3 per second: slots at 0, 333,333,333 and 666,666,666 ns, then 1 s, ...
        let mut link = Link::new(3, 10, 100, Time(0)).expect("link");
        let mut times = Vec::new();
        link.poll_transmit(Time(2 * Time::SECOND - 1), &mut || Some(()), |_, _, at| {
            times.push(at.0)
        });
        assert_eq!(
            times,
            [
                0,
                333_333_333,
                666_666_666,
                1_000_000_000,
                1_333_333_333,
                1_666_666_666
            ]
        );
    }

    #[test]
    fn jittered_slots_keep_the_rate_and_their_order_and_spread_by_the_key() {
        const RATE: u32 = 100;
        let interval = Time::SECOND / u64::from(RATE);
        let times = |key: [u8; 32], max: u64| {
            let mut link = Link::new(RATE, 10, 1000, Time(0))
                .expect("link")
                .with_jitter(max, key);
            let mut times = Vec::new();
            // Polled every 100 µs, as a core would, for 10 s.
            let mut now = Time(0);
            while now.0 < 10 * Time::SECOND {
                link.poll_transmit(now, &mut || Some(()), |_, _, at| times.push(at.0));
                now = now.plus(100_000);
            }
            times
        };
        let a = times([1; 32], 2 * Time::MS);
        assert_eq!(a.len(), 10 * RATE as usize, "the rate holds");
        for (k, t) in a.iter().enumerate() {
            let nominal = k as u64 * interval;
            assert!(
                (nominal..nominal + 2 * Time::MS).contains(t),
                "slot {k} at {t}"
            );
        }
        assert!(a.windows(2).all(|w| w[0] < w[1]), "in order");
        let offsets: Vec<u64> = a
            .iter()
            .enumerate()
            .map(|(k, t)| t - k as u64 * interval)
            .collect();
        let spread = offsets.iter().max().unwrap() - offsets.iter().min().unwrap();
        assert!(spread > Time::MS, "offsets spread over the range: {spread}");
        assert_ne!(
            a,
            times([2; 32], 2 * Time::MS),
            "another key, other offsets"
        );
        // Half an interval at most, and zero is the plain schedule.
        let capped = times([1; 32], interval * 10);
        assert!(
            capped
                .iter()
                .enumerate()
                .all(|(k, t)| t - k as u64 * interval < interval / 2)
        );
        let plain = times([1; 32], 0);
        assert!(
            plain
                .iter()
                .enumerate()
                .all(|(k, t)| *t == k as u64 * interval)
        );
    }

    #[test]
    fn real_first_then_cover_and_a_bounded_queue() {
        let mut link = Link::new(1000, 2, 10, Time(0)).expect("link");
        assert!(link.push(1).is_ok());
        assert!(link.push(2).is_ok());
        assert_eq!(link.push(3), Err(3));
        let mut out = Vec::new();
        link.poll_transmit(Time(3 * Time::MS), &mut || Some(0), |x, kind, _| {
            out.push((x, kind))
        });
        assert_eq!(
            out,
            [
                (1, Sent::Real),
                (2, Sent::Real),
                (0, Sent::Cover),
                (0, Sent::Cover)
            ]
        );
        assert_eq!(
            link.stats,
            LinkStats {
                real: 2,
                cover: 2,
                dropped_full: 1,
                missed: 0
            }
        );
    }

    #[test]
    fn late_polls_catch_up_to_the_burst_limit_and_count_the_rest() {
        let mut link = Link::new(1000, 4, 5, Time(0)).expect("link");
        let mut n = 0;
        link.poll_transmit(Time(0), &mut || Some(()), |_, _, _| n += 1);
        assert_eq!(n, 1);
        // 20 ms late: 20 slots due, 5 sent, 15 missed.
        link.poll_transmit(Time(20 * Time::MS), &mut || Some(()), |_, _, _| n += 1);
        assert_eq!(n, 6);
        assert_eq!(link.stats.missed, 15);
        assert_eq!(link.next_slot_time(), Time(21 * Time::MS));
    }

    /// Cover that is ready or not as the test says, counting what it hands out.
    struct Scripted {
        ready: bool,
        made: u32,
    }

    impl Filler<u32> for Scripted {
        fn ready(&mut self) -> bool {
            self.ready
        }
        fn cover(&mut self) -> Option<u32> {
            self.made += 1;
            Some(0)
        }
    }

    #[test]
    fn a_packet_pushed_to_the_front_takes_the_next_slot_within_capacity() {
        let mut link = Link::new(10, 3, 10, Time(0)).expect("link");
        link.push(1).unwrap();
        link.push(2).unwrap();
        link.push_front(9).unwrap();
        assert_eq!(link.push_front(8), Err(8));
        assert_eq!(link.stats.dropped_full, 1);
        let mut sent = Vec::new();
        link.poll_transmit(Time(250_000_000), &mut || None, |p, _, _| sent.push(p));
        assert_eq!(sent, [9, 1, 2]);
    }

    #[test]
    fn a_slot_without_cover_is_missed_for_real_packets_too() {
        // Idle and busy links short of cover miss the same slots: the schedule on the wire
        // does not depend on what is queued.
        let schedule = |queued: &[u32]| {
            let mut link = Link::new(1000, 16, 100, Time(0)).expect("link");
            for q in queued {
                assert!(link.push(*q).is_ok());
            }
            let mut filler = Scripted {
                ready: true,
                made: 0,
            };
            let mut sent = Vec::new();
            for ms in 0..6u64 {
                // Cover runs out in slots 2 and 3.
                filler.ready = !(2..4).contains(&ms);
                link.poll_transmit(Time(ms * Time::MS), &mut filler, |_, _, at| sent.push(at));
            }
            (sent, link.stats.missed, link.queued())
        };
        let (idle, idle_missed, _) = schedule(&[]);
        let (busy, busy_missed, left) = schedule(&[1, 2, 3, 4, 5]);
        assert_eq!(idle, busy);
        assert_eq!((idle_missed, busy_missed), (2, 2));
        assert_eq!(idle.len(), 4);
        // Four slots sent, so one real packet is still waiting.
        assert_eq!(left, 1);
    }

    #[test]
    fn config_errors() {
        assert_eq!(
            Link::<()>::new(0, 1, 1, Time(0)).unwrap_err(),
            ConfigError::ZeroRate
        );
        assert!(Link::<()>::new(1, 0, 1, Time(0)).is_err());
    }
}
