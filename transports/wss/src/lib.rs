//! WebSocket over TLS behind an ordinary HTTPS page: the client link's records as binary
//! WebSocket messages at a secret path of what looks like a small static web site.
//!
//! **Gateway** ([`WssListener`]): a TLS server (rustls, ALPN `http/1.1`, the gateway's
//! self-signed [`pb_transport::tls::TlsIdentity`]) speaking HTTP/1.1 as an nginx serving one
//! static page would: `GET /` and `HEAD /` get the page, other paths nginx's 404 page, other
//! methods 405, malformed requests 400 and a close. Only a well-formed RFC 6455 upgrade
//! request at the [`SecretPath`] (from the gateway's descriptor) gets `101 Switching
//! Protocols`; an upgrade anywhere else gets the same 404 as any missing page. Each upgraded
//! WebSocket is one [`pb_transport::Peer`]; each record is one binary message of exactly
//! [`pb_transport::RECORD_LEN`] bytes, and anything else closes that peer.
//!
//! **Client** ([`WssCarrier`]): TLS with the gateway's key pinned and SNI set to
//! [`WssClientConfig::server_name`], then the upgrade request a browser sends, a check of
//! the `101` and `Sec-WebSocket-Accept`, then records. Pure Rust on ring: it builds for
//! `aarch64-unknown-linux-musl`.
//!
//! The protocol lives in two sans-IO cores, [`ServerCore`] and [`ClientCore`]: TCP bytes
//! and `now` in, TCP bytes, records and events out; no socket, clock or OS RNG inside (the
//! client's WebSocket key is an argument). The mio drivers around them are thin.
//!
//! What this crate does not do: hide the link's timing or sizes (that is shaping, above);
//! look like any one real nginx version to a careful fingerprinter (TLS ClientHello and
//! ServerHello are rustls's, see the threat model); HTTP/2, compression
//! (`permessage-deflate` is offered by the client as Chrome does, and never accepted), or
//! request bodies (a request announcing one is answered, then the connection closes).
//! tungstenite masks client frames with its own `rand` RNG, not one passed in.

#![forbid(unsafe_code)]

mod carrier;
mod client;
mod http;
mod listener;
mod server;
mod tls_pipe;
mod ws;

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;

pub use carrier::WssCarrier;
pub use client::ClientCore;
pub use http::{RequestError, Site};
pub use listener::WssListener;
pub use server::{ServerCore, ServerEvent, ServerShared};
pub use ws::WsError;

/// The ALPN protocol both ends offer.
pub const ALPN: &[u8] = b"http/1.1";

/// The path a gateway's WebSocket answers at: `/` and URL-safe characters. Secret (knowing
/// it lets a prober tell the gateway from a web site), so it never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretPath(String);

impl core::fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretPath([scrubbed])")
    }
}

/// Why a configuration value was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The secret path is not `/` followed by 16 to 128 URL-safe characters.
    #[error("a secret path is `/` and 16 to 128 characters of A-Z a-z 0-9 - _")]
    BadPath,
    /// The server name is not a DNS name rustls can send as SNI.
    #[error("the server name is not a DNS name")]
    BadServerName,
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
}

impl SecretPath {
    /// The path `path`, checked.
    pub fn new(path: &str) -> Result<Self, ConfigError> {
        let rest = path.strip_prefix('/').ok_or(ConfigError::BadPath)?;
        let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if !(16..=128).contains(&rest.len()) || !rest.chars().all(ok_char) {
            return Err(ConfigError::BadPath);
        }
        Ok(Self(path.to_owned()))
    }

