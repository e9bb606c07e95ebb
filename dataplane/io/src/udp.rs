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
    os::fd::AsRawFd,
    time::Duration,
};

use crate::{FrameId, IoError, IoStats, Packet, PacketIo};

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
}

impl UdpConfig {
    /// Defaults for `bind`: the default packet length, 4096 frames, 4 MiB socket buffers.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            packet_len: crate::DEFAULT_PACKET_LEN,
            frame_count: 4096,
            socket_buffer: 4 << 20,
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
    socket: UdpSocket,
    pool: Vec<u8>,
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
        let socket = UdpSocket::bind(config.bind).map_err(sys("bind"))?;
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
            pool: vec![0; frames as usize * FRAME_SIZE],
            free: (0..frames).rev().map(FrameId).collect(),
            scratch,
            packet_len: usize::from(config.packet_len),
            local,
            stats: IoStats::default(),
        })
    }

    fn frame_ptr(&mut self, id: FrameId) -> *mut u8 {
        self.pool[id.0 as usize * FRAME_SIZE..][..FRAME_SIZE].as_mut_ptr()
    }

    fn wait_readable(&self, timeout: Duration) -> Result<bool, IoError> {
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        // SAFETY: `pfd` is a valid pollfd for the duration of the call; count is 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(IoError::Sys {
                call: "poll",
                source: e,
            });
        }
        Ok(rc > 0)
    }

    fn recv_once(&mut self, out: &mut Vec<Packet>, max: usize) -> Result<usize, IoError> {
        let n = max.min(MAX_BATCH).min(self.free.len());
        if n == 0 {
            self.stats.alloc_failures += 1;
            return Ok(0);
        }
        self.scratch.frames.clear();
        for i in 0..n {
            let Some(id) = self.free.pop() else { break };
            self.scratch.frames.push(id);
            let base = self.frame_ptr(id);
            self.scratch.iovecs[i] = libc::iovec {
                iov_base: base.cast(),
                iov_len: FRAME_SIZE,
            };
            let name: *mut libc::sockaddr_storage = &mut self.scratch.names[i];
            let iov: *mut libc::iovec = &mut self.scratch.iovecs[i];
            let h = &mut self.scratch.headers[i];
            h.msg_hdr.msg_name = name.cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `n` headers point at `n` distinct free frames of `self.pool`
        // (FRAME_SIZE bytes each) and at `n` sockaddr_storage slots, all owned by `self` and
        // not otherwise borrowed during the call.
        let rc = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                self.scratch.headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let got = if rc < 0 {
            let e = io::Error::last_os_error();
            self.free.append(&mut self.scratch.frames);
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(IoError::Sys {
                    call: "recvmmsg",
                    source: e,
                }),
            };
        } else {
            rc as usize
        };
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
            let peer = sockaddr_to_std(&self.scratch.names[i]);
            match peer {
                Some(peer) if len == self.packet_len && !truncated => {
                    out.push(Packet {
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
        if n > 0 || timeout.is_zero() || !self.wait_readable(timeout)? {
            return Ok(n);
        }
        self.recv_once(out, max)
    }

    fn send(&mut self, batch: &mut Vec<Packet>) -> Result<usize, IoError> {
        let mut sent_total = 0;
        while !batch.is_empty() {
            let n = batch.len().min(MAX_BATCH);
            for (i, packet) in batch[..n].iter().enumerate() {
                let base = self.pool[packet.frame.0 as usize * FRAME_SIZE..]
                    [usize::from(packet.offset)..]
                    .as_mut_ptr();
                self.scratch.iovecs[i] = libc::iovec {
                    iov_base: base.cast(),
                    iov_len: usize::from(packet.len),
                };
                let namelen = std_to_sockaddr(&packet.peer, &mut self.scratch.names[i]);
                let name: *mut libc::sockaddr_storage = &mut self.scratch.names[i];
                let iov: *mut libc::iovec = &mut self.scratch.iovecs[i];
                let h = &mut self.scratch.headers[i];
                h.msg_hdr.msg_name = name.cast();
                h.msg_hdr.msg_namelen = namelen;
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
                h.msg_hdr.msg_flags = 0;
            }
            // SAFETY: the first `n` headers point at the payloads of `n` packets in
            // `self.pool` (bounds checked by the slicing above) and at their addresses, all
            // owned by `self` and unchanged during the call.
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
                        let mut dropped: Vec<Packet> = batch.drain(..1).collect();
                        self.release(&mut dropped);
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
        self.free.extend(packets.drain(..).map(|p| p.frame));
    }

    fn alloc(&mut self, peer: SocketAddr) -> Option<Packet> {
        match self.free.pop() {
            Some(frame) => Some(Packet {
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

    fn set_len(&self, packet: &mut Packet, len: usize) {
        packet.len = len.min(FRAME_SIZE) as u16;
    }

    fn payload(&self, packet: &Packet) -> &[u8] {
        let start = packet.frame.0 as usize * FRAME_SIZE + usize::from(packet.offset);
        self.pool
            .get(start..start + usize::from(packet.len))
            .unwrap_or(&[])
    }

    fn payload_mut(&mut self, packet: &Packet) -> &mut [u8] {
        let start = packet.frame.0 as usize * FRAME_SIZE + usize::from(packet.offset);
        let end = start + usize::from(packet.len);
        match self.pool.get_mut(start..end) {
            Some(s) => s,
            None => &mut [],
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
}
