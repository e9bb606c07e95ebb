//! PhantomBand's control core, sans-IO: what relays say about themselves and what every node
//! concludes from it.
//!
//! - [`descriptor`]: node descriptors (identity key, role, current and next epoch Sphinx keys,
//!   addresses, transports), signed with Ed25519 (ring); parsing checks size, fields and
//!   signature together, so a [`Descriptor`] in hand is genuine.
//! - [`Directory`]: the newest verified descriptor per identity, bounded; stale, future,
//!   replayed-old and forged descriptors are refused and counted by reason.
//! - [`Topology`]: the stratified layers of an epoch, computed identically by every node from
//!   the same descriptors and the network seed, with a hash to compare views.
//!
//! - [`note`] and [`checkpoint`]: C2SP signed notes (Ed25519) and the stewards' epoch
//!   checkpoints they carry, opened only with k stewards' signatures (docs/spec/checkpoint.md);
//!   [`admission`]: the stewards' policy for what a checkpoint admits; [`network`]: the
//!   network file; [`trust`]: what a client checks of a gateway's view.
//!
//! - [`Gossip`]: one node's SWIM membership and failure detection (foca) and the spreading
//!   of descriptors (piggybacked broadcasts plus direct syncs), keeping the topology of the
//!   live members; [`wire`] is its datagram format.
//!
//! Not here: sockets and clocks (the relay daemon's mio loop drives [`Gossip`] with time as
//! an argument), the admin endpoint.
#![forbid(unsafe_code)]

mod addr;
pub mod admission;
pub mod checkpoint;
pub mod cosign;
pub mod descriptor;
mod directory;
mod gossip;
pub mod network;
pub mod note;
pub mod probe;
pub mod records;
pub mod special;
mod topology;
pub mod trust;
pub mod wire;

pub use descriptor::{
    Descriptor, IdentityKey, IdentityKeyPair, Invalid, Role, SignedDescriptor, Transport,
    TransportOffer,
};
pub use directory::{Directory, Offered};
pub use gossip::{Event, Gossip, GossipConfig, GossipError, GossipStats};
pub use topology::{LAYERS, MIX_LAYERS, Placed, Topology, TopologyError};
