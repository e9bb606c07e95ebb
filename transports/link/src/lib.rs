//! The client link, sans I/O: what a client and its gateway say to each other, under
//! whatever disguise carries it (`pb-transport`).
//!
//! - **Handshake** ([`handshake`]): Noise `NK` (`Noise_NK_25519_ChaChaPoly_BLAKE2s`, via
//!   `snow`). The client knows the gateway's static link key from the network file or the
//!   verified directory; the gateway learns nothing about the client but an ephemeral key.
//!   Before the gateway runs the handshake, or keeps anything, the client must echo a
//!   **stateless cookie** bound to its source address (return routability), and the first
//!   message must carry a MAC keyed by the gateway's public key, so a stranger's bytes
//!   cost the gateway one hash and get nothing back.
//! - **Records** ([`record`]): every record either way is exactly [`RECORD_LEN`] bytes of
//!   random-looking data. Handshake records are masked with a key derived from the
//!   gateway's public key and a fresh nonce; transport records are ChaCha20-Poly1305
//!   ciphertext behind a counter masked by the ciphertext (as QUIC protects its headers).
//!   There is no type byte, no length, no cleartext token anywhere.
//! - **Messages** ([`framing`]): inside the records, a stream of `kind, length, bytes`
//!   messages packed back to back (a message may span records; after a lost record the
//!   stream resynchronises at the next message start), padding after the last.
//! - **Rate** ([`clock`]): records leave at a constant rate each way, padding when nothing
//!   is queued, so the access link shows the same records at the same times whether the
//!   user is busy or not.
//!
//! What this crate does not do: sockets, clocks, disguises (`pb-transport` and the crates
//! beside it), or what the messages mean (`pb-proto::link`). Time is a `Duration` since an
//! origin the caller picks. Format: docs/spec/client-link.md.

#![forbid(unsafe_code)]

pub mod client;
pub mod clock;
pub mod framing;
pub mod gateway;
pub mod handshake;
pub mod record;

pub use client::{ClientLink, ClientStats};
pub use framing::Message;
pub use gateway::{GatewayLink, GatewayStats, Responded, Responder};
pub use handshake::{GatewayKey, Rates};

/// Bytes in every record, either way: the size of a Sphinx packet.
pub const RECORD_LEN: usize = 1452;

/// One record.
pub type Record = [u8; RECORD_LEN];

/// Why the link failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The gateway never answered the handshake.
    #[error("the gateway did not answer the handshake")]
    NoAnswer,
    /// Noise refused a key or a message (a key that is no curve point, a failed tag).
    #[error("the handshake failed")]
    Handshake,
    /// A message too long to send (at most [`framing::MAX_MESSAGE`] bytes).
    #[error("message too long")]
    TooLong,
    /// The queue of messages to send is full.
    #[error("the send queue is full")]
    Backlogged,
}
