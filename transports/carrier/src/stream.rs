//! Records over a TCP byte stream, under a sans-IO [`StreamCodec`]: the records one after
//! another, nothing between them (a stream's length is always a whole number of records,
//! however it was cut), inside whatever the codec makes of them (obfs4's frames, or nothing:
//! [`Plain`]).
//!
//! - [`StreamCarrier`]: a client's connection, straight to the gateway or through a local
//!   SOCKS5 proxy that takes pluggable-transport arguments (obfs4proxy as a client,
//!   [`Socks5`]).
//! - [`StreamListener`]: a gateway's listener, one codec per accepted connection. A codec
//!   whose handshake fails may ask for the connection to be held, read and discarded, until
//!   a time of its choosing ([`StreamCodec::linger_until`]): obfs4 servers answer a probe
//!   that way rather than by closing at once.
//! - [`Reassembler`]: stream bytes back into records.
//!
//! The plain codec hides nothing (records are random-looking but their lengths and timing
//! show); it exists for a local obfs4proxy server in front of the gateway, which speaks plain
//! TCP to its backend, and for the client side of obfs4proxy, which takes plain TCP through
//! SOCKS5. Bind it to loopback.

use std::{
    collections::{HashMap, VecDeque},
    io::{ErrorKind, Read as _, Write as _},
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use mio::{
    Events, Interest, Poll, Token,
    net::{TcpListener, TcpStream},
};

use crate::{CarrierError, ClientCarrier, Listener, Peer, RECORD_LEN, Record, TransportKind};

/// Bytes read from a socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Records received and not yet taken, at most, per client and per listener.
const MAX_INBOX: usize = 4096;
/// Bytes a codec may hold for the socket before `send` refuses more: 256 records.
const MAX_TX: usize = 256 * RECORD_LEN;
/// Connections a listener holds at most (those lingering included).
const MAX_CONNECTIONS: usize = 4096;
/// How long a listener's connection may take to open (the codec's handshake), unless the
/// codec says otherwise ([`StreamCodec::open_timeout`]).
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(60);

/// A byte-stream protocol between the records and the socket, sans-IO: bytes and `now` in,
/// bytes out. One per connection.
pub trait StreamCodec: Send + core::fmt::Debug {
    /// Takes bytes from the socket. An error means the peer is not speaking the protocol
    /// (a failed handshake, a forged frame); see [`StreamCodec::linger_until`].
    fn handle_bytes(&mut self, bytes: &[u8], now: Instant) -> Result<(), String>;
    /// Moves the application bytes received so far to the end of `out`.
    fn take_received(&mut self, out: &mut Vec<u8>);
    /// Queues application bytes to send (only once open).
    fn write(&mut self, data: &[u8], now: Instant) -> Result<(), String>;
    /// Releases what is due at `now` (timing shaping) to [`StreamCodec::transmit`].
    fn poll(&mut self, now: Instant);
    /// The bytes to write to the socket now.
    fn transmit(&self) -> &[u8];
    /// The socket took the first `n` bytes of [`StreamCodec::transmit`].
    fn consumed(&mut self, n: usize);
    /// Bytes queued and not yet written, released or not.
    fn backlog(&self) -> usize;
    /// When [`StreamCodec::poll`] must run again, with no event.
    fn next_deadline(&self) -> Option<Instant>;
    /// Whether application bytes can flow (the handshake is done).
    fn is_open(&self) -> bool;
    /// After an error from [`StreamCodec::handle_bytes`]: keep the connection, reading and
    /// discarding, until this time, then close it (`None`: close at once).
    fn linger_until(&self) -> Option<Instant> {
        None
    }
    /// How long a listener gives the handshake; when it passes, the connection is treated
    /// as a failed handshake (held until [`StreamCodec::linger_until`], if that is later).
    fn open_timeout(&self) -> Duration {
        OPEN_TIMEOUT
    }
}

/// No protocol: the records as they are.
#[derive(Debug, Default)]
pub struct Plain {
    received: Vec<u8>,
    out: Vec<u8>,
}

impl StreamCodec for Plain {
    fn handle_bytes(&mut self, bytes: &[u8], _now: Instant) -> Result<(), String> {
        self.received.extend_from_slice(bytes);
        Ok(())
    }

    fn take_received(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.received);
    }

    fn write(&mut self, data: &[u8], _now: Instant) -> Result<(), String> {
        self.out.extend_from_slice(data);
        Ok(())
    }

    fn poll(&mut self, _now: Instant) {}

    fn transmit(&self) -> &[u8] {
        &self.out
    }

    fn consumed(&mut self, n: usize) {
        self.out.drain(..n.min(self.out.len()));
    }

    fn backlog(&self) -> usize {
        self.out.len()
    }

    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn is_open(&self) -> bool {
        true
    }
}

