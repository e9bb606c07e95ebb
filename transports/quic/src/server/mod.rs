//! [`QuicListener`]: the gateway's QUIC endpoint, an HTTP/3 web server (quiche and its `h3`
//! module over a mio UDP socket) in which a `POST` to the secret path is a link. The cover
//! answers come from [`crate::site`], the record framing from [`crate::records`]; this module
//! routes datagrams to connections and events to streams.

use std::{
    collections::{HashMap, VecDeque},
    io::ErrorKind,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant, SystemTime},
};

use mio::{Events, Interest, Poll, Token, net::UdpSocket};
use pb_transport::{
    CarrierError, Listener, Peer, RECORD_LEN, Record, TransportKind, tls::TlsIdentity,
};
use quiche::h3::{self, NameValue as _};
use ring::rand::SecureRandom as _;

mod answer;

use answer::{Answering, Link, write_stream};

/// The quiche this listener is built on, for tests and tools that probe it with quiche's
/// own HTTP/3 client (a dev-dependency would be built for the client-only targets too).
#[doc(hidden)]
pub use quiche;

use crate::{
    ALPN, LinkPath,
    records::Reassembler,
    site::{self, Answer, Site},
};

const SOCKET: Token = Token(0);
/// HTTP/3's "no error": how a server stops reading a request body it does not need.
const H3_NO_ERROR: u64 = 0x100;
/// Largest UDP payload the gateway sends (fits any path with a 1400-byte MTU).
const MAX_SEND_PAYLOAD: usize = 1350;
/// Datagrams held when the socket's buffer is full, at most; past that they are dropped
/// (QUIC retransmits).
const MAX_BLOCKED: usize = 1024;

/// How the gateway's QUIC listener behaves, and its caps.
#[derive(Clone, Debug)]
pub struct QuicListenerConfig {
    /// The secret path of link requests.
    pub path: LinkPath,
    /// The page served at `/` ([`site::DEFAULT_INDEX`] unless the operator has one).
    pub index_html: Vec<u8>,
    /// The page's modification time (Unix seconds), for `last-modified` and `etag`.
    pub index_modified: u64,
    /// Closes a connection after this long without a packet.
    pub idle_timeout: Duration,
    /// Connections at most; a new client past this is not answered (counted).
    pub max_connections: usize,
    /// Link requests on one connection at most, over its life; more get the 404 page
    /// (counted).
    pub max_links_per_connection: usize,
    /// Records queued for one peer at most; `send` past this returns `false` (counted).
    pub max_queued_per_peer: usize,
    /// Records queued for all peers at most; `send` past this returns `false` (counted).
    pub max_queued_total: usize,
    /// Records received and not yet taken by `recv`, over all peers, at most. When it is
    /// full the listener stops reading request bodies (QUIC flow control holds the
    /// clients back); nothing is dropped.
    pub max_inbox: usize,
}

impl QuicListenerConfig {
    /// Defaults: the built-in page, 30 s idle timeout, 1024 connections, 2 links each,
    /// 256 records queued per peer and 8192 in all, 4096 records received in all.
    ///
    /// Memory at most, roughly: `max_connections` × 600 KiB (quiche's buffers, bounded by
    /// the flow-control windows the gateway grants: 512 KiB a connection) plus
    /// (`max_queued_total` + `max_inbox`) × 1452 bytes; about 620 MiB with these.
    pub fn new(path: LinkPath) -> Self {
        Self {
            path,
            index_html: site::DEFAULT_INDEX.as_bytes().to_vec(),
            index_modified: 1_714_387_200,
            idle_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_links_per_connection: 2,
            max_queued_per_peer: 256,
            max_queued_total: 8192,
            max_inbox: 4096,
        }
    }
}

struct Conn {
    quic: quiche::Connection,
    h3: Option<h3::Connection>,
    /// Where the connection's packets go now (quiche follows a migrating client).
    peer_addr: SocketAddr,
    cids: Vec<Vec<u8>>,
    streams: HashMap<u64, Answering>,
    links: usize,
}

