//! The replay filter every core of a relay shares: one fixed-size table of 64-bit tag
//! fingerprints per epoch, filled with compare-and-swap, no locks.
//!
//! A packet's 16-byte replay tag is uniform (blake3 output under a key only the relay and the
//! packet's sender know), so its first 8 bytes pick the slot and its last 8 are the stored
//! fingerprint. Two distinct packets are mistaken for each other with probability about
//! 2^-64 per comparison. Lookups probe at most [`MAX_PROBE`] slots; when all are taken the
//! table is full for that neighbourhood and the packet is refused ([`Verdict::Full`]): memory
//! never grows, and a full filter fails closed.
//!
//! Two tables alternate by epoch parity. The table for epoch `e + 1` is the one `e - 1` used,
//! so it may only be [`prepare`](SharedReplayFilter::prepare)d once no key for `e - 1` is in
//! use (the overlap after the rotation to `e` has ended).

use std::sync::atomic::{AtomicU64, Ordering};

use pb_sphinx::{Epoch, ReplayFilter, ReplayTag};

use crate::ConfigError;

/// Slots probed per lookup before the table counts as full there.
pub const MAX_PROBE: usize = 32;

/// The largest table, in slots per epoch (2^32 slots: 32 GiB per table).
const MAX_SLOTS: usize = 1 << 32;

/// What the filter says about one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen before in its epoch; now recorded.
    Fresh,
    /// Seen before in its epoch: drop.
    Replay,
    /// No free slot near its place: drop (the table is sized too small for the traffic).
    Full,
    /// No table is prepared for its epoch: drop.
    NoTable,
}

/// One epoch's table.
struct Table {
    /// `epoch + 1` of the epoch it serves, 0 while unassigned or being cleared.
    epoch: AtomicU64,
    slots: Box<[AtomicU64]>,
}

impl Table {
    fn new(slots: usize) -> Self {
        Self {
            epoch: AtomicU64::new(0),
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The shared filter; `&SharedReplayFilter` is `Sync`, one per relay.
pub struct SharedReplayFilter {
    tables: [Table; 2],
    mask: usize,
}

impl core::fmt::Debug for SharedReplayFilter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedReplayFilter")
            .field("slots_per_epoch", &(self.mask + 1))
            .finish_non_exhaustive()
    }
}

impl SharedReplayFilter {
    /// A filter with room for about `capacity` packets per epoch: the table has the next power
    /// of two of twice that many slots (8 bytes each, two tables), so it stays at most half
    /// full and probes stay short.
    pub fn new(capacity: usize) -> Result<Self, ConfigError> {
        let slots = capacity
            .checked_mul(2)
            .and_then(usize::checked_next_power_of_two)
            .filter(|&s| capacity > 0 && s <= MAX_SLOTS)
            .ok_or(ConfigError::Capacity(capacity, MAX_SLOTS / 2))?;
        Ok(Self {
            tables: [Table::new(slots), Table::new(slots)],
            mask: slots - 1,
        })
    }

    /// Slots per epoch table.
    pub fn slots(&self) -> usize {
        self.mask + 1
    }

    fn table(&self, epoch: Epoch) -> &Table {
        &self.tables[(epoch.0 & 1) as usize]
    }

    /// Assigns the table of `epoch`'s parity to `epoch`, empty. Call it for the current epoch
    /// at start-up, and for the next epoch once the previous epoch's key is no longer used
    /// anywhere. Preparing the epoch a table already serves does nothing.
    pub fn prepare(&self, epoch: Epoch) {
        let table = self.table(epoch);
        let stamp = u64::from(epoch.0) + 1;
        if table.epoch.load(Ordering::Acquire) == stamp {
            return;
        }
        table.epoch.store(0, Ordering::Release);
        for slot in table.slots.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        table.epoch.store(stamp, Ordering::Release);
    }

    /// Looks `tag` up in `epoch`'s table and records it when fresh.
    pub fn check_and_insert(&self, epoch: Epoch, tag: &ReplayTag) -> Verdict {
        let table = self.table(epoch);
        if table.epoch.load(Ordering::Acquire) != u64::from(epoch.0) + 1 {
            return Verdict::NoTable;
        }
        let mut head = [0u8; 8];
        let mut tail = [0u8; 8];
        head.copy_from_slice(&tag.0[..8]);
        tail.copy_from_slice(&tag.0[8..]);
        // Zero marks an empty slot, so fingerprints are never zero.
        let fingerprint = u64::from_le_bytes(tail) | 1;
        let start = u64::from_le_bytes(head) as usize;
        for probe in 0..MAX_PROBE {
            let slot = &table.slots[(start.wrapping_add(probe)) & self.mask];
            let mut seen = slot.load(Ordering::Acquire);
            if seen == 0 {
                match slot.compare_exchange(0, fingerprint, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Verdict::Fresh,
                    Err(now) => seen = now,
                }
            }
            if seen == fingerprint {
                return Verdict::Replay;
            }
        }
        Verdict::Full
    }