/// Collects stream bytes into records.
#[derive(Debug)]
pub struct Reassembler {
    partial: Box<Record>,
    filled: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self {
            partial: Box::new([0; RECORD_LEN]),
            filled: 0,
        }
    }
}

impl Reassembler {
    /// Takes the next piece of the stream; hands each record it completes to `out`.
    pub fn push(&mut self, mut body: &[u8], mut out: impl FnMut(&Record)) {
        while !body.is_empty() {
            let n = (RECORD_LEN - self.filled).min(body.len());
            self.partial[self.filled..self.filled + n].copy_from_slice(&body[..n]);
            self.filled += n;
            body = &body[n..];
            if self.filled == RECORD_LEN {
                out(&self.partial);
                self.filled = 0;
            }
        }
    }

    /// Bytes of a record begun and not finished (a stream that ends here was cut short).
    pub fn pending(&self) -> usize {
        self.filled
    }
}

/// A local SOCKS5 proxy that takes a pluggable transport's arguments as its username
/// (pt-spec: `k=v;k=v`, with `\`, `=` and `;` escaped in values), as obfs4proxy's client
/// side does.
#[derive(Clone, Debug)]
pub struct Socks5 {
    /// Where the proxy listens.
    pub proxy: SocketAddr,
    /// The arguments, e.g. `[("cert", …), ("iat-mode", "0")]`.
    pub args: Vec<(String, String)>,
}

impl Socks5 {
    /// The arguments as pt-spec's string.
    pub fn args_string(&self) -> String {
        let escape = |s: &str| {
            s.chars().fold(String::new(), |mut out, c| {
                if matches!(c, '\\' | '=' | ';') {
                    out.push('\\');
                }
                out.push(c);
                out
            })
        };
        self.args
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect::<Vec<_>>()
            .join(";")
    }

    /// Connects through the proxy to `target` (blocking, lock-step: obfs4proxy refuses a
    /// step that arrives early). Each step may take 5 s, but the CONNECT 30 s: a
    /// pluggable transport answers it once its own handshake with the bridge is done.
    fn connect(&self, target: SocketAddr) -> Result<std::net::TcpStream, CarrierError> {
        let io = |what| move |e| CarrierError::io(what, e);
        let fail = |why: &str| CarrierError::Handshake(format!("SOCKS5 proxy: {why}"));
        let deadline = Some(Duration::from_secs(5));
        let mut s = std::net::TcpStream::connect_timeout(&self.proxy, Duration::from_secs(5))
            .map_err(io("connecting to the SOCKS5 proxy"))?;
        s.set_read_timeout(deadline)
            .map_err(io("setting a timeout"))?;
        s.set_write_timeout(deadline)
            .map_err(io("setting a timeout"))?;
        // Username/password only: the arguments are the username.
        s.write_all(&[5, 1, 2]).map_err(io("greeting the proxy"))?;
        let mut reply = [0u8; 2];
        s.read_exact(&mut reply).map_err(io("reading the proxy"))?;
        if reply != [5, 2] {
            return Err(fail("it does not take username/password"));
        }
        let args = self.args_string().into_bytes();
        // Up to 255 bytes in the username, the rest in the password; a lone NUL password
        // when it all fits (pt-spec).
        let (user, pass) = args.split_at(args.len().min(255));
        let pass: &[u8] = if pass.is_empty() { &[0] } else { pass };
        if user.is_empty() || pass.len() > 255 {
            return Err(fail("transport arguments empty or over 510 bytes"));
        }
        let mut auth = vec![1, user.len() as u8];
        auth.extend_from_slice(user);
        auth.push(pass.len() as u8);
        auth.extend_from_slice(pass);
        s.write_all(&auth).map_err(io("authenticating"))?;
        s.read_exact(&mut reply).map_err(io("reading the proxy"))?;
        if reply != [1, 0] {
            return Err(fail("it refused the transport arguments"));
        }
        let mut connect = vec![5, 1, 0];
        match target {
            SocketAddr::V4(a) => {
                connect.push(1);
                connect.extend_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                connect.push(4);
                connect.extend_from_slice(&a.ip().octets());
            }
        }
        connect.extend_from_slice(&target.port().to_be_bytes());
        s.write_all(&connect)
            .map_err(io("asking the proxy to connect"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(io("setting a timeout"))?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head).map_err(io("reading the proxy"))?;
        if head[..2] != [5, 0] {
            return Err(fail(&format!("CONNECT answered {:#04x}", head[1])));
        }
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut n = [0u8; 1];
                s.read_exact(&mut n).map_err(io("reading the proxy"))?;
                usize::from(n[0]) + 2
            }
            _ => return Err(fail("a malformed CONNECT reply")),
        };
        let mut skip = vec![0u8; rest];
        s.read_exact(&mut skip).map_err(io("reading the proxy"))?;
        s.set_read_timeout(None).map_err(io("setting a timeout"))?;
        s.set_write_timeout(None).map_err(io("setting a timeout"))?;
        s.set_nonblocking(true)
            .map_err(io("setting non-blocking"))?;
        Ok(s)
    }
}

