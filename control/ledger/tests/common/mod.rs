//! What the ledger's integration tests share: a scratch directory, the stewards, the
//! checkpoints they sign.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{fs, path::PathBuf};

use pb_control::{
    IdentityKeyPair,
    checkpoint::Checkpoint,
    note::{NoteSigner, sign},
};
use pb_ledger::Tree;
use pb_sphinx::Epoch;

/// The network the tests' ledgers belong to.
pub const NETWORK: &str = "pb.test/network";

/// A scratch directory under the system's temporary one, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("pb-ledger-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Three stewards' names and keys.
pub fn stewards() -> Vec<(String, IdentityKeyPair)> {
    (1..=3u8)
        .map(|i| {
            (
                format!("pb.test/steward-{i}"),
                IdentityKeyPair::from_seed(&[i; 32]),
            )
        })
        .collect()
}

/// The checkpoint of `tree` at its size for `epoch`, signed by the first `signers` stewards,
/// committing to no reputation table (all zero: what the Go verifier does not read).
#[allow(dead_code, reason = "not every test uses it")]
pub fn checkpoint(
    tree: &Tree,
    epoch: u32,
    stewards: &[(String, IdentityKeyPair)],
    signers: usize,
) -> String {
    checkpoint_with(tree, [0; 32], epoch, stewards, signers)
}

/// The same, committing to the reputation table whose hash is `reputation`.
pub fn checkpoint_with(
    tree: &Tree,
    reputation: [u8; 32],
    epoch: u32,
    stewards: &[(String, IdentityKeyPair)],
    signers: usize,
) -> String {
    let text = Checkpoint {
        network: NETWORK.into(),
        tree_size: tree.size(),
        tree_root: tree.root(tree.size()).unwrap().0,
        reputation,
        epoch: Epoch(epoch),
        descriptors: [0x44; 32],
        topology: [0x54; 32],
    }
    .text();
    let signers: Vec<NoteSigner<'_>> = stewards[..signers]
        .iter()
        .map(|(name, pair)| NoteSigner::new(name, pair).unwrap())
        .collect();
    sign(&text, &signers.iter().collect::<Vec<_>>()).unwrap()
}
