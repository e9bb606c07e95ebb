//! The incentive ledger's log (docs/spec/ledger.md): an append-only Merkle tree with RFC 6962
//! hashing, published as static files in the C2SP tlog-tiles layout
//! (<https://c2sp.org/tlog-tiles>), so that verifiers written elsewhere (Go's
//! `golang.org/x/mod/sumdb/tlog`) check it without any code of ours.
//!
//! - [`tlog`]: leaf and node hashes, a tree that grows by appending, its root at any size,
//!   inclusion and consistency proofs, and their verification (RFC 9162, section 2.1).
//! - [`tiles`]: tile and entry-bundle paths, what a tile holds, which tiles a growth from one
//!   size to another publishes, entry bundles' encoding; a [`tiles::TileDir`] that writes
//!   them (each file whole, by rename) and reads them back, checking every hash it reads
//!   against a checkpoint's root.
//! - [`record`]: the entries, measurement records: what one relay's loops through each of
//!   its links measured in one epoch (counts only), a signed note by the relay.
//! - [`reputation`]: the public formula that turns records into each relay's reputation and
//!   route weight, in integer arithmetic so that every party computes the same.
//! - [`verify`]: a published ledger checked from its files alone (a directory, or a web
//!   server through [`http`]): signatures, hashes, records, older checkpoints, reputation.
//!   The `pb-ledger` binary is its command line.
//!
//! Not here: who signs checkpoints (the stewards, `pb_control::checkpoint`), collecting
//! records, choosing routes, or serving the files.
#![forbid(unsafe_code)]

pub mod collect;
pub mod http;
pub mod record;
pub mod reputation;
pub mod serve;
pub mod tiles;
pub mod tlog;
pub mod verify;

pub use tlog::{Hash, TlogError, Tree};
