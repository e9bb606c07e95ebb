//! Plain UDP: each record is one datagram of [`RECORD_LEN`] bytes. The disguise of last
//! resort (it hides nothing about being a PhantomBand link but the link's own contents), and
//! the reference the other transports are measured against.

use std::{
    collections::{HashMap, VecDeque},
    io::ErrorKind,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    time::Instant,
};

use mio::{Events, Interest, Poll, Token, net::UdpSocket};

use crate::{CarrierError, ClientCarrier, Listener, Peer, RECORD_LEN, Record, TransportKind};

const SOCKET: Token = Token(0);
/// Records held for sending when the socket's buffer is full, at most.
const BACKLOG: usize = 256;
/// Peers a listener keeps apart at most: past that, the one heard from longest ago goes.
const MAX_PEERS: usize = 65536;

/// Reads every datagram waiting; passes each of the right size on, counts the others.
fn drain(socket: &UdpSocket, mut each: impl FnMut(SocketAddr, &Record), wrong_size: &mut u64) {
    let mut buf = [0u8; RECORD_LEN + 1];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => match <&Record>::try_from(&buf[..n]) {
                Ok(record) => each(from, record),
                Err(_) => *wrong_size += 1,
            },
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            // An ICMP error from an earlier send (port unreachable) surfaces here: it says
            // nothing about the datagrams still queued.
            Err(_) => {}
        }
    }
}

fn poll_once(poll: &mut Poll, events: &mut Events) -> Result<(), CarrierError> {
    poll.poll(events, Some(std::time::Duration::ZERO))
        .map_err(|e| CarrierError::io("polling", e))
}

/// A client's UDP link to its gateway.
pub struct UdpCarrier {
    poll: Poll,
    events: Events,
    socket: UdpSocket,
    gateway: SocketAddr,
    inbox: VecDeque<Record>,
    outbox: VecDeque<Record>,
    sent: u64,
    received: u64,
    wrong_size: u64,
}

impl core::fmt::Debug for UdpCarrier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UdpCarrier").finish_non_exhaustive()
    }
}

impl UdpCarrier {
    /// A socket for talking to `gateway` (from an ephemeral port of the matching family).
    pub fn connect(gateway: SocketAddr) -> Result<Self, CarrierError> {
        let bind: SocketAddr = if gateway.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut socket = UdpSocket::bind(bind).map_err(|e| CarrierError::io("binding", e))?;
        socket
            .connect(gateway)
            .map_err(|e| CarrierError::io("connecting", e))?;
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(|e| CarrierError::io("registering", e))?;
        Ok(Self {
            poll,
            events: Events::with_capacity(8),
            socket,
            gateway,
            inbox: VecDeque::new(),
            outbox: VecDeque::new(),
            sent: 0,
            received: 0,
            wrong_size: 0,
        })
    }
}

impl AsRawFd for UdpCarrier {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl ClientCarrier for UdpCarrier {
    fn kind(&self) -> TransportKind {
        TransportKind::Udp
    }

