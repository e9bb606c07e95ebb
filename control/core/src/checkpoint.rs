//! The stewards' epoch checkpoints (docs/spec/checkpoint.md). A network is named by its
//! stewards' keys and a threshold k; each epoch every steward signs what it admitted, and a
//! client uses an epoch only with k stewards' signatures over the same checkpoint.
//!
//! A checkpoint's text is a C2SP transparency-log checkpoint (origin, tree size, root hash;
//! the ledger fills the last two, an empty tree until then) whose extension lines name the
//! epoch, the hash of the admitted descriptor set and the topology's hash:
//!
//! ```text
//! <network name>
//! <ledger tree size>
//! <ledger root hash, base64>
//! epoch <n>
//! descriptors <SHA-256 of the admitted descriptor set, base64>
//! topology <topology hash, base64>
//! ```
//!
//! It is signed as a C2SP signed note ([`crate::note`]), one signature line per steward.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use pb_sphinx::Epoch;
use ring::digest::{SHA256, digest};

use crate::note::{Note, NoteError, NoteKey};

/// The root hash of an empty RFC 6962 tree: SHA-256 of nothing.
pub fn empty_tree_root() -> [u8; 32] {
    sha256(&[])
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The hash of an admitted descriptor set: SHA-256 over a domain line and, in ascending
/// byte order, each signed descriptor's length (u32, big-endian) and bytes. Independent of
/// the order the descriptors came in.
pub fn descriptor_set_hash<'d>(descriptors: impl IntoIterator<Item = &'d [u8]>) -> [u8; 32] {
    let mut sorted: Vec<&[u8]> = descriptors.into_iter().collect();
    sorted.sort_unstable();
    let mut input = b"PhantomBand v1 descriptor set\n".to_vec();
    for d in sorted {
        input.extend_from_slice(&(d.len() as u32).to_be_bytes());
        input.extend_from_slice(d);
    }
    sha256(&input)
}

/// Why a checkpoint, or a set of stewards, was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The note itself was refused.
    #[error("{0}")]
    Note(#[from] NoteError),
    /// The text is not a checkpoint of the form above (the line named).
    #[error("not a checkpoint: bad {0} line")]
    Malformed(&'static str),
    /// The checkpoint is for another network.
    #[error("the checkpoint is for another network")]
    WrongNetwork,
    /// Fewer stewards than the threshold signed it.
    #[error("{got} of the {need} steward signatures needed")]
    TooFewSignatures {
        /// Stewards whose signatures verified.
        got: usize,
        /// The threshold.
        need: usize,
    },
    /// A threshold of 0 or above the number of stewards, or two stewards alike.
    #[error("a threshold of {k} of {n} distinct stewards is not usable")]
    BadStewards {
        /// The threshold.
        k: usize,
        /// Stewards.
        n: usize,
    },
}

/// What the stewards sign each epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The network's name (the origin line).
    pub network: String,
    /// The ledger's tree size (0 before the ledger exists).
    pub tree_size: u64,
    /// The ledger's root hash ([`empty_tree_root`] before it exists).
    pub tree_root: [u8; 32],
    /// The epoch.
    pub epoch: Epoch,
    /// [`descriptor_set_hash`] of the admitted descriptors.
    pub descriptors: [u8; 32],
    /// The topology's hash.
    pub topology: [u8; 32],
    /// SHA-256 of the reputation table the ledger's first `tree_size` records give
    /// (`pb_ledger::reputation::Table`; docs/spec/ledger.md); all zero while the ledger is
    /// empty. Clients weigh routes by a table only if it hashes to this.
    pub reputation: [u8; 32],
}

