//! The PhantomBand relay as a library, so that its parts can be read, tested and reused one
//! at a time; `src/main.rs` (the `pb-relay` binary) is the command line and the wiring.
//!
//! - [`config`]: the configuration and static topology files ([`config::file`] is their
//!   serde schema, which the testnet library renders), parsed into values that cannot be
//!   invalid.
//! - [`core`]: one pipeline core's loop over a packet backend, sleeping until the
//!   pipeline's next deadline; [`metrics`]: every counter in one list; [`report`]: what the
//!   relay prints on stdout; [`admin`]: the local HTTP admin endpoint.
//! - [`static_mode`] and [`gossip_mode`]: how the relay learns the network and its keys;
//!   [`replay`]: the replay filter's size, the life of its tables and its fill alarm;
//!   [`ledger`]: records of the loops, collected, logged and mirrored (gossip mode).
//! - [`roles`]: the services a role adds: a gateway's [`client_link`], an exit's [`exit`].
//! - [`serve`]: the main thread of a running relay, around the cores.
//!
//! Not here: packet processing (pb-pipeline, pb-sphinx, pb-mix), packet I/O (pb-io), the
//! gossip protocol and topology (pb-control), what the client speaks (pb-proto).
#![forbid(unsafe_code)]

pub mod admin;
pub mod client_link;
pub mod config;
pub mod core;
pub mod exit;
pub mod gossip_mode;
pub mod ledger;
pub mod loop_watch;
pub mod metrics;
pub mod published;
pub mod replay;
pub mod report;
pub mod roles;
pub mod serve;
mod slots;
pub mod static_mode;
pub mod transports;