/// Writes what `codec` has for the socket until the socket is full; false if the
/// connection broke.
fn flush(stream: &mut TcpStream, codec: &mut dyn StreamCodec, sent: &mut u64) -> bool {
    loop {
        let out = codec.transmit();
        if out.is_empty() {
            return true;
        }
        match stream.write(out) {
            Ok(0) => return false,
            Ok(n) => {
                codec.consumed(n);
                *sent += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// How one read of a connection ended.
enum ReadEnd {
    /// The socket has nothing more now.
    Drained,
    /// Stopped with bytes maybe left (the inbox is full).
    Paused,
    /// The peer closed or the connection broke.
    Closed,
    /// The codec refused what came.
    Refused(String),
}

/// Reads `stream` into `codec` and the records it yields into `inbox` (up to `room`
/// records); with `discard`, reads and drops.
#[expect(
    clippy::too_many_arguments,
    reason = "one connection's parts, borrowed apart"
)]
fn read_into(
    stream: &mut TcpStream,
    codec: &mut dyn StreamCodec,
    records: &mut Reassembler,
    scratch: &mut Vec<u8>,
    now: Instant,
    discard: bool,
    received: &mut u64,
    mut room: usize,
    mut each: impl FnMut(&Record),
) -> ReadEnd {
    let mut buf = [0u8; READ_CHUNK];
    loop {
        if !discard && room < READ_CHUNK / RECORD_LEN + 1 {
            return ReadEnd::Paused;
        }
        let n = match stream.read(&mut buf) {
            Ok(0) => return ReadEnd::Closed,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadEnd::Drained,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return ReadEnd::Closed,
        };
        *received += n as u64;
        if discard {
            continue;
        }
        if let Err(why) = codec.handle_bytes(&buf[..n], now) {
            return ReadEnd::Refused(why);
        }
        scratch.clear();
        codec.take_received(scratch);
        records.push(scratch, |r| {
            room = room.saturating_sub(1);
            each(r);
        });
    }
}

const SOCKET: Token = Token(0);

/// A client's connection to its gateway over a stream transport.
pub struct StreamCarrier {
    kind: TransportKind,
    poll: Poll,
    events: Events,
    stream: TcpStream,
    codec: Box<dyn StreamCodec>,
    records: Reassembler,
    scratch: Vec<u8>,
    inbox: VecDeque<Record>,
    /// Reading stopped with bytes maybe waiting, because the inbox was full.
    read_pending: bool,
    /// Whether the TCP connection is up (a connect in progress is not).
    connected: bool,
    dead: Option<String>,
    /// The record rate the transport's shaping carries, if bounded.
    max_record_rate: Option<u32>,
    stats: ClientStats,
}

#[derive(Debug, Default)]
struct ClientStats {
    bytes_sent: u64,
    bytes_received: u64,
    records_sent: u64,
    records_received: u64,
    records_dropped: u64,
}

impl core::fmt::Debug for StreamCarrier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamCarrier")
            .field("kind", &self.kind)
            .field("open", &self.codec.is_open())
            .finish_non_exhaustive()
    }
}

