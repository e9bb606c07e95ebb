//! The portable backend: one UDP socket driven with `recvmmsg`/`sendmmsg`, packets held in a
//! preallocated pool of 2048-byte frames (the frame pool shared with the in-memory backend).
//! Needs no privileges and no XDP; the same [`PacketIo`] code runs on it.
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

use crate::{
    FrameId, IoError, IoStats, Packet, PacketIo,
    pool::FramePool,
    sources::{Admission, SourceFilter, SourceGate, SourceLimits},
};

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
    /// The token bucket strangers are held to once a filter with
    /// [`StrangerPolicy::Limit`](crate::sources::StrangerPolicy::Limit) is set
    /// ([`PacketIo::set_sources`]); until then every source is served.
    pub limits: SourceLimits,
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
            limits: SourceLimits::default(),
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
// owned by the same `UdpIo` (the buffer of its `FramePool` and these scratch arrays), which
// moves between threads as a whole.
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
    socket: UdpSocket,
    pool: FramePool,
    scratch: Scratch,
    packet_len: usize,
    local: SocketAddr,
    stats: IoStats,
    /// Which sources are served (everyone until a filter is set).
    gate: SourceGate,
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
            socket,
            pool: FramePool::new(frames),
            scratch,
            packet_len: usize::from(config.packet_len),
            local,
            stats: IoStats::default(),
            gate: SourceGate::new(&config.limits),
        })
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
        let wanted = max.min(MAX_BATCH).min(self.pool.free_frames());
        if wanted == 0 {
            if max > 0 {
                self.stats.alloc_failures += 1;
            }
            return Ok(0);
        }
        self.scratch.frames.clear();
        let base = self.pool.base_ptr_for_syscall();
        for i in 0..wanted {
            let Some((id, frame)) = self.pool.take() else {
                break;
            };
            self.scratch.frames.push(id);
            self.scratch.iovecs[i] = libc::iovec {
                iov_base: base.wrapping_add(frame.start).cast(),
                iov_len: frame.len(),
            };
        }
        let n = self.scratch.frames.len();
        self.link_headers(n, None);
        // SAFETY: each of the first `n` headers points at one iovec filled above for a frame
        // just taken off the free list of `self.pool` (a `FramePool`): `take` gives each free
        // frame out once and its range (FRAME_SIZE bytes) lies inside the pool's buffer, so
        // the `n` buffers are distinct, in bounds and writable. `base` came from
        // `base_ptr_for_syscall`, which makes no reference to the bytes, and since then only
        // `take` (the free list) and `link_headers` (the scratch arrays) ran, neither of which
        // touches the bytes, so `base` is still valid. The headers also point at `n`
        // sockaddr_storage slots of `self.scratch`. All of it is owned by `self`, exclusively
        // borrowed here, so nothing else reads or writes it during the call.
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
            for id in self.scratch.frames.drain(..) {
                self.pool.put_back(id);
            }
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
                self.pool.put_back(id);
                continue;
            }
            let h = &self.scratch.headers[i];
            let len = h.msg_len as usize;
            let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let packet = match sockaddr_to_std(&self.scratch.names[i]) {
                Some(peer) if len == self.packet_len && !truncated => {
                    match self.gate.admit(peer.ip()) {
                        Admission::Pass => self.pool.received(id, len, peer),
                        refused => {
                            if refused == Admission::Stranger {
                                self.stats.rx_dropped_stranger += 1;
                            } else {
                                self.stats.rx_dropped_over_rate += 1;
                            }
                            self.pool.put_back(id);
                            continue;
                        }
                    }
                }
                _ => None,
            };
            accepted += usize::from(self.pool.deliver(id, packet, out, &mut self.stats));
        }
        self.scratch.frames.clear();
        Ok(accepted)
    }
}

impl PacketIo for UdpIo {
    // release, alloc, capacity, set_len, payload, payload_mut, with_payloads_mut and stats:
    // the frame pool's, written once in `pool`.
    crate::pool::packet_io_pool_methods!();

    fn recv(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, IoError> {
        let n = self.recv_once(out, max)?;
        if n > 0
            || timeout.is_zero()
            || self.pool.free_frames() == 0
            || !self.wait_readable(timeout)?
        {
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
            if self.pool.payload_range(&batch[0]).is_none() {
                let packet = batch.remove(0);
                if self.pool.release(packet, &mut self.stats) {
                    self.stats.tx_dropped_invalid += 1;
                }
                continue;
            }
            let mut n = 0;
            let base = self.pool.base_ptr_for_syscall();
            while n < batch.len().min(MAX_BATCH) {
                let Some(range) = self.pool.payload_range(&batch[n]) else {
                    break;
                };
                self.scratch.iovecs[n] = libc::iovec {
                    iov_base: base.wrapping_add(range.start).cast(),
                    iov_len: range.len(),
                };
                namelens[n] = std_to_sockaddr(&batch[n].peer, &mut self.scratch.names[n]);
                n += 1;
            }
            self.link_headers(n, Some(&namelens[..n]));
            // SAFETY: each of the first `n` headers points at one iovec filled above with the
            // payload of a packet of this backend: `FramePool::payload_range` returned its
            // range only after checking that the packet is `self.pool`'s and that the range
            // lies inside the pool's buffer, and the kernel only reads it. `base` came from
            // `base_ptr_for_syscall`, which makes no reference to the bytes, and since then
            // only `payload_range` (reads no bytes), `std_to_sockaddr` (the scratch names) and
            // `link_headers` (the scratch arrays) ran, so `base` is still valid. The headers
            // also point at the packets' addresses in `self.scratch.names`. All of it is owned
            // by `self`, exclusively borrowed here, so nothing changes it during the call.
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
                        self.pool.release(packet, &mut self.stats);
                        continue;
                    }
                }
            }
            let sent = rc as usize;
            for packet in batch.drain(..sent) {
                self.pool.release(packet, &mut self.stats);
            }
            self.stats.tx_packets += sent as u64;
            sent_total += sent;
            if sent < n {
                break;
            }
        }
        Ok(sent_total)
    }

    fn poll_completions(&mut self) -> Result<usize, IoError> {
        Ok(0)
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn set_sources(&mut self, filter: &SourceFilter) {
        self.gate.set_filter(filter);
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
        let mut firsts = [
            crate::first_bytes(&a, &got_a),
            crate::first_bytes(&b, &got_b),
        ]
        .concat();
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
        assert_eq!(b.pool.free_frames(), 4096);
    }

    /// A packet handed to `send` of a backend that does not own its frame never reaches the
    /// system call: it is taken from the batch, counted, and its frame is not adopted. (The
    /// pool's own refusals are tested in `pool`.)
    #[test]
    fn send_refuses_foreign_packets() {
        let config = UdpConfig::new("127.0.0.1:0".parse().unwrap());
        let mut a = UdpIo::open(&config).unwrap();
        let mut b = UdpIo::open(&config).unwrap();
        let mut p = a.alloc(b.local_addr()).unwrap();
        a.set_len(&mut p, 100);
        let free_before = b.pool.free_frames();
        let mut batch = vec![p];
        assert_eq!(b.send(&mut batch).unwrap(), 0);
        assert!(batch.is_empty());
        assert_eq!(
            b.pool.free_frames(),
            free_before,
            "b must not adopt a's frame"
        );
        assert_eq!(b.stats().foreign_packets, 1);
        assert_eq!((b.stats().tx_packets, b.stats().tx_dropped_invalid), (0, 0));
    }
}
