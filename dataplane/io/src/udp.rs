//! The portable backend: one UDP socket driven with `recvmmsg`/`sendmmsg`, packets held in a
//! preallocated pool of 2048-byte frames. Needs no privileges and no XDP; the same
//! [`PacketIo`] code runs on it.
//!
//! This module and [`crate::afxdp`] hold all of the crate's `unsafe` code: here, the two batch
//! system calls and the socket-address conversions around them.
#![expect(unsafe_code, reason = "recvmmsg/sendmmsg and sockaddr conversions")]

use std::{
    io, mem,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, RawFd},
    time::Duration,
};

use crate::{FrameId, IoError, IoStats, Owner, Packet, PacketIo};

const FRAME_SIZE: usize = 2048;
/// The most packets one system call moves.
const MAX_BATCH: usize = 256;

/// Settings of the UDP backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpConfig {
    /// Address and port to bind.
    pub bind: SocketAddr,
    /// Exact UDP payload length of a PhantomBand packet; other sizes are dropped and counted.
    pub packet_len: u16,
    /// Frames in the pool.
    pub frame_count: u32,
    /// Socket receive and send buffer size requested from the kernel, in bytes.
    pub socket_buffer: usize,
    /// Set `SO_REUSEPORT` before binding, so that several sockets (one per relay core) share
    /// the address and the kernel spreads incoming flows over them by a hash of the peer.
    pub reuse_port: bool,
}

impl UdpConfig {
    /// Defaults for `bind`: the default packet length, 4096 frames, 4 MiB socket buffers.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            packet_len: crate::DEFAULT_PACKET_LEN,
            frame_count: 4096,
            socket_buffer: 4 << 20,
            reuse_port: false,
        }
    }
}

/// Scratch arrays for one batch system call. They hold raw pointers only while a call is
/// being prepared and made; between calls their contents are stale and never read.
struct Scratch {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
    frames: Vec<FrameId>,
}

// SAFETY: the raw pointers inside are rewritten before every use and only point into buffers
// owned by the same `UdpIo`, which moves between threads as a whole.
unsafe impl Send for Scratch {}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("capacity", &self.headers.len())
            .finish()
    }
}

/// A UDP socket with a frame pool, implementing [`PacketIo`].
#[derive(Debug)]
pub struct UdpIo {
    owner: Owner,
    socket: UdpSocket,
    pool: Vec<u8>,
    /// Frames in the pool.
    frames: usize,
    free: Vec<FrameId>,
    scratch: Scratch,
    packet_len: usize,
    local: SocketAddr,
    stats: IoStats,
}

fn sys(call: &'static str) -> impl FnOnce(io::Error) -> IoError {
    move |source| IoError::Sys { call, source }
}

