//! PhantomBand testnets, written once: the one library that `pb-perf testnet` (the main
//! job), `pb-perf e2e`, the relay's and the client's integration tests and
//! `deploy/testbed.sh` (through the `pb-testnet` binary) use to run a network of real
//! `pb-relay` processes on one machine.
//!
//! What it does:
//!
//! - [`Network`], built with [`Network::builder`]: a typed description of a network. The
//!   number of relays, their roles (a gateway first, an exit last, mixes between: decided
//!   in one place, [`Role::of`]), the site (loopback addresses, or a star of network
//!   namespaces from [`pb_testbed::star`]), the backend (UDP or AF_XDP), the packet format,
//!   the mixing rates, gossip or static topology mode, seeds, and per-relay extras
//!   (`deliver_to`, the admin endpoint).
//! - [`Network::relay_config`] and [`Network::topology_file`]: each relay's configuration
//!   file and the static topology file as `pb_relay::config::file` values, rendered to TOML
//!   by serde ([`pb_relay::config::file::render`]); nobody formats relay TOML by hand.
//! - [`Testnet`]: a running network. It builds the namespaces, writes the files into a
//!   scratch directory, starts the relays (and whatever else a caller starts in one of its
//!   nodes: pb-client, curl, a server) as [`pb_testbed::Proc`]es, waits for agreement on one
//!   topology, and when dropped (also while a panic unwinds) kills every process, then
//!   removes the namespaces, then the scratch directory.
//! - Helpers the users share: [`fetch`] through a SOCKS5 proxy, [`FileServer`], [`wait_for`]
//!   that gives up when the user presses Ctrl-C ([`stop_on_signals`], [`interrupted`]),
//!   [`http_get`] for admin endpoints, [`binary`] to find the binaries.
//!
//! What it does not do: it never sends traffic anywhere but loopback and the namespaces it
//! made; it does not build the binaries (it finds them next to the running one, or is told
//! where they are); it does not decide what a test asserts. Network namespaces and AF_XDP
//! need root ([`pb_testbed::privileged`]); loopback sites need nothing. The identity seeds
//! and Sphinx secrets it makes are derived from small numbers: for testnets only, never
//! for a network that carries anyone's traffic.
#![forbid(unsafe_code)]

mod network;
mod render;
mod run;
mod util;

pub use network::{
    ADMIN_PORT, Backend, CLIENT_LINK_PORT, DNS_BENCH_PORT, DNS_BENCH_ZONE, DNS_PORT, DNS_ZONE,
    DOH_PORT, GOSSIP_PORT, LEDGER_PORT, Mode, Network, NetworkBuilder, Node, OBFS4_PORT,
    OutsideNode, PACKET_PORT, QUIC_PORT, Role, Site, TCP_PORT, WSS_PORT, fresh_epoch_seconds,
};
pub use run::{Testnet, View};
pub use util::{
    FileServer, binary, fetch, http_get, interrupted, pattern, server_certificate, socks_connect,
    socks_connect_name, stop_on_signals, wait_for,
};
