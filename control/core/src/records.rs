//! How relays' measurement records reach the stewards by gossip, sans I/O
//! (docs/spec/ledger.md, "Collection"). A record (a signed note, at most [`MAX_RECORD`]
//! bytes) is cut into fragments that each fit a gossip datagram; a relay sends them to every
//! live steward and again a few times through the next epoch (UDP may lose any of them).
//! Stewards put the fragments back together; what they do with a whole record (check its
//! signature, keep one per relay and epoch) is the ledger's business, not this module's.
//!
//! A fragment is `KIND_RECORD`, the record's id (the first 8 bytes of its BLAKE3 hash), the
//! fragment's index and the fragments' count (one byte each), then the fragment's bytes.
//! A record whose fragments do not hash to its id is dropped, so fragments of two records
//! cannot be spliced; memory is bounded by [`MAX_PENDING`] records in assembly, each
//! dropped after [`ASSEMBLY_TIME`].

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use crate::wire::MAX_DATAGRAM;

/// The datagram kind of a record fragment.
pub const KIND_RECORD: u8 = 6;
/// The largest record carried (64 links' lines are about 6.3 KB).
pub const MAX_RECORD: usize = 16 * 1024;
/// Bytes of a fragment's header: kind, id, index, count.
const HEADER: usize = 1 + 8 + 1 + 1;
/// The record bytes a fragment carries at most.
pub const FRAGMENT: usize = MAX_DATAGRAM - HEADER;
/// Records in assembly at most; beyond, the oldest is dropped.
pub const MAX_PENDING: usize = 512;
/// How long a record's fragments wait for the rest.
pub const ASSEMBLY_TIME: Duration = Duration::from_secs(30);
/// Whole records waiting to be taken at most; beyond, new ones are dropped (and sent again).
pub const MAX_DONE: usize = 1024;

/// A record's id: the first 8 bytes of its BLAKE3 hash.
fn id(record: &[u8]) -> [u8; 8] {
    let mut id = [0u8; 8];
    id.copy_from_slice(&blake3::hash(record).as_bytes()[..8]);
    id
}

/// The datagrams that carry `record`, or `None` if it is empty or longer than
/// [`MAX_RECORD`].
pub fn datagrams(record: &[u8]) -> Option<Vec<Vec<u8>>> {
    if record.is_empty() || record.len() > MAX_RECORD {
        return None;
    }
    let id = id(record);
    let count = record.len().div_ceil(FRAGMENT);
    Some(
        record
            .chunks(FRAGMENT)
            .enumerate()
            .map(|(index, chunk)| {
                let mut d = Vec::with_capacity(HEADER + chunk.len());
                d.push(KIND_RECORD);
                d.extend_from_slice(&id);
                d.push(index as u8);
                d.push(count as u8);
                d.extend_from_slice(chunk);
                d
            })
            .collect(),
    )
}

/// Why a fragment was not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not a fragment's shape: too short, an index past the count, a count that a record of
    /// [`MAX_RECORD`] bytes never needs, or an inner fragment that is not full.
    Malformed,
    /// The fragments of a record do not hash to its id.
    Mismatch,
}

struct Partial {
    count: u8,
    fragments: Vec<Option<Vec<u8>>>,
    since: Duration,
}

/// Fragments being put back together into records.
#[derive(Default)]
pub struct Reassembly {
    pending: HashMap<[u8; 8], Partial>,
    /// Ids in arrival order (to drop the oldest, and expire).
    order: VecDeque<([u8; 8], Duration)>,
    done: VecDeque<Vec<u8>>,
    /// Ids of the records completed lately: their fragments, sent again, are skipped.
    recent: VecDeque<[u8; 8]>,
}

impl core::fmt::Debug for Reassembly {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Reassembly")
            .field("pending", &self.pending.len())
            .field("done", &self.done.len())
            .finish_non_exhaustive()
    }
}

impl Reassembly {
    /// Takes a fragment (the datagram after its kind byte) received at `now`; true when it
    /// completed a record (to [`take`](Self::take)).
    pub fn receive(&mut self, body: &[u8], now: Duration) -> Result<bool, Refused> {
        self.expire(now);
        let (Some(header), Some(chunk)) = (body.get(..HEADER - 1), body.get(HEADER - 1..)) else {
            return Err(Refused::Malformed);
        };
        let mut id = [0u8; 8];
        id.copy_from_slice(&header[..8]);
        let (index, count) = (header[8], header[9]);
        let max = MAX_RECORD.div_ceil(FRAGMENT) as u8;
        // (`index < count` first: an index of 255 plus one would overflow.)
        if count == 0 || count > max || index >= count || chunk.is_empty() {
            return Err(Refused::Malformed);
        }
        if index + 1 < count && chunk.len() != FRAGMENT {
            return Err(Refused::Malformed);
        }
        if self.recent.contains(&id) {
            return Ok(false);
        }
        if !self.pending.contains_key(&id) {
            if self.pending.len() >= MAX_PENDING
                && let Some((oldest, _)) = self.order.pop_front()
            {
                self.pending.remove(&oldest);
            }
            self.pending.insert(
                id,
                Partial {
                    count,
                    fragments: vec![None; usize::from(count)],
                    since: now,
                },
            );
            self.order.push_back((id, now));
        }
        let Some(partial) = self.pending.get_mut(&id) else {
            return Ok(false);
        };
        if partial.count != count {
            return Err(Refused::Malformed);
        }
        partial.fragments[usize::from(index)] = Some(chunk.to_vec());
        if partial.fragments.iter().any(Option::is_none) {
            return Ok(false);
        }
        let record: Vec<u8> = partial
            .fragments
            .iter()
            .flatten()
            .flatten()
            .copied()
            .collect();
        self.pending.remove(&id);
        self.order.retain(|(o, _)| *o != id);
        if self::id(&record) != id {
            return Err(Refused::Mismatch);
        }
        if self.recent.len() >= MAX_PENDING {
            self.recent.pop_front();
        }
        self.recent.push_back(id);
        if self.done.len() >= MAX_DONE {
            return Ok(false);
        }
        self.done.push_back(record);
        Ok(true)
    }