impl UdpIo {
    /// Binds the socket and allocates the pool.
    pub fn open(config: &UdpConfig) -> Result<Self, IoError> {
        let socket = if config.reuse_port {
            bind_reuse_port(config.bind)?
        } else {
            UdpSocket::bind(config.bind).map_err(sys("bind"))?
        };
        socket
            .set_nonblocking(true)
            .map_err(sys("set_nonblocking"))?;
        for option in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
            set_buffer(&socket, option, config.socket_buffer)?;
        }
        let local = socket.local_addr().map_err(sys("getsockname"))?;
        let frames = config.frame_count.max(2 * MAX_BATCH as u32);
        let scratch = Scratch {
            // SAFETY: all-zero bytes are a valid `mmsghdr`, `iovec` and `sockaddr_storage`
            // (plain C structs of integers and nullable pointers).
            headers: vec![unsafe { mem::zeroed() }; MAX_BATCH],
            // SAFETY: as above.
            iovecs: vec![unsafe { mem::zeroed() }; MAX_BATCH],
            // SAFETY: as above.
            names: vec![unsafe { mem::zeroed() }; MAX_BATCH],
            frames: Vec::with_capacity(MAX_BATCH),
        };
        Ok(Self {
            owner: Owner::new(),
            frames: frames as usize,
            socket,
            pool: vec![0; frames as usize * FRAME_SIZE],
            free: (0..frames).rev().map(FrameId).collect(),
            scratch,
            packet_len: usize::from(config.packet_len),
            local,
            stats: IoStats::default(),
        })
    }

    /// Whether `packet` holds one of this backend's frames (counting it when not).
    fn owns(&mut self, packet: &Packet) -> bool {
        let ours = packet.owner == self.owner && (packet.frame.0 as usize) < self.frames;
        if !ours {
            self.stats.foreign_packets += 1;
        }
        ours
    }

    /// Byte range of `packet`'s payload in the pool, if it lies inside its frame.
    fn payload_range(&self, packet: &Packet) -> Option<std::ops::Range<usize>> {
        if packet.owner != self.owner || packet.frame.0 as usize >= self.frames {
            return None;
        }
        let (offset, len) = (usize::from(packet.offset), usize::from(packet.len));
        if offset + len > FRAME_SIZE {
            return None;
        }
        let start = packet.frame.0 as usize * FRAME_SIZE + offset;
        Some(start..start + len)
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool, IoError> {
        poll_readable(self.socket.as_raw_fd(), timeout)
    }

    /// Points the first `n` headers at `iovecs[i]` and `names[i]`. Raw pointers are derived
    /// once from each vector, after every safe write to it, so none is invalidated before the
    /// system call reads it.
    fn link_headers(&mut self, n: usize, namelens: Option<&[libc::socklen_t]>) {
        let iovecs = self.scratch.iovecs.as_mut_ptr();
        let names = self.scratch.names.as_mut_ptr();
        for (i, h) in self.scratch.headers[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = match namelens {
                Some(lens) => lens[i],
                None => mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
            };
            h.msg_hdr.msg_iov = iovecs.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }

    fn recv_once(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize, IoError> {
        let n = max.min(MAX_BATCH).min(self.free.len());
        if n == 0 {
            if max > 0 {
                self.stats.alloc_failures += 1;
            }
            return Ok(0);
        }
        self.scratch.frames.clear();
        let pool = self.pool.as_mut_ptr();
        for i in 0..n {
            let Some(id) = self.free.pop() else { break };
            self.scratch.frames.push(id);
            // In bounds: `id` < frames and the pool holds `frames * FRAME_SIZE` bytes.
            let base = pool.wrapping_add(id.0 as usize * FRAME_SIZE);
            self.scratch.iovecs[i] = libc::iovec {
                iov_base: base.cast(),
                iov_len: FRAME_SIZE,
            };
        }
        self.link_headers(n, None);
        // SAFETY: the first `n` headers point at `n` distinct free frames of `self.pool`
        // (FRAME_SIZE bytes each) and at `n` sockaddr_storage slots, all owned by `self` and
        // not otherwise accessed during the call.
        let rc = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                self.scratch.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            self.free.append(&mut self.scratch.frames);
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(IoError::Sys {
                    call: "recvmmsg",
                    source: e,
                }),
            };
        }
        let got = rc as usize;
        let mut accepted = 0;
        for i in 0..n {
            let id = self.scratch.frames[i];
            if i >= got {
                self.free.push(id);
                continue;
            }
            let h = &self.scratch.headers[i];
            let len = h.msg_len as usize;
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            match sockaddr_to_std(&self.scratch.names[i]) {
                Some(peer) if len == self.packet_len && !truncated => {
                    out.push(Packet {
                        owner: self.owner,
                        frame: id,
                        offset: 0,
                        len: len as u16,
                        peer,
                    });
                    accepted += 1;
                }
                _ => {
                    self.stats.rx_dropped_malformed += 1;
                    self.free.push(id);
                }
            }
        }
        self.scratch.frames.clear();
        self.stats.rx_packets += accepted as u64;
        Ok(accepted)
    }
}

