//! The gateway's mio driver: accepts TCP connections, moves bytes between sockets and one
//! [`ServerCore`] per connection, and keeps the counters.

use std::{
    collections::{HashMap, VecDeque},
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr},
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
};
use pb_transport::{CarrierError, Listener, Peer, Record, TransportKind, tls::TlsIdentity};

use crate::{ALPN, ServerCore, ServerEvent, ServerShared, WallClock, WssServerConfig};

const LISTENER: Token = Token(usize::MAX);
/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Room kept in the inbox before reading more: the most records one read can complete.
const INBOX_HEADROOM: usize = READ_CHUNK / pb_transport::RECORD_LEN + 1;

/// One accepted TCP connection.
struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    core: ServerCore,
    /// The sending side is shut.
    fin_sent: bool,
    /// The peer's end of stream was read.
    eof: bool,
    /// Reading stopped with bytes maybe waiting, because the inbox was full.
    read_pending: bool,
    /// Reading stopped because too much is queued for this socket.
    tx_full: bool,
    /// It upgraded: its going away is reported by `poll_closed` (unless the link closed it).
    report_close: bool,
}

/// The listener's counters, one list.
#[derive(Debug, Default)]
struct Stats {
    bytes_received: u64,
    bytes_sent: u64,
    records_received: u64,
    records_sent: u64,
    connections_accepted: u64,
    connections_refused: u64,
    accept_errors: u64,
    pages_served: u64,
    not_found: u64,
    not_allowed: u64,
    bad_requests: u64,
    tls_failures: u64,
    timeouts: u64,
    links_opened: u64,
    links_closed: u64,
    bad_messages: u64,
    inbox_full: u64,
    outbox_full: u64,
}

/// A gateway's WSS listener: a web server whose secret path is a WebSocket of records.
pub struct WssListener {
    poll: Poll,
    events: Events,
    listener: TcpListener,
    local: SocketAddr,
    shared: Arc<ServerShared>,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    inbox: VecDeque<(Peer, Record)>,
    closed: VecDeque<Peer>,
    stats: Stats,
    next_deadline: Option<Instant>,
}

impl core::fmt::Debug for WssListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WssListener")
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

fn token(id: u64) -> Token {
    // Ids count up from 0 and a gateway does not accept 2^63 connections.
    Token(usize::try_from(id).unwrap_or(usize::MAX - 1))
}

impl WssListener {
    /// Binds `addr` and serves `identity`'s certificate.
    pub fn bind(
        addr: SocketAddr,
        identity: &TlsIdentity,
        config: WssServerConfig,
    ) -> Result<Self, CarrierError> {
        let tls = identity
            .server_config(&[ALPN])
            .map_err(|e| CarrierError::io("TLS configuration", std::io::Error::other(e)))?;
        Self::bind_with(addr, tls, config)
    }

    /// Binds `addr` with a TLS configuration of the caller's.
    pub fn bind_with(
        addr: SocketAddr,
        tls: rustls::ServerConfig,
        config: WssServerConfig,
    ) -> Result<Self, CarrierError> {
        let mut listener = TcpListener::bind(addr).map_err(|e| CarrierError::io("binding", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| CarrierError::io("reading the bound address", e))?;
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| CarrierError::io("registering", e))?;
        let clock = WallClock::new(Instant::now(), SystemTime::now());
        Ok(Self {
            poll,
            events: Events::with_capacity(256),
            listener,
            local,
            shared: Arc::new(ServerShared::new(tls, config, clock)),
            conns: HashMap::new(),
            next_id: 0,
            inbox: VecDeque::new(),
            closed: VecDeque::new(),
            stats: Stats::default(),
            next_deadline: None,
        })
    }

