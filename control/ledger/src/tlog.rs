//! RFC 6962 Merkle trees (as RFC 9162, section 2.1, restates them): a leaf's hash is
//! `SHA-256(0x00 || entry)`, an inner node's `SHA-256(0x01 || left || right)`, and the tree
//! of `n` leaves splits at the largest power of two below `n`. [`Tree`] keeps every complete
//! subtree's hash (level `k`, index `i`: leaves `i·2^k` to `(i+1)·2^k - 1`), which is what
//! tiles publish, and computes roots and proofs for any size up to its own.

use ring::digest::{Context, SHA256};

/// A SHA-256 hash of a leaf, a subtree or a tree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl core::fmt::Debug for Hash {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

impl Hash {
    /// Bytes in a hash.
    pub const LEN: usize = 32;

    /// The root of the empty tree: SHA-256 of nothing.
    pub fn empty() -> Self {
        Self(sha256(&[&[]]))
    }
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = Context::new(&SHA256);
    for p in parts {
        context.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// An entry's leaf hash: `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Hash(sha256(&[&[0x00], entry]))
}

/// An inner node's hash: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Hash(sha256(&[&[0x01], &left.0, &right.0]))
}

/// Why a proof or a request about a tree was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    /// A size beyond the tree, an index at or beyond the size, or an old size above the new.
    #[error("index or size out of range (index {index}, size {size})")]
    OutOfRange {
        /// The index or old size asked about.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// A proof of the wrong length, or whose hashes do not lead to the root(s) given.
    #[error("the proof does not verify")]
    BadProof,
}

/// The largest power of two strictly below `n` (`n` at least 2).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// A Merkle tree that grows by appending leaves; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// `levels[k][i]`: the hash of the complete subtree of `2^k` leaves starting at `i·2^k`.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves in the tree.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends an entry; returns its index.
    pub fn push(&mut self, entry: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(entry))
    }

    /// Appends a leaf by its hash; returns its index.
    pub fn push_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.size();
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            // A right child completes its parent.
            if row.len() % 2 == 1 {
                break;
            }
            let n = row.len();
            hash = node_hash(&row[n - 2], &row[n - 1]);
            level += 1;
        }
        index
    }

    /// The hash of complete subtree `index` at `level` (leaves `index·2^level` onwards), if
    /// the tree has all of its leaves.
    pub fn stored(&self, level: u32, index: u64) -> Option<Hash> {
        let row = self.levels.get(usize::try_from(level).ok()?)?;
        row.get(usize::try_from(index).ok()?).copied()
    }

    /// The hash of leaves `lo..hi` (`lo < hi <= size`), as RFC 6962's MTH of that range.
    fn subtree(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            // Complete and aligned: stored (the callers stay within the tree).
            return self.levels[n.trailing_zeros() as usize][(lo / n) as usize];
        }
        let k = split(n);
        node_hash(&self.subtree(lo, lo + k), &self.subtree(lo + k, hi))
    }

    fn check_size(&self, size: u64) -> Result<(), TlogError> {
        if size > self.size() {
            return Err(TlogError::OutOfRange {
                index: size,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// The root of the tree's first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, TlogError> {
        self.check_size(size)?;
        Ok(if size == 0 {
            Hash::empty()
        } else {
            self.subtree(0, size)
        })
    }

    /// The hashes that prove leaf `index` is in the tree of the first `size` leaves
    /// (RFC 9162 2.1.3.1), leaf side first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, TlogError> {
        self.check_size(size)?;
        if index >= size {
            return Err(TlogError::OutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, lo: u64, hi: u64, proof: &mut Vec<Hash>) {
        if hi - lo == 1 {
            return;
        }
        let k = split(hi - lo);
        if m - lo < k {
            self.path(m, lo, lo + k, proof);
            proof.push(self.subtree(lo + k, hi));
        } else {
            self.path(m, lo + k, hi, proof);
            proof.push(self.subtree(lo, lo + k));
        }
    }

    /// The hashes that prove the tree of the first `old` leaves is a prefix of that of the
    /// first `new` (RFC 9162 2.1.4.1); empty if `old` is 0 or equals `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, TlogError> {
        self.check_size(new)?;
        if old > new {
            return Err(TlogError::OutOfRange {
                index: old,
                size: new,
            });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, lo: u64, hi: u64, whole: bool, proof: &mut Vec<Hash>) {
        let n = hi - lo;
        if m == n {
            if !whole {
                proof.push(self.subtree(lo, hi));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, lo, lo + k, whole, proof);
            proof.push(self.subtree(lo + k, hi));
        } else {
            self.subproof(m - k, lo + k, hi, false, proof);
            proof.push(self.subtree(lo, lo + k));
        }
    }
}

/// Right-shifts both until `fn_`'s lowest bit is set or it is 0.
fn shift_to_odd(fn_: &mut u64, sn: &mut u64) {
    while *fn_ & 1 == 0 && *fn_ != 0 {
        *fn_ >>= 1;
        *sn >>= 1;
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose root is `root`
/// (RFC 9162 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), TlogError> {
    if index >= size {
        return Err(TlogError::OutOfRange { index, size });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(TlogError::BadProof);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                shift_to_odd(&mut fn_, &mut sn);
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn == 0 && r == *root {
        Ok(())
    } else {
        Err(TlogError::BadProof)
    }
}

/// Checks that the tree of `old` leaves with root `old_root` is a prefix of the tree of
/// `new` leaves with root `new_root` (RFC 9162 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), TlogError> {
    if old > new {
        return Err(TlogError::OutOfRange {
            index: old,
            size: new,
        });
    }
    if old == new {
        return if proof.is_empty() && old_root == new_root {
            Ok(())
        } else {
            Err(TlogError::BadProof)
        };
    }
    if old == 0 {
        // Every tree extends the empty one, whose root is fixed.
        return if proof.is_empty() && *old_root == Hash::empty() {
            Ok(())
        } else {
            Err(TlogError::BadProof)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(TlogError::BadProof);
    };
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(TlogError::BadProof);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                shift_to_odd(&mut fn_, &mut sn);
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if fr == *old_root && sr == *new_root && sn == 0 {
        Ok(())
    } else {
        Err(TlogError::BadProof)
    }
}

#[cfg(test)]
mod tests;
