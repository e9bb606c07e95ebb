//! Making records and collecting them, sans I/O (docs/spec/ledger.md, "Collection").
//!
//! - [`Recorder`]: a relay's own loop counters, read once a second per link, summed per
//!   neighbour through an epoch and closed into its [`Measurement`] when the epoch ends.
//! - [`Collector`]: what a steward keeps of the records that reach it: records of this
//!   network for the last epochs, checked, the first one per relay and epoch.
//! - [`Log`]: the log operator's tree and entries, appended one epoch's batch at a time and
//!   published as tiles in a [`TileDir`].

use std::collections::BTreeMap;

use pb_control::{IdentityKey, checkpoint::Checkpoint, note::Note};
use pb_mix::{LoopStats, RTT_BUCKET_COUNT};
use pb_sphinx::{Epoch, NodeId};

use crate::{
    Hash, Tree,
    record::{LinkMeasurement, MAX_LINKS, Measurement, RecordError, SignedMeasurement},
    tiles::{TileDir, TileError},
};

/// A relay's loop counters summed per neighbour through the current epoch.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Per link index: the counters read last (they only grow).
    last: Vec<LoopStats>,
    /// Per neighbour: the counts since the epoch began.
    epoch: BTreeMap<NodeId, LoopStats>,
}

impl Recorder {
    /// Reads the links' counters: `links[i]` is link `i`'s neighbour now and its counters
    /// since the relay started. What grew since the last reading counts for that neighbour.
    pub fn observe(&mut self, links: &[(NodeId, LoopStats)]) {
        if self.last.len() < links.len() {
            self.last.resize(links.len(), LoopStats::default());
        }
        for ((neighbour, now), last) in links.iter().zip(self.last.iter_mut()) {
            let grown = now.since(last);
            *last = *now;
            let sum = self.epoch.entry(*neighbour).or_default();
            sum.sent += grown.sent;
            sum.lost += grown.lost;
            for (s, g) in sum.rtt.iter_mut().zip(grown.rtt) {
                *s += g;
            }
        }
    }

    /// Ends the epoch: what `relay` measured in `epoch` of `network` (links with no loops
    /// are left out; beyond [`MAX_LINKS`], those with the fewest loops), and starts anew.
    ///
    /// A loop sent late in one epoch settles in the next: a link's `sent` is at least what
    /// settled in the epoch, so that a record's counts always add up. Its `returned` is the
    /// round-trip buckets' sum, which the counters publish together.
    pub fn close(&mut self, network: &str, epoch: Epoch, relay: IdentityKey) -> Measurement {
        let own = relay.node_id();
        let mut links: Vec<LinkMeasurement> = std::mem::take(&mut self.epoch)
            .into_iter()
            .filter(|(n, _)| *n != own)
            .map(|(neighbour, s)| {
                let returned: u64 = s.rtt.iter().sum();
                LinkMeasurement {
                    neighbour,
                    sent: s.sent.max(returned + s.lost),
                    returned,
                    lost: s.lost,
                    rtt: s.rtt,
                }
            })
            .filter(|l| l.sent > 0)
            .collect();
        if links.len() > MAX_LINKS {
            links.sort_by_key(|l| std::cmp::Reverse(l.sent));
            links.truncate(MAX_LINKS);
            links.sort_by_key(|l| l.neighbour);
        }
        debug_assert!(links.iter().all(|l| l.rtt.len() == RTT_BUCKET_COUNT));
        Measurement {
            network: network.to_owned(),
            epoch,
            relay,
            links,
        }
    }
}

/// Why a steward did not keep a record.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Not a valid signed record.
    #[error("{0}")]
    Record(#[from] RecordError),
    /// A record of another network.
    #[error("a record of another network")]
    OtherNetwork,
    /// Of an epoch not collected now (too old, or in the future).
    #[error("a record of epoch {0}, not collected now")]
    OtherEpoch(u32),
    /// The relay's record of that epoch is held already (a copy sent again, or a second,
    /// different one: the first stands).
    #[error("the relay's record of that epoch is held")]
    Held,
}

/// How many epochs back a steward collects records: a relay closes epoch e's record as
/// e + 1 begins and sends it through e + 1; the log takes e's batch as e + 2 begins.
pub const COLLECT_EPOCHS: u32 = 2;

/// The records a steward holds, per epoch and relay.
#[derive(Debug)]
pub struct Collector {
    network: String,
    held: BTreeMap<u32, BTreeMap<NodeId, SignedMeasurement>>,
    /// The last epoch taken: its records, and older ones, are refused from then on.
    taken: Option<u32>,
}

