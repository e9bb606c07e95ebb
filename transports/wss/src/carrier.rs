//! The client's mio driver: one TCP connection to the gateway, bytes moved between it and a
//! [`ClientCore`].

use std::{
    collections::VecDeque,
    io::{ErrorKind, Read, Write},
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    time::{Duration, Instant},
};

use mio::{Events, Interest, Poll, Token, net::TcpStream};
use pb_transport::{CarrierError, ClientCarrier, Record, TransportKind};
use ring::rand::SecureRandom as _;

use crate::{ClientCore, WssClientConfig};

const SOCKET: Token = Token(0);
/// Bytes read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;
/// Records received and not yet taken, at most.
const MAX_INBOX: usize = 4096;
/// Room kept in the inbox before reading more: the most records one read can complete.
const INBOX_HEADROOM: usize = READ_CHUNK / pb_transport::RECORD_LEN + 1;

/// A client's WSS link to its gateway.
pub struct WssCarrier {
    poll: Poll,
    events: Events,
    stream: TcpStream,
    core: ClientCore,
    inbox: VecDeque<Record>,
    /// Reading stopped with bytes maybe waiting, because the inbox was full.
    read_pending: bool,
    /// Why the connection died, once it has.
    dead: Option<String>,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    bytes_sent: u64,
    bytes_received: u64,
    records_sent: u64,
    records_received: u64,
    records_dropped: u64,
}

impl core::fmt::Debug for WssCarrier {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WssCarrier")
            .field("open", &self.core.is_open())
            .finish_non_exhaustive()
    }
}

impl WssCarrier {
    /// Starts connecting to `gateway` (the handshake runs in [`ClientCarrier::drive`]).
    pub fn connect(gateway: SocketAddr, config: &WssClientConfig) -> Result<Self, CarrierError> {
        let mut key = [0u8; 16];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| CarrierError::io("reading the OS RNG", std::io::Error::other("ring")))?;
        let core = ClientCore::new(config, key, Instant::now())
            .map_err(|e| CarrierError::Handshake(e.to_string()))?;
        let mut stream =
            TcpStream::connect(gateway).map_err(|e| CarrierError::io("connecting", e))?;
        let _ = stream.set_nodelay(true);
        let poll = Poll::new().map_err(|e| CarrierError::io("creating a poll", e))?;
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| CarrierError::io("registering", e))?;
        Ok(Self {
            poll,
            events: Events::with_capacity(8),
            stream,
            core,
            inbox: VecDeque::new(),
            read_pending: false,
            dead: None,
            stats: Stats::default(),
        })
    }

    /// The local address of the TCP connection (what the gateway sees as its source).
    pub fn local_addr(&self) -> Result<SocketAddr, CarrierError> {
        self.stream
            .local_addr()
            .map_err(|e| CarrierError::io("reading the local address", e))
    }

    /// Closes the WebSocket politely (a normal close, close_notify), as far as the socket
    /// takes it now.
    pub fn close(&mut self) {
        self.core.close();
        let _ = self.flush();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
        self.dead.get_or_insert_with(|| "closed by us".into());
    }

    /// Writes what the core has for the socket.
    fn flush(&mut self) -> Result<(), CarrierError> {
        while !self.core.transmit().is_empty() {
            match self.stream.write(self.core.transmit()) {
                Ok(0) => return Err(CarrierError::Closed("the socket took nothing".into())),
                Ok(n) => {
                    self.stats.bytes_sent += n as u64;
                    self.core.advance_transmit(n);
                }
                // Still connecting, or the buffer is full: the writable event comes later.
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::NotConnected) => {
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(CarrierError::io("writing", e)),
            }
        }
        Ok(())
    }

    fn read(&mut self, now: Instant) -> Result<(), CarrierError> {
        let mut buf = [0u8; READ_CHUNK];
        self.read_pending = false;
        loop {
            // Backpressure: leave the bytes in the socket until the link takes records.
            if self.inbox.len() + INBOX_HEADROOM > MAX_INBOX {
                self.read_pending = true;
                return Ok(());
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return self.core.handle_eof(),
                Ok(n) => {
                    self.stats.bytes_received += n as u64;
                    let result = self.core.handle_input(now, &buf[..n]);
                    self.move_records();
                    result?;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::NotConnected) => {
                    return Ok(());
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(CarrierError::io("reading", e)),
            }
        }
    }

    fn move_records(&mut self) {
        while let Some(record) = self.core.poll_record() {
            self.stats.records_received += 1;
            if self.inbox.len() < MAX_INBOX {
                self.inbox.push_back(record);
            } else {
                self.stats.records_dropped += 1;
            }
        }
    }

    fn turn(&mut self, now: Instant) -> Result<(), CarrierError> {
        self.poll
            .poll(&mut self.events, Some(Duration::ZERO))
            .map_err(|e| CarrierError::io("polling", e))?;
        if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
            return Err(CarrierError::io("connecting", e));
        }
        let result = self.read(now).and_then(|()| self.core.handle_timeout(now));
        // The last bytes (an alert, a close) go out even after an error.
        let flushed = self.flush();
        result.and(flushed)
    }
}

impl AsRawFd for WssCarrier {
    fn as_raw_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }
}

impl ClientCarrier for WssCarrier {
    fn kind(&self) -> TransportKind {
        TransportKind::Wss
    }

    fn drive(&mut self, now: Instant) -> Result<(), CarrierError> {
        if let Some(why) = &self.dead {
            return Err(CarrierError::Closed(why.clone()));
        }
        let result = self.turn(now);
        if let Err(e) = &result {
            self.dead = Some(e.to_string());
        }
        result
    }

    fn next_deadline(&self) -> Option<Instant> {
        // Bytes left unread for backpressure have no event coming: drive again soon.
        let now = self.read_pending.then(Instant::now);
        self.dead
            .is_none()
            .then(|| now.unwrap_or(self.core.next_deadline()))
    }

    fn is_open(&self) -> bool {
        self.dead.is_none() && self.core.is_open()
    }

    fn send(&mut self, record: &Record) -> bool {
        if self.dead.is_some() || !self.core.send_record(record, Instant::now()) {
            return false;
        }
        self.stats.records_sent += 1;
        // Straight out when the socket takes it: a record's time is the link's to choose.
        if let Err(e) = self.flush() {
            self.dead = Some(e.to_string());
        }
        true
    }

    fn recv(&mut self) -> Option<Record> {
        self.inbox.pop_front()
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