    /// A per-thread handle that counts verdicts and implements pb-sphinx's [`ReplayFilter`].
    pub fn handle(&self) -> ReplayHandle<'_> {
        ReplayHandle {
            filter: self,
            stats: ReplayStats::default(),
        }
    }
}

/// Verdict counts of one [`ReplayHandle`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Packets recorded.
    pub fresh: u64,
    /// Replays refused.
    pub replay: u64,
    /// Packets refused because the table was full around their slot.
    pub full: u64,
    /// Packets refused because no table served their epoch.
    pub no_table: u64,
}

/// One thread's view of the shared filter, with its own counters.
#[derive(Debug)]
pub struct ReplayHandle<'a> {
    filter: &'a SharedReplayFilter,
    /// What this handle has seen.
    pub stats: ReplayStats,
}

impl ReplayFilter for ReplayHandle<'_> {
    /// `true` (drop) for a replay, and also when the packet cannot be recorded (full table, no
    /// table): a packet the filter cannot remember must not pass.
    fn check_and_insert(&mut self, epoch: Epoch, tag: &ReplayTag) -> bool {
        let verdict = self.filter.check_and_insert(epoch, tag);
        match verdict {
            Verdict::Fresh => self.stats.fresh += 1,
            Verdict::Replay => self.stats.replay += 1,
            Verdict::Full => self.stats.full += 1,
            Verdict::NoTable => self.stats.no_table += 1,
        }
        verdict != Verdict::Fresh
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    fn tag(i: u64) -> ReplayTag {
        // Spread like blake3 output would be.
        let h = blake3::hash(&i.to_le_bytes());
        let mut t = [0u8; 16];
        t.copy_from_slice(&h.as_bytes()[..16]);
        ReplayTag(t)
    }

    #[test]
    fn fresh_then_replay_per_epoch() {
        let f = SharedReplayFilter::new(1000).expect("small filter");
        f.prepare(Epoch(7));
        assert_eq!(f.check_and_insert(Epoch(7), &tag(1)), Verdict::Fresh);
        assert_eq!(f.check_and_insert(Epoch(7), &tag(1)), Verdict::Replay);
        assert_eq!(f.check_and_insert(Epoch(7), &tag(2)), Verdict::Fresh);
        // Epoch 8 has no table yet; once prepared, the same tag is fresh there.
        assert_eq!(f.check_and_insert(Epoch(8), &tag(1)), Verdict::NoTable);
        f.prepare(Epoch(8));
        assert_eq!(f.check_and_insert(Epoch(8), &tag(1)), Verdict::Fresh);
        assert_eq!(f.check_and_insert(Epoch(7), &tag(1)), Verdict::Replay);
        // Epoch 9 takes over epoch 7's table, empty.
        f.prepare(Epoch(9));
        assert_eq!(f.check_and_insert(Epoch(7), &tag(1)), Verdict::NoTable);
        assert_eq!(f.check_and_insert(Epoch(9), &tag(1)), Verdict::Fresh);
        // Preparing again does not clear.
        f.prepare(Epoch(9));
        assert_eq!(f.check_and_insert(Epoch(9), &tag(1)), Verdict::Replay);
    }

    #[test]
    fn a_full_table_refuses_instead_of_growing() {
        let f = SharedReplayFilter::new(4).expect("tiny filter");
        assert_eq!(f.slots(), 8);
        f.prepare(Epoch(1));
        let verdicts: Vec<Verdict> = (0..20)
            .map(|i| f.check_and_insert(Epoch(1), &tag(i)))
            .collect();
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Fresh).count(), 8);
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Full).count(), 12);
        // Recorded tags are still recognised.
        let first_fresh = verdicts
            .iter()
            .position(|v| *v == Verdict::Fresh)
            .expect("one");
        assert_eq!(
            f.check_and_insert(Epoch(1), &tag(first_fresh as u64)),
            Verdict::Replay
        );
    }

    #[test]
    fn bad_capacities_are_errors() {
        assert!(SharedReplayFilter::new(0).is_err());
        assert!(SharedReplayFilter::new(usize::MAX).is_err());
    }

    #[test]
    fn threads_agree_on_each_tag_exactly_once() {
        let f = SharedReplayFilter::new(100_000).expect("filter");
        f.prepare(Epoch(3));
        // Four threads insert the same 20,000 tags: each tag is fresh exactly once overall.
        let fresh: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut h = f.handle();
                        for i in 0..20_000 {
                            h.check_and_insert(Epoch(3), &tag(i));
                        }
                        h.stats
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    let stats = h.join().expect("thread");
                    assert_eq!(stats.full + stats.no_table, 0);
                    stats.fresh
                })
                .sum()
        });
        assert_eq!(fresh, 20_000);
    }
}