    fn accept(&mut self, now: Instant) -> Vec<u64> {
        let mut accepted = Vec::new();
        loop {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // Out of descriptors or an aborted handshake: about one connection, not us.
                Err(_) => {
                    self.stats.accept_errors += 1;
                    break;
                }
            };
            if self.conns.len() >= self.shared.config().limits.max_connections {
                self.stats.connections_refused += 1;
                continue;
            }
            let id = self.next_id;
            let Ok(core) = ServerCore::new(self.shared.clone(), now) else {
                self.stats.accept_errors += 1;
                continue;
            };
            let interest = Interest::READABLE | Interest::WRITABLE;
            if self
                .poll
                .registry()
                .register(&mut stream, token(id), interest)
                .is_err()
            {
                self.stats.accept_errors += 1;
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.next_id += 1;
            self.stats.connections_accepted += 1;
            self.conns.insert(
                id,
                Conn {
                    stream,
                    addr,
                    core,
                    fin_sent: false,
                    eof: false,
                    read_pending: false,
                    tx_full: false,
                    report_close: false,
                },
            );
            accepted.push(id);
        }
        accepted
    }

    /// Reads, writes and reaps one connection.
    fn service(&mut self, id: u64, now: Instant, read: bool) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let limits = &self.shared.config().limits;
        let (max_inbox, max_tx) = (limits.max_inbox, limits.max_tx_bytes);
        // Out first: a writable event may be what lets reading resume.
        let mut broken = flush(&mut conn.stream, &mut conn.core, &mut self.stats.bytes_sent);
        if (read || conn.read_pending || conn.tx_full) && !conn.eof && !broken {
            conn.read_pending = false;
            conn.tx_full = false;
            let mut buf = [0u8; READ_CHUNK];
            loop {
                // Backpressure: leave the bytes in the socket until the link takes records
                // (then `next_deadline` asks for a drive at once) ...
                if self.inbox.len() + INBOX_HEADROOM > max_inbox {
                    conn.read_pending = true;
                    break;
                }
                // ... or until the peer reads what it made us queue (pongs, pages): the
                // writable event resumes reading.
                if conn.core.transmit().len() > max_tx {
                    conn.tx_full = true;
                    break;
                }
                match conn.stream.read(&mut buf) {
                    Ok(0) => {
                        conn.eof = true;
                        conn.core.handle_eof(now);
                        break;
                    }
                    Ok(n) => {
                        self.stats.bytes_received += n as u64;
                        conn.core.handle_input(now, &buf[..n]);
                        move_records(
                            &mut conn.core,
                            &mut self.inbox,
                            &mut self.stats,
                            id,
                            max_inbox,
                        );
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if conn.core.next_deadline() <= now {
            conn.core.handle_timeout(now);
        }
        broken = broken || flush(&mut conn.stream, &mut conn.core, &mut self.stats.bytes_sent);
        if !broken && conn.core.is_closing() && conn.core.transmit().is_empty() && !conn.fin_sent {
            conn.fin_sent = true;
            let _ = conn.stream.shutdown(Shutdown::Write);
        }
        while let Some(event) = conn.core.poll_event() {
            let s = &mut self.stats;
            match event {
                ServerEvent::PageServed => s.pages_served += 1,
                ServerEvent::NotFound => s.not_found += 1,
                ServerEvent::NotAllowed => s.not_allowed += 1,
                ServerEvent::BadRequest => s.bad_requests += 1,
                ServerEvent::Upgraded => {
                    s.links_opened += 1;
                    conn.report_close = true;
                }
                ServerEvent::BadMessage => s.bad_messages += 1,
                ServerEvent::TlsFailed => s.tls_failures += 1,
                ServerEvent::TimedOut => s.timeouts += 1,
                ServerEvent::PeerClosed => {}
            }
        }
        if broken || conn.core.is_dead() || (conn.fin_sent && conn.eof) {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if conn.report_close {
                self.stats.links_closed += 1;
                self.closed.push_back(Peer(id));
            }
        }
    }
}

/// Moves the records `core` received to the listener's inbox.
fn move_records(
    core: &mut ServerCore,
    inbox: &mut VecDeque<(Peer, Record)>,
    stats: &mut Stats,
    id: u64,
    max_inbox: usize,
) {
    while let Some(record) = core.poll_record() {
        if inbox.len() >= max_inbox {
            stats.inbox_full += 1;
        } else {
            stats.records_received += 1;
            inbox.push_back((Peer(id), record));
        }
    }
}

/// Writes what `core` has for the socket; whether the socket broke.
fn flush(stream: &mut TcpStream, core: &mut ServerCore, sent: &mut u64) -> bool {
    while !core.transmit().is_empty() {
        match stream.write(core.transmit()) {
            Ok(0) => return true,
            Ok(n) => {
                *sent += n as u64;
                core.advance_transmit(n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

impl AsRawFd for WssListener {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl Listener for WssListener {
    fn kind(&self) -> TransportKind {
        TransportKind::Wss
    }

    fn drive(&mut self, now: Instant) -> Result<(), CarrierError> {
        self.poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .map_err(|e| CarrierError::io("polling", e))?;
        let mut ready: Vec<(u64, bool)> = Vec::new();
        let mut accept = false;
        for event in self.events.iter() {
            if event.token() == LISTENER {
                accept = true;
            } else {
                ready.push((
                    event.token().0 as u64,
                    event.is_readable() || event.is_read_closed(),
                ));
            }
        }
        if accept {
            ready.extend(self.accept(now).into_iter().map(|id| (id, true)));
        }
        for (id, read) in ready {
            self.service(id, now, read);
        }
        let due: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.core.next_deadline() <= now || c.read_pending)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.service(id, now, false);
        }
        // A connection left unread for backpressure has no event coming: drive again soon.
        self.next_deadline = self
            .conns
            .values()
            .map(|c| {
                if c.read_pending {
                    now
                } else {
                    c.core.next_deadline()
                }
            })
            .min();
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.next_deadline
    }

    fn recv(&mut self) -> Option<(Peer, Record)> {
        self.inbox.pop_front()
    }

    fn send(&mut self, peer: Peer, record: &Record) -> bool {
        let Some(conn) = self.conns.get_mut(&peer.0) else {
            return false;
        };
        if !conn.core.is_websocket() {
            return false;
        }
        if !conn.core.send_record(record, Instant::now()) {
            self.stats.outbox_full += 1;
            return false;
        }
        self.stats.records_sent += 1;
        // Shaped bytes held for the next record have a deadline of their own.
        let due = conn.core.next_deadline();
        self.next_deadline = Some(self.next_deadline.map_or(due, |d| d.min(due)));
        // Straight out when the socket takes it: the link above times its records.
        if flush(&mut conn.stream, &mut conn.core, &mut self.stats.bytes_sent) {
            self.remove(peer.0);
        }
        true
    }

    fn close(&mut self, peer: Peer) {
        let Some(conn) = self.conns.get_mut(&peer.0) else {
            return;
        };
        conn.report_close = false;
        conn.core.close(Instant::now());
        self.service(peer.0, Instant::now(), false);
    }

    fn poll_closed(&mut self) -> Option<Peer> {
        self.closed.pop_front()
    }

    fn source(&self, peer: Peer) -> Option<SocketAddr> {
        self.conns
            .get(&peer.0)
            .filter(|c| c.core.is_websocket())
            .map(|c| c.addr)
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        let peers = self
            .conns
            .values()
            .filter(|c| c.core.is_websocket())
            .count();
        vec![
            ("bytes_received", s.bytes_received),
            ("bytes_sent", s.bytes_sent),
            ("records_received", s.records_received),
            ("records_sent", s.records_sent),
            ("connections_accepted", s.connections_accepted),
            ("connections_refused", s.connections_refused),
            ("accept_errors", s.accept_errors),
            ("pages_served", s.pages_served),
            ("not_found", s.not_found),
            ("not_allowed", s.not_allowed),
            ("bad_requests", s.bad_requests),
            ("tls_failures", s.tls_failures),
            ("timeouts", s.timeouts),
            ("links_opened", s.links_opened),
            ("links_closed", s.links_closed),
            ("bad_messages", s.bad_messages),
            ("inbox_full", s.inbox_full),
            ("outbox_full", s.outbox_full),
            ("connections", self.conns.len() as u64),
            ("peers", peers as u64),
        ]
    }
}
