//! obfs4, byte-compatible with obfs4proxy 0.0.14, as a sans-IO core.
//!
//! What it does:
//! - the bridge-line types: [`NodeId`], [`ServerIdentity`], [`Cert`] (`cert=`) and [`IatMode`]
//!   (`iat-mode=`);
//! - the client handshake ([`ClientHandshake`]) and the server handshake ([`ServerHandshake`],
//!   with a [`ReplayFilter`] the caller owns), each fed bytes with `handle_bytes` and giving back
//!   the bytes to send and, once done, an [`Established`] pair of framers;
//! - the framing of each direction ([`FrameEncoder`], [`FrameDecoder`]): XSalsa20-Poly1305
//!   boxes with obfs4's nonces, lengths hidden by the cumulative SipHash-2-4 mask, payload and
//!   PRNG-seed packets, padding;
//! - a whole connection of either side as a [`pb_transport::StreamCodec`] ([`Obfs4Codec`],
//!   [`Obfs4Server`] for a bridge's shared state): the handshake, then frames, with
//!   obfs4proxy's shaping of each iat-mode (the length and inter-arrival distributions,
//!   [`WeightedDist`]) and its way of holding a failed connection open.
//!
//! What it does not do:
//! - no sockets: `pb_transport`'s stream drivers run the codec over TCP; the handshakes and
//!   framers take `now` and an [`Entropy`] source as arguments ([`OsEntropy`] outside tests);
//! - no Tor pluggable-transport glue (SOCKS, `SMETHOD` lines, state files).
//!
//! The wire details follow obfs4proxy's code, not `obfs4-spec.txt`, where the two differ: the
//! key halves, the 16-byte nonce prefix, the cumulative length mask, the padding ranges and the
//! ntor transcript (see `docs/` and the tests' known-answer vectors).
#![forbid(unsafe_code)]

mod codec;
mod crypto;
mod error;
mod framing;
mod handshake;
mod identity;
mod mask;
mod probdist;
mod replay;

pub use codec::{Obfs4Codec, Obfs4Server, OsEntropy, PARANOID_RECORD_RATE};
pub use error::{CertError, FrameError, HandshakeError, IatModeError};
pub use framing::{FrameDecoder, FrameEncoder, Packet, PrngSeed};
pub use handshake::client::{ClientHandshake, ClientProgress};
pub use handshake::server::{ServerHandshake, ServerProgress};
pub use handshake::{EpochHour, Established};
pub use identity::{Cert, IatMode, IdentityPublicKey, NodeId, ServerIdentity};
pub use probdist::WeightedDist;
pub use replay::ReplayFilter;

/// The longest handshake message either side sends or accepts, in bytes.
pub const MAX_HANDSHAKE_LENGTH: usize = 8192;
/// The largest TCP segment obfs4proxy plans its frames for: 1500 - (40 + 12).
pub const MAX_SEGMENT_LENGTH: usize = 1448;
/// Length prefix (2) plus the secretbox tag (16).
pub const FRAME_OVERHEAD: usize = 2 + 16;
/// The largest packet (type, length, payload, padding) a frame carries.
pub const MAX_FRAME_PAYLOAD_LENGTH: usize = MAX_SEGMENT_LENGTH - FRAME_OVERHEAD;
/// Packet type (1) plus the big-endian payload length (2).
pub const PACKET_OVERHEAD: usize = 3;
/// The most payload plus padding bytes one packet carries.
pub const MAX_PACKET_PAYLOAD_LENGTH: usize = MAX_FRAME_PAYLOAD_LENGTH - PACKET_OVERHEAD;

/// A source of secure random bytes, passed in so the cores read no OS RNG and tests can be
/// deterministic. Implementations must be cryptographically secure outside tests.
pub trait Entropy {
    /// Fills `dest` with random bytes.
    fn fill_bytes(&mut self, dest: &mut [u8]);
}

/// A uniform value in `min..=max`, by rejection sampling (no modulo bias).
pub(crate) fn uniform_inclusive(rng: &mut dyn Entropy, min: usize, max: usize) -> usize {
    debug_assert!(min <= max);
    let span = (max - min) as u64 + 1;
    // The largest multiple of `span` that fits in u64's range; draws above it are rejected.
    let zone = u64::MAX - (u64::MAX % span);
    loop {
        let mut bytes = [0u8; 8];
        rng.fill_bytes(&mut bytes);
        let draw = u64::from_le_bytes(bytes);
        if draw < zone {
            // `draw % span < span <= max - min + 1`, which fits in usize.
            return min + (draw % span) as usize;
        }
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "tests")]
pub(crate) mod testutil;