    /// Drops the records whose fragments have waited longer than [`ASSEMBLY_TIME`].
    fn expire(&mut self, now: Duration) {
        while let Some((id, since)) = self.order.front().copied() {
            if now.saturating_sub(since) < ASSEMBLY_TIME {
                break;
            }
            self.order.pop_front();
            if self.pending.get(&id).is_some_and(|p| p.since == since) {
                self.pending.remove(&id);
            }
        }
    }

    /// Records in assembly now.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// A whole record received, oldest first.
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.done.pop_front()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn record(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn feed(r: &mut Reassembly, datagrams: &[Vec<u8>], now: Duration) {
        for d in datagrams {
            assert_eq!(d[0], KIND_RECORD);
            assert!(d.len() <= MAX_DATAGRAM);
            r.receive(&d[1..], now).unwrap();
        }
    }

    #[test]
    fn records_of_any_size_come_back_whole_in_any_order() {
        for len in [1, FRAGMENT - 1, FRAGMENT, FRAGMENT + 1, 6_300, MAX_RECORD] {
            let rec = record(len, 7);
            let mut ds = datagrams(&rec).unwrap();
            ds.reverse();
            let mut r = Reassembly::default();
            feed(&mut r, &ds[..ds.len() - 1], Duration::ZERO);
            assert!(r.take().is_none(), "{len}: incomplete");
            feed(&mut r, &ds[ds.len() - 1..], Duration::ZERO);
            assert_eq!(r.take().unwrap(), rec, "{len}");
            // Sent again: not delivered twice.
            feed(&mut r, &ds, Duration::from_secs(1));
            assert!(r.take().is_none());
        }
        assert!(datagrams(&[]).is_none());
        assert!(datagrams(&record(MAX_RECORD + 1, 0)).is_none());
    }

    #[test]
    fn spliced_malformed_and_stale_fragments_are_refused() {
        let (a, b) = (record(3_000, 1), record(3_000, 2));
        let (da, db) = (datagrams(&a).unwrap(), datagrams(&b).unwrap());
        let mut r = Reassembly::default();
        // b's middle fragment under a's id: the whole does not hash to the id.
        let mut spliced = db[1].clone();
        spliced[1..9].copy_from_slice(&da[1][1..9]);
        r.receive(&da[0][1..], Duration::ZERO).unwrap();
        r.receive(&spliced[1..], Duration::ZERO).unwrap();
        assert_eq!(
            r.receive(&da[2][1..], Duration::ZERO),
            Err(Refused::Mismatch)
        );
        assert!(r.take().is_none());
        for bad in [
            vec![0u8; 5],
            [&da[0][1..9], &[0, 0][..], b"x"].concat(), // count 0
            [&da[0][1..9], &[3, 3][..], b"x"].concat(), // index past count
            [&da[0][1..9], &[0, 2][..], b"short"].concat(), // inner fragment not full
            [&da[0][1..9], &[0, 200][..], b"x"].concat(), // more than a record needs
            [&da[0][1..9], &[255, 3][..], b"x"].concat(), // the last index (found by fuzzing)
            [&da[0][1..9], &[255, 255][..], b"x"].concat(),
            da[0][1..11].to_vec(), // no bytes
        ] {
            assert_eq!(r.receive(&bad, Duration::ZERO), Err(Refused::Malformed));
        }
        // Fragments that wait too long are dropped.
        let mut r = Reassembly::default();
        r.receive(&db[0][1..], Duration::ZERO).unwrap();
        r.receive(&db[1][1..], Duration::ZERO).unwrap();
        r.receive(&db[2][1..], ASSEMBLY_TIME).unwrap();
        assert!(r.take().is_none(), "the first two expired");
        feed(&mut r, &db[..2], ASSEMBLY_TIME);
        assert_eq!(r.take().unwrap(), b);
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Reassembly::default();
        for i in 0..(MAX_PENDING as u32 + 100) {
            let rec: Vec<u8> = [&i.to_le_bytes()[..], &[0u8; FRAGMENT][..]].concat();
            let ds = datagrams(&rec).unwrap();
            r.receive(&ds[0][1..], Duration::ZERO).unwrap();
        }
        assert_eq!(r.pending.len(), MAX_PENDING);
        assert_eq!(r.order.len(), MAX_PENDING);
    }
}
