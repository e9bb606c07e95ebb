//! The QUIC disguise: the client link's records ride one HTTP/3 request.
//!
//! **What it does.** The gateway's QUIC endpoint ([`QuicListener`], quiche with its `h3`
//! module, ALPN `h3`) is an ordinary small HTTP/3 web server: `GET /` and `HEAD /` get a
//! static page, other paths an nginx-style 404, other methods on `/` a 405. One request is
//! different: `POST` to a secret path ([`LinkPath`], from the gateway's descriptor). That
//! request is a link ([`pb_transport::Peer`]): its request body is the client's records one
//! after another, and once the gateway has a record for the client it answers `200` and
//! streams records in the response body. When the link above gives up on a peer
//! ([`pb_transport::Listener::close`]) the request ends as a web server ends a request it
//! does not like: a 404 page if no response has begun, else the response body finishes;
//! either way the gateway stops reading the request body with `H3_NO_ERROR`. The QUIC
//! connection itself is never closed with an error a web server would not send.
//!
//! The client ([`QuicCarrier`]) is quinn-proto (sans-IO QUIC) with rustls on ring, accepting
//! only the pinned key ([`pb_transport::tls::client_config`]), and a small HTTP/3 client
//! ([`h3`]: frames, QPACK without a dynamic table) written here. It is pure Rust, so the
//! phone build (aarch64-unknown-linux-musl, where BoringSSL does not build) has it without
//! the `server` feature.
//!
//! **What it does not do.** Encryption, authentication, padding and timing of records are
//! the link's (the layer above). A QUIC handshake's fingerprint (transport parameters, the
//! ClientHello of rustls) is quinn's and rustls's, not a browser's. Nothing here resists a
//! prober who knows the secret path. No Retry (address validation) on the gateway: QUIC's
//! anti-amplification limit holds, as on most web servers.
//!
//! The HTTP/3 framing and the record framing are sans-IO ([`h3`], [`records`]); the two
//! mio drivers ([`client`], `server`) only move bytes.

#![forbid(unsafe_code)]

pub mod client;
pub mod h3;
pub mod records;
#[cfg(feature = "server")]
pub mod server;
pub mod site;

pub use client::{QuicCarrier, QuicCarrierConfig};
#[cfg(feature = "server")]
pub use server::{QuicListener, QuicListenerConfig};

/// The ALPN both sides speak: HTTP/3.
pub const ALPN: &[u8] = b"h3";

/// Bytes of the secret that names a link path.
pub const PATH_SECRET_LEN: usize = 16;

/// The secret path of the link request: `/` then 1 to 128 base64url characters (22 for a
/// path made by [`LinkPath::from_secret`]). A secret: its `Debug` is scrubbed.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkPath(String);

impl core::fmt::Debug for LinkPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LinkPath([scrubbed])")
    }
}

/// Why a string is not a link path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// It does not begin with `/`, or is empty or longer than 129 bytes after it.
    #[error("a link path is '/' and 1 to 128 base64url characters")]
    Shape,
    /// It holds a character outside base64url.
    #[error("a link path holds only base64url characters (A-Z a-z 0-9 - _)")]
    Character,
}

impl LinkPath {
    /// The path for a descriptor's 16-byte secret: `/` and its 22-character base64url
    /// (unpadded) form.
    pub fn from_secret(secret: &[u8; PATH_SECRET_LEN]) -> Self {
        const TABLE: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::from("/");
        for chunk in secret.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                s.push(char::from(TABLE[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        Self(s)
    }

    /// A path given as text (a config file, a descriptor).
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let rest = s.strip_prefix('/').ok_or(PathError::Shape)?;
        if rest.is_empty() || rest.len() > 128 {
            return Err(PathError::Shape);
        }
        if !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(PathError::Character);
        }
        Ok(Self(s.to_owned()))
    }

    /// The path, as sent in `:path`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `path` (from a request) is this one, in time that does not depend on where
    /// they differ.
    pub fn matches(&self, path: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        path.len() == self.0.len() && bool::from(path.ct_eq(self.0.as_bytes()))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn link_paths_are_slash_and_base64url() {
        let p = LinkPath::from_secret(&[0xfb; 16]);
        assert_eq!(p.as_str(), "/-_v7-_v7-_v7-_v7-_v7-w");
        assert_eq!(p.as_str().len(), 23);
        assert_eq!(LinkPath::parse(p.as_str()).unwrap(), p);
        assert!(p.matches(p.as_str().as_bytes()));
        assert!(!p.matches(b"/-_v7-_v7-_v7-_v7-_v7-x"));
        assert!(!p.matches(b"/"));
        assert_eq!(LinkPath::parse("abc"), Err(PathError::Shape));
        assert_eq!(LinkPath::parse("/"), Err(PathError::Shape));
        assert_eq!(LinkPath::parse("/a/b"), Err(PathError::Character));
        assert_eq!(format!("{p:?}"), "LinkPath([scrubbed])");
    }
}
