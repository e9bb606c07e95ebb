//! Checking a published ledger from its files alone, as `pb-ledger verify` does: the
//! checkpoint's steward signatures (k of the network's stewards, for this network), every
//! entry bundle and hash tile against the checkpoint's root, every entry a measurement record
//! of this network signed by the relay it names, older checkpoints the log must extend, and
//! the reputation recomputed from the records.

use std::collections::BTreeMap;

use pb_control::checkpoint::{Checkpoint, CheckpointError, Stewards};
use pb_sphinx::Epoch;

use crate::{
    Hash, Tree,
    record::{RecordError, SignedMeasurement},
    reputation::{EpochScores, Params, Reputation, Table},
    tiles::{TileError, TileSource, read_log},
};

/// Why a ledger was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The checkpoint (or an older one) was refused: signatures, threshold, network, form.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A file could not be read, or the files do not hash to the checkpoint's root.
    #[error("{0}")]
    Tiles(#[from] TileError),
    /// An entry is not a well-formed record signed by the relay it names.
    #[error("entry {index}: {error}")]
    Record {
        /// Its index in the log.
        index: u64,
        /// Why.
        error: RecordError,
    },
    /// An entry is another network's record.
    #[error("entry {0}: a record of another network")]
    OtherNetwork(u64),
    /// The log does not extend an older checkpoint.
    #[error("the log does not extend the older checkpoint of size {0}")]
    Inconsistent(u64),
    /// The published reputation table is not what the records give.
    #[error("the published reputation table: {0}")]
    Reputation(String),
}

/// A ledger that checked out.
#[derive(Debug)]
pub struct Verified {
    /// Its checkpoint.
    pub checkpoint: Checkpoint,
    /// The names of the stewards who signed it.
    pub signers: Vec<String>,
    /// Its tree.
    pub tree: Tree,
    /// Its records, in log order.
    pub records: Vec<SignedMeasurement>,
    /// The sizes of the older checkpoints it extends.
    pub extends: Vec<u64>,
    /// Each epoch's scores.
    pub epochs: BTreeMap<Epoch, EpochScores>,
    /// Every relay's reputation after the last epoch.
    pub reputation: Reputation,
    /// The reputation table published with the log (the `reputation` file), if there is
    /// one: checked to be what its first `size` records give.
    pub published: Option<Table>,
}

/// Checks the ledger `source` holds against `stewards` and the `older` checkpoints (signed
/// notes) it must extend, and recomputes reputation with `params`.
pub fn verify(
    source: &dyn TileSource,
    stewards: &Stewards,
    older: &[Vec<u8>],
    params: Params,
) -> Result<Verified, VerifyError> {
    let note = source.fetch("checkpoint")?;
    let (checkpoint, signed) = stewards.open(&note)?;
    let signers = signed
        .iter()
        .filter_map(|&i| stewards.keys().get(i).map(|k| k.name().to_owned()))
        .collect();
    let (tree, entries) = read_log(source, checkpoint.tree_size, &Hash(checkpoint.tree_root))?;
    let mut records = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        let index = index as u64;
        let record =
            SignedMeasurement::open(entry).map_err(|error| VerifyError::Record { index, error })?;
        if record.measurement().network != stewards.network() {
            return Err(VerifyError::OtherNetwork(index));
        }
        records.push(record);
    }
    let mut extends = Vec::new();
    for note in older {
        let (old, _) = stewards.open(note)?;
        let matches = tree
            .root(old.tree_size)
            .is_ok_and(|root| root.0 == old.tree_root);
        if !matches {
            return Err(VerifyError::Inconsistent(old.tree_size));
        }
        extends.push(old.tree_size);
    }
    let mut reputation = Reputation::new(params);
    let epochs = reputation.apply_all(records.iter().map(SignedMeasurement::measurement));
    // The stewards signed the hash of the table the whole tree gives.
    let table = Table::of(stewards.network(), checkpoint.tree_size, &reputation);
    if table.commitment() != checkpoint.reputation {
        return Err(VerifyError::Reputation(
            "the checkpoint's reputation hash is not that of the table its records give".into(),
        ));
    }
    let published = match source.fetch("reputation") {
        Err(TileError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
        Ok(bytes) => Some(check_table(&bytes, &table, &records, params)?),
    };
    Ok(Verified {
        checkpoint,
        signers,
        tree,
        records,
        extends,
        epochs,
        reputation,
        published,
    })
}

/// A published reputation table, checked against what the first records it names give.
fn check_table(
    bytes: &[u8],
    whole: &Table,
    records: &[SignedMeasurement],
    params: Params,
) -> Result<Table, VerifyError> {
    let network = whole.network.as_str();
    let bad = |why: String| VerifyError::Reputation(why);
    let table = core::str::from_utf8(bytes)
        .ok()
        .and_then(Table::parse)
        .ok_or_else(|| bad("not a reputation table".into()))?;
    if table.network != network {
        return Err(bad(format!("of another network, {}", table.network)));
    }
    let first = usize::try_from(table.size)
        .ok()
        .and_then(|n| records.get(..n))
        .ok_or_else(|| bad(format!("names {} records, the log has fewer", table.size)))?;
    // A table of the whole tree is the one computed already.
    let expected = if table.size == whole.size {
        whole.clone()
    } else {
        let mut reputation = Reputation::new(params);
        reputation.apply_all(first.iter().map(SignedMeasurement::measurement));
        Table::of(network, table.size, &reputation)
    };
    if expected != table {
        let differ = expected
            .relays
            .iter()
            .find(|(id, v)| table.relays.get(*id) != Some(*v))
            .map(|(id, v)| format!("relay {id:?}: {v:?}, published {:?}", table.relays.get(id)))
            .unwrap_or_else(|| "other relays or epoch".into());
        return Err(bad(format!(
            "not what its {} records give: {differ}",
            table.size
        )));
    }
    Ok(table)
}
