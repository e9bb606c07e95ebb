//! [`QuicCarrier`]: the client's QUIC link to its gateway. quinn-proto (sans-IO QUIC,
//! rustls on ring, pure Rust so it builds for aarch64-musl) driven over a mio UDP socket,
//! with the HTTP/3 of [`crate::h3::client`] on top. This module only moves bytes between
//! the socket, quinn-proto and the sans-IO HTTP/3 code.

use std::{
    collections::VecDeque,
    io::ErrorKind,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::BytesMut;
use mio::{Events, Interest, Poll, Token, net::UdpSocket};
use pb_transport::{
    CarrierError, ClientCarrier, RECORD_LEN, Record, TransportKind,
    tls::{self, Pin},
};
use quinn_proto::{
    ClientConfig, ConnectionError, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    Event, ReadError, StreamEvent, StreamId, TransportConfig, VarInt,
    crypto::rustls::QuicClientConfig,
};

use crate::{
    ALPN, LinkPath,
    h3::{
        H3Error,
        client::{MAX_FIELD_SECTION, ResponseReader, UniStreams, opening},
    },
    records::{self, DATA_FRAME_LEN},
};

const SOCKET: Token = Token(0);
/// Records held for sending, or received and not yet taken, at most.
const BACKLOG: usize = 256;
/// The largest UDP payload read.
const MAX_DATAGRAM: usize = 65536;
/// HTTP/3's "no error" code: how a browser closes a connection it is done with.
const H3_NO_ERROR: u32 = 0x100;

/// Where and how a client reaches its gateway's QUIC listener (from the gateway's
/// descriptor).
#[derive(Clone, Debug)]
pub struct QuicCarrierConfig {
    /// The gateway's UDP address.
    pub gateway: SocketAddr,
    /// The name in the gateway's certificate: sent as SNI and as `:authority`.
    pub server_name: String,
    /// The pin of the gateway's TLS key: the only key accepted.
    pub pin: Pin,
    /// The link request's secret path.
    pub path: LinkPath,
    /// Closes the connection after this long without a packet.
    pub idle_timeout: Duration,
    /// Sends a PING after this long without sending, so that a quiet link stays up.
    pub keep_alive: Option<Duration>,
}

impl QuicCarrierConfig {
    /// The usual settings for a gateway at `gateway` named `server_name`, pinned `pin`,
    /// with link path `path`: 30 s idle timeout, keep-alive every 10 s.
    pub fn new(gateway: SocketAddr, server_name: &str, pin: Pin, path: LinkPath) -> Self {
        Self {
            gateway,
            server_name: server_name.to_owned(),
            pin,
            path,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Some(Duration::from_secs(10)),
        }
    }
}

/// Bytes waiting to go out on one stream.
#[derive(Debug)]
struct Outgoing {
    id: StreamId,
    bytes: VecDeque<u8>,
}

/// Why the carrier stopped, kept to be returned by every later `drive`.
#[derive(Debug, Clone)]
enum Failure {
    Handshake(String),
    Closed(String),
}

impl Failure {
    fn error(&self) -> CarrierError {
        match self {
            Self::Handshake(s) => CarrierError::Handshake(s.clone()),
            Self::Closed(s) => CarrierError::Closed(s.clone()),
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    bytes_sent: u64,
    bytes_received: u64,
    records_sent: u64,
    records_received: u64,
    backlogged: u64,
    stray_datagrams: u64,
}

/// A client's QUIC (HTTP/3) link to its gateway.
pub struct QuicCarrier {
    poll: Poll,
    events: Events,
    socket: UdpSocket,
    gateway: SocketAddr,
    endpoint: Endpoint,
    handle: ConnectionHandle,
    conn: quinn_proto::Connection,
    authority: String,
    path: LinkPath,
    /// The request stream, once the handshake is done and the request sent.
    request: Option<StreamId>,
    /// Streams with bytes still to write; the request stream's records are bounded by
    /// [`BACKLOG`].
    outgoing: Vec<Outgoing>,
    response: ResponseReader,
    uni: UniStreams,
    uni_ids: Vec<StreamId>,
    inbox: VecDeque<Record>,
    /// A datagram the socket would not take yet.
    blocked: Option<(SocketAddr, Vec<u8>)>,
    failure: Option<Failure>,
    deadline: Option<Instant>,
    /// The receive buffer.
    buf: Vec<u8>,
    stats: Stats,
}

impl core::fmt::Debug for QuicCarrier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("QuicCarrier")
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl QuicCarrier {
    /// Starts the QUIC handshake with the gateway (from an ephemeral port); `drive` goes on.
    pub fn connect(config: &QuicCarrierConfig, now: Instant) -> Result<Self, CarrierError> {
        let bind: SocketAddr = if config.gateway.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut socket = UdpSocket::bind(bind).map_err(|e| CarrierError::io("binding", e))?;
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut socket, SOCKET, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| CarrierError::io("registering", e))?;

        let handshake = |e: String| CarrierError::Handshake(e);
        let tls = tls::client_config(config.pin, &[ALPN]).map_err(|e| handshake(e.to_string()))?;
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| handshake(e.to_string()))?;
        let mut transport = TransportConfig::default();
        transport
            .max_idle_timeout(Some(
                u64::try_from(config.idle_timeout.as_millis())
                    .ok()
                    .and_then(|ms| VarInt::from_u64(ms).ok())
                    .unwrap_or(VarInt::MAX)
                    .into(),
            ))
            .keep_alive_interval(config.keep_alive)
            // The gateway opens no request streams; its control and QPACK streams, and a
            // few to spare for extensions it may open.
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .max_concurrent_uni_streams(VarInt::from_u32(8))
            .stream_receive_window(VarInt::from_u32(256 * 1024))
            .receive_window(VarInt::from_u32(512 * 1024))
            .send_window(1024 * 1024);
        let mut client = ClientConfig::new(Arc::new(crypto));
        client.transport_config(Arc::new(transport));
        let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
        let (handle, conn) = endpoint
            .connect(now, client, config.gateway, &config.server_name)
            .map_err(|e| handshake(e.to_string()))?;
        let mut carrier = Self {
            poll,
            events: Events::with_capacity(8),
            socket,
            gateway: config.gateway,
            endpoint,
            handle,
            conn,
            authority: config.server_name.clone(),
            path: config.path.clone(),
            request: None,
            outgoing: Vec::new(),
            response: ResponseReader::new(MAX_FIELD_SECTION),
            uni: UniStreams::default(),
            uni_ids: Vec::new(),
            inbox: VecDeque::new(),
            blocked: None,
            failure: None,
            deadline: None,
            buf: Vec::new(),
            stats: Stats::default(),
        };
        carrier.transmit(now);
        Ok(carrier)
    }

    /// Closes the connection as a browser does when it is done (`H3_NO_ERROR`).
    pub fn close(&mut self, now: Instant) {
        self.conn
            .close(now, VarInt::from_u32(H3_NO_ERROR), bytes::Bytes::new());
        self.failure
            .get_or_insert(Failure::Closed("closed by us".into()));
        self.transmit(now);
    }

    /// The local address the carrier sends from.
    pub fn local_addr(&self) -> Result<SocketAddr, CarrierError> {
        self.socket
            .local_addr()
            .map_err(|e| CarrierError::io("reading the bound address", e))
    }

    fn fail(&mut self, now: Instant, failure: Failure, code: Option<H3Error>) {
        if self.failure.is_none() {
            let code = code.map_or(H3_NO_ERROR.into(), |e| e.code());
            self.conn.close(
                now,
                VarInt::from_u64(code).unwrap_or(VarInt::MAX),
                bytes::Bytes::new(),
            );
            self.failure = Some(failure);
        }
    }

    /// Reads every datagram waiting and hands those from the gateway to quinn-proto.
    fn receive(&mut self, now: Instant) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(MAX_DATAGRAM, 0);
        let mut response = Vec::new();
        loop {
            let (n, from) = match self.socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP errors from earlier sends: QUIC's own timers cope.
                Err(_) => continue,
            };
            if from != self.gateway {
                self.stats.stray_datagrams += 1;
                continue;
            }
            self.stats.bytes_received += n as u64;
            let data = BytesMut::from(&buf[..n]);
            match self
                .endpoint
                .handle(now, from, None, None, data, &mut response)
            {
                Some(DatagramEvent::ConnectionEvent(h, event)) if h == self.handle => {
                    self.conn.handle_event(event);
                }
                Some(DatagramEvent::Response(t)) => {
                    self.send_datagram(t.destination, &response[..t.size]);
                }
                _ => {}
            }
            response.clear();
        }
        self.buf = buf;
    }

    /// Handles quinn-proto's events: the handshake's end, streams, loss of the connection.
    fn events(&mut self, now: Instant) {
        while let Some(event) = self.conn.poll() {
            match event {
                Event::Connected => self.open_request(now),
                Event::ConnectionLost { reason } => {
                    let failure = match (&reason, self.request.is_some()) {
                        (ConnectionError::TimedOut, false) => {
                            Failure::Handshake("no answer from the gateway".into())
                        }
                        (_, false) => Failure::Handshake(reason.to_string()),
                        (_, true) => Failure::Closed(reason.to_string()),
                    };
                    self.failure.get_or_insert(failure);
                }
                Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
                    while let Some(id) = self.conn.streams().accept(Dir::Uni) {
                        self.uni_ids.push(id);
                    }
                }
                _ => {}
            }
        }
    }

    /// Opens the control, QPACK and request streams once the handshake is done.
    fn open_request(&mut self, now: Instant) {
        let o = opening(&self.authority, self.path.as_str());
        for (dir, bytes) in [
            (Dir::Uni, o.control),
            (Dir::Uni, o.qpack_encoder),
            (Dir::Uni, o.qpack_decoder),
            (Dir::Bi, o.request),
        ] {
            let Some(id) = self.conn.streams().open(dir) else {
                self.fail(
                    now,
                    Failure::Handshake("the gateway allows no streams".into()),
                    None,
                );
                return;
            };
            if dir == Dir::Bi {
                self.request = Some(id);
            }
            self.outgoing.push(Outgoing {
                id,
                bytes: bytes.into(),
            });
        }
    }

    /// Reads the response stream (while the inbox has room) and the gateway's uni streams.
    fn read_streams(&mut self, now: Instant) {
        let mut error = None;
        if let Some(id) = self.request {
            let room = BACKLOG.saturating_sub(self.inbox.len()) * RECORD_LEN;
            let mut fin = false;
            if room > 0
                && let Ok(mut chunks) = self.conn.recv_stream(id).read(true)
            {
                let mut budget = room;
                while budget > 0 {
                    match chunks.next(budget) {
                        Ok(Some(chunk)) => {
                            budget = budget.saturating_sub(chunk.bytes.len());
                            let (inbox, received) =
                                (&mut self.inbox, &mut self.stats.records_received);
                            let r = self.response.handle(&chunk.bytes, |rec| {
                                inbox.push_back(*rec);
                                *received += 1;
                            });
                            if let Err(e) = r {
                                error = Some(e);
                                break;
                            }
                        }
                        Ok(None) => {
                            fin = true;
                            break;
                        }
                        Err(ReadError::Blocked) => break,
                        Err(ReadError::Reset(_)) => {
                            fin = true;
                            break;
                        }
                    }
                }
                let _ = chunks.finalize();
            }
            if let Some(status) = self.response.status().filter(|s| *s != 200) {
                self.fail(
                    now,
                    Failure::Closed(format!("the gateway answered {status}")),
                    None,
                );
            } else if fin && error.is_none() {
                error = self.response.handle_fin().err();
                self.fail(
                    now,
                    Failure::Closed("the gateway ended the link".into()),
                    None,
                );
            }
        }
        let mut ended = Vec::new();
        for &id in &self.uni_ids {
            let mut stream = self.conn.recv_stream(id);
            let Ok(mut chunks) = stream.read(true) else {
                continue;
            };
            loop {
                match chunks.next(64 * 1024) {
                    Ok(Some(chunk)) => {
                        if let Err(e) = self.uni.handle(id.into(), &chunk.bytes) {
                            error = Some(e);
                            break;
                        }
                    }
                    Ok(None) | Err(ReadError::Reset(_)) => {
                        ended.push(id);
                        break;
                    }
                    Err(ReadError::Blocked) => break,
                }
            }
            let _ = chunks.finalize();
        }
        for id in ended {
            self.uni_ids.retain(|i| *i != id);
            if let Err(e) = self.uni.handle_end(id.into()) {
                error = Some(e);
            }
        }
        if let Some(e) = error {
            self.fail(
                now,
                Failure::Closed(format!("the gateway broke HTTP/3: {e}")),
                Some(e),
            );
        }
    }

    /// Writes what each stream has waiting, as far as flow control allows.
    fn write_streams(&mut self) {
        for out in &mut self.outgoing {
            while !out.bytes.is_empty() {
                let (front, _) = out.bytes.as_slices();
                match self.conn.send_stream(out.id).write(front) {
                    Ok(n) => drop(out.bytes.drain(..n)),
                    // Blocked: later. Stopped or closed: the response reader says why.
                    Err(_) => break,
                }
            }
        }
    }

    fn send_datagram(&mut self, to: SocketAddr, bytes: &[u8]) -> bool {
        match self.socket.send_to(bytes, to) {
            Ok(n) => {
                self.stats.bytes_sent += n as u64;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.blocked = Some((to, bytes.to_vec()));
                false
            }
            // Unreachable for now (ICMP): like a lost datagram, QUIC retransmits.
            Err(_) => true,
        }
    }

    /// Passes quinn-proto's endpoint events through, then sends what it has to send.
    fn transmit(&mut self, now: Instant) {
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(event) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(event);
            }
        }
        if let Some((to, bytes)) = self.blocked.take()
            && !self.send_datagram(to, &bytes)
        {
            self.deadline = self.conn.poll_timeout();
            return;
        }
        let mut buf = Vec::with_capacity(1500);
        while let Some(t) = self.conn.poll_transmit(now, 1, &mut buf) {
            let sent = self.send_datagram(t.destination, &buf[..t.size]);
            buf.clear();
            if !sent {
                break;
            }
        }
        self.deadline = self.conn.poll_timeout();
    }

    /// Moves queued records into the request stream and sends.
    fn flush(&mut self, now: Instant) {
        self.write_streams();
        self.transmit(now);
    }
}

