//! The replay filter every core of a relay shares: one fixed-size table of 64-bit tag
//! fingerprints per epoch, filled with compare-and-swap, no locks on the packet path.
//!
//! A packet's 16-byte replay tag is uniform (blake3 output under a key only the relay and the
//! packet's sender know), so its first 8 bytes pick the slot and its last 8 are the stored
//! fingerprint. Two distinct packets are mistaken for each other with probability about
//! 2^-64 per comparison. Lookups probe at most [`MAX_PROBE`] slots; when all are taken the
//! table is full for that neighbourhood and the packet is refused ([`Verdict::Full`]): memory
//! never grows, and a full filter fails closed. A table has twice as many slots as the
//! packets it is sized for, so it stays at most half full and probes stay short; its fill
//! ([`SharedReplayFilter::fill`]) says how close it is to refusing. One-hop link cover takes
//! no entry (pb-sphinx does not record it) but is counted in the fill all the same, so that
//! the fill, which operators see, does not tell cover from other packets: it is an upper
//! bound on the entries taken.
//!
//! Two tables alternate by epoch parity, so the table of epoch `e + 1` is the one `e - 1`
//! used. Its life, driven by the relay's control thread:
//! 1. [`prepare`](SharedReplayFilter::prepare)`(e + 1)` before `e + 1` begins: the table
//!    serves `e + 1`, empty (instant when the table was retired, see 3);
//! 2. the cores record `e + 1`'s packets from when its key is in use until the overlap after
//!    `e + 2` begins has ended;
//! 3. [`retire`](SharedReplayFilter::retire)`(e + 1)` once no core holds `e + 1`'s key any
//!    more: the table is cleared and serves no epoch, then step 1 for `e + 3`.
//!
//! How big the tables are (packets per epoch) is the relay's decision, from its link rates
//! and epoch length; [`SharedReplayFilter::memory_for`] says what a size costs.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use pb_sphinx::{Epoch, ReplayFilter, ReplayTag};

use crate::ConfigError;

/// Slots probed per lookup before the table counts as full there.
pub const MAX_PROBE: usize = 32;

/// The largest table, in slots per epoch (2^32 slots: 32 GiB per table).
pub const MAX_SLOTS: usize = 1 << 32;

/// Slots per packet a table is sized for: at its capacity a table is half full.
const SLOTS_PER_PACKET: usize = 2;

/// Bytes of one slot.
const SLOT_BYTES: u64 = 8;

/// A table's state: cleared and serving no epoch.
const CLEAN: u64 = u64::MAX;
/// A table's state: being cleared (or, briefly at start, not yet assigned).
const CLEARING: u64 = 0;

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

/// How full one epoch's table is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// Packets of its epoch since it was prepared: those recorded, and the link cover that
    /// needed no entry (so, at least the entries taken).
    pub packets: u64,
    /// Its slots.
    pub slots: u64,
}

impl Fill {
    /// `packets` in percent of `slots`, rounded down, at most 100.
    pub fn percent(&self) -> u64 {
        (self.packets.saturating_mul(100) / self.slots.max(1)).min(100)
    }
}

/// One epoch's table.
struct Table {
    /// `epoch + 1` of the epoch it serves, or [`CLEAN`] or [`CLEARING`] when it serves none.
    state: AtomicU64,
    /// Packets recorded, or counted without an entry, since it was prepared (a packet a
    /// core counts while the control thread clears the table may be counted in the next
    /// epoch: off by a few at most).
    packets: AtomicU64,
    slots: Box<[AtomicU64]>,
}

impl Table {
    fn new(slots: usize) -> Self {
        Self {
            state: AtomicU64::new(CLEAN),
            packets: AtomicU64::new(0),
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Empties the table; it serves no epoch afterwards. A core that read the old state just
    /// before may still record one tag into it while it is cleared: that stale fingerprint
    /// can only ever be mistaken for a packet of the next epoch with probability 2^-64.
    fn clear(&self) {
        self.state.store(CLEARING, Ordering::Release);
        for slot in self.slots.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        self.packets.store(0, Ordering::Relaxed);
        self.state.store(CLEAN, Ordering::Release);
    }
}

/// The stamp of the table that serves `epoch`.
fn stamp(epoch: Epoch) -> u64 {
    u64::from(epoch.0) + 1
}

/// The shared filter; `&SharedReplayFilter` is `Sync`, one per relay.
pub struct SharedReplayFilter {
    tables: [Table; 2],
    /// Serializes [`prepare`](Self::prepare) and [`retire`](Self::retire) (control thread
    /// only; the packet path takes no lock).
    control: Mutex<()>,
}

impl core::fmt::Debug for SharedReplayFilter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SharedReplayFilter")
            .field("slots_per_epoch", &self.slots())
            .finish_non_exhaustive()
    }
}

