//! The client's loop cover: packets that go out through its gateway and two mix layers and
//! come back to its own mailbox (gateway, mix layer 1, layer 2, another layer-1 mix, the
//! gateway), on a Poisson process of their own. They keep the client's link busy like any
//! cover, and they measure the path: a loop that does not come back within
//! [`LOOP_TIMEOUT`] is counted lost, so a gateway or mix that drops the client's packets
//! shows up in the counts. Each carries a counter and a MAC under a key drawn for the run,
//! so nobody else can make one that counts.

use std::{collections::BTreeMap, time::Duration};

use pb_control::Topology;
use pb_sphinx::{DelayMs, MailboxId, NodeId, PACKET_LEN, create_packet};

use crate::session::{NoRoute, Profile, Random, Session};

/// A loop not back within this long is counted lost.
pub const LOOP_TIMEOUT: Duration = Duration::from_secs(30);
const MAGIC: &[u8; 8] = b"PBLOOP1\0";
/// Loops awaited at once (older ones are counted lost first).
const MAX_PENDING: usize = 4096;

/// Loop counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Loops sent.
    pub sent: u64,
    /// Loops back.
    pub returned: u64,
    /// Loops not back within [`LOOP_TIMEOUT`].
    pub lost: u64,
}

/// The client's loops.
pub struct Loops {
    key: [u8; 32],
    next: u64,
    pending: BTreeMap<u64, Duration>,
    stats: LoopStats,
}

impl Drop for Loops {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl Loops {
    /// Loops under a fresh key.
    pub fn new(random: &mut dyn Random) -> Self {
        Self {
            key: random.seed(),
            next: 0,
            pending: BTreeMap::new(),
            stats: LoopStats::default(),
        }
    }

    /// Counters (after counting the overdue as lost).
    pub fn stats(&mut self, now: Duration) -> LoopStats {
        self.expire(now);
        self.stats
    }

    fn mac(&self, counter: u64) -> blake3::Hash {
        blake3::keyed_hash(&self.key, &counter.to_be_bytes())
    }

    fn expire(&mut self, now: Duration) {
        while let Some((&counter, &sent)) = self.pending.first_key_value() {
            if now.saturating_sub(sent) < LOOP_TIMEOUT && self.pending.len() <= MAX_PENDING {
                break;
            }
            self.pending.remove(&counter);
            self.stats.lost += 1;
        }
    }

    /// The next loop packet, back to `mailbox` at `gateway`.
    pub fn packet(
        &mut self,
        now: Duration,
        topology: &Topology,
        gateway: NodeId,
        mailbox: MailboxId,
        profile: &Profile,
        random: &mut dyn Random,
    ) -> Result<[u8; PACKET_LEN], NoRoute> {
        self.expire(now);
        let mean = profile.mean_delay;
        let g = topology.find(gateway).ok_or(NoRoute::Topology)?;
        let route = vec![
            Session::hop(g, random, mean),
            Session::hop(Session::pick(topology, 1, random)?, random, mean),
            Session::hop(Session::pick(topology, 2, random)?, random, mean),
            Session::hop(Session::pick(topology, 1, random)?, random, mean),
            pb_sphinx::Hop {
                delay: DelayMs(0),
                ..Session::hop(g, random, mean)
            },
        ];
        let counter = self.next;
        let mut message = Vec::with_capacity(32);
        message.extend_from_slice(MAGIC);
        message.extend_from_slice(&counter.to_be_bytes());
        message.extend_from_slice(self.mac(counter).as_bytes());
        let mut packet = [0u8; PACKET_LEN];
        create_packet(
            &mut packet,
            topology.epoch(),
            &route,
            mailbox,
            &message,
            &random.seed(),
        )
        .map_err(|_| NoRoute::Topology)?;
        self.next += 1;
        self.pending.insert(counter, now);
        self.stats.sent += 1;
        Ok(packet)
    }

    /// A message delivered to our mailbox: whether it was one of our loops, awaited.
    pub fn returned(&mut self, message: &[u8]) -> bool {
        let (Some(magic), Some(counter), Some(mac)) =
            (message.get(..8), message.get(8..16), message.get(16..48))
        else {
            return false;
        };
        let mut c = [0u8; 8];
        c.copy_from_slice(counter);
        let counter = u64::from_be_bytes(c);
        let mut m = [0u8; 32];
        m.copy_from_slice(mac);
        // blake3::Hash compares in constant time: the MAC is the only proof the loop is ours.
        let genuine = magic == MAGIC && blake3::Hash::from_bytes(m) == self.mac(counter);
        if genuine && self.pending.remove(&counter).is_some() {
            self.stats.returned += 1;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting(u8);

    impl Random for Counting {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(17);
                *b = self.0;
            }
        }
    }

    fn message(counter: u64, mac: &blake3::Hash) -> Vec<u8> {
        let mut m = MAGIC.to_vec();
        m.extend_from_slice(&counter.to_be_bytes());
        m.extend_from_slice(mac.as_bytes());
        m.resize(pb_sphinx::MESSAGE_LEN, 0);
        m
    }

    #[test]
    fn only_our_awaited_loops_count_and_the_late_are_lost() {
        let mut loops = Loops::new(&mut Counting(1));
        for counter in 0..3 {
            loops.pending.insert(counter, Duration::from_secs(counter));
            loops.stats.sent += 1;
        }
        let good = message(1, &loops.mac(1));
        assert!(loops.returned(&good));
        assert!(!loops.returned(&good), "a second copy does not count");
        // Another key's MAC, or an unknown counter: not ours.
        let other = Loops::new(&mut Counting(9));
        assert!(!loops.returned(&message(0, &other.mac(0))));
        assert!(!loops.returned(&message(7, &loops.mac(7))));
        assert!(!loops.returned(b"short"));
        // Loop 0 (sent at 0 s) and 2 (at 2 s) are overdue at 40 s.
        let stats = loops.stats(Duration::from_secs(40));
        assert_eq!(
            stats,
            LoopStats {
                sent: 3,
                returned: 1,
                lost: 2
            }
        );
    }
}
