//! The contract between the client link and the disguises that carry it.
//!
//! A **record** is what the client link (`pb-link`: Noise-encrypted, every byte random-looking)
//! hands a transport: exactly [`RECORD_LEN`] opaque bytes. A transport carries records both
//! ways between one client and its gateway inside a disguise (plain UDP, QUIC presenting as
//! HTTP/3, WebSocket over TLS, ...). It never looks inside a record, and the link never
//! learns how it travelled. A record may be lost (a full buffer, a lost datagram); the link
//! above copes with that. Records arrive in order on stream transports; on datagram ones
//! they may not.
//!
//! Each disguise keeps its protocol in a sans-IO core (bytes and `now` in, bytes out) and
//! drives it here through two driver traits built on mio:
//! - [`ClientCarrier`]: one client's connection to one gateway;
//! - [`Listener`]: a gateway's listener on one transport, with any number of peers.
//!
//! Stream transports (obfs4, and plain TCP behind a local obfs4proxy) share one pair of mio
//! drivers, [`StreamCarrier`] and [`StreamListener`], around a sans-IO [`StreamCodec`].
//!
//! Both own their sockets and a mio `Poll` of their own, whose file descriptor
//! ([`std::os::fd::AsRawFd`]) the caller waits on next to its other sources: it is readable
//! when the carrier has something to do. The caller then calls `drive`, and at the latest
//! at `next_deadline`. Neither blocks.
//!
//! What this crate does not do: encryption, authentication, padding or timing. Those belong
//! to the link above (the same under every disguise), so a disguise can be wrong about
//! anything but the bytes it carries without weakening them.

#![forbid(unsafe_code)]

mod stream;
pub mod tls;
mod udp;

use std::{net::SocketAddr, os::fd::AsRawFd, time::Instant};

pub use stream::{
    CodecFactory, OPEN_TIMEOUT, Plain, Reassembler, Socks5, StreamCarrier, StreamCodec,
    StreamListener,
};
pub use udp::{UdpCarrier, UdpListener};

/// Bytes in a record: the size of a Sphinx packet, so that on the plain UDP transport a
/// record is one datagram that fits a 1500-byte-MTU IPv6 path.
pub const RECORD_LEN: usize = 1452;

/// One record of the client link.
pub type Record = [u8; RECORD_LEN];

/// The transports a gateway can offer, with the numbers descriptors give them
/// (docs/spec/descriptor.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TransportKind {
    /// Plain UDP: each record is one datagram.
    Udp = 0,
    /// QUIC presenting as HTTP/3.
    Quic = 1,
    /// WebSocket over TLS behind an HTTPS page.
    Wss = 2,
    /// DNS over HTTPS.
    Doh = 3,
    /// obfs4.
    Obfs4 = 4,
    /// Plain TCP, the records as they are: what a local obfs4proxy speaks to its backend
    /// (server side) and takes through SOCKS5 (client side). Never offered in descriptors.
    Tcp = 5,
}

impl TransportKind {
    /// The kind numbered `n`.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::Udp,
            1 => Self::Quic,
            2 => Self::Wss,
            3 => Self::Doh,
            4 => Self::Obfs4,
            5 => Self::Tcp,
            _ => return None,
        })
    }

    /// Its name on the command line and in metrics and benchmark rows.
    pub fn name(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Quic => "quic",
            Self::Wss => "wss",
            Self::Doh => "doh",
            Self::Obfs4 => "obfs4",
            Self::Tcp => "tcp",
        }
    }

    /// The kind called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::Udp,
            Self::Quic,
            Self::Wss,
            Self::Doh,
            Self::Obfs4,
            Self::Tcp,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

impl core::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a carrier stopped. The client falls back to its next transport (or gateway); a
/// listener's error is about the listener itself, never one peer.
#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    /// A socket call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The system's error.
        source: std::io::Error,
    },
    /// The peer closed the connection, or it timed out.
    #[error("the connection closed: {0}")]
    Closed(String),
    /// The disguise's handshake failed: the peer is not the gateway we pinned, or speaks
    /// something else.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

impl CarrierError {
    /// An I/O error while doing `what`.
    pub fn io(what: &'static str, source: std::io::Error) -> Self {
        Self::Io { what, source }
    }
}

/// One client's connection to one gateway, over one disguise.
pub trait ClientCarrier: AsRawFd + Send + core::fmt::Debug {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;
    /// Does whatever I/O and timer work is due (reads, writes, handshakes, retransmissions).
    /// An error means the connection is dead for good.
    fn drive(&mut self, now: Instant) -> Result<(), CarrierError>;
    /// When `drive` must run again at the latest, with no event.
    fn next_deadline(&self) -> Option<Instant>;
    /// Whether records can flow (the disguise's handshake is done).
    fn is_open(&self) -> bool;
    /// Queues one record; `false` if it was dropped (not open yet, or backlogged).
    fn send(&mut self, record: &Record) -> bool;
    /// The next record received, if any.
    fn recv(&mut self) -> Option<Record>;
    /// Counters for this connection, with their names (`bytes_sent`, ...): the wire bytes
    /// both ways, so a benchmark can state the disguise's overhead.
    fn counters(&self) -> Vec<(&'static str, u64)>;
    /// The most records a second each way this disguise carries without queueing without
    /// end (its timing shaping's capacity), if it has such a bound: the link asks for no
    /// more.
    fn max_record_rate(&self) -> Option<u32> {
        None
    }
    /// The most records a second upstream, where that is less than downstream (DNS names
    /// carry less than answers): by default [`ClientCarrier::max_record_rate`].
    fn max_upstream_rate(&self) -> Option<u32> {
        self.max_record_rate()
    }
}

/// One peer of a [`Listener`]: an address (datagram transports) or a connection (stream
/// transports). Never reused within a listener's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer(pub u64);

/// A gateway's listener on one transport.
pub trait Listener: AsRawFd + Send + core::fmt::Debug {
    /// Which transport this is.
    fn kind(&self) -> TransportKind;
    /// Accepts, reads, writes and runs timers. A misbehaving peer is closed and counted,
    /// never an error here; an error means the listener itself failed.
    fn drive(&mut self, now: Instant) -> Result<(), CarrierError>;
    /// When `drive` must run again at the latest, with no event.
    fn next_deadline(&self) -> Option<Instant>;
    /// The next record received, and from which peer.
    fn recv(&mut self) -> Option<(Peer, Record)>;
    /// Queues one record to `peer`; `false` if it was dropped (peer gone, or backlogged).
    fn send(&mut self, peer: Peer, record: &Record) -> bool;
    /// Closes `peer` (the link above gave up on it: it never authenticated, or went quiet).
    fn close(&mut self, peer: Peer);
    /// A peer that went away since the last call.
    fn poll_closed(&mut self) -> Option<Peer>;
    /// The address `peer` speaks from (for return-routability cookies), while it is open.
    fn source(&self, peer: Peer) -> Option<SocketAddr>;
    /// The address it listens on.
    fn local_addr(&self) -> SocketAddr;
    /// Counters with their names (`peers_opened`, `probes_answered`, ...).
    fn counters(&self) -> Vec<(&'static str, u64)>;
}