impl SharedReplayFilter {
    /// A filter with room for `capacity` packets per epoch: each of its two tables has twice
    /// that many slots (8 bytes each), allocated and zeroed now.
    pub fn new(capacity: usize) -> Result<Self, ConfigError> {
        let slots = capacity
            .checked_mul(SLOTS_PER_PACKET)
            .filter(|&s| capacity > 0 && s <= MAX_SLOTS)
            .ok_or(ConfigError::Capacity(
                capacity,
                MAX_SLOTS / SLOTS_PER_PACKET,
            ))?;
        Ok(Self {
            tables: [Table::new(slots), Table::new(slots)],
            control: Mutex::new(()),
        })
    }

    /// The memory of a filter for `capacity` packets per epoch (both tables), in bytes.
    pub fn memory_for(capacity: u64) -> u64 {
        capacity
            .saturating_mul(SLOTS_PER_PACKET as u64 * SLOT_BYTES)
            .saturating_mul(2)
    }

    /// Slots per epoch table.
    pub fn slots(&self) -> usize {
        self.tables[0].slots.len()
    }

    /// Packets per epoch it is sized for (a table is then half full).
    pub fn capacity(&self) -> usize {
        self.slots() / SLOTS_PER_PACKET
    }

    fn table(&self, epoch: Epoch) -> &Table {
        &self.tables[(epoch.0 & 1) as usize]
    }

    /// Assigns the table of `epoch`'s parity to `epoch`, empty; preparing the epoch a table
    /// already serves does nothing. Call it for the current and the next epoch at start-up,
    /// and for each next epoch once the table's previous epoch is [retired](Self::retire):
    /// then it takes no time. A table still serving another epoch (epochs skipped) is cleared
    /// first, so only call it once no core uses that epoch's key.
    pub fn prepare(&self, epoch: Epoch) {
        let _control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let table = self.table(epoch);
        let state = table.state.load(Ordering::Acquire);
        if state == stamp(epoch) {
            return;
        }
        if state != CLEAN {
            table.clear();
        }
        table.state.store(stamp(epoch), Ordering::Release);
    }

    /// Clears `epoch`'s table, if a table serves it, and returns whether one did. Call it
    /// when `epoch` ends for good: once no core holds its key (the overlap after the next
    /// epoch began is over). Its packets are refused from then on ([`Verdict::NoTable`]).
    pub fn retire(&self, epoch: Epoch) -> bool {
        let _control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let table = self.table(epoch);
        if table.state.load(Ordering::Acquire) != stamp(epoch) {
            return false;
        }
        table.clear();
        true
    }

    /// How full `epoch`'s table is, if a table serves it.
    pub fn fill(&self, epoch: Epoch) -> Option<Fill> {
        let table = self.table(epoch);
        if table.state.load(Ordering::Acquire) != stamp(epoch) {
            return None;
        }
        Some(Fill {
            packets: table.packets.load(Ordering::Relaxed),
            slots: table.slots.len() as u64,
        })
    }