    /// The path made of 16 random bytes: `/` and 22 base64url characters.
    pub fn from_random(bytes: [u8; 16]) -> Self {
        Self(format!(
            "/{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        ))
    }

    /// The path as text (for the descriptor; never for logs).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Timeouts and caps of a gateway. The defaults follow a web server's.
#[derive(Clone, Debug)]
pub struct Limits {
    /// From accept to a complete first request head (TLS handshake included), like nginx's
    /// `client_header_timeout`.
    pub request_timeout: Duration,
    /// From the end of one answer to the next complete request head on a kept-alive
    /// connection (nginx's `keepalive_timeout`).
    pub keepalive_timeout: Duration,
    /// Requests answered on one connection before it is closed (`keepalive_requests`).
    pub max_requests: u32,
    /// Bytes of a request head at most (a longer head gets 400).
    pub max_head_bytes: usize,
    /// A WebSocket that receives nothing for this long is closed (the link pads both ways,
    /// so a quiet one is half-open or abandoned).
    pub idle_timeout: Duration,
    /// After the last bytes are queued, how long the connection may take to go.
    pub linger: Duration,
    /// TCP connections at once; past this, new ones are closed at once (counted).
    pub max_connections: usize,
    /// Bytes queued for one connection's socket at most; a record past it is dropped.
    pub max_tx_bytes: usize,
    /// Records received and not yet taken by the link, at most (more are dropped, counted).
    pub max_inbox: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // nginx's defaults: a prober times a half-open connection against them.
            request_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            max_requests: 100,
            max_head_bytes: 8192,
            idle_timeout: Duration::from_secs(120),
            linger: Duration::from_secs(2),
            max_connections: 1024,
            max_tx_bytes: 256 * 1024,
            max_inbox: 4096,
        }
    }
}

/// A gateway's WSS configuration (besides its TLS identity).
#[derive(Clone, Debug)]
pub struct WssServerConfig {
    /// Where the WebSocket answers.
    pub path: SecretPath,
    /// The site everyone else sees.
    pub site: Site,
    /// Timeouts and caps.
    pub limits: Limits,
}

impl WssServerConfig {
    /// The default site and limits, with the WebSocket at `path`.
    pub fn new(path: SecretPath) -> Self {
        Self {
            path,
            site: Site::default(),
            limits: Limits::default(),
        }
    }
}

/// A browser's User-Agent (Chrome on Windows, the most common).
pub const BROWSER_USER_AGENT: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

/// What a client needs to reach a gateway's WebSocket (from the gateway's descriptor).
#[derive(Clone)]
pub struct WssClientConfig {
    /// The pin of the gateway's TLS key.
    pub pin: pb_transport::tls::Pin,
    /// The name sent as SNI and in `Host` and `Origin`.
    pub server_name: String,
    /// The gateway's port as `Host` names it (443 is left out, as browsers do).
    pub port: u16,
    /// The secret path.
    pub path: SecretPath,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// From connect to the `101`, at most.
    pub handshake_timeout: Duration,
    /// An open WebSocket that receives nothing for this long is given up.
    pub idle_timeout: Duration,
    /// Bytes queued for the socket at most; a record past it is dropped.
    pub max_tx_bytes: usize,
}

impl core::fmt::Debug for WssClientConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WssClientConfig").finish_non_exhaustive()
    }
}

impl WssClientConfig {
    /// Defaults (browser User-Agent, 10 s handshake, 120 s idle) for `server_name:port`.
    pub fn new(
        pin: pb_transport::tls::Pin,
        server_name: &str,
        port: u16,
        path: SecretPath,
    ) -> Self {
        Self {
            pin,
            server_name: server_name.to_owned(),
            port,
            path,
            user_agent: BROWSER_USER_AGENT.into(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_tx_bytes: 256 * 1024,
        }
    }
}

/// Wall-clock time derived from `now`, for `Date` headers: a core reads no clock.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    at: Instant,
    wall: SystemTime,
}

impl WallClock {
    /// The clock on which `at` is `wall`.
    pub fn new(at: Instant, wall: SystemTime) -> Self {
        Self { at, wall }
    }

    /// The wall-clock time at `now`.
    pub fn at(&self, now: Instant) -> SystemTime {
        self.wall + now.saturating_duration_since(self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_paths_are_checked_and_never_printed() {
        let p = SecretPath::from_random([7; 16]);
        assert_eq!(p.as_str().len(), 23);
        assert_eq!(SecretPath::new(p.as_str()), Ok(p.clone()));
        assert!(!format!("{p:?}").contains(&p.as_str()[1..]));
        for bad in [
            "",
            "/",
            "abcdefghijklmnopq",
            "/short",
            "/abcdefghijklmnop/q",
            "/abcdefghijklmnop?",
        ] {
            assert_eq!(SecretPath::new(bad), Err(ConfigError::BadPath), "{bad}");
        }
    }
}
