//! The DNS transport: the client link's records ride DNS queries (upstream, in query names)
//! and their answers (downstream, in TXT records), dnstt-style, sent over DNS-over-HTTPS
//! (RFC 8484) to a recursive resolver, which asks the gateway's authoritative name server
//! for them as it would for any name (docs/spec/transports.md, "DNS over HTTPS").
//!
//! What it does:
//! - the wire inside the messages, sans-IO: base32 query names below the gateway's zone
//!   ([`Zone`]), chunks of records and their reassembly ([`wire`]);
//! - the client's end ([`DohClient`], sans-IO) and, on a thread with HTTP/2 over rustls, the
//!   [`DohCarrier`] that sends its queries to a resolver at a constant rate;
//! - the gateway's name server ([`Authority`], sans-IO) on a UDP socket ([`DnsListener`]):
//!   an ordinary authoritative server for its zone (SOA, NS, NXDOMAIN, REFUSED) that also
//!   ends clients' DNS links.
//!
//! What it does not do: reliability. A lost query or answer loses the records whose chunks
//! it carried, as a lost datagram would; the link above lives with loss.
#![forbid(unsafe_code)]

mod authority;
mod carrier;
mod client;
mod listener;
mod name;
mod rate;
pub mod wire;

pub use authority::{Authority, AuthorityCounters, MAX_RESPONSE, MAX_SESSIONS, SESSION_IDLE};
pub use carrier::{
    DEFAULT_QUERY_RATE, DohCarrier, DohConfig, Padding, RootsError, UrlError, parse_url,
    tls_trusting,
};
pub use client::{AnswerError, DohClient, EDNS_SIZE};
pub use listener::DnsListener;
pub use name::{QUERY_HEADER, SessionKey, Zone, ZoneError};
pub use rate::{MIN_QUERY_RATE, QueryRate};