impl StreamCarrier {
    /// Starts connecting to `gateway`; `codec` speaks the transport over the connection
    /// (its first bytes, a client hello, go out as soon as it is up).
    pub fn connect(
        kind: TransportKind,
        gateway: SocketAddr,
        codec: Box<dyn StreamCodec>,
    ) -> Result<Self, CarrierError> {
        let stream = TcpStream::connect(gateway).map_err(|e| CarrierError::io("connecting", e))?;
        Self::with_stream(kind, stream, codec, false)
    }

    /// Connects to `gateway` through `proxy` (blocking for the proxy's lock-step exchange
    /// and its own handshake with the gateway: 30 s at most).
    pub fn via_socks5(
        kind: TransportKind,
        proxy: &Socks5,
        gateway: SocketAddr,
        codec: Box<dyn StreamCodec>,
    ) -> Result<Self, CarrierError> {
        let stream = TcpStream::from_std(proxy.connect(gateway)?);
        Self::with_stream(kind, stream, codec, true)
    }

    fn with_stream(
        kind: TransportKind,
        mut stream: TcpStream,
        codec: Box<dyn StreamCodec>,
        connected: bool,
    ) -> Result<Self, CarrierError> {
        let _ = stream.set_nodelay(true);
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| CarrierError::io("registering", e))?;
        Ok(Self {
            kind,
            poll,
            events: Events::with_capacity(8),
            stream,
            codec,
            records: Reassembler::default(),
            scratch: Vec::new(),
            inbox: VecDeque::new(),
            read_pending: false,
            connected,
            dead: None,
            max_record_rate: None,
            stats: ClientStats::default(),
        })
    }

    /// Says that the transport carries at most `rate` records a second each way (its
    /// timing shaping's capacity; [`ClientCarrier::max_record_rate`]).
    pub fn with_max_record_rate(mut self, rate: Option<u32>) -> Self {
        self.max_record_rate = rate;
        self
    }

    fn die(&mut self, why: String) -> CarrierError {
        self.dead = Some(why.clone());
        CarrierError::Closed(why)
    }
}

impl AsRawFd for StreamCarrier {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl ClientCarrier for StreamCarrier {
    fn kind(&self) -> TransportKind {
        self.kind
    }