impl PacketIo for UdpIo {
    fn recv(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, IoError> {
        let n = self.recv_once(out, max)?;
        if n > 0 || timeout.is_zero() || self.free.is_empty() || !self.wait_readable(timeout)? {
            return Ok(n);
        }
        self.recv_once(out, max)
    }

    fn send(&mut self, batch: &mut Vec<Packet>) -> Result<usize, IoError> {
        let mut sent_total = 0;
        let mut namelens = [0 as libc::socklen_t; MAX_BATCH];
        while !batch.is_empty() {
            // Packets that are not ours, or whose payload is out of bounds, never reach the
            // system call.
            let front = &batch[0];
            if self.payload_range(front).is_none() {
                let packet = batch.remove(0);
                if self.owns(&packet) {
                    self.stats.tx_dropped_invalid += 1;
                    self.free.push(packet.frame);
                }
                continue;
            }
            let mut n = 0;
            let pool = self.pool.as_mut_ptr();
            while n < batch.len().min(MAX_BATCH) {
                let Some(range) = self.payload_range(&batch[n]) else {
                    break;
                };
                self.scratch.iovecs[n] = libc::iovec {
                    iov_base: pool.wrapping_add(range.start).cast(),
                    iov_len: range.len(),
                };
                namelens[n] = std_to_sockaddr(&batch[n].peer, &mut self.scratch.names[n]);
                n += 1;
            }
            self.link_headers(n, Some(&namelens[..n]));
            // SAFETY: the first `n` headers point at the payloads of `n` packets of this
            // backend, inside `self.pool` (checked by `payload_range`), and at their addresses;
            // all owned by `self` and unchanged during the call.
            let rc = unsafe {
                libc::sendmmsg(
                    self.socket.as_raw_fd(),
                    self.scratch.headers.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => break,
                    _ => {
                        // The first packet cannot go (unreachable, wrong family, ...): drop it
                        // and carry on with the rest.
                        self.stats.tx_dropped_invalid += 1;
                        let packet = batch.remove(0);
                        self.free.push(packet.frame);
                        continue;
                    }
                }
            }
            let sent = rc as usize;
            self.free.extend(batch.drain(..sent).map(|p| p.frame));
            self.stats.tx_packets += sent as u64;
            sent_total += sent;
            if sent < n {
                break;
            }
        }
        Ok(sent_total)
    }

    fn release(&mut self, packets: &mut Vec<Packet>) {
        for packet in packets.drain(..) {
            if self.owns(&packet) {
                self.free.push(packet.frame);
            }
        }
    }

    fn alloc(&mut self, peer: SocketAddr) -> Option<Packet> {
        match self.free.pop() {
            Some(frame) => Some(Packet {
                owner: self.owner,
                frame,
                offset: 0,
                len: 0,
                peer,
            }),
            None => {
                self.stats.alloc_failures += 1;
                None
            }
        }
    }

    fn capacity(&self) -> usize {
        FRAME_SIZE
    }

    fn set_len(&mut self, packet: &mut Packet, len: usize) {
        if self.owns(packet) {
            let room = FRAME_SIZE.saturating_sub(usize::from(packet.offset));
            packet.len = len.min(room) as u16;
        }
    }

    fn payload(&self, packet: &Packet) -> &[u8] {
        match self.payload_range(packet) {
            Some(range) => &self.pool[range],
            None => &[],
        }
    }

    fn payload_mut(&mut self, packet: &Packet) -> &mut [u8] {
        match self.payload_range(packet) {
            Some(range) => &mut self.pool[range],
            None => {
                self.stats.foreign_packets += u64::from(packet.owner != self.owner);
                &mut []
            }
        }
    }

    fn with_payloads_mut(&mut self, packets: &[Packet], f: &mut dyn FnMut(&mut [&mut [u8]])) {
        for chunk in packets.chunks(crate::MAX_BATCH) {
            // (frame, position) sorted by frame, so one pass over the pool's frames hands out
            // disjoint slices without unsafe code.
            let mut order = [(usize::MAX, 0usize); crate::MAX_BATCH];
            let mut ranges = [(0usize, 0usize); crate::MAX_BATCH];
            for (i, packet) in chunk.iter().enumerate() {
                order[i].1 = i;
                if let Some(range) = self.payload_range(packet) {
                    order[i].0 = packet.frame.0 as usize;
                    ranges[i] = (usize::from(packet.offset), range.len());
                } else {
                    self.stats.foreign_packets += u64::from(packet.owner != self.owner);
                }
            }
            order[..chunk.len()].sort_unstable();
            let mut slices: [&mut [u8]; crate::MAX_BATCH] = std::array::from_fn(|_| &mut [][..]);
            let mut frames = self.pool.chunks_exact_mut(FRAME_SIZE);
            let mut next_frame = 0;
            for &(frame, position) in &order[..chunk.len()] {
                if frame == usize::MAX || frame < next_frame {
                    continue; // not ours, or a frame already handed out
                }
                let Some(data) = frames.nth(frame - next_frame) else {
                    break;
                };
                next_frame = frame + 1;
                let (offset, len) = ranges[position];
                slices[position] = &mut data[offset..offset + len];
            }
            f(&mut slices[..chunk.len()]);
        }
    }

    fn poll_completions(&mut self) -> Result<usize, IoError> {
        Ok(0)
    }

    fn stats(&self) -> IoStats {
        self.stats
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

/// Waits until `fd` is readable or `timeout` has passed, to the nanosecond (`ppoll(2)`;
/// `poll(2)` would round to whole milliseconds: 0.6 ms to a busy loop, 1.9 ms to 1 ms).
/// `false` on timeout or when a signal interrupted the wait. Shared with [`crate::afxdp`].
pub(crate) fn poll_readable(fd: RawFd, timeout: Duration) -> Result<bool, IoError> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // The kernel saturates a valid timespec that is too large; seconds beyond `time_t` are
    // clamped here. Nanoseconds are below 10^9, so they fit a `c_long` (32 bits or more)
    // and make a valid timespec.
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `pfd` is a live, exclusively borrowed pollfd and the count is 1, so the kernel
    // reads and writes exactly that struct; `ts` is a live timespec that it only reads; a null
    // signal mask is documented to leave the mask unchanged. Nothing is retained after the
    // call returns. (A closed `fd` is not a memory hazard: it reports POLLNVAL.)
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(IoError::Sys {
            call: "ppoll",
            source: e,
        });
    }
    Ok(rc > 0)
}

fn set_buffer(socket: &UdpSocket, option: libc::c_int, bytes: usize) -> Result<(), IoError> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: `value` is a live c_int and its size is passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(IoError::Sys {
            call: "setsockopt(SO_RCVBUF/SO_SNDBUF)",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT` set first.
fn bind_reuse_port(addr: SocketAddr) -> Result<UdpSocket, IoError> {
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain system call; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::socket(family, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(sys("socket")(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let socket = unsafe { UdpSocket::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: `one` is a live c_int and its size is passed; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(sys("setsockopt(SO_REUSEPORT)")(io::Error::last_os_error()));
    }
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = std_to_sockaddr(&addr, &mut storage);
    // SAFETY: `storage` holds a socket address of `len` bytes, written above.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc < 0 {
        return Err(sys("bind")(io::Error::last_os_error()));
    }
    Ok(socket)
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large and
            // aligned enough for.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn std_to_sockaddr(addr: &SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in, and every
            // field is written below.
            let s = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>()
            };
            s.sin_family = libc::AF_INET as libc::sa_family_t;
            s.sin_port = a.port().to_be();
            s.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            s.sin_zero = [0; 8];
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let s = unsafe {
                &mut *(storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            s.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            s.sin6_port = a.port().to_be();
            s.sin6_flowinfo = a.flowinfo();
            s.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            s.sin6_scope_id = a.scope_id();
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip() {
        for s in ["198.18.0.1:47470", "[fd70:6862::2]:1", "[::1]:65535"] {
            let addr: SocketAddr = s.parse().unwrap();
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
            std_to_sockaddr(&addr, &mut storage);
            assert_eq!(sockaddr_to_std(&storage), Some(addr));
        }
    }

    /// With `reuse_port` two backends share one address, and every datagram sent to it
    /// reaches exactly one of them; without it the second bind is refused.
    #[test]
    fn reuse_port_shares_the_address() {
        let mut config = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        config.packet_len = 64;
        config.reuse_port = true;
        let mut a = UdpIo::open(&config).unwrap();
        config.bind = a.local_addr();
        let mut b = UdpIo::open(&config).unwrap();
        assert_eq!(b.local_addr(), a.local_addr());
        config.reuse_port = false;
        assert!(matches!(
            UdpIo::open(&config),
            Err(IoError::Sys { call: "bind", .. })
        ));
        // Many source ports, so that the kernel's hash has flows to spread.
        let senders: Vec<UdpSocket> = (0..16)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        for (i, s) in senders.iter().enumerate() {
            s.send_to(&[i as u8; 64], a.local_addr()).unwrap();
        }
        let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
        let start = std::time::Instant::now();
        while got_a.len() + got_b.len() < senders.len() && start.elapsed().as_secs() < 5 {
            a.recv(&mut got_a, 64, Duration::from_millis(10)).unwrap();
            b.recv(&mut got_b, 64, Duration::from_millis(10)).unwrap();
        }
        let mut firsts: Vec<u8> = got_a
            .iter()
            .map(|p| a.payload(p)[0])
            .chain(got_b.iter().map(|p| b.payload(p)[0]))
            .collect();
        firsts.sort_unstable();
        assert_eq!(
            firsts,
            (0..16).collect::<Vec<u8>>(),
            "each datagram exactly once"
        );
        a.release(&mut got_a);
        b.release(&mut got_b);
    }

    /// Two UDP backends on loopback: a batch goes one way byte-identical and wrong-size
    /// datagrams are dropped and counted. Unprivileged; loopback only.
    #[test]
    fn loopback_batch_exchange() {
        let mut config = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        config.packet_len = 200;
        let mut a = UdpIo::open(&config).unwrap();
        let mut b = UdpIo::open(&config).unwrap();
        let to = b.local_addr();
        let mut batch = Vec::new();
        for i in 0..100u8 {
            let mut p = a.alloc(to).unwrap();
            a.set_len(&mut p, 200);
            a.payload_mut(&p).fill(i);
            batch.push(p);
        }
        let odd = UdpSocket::bind("127.0.0.1:0").unwrap();
        odd.send_to(&[1; 199], to).unwrap();
        odd.send_to(&[1; 201], to).unwrap();
        let mut sent = 0;
        while !batch.is_empty() {
            sent += a.send(&mut batch).unwrap();
        }
        assert_eq!(sent, 100);
        let mut got = Vec::new();
        for _ in 0..100 {
            if got.len() == 100 {
                break;
            }
            b.recv(&mut got, 64, Duration::from_millis(100)).unwrap();
        }
        assert_eq!(got.len(), 100);
        for (i, p) in got.iter().enumerate() {
            assert_eq!(p.peer, a.local_addr());
            assert!(
                b.payload(p).iter().all(|&x| x == i as u8),
                "packet {i} differs"
            );
        }
        assert_eq!(b.stats().rx_dropped_malformed, 2);
        b.release(&mut got);
        assert_eq!(b.free.len(), 4096);
    }

    /// A batch's payloads come out together, writable, in packet order; a second packet on
    /// the same frame and a foreign packet get empty slices.
    #[test]
    fn payloads_of_a_batch_at_once() {
        let config = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        let mut a = UdpIo::open(&config).unwrap();
        let mut b = UdpIo::open(&config).unwrap();
        let peer = b.local_addr();
        // Frames are handed out from the end of the pool: allocate several so the batch's
        // frame order differs from packet order.
        let mut batch: Vec<Packet> = (0..5).map(|_| a.alloc(peer).unwrap()).collect();
        for (i, p) in batch.iter_mut().enumerate() {
            a.set_len(p, 10 + i);
        }
        batch.swap(0, 3);
        let duplicate = Packet {
            owner: batch[1].owner,
            frame: batch[1].frame,
            offset: batch[1].offset,
            len: batch[1].len,
            peer,
        };
        batch.push(duplicate);
        let mut foreign = b.alloc(peer).unwrap();
        b.set_len(&mut foreign, 50);
        batch.push(foreign);
        let mut lens = Vec::new();
        a.with_payloads_mut(&batch, &mut |slices| {
            for (i, s) in slices.iter_mut().enumerate() {
                lens.push(s.len());
                s.fill(i as u8 + 1);
            }
        });
        assert_eq!(lens, [13, 11, 12, 10, 14, 0, 0]);
        for (i, p) in batch[..5].iter().enumerate() {
            assert!(a.payload(p).iter().all(|&x| x == i as u8 + 1), "packet {i}");
        }
        assert!(b.payload(&batch[6]).iter().all(|&x| x == 0));
    }

    /// A packet handed to a backend that does not own its frame is refused, not taken.
    #[test]
    fn foreign_packets_are_refused() {
        let config = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        let mut a = UdpIo::open(&config).unwrap();
        let mut b = UdpIo::open(&config).unwrap();
        let mut p = a.alloc(b.local_addr()).unwrap();
        a.set_len(&mut p, 100);
        a.payload_mut(&p).fill(7);
        assert!(b.payload(&p).is_empty());
        assert!(b.payload_mut(&p).is_empty());
        let free_before = b.free.len();
        let mut batch = vec![p];
        assert_eq!(b.send(&mut batch).unwrap(), 0);
        assert!(batch.is_empty());
        assert_eq!(b.free.len(), free_before, "b must not adopt a's frame");
        assert_eq!(b.stats().foreign_packets, 2);
        assert_eq!(b.stats().tx_packets, 0);
    }
}