    /// Counts a packet of `epoch` that needs no entry (link cover) in its table's fill.
    pub fn count_unrecorded(&self, epoch: Epoch) {
        let table = self.table(epoch);
        if table.state.load(Ordering::Acquire) == stamp(epoch) {
            table.packets.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Looks `tag` up in `epoch`'s table and records it when fresh.
    pub fn check_and_insert(&self, epoch: Epoch, tag: &ReplayTag) -> Verdict {
        let table = self.table(epoch);
        if table.state.load(Ordering::Acquire) != stamp(epoch) {
            return Verdict::NoTable;
        }
        let mut head = [0u8; 8];
        let mut tail = [0u8; 8];
        head.copy_from_slice(&tag.0[..8]);
        tail.copy_from_slice(&tag.0[8..]);
        // Zero marks an empty slot, so fingerprints are never zero.
        let fingerprint = u64::from_le_bytes(tail) | 1;
        let slots = table.slots.len();
        // The uniform head scaled onto 0..slots (any table size, no modulo bias to speak of).
        let mut at = ((u128::from(u64::from_le_bytes(head)) * slots as u128) >> 64) as usize;
        for _ in 0..MAX_PROBE {
            // Always some: `at < slots` (the scaled head is, and it wraps to 0 below).
            let Some(slot) = table.slots.get(at) else {
                return Verdict::Full;
            };
            at += 1;
            if at == slots {
                at = 0;
            }
            let mut seen = slot.load(Ordering::Acquire);
            if seen == 0 {
                match slot.compare_exchange(0, fingerprint, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        table.packets.fetch_add(1, Ordering::Relaxed);
                        return Verdict::Fresh;
                    }
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

    fn count_unrecorded(&mut self, epoch: Epoch) {
        self.filter.count_unrecorded(epoch);
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

    /// Retiring an epoch clears its table at once (not when the table is next used) and
    /// refuses its packets from then on; preparing the next epoch of that parity then finds
    /// the table empty. Retiring an epoch no table serves changes nothing.
    #[test]
    fn a_retired_epoch_is_cleared_and_refused() {
        let f = SharedReplayFilter::new(1000).expect("small filter");
        f.prepare(Epoch(4));
        f.prepare(Epoch(5));
        for i in 0..10 {
            assert_eq!(f.check_and_insert(Epoch(4), &tag(i)), Verdict::Fresh);
        }
        assert_eq!(f.fill(Epoch(4)).map(|x| x.packets), Some(10));
        assert!(!f.retire(Epoch(6)), "no table serves epoch 6");
        assert_eq!(f.fill(Epoch(4)).map(|x| x.packets), Some(10));
        assert!(f.retire(Epoch(4)));
        assert_eq!(f.fill(Epoch(4)), None);
        assert_eq!(f.check_and_insert(Epoch(4), &tag(0)), Verdict::NoTable);
        // Cleared now: every slot is empty before epoch 6 is even prepared.
        let table = f.table(Epoch(6));
        assert!(table.slots.iter().all(|s| s.load(Ordering::Relaxed) == 0));
        assert_eq!(table.state.load(Ordering::Relaxed), CLEAN);
        f.prepare(Epoch(6));
        assert_eq!(
            f.fill(Epoch(6)),
            Some(Fill {
                packets: 0,
                slots: 2000
            })
        );
        assert_eq!(f.check_and_insert(Epoch(6), &tag(0)), Verdict::Fresh);
        // Epoch 5's table was not touched.
        assert_eq!(f.check_and_insert(Epoch(5), &tag(0)), Verdict::Fresh);
        assert_eq!(f.check_and_insert(Epoch(5), &tag(0)), Verdict::Replay);
    }

    /// The fill counts what is recorded and the cover that needed no entry alike, so it
    /// does not tell how much was cover; replays and refusals take nothing.
    #[test]
    fn fill_counts_what_is_recorded_and_cover_alike() {
        let f = SharedReplayFilter::new(100).expect("small filter");
        assert_eq!(f.capacity(), 100);
        f.prepare(Epoch(1));
        let mut h = f.handle();
        for i in 0..40 {
            assert!(!h.check_and_insert(Epoch(1), &tag(i)));
        }
        for _ in 0..10 {
            h.count_unrecorded(Epoch(1));
        }
        h.count_unrecorded(Epoch(2));
        assert!(h.check_and_insert(Epoch(1), &tag(0)));
        assert!(h.check_and_insert(Epoch(2), &tag(0)));
        let fill = f.fill(Epoch(1)).expect("prepared");
        assert_eq!((fill.packets, fill.slots, fill.percent()), (50, 200, 25));
        assert_eq!(h.stats.fresh, 40);
        // Cover still arrives once the table is full: the fill stops at 100 %.
        for _ in 0..1000 {
            h.count_unrecorded(Epoch(1));
        }
        assert_eq!(f.fill(Epoch(1)).map(|x| x.percent()), Some(100));
    }

    #[test]
    fn a_full_table_refuses_instead_of_growing() {
        let f = SharedReplayFilter::new(40).expect("small filter");
        assert_eq!(f.slots(), 80);
        f.prepare(Epoch(1));
        let verdicts: Vec<Verdict> = (0..200)
            .map(|i| f.check_and_insert(Epoch(1), &tag(i)))
            .collect();
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Fresh).count(),
            80
        );
        assert_eq!(
            verdicts.iter().filter(|v| **v == Verdict::Full).count(),
            120
        );
        assert_eq!(f.fill(Epoch(1)).map(|x| x.percent()), Some(100));
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
        assert!(SharedReplayFilter::new(MAX_SLOTS / 2 + 1).is_err());
        assert_eq!(SharedReplayFilter::memory_for(1_000_000), 32_000_000);
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
        assert_eq!(f.fill(Epoch(3)).map(|x| x.packets), Some(20_000));
    }
}