    fn drive(&mut self, now: Instant) -> Result<(), CarrierError> {
        if let Some(why) = &self.dead {
            return Err(CarrierError::Closed(why.clone()));
        }
        self.poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .map_err(|e| CarrierError::io("polling", e))?;
        let mut readable = self.read_pending;
        for event in &self.events {
            if event.is_error() {
                let why = match self.stream.take_error() {
                    Ok(Some(e)) => e.to_string(),
                    _ => "the connection failed".to_owned(),
                };
                return Err(self.die(why));
            }
            if event.is_writable() || event.is_readable() {
                self.connected = true;
            }
            readable |= event.is_readable() || event.is_read_closed();
        }
        if !self.connected {
            return Ok(());
        }
        if readable {
            let room = MAX_INBOX.saturating_sub(self.inbox.len());
            let (inbox, received) = (&mut self.inbox, &mut self.stats.records_received);
            let end = read_into(
                &mut self.stream,
                self.codec.as_mut(),
                &mut self.records,
                &mut self.scratch,
                now,
                false,
                &mut self.stats.bytes_received,
                room,
                |r| {
                    inbox.push_back(*r);
                    *received += 1;
                },
            );
            self.read_pending = false;
            match end {
                ReadEnd::Drained => {}
                ReadEnd::Paused => self.read_pending = true,
                ReadEnd::Closed => return Err(self.die("the gateway closed".into())),
                ReadEnd::Refused(why) => return Err(self.die(why)),
            }
        }
        self.codec.poll(now);
        if !flush(
            &mut self.stream,
            self.codec.as_mut(),
            &mut self.stats.bytes_sent,
        ) {
            return Err(self.die("the connection broke".into()));
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        if self.read_pending {
            return Some(Instant::now());
        }
        self.codec.next_deadline()
    }

    fn is_open(&self) -> bool {
        self.connected && self.dead.is_none() && self.codec.is_open()
    }

    fn send(&mut self, record: &Record) -> bool {
        if !self.is_open() || self.codec.backlog() >= MAX_TX {
            self.stats.records_dropped += 1;
            return false;
        }
        let now = Instant::now();
        if self.codec.write(record, now).is_err() {
            self.stats.records_dropped += 1;
            return false;
        }
        self.stats.records_sent += 1;
        self.codec.poll(now);
        if !flush(
            &mut self.stream,
            self.codec.as_mut(),
            &mut self.stats.bytes_sent,
        ) {
            self.dead = Some("the connection broke".into());
        }
        true
    }

    fn recv(&mut self) -> Option<Record> {
        self.inbox.pop_front()
    }

    fn max_record_rate(&self) -> Option<u32> {
        self.max_record_rate
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("bytes_sent", s.bytes_sent),
            ("bytes_received", s.bytes_received),
            ("records_sent", s.records_sent),
            ("records_received", s.records_received),
            ("records_dropped", s.records_dropped),
        ]
    }
}

/// Makes the codec of a connection the listener accepted at `now`.
pub type CodecFactory = Box<dyn FnMut(Instant) -> Box<dyn StreamCodec> + Send>;

struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    codec: Box<dyn StreamCodec>,
    records: Reassembler,
    accepted: Instant,
    /// Held after a failed handshake, read and discarded, until then.
    linger: Option<Instant>,
    read_pending: bool,
}

/// A gateway's listener over a stream transport.
pub struct StreamListener {
    kind: TransportKind,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    local: SocketAddr,
    factory: CodecFactory,
    conns: HashMap<u64, Conn>,
    next_id: u64,
    scratch: Vec<u8>,
    inbox: VecDeque<(Peer, Record)>,
    closed: VecDeque<Peer>,
    stats: ListenerStats,
}

#[derive(Debug, Default)]
struct ListenerStats {
    accepted: u64,
    refused: u64,
    accept_errors: u64,
    handshakes_failed: u64,
    open_timeouts: u64,
    bytes_sent: u64,
    bytes_received: u64,
    records_received: u64,
    records_sent: u64,
    inbox_full: u64,
    backlogged: u64,
}

impl core::fmt::Debug for StreamListener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamListener")
            .field("kind", &self.kind)
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

const LISTENER: Token = Token(usize::MAX);

fn token(id: u64) -> Token {
    // Ids count up from 0 and a gateway does not accept 2^63 connections.
    Token(usize::try_from(id).unwrap_or(usize::MAX - 1))
}

