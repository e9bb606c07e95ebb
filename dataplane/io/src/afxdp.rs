//! The AF_XDP backend: one socket on one interface queue, its UMEM, and the four rings.
//!
//! Frames never leave the UMEM: a received packet is a frame the XDP program redirected here;
//! it is processed in place and transmitted from the same frame with fresh headers, or
//! returned to the fill ring. Frames are owned by exactly one of: the fill ring, the RX ring,
//! a [`Packet`], the free list, the TX ring, the completion ring. [`Packet`] is not `Clone`,
//! which is what makes the raw frame access below sound.
//!
//! This module and [`crate::udp`] hold all of the crate's `unsafe` code.
#![expect(unsafe_code, reason = "UMEM frame and ring access through xsk-rs")]

use std::{
    collections::HashMap,
    ffi::CString,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use xsk_rs::{
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
};

use crate::{FrameId, IoError, IoStats, Owner, Packet, PacketIo, netlink, wire};

/// How the socket binds to the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy if the driver offers it, else copy.
    #[default]
    Auto,
    /// Copy mode (the kernel copies frames into the UMEM). veth only offers this.
    Copy,
    /// Zero-copy; fails where the driver lacks it.
    ZeroCopy,
}

/// Settings of one AF_XDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// Interface name.
    pub interface: String,
    /// Receive/transmit queue index.
    pub queue: u32,
    /// PhantomBand UDP port (ours, and the one the XDP program steers).
    pub port: u16,
    /// Exact UDP payload length of a PhantomBand packet.
    pub packet_len: u16,
    /// Frames in the UMEM (each 2048 bytes).
    pub frame_count: u32,
    /// Size of each of the four rings (a power of two).
    pub ring_size: u32,
    /// Copy or zero-copy.
    pub bind: BindMode,
}

impl AfXdpConfig {
    /// Defaults for `interface` queue `queue`: the default port and packet length, 4096 frames,
    /// rings of 2048.
    pub fn new(interface: impl Into<String>, queue: u32) -> Self {
        Self {
            interface: interface.into(),
            queue,
            port: crate::DEFAULT_PORT,
            packet_len: crate::DEFAULT_PACKET_LEN,
            frame_count: 4096,
            ring_size: 2048,
            bind: BindMode::Auto,
        }
    }
}

const FRAME_SIZE: u32 = 2048;
/// How long a busy queue is retried: the kernel releases a just-closed socket's queue lazily.
const BUSY_RETRY: Duration = Duration::from_secs(2);
/// Minimum interval between neighbour lookups for one peer that has no entry yet.
const NEIGHBOUR_RETRY: Duration = Duration::from_millis(200);
/// How long a cached next-hop MAC is used before the kernel's table is read again.
const NEIGHBOUR_TTL: Duration = Duration::from_secs(30);
/// Most peers remembered as unresolved; the memory is forgotten wholesale past this.
const MAX_NEIGHBOUR_MISSES: usize = 1024;
/// Most wake-ups one kick makes: copy mode sends at most 32 frames per wake-up.
const MAX_KICKS: usize = 64;
/// Bytes the kernel reserves in front of every received frame (XDP_PACKET_HEADROOM).
const XDP_PACKET_HEADROOM: usize = 256;

/// One AF_XDP socket with its own UMEM. Register [`fd`](Self::fd) in the XDP program's
/// XSKMAP ([`crate::xdp::XdpProgram::register`]) to receive.
#[derive(Debug)]
pub struct AfXdpIo {
    owner: Owner,
    umem: Umem,
    fill: FillQueue,
    comp: CompQueue,
    tx: TxQueue,
    rx: RxQueue,
    /// The descriptor of every frame, by `FrameId`; updated on receive.
    frames: Vec<FrameDesc>,
    /// Frames owned by nobody, ready for the fill ring or `alloc`.
    free: Vec<FrameId>,
    /// Frames currently in the fill ring.
    in_fill: u32,
    /// Frames queued for transmission and not yet completed.
    in_tx: u32,
    scratch: Vec<FrameDesc>,
    fill_target: u32,
    interface: String,
    ifindex: u32,
    queue: u32,
    port: u16,
    packet_len: usize,
    mac: [u8; 6],
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
    /// Next-hop MACs and when they were read from the kernel.
    neighbours: HashMap<IpAddr, ([u8; 6], Instant)>,
    neighbour_misses: HashMap<IpAddr, Instant>,
    stats: IoStats,
}

fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    e.source()
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

/// The index of `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<u32, IoError> {
    let c = CString::new(name).map_err(|_| IoError::NoSuchInterface(name.to_owned()))?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(IoError::NoSuchInterface(name.to_owned()));
    }
    Ok(index)
}

/// How many receive queues `name` has (`/sys/class/net/<name>/queues/rx-*`), or `None` if
/// sysfs does not say (not mounted for this network namespace). A queue without an AF_XDP
/// socket loses the PhantomBand packets the NIC hashes to it (the XDP program counts them
/// as `drop_no_socket`).
pub fn rx_queue_count(name: &str) -> Option<u32> {
    if name.contains('/') || name.starts_with('.') {
        return None;
    }
    let entries = std::fs::read_dir(format!("/sys/class/net/{name}/queues")).ok()?;
    let count = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(count).ok().filter(|c| *c > 0)
}

impl AfXdpIo {
    /// Creates the UMEM and binds a socket to `config.interface` queue `config.queue` without
    /// loading any XDP program (ours is attached separately). Fails with a typed error naming
    /// the interface or queue when it does not exist or is busy.
    pub fn open(config: &AfXdpConfig) -> Result<Self, IoError> {
        let interface = config.interface.clone();
        let queue = config.queue;
        let af = |detail: String| IoError::AfXdp {
            interface: interface.clone(),
            queue,
            detail,
        };
        let ifindex = ifindex(&interface)?;
        let ring = QueueSize::new(config.ring_size).map_err(|e| af(format!("ring size: {e}")))?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE).map_err(|e| af(format!("frame size: {e}")))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| af(format!("UMEM config: {e}")))?;
        let frame_count = NonZeroU32::new(config.frame_count.max(2 * config.ring_size))
            .ok_or_else(|| af("frame count must be positive".into()))?;
        let (umem, frames) =
            Umem::new(umem_config, frame_count, false).map_err(|e| af(format!("UMEM: {e}")))?;

        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        match config.bind {
            BindMode::Auto => {}
            BindMode::Copy => bind |= BindFlags::XDP_COPY,
            BindMode::ZeroCopy => bind |= BindFlags::XDP_ZEROCOPY,
        }
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();
        let if_name: Interface = interface
            .parse()
            .map_err(|_| IoError::NoSuchInterface(interface.clone()))?;

        let started = Instant::now();
        let (tx, rx, rings) = loop {
            // SAFETY: the UMEM is new and not shared with any other socket, so the
            // shared-UMEM precondition of `Socket::new` does not apply.
            match unsafe { Socket::new(socket_config, &umem, &if_name, queue) } {
                Ok(socket) => break socket,
                Err(e) => match errno_of(&e) {
                    Some(libc::EBUSY) if started.elapsed() < BUSY_RETRY => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Some(libc::EBUSY) => {
                        return Err(IoError::QueueBusy {
                            interface: interface.clone(),
                            queue,
                        });
                    }
                    // Queue 0 always exists, so EINVAL there is about the settings.
                    Some(libc::EINVAL) if queue > 0 => {
                        return Err(IoError::NoSuchQueue {
                            interface: interface.clone(),
                            queue,
                        });
                    }
                    Some(libc::ENODEV) => return Err(IoError::NoSuchInterface(interface.clone())),
                    _ => return Err(af(format!("socket: {e}"))),
                },
            }
        };
        let (fill, comp) = rings.ok_or_else(|| af("UMEM rings were not handed over".into()))?;

        let mac = netlink::link_mac(ifindex)?;
        let addrs = netlink::link_addrs(ifindex)?;
        let v4 = addrs.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let v6 = addrs.iter().find_map(|a| match a {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });

        let scratch = vec![frames[0]; config.ring_size as usize];
        let free = (0..frames.len() as u32).rev().map(FrameId).collect();
        let mut io = Self {
            owner: Owner::new(),
            umem,
            fill,
            comp,
            tx,
            rx,
            frames,
            free,
            in_fill: 0,
            in_tx: 0,
            scratch,
            fill_target: config.ring_size,
            interface,
            ifindex,
            queue,
            port: config.port,
            packet_len: usize::from(config.packet_len),
            mac,
            v4,
            v6,
            neighbours: HashMap::new(),
            neighbour_misses: HashMap::new(),
            stats: IoStats::default(),
        };
        io.refill();
        Ok(io)
    }

    /// The socket's file descriptor, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// The queue this socket is bound to.
    pub fn queue(&self) -> u32 {
        self.queue
    }

    /// The interface this socket is bound to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Our MAC address on the interface.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Looks up (and if needed asks the kernel to resolve) the next-hop MAC of `peer`,
    /// waiting up to `timeout`. Call at setup for each known neighbour so that the first
    /// packets are not dropped as `tx_dropped_no_neighbour`.
    pub fn resolve_peer(&mut self, peer: IpAddr, timeout: Duration) -> Result<[u8; 6], IoError> {
        let local = self.local_ip_for(peer).ok_or(IoError::NoLocalAddress {
            interface: self.interface.clone(),
            family: if peer.is_ipv4() { "IPv4" } else { "IPv6" },
        })?;
        let mac = netlink::resolve(&self.interface, self.ifindex, local, peer, timeout)?;
        self.neighbours.insert(peer, (mac, Instant::now()));
        Ok(mac)
    }

    /// Kernel statistics of the socket (ring-full drops and invalid descriptors).
    pub fn kernel_stats(&self) -> Result<xsk_rs::socket::XdpStatistics, IoError> {
        self.rx
            .fd()
            .xdp_statistics()
            .map_err(|source| IoError::Sys {
                call: "XDP_STATISTICS",
                source,
            })
    }

    /// Whether `ip` is this socket's address for its family.
    fn is_local(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4 == Some(v4),
            IpAddr::V6(v6) => self.v6 == Some(v6),
        }
    }

    fn local_ip_for(&self, peer: IpAddr) -> Option<IpAddr> {
        match peer {
            IpAddr::V4(_) => self.v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.v6.map(IpAddr::V6),
        }
    }

    /// The next-hop MAC for `peer` (its gateway's when routed): from the cache while fresh,
    /// else from the kernel's routing and neighbour tables (at most once per [`NEIGHBOUR_RETRY`] per unresolved peer, triggering
    /// resolution when absent). A stale cached MAC is used until the table answers again.
    fn next_hop(&mut self, peer: IpAddr) -> Option<[u8; 6]> {
        let now = Instant::now();
        let cached = self.neighbours.get(&peer).copied();
        if let Some((mac, read_at)) = cached
            && now.duration_since(read_at) < NEIGHBOUR_TTL
        {
            return Some(mac);
        }
        if let Some(last) = self.neighbour_misses.get(&peer)
            && now.duration_since(*last) < NEIGHBOUR_RETRY
        {
            return cached.map(|(mac, _)| mac);
        }
        let lookup = match netlink::next_hop_ip(self.ifindex, peer) {
            Ok(Some(hop)) => netlink::neighbour(self.ifindex, hop),
            // Routed out of another interface, or no route: this socket cannot reach it.
            Ok(None) | Err(_) => Ok(None),
        };
        match lookup {
            Ok(Some(mac)) => {
                self.neighbour_misses.remove(&peer);
                self.neighbours.insert(peer, (mac, now));
                Some(mac)
            }
            _ => {
                if self.neighbour_misses.len() >= MAX_NEIGHBOUR_MISSES {
                    self.neighbour_misses.clear();
                }
                self.neighbour_misses.insert(peer, now);
                if let Some(local) = self.local_ip_for(peer) {
                    let _ = netlink::trigger_resolution(local, peer);
                }
                cached.map(|(mac, _)| mac)
            }
        }
    }

    /// Whether `packet` holds one of this socket's frames (counting it when not).
    fn owns(&mut self, packet: &Packet) -> bool {
        let ours = packet.owner == self.owner && (packet.frame.0 as usize) < self.frames.len();
        if !ours {
            self.stats.foreign_packets += 1;
        }
        ours
    }

    /// Tops the fill ring up from the free list.
    fn refill(&mut self) {
        let want = self.fill_target.saturating_sub(self.in_fill) as usize;
        let n = want.min(self.free.len()).min(self.scratch.len());
        if n == 0 {
            return;
        }
        let start = self.free.len() - n;
        for (slot, id) in self.scratch.iter_mut().zip(&self.free[start..]) {
            *slot = self.frames[id.0 as usize];
        }
        // SAFETY: every descriptor is one of this UMEM's frames, taken from the free list, so
        // no `Packet` or ring holds it; the kernel owns them from here until the RX ring.
        let produced = unsafe { self.fill.produce(&self.scratch[..n]) };
        self.free.truncate(self.free.len() - produced);
        self.in_fill += produced as u32;
        if produced > 0 && self.fill.needs_wakeup() {
            let _ = self.fill.wakeup(self.rx.fd_mut(), 0);
        }
    }

    fn frame_index(&self, desc: &FrameDesc) -> Option<usize> {
        let index = desc.addr() / FRAME_SIZE as usize;
        (index < self.frames.len()).then_some(index)
    }

    /// The data segment of frame `index` from its start to the end of the frame, writable.
    /// Also makes the descriptor's length span the whole segment, so `payload` sees what
    /// gets written. `None` for an index outside the UMEM.
    fn segment_mut(&mut self, index: usize) -> Option<&mut [u8]> {
        let desc = self.frames.get_mut(index)?;
        // SAFETY: `desc` is one of this UMEM's frames and is owned by user space (a `Packet`
        // of this socket or the free list: callers only pass such frames), so neither the
        // kernel nor another reference accesses it.
        let mut data = unsafe { self.umem.data_mut(desc) };
        data.cursor().set_pos(usize::MAX); // clamped to the segment's capacity
        let segment = data.contents_mut();
        let (ptr, len) = (segment.as_mut_ptr(), segment.len());
        // SAFETY: `ptr..ptr+len` is the live slice just obtained, inside the UMEM mapping that
        // `self.umem` keeps mapped for as long as `self` lives. The returned slice borrows
        // `self` mutably, so no other access to the frame can happen while it is alive.
        Some(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    /// Writes headers for `peer` in front of the payload, moving the payload if the header
    /// length changes; returns the frame length.
    fn prepare_tx(&mut self, packet: &Packet) -> Result<usize, SendFailure> {
        let peer_ip = packet.peer.ip();
        let local = self.local_ip_for(peer_ip).ok_or(SendFailure::Invalid)?;
        let dst_mac = self.next_hop(peer_ip).ok_or(SendFailure::NoNeighbour)?;
        let route = wire::Route {
            src_mac: self.mac,
            dst_mac,
            src: SocketAddr::new(local, self.port),
            dst: packet.peer,
        };
        let header = wire::header_len(peer_ip.is_ipv6());
        let (offset, len) = (usize::from(packet.offset), usize::from(packet.len));
        let segment = self
            .segment_mut(packet.frame.0 as usize)
            .ok_or(SendFailure::Invalid)?;
        if offset + len > segment.len() || header + len > segment.len() {
            return Err(SendFailure::Invalid);
        }
        if offset != header {
            segment.copy_within(offset..offset + len, header);
        }
        wire::build(segment, &route, len).map_err(|_| SendFailure::Invalid)
    }

    fn drain_completions(&mut self) -> usize {
        let n = self.in_tx.min(self.scratch.len() as u32) as usize;
        if n == 0 {
            return 0;
        }
        // SAFETY: the completion ring only returns descriptors of frames we put in the TX
        // ring, all of this UMEM; they become user-owned again here.
        let done = unsafe { self.comp.consume(&mut self.scratch[..n]) };
        for i in 0..done {
            let desc = self.scratch[i];
            if let Some(index) = self.frame_index(&desc) {
                self.free.push(FrameId(index as u32));
            }
        }
        self.in_tx -= done as u32;
        done
    }

    /// Wakes the kernel to transmit what is in the TX ring. Copy mode sends at most 32 frames
    /// per wake-up, so this repeats while the ring still holds frames (up to [`MAX_KICKS`]).
    fn kick_tx(&mut self) -> Result<(), IoError> {
        let ring = self.scratch.len() as u32;
        for _ in 0..MAX_KICKS {
            if self.in_tx == 0 || !self.tx.needs_wakeup() || self.tx.nb_free(ring) >= ring {
                break;
            }
            match self.tx.wakeup() {
                Ok(()) => {}
                // Copy mode: the per-call budget ran out with frames left; wake it again.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
                // The device is busy: the rest waits for the next kick.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY | libc::ENOBUFS)) => break,
                Err(source) => {
                    return Err(IoError::Sys {
                        call: "AF_XDP tx wakeup",
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug)]
enum SendFailure {
    NoNeighbour,
    Invalid,
}

impl PacketIo for AfXdpIo {
    fn recv(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, IoError> {
        self.refill();
        let max = max.min(self.scratch.len());
        // SAFETY: the RX ring hands over frames of this UMEM that the kernel filled; they are
        // user-owned from here and recorded in `self.frames` below.
        let mut n = unsafe { self.rx.consume(&mut self.scratch[..max]) };
        if n == 0 && !timeout.is_zero() {
            // To the nanosecond: xsk-rs's `poll` takes whole milliseconds.
            if crate::udp::poll_readable(self.fd(), timeout)? {
                // SAFETY: as above.
                n = unsafe { self.rx.consume(&mut self.scratch[..max]) };
            }
        }
        self.in_fill = self.in_fill.saturating_sub(n as u32);
        let mut accepted = 0;
        for i in 0..n {
            let desc = self.scratch[i];
            let Some(index) = self.frame_index(&desc) else {
                self.stats.rx_dropped_malformed += 1;
                continue;
            };
            self.frames[index] = desc;
            // SAFETY: the frame was just handed over by the RX ring and is user-owned.
            let data = unsafe { self.umem.data(&self.frames[index]) }.contents();
            match wire::parse(data, self.port, self.packet_len) {
                Ok(d) if !self.is_local(d.dst.ip()) => {
                    self.stats.rx_dropped_not_local += 1;
                    self.free.push(FrameId(index as u32));
                }
                Ok(d) => {
                    out.push(Packet {
                        owner: self.owner,
                        frame: FrameId(index as u32),
                        offset: d.payload_offset as u16,
                        len: d.payload_len as u16,
                        peer: d.src,
                    });
                    accepted += 1;
                }
                Err(_) => {
                    self.stats.rx_dropped_malformed += 1;
                    self.free.push(FrameId(index as u32));
                }
            }
        }
        self.stats.rx_packets += accepted as u64;
        self.refill();
        Ok(accepted)
    }

    fn send(&mut self, batch: &mut Vec<Packet>) -> Result<usize, IoError> {
        self.drain_completions();
        let room = self.tx.nb_free(batch.len() as u32) as usize;
        let take = room.min(batch.len()).min(self.scratch.len());
        let mut ready = 0;
        for packet in batch.drain(..take) {
            if !self.owns(&packet) {
                continue;
            }
            match self.prepare_tx(&packet) {
                Ok(frame_len) => {
                    let index = packet.frame.0 as usize;
                    // SAFETY: the frame is user-owned (it belongs to `packet`).
                    let mut data = unsafe { self.umem.data_mut(&mut self.frames[index]) };
                    data.cursor().set_pos(frame_len);
                    self.scratch[ready] = self.frames[index];
                    ready += 1;
                }
                Err(failure) => {
                    match failure {
                        SendFailure::NoNeighbour => self.stats.tx_dropped_no_neighbour += 1,
                        SendFailure::Invalid => self.stats.tx_dropped_invalid += 1,
                    }
                    self.free.push(packet.frame);
                }
            }
        }
        // SAFETY: each descriptor names a user-owned frame of this UMEM with its length set;
        // ownership passes to the kernel until the completion ring returns it.
        let produced = unsafe { self.tx.produce(&self.scratch[..ready]) };
        // `nb_free` reserved room for all of them, so this cannot fall short; if it ever did,
        // the frames are returned rather than lost.
        for i in produced..ready {
            if let Some(index) = self.frame_index(&self.scratch[i]) {
                self.free.push(FrameId(index as u32));
                self.stats.tx_dropped_invalid += 1;
            }
        }
        self.in_tx += produced as u32;
        self.stats.tx_packets += produced as u64;
        // The frames are queued whatever the wake-up says: a failing wake-up resurfaces from
        // `poll_completions`, and the count must reach the caller.
        let _ = self.kick_tx();
        Ok(produced)
    }

    fn release(&mut self, packets: &mut Vec<Packet>) {
        for packet in packets.drain(..) {
            if self.owns(&packet) {
                self.free.push(packet.frame);
            }
        }
    }

    fn alloc(&mut self, peer: SocketAddr) -> Option<Packet> {
        let Some(frame) = self.free.pop() else {
            self.stats.alloc_failures += 1;
            return None;
        };
        // Make the descriptor span the whole segment so `payload` sees what gets written.
        let _ = self.segment_mut(frame.0 as usize);
        let header = wire::header_len(peer.is_ipv6());
        Some(Packet {
            owner: self.owner,
            frame,
            offset: header as u16,
            len: 0,
            peer,
        })
    }

    fn capacity(&self) -> usize {
        FRAME_SIZE as usize - XDP_PACKET_HEADROOM - wire::MAX_HEADER_LEN
    }

    fn set_len(&mut self, packet: &mut Packet, len: usize) {
        if !self.owns(packet) {
            return;
        }
        let offset = usize::from(packet.offset);
        let room = self
            .segment_mut(packet.frame.0 as usize)
            .map_or(0, |s| s.len().saturating_sub(offset));
        packet.len = len.min(room).min(usize::from(u16::MAX)) as u16;
    }

    fn payload(&self, packet: &Packet) -> &[u8] {
        if packet.owner != self.owner {
            return &[];
        }
        let Some(desc) = self.frames.get(packet.frame.0 as usize) else {
            return &[];
        };
        // SAFETY: the frame belongs to `packet` (checked above), so it is user-owned. The
        // slice spans the descriptor's length: the received frame, or the whole segment once
        // `alloc`, `set_len` or `payload_mut` touched it; `get` bounds the payload within it.
        let data = unsafe { self.umem.data(desc) }.contents();
        let start = usize::from(packet.offset);
        data.get(start..start + usize::from(packet.len))
            .unwrap_or(&[])
    }

    fn payload_mut(&mut self, packet: &Packet) -> &mut [u8] {
        if !self.owns(packet) {
            return &mut [];
        }
        let start = usize::from(packet.offset);
        let end = start + usize::from(packet.len);
        match self.segment_mut(packet.frame.0 as usize) {
            Some(segment) => {
                let end = end.min(segment.len());
                &mut segment[start.min(end)..end]
            }
            None => &mut [],
        }
    }

    fn with_payloads_mut(&mut self, packets: &[Packet], f: &mut dyn FnMut(&mut [&mut [u8]])) {
        for chunk in packets.chunks(crate::MAX_BATCH) {
            let mut slices: [&mut [u8]; crate::MAX_BATCH] = std::array::from_fn(|_| &mut [][..]);
            let mut taken = [usize::MAX; crate::MAX_BATCH];
            for (i, packet) in chunk.iter().enumerate() {
                let frame = packet.frame.0 as usize;
                if !self.owns(packet) || taken[..i].contains(&frame) {
                    continue;
                }
                let start = usize::from(packet.offset);
                let end = start + usize::from(packet.len);
                let Some(payload) = self
                    .segment_mut(frame)
                    .and_then(|segment| segment.get_mut(start..end))
                else {
                    continue;
                };
                taken[i] = frame;
                let (ptr, len) = (payload.as_mut_ptr(), payload.len());
                // SAFETY: `ptr..ptr+len` lies in frame `frame` of the UMEM mapping, which
                // `self.umem` keeps mapped while `self` is borrowed (for this whole call); the
                // frame is user-owned (`owns` checked the packet), and `taken` makes sure no
                // two slices of this chunk come from the same frame, so they are disjoint and
                // nothing else accesses them until `f` returns.
                slices[i] = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
            }
            f(&mut slices[..chunk.len()]);
        }
    }

    fn poll_completions(&mut self) -> Result<usize, IoError> {
        let done = self.drain_completions();
        self.kick_tx()?;
        self.refill();
        Ok(done)
    }

    fn stats(&self) -> IoStats {
        self.stats
    }

    fn local_addr(&self) -> SocketAddr {
        match (self.v4, self.v6) {
            (Some(v4), _) => SocketAddr::new(v4.into(), self.port),
            (None, Some(v6)) => SocketAddr::new(v6.into(), self.port),
            (None, None) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), self.port),
        }
    }
}
