//! One error enum per concern; each variant names the likely cause. All are `Copy`.

/// A `cert=` value that cannot be an obfs4 bridge's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// obfs4 certs are 70 base64 characters (52 bytes, padding removed).
    #[error("obfs4 cert must be 70 characters, got {0} (truncated or not an obfs4 bridge line?)")]
    WrongLength(usize),
    /// A character outside the standard base64 alphabet, or a stray `=`.
    #[error("obfs4 cert is not unpadded standard base64 (mangled when copied?)")]
    NotBase64,
}

/// An `iat-mode=` value other than 0, 1 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("iat-mode must be 0, 1 or 2")]
pub struct IatModeError;

/// Why a handshake failed. A failed handshake is over: obfs4proxy keeps reading and discarding
/// for a while before closing, and the caller should do the same rather than answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// 8192 bytes arrived without the peer's mark and MAC: a probe, or not obfs4.
    #[error("no obfs4 mark within the 8192-byte handshake limit (probe or wrong protocol)")]
    MarkNotFound,
    /// The mark was there but the MAC matched no epoch hour within ±1: a wrong cert, a clock
    /// more than an hour off, or tampering.
    #[error("handshake MAC does not match (wrong cert, clock skew over an hour, or tampering)")]
    BadMac,
    /// Bytes after the client's MAC: the client pipelined data, which obfs4 forbids.
    #[error("data after the client hello's MAC (client did not wait for the server hello)")]
    TrailingData,
    /// This client hello's MAC was seen within the last three hours.
    #[error("replayed client hello")]
    Replayed,
    /// A Diffie-Hellman output was all zeros: the peer sent a low-order point.
    #[error("peer's key gives an all-zero shared secret (low-order point)")]
    ZeroSharedSecret,
    /// The server's AUTH does not match ours: it does not hold the cert's private key.
    #[error("server AUTH does not match (server does not hold the cert's identity key)")]
    BadAuth,
    /// The inline seed frame could not be framed (cannot happen with a fresh encoder).
    #[error("inline seed frame: {0}")]
    SeedFrame(#[from] FrameError),
}

/// Why a frame could not be encoded or decoded. After a decoding error the stream is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The de-obfuscated length is outside 16..=1446: corrupted or forged bytes.
    #[error("frame length {0} out of range (corrupted or forged stream)")]
    BadLength(u16),
    /// The Poly1305 tag did not verify: corrupted, forged, reordered or wrong-key frame.
    #[error("frame authentication failed (corrupted, forged or reordered)")]
    BadTag,
    /// An authenticated packet whose payload length exceeds the packet: a peer bug.
    #[error("packet payload length exceeds the frame (peer bug)")]
    BadPacket,
    /// 2^64 - 1 frames in one direction: the nonce would repeat.
    #[error("frame counter exhausted; the connection must be closed")]
    CounterExhausted,
    /// Payload plus padding exceed what one packet carries (1427 bytes).
    #[error("payload plus padding exceed 1427 bytes")]
    PacketTooLong,
}