impl StreamListener {
    /// Binds `addr`; `factory` makes each accepted connection's codec.
    pub fn bind(
        kind: TransportKind,
        addr: SocketAddr,
        factory: CodecFactory,
    ) -> Result<Self, CarrierError> {
        let mut listener = TcpListener::bind(addr).map_err(|e| CarrierError::io("binding", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| CarrierError::io("reading the bound address", e))?;
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| CarrierError::io("registering", e))?;
        Ok(Self {
            kind,
            poll,
            events: Events::with_capacity(256),
            listener,
            local,
            factory,
            conns: HashMap::new(),
            next_id: 0,
            scratch: Vec::new(),
            inbox: VecDeque::new(),
            closed: VecDeque::new(),
            stats: ListenerStats::default(),
        })
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(conn) => conn,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // Out of descriptors or an aborted handshake: about one connection, not us.
                Err(_) => {
                    self.stats.accept_errors += 1;
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                self.stats.refused += 1;
                continue;
            }
            let id = self.next_id;
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
            self.stats.accepted += 1;
            self.conns.insert(
                id,
                Conn {
                    stream,
                    addr,
                    codec: (self.factory)(now),
                    records: Reassembler::default(),
                    accepted: now,
                    linger: None,
                    read_pending: true,
                },
            );
        }
    }

    /// Reads, writes and reaps connection `id`; false if it is to close.
    fn service(&mut self, id: u64, now: Instant, readable: bool) -> bool {
        let Some(conn) = self.conns.get_mut(&id) else {
            return true;
        };
        if let Some(until) = conn.linger
            && now >= until
        {
            return false;
        }
        if conn.linger.is_none()
            && !conn.codec.is_open()
            && now - conn.accepted >= conn.codec.open_timeout()
        {
            self.stats.open_timeouts += 1;
            match conn.codec.linger_until().filter(|until| *until > now) {
                Some(until) => conn.linger = Some(until),
                None => return false,
            }
        }
        if readable || conn.read_pending {
            let room = (4 * MAX_INBOX).saturating_sub(self.inbox.len());
            let (inbox, received) = (&mut self.inbox, &mut self.stats.records_received);
            let end = read_into(
                &mut conn.stream,
                conn.codec.as_mut(),
                &mut conn.records,
                &mut self.scratch,
                now,
                conn.linger.is_some(),
                &mut self.stats.bytes_received,
                room,
                |r| {
                    inbox.push_back((Peer(id), *r));
                    *received += 1;
                },
            );
            conn.read_pending = false;
            match end {
                ReadEnd::Drained => {}
                ReadEnd::Paused => {
                    conn.read_pending = true;
                    self.stats.inbox_full += 1;
                }
                ReadEnd::Closed => return false,
                ReadEnd::Refused(_) => {
                    self.stats.handshakes_failed += 1;
                    match conn.codec.linger_until() {
                        Some(until) => conn.linger = Some(until),
                        None => return false,
                    }
                }
            }
        }
        if conn.linger.is_some() {
            return true;
        }
        conn.codec.poll(now);
        flush(
            &mut conn.stream,
            conn.codec.as_mut(),
            &mut self.stats.bytes_sent,
        )
    }

    fn drop_conn(&mut self, id: u64) {
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.closed.push_back(Peer(id));
        }
    }
}

impl AsRawFd for StreamListener {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl Listener for StreamListener {
    fn kind(&self) -> TransportKind {
        self.kind
    }

    fn drive(&mut self, now: Instant) -> Result<(), CarrierError> {
        self.poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .map_err(|e| CarrierError::io("polling", e))?;
        let mut readable = std::collections::HashSet::new();
        let mut accept = false;
        for event in &self.events {
            if event.token() == LISTENER {
                accept = true;
            } else {
                readable.insert(event.token().0 as u64);
            }
        }
        if accept {
            self.accept(now);
        }
        // Every connection: one with an event is read; the others may have timers due
        // (shaping, lingering, the open timeout) or bytes to flush.
        let ids: Vec<u64> = self.conns.keys().copied().collect();
        for id in ids {
            let ready = readable.contains(&id);
            if !self.service(id, now, ready) {
                self.drop_conn(id);
            }
        }
        Ok(())
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| {
                if c.read_pending {
                    return Some(Instant::now());
                }
                let open_by = (!c.codec.is_open() && c.linger.is_none())
                    .then(|| c.accepted + c.codec.open_timeout());
                [c.linger, open_by, c.codec.next_deadline()]
                    .into_iter()
                    .flatten()
                    .min()
            })
            .min()
    }

    fn recv(&mut self) -> Option<(Peer, Record)> {
        self.inbox.pop_front()
    }

    fn send(&mut self, peer: Peer, record: &Record) -> bool {
        let Some(conn) = self.conns.get_mut(&peer.0) else {
            return false;
        };
        if conn.linger.is_some() || !conn.codec.is_open() || conn.codec.backlog() >= MAX_TX {
            self.stats.backlogged += 1;
            return false;
        }
        let now = Instant::now();
        if conn.codec.write(record, now).is_err() {
            return false;
        }
        self.stats.records_sent += 1;
        conn.codec.poll(now);
        if !flush(
            &mut conn.stream,
            conn.codec.as_mut(),
            &mut self.stats.bytes_sent,
        ) {
            self.drop_conn(peer.0);
        }
        true
    }