#[derive(Debug, Default)]
struct Stats {
    bytes_received: u64,
    bytes_sent: u64,
    records_received: u64,
    records_sent: u64,
    pages_served: u64,
    not_found: u64,
    not_allowed: u64,
    links_opened: u64,
    links_refused: u64,
    connections_opened: u64,
    connections_refused: u64,
    bad_packets: u64,
    outbox_full: u64,
    datagrams_dropped: u64,
}

/// A gateway's QUIC listener: an HTTP/3 web server whose secret-path requests are links.
pub struct QuicListener {
    poll: Poll,
    events: Events,
    socket: UdpSocket,
    local: SocketAddr,
    quic_config: quiche::Config,
    h3_config: h3::Config,
    config: QuicListenerConfig,
    site: Site,
    rng: ring::rand::SystemRandom,
    conns: HashMap<u64, Conn>,
    by_cid: HashMap<Vec<u8>, u64>,
    next_conn: u64,
    peers: HashMap<Peer, (u64, u64)>,
    next_peer: u64,
    inbox: VecDeque<(Peer, Record)>,
    /// Records queued to all peers.
    queued: usize,
    closed: VecDeque<Peer>,
    blocked: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The receive buffer.
    buf: Vec<u8>,
    stats: Stats,
}

impl core::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QuicListener")
            .field("local", &self.local)
            .field("connections", &self.conns.len())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

fn quiche_config(
    identity: &TlsIdentity,
    config: &QuicListenerConfig,
) -> Result<quiche::Config, CarrierError> {
    use boring::{
        pkey::PKey,
        ssl::{SslContextBuilder, SslMethod},
        x509::X509,
    };
    let tls = |what: &str, e: &dyn core::fmt::Display| {
        CarrierError::Handshake(format!("loading the TLS identity ({what}): {e}"))
    };
    // The key goes to BoringSSL from memory: it never touches the disk.
    let mut ctx = SslContextBuilder::new(SslMethod::tls()).map_err(|e| tls("context", &e))?;
    let cert = X509::from_der(&identity.cert_der).map_err(|e| tls("certificate", &e))?;
    let key = PKey::private_key_from_pkcs8(identity.key_der()).map_err(|e| tls("key", &e))?;
    ctx.set_certificate(&cert)
        .map_err(|e| tls("certificate", &e))?;
    ctx.set_private_key(&key).map_err(|e| tls("key", &e))?;
    ctx.check_private_key().map_err(|e| tls("key", &e))?;
    let mut c = quiche::Config::with_boring_ssl_ctx_builder(quiche::PROTOCOL_VERSION, ctx)
        .map_err(|e| tls("quiche", &e))?;
    c.set_application_protos(&[ALPN])
        .map_err(|e| tls("ALPN", &e))?;
    c.set_max_idle_timeout(u64::try_from(config.idle_timeout.as_millis()).unwrap_or(u64::MAX));
    c.set_max_send_udp_payload_size(MAX_SEND_PAYLOAD);
    // Flow control bounds what one connection can make the gateway hold.
    c.set_initial_max_data(512 * 1024);
    c.set_initial_max_stream_data_bidi_remote(128 * 1024);
    c.set_initial_max_stream_data_bidi_local(128 * 1024);
    c.set_initial_max_stream_data_uni(64 * 1024);
    c.set_initial_max_streams_bidi(16);
    c.set_initial_max_streams_uni(8);
    Ok(c)
}