impl AsRawFd for QuicCarrier {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl ClientCarrier for QuicCarrier {
    fn kind(&self) -> TransportKind {
        TransportKind::Quic
    }

    fn drive(&mut self, now: Instant) -> Result<(), CarrierError> {
        self.poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .map_err(|e| CarrierError::io("polling", e))?;
        self.receive(now);
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
        self.events(now);
        self.read_streams(now);
        self.flush(now);
        // Errors surface once the connection has sent its CONNECTION_CLOSE.
        match &self.failure {
            Some(f) => Err(f.error()),
            None => Ok(()),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn is_open(&self) -> bool {
        self.request.is_some() && self.failure.is_none()
    }

    fn send(&mut self, record: &Record) -> bool {
        let Some(id) = self.request.filter(|_| self.failure.is_none()) else {
            return false;
        };
        let Some(out) = self.outgoing.iter_mut().find(|o| o.id == id) else {
            return false;
        };
        if out.bytes.len() + DATA_FRAME_LEN > BACKLOG * DATA_FRAME_LEN {
            self.stats.backlogged += 1;
            return false;
        }
        let mut frame = Vec::with_capacity(DATA_FRAME_LEN);
        records::data_frame(&mut frame, record);
        out.bytes.extend(frame);
        self.stats.records_sent += 1;
        // Straight out when flow control allows: a record's time is the link's to choose.
        self.flush(Instant::now());
        true
    }

    fn recv(&mut self) -> Option<Record> {
        self.inbox.pop_front()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        let quic = self.conn.stats();
        vec![
            ("bytes_sent", s.bytes_sent),
            ("bytes_received", s.bytes_received),
            ("records_sent", s.records_sent),
            ("records_received", s.records_received),
            ("records_backlogged", s.backlogged),
            ("stray_datagrams", s.stray_datagrams),
            ("packets_lost", quic.path.lost_packets),
        ]
    }
}
