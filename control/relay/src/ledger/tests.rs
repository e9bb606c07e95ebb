#![expect(clippy::unwrap_used, reason = "tests")]

use pb_control::{
    checkpoint::Checkpoint,
    note::{NoteKey, NoteSigner, sign},
};
use pb_ledger::{
    Tree,
    record::Measurement,
    reputation::{Params, Reputation},
};

use super::*;

const NETWORK: &str = "pb.test/network";

fn steward_pairs() -> Vec<IdentityKeyPair> {
    (1..=3u8)
        .map(|i| IdentityKeyPair::from_seed(&[i; 32]))
        .collect()
}

fn stewards(pairs: &[IdentityKeyPair]) -> Stewards {
    let keys = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| NoteKey::new(&format!("pb.test/steward-{i}"), p.public()).unwrap())
        .collect();
    Stewards::new(NETWORK, keys, 2).unwrap()
}

fn record(relay: u8, epoch: u32, network: &str) -> Vec<u8> {
    let pair = IdentityKeyPair::from_seed(&[relay; 32]);
    Measurement {
        network: network.into(),
        epoch: Epoch(epoch),
        relay: pair.public(),
        links: Vec::new(),
    }
    .sign(&pair)
    .unwrap()
    .as_bytes()
    .to_vec()
}

/// Writes a log of `entries` into `dir` (anew) and returns the note of its tree signed by
/// the stewards `by` (indices).
fn publish(dir: &std::path::Path, entries: &[Vec<u8>], by: &[usize]) -> Vec<u8> {
    let _ = std::fs::remove_dir_all(dir);
    let tiles = TileDir::new(dir);
    let mut tree = Tree::new();
    for e in entries {
        tree.push(e);
    }
    tiles.publish(&tree, entries, 0).unwrap();
    let records: Vec<SignedMeasurement> = entries
        .iter()
        .filter_map(|e| SignedMeasurement::open(e).ok())
        .collect();
    let mut reputation = Reputation::new(Params::default());
    reputation.apply_all(records.iter().map(SignedMeasurement::measurement));
    let text = Checkpoint {
        network: NETWORK.into(),
        tree_size: tree.size(),
        tree_root: tree.root(tree.size()).unwrap().0,
        reputation: Table::of(NETWORK, tree.size(), &reputation).commitment(),
        epoch: Epoch(9),
        descriptors: [0; 32],
        topology: [0; 32],
    }
    .text();
    let pairs = steward_pairs();
    let signers: Vec<NoteSigner<'_>> = by
        .iter()
        .map(|&i| NoteSigner::new(&format!("pb.test/steward-{i}"), &pairs[i]).unwrap())
        .collect();
    sign(&text, &signers.iter().collect::<Vec<_>>())
        .unwrap()
        .into_bytes()
}

struct Dirs(std::path::PathBuf);

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn follower(root: &std::path::Path, file: &'static str) -> Follower {
    Follower {
        source: Box::new(TileDir::new(root.join("served"))),
        file,
        dir: TileDir::new(root.join("mirror")),
        stewards: stewards(&steward_pairs()),
        held: None,
        records: Vec::new(),
    }
}

#[test]
fn a_witness_takes_a_growing_log_and_refuses_forks_shrinks_and_strangers() {
    let root = std::env::temp_dir().join(format!("pb-relay-follow-{}", std::process::id()));
    let _dirs = Dirs(root.clone());
    let served = root.join("served");
    let mut w = follower(&root, "proposal");
    let first: Vec<Vec<u8>> = (10..18).map(|r| record(r, 5, NETWORK)).collect();
    let note = publish(&served, &first, &[0]);
    let taken = w.take(&note).unwrap();
    assert_eq!(taken.size, 8);
    assert_eq!(taken.table.size, 8);
    assert_eq!(
        taken.table.relays.len(),
        0,
        "records with no links measure nobody"
    );
    // The mirror holds the same tiles.
    assert_eq!(
        TileDir::new(root.join("mirror"))
            .read_log(8, &taken.root)
            .unwrap()
            .1,
        first
    );

    // It grows: taken.
    let mut grown = first.clone();
    grown.extend((10..18).map(|r| record(r, 6, NETWORK)));
    let taken = w.take(&publish(&served, &grown, &[0])).unwrap();
    assert_eq!(taken.size, 16);

    // Another history of the first 16, one more record: refused.
    let mut forked = grown.clone();
    forked[3] = record(40, 5, NETWORK);
    forked.push(record(41, 7, NETWORK));
    let e = w.take(&publish(&served, &forked, &[0])).err().unwrap();
    assert!(
        e.starts_with("refused") && e.contains("does not extend"),
        "{e}"
    );
    // Fewer records than taken: refused.
    let e = w.take(&publish(&served, &first, &[0])).err().unwrap();
    assert!(e.starts_with("refused") && e.contains("shrank"), "{e}");
    // Something else than a record, or another network's: refused.
    for (bad, why) in [
        (b"not a record".to_vec(), "entry 16"),
        (record(42, 7, "pb.test/other"), "another network"),
    ] {
        let mut log = grown.clone();
        log.push(bad);
        let e = w.take(&publish(&served, &log, &[0])).err().unwrap();
        assert!(e.starts_with("refused") && e.contains(why), "{why}: {e}");
    }
    // A proposal another steward signed is not the operator's.
    let mut longer = grown.clone();
    longer.push(record(43, 7, NETWORK));
    let e = w.take(&publish(&served, &longer, &[1])).err().unwrap();
    assert!(e.contains("not the operator's"), "{e}");
    // The operator's, extending what was taken: still fine after all that.
    assert_eq!(w.take(&publish(&served, &longer, &[0])).unwrap().size, 17);
}

#[test]
fn a_mirror_takes_only_a_checkpoint_k_stewards_signed() {
    let root = std::env::temp_dir().join(format!("pb-relay-mirror-{}", std::process::id()));
    let _dirs = Dirs(root.clone());
    let served = root.join("served");
    let mut m = follower(&root, "checkpoint");
    let log: Vec<Vec<u8>> = (10..14).map(|r| record(r, 5, NETWORK)).collect();
    let e = m.take(&publish(&served, &log, &[0])).err().unwrap();
    assert!(e.contains("1 of the 2 steward signatures"), "{e}");
    let taken = m.take(&publish(&served, &log, &[0, 2])).unwrap();
    assert_eq!(taken.size, 4);
    assert_eq!(
        taken.table.commitment(),
        Checkpoint::parse(Note::parse(&taken.note).unwrap().text)
            .unwrap()
            .reputation
    );
}
