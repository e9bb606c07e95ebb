//! The gateway's name server on a UDP socket: [`DnsListener`], the [`Listener`] of the DNS
//! link, serving [`Authority`] on port 53 to the resolvers that forward its zone.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use mio::net::UdpSocket;
use pb_transport::{CarrierError, Listener, Peer, Record, TransportKind};

use crate::authority::Authority;
use crate::name::{SessionKey, Zone};

/// Answers waiting for the socket: more are dropped (the resolver asks again).
const OUTBOX: usize = 4096;
/// Queries answered per `drive` before the caller gets its turn back.
const PER_TURN: usize = 1024;

/// A gateway's authoritative name server carrying DNS links.
pub struct DnsListener {
    socket: UdpSocket,
    authority: Authority,
    buf: Box<[u8; 65_536]>,
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    bytes_sent: u64,
    bytes_received: u64,
    outbox_full: u64,
}

impl core::fmt::Debug for DnsListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DnsListener").finish_non_exhaustive()
    }
}

impl DnsListener {
    /// A name server for `zone` on UDP `addr`, its sessions' ids tagged under `key`.
    pub fn bind(addr: SocketAddr, zone: Zone, key: SessionKey) -> Result<Self, CarrierError> {
        let socket = UdpSocket::bind(addr).map_err(|e| CarrierError::io("binding", e))?;
        Ok(Self {
            socket,
            authority: if addr.ip().is_unspecified() {
                Authority::new(zone, key)
            } else {
                Authority::new(zone, key).with_ns_address(addr.ip())
            },
            buf: Box::new([0; 65_536]),
            outbox: VecDeque::new(),
            bytes_sent: 0,
            bytes_received: 0,
            outbox_full: 0,
        })
    }

    fn flush(&mut self) {
        while let Some((to, bytes)) = self.outbox.front() {
            match self.socket.send_to(bytes, *to) {
                Ok(n) => {
                    self.bytes_sent += n as u64;
                    self.outbox.pop_front();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP from an earlier send, a route gone: like a lost answer.
                Err(_) => {
                    self.outbox.pop_front();
                }
            }
        }
    }
}

impl AsRawFd for DnsListener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Listener for DnsListener {
    fn kind(&self) -> TransportKind {
        TransportKind::Doh
    }

    fn drive(&mut self, now: Instant) -> Result<(), CarrierError> {
        self.flush();
        for _ in 0..PER_TURN {
            let (n, from) = match self.socket.recv_from(&mut self.buf[..]) {
                Ok(got) => got,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors of earlier sends surface here: not the socket's failure.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(CarrierError::io("receiving", e)),
            };
            self.bytes_received += n as u64;
            let Some(answer) = self.authority.answer(&self.buf[..n], now) else {
                continue;
            };
            if self.outbox.len() >= OUTBOX {
                self.outbox_full += 1;
                continue;
            }
            self.outbox.push_back((from, answer));
            self.flush();
        }
        self.authority.expire(now);
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.authority.next_expiry()
    }

    fn recv(&mut self) -> Option<(Peer, Record)> {
        self.authority.recv()
    }

    fn send(&mut self, peer: Peer, record: &Record) -> bool {
        self.authority.send(peer, record)
    }

    fn close(&mut self, peer: Peer) {
        self.authority.close(peer);
    }

    fn poll_closed(&mut self) -> Option<Peer> {
        self.authority.poll_closed()
    }

    fn source(&self, peer: Peer) -> Option<SocketAddr> {
        self.authority.source(peer)
    }

    fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.authority.counters();
        vec![
            ("session_queries", c.session_queries),
            ("other_queries", c.other_queries),
            ("malformed", c.malformed),
            ("peers_opened", c.sessions_opened),
            ("peers_closed", c.sessions_closed),
            ("refused", c.refused),
            ("records_lost", c.lost),
            ("outbox_full", self.outbox_full),
            ("bytes_sent", self.bytes_sent),
            ("bytes_received", self.bytes_received),
        ]
    }
}
