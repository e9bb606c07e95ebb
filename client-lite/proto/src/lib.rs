//! What `pb-client` and the exit speak, sans-IO: no sockets, no clock, no OS randomness
//! (time and randomness are arguments), so every part can be tested deterministically.
//!
//! - [`socks`]: SOCKS5 with username/password (RFC 1928, 1929), server side: the client's
//!   face to applications; [`socks_udp`]: the header of its UDP relay datagrams (RFC 1928
//!   section 7).
//! - [`channel`]: a reliable, ordered channel of messages over the lossy, reordering mixnet
//!   (sequence numbers, cumulative and selective acknowledgements, retransmission with
//!   backoff).
//! - [`frame`] and [`streams`]: TCP streams multiplexed over the channel, with credit-based
//!   flow control.
//! - [`message`]: how a channel message travels in a Sphinx payload: the client's with its
//!   session id and SURBs for the replies, the exit's with its SURB stock.
//! - [`link`]: the gateway's client link (directory pages, mailbox registration, replies).
//! - [`dns`]: applications' DNS queries, answered with what the exit resolved.
//!
//! Not here: route choice and packet building (the client binary, with `pb-sphinx`), TCP
//! and name resolution (the exit in `pb-relay`).
#![forbid(unsafe_code)]

pub mod channel;
pub mod dns;
pub mod frame;
pub mod link;
pub mod message;
pub mod socks;
pub mod socks_udp;
pub mod streams;

pub use channel::{Channel, ChannelConfig, ChannelError, ChannelStats};
pub use frame::{Frame, FrameError, StreamId};
pub use message::{ClientMessage, ExitMessage, MessageError, SessionId};
pub use socks::{Action, Reply, Socks, Target};
pub use streams::{Side, StreamEvent, Streams};
