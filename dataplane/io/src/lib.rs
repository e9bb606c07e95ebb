//! PhantomBand packet I/O: how fixed-size PhantomBand packets get in and out of a relay.
//!
//! One batch-oriented trait, [`PacketIo`], with two backends for real traffic and one for
//! tests:
//! - [`afxdp::AfXdpIo`]: kernel bypass. Our XDP program (`ebpf/pb-xdp`, embedded in this
//!   crate and attached with aya by [`xdp::XdpProgram`]) steers PhantomBand datagrams into an
//!   AF_XDP socket (xsk-rs) whose frames live in a UMEM; packets are handled in place in those
//!   frames and transmitted from them, with Ethernet/IP/UDP headers parsed and built by
//!   [`wire`]. Next-hop MAC addresses come from the kernel's neighbour table ([`netlink`]).
//! - [`udp::UdpIo`]: a portable UDP socket using `recvmmsg`/`sendmmsg`, for machines without
//!   XDP, for unprivileged development and for client-facing gateway links.
//! - [`mem::MemIo`] on a [`mem::MemNet`]: a virtual network in memory with a virtual clock
//!   and seeded loss, so pipelines can be tested deterministically, without sockets or root.
//!
//! The UDP and in-memory backends keep their packets in the same kind of frame pool (a
//! private module, safe code); AF_XDP's frames live in its UMEM.
//!
//! Above the trait a packet is a UDP payload plus the peer it came from or goes to; code
//! written against [`PacketIo`] does not know which backend it runs on.
//!
//! Not here: packet formats (Sphinx), mixing, pacing, configuration of whole relays.
//!
//! All `unsafe` code lives in the modules that touch UMEM and system calls ([`afxdp`],
//! [`udp`], [`cpu`]); everything else is safe Rust.
#![deny(unsafe_code)]

pub mod afxdp;
pub mod config;
pub mod cpu;
pub mod mem;
pub mod netlink;
mod pool;
pub mod sources;
pub mod udp;
pub mod wire;
pub mod xdp;

use std::{io, net::SocketAddr, time::Duration};

pub use pb_xdp_common::{Counter as XdpCounter, DEFAULT_PACKET_LEN, DEFAULT_PORT};

/// Index of a frame in a backend's buffer pool (a UMEM frame for AF_XDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameId(pub(crate) u32);

/// One packet held in a backend frame: its UDP payload and the peer it came from (received)
/// or goes to (transmitted).
///
/// A `Packet` owns its frame: it is not `Clone`, and the frame returns to the backend's pool
/// only through [`PacketIo::send`] (after transmission) or [`PacketIo::release`]. A `Packet`
/// dropped without either keeps its frame out of the pool until the backend is dropped.
///
/// A `Packet` also remembers which backend instance holds its frame; handing it to another
/// instance (say, the socket of another queue) is refused: its payload reads as empty and
/// `send`/`release` count it as `foreign_packets` instead of touching their own frames.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet {
    pub(crate) owner: Owner,
    pub(crate) frame: FrameId,
    /// Offset of the payload within the frame.
    pub(crate) offset: u16,
    /// Payload length.
    pub(crate) len: u16,
    /// Source (received) or destination (to transmit).
    pub peer: SocketAddr,
}

impl Packet {
    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The frame this packet occupies.
    pub fn frame(&self) -> FrameId {
        self.frame
    }
}

/// Identity of one backend instance, so that packets find their way back to the right pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Owner(u32);

impl Owner {
    /// A fresh identity, distinct from every other in this process.
    pub(crate) fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// The first payload byte of each of `packets`, held by `io`, in order: in the `reuse_port`
/// tests, which sender each datagram came from.
#[cfg(test)]
pub(crate) fn first_bytes(io: &impl PacketIo, packets: &[Packet]) -> Vec<u8> {
    packets
        .iter()
        .map(|p| io.payload(p).first().copied().unwrap_or_default())
        .collect()
}

/// Counters every backend keeps; all monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Packets handed up by [`PacketIo::recv`].
    pub rx_packets: u64,
    /// Frames received that were not well-formed PhantomBand datagrams (dropped).
    pub rx_dropped_malformed: u64,
    /// Datagrams addressed to an IP that is not this interface's (a bridge or promiscuous
    /// NIC passes such frames up; AF_XDP only): dropped.
    pub rx_dropped_not_local: u64,
    /// Datagrams from a source that is not one of the relay's links, under
    /// [`sources::StrangerPolicy::Drop`]: dropped before any Sphinx work (UDP backend; on
    /// AF_XDP the XDP program drops them and counts `drop_stranger`).
    pub rx_dropped_stranger: u64,
    /// Datagrams from a source that is not one of the relay's links, over its token bucket
    /// under [`sources::StrangerPolicy::Limit`]: dropped (UDP backend; on AF_XDP the XDP
    /// program counts `drop_source_rate`).
    pub rx_dropped_over_rate: u64,
    /// Packets queued to the kernel for transmission.
    pub tx_packets: u64,
    /// Packets dropped on send because no next-hop MAC was known yet (AF_XDP only).
    pub tx_dropped_no_neighbour: u64,
    /// Packets dropped on send because their destination has the wrong address family or
    /// their payload does not fit the frame.
    pub tx_dropped_invalid: u64,
    /// Times [`PacketIo::alloc`] or a receive found no free frame.
    pub alloc_failures: u64,
    /// Packets handed to this backend that belong to another one (a caller bug): ignored.
    pub foreign_packets: u64,
}

