//! Loop monitoring: the relay's cover packets are loops, routed through the network and back
//! to the relay itself. Each carries a token naming it; the monitor records which link each
//! loop left on and counts, per link, the loops that come back and the ones that do not
//! within a timeout. A link (or a relay behind it) that drops packets shows up as lost loops.
//!
//! Tokens are `id ‖ MAC(id)` under a key only this relay holds, so nobody else can make a
//! packet that counts as a returned loop (an attacker dropping loops cannot hide it by
//! forging returns). The monitor tracks a fixed window of recent loops: memory is bounded,
//! and a loop older than the window counts as lost.

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{ConfigError, Time};

/// Bytes of a loop token (the start of a loop packet's message).
pub const LOOP_TOKEN_LEN: usize = 8 + 16;

/// Upper bounds (ms, exclusive) of the loops' round-trip-time buckets; the last bucket holds
/// the rest. A loop's round trip is its route's mixing delays and links, hundreds of ms.
/// These are the buckets of the ledger's measurement records (docs/spec/ledger.md).
pub const RTT_BUCKETS_MS: [u32; 7] = [50, 100, 200, 400, 800, 1600, 3200];
/// Buckets in a link's round-trip-time histogram.
pub const RTT_BUCKET_COUNT: usize = RTT_BUCKETS_MS.len() + 1;

/// The bucket of a round trip of `ms` milliseconds.
pub fn rtt_bucket(ms: u64) -> usize {
    RTT_BUCKETS_MS
        .iter()
        .position(|&b| ms < u64::from(b))
        .unwrap_or(RTT_BUCKETS_MS.len())
}

/// Loop counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Loops sent on the link.
    pub sent: u64,
    /// Loops that came back in time.
    pub returned: u64,
    /// Loops that did not come back within the timeout (or fell out of the window).
    pub lost: u64,
    /// Returned loops by round-trip time ([`RTT_BUCKETS_MS`]); they add up to `returned`.
    pub rtt: [u64; RTT_BUCKET_COUNT],
}

/// The share of a link's settled loops lost above which the link is reported: well above
/// what a healthy network loses (a lossless testbed loses none), below the 10% a relay
/// dropping one packet in ten would cost the loops through it.
pub const LOOP_LOSS_ALERT: f64 = 0.05;

/// Settled loops (returned or lost) a loss share is judged on at least: with fewer, a
/// handful of ordinary losses would cross [`LOOP_LOSS_ALERT`].
pub const LOOP_LOSS_MIN_SETTLED: u64 = 100;

impl LoopStats {
    /// The counts since `earlier` (counters only grow).
    pub fn since(&self, earlier: &LoopStats) -> LoopStats {
        let mut rtt = [0; RTT_BUCKET_COUNT];
        for ((d, now), then) in rtt.iter_mut().zip(self.rtt).zip(earlier.rtt) {
            *d = now.saturating_sub(then);
        }
        LoopStats {
            sent: self.sent.saturating_sub(earlier.sent),
            returned: self.returned.saturating_sub(earlier.returned),
            lost: self.lost.saturating_sub(earlier.lost),
            rtt,
        }
    }

    /// The share of settled loops that were lost, once at least
    /// [`LOOP_LOSS_MIN_SETTLED`] are settled.
    pub fn loss(&self) -> Option<f64> {
        let settled = self.returned + self.lost;
        (settled >= LOOP_LOSS_MIN_SETTLED).then(|| self.lost as f64 / settled as f64)
    }

    /// Whether the loss share is judged and above [`LOOP_LOSS_ALERT`].
    pub fn alarming(&self) -> bool {
        self.loss().is_some_and(|l| l > LOOP_LOSS_ALERT)
    }
}

/// Why a received token was not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoopError {
    /// The token's MAC is wrong: not made by this relay.
    #[error("loop token does not authenticate")]
    Forged,
    /// A genuine token for a loop already counted (returned before, or already lost).
    #[error("loop already counted")]
    Stale,
    /// The link index is not one of this monitor's links.
    #[error("no such link")]
    UnknownLink,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    id: u64,
    link: u32,
    sent_at: Time,
    pending: bool,
}

#[derive(Zeroize, ZeroizeOnDrop)]
struct TokenKey([u8; 32]);