    fn close(&mut self, peer: Peer) {
        if let Some(mut conn) = self.conns.remove(&peer.0) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
        }
    }

    fn poll_closed(&mut self) -> Option<Peer> {
        self.closed.pop_front()
    }

    fn source(&self, peer: Peer) -> Option<SocketAddr> {
        self.conns.get(&peer.0).map(|c| c.addr)
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("connections_accepted", s.accepted),
            ("connections_refused", s.refused),
            ("accept_errors", s.accept_errors),
            ("handshakes_failed", s.handshakes_failed),
            ("open_timeouts", s.open_timeouts),
            ("bytes_sent", s.bytes_sent),
            ("bytes_received", s.bytes_received),
            ("records_received", s.records_received),
            ("records_sent", s.records_sent),
            ("inbox_full", s.inbox_full),
            ("backlogged", s.backlogged),
            ("connections", self.conns.len() as u64),
        ]
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn record(i: usize) -> Record {
        let mut r = [0u8; RECORD_LEN];
        for (j, b) in r.iter_mut().enumerate() {
            *b = (i * 31 + j) as u8;
        }
        r
    }

    #[test]
    fn records_come_back_whole_and_in_order_from_any_cut() {
        let sent: Vec<Record> = (0..7).map(record).collect();
        let body: Vec<u8> = sent.iter().flatten().copied().collect();
        for step in [1, 100, 1451, 1452, 1453, 5000, body.len()] {
            let mut r = Reassembler::default();
            let mut got = Vec::new();
            for piece in body.chunks(step) {
                r.push(piece, |rec| got.push(*rec));
            }
            assert_eq!(got, sent, "cut every {step} bytes");
            assert_eq!(r.pending(), 0);
        }
        let mut r = Reassembler::default();
        r.push(&body[..10], |_| unreachable!("no whole record yet"));
        assert_eq!(r.pending(), 10);
    }

    #[test]
    fn transport_arguments_are_escaped_as_pt_spec_says() {
        let proxy = Socks5 {
            proxy: ([127, 0, 0, 1], 1).into(),
            args: vec![
                ("cert".into(), "AB+/c".into()),
                ("odd".into(), "a=b;c\\d".into()),
                ("iat-mode".into(), "2".into()),
            ],
        };
        assert_eq!(
            proxy.args_string(),
            "cert=AB+/c;odd=a\\=b\\;c\\\\d;iat-mode=2"
        );
    }

    /// Drives both ends until `done` holds (a bounded number of turns).
    fn until(
        client: &mut StreamCarrier,
        gateway: &mut StreamListener,
        mut done: impl FnMut(&mut StreamCarrier, &mut StreamListener) -> bool,
    ) -> bool {
        for _ in 0..3000 {
            client.drive(Instant::now()).unwrap();
            gateway.drive(Instant::now()).unwrap();
            if done(client, gateway) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn plain_records_cross_both_ways_in_order() {
        let factory: CodecFactory = Box::new(|_| Box::new(Plain::default()));
        let mut gateway =
            StreamListener::bind(TransportKind::Tcp, ([127, 0, 0, 1], 0).into(), factory).unwrap();
        let mut client = StreamCarrier::connect(
            TransportKind::Tcp,
            gateway.local_addr(),
            Box::new(Plain::default()),
        )
        .unwrap();
        assert!(until(&mut client, &mut gateway, |c, _| c.is_open()));
        for i in 0..300 {
            assert!(client.send(&record(i)));
        }
        let mut got = Vec::new();
        assert!(until(&mut client, &mut gateway, |_, g| {
            got.extend(std::iter::from_fn(|| g.recv()));
            got.len() == 300
        }));
        assert!(got.iter().enumerate().all(|(i, (_, r))| *r == record(i)));
        let peer = got[0].0;
        assert!(gateway.source(peer).is_some());
        for i in 0..300 {
            assert!(gateway.send(peer, &record(1000 + i)));
        }
        let mut back = Vec::new();
        assert!(until(&mut client, &mut gateway, |c, _| {
            back.extend(std::iter::from_fn(|| c.recv()));
            back.len() == 300
        }));
        assert!(back.iter().enumerate().all(|(i, r)| *r == record(1000 + i)));
        // The client goes: the listener reports its peer closed.
        drop(client);
        let mut closed = None;
        for _ in 0..1000 {
            gateway.drive(Instant::now()).unwrap();
            closed = gateway.poll_closed();
            if closed.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(closed, Some(peer));
    }
}