/// Errors of the I/O layer. Each says what was being done and the likely cause.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The named network interface does not exist (in this network namespace).
    #[error("interface {0:?} does not exist")]
    NoSuchInterface(String),
    /// Another AF_XDP socket is already bound to this interface queue.
    #[error(
        "queue {queue} of interface {interface:?} is busy: another AF_XDP socket is bound to it"
    )]
    QueueBusy {
        /// Interface name.
        interface: String,
        /// Queue index.
        queue: u32,
    },
    /// The interface has no such receive queue.
    #[error("interface {interface:?} has no queue {queue}")]
    NoSuchQueue {
        /// Interface name.
        interface: String,
        /// Queue index.
        queue: u32,
    },
    /// Another XDP program is attached to the interface.
    #[error("interface {0:?} is busy: another XDP program is attached to it")]
    XdpBusy(String),
    /// The kernel refused to load or attach the XDP program.
    #[error("the kernel refused the XDP program on {interface:?}: {detail}")]
    XdpRefused {
        /// Interface name (or "-" when only loading).
        interface: String,
        /// What the kernel or aya said.
        detail: String,
    },
    /// Creating the UMEM or AF_XDP socket failed for another reason.
    #[error("AF_XDP setup on {interface:?} queue {queue} failed: {detail}")]
    AfXdp {
        /// Interface name.
        interface: String,
        /// Queue index.
        queue: u32,
        /// What failed.
        detail: String,
    },
    /// The interface has no address of the family a peer needs.
    #[error("interface {interface:?} has no {family} address")]
    NoLocalAddress {
        /// Interface name.
        interface: String,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// The neighbour (next-hop MAC) of a peer could not be resolved in time.
    #[error("no neighbour entry for the peer on {interface:?} after {waited:?}")]
    NeighbourUnresolved {
        /// Interface name.
        interface: String,
        /// How long resolution was tried.
        waited: Duration,
    },
    /// A netlink query failed.
    #[error("netlink {what} failed: {detail}")]
    Netlink {
        /// What was asked.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A socket system call failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// Which call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Most packets [`PacketIo::with_payloads_mut`] hands to its closure at once.
pub const MAX_BATCH: usize = 64;

/// A batch packet I/O backend. Implementations do no allocation per packet.
///
/// The cycle: [`recv`](Self::recv) fills a batch; each packet is processed in place
/// ([`payload_mut`](Self::payload_mut)), then either sent on (set [`Packet::peer`], pass to
/// [`send`](Self::send)) or given back ([`release`](Self::release)). New packets come from
/// [`alloc`](Self::alloc).
pub trait PacketIo {
    /// Appends up to `max` received packets to `out` and returns how many. Waits at most
    /// `timeout` for the first one; `Duration::ZERO` never blocks.
    fn recv(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, IoError>;

    /// Queues the packets in `batch` for transmission to their `peer`s, removing from `batch`
    /// those queued (in order, from the front). Packets that cannot go (no neighbour, wrong
    /// family) are dropped, counted and their frames released. Packets left in `batch` did
    /// not fit the transmit ring this time: call again later.
    fn send(&mut self, batch: &mut Vec<Packet>) -> Result<usize, IoError>;

    /// Returns frames of packets that will not be sent to the pool.
    fn release(&mut self, packets: &mut Vec<Packet>);

    /// A free frame as an empty packet whose payload can hold `capacity()` bytes, to fill with
    /// [`payload_mut`](Self::payload_mut) after [`set_len`](Self::set_len).
    fn alloc(&mut self, peer: SocketAddr) -> Option<Packet>;

    /// Largest payload a packet can carry.
    fn capacity(&self) -> usize;

    /// Sets a packet's payload length, clamped to what its frame holds after the payload's
    /// offset (at least [`capacity`](Self::capacity) for a packet from
    /// [`alloc`](Self::alloc)).
    fn set_len(&mut self, packet: &mut Packet, len: usize);

    /// The payload bytes of a packet.
    fn payload(&self, packet: &Packet) -> &[u8];

    /// The payload bytes of a packet, writable in place.
    fn payload_mut(&mut self, packet: &Packet) -> &mut [u8];

    /// Calls `f` with the writable payloads of `packets` at once, in order, in chunks of at
    /// most [`MAX_BATCH`] (so a batch can be processed in place together, e.g. by
    /// `pb_sphinx::process_batch`). A packet this backend does not own, or a second packet on
    /// a frame already handed out, gets an empty slice.
    fn with_payloads_mut(&mut self, packets: &[Packet], f: &mut dyn FnMut(&mut [&mut [u8]]));

    /// Reclaims transmitted frames and kicks the kernel if it waits for us. Call regularly.
    fn poll_completions(&mut self) -> Result<usize, IoError>;

    /// Counters so far.
    fn stats(&self) -> IoStats;

    /// The local UDP endpoint packets arrive at.
    fn local_addr(&self) -> SocketAddr;

    /// Serves packets from the sources `filter` allows from now on (see [`sources`]). The
    /// UDP backend checks every datagram's source in user space before handing it up; the
    /// default does nothing, for backends whose filter lives elsewhere (AF_XDP: the XDP
    /// program, whose maps the control plane fills) or that have no strangers (in memory).
    fn set_sources(&mut self, filter: &sources::SourceFilter) {
        let _ = filter;
    }
}