impl Checkpoint {
    /// Its text, as signed.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\nepoch {}\ndescriptors {}\ntopology {}\nreputation {}\n",
            self.network,
            self.tree_size,
            BASE64.encode(self.tree_root),
            self.epoch.0,
            BASE64.encode(self.descriptors),
            BASE64.encode(self.topology),
            BASE64.encode(self.reputation)
        )
    }

    /// Parses a checkpoint's text, in exactly the form [`Checkpoint::text`] writes (so one
    /// checkpoint has one text, and steward signatures over it can be compared).
    pub fn parse(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("last"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let &[
            network,
            size,
            root,
            epoch,
            descriptors,
            topology,
            reputation,
        ] = lines.as_slice()
        else {
            return Err(CheckpointError::Malformed("count of"));
        };
        if network.is_empty() || network.contains(char::is_whitespace) || network.contains('+') {
            return Err(CheckpointError::Malformed("origin"));
        }
        let hash = |field: &str, what: &'static str| -> Result<[u8; 32], CheckpointError> {
            let bytes = BASE64
                .decode(field)
                .map_err(|_| CheckpointError::Malformed(what))?;
            bytes
                .try_into()
                .map_err(|_| CheckpointError::Malformed(what))
        };
        let checkpoint = Self {
            network: network.to_owned(),
            tree_size: decimal(size).ok_or(CheckpointError::Malformed("tree size"))?,
            tree_root: hash(root, "root hash")?,
            epoch: Epoch(
                epoch
                    .strip_prefix("epoch ")
                    .and_then(decimal)
                    .and_then(|e| u32::try_from(e).ok())
                    .ok_or(CheckpointError::Malformed("epoch"))?,
            ),
            descriptors: hash(
                descriptors
                    .strip_prefix("descriptors ")
                    .ok_or(CheckpointError::Malformed("descriptors"))?,
                "descriptors",
            )?,
            topology: hash(
                topology
                    .strip_prefix("topology ")
                    .ok_or(CheckpointError::Malformed("topology"))?,
                "topology",
            )?,
            reputation: hash(
                reputation
                    .strip_prefix("reputation ")
                    .ok_or(CheckpointError::Malformed("reputation"))?,
                "reputation",
            )?,
        };
        // One text per checkpoint: anything that does not write back the same is refused.
        if checkpoint.text() != text {
            return Err(CheckpointError::Malformed("non-canonical"));
        }
        Ok(checkpoint)
    }
}

/// ASCII decimal with no sign and no leading zero (but "0"): the one form a signed text
/// may write a number in.
pub fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || (s.len() > 1 && s.starts_with('0')) || !s.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    s.parse().ok()
}

/// A network's stewards: its name, their keys and the threshold k.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stewards {
    network: String,
    keys: Vec<NoteKey>,
    k: usize,
}

impl Stewards {
    /// The stewards of `network`: `keys`, of which `k` must sign.
    pub fn new(network: &str, keys: Vec<NoteKey>, k: usize) -> Result<Self, CheckpointError> {
        let n = keys.len();
        let distinct = keys.iter().enumerate().all(|(i, a)| {
            keys[..i]
                .iter()
                .all(|b| a.name() != b.name() && a.public() != b.public())
        });
        if k == 0 || k > n || !distinct {
            return Err(CheckpointError::BadStewards { k, n });
        }
        Ok(Self {
            network: network.to_owned(),
            keys,
            k,
        })
    }

    /// The network's name.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The stewards' keys.
    pub fn keys(&self) -> &[NoteKey] {
        &self.keys
    }

    /// The threshold.
    pub fn threshold(&self) -> usize {
        self.k
    }

    /// Opens a cosigned checkpoint: every steward signature on it verifies, at least k
    /// distinct stewards signed, and it is this network's. The checkpoint and the indices
    /// of the stewards who signed.
    pub fn open(&self, note: &[u8]) -> Result<(Checkpoint, Vec<usize>), CheckpointError> {
        let note = Note::parse(note)?;
        let signed = match note.verify(&self.keys) {
            Ok(signed) => signed,
            Err(NoteError::Unsigned) => {
                return Err(CheckpointError::TooFewSignatures {
                    got: 0,
                    need: self.k,
                });
            }
            Err(e) => return Err(e.into()),
        };
        if signed.len() < self.k {
            return Err(CheckpointError::TooFewSignatures {
                got: signed.len(),
                need: self.k,
            });
        }
        let checkpoint = Checkpoint::parse(note.text)?;
        if checkpoint.network != self.network {
            return Err(CheckpointError::WrongNetwork);
        }
        Ok((checkpoint, signed))
    }
}

#[cfg(test)]
mod tests;