/// Tracks this relay's loops.
pub struct LoopMonitor {
    key: TokenKey,
    window: Box<[Slot]>,
    next_id: u64,
    /// Every loop before this one is settled (returned or lost).
    oldest: u64,
    timeout: u64,
    links: Box<[LoopStats]>,
    /// Tokens that did not authenticate.
    pub forged: u64,
    /// Genuine tokens for loops already counted.
    pub stale: u64,
}

impl core::fmt::Debug for LoopMonitor {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LoopMonitor")
            .field("links", &self.links)
            .field("forged", &self.forged)
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

impl LoopMonitor {
    /// A monitor for `links` links, remembering the last `window` loops, counting a loop lost
    /// `timeout` after it was sent. `key` (32 random bytes) authenticates tokens.
    pub fn new(
        key: [u8; 32],
        links: usize,
        window: usize,
        timeout: Time,
    ) -> Result<Self, ConfigError> {
        if window == 0 || window > 1 << 24 {
            return Err(ConfigError::Capacity(window, 1 << 24));
        }
        if links == 0 || links > 1 << 16 {
            return Err(ConfigError::Capacity(links, 1 << 16));
        }
        Ok(Self {
            key: TokenKey(key),
            window: vec![Slot::default(); window].into_boxed_slice(),
            next_id: 0,
            oldest: 0,
            timeout: timeout.0,
            links: vec![LoopStats::default(); links].into_boxed_slice(),
            forged: 0,
            stale: 0,
        })
    }

    fn mac(&self, id: u64) -> [u8; 16] {
        let full = blake3::keyed_hash(&self.key.0, &id.to_le_bytes());
        let mut mac = [0u8; 16];
        mac.copy_from_slice(&full.as_bytes()[..16]);
        mac
    }

    /// Registers a loop leaving on `link` at `now`; returns the token to carry.
    pub fn send(&mut self, link: usize, now: Time) -> Result<[u8; LOOP_TOKEN_LEN], LoopError> {
        if link >= self.links.len() {
            return Err(LoopError::UnknownLink);
        }
        let id = self.next_id;
        let w = self.window.len() as u64;
        let slot = &mut self.window[(id % w) as usize];
        if slot.pending {
            // Out of the window before its timeout: lost.
            self.links[slot.link as usize].lost += 1;
        }
        *slot = Slot {
            id,
            link: link as u32,
            sent_at: now,
            pending: true,
        };
        self.next_id += 1;
        self.oldest = self.oldest.max(self.next_id.saturating_sub(w));
        self.links[link].sent += 1;
        let mut token = [0u8; LOOP_TOKEN_LEN];
        token[..8].copy_from_slice(&id.to_le_bytes());
        token[8..].copy_from_slice(&self.mac(id));
        Ok(token)
    }

    /// Counts a loop that came back; `message` starts with its token. Returns the link it left
    /// on and its round-trip time.
    pub fn receive(&mut self, message: &[u8], now: Time) -> Result<(usize, u64), LoopError> {
        let Some(token) = message.get(..LOOP_TOKEN_LEN) else {
            self.forged += 1;
            return Err(LoopError::Forged);
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&token[..8]);
        let id = u64::from_le_bytes(id);
        if !bool::from(self.mac(id).ct_eq(&token[8..])) {
            self.forged += 1;
            return Err(LoopError::Forged);
        }
        let w = self.window.len() as u64;
        let slot = &mut self.window[(id % w) as usize];
        if !slot.pending || slot.id != id {
            self.stale += 1;
            return Err(LoopError::Stale);
        }
        slot.pending = false;
        let link = slot.link as usize;
        let rtt = now.0.saturating_sub(slot.sent_at.0);
        let stats = &mut self.links[link];
        stats.returned += 1;
        stats.rtt[rtt_bucket(rtt / Time::MS)] += 1;
        Ok((link, rtt))
    }

    /// Counts as lost every pending loop sent more than the timeout before `now`.
    pub fn expire(&mut self, now: Time) {
        let w = self.window.len() as u64;
        while self.oldest < self.next_id {
            let slot = &mut self.window[(self.oldest % w) as usize];
            if slot.pending && slot.id == self.oldest {
                if slot.sent_at.0.saturating_add(self.timeout) > now.0 {
                    break;
                }
                slot.pending = false;
                self.links[slot.link as usize].lost += 1;
            }
            self.oldest += 1;
        }
    }