    fn drive(&mut self, _now: Instant) -> Result<(), CarrierError> {
        poll_once(&mut self.poll, &mut self.events)?;
        let (gateway, inbox, received) = (self.gateway, &mut self.inbox, &mut self.received);
        drain(
            &self.socket,
            |from, record| {
                if from == gateway && inbox.len() < BACKLOG {
                    inbox.push_back(*record);
                    *received += 1;
                }
            },
            &mut self.wrong_size,
        );
        while let Some(record) = self.outbox.front() {
            match self.socket.send(record) {
                Ok(_) => {
                    self.sent += 1;
                    self.outbox.pop_front();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Unreachable for now (ICMP): like a lost datagram.
                Err(_) => {
                    self.outbox.pop_front();
                }
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn is_open(&self) -> bool {
        true
    }

    fn send(&mut self, record: &Record) -> bool {
        if self.outbox.len() >= BACKLOG {
            return false;
        }
        self.outbox.push_back(*record);
        // Straight out when the socket takes it: a record's time is the link's to choose.
        let _ = self.drive(Instant::now());
        true
    }

    fn recv(&mut self) -> Option<Record> {
        self.inbox.pop_front()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let bytes = |n: u64| n * RECORD_LEN as u64;
        vec![
            ("records_sent", self.sent),
            ("records_received", self.received),
            ("bytes_sent", bytes(self.sent)),
            ("bytes_received", bytes(self.received)),
            ("wrong_size", self.wrong_size),
        ]
    }
}

/// A gateway's UDP listener: a peer is a source address.
pub struct UdpListener {
    poll: Poll,
    events: Events,
    socket: UdpSocket,
    local: SocketAddr,
    by_addr: HashMap<SocketAddr, (Peer, u64)>,
    by_peer: HashMap<Peer, SocketAddr>,
    next_peer: u64,
    /// A counter of arrivals, to find the peer heard from longest ago.
    clock: u64,
    inbox: VecDeque<(Peer, Record)>,
    outbox: VecDeque<(SocketAddr, Record)>,
    closed: VecDeque<Peer>,
    stats: UdpListenerStats,
}

#[derive(Debug, Default)]
struct UdpListenerStats {
    received: u64,
    sent: u64,
    wrong_size: u64,
    inbox_full: u64,
    outbox_full: u64,
    evicted: u64,
}

impl core::fmt::Debug for UdpListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UdpListener")
            .field("local", &self.local)
            .field("peers", &self.by_peer.len())
            .finish_non_exhaustive()
    }
}

impl UdpListener {
    /// Binds `addr`.
    pub fn bind(addr: SocketAddr) -> Result<Self, CarrierError> {
        let mut socket = UdpSocket::bind(addr).map_err(|e| CarrierError::io("binding", e))?;
        let local = socket
            .local_addr()
            .map_err(|e| CarrierError::io("reading the bound address", e))?;
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(|e| CarrierError::io("registering", e))?;
        Ok(Self {
            poll,
            events: Events::with_capacity(8),
            socket,
            local,
            by_addr: HashMap::new(),
            by_peer: HashMap::new(),
            next_peer: 0,
            clock: 0,
            inbox: VecDeque::new(),
            outbox: VecDeque::new(),
            closed: VecDeque::new(),
            stats: UdpListenerStats::default(),
        })
    }

    fn peer_of(&mut self, from: SocketAddr) -> Peer {
        self.clock += 1;
        if let Some((peer, heard)) = self.by_addr.get_mut(&from) {
            *heard = self.clock;
            return *peer;
        }
        if self.by_addr.len() >= MAX_PEERS {
            let oldest = self
                .by_addr
                .iter()
                .min_by_key(|(_, (_, heard))| *heard)
                .map(|(a, (p, _))| (*a, *p));
            if let Some((addr, peer)) = oldest {
                self.by_addr.remove(&addr);
                self.by_peer.remove(&peer);
                self.closed.push_back(peer);
                self.stats.evicted += 1;
            }
        }
        let peer = Peer(self.next_peer);
        self.next_peer += 1;
        self.by_addr.insert(from, (peer, self.clock));
        self.by_peer.insert(peer, from);
        peer
    }
}

impl AsRawFd for UdpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl Listener for UdpListener {
    fn kind(&self) -> TransportKind {
        TransportKind::Udp
    }

    fn drive(&mut self, _now: Instant) -> Result<(), CarrierError> {
        poll_once(&mut self.poll, &mut self.events)?;
        let mut arrived = Vec::new();
        drain(
            &self.socket,
            |from, record| arrived.push((from, Box::new(*record))),
            &mut self.stats.wrong_size,
        );
        for (from, record) in arrived {
            if self.inbox.len() >= 4 * BACKLOG {
                self.stats.inbox_full += 1;
                continue;
            }
            let peer = self.peer_of(from);
            self.inbox.push_back((peer, *record));
            self.stats.received += 1;
        }
        while let Some((to, record)) = self.outbox.front() {
            match self.socket.send_to(record, *to) {
                Ok(_) => {
                    self.stats.sent += 1;
                    self.outbox.pop_front();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.outbox.pop_front();
                }
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn recv(&mut self) -> Option<(Peer, Record)> {
        self.inbox.pop_front()
    }

    fn send(&mut self, peer: Peer, record: &Record) -> bool {
        let Some(&to) = self.by_peer.get(&peer) else {
            return false;
        };
        if self.outbox.len() >= 4 * BACKLOG {
            self.stats.outbox_full += 1;
            return false;
        }
        // Straight out when the socket takes it: the link above times its records.
        match self.socket.send_to(record, to) {
            Ok(_) => self.stats.sent += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => self.outbox.push_back((to, *record)),
            Err(_) => {}
        }
        true
    }

    fn close(&mut self, peer: Peer) {
        if let Some(addr) = self.by_peer.remove(&peer) {
            self.by_addr.remove(&addr);
        }
    }

    fn poll_closed(&mut self) -> Option<Peer> {
        self.closed.pop_front()
    }

    fn source(&self, peer: Peer) -> Option<SocketAddr> {
        self.by_peer.get(&peer).copied()
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("records_received", s.received),
            ("records_sent", s.sent),
            ("wrong_size", s.wrong_size),
            ("inbox_full", s.inbox_full),
            ("outbox_full", s.outbox_full),
            ("peers_evicted", s.evicted),
            ("peers", self.by_peer.len() as u64),
        ]
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// Drives both ends until `done` holds (a bounded number of turns: loopback delivers
    /// within a few).
    fn until(
        client: &mut UdpCarrier,
        gateway: &mut UdpListener,
        mut done: impl FnMut(&mut UdpCarrier, &mut UdpListener) -> bool,
    ) -> bool {
        for _ in 0..2000 {
            client.drive(Instant::now()).unwrap();
            gateway.drive(Instant::now()).unwrap();
            if done(client, gateway) {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn records_cross_both_ways_and_peers_are_told_apart() {
        let mut gateway = UdpListener::bind(([127, 0, 0, 1], 0).into()).unwrap();
        let mut a = UdpCarrier::connect(gateway.local_addr()).unwrap();
        let mut b = UdpCarrier::connect(gateway.local_addr()).unwrap();
        assert!(a.send(&[1; RECORD_LEN]) && b.send(&[2; RECORD_LEN]));
        let mut got = Vec::new();
        assert!(until(&mut a, &mut gateway, |_, g| {
            got.extend(std::iter::from_fn(|| g.recv()));
            got.len() == 2
        }));
        b.drive(Instant::now()).unwrap();
        let peer_a = got.iter().find(|(_, r)| r[0] == 1).unwrap().0;
        let peer_b = got.iter().find(|(_, r)| r[0] == 2).unwrap().0;
        assert_ne!(peer_a, peer_b);
        assert_eq!(gateway.source(peer_a), Some(a.socket.local_addr().unwrap()));
        assert!(gateway.send(peer_a, &[3; RECORD_LEN]));
        assert!(until(&mut a, &mut gateway, |c, _| c
            .recv()
            .is_some_and(|r| r[0] == 3)));
        gateway.close(peer_a);
        assert!(
            !gateway.send(peer_a, &[4; RECORD_LEN]),
            "a closed peer takes nothing"
        );
    }

    #[test]
    fn a_datagram_of_another_size_is_counted_and_dropped() {
        let mut gateway = UdpListener::bind(([127, 0, 0, 1], 0).into()).unwrap();
        let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(&[0; 100], gateway.local_addr()).unwrap();
        stranger
            .send_to(&[0; RECORD_LEN + 1], gateway.local_addr())
            .unwrap();
        let mut c = UdpCarrier::connect(gateway.local_addr()).unwrap();
        assert!(until(&mut c, &mut gateway, |_, g| {
            g.counters().contains(&("wrong_size", 2))
        }));
        assert!(gateway.recv().is_none());
    }
}
