//! PB-Sphinx: the fixed-size packet every PhantomBand link carries (docs/spec/packet-format.md).
//!
//! Two header formats ([`Format`]): v1, Sphinx with per-hop blinding (two X25519 per hop),
//! and v2, a KEM-style header (one X25519 per hop, 160 fewer payload bytes).
//!
//! What it does: builds packets for a route of up to five relays ([`create_packet`]) and
//! single-use reply blocks ([`create_surb`], [`Surb::into_reply`], [`SurbSecrets::open_reply`]);
//! processes a packet at a relay in place on the caller's buffer ([`process`],
//! [`process_batch`]) with a typed result: forward to the next relay, deliver, or drop with a
//! reason. Header MACs are compared in constant time; secrets are zeroized on drop; nothing
//! allocates per processed packet; no input panics.
//!
//! What it does not: I/O, clocks or OS randomness (randomness comes in as a seed), delaying,
//! and a relay-grade replay filter (it defines the [`ReplayFilter`] trait; the dataplane
//! provides a bounded lock-free one).
//!
//! [`process_batch`] runs the X25519 work of four packets at a time in AVX2 lanes where the
//! CPU has them (crate `pb-x25519-batch`, the only PhantomBand crate with SIMD `unsafe`); this crate
//! itself has no `unsafe`.
#![forbid(unsafe_code)]

mod create;
mod crypto;
mod format;
mod process;

pub use create::{
    CreateError, Hop, SURB_LEN, SURB_MAX, Surb, SurbBytes, SurbError, SurbSecrets, create_packet,
    create_packet_with, create_surb, create_surb_with,
};
pub use crypto::ReplayTag;
pub use format::{
    ALPHA_AT, ALPHA_LEN, BETA_AT, BETA_LEN, BLOCK_LEN, COMMAND_LEN, COVER_MAILBOX, DelayMs,
    EPOCH_AT, Epoch, Format, GAMMA_AT, HEADER_LEN, HEADER_MAX, MAC_LEN, MAX_HOPS, MESSAGE_LEN,
    MailboxId, NodeId, PACKET_LEN, PAYLOAD_AT, PAYLOAD_LEN, PAYLOAD_TAG_LEN, SurbId, VERSION,
};
pub use process::{
    DropReason, EpochKey, MemoryReplayFilter, NodeKeys, Processed, ReplayFilter, message,
    payload_mut, process, process_batch,
};