impl Collector {
    /// Collects records of `network`.
    pub fn new(network: &str) -> Self {
        Self {
            network: network.to_owned(),
            held: BTreeMap::new(),
            taken: None,
        }
    }

    /// Takes a record (a signed note) received while `current` is the epoch: of this
    /// network, of one of the [`COLLECT_EPOCHS`] epochs before `current`, signed by the
    /// relay it names, the first for that relay and epoch.
    pub fn offer(&mut self, bytes: &[u8], current: Epoch) -> Result<NodeId, Refused> {
        let record = SignedMeasurement::open(bytes)?;
        let m = record.measurement();
        if m.network != self.network {
            return Err(Refused::OtherNetwork);
        }
        let age = current.0.wrapping_sub(m.epoch.0);
        if age == 0 || age > COLLECT_EPOCHS || self.taken.is_some_and(|t| m.epoch.0 <= t) {
            return Err(Refused::OtherEpoch(m.epoch.0));
        }
        let relay = m.relay.node_id();
        let epoch = self.held.entry(m.epoch.0).or_default();
        if epoch.contains_key(&relay) {
            return Err(Refused::Held);
        }
        epoch.insert(relay, record);
        Ok(relay)
    }

    /// The records held of `epoch`, in ascending order of relay, taken out; epochs before it
    /// are dropped, and records of it or before refused from now on.
    pub fn take(&mut self, epoch: Epoch) -> Vec<SignedMeasurement> {
        let batch = self.held.remove(&epoch.0).unwrap_or_default();
        self.held.retain(|&e, _| e > epoch.0);
        self.taken = Some(self.taken.map_or(epoch.0, |t| t.max(epoch.0)));
        batch.into_values().collect()
    }

    /// How many records of `epoch` are held.
    pub fn count(&self, epoch: Epoch) -> usize {
        self.held.get(&epoch.0).map_or(0, BTreeMap::len)
    }
}

/// The log operator's log: the tree and every entry, on disk as tiles.
#[derive(Debug)]
pub struct Log {
    dir: TileDir,
    tree: Tree,
    entries: Vec<Vec<u8>>,
    /// The tree size whose tiles are on disk (behind `tree` after a failed write).
    published: u64,
}

impl Log {
    /// The log in `dir`: empty if it has no `file` (`checkpoint`, or the operator's
    /// `proposal`) yet, otherwise read back to the tree that file names (every tile checked
    /// against its root).
    pub fn open(dir: TileDir, file: &str) -> Result<Self, TileError> {
        let (tree, entries) = match dir.read(file) {
            Err(TileError::NotFound(_)) => (Tree::new(), Vec::new()),
            Err(e) => return Err(e),
            Ok(note) => {
                let (size, root) = tree_of(&note).ok_or_else(|| {
                    TileError::Http("the checkpoint file is no checkpoint".into())
                })?;
                dir.read_log(size, &root)?
            }
        };
        let published = tree.size();
        Ok(Self {
            dir,
            tree,
            entries,
            published,
        })
    }

    /// Its tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Its entries.
    pub fn entries(&self) -> &[Vec<u8>] {
        &self.entries
    }

    /// Its root hash now.
    pub fn root(&self) -> Hash {
        self.tree
            .root(self.tree.size())
            .unwrap_or_else(|_| Hash::empty())
    }

    /// Appends `batch` and publishes the tiles that changed since the last write that
    /// succeeded (the checkpoint is the caller's). The entries are in the tree even if the
    /// write fails: the next append writes them again.
    pub fn append(&mut self, batch: &[SignedMeasurement]) -> Result<(), TileError> {
        for record in batch {
            self.tree.push(record.as_bytes());
            self.entries.push(record.as_bytes().to_vec());
        }
        self.dir
            .publish(&self.tree, &self.entries, self.published)?;
        self.published = self.tree.size();
        Ok(())
    }

    /// Where its files are.
    pub fn dir(&self) -> &TileDir {
        &self.dir
    }
}

/// The tree size and root a checkpoint note names (its signatures unchecked).
pub fn tree_of(note: &[u8]) -> Option<(u64, Hash)> {
    let note = Note::parse(note).ok()?;
    let checkpoint = Checkpoint::parse(note.text).ok()?;
    Some((checkpoint.tree_size, Hash(checkpoint.tree_root)))
}

#[cfg(test)]
mod tests;