    /// The counters of `link` (zero for an unknown link).
    pub fn stats(&self, link: usize) -> LoopStats {
        self.links.get(link).copied().unwrap_or_default()
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn ms(v: u64) -> Time {
        Time(v * Time::MS)
    }

    #[test]
    fn returned_lost_forged_and_stale() {
        let mut m = LoopMonitor::new([7; 32], 2, 16, ms(100)).expect("monitor");
        let a = m.send(0, ms(0)).expect("a");
        let b = m.send(1, ms(1)).expect("b");
        let c = m.send(1, ms(2)).expect("c");
        assert_eq!(m.receive(&a, ms(30)), Ok((0, 30 * Time::MS)));
        assert_eq!(m.receive(&a, ms(31)), Err(LoopError::Stale));
        let mut forged = b;
        forged[9] ^= 1;
        assert_eq!(m.receive(&forged, ms(32)), Err(LoopError::Forged));
        assert_eq!(m.receive(&b[..10], ms(32)), Err(LoopError::Forged));
        m.expire(ms(101));
        assert_eq!(
            m.stats(1),
            LoopStats {
                sent: 2,
                returned: 0,
                lost: 1,
                ..LoopStats::default()
            }
        );
        m.expire(ms(102));
        assert_eq!(
            m.stats(1),
            LoopStats {
                sent: 2,
                returned: 0,
                lost: 2,
                ..LoopStats::default()
            }
        );
        // Too late: already counted lost.
        assert_eq!(m.receive(&c, ms(103)), Err(LoopError::Stale));
        assert_eq!(
            m.stats(0),
            LoopStats {
                sent: 1,
                returned: 1,
                lost: 0,
                rtt: [1, 0, 0, 0, 0, 0, 0, 0],
            }
        );
        assert_eq!((m.forged, m.stale), (2, 2));
        assert_eq!(m.send(2, ms(0)), Err(LoopError::UnknownLink));
    }

    #[test]
    fn loss_is_judged_on_enough_loops_only() {
        let s = |returned, lost| LoopStats {
            sent: returned + lost,
            returned,
            lost,
            rtt: [0, 0, returned, 0, 0, 0, 0, 0],
        };
        assert_eq!(s(50, 49).loss(), None, "99 settled: not judged");
        assert!(!s(50, 49).alarming());
        assert_eq!(s(95, 5).loss(), Some(0.05));
        assert!(!s(95, 5).alarming(), "at the threshold, not above");
        assert!(s(94, 6).alarming());
        assert_eq!(s(200, 20).since(&s(100, 10)), s(100, 10));
    }

    #[test]
    fn round_trips_fall_in_their_buckets() {
        assert_eq!(
            [0, 49, 50, 99, 100, 3199, 3200, u64::MAX].map(rtt_bucket),
            [0, 0, 1, 1, 2, 6, 7, 7]
        );
        let mut m = LoopMonitor::new([3; 32], 1, 16, ms(10_000)).expect("monitor");
        for (sent, back) in [(0, 49), (1, 51), (2, 252), (3, 5_003)] {
            let token = m.send(0, ms(sent)).expect("send");
            m.receive(&token, ms(back)).expect("receive");
        }
        let stats = m.stats(0);
        assert_eq!(stats.rtt, [1, 1, 0, 1, 0, 0, 0, 1]);
        assert_eq!(stats.rtt.iter().sum::<u64>(), stats.returned);
        let earlier = LoopStats {
            rtt: [1, 0, 0, 0, 0, 0, 0, 0],
            returned: 1,
            sent: 1,
            lost: 0,
        };
        assert_eq!(stats.since(&earlier).rtt, [0, 1, 0, 1, 0, 0, 0, 1]);
    }

    #[test]
    fn the_window_bounds_memory() {
        let mut m = LoopMonitor::new([1; 32], 1, 4, ms(1_000)).expect("monitor");
        let first = m.send(0, ms(0)).expect("first");
        for i in 1..10 {
            m.send(0, ms(i)).expect("send");
        }
        // The first six fell out of the window of four before their timeout.
        assert_eq!(m.stats(0).lost, 6);
        assert_eq!(m.receive(&first, ms(20)), Err(LoopError::Stale));
    }
}