impl QuicListener {
    /// Binds `addr` and serves HTTP/3 there with `identity`'s certificate.
    pub fn bind(
        addr: SocketAddr,
        identity: &TlsIdentity,
        config: QuicListenerConfig,
    ) -> Result<Self, CarrierError> {
        let quic_config = quiche_config(identity, &config)?;
        let mut h3_config = h3::Config::new()
            .map_err(|e| CarrierError::Handshake(format!("HTTP/3 settings: {e}")))?;
        h3_config.set_max_field_section_size(16 * 1024);
        let mut socket = UdpSocket::bind(addr).map_err(|e| CarrierError::io("binding", e))?;
        let local = socket
            .local_addr()
            .map_err(|e| CarrierError::io("reading the bound address", e))?;
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| CarrierError::io("registering", e))?;
        let site = Site::new(config.index_html.clone(), config.index_modified);
        Ok(Self {
            poll,
            events: Events::with_capacity(8),
            socket,
            local,
            quic_config,
            h3_config,
            config,
            site,
            rng: ring::rand::SystemRandom::new(),
            conns: HashMap::new(),
            by_cid: HashMap::new(),
            next_conn: 0,
            peers: HashMap::new(),
            next_peer: 0,
            inbox: VecDeque::new(),
            queued: 0,
            closed: VecDeque::new(),
            blocked: VecDeque::new(),
            buf: vec![0; 65536],
            stats: Stats::default(),
        })
    }

    /// Reads every datagram waiting and hands each to its connection (or a new one).
    fn receive(&mut self) -> Vec<u64> {
        let mut touched = Vec::new();
        let mut buf = std::mem::take(&mut self.buf);
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => continue,
            };
            self.stats.bytes_received += n as u64;
            if let Some(key) = self.route(&mut buf[..n], from) {
                let info = quiche::RecvInfo {
                    from,
                    to: self.local,
                };
                if let Some(conn) = self.conns.get_mut(&key) {
                    // A packet quiche cannot use is dropped by it; the connection goes on.
                    if conn.quic.recv(&mut buf[..n], info).is_err() {
                        self.stats.bad_packets += 1;
                    }
                    touched.push(key);
                }
            }
        }
        self.buf = buf;
        touched.sort_unstable();
        touched.dedup();
        touched
    }

    /// The connection a datagram belongs to, accepting a new client's Initial.
    /// Version Negotiation as RFC 8999 and 9000 ask, and as other servers (ngtcp2) send it:
    /// for a long header of a version this server does not speak, in a datagram of at least
    /// 1200 bytes, whatever its packet type, with connection IDs of up to 255 bytes read by
    /// the invariants alone. Whether the datagram was such (and so is answered, or dropped).
    fn negotiated(&mut self, pkt: &[u8], from: SocketAddr) -> bool {
        let Some(&[first, v0, v1, v2, v3]) = pkt.first_chunk::<5>() else {
            return false;
        };
        let version = u32::from_be_bytes([v0, v1, v2, v3]);
        if first & 0x80 == 0 || version == 0 || quiche::version_is_supported(version) {
            return false;
        }
        if pkt.len() < 1200 {
            self.stats.bad_packets += 1;
            return true;
        }
        let cid = |at: usize| -> Option<(&[u8], usize)> {
            let len = usize::from(*pkt.get(at)?);
            Some((pkt.get(at + 1..at + 1 + len)?, at + 1 + len))
        };
        let Some((dcid, scid)) = cid(5).and_then(|(dcid, after)| Some((dcid, cid(after)?.0)))
        else {
            self.stats.bad_packets += 1;
            return true;
        };
        let mut out = [0u8; 600];
        if let Ok(n) = quiche::negotiate_version(
            &quiche::ConnectionId::from_ref(scid),
            &quiche::ConnectionId::from_ref(dcid),
            &mut out,
        ) {
            self.send_datagram(from, &out[..n]);
        }
        true
    }

    fn route(&mut self, pkt: &mut [u8], from: SocketAddr) -> Option<u64> {
        if self.negotiated(pkt, from) {
            return None;
        }
        let Ok(hdr) = quiche::Header::from_slice(pkt, quiche::MAX_CONN_ID_LEN) else {
            self.stats.bad_packets += 1;
            return None;
        };
        if let Some(key) = self.by_cid.get(hdr.dcid.as_ref()) {
            return Some(*key);
        }
        if hdr.ty != quiche::Type::Initial {
            self.stats.bad_packets += 1;
            return None;
        }
        if !quiche::version_is_supported(hdr.version) {
            // Answered by `negotiated` when the datagram is large enough; never otherwise.
            self.stats.bad_packets += 1;
            return None;
        }
        if self.conns.len() >= self.config.max_connections {
            self.stats.connections_refused += 1;
            return None;
        }
        let mut scid = [0u8; quiche::MAX_CONN_ID_LEN];
        self.rng.fill(&mut scid).ok()?;
        let scid_id = quiche::ConnectionId::from_ref(&scid);
        let quic = match quiche::accept(&scid_id, None, self.local, from, &mut self.quic_config) {
            Ok(q) => q,
            Err(_) => {
                self.stats.bad_packets += 1;
                return None;
            }
        };
        let key = self.next_conn;
        self.next_conn += 1;
        let cids = vec![scid.to_vec(), hdr.dcid.to_vec()];
        for cid in &cids {
            self.by_cid.insert(cid.clone(), key);
        }
        self.conns.insert(
            key,
            Conn {
                quic,
                h3: None,
                peer_addr: from,
                cids,
                streams: HashMap::new(),
                links: 0,
            },
        );
        self.stats.connections_opened += 1;
        Some(key)
    }

    fn send_datagram(&mut self, to: SocketAddr, bytes: &[u8]) -> bool {
        match self.socket.send_to(bytes, to) {
            Ok(n) => {
                self.stats.bytes_sent += n as u64;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if self.blocked.len() < MAX_BLOCKED {
                    self.blocked.push_back((to, bytes.to_vec()));
                } else {
                    self.stats.datagrams_dropped += 1;
                }
                false
            }
            Err(_) => true,
        }
    }

    /// Sends what connection `key` has to send.
    fn flush_conn(&mut self, key: u64) {
        let mut out = [0u8; MAX_SEND_PAYLOAD];
        loop {
            let Some(conn) = self.conns.get_mut(&key) else {
                return;
            };
            if let Some(h3) = conn.h3.as_mut() {
                for (id, a) in conn.streams.iter_mut() {
                    if !a.finished {
                        let left = write_stream(&mut conn.quic, h3, *id, a);
                        self.queued = self.queued.saturating_sub(left);
                        self.stats.records_sent += left as u64;
                    }
                }
                let (peers, closed) = (&mut self.peers, &mut self.closed);
                conn.streams.retain(|_, a| {
                    if !a.done() {
                        return true;
                    }
                    // A link whose stream went away under it is a peer gone.
                    if let Some(link) = &a.link
                        && peers.remove(&link.peer).is_some()
                    {
                        closed.push_back(link.peer);
                    }
                    false
                });
            }
            match conn.quic.send(&mut out) {
                Ok((n, info)) => {
                    conn.peer_addr = info.to;
                    if !self.blocked.is_empty() {
                        self.blocked.push_back((info.to, out[..n].to_vec()));
                        if self.blocked.len() > MAX_BLOCKED {
                            self.blocked.pop_front();
                            self.stats.datagrams_dropped += 1;
                        }
                    } else {
                        self.send_datagram(info.to, &out[..n]);
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Sends datagrams held back when the socket was full.
    fn unblock(&mut self) {
        while let Some((to, bytes)) = self.blocked.pop_front() {
            match self.socket.send_to(&bytes, to) {
                Ok(n) => self.stats.bytes_sent += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.blocked.push_front((to, bytes));
                    return;
                }
                Err(_) => {}
            }
        }
    }

    /// Handles the HTTP/3 events of connection `key`.
    fn serve(&mut self, key: u64, unix_now: u64) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.h3.is_none() && (conn.quic.is_established() || conn.quic.is_in_early_data()) {
            match h3::Connection::with_transport(&mut conn.quic, &self.h3_config) {
                Ok(h3) => conn.h3 = Some(h3),
                Err(_) => {
                    let _ = conn.quic.close(true, 0x0102, b"");
                    return;
                }
            }
        }
        let Some(h3) = conn.h3.as_mut() else {
            return;
        };
        // Until Done, or an HTTP/3 error (quiche has then closed the connection as RFC 9114
        // asks).
        while let Ok((id, event)) = h3.poll(&mut conn.quic) {
            match event {
                h3::Event::Headers { list, more_frames } => {
                    let field = |name: &[u8]| {
                        list.iter()
                            .find(|h| h.name() == name)
                            .map(|h| h.value().to_vec())
                            .unwrap_or_default()
                    };
                    let (method, path) = (field(b":method"), field(b":path"));
                    let is_link = method == b"POST" && self.config.path.matches(&path);
                    if is_link && conn.links < self.config.max_links_per_connection {
                        let peer = Peer(self.next_peer);
                        self.next_peer += 1;
                        conn.links += 1;
                        self.peers.insert(peer, (key, id));
                        self.stats.links_opened += 1;
                        conn.streams.insert(
                            id,
                            Answering {
                                head: None,
                                body: VecDeque::new(),
                                fin: false,
                                finished: false,
                                link: Some(Link {
                                    peer,
                                    records: Reassembler::default(),
                                    readable: true,
                                    responded: false,
                                }),
                            },
                        );
                        continue;
                    }
                    let (answer, response) = if is_link {
                        self.stats.links_refused += 1;
                        (Answer::NotFound, self.site.not_found(&method, unix_now))
                    } else {
                        self.site.respond(&method, &path, unix_now)
                    };
                    match answer {
                        Answer::Page => self.stats.pages_served += 1,
                        Answer::NotFound => self.stats.not_found += 1,
                        Answer::NotAllowed => self.stats.not_allowed += 1,
                    }
                    if more_frames {
                        let _ = conn
                            .quic
                            .stream_shutdown(id, quiche::Shutdown::Read, H3_NO_ERROR);
                    }
                    conn.streams.insert(id, Answering::page(response));
                }
                h3::Event::Data => match conn.streams.get_mut(&id).and_then(|a| a.link.as_mut()) {
                    Some(link) => link.readable = true,
                    None => {
                        // A body nobody asked for: drained (flow control bounds it).
                        let mut sink = [0u8; 4096];
                        while matches!(h3.recv_body(&mut conn.quic, id, &mut sink), Ok(n) if n > 0)
                        {
                        }
                    }
                },
                h3::Event::Finished | h3::Event::Reset(_) => {
                    if let Some(a) = conn.streams.get_mut(&id)
                        && let Some(link) = a.link.as_ref()
                    {
                        // The client ended its side: the peer is gone; the response ends
                        // as it would on `close`.
                        let peer = link.peer;
                        if self.peers.remove(&peer).is_some() {
                            self.closed.push_back(peer);
                        }
                        a.end(&self.site, unix_now);
                    }
                }
                h3::Event::PriorityUpdate | h3::Event::GoAway => {}
            }
        }
    }

    /// Reads waiting request bodies of connection `key`'s links while the inbox has room.
    fn read_links(&mut self, key: u64) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let Some(h3) = conn.h3.as_mut() else {
            return;
        };
        let mut buf = [0u8; 16 * RECORD_LEN];
        for (id, a) in conn.streams.iter_mut() {
            let Some(link) = a.link.as_mut().filter(|l| l.readable) else {
                continue;
            };
            loop {
                let room = self.config.max_inbox.saturating_sub(self.inbox.len());
                if room == 0 {
                    return;
                }
                let want = (room * RECORD_LEN).min(buf.len());
                match h3.recv_body(&mut conn.quic, *id, &mut buf[..want]) {
                    Ok(n) if n > 0 => {
                        let (inbox, peer, received) =
                            (&mut self.inbox, link.peer, &mut self.stats.records_received);
                        // A closed link's records are read and dropped.
                        let open = self.peers.contains_key(&peer);
                        link.records.push(&buf[..n], |r| {
                            if open {
                                inbox.push_back((peer, *r));
                                *received += 1;
                            }
                        });
                    }
                    _ => {
                        link.readable = false;
                        break;
                    }
                }
            }
        }
    }

    /// Forgets closed connections; their links are gone.
    fn collect(&mut self) {
        let dead: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.quic.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for key in dead {
            let Some(conn) = self.conns.remove(&key) else {
                continue;
            };
            for cid in &conn.cids {
                self.by_cid.remove(cid);
            }
            for a in conn.streams.values() {
                self.queued = self.queued.saturating_sub(a.queued_records());
                if let Some(link) = &a.link
                    && self.peers.remove(&link.peer).is_some()
                {
                    self.closed.push_back(link.peer);
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl AsRawFd for QuicListener {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl Listener for QuicListener {
    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }

    fn drive(&mut self, now: Instant) -> Result<(), CarrierError> {
        self.poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .map_err(|e| CarrierError::io("polling", e))?;
        self.unblock();
        let mut touched = self.receive();
        for (key, conn) in &mut self.conns {
            let due = conn.quic.timeout_instant().is_some_and(|t| t <= now)
                || conn.quic.timeout() == Some(Duration::ZERO);
            if due {
                conn.quic.on_timeout();
                touched.push(*key);
            }
            if conn
                .streams
                .values()
                .any(|a| a.link.as_ref().is_some_and(|l| l.readable))
            {
                touched.push(*key);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let unix = unix_now();
        for key in touched {
            self.serve(key, unix);
            self.read_links(key);
            self.flush_conn(key);
        }
        self.collect();
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| c.quic.timeout_instant())
            .min()
    }

    fn recv(&mut self) -> Option<(Peer, Record)> {
        self.inbox.pop_front()
    }

    fn send(&mut self, peer: Peer, record: &Record) -> bool {
        let Some(&(key, id)) = self.peers.get(&peer) else {
            return false;
        };
        let Some(a) = self
            .conns
            .get_mut(&key)
            .and_then(|c| c.streams.get_mut(&id))
        else {
            return false;
        };
        let Some(link) = a.link.as_mut().filter(|_| !a.fin && !a.finished) else {
            return false;
        };
        if a.body.len() / RECORD_LEN >= self.config.max_queued_per_peer
            || self.queued >= self.config.max_queued_total
        {
            self.stats.outbox_full += 1;
            return false;
        }
        if !link.responded {
            // The response begins with the first record for the client.
            link.responded = true;
            a.head = Some(vec![
                h3::Header::new(b":status", b"200"),
                h3::Header::new(b"server", b"nginx"),
                h3::Header::new(b"date", site::http_date(unix_now()).as_bytes()),
                h3::Header::new(b"content-type", b"application/octet-stream"),
            ]);
        }
        a.body.extend(record.iter());
        self.queued += 1;
        // Straight out when flow control allows: the link above times its records.
        self.flush_conn(key);
        true
    }

    fn close(&mut self, peer: Peer) {
        let Some((key, id)) = self.peers.remove(&peer) else {
            return;
        };
        let unix = unix_now();
        if let Some(conn) = self.conns.get_mut(&key)
            && let Some(a) = conn.streams.get_mut(&id)
        {
            a.end(&self.site, unix);
            // Stop reading the request body, as RFC 9114 §4.1 lets a server that has
            // answered: H3_NO_ERROR, not an error.
            let _ = conn
                .quic
                .stream_shutdown(id, quiche::Shutdown::Read, H3_NO_ERROR);
            if let Some(link) = a.link.as_mut() {
                link.readable = false;
            }
        }
        self.flush_conn(key);
    }

    fn poll_closed(&mut self) -> Option<Peer> {
        self.closed.pop_front()
    }

    fn source(&self, peer: Peer) -> Option<SocketAddr> {
        let (key, _) = self.peers.get(&peer)?;
        self.conns.get(key).map(|c| c.peer_addr)
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("bytes_received", s.bytes_received),
            ("bytes_sent", s.bytes_sent),
            ("records_received", s.records_received),
            ("records_sent", s.records_sent),
            ("pages_served", s.pages_served),
            ("not_found", s.not_found),
            ("not_allowed", s.not_allowed),
            ("links_opened", s.links_opened),
            ("links_refused", s.links_refused),
            ("connections_opened", s.connections_opened),
            ("connections_refused", s.connections_refused),
            ("bad_packets", s.bad_packets),
            ("outbox_full", s.outbox_full),
            ("datagrams_dropped", s.datagrams_dropped),
            ("connections", self.conns.len() as u64),
            ("peers", self.peers.len() as u64),
        ]
    }
}
