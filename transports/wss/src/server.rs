//! The gateway's side of one TCP connection, sans-IO: TLS, then HTTP/1.1 requests answered
//! as a static web server, then (at the secret path only) a WebSocket carrying records.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Instant, SystemTime},
};

use pb_transport::Record;
use tungstenite::protocol::Role;

use crate::{
    ConfigError, WallClock, WssServerConfig,
    http::{self, Answer, Method},
    tls_pipe::TlsPipe,
    ws::{WsError, WsSession},
};

/// The longest request body read and thrown away to keep a connection.
const MAX_DISCARD: u64 = 1 << 20;

/// What every connection of one listener shares: TLS configuration, site, secret path,
/// limits and the wall clock for `Date`.
pub struct ServerShared {
    tls: Arc<rustls::ServerConfig>,
    config: WssServerConfig,
    clock: WallClock,
}

impl core::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerShared").finish_non_exhaustive()
    }
}

impl ServerShared {
    /// From a TLS server configuration (`TlsIdentity::server_config(&[ALPN])`), the WSS
    /// configuration and the wall clock.
    pub fn new(tls: rustls::ServerConfig, config: WssServerConfig, clock: WallClock) -> Self {
        Self {
            tls: Arc::new(tls),
            config,
            clock,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &WssServerConfig {
        &self.config
    }
}

/// Something that happened on a connection, for the listener's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// The page (200 or 304) was served.
    PageServed,
    /// A 404 was served (an unknown path, or an upgrade at the wrong path).
    NotFound,
    /// A 405 was served.
    NotAllowed,
    /// A malformed request got 400.
    BadRequest,
    /// The WebSocket opened: from now on this connection is a peer.
    Upgraded,
    /// The peer sent a message that is not one record, or broke RFC 6455.
    BadMessage,
    /// The TLS handshake or a TLS record failed.
    TlsFailed,
    /// A request or the WebSocket timed out.
    TimedOut,
    /// The peer closed (close frame, close_notify or end of stream).
    PeerClosed,
}

enum Phase {
    /// Nothing received yet: the first byte tells TLS from plain HTTP, as nginx tells them.
    First,
    /// Plain HTTP on the TLS port: reading the request head to answer it in clear.
    PlainHttp(Vec<u8>),
    /// Reading request heads; `head` holds bytes not yet parsed, the first `discard` of
    /// which (and of what follows) are the body of a request already answered.
    Http {
        head: Vec<u8>,
        served: u32,
        discard: u64,
    },
    /// After the upgrade.
    WebSocket(Box<WsSession>),
    /// The last bytes are queued; input is ignored.
    Closing,
}

/// One TCP connection at the gateway.
pub struct ServerCore {
    shared: Arc<ServerShared>,
    pipe: TlsPipe,
    phase: Phase,
    deadline: Instant,
    records: VecDeque<Record>,
    events: VecDeque<ServerEvent>,
    /// The linger deadline passed: drop the connection.
    dead: bool,
}

impl core::fmt::Debug for ServerCore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerCore").finish_non_exhaustive()
    }
}

impl ServerCore {
    /// A connection accepted at `now`.
    pub fn new(shared: Arc<ServerShared>, now: Instant) -> Result<Self, ConfigError> {
        let tls = rustls::ServerConnection::new(shared.tls.clone())
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let deadline = now + shared.config.limits.request_timeout;
        Ok(Self {
            shared,
            pipe: TlsPipe::new(tls),
            phase: Phase::First,
            deadline,
            records: VecDeque::new(),
            events: VecDeque::new(),
            dead: false,
        })
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.shared.clock.at(now)
    }

    /// Hands over bytes read from the TCP connection at `now`.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        match &mut self.phase {
            Phase::Closing => return,
            Phase::First => {
                let Some(&first) = bytes.first() else {
                    return;
                };
                // nginx takes a first byte with the high bit set (SSLv2) or 0x16 (a TLS
                // handshake record) for TLS, anything else for plain HTTP.
                if first & 0x80 == 0 && first != 0x16 {
                    self.phase = Phase::PlainHttp(Vec::new());
                    self.handle_plain_http(now, bytes);
                    return;
                }
                self.phase = Phase::Http {
                    head: Vec::new(),
                    served: 0,
                    discard: 0,
                };
            }
            Phase::PlainHttp(_) => {
                self.handle_plain_http(now, bytes);
                return;
            }
            Phase::Http { .. } | Phase::WebSocket(_) => {}
        }
        let mut plain = Vec::new();
        let fed = match self.pipe.feed(bytes, &mut plain) {
            Ok(fed) => fed,
            Err(_) => {
                self.events.push_back(ServerEvent::TlsFailed);
                // A broken handshake is closed without a word (no alert), as nginx does.
                if self.pipe.is_handshaking() {
                    self.pipe.discard_pending();
                    self.close_silently(now);
                } else {
                    self.start_close(now);
                }
                return;
            }
        };
        self.handle_plain(now, &plain);
        if fed.peer_closed {
            self.handle_eof(now);
        }
    }

    /// Hands over decrypted bytes, as if TLS had carried them: the HTTP and WebSocket
    /// parsers without the TLS handshake in front (for fuzzing them).
    #[cfg(feature = "fuzzing")]
    pub fn handle_plaintext(&mut self, now: Instant, plain: &[u8]) {
        self.handle_plain(now, plain);
    }

    fn handle_plain(&mut self, now: Instant, plain: &[u8]) {
        if plain.is_empty() {
            return;
        }
        match &mut self.phase {
            Phase::Http { .. } => self.handle_http(now, plain),
            Phase::WebSocket(_) => self.handle_ws(now, plain),
            Phase::First | Phase::PlainHttp(_) | Phase::Closing => {}
        }
    }

    /// Plain HTTP on the TLS port: nginx reads the request head and answers in clear, 400
    /// with its page for a plain request on an HTTPS port (or its 400 page for a malformed
    /// head), then closes.
    fn handle_plain_http(&mut self, now: Instant, bytes: &[u8]) {
        let max_head = self.shared.config.limits.max_head_bytes;
        let Phase::PlainHttp(head) = &mut self.phase else {
            return;
        };
        head.extend_from_slice(bytes);
        let answer = match http::parse_request(head, max_head) {
            Ok(None) => return,
            Ok(Some(_)) => Answer::PlainHttp,
            Err(_) => Answer::BadRequest,
        };
        let bytes = self
            .shared
            .config
            .site
            .render(answer, false, false, self.wall(now));
        self.pipe.write_raw(&bytes);
        self.events.push_back(ServerEvent::BadRequest);
        self.close_silently(now);
    }

    fn handle_http(&mut self, now: Instant, plain: &[u8]) {
        let limits = &self.shared.config.limits;
        let (max_head, max_requests) = (limits.max_head_bytes, limits.max_requests);
        let Phase::Http { head, .. } = &mut self.phase else {
            return;
        };
        head.extend_from_slice(plain);
        loop {
            let Phase::Http {
                head,
                served,
                discard,
            } = &mut self.phase
            else {
                return;
            };
            // A body nginx reads and throws away before the next request.
            let skip = usize::try_from(*discard)
                .unwrap_or(usize::MAX)
                .min(head.len());
            head.drain(..skip);
            *discard -= skip as u64;
            if *discard > 0 {
                return;
            }
            let (req, len) = match http::parse_request(head, max_head) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return,
                Err(_) => {
                    let answer = self.shared.config.site.render(
                        Answer::BadRequest,
                        false,
                        false,
                        self.wall(now),
                    );
                    self.pipe.write_plain(&answer);
                    self.events.push_back(ServerEvent::BadRequest);
                    self.start_close(now);
                    return;
                }
            };
            let rest = head.split_off(len);
            *served += 1;
            let served = *served;
            let site = &self.shared.config.site;
            if let Some(key) = req
                .upgrade_key
                .as_deref()
                .filter(|_| http::is_secret_path(&req.path, &self.shared.config.path))
            {
                let answer = site.switching_protocols(key, self.wall(now));
                self.pipe.write_plain(&answer);
                self.events.push_back(ServerEvent::Upgraded);
                self.phase = Phase::WebSocket(Box::new(WsSession::new(Role::Server)));
                self.deadline = now + self.shared.config.limits.idle_timeout;
                if !rest.is_empty() {
                    self.handle_ws(now, &rest);
                }
                return;
            }
            let answer = site.route(&req);
            // A body of known length is read and dropped (nginx discards it and keeps the
            // connection); any other body ends it.
            let body = if req.has_body {
                req.content_length
            } else {
                Some(0)
            };
            let keep_alive =
                req.keep_alive && body.is_some_and(|n| n <= MAX_DISCARD) && served < max_requests;
            let bytes = site.render(
                answer,
                req.method == Method::Head,
                keep_alive,
                self.wall(now),
            );
            self.pipe.write_plain(&bytes);
            self.events.push_back(match answer {
                Answer::Page | Answer::NotModified => ServerEvent::PageServed,
                Answer::NotFound => ServerEvent::NotFound,
                Answer::NotAllowed => ServerEvent::NotAllowed,
                Answer::BadRequest | Answer::PlainHttp => ServerEvent::BadRequest,
            });
            if !keep_alive {
                self.start_close(now);
                return;
            }
            self.deadline = now + self.shared.config.limits.keepalive_timeout;
            self.phase = Phase::Http {
                head: rest,
                served,
                discard: body.unwrap_or(0),
            };
        }
    }

    fn handle_ws(&mut self, now: Instant, plain: &[u8]) {
        let Phase::WebSocket(ws) = &mut self.phase else {
            return;
        };
        let records = &mut self.records;
        let result = ws.handle_input(plain, |r| records.push_back(r));
        let output = ws.take_output();
        self.pipe.write_plain(&output);
        match result {
            Ok(()) => self.deadline = now + self.shared.config.limits.idle_timeout,
            Err(WsError::Closed) => {
                self.events.push_back(ServerEvent::PeerClosed);
                self.start_close(now);
            }
            Err(WsError::NotARecord | WsError::Protocol(_)) => {
                self.events.push_back(ServerEvent::BadMessage);
                self.close_ws(now);
            }
        }
    }

    /// The TCP connection ended (or close_notify came) at `now`.
    pub fn handle_eof(&mut self, now: Instant) {
        if matches!(self.phase, Phase::WebSocket(_)) {
            self.events.push_back(ServerEvent::PeerClosed);
        }
        if !matches!(self.phase, Phase::Closing) {
            self.start_close(now);
        }
    }

    /// Runs timers; call at [`Self::next_deadline`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pipe.release_due(now);
        if now < self.deadline {
            return;
        }
        match self.phase {
            Phase::Closing => self.dead = true,
            // Before a TLS handshake is done, nginx closes without a word.
            Phase::First | Phase::PlainHttp(_) => {
                self.events.push_back(ServerEvent::TimedOut);
                self.close_silently(now);
            }
            _ if self.pipe.is_handshaking() => {
                self.events.push_back(ServerEvent::TimedOut);
                self.pipe.discard_pending();
                self.close_silently(now);
            }
            _ => {
                self.events.push_back(ServerEvent::TimedOut);
                self.close_ws(now);
            }
        }
    }

    /// Sends a normal WebSocket close (if open), close_notify, and ends the connection.
    pub fn close(&mut self, now: Instant) {
        if !matches!(self.phase, Phase::Closing) {
            self.close_ws(now);
        }
    }

    fn close_ws(&mut self, now: Instant) {
        if let Phase::WebSocket(ws) = &mut self.phase {
            ws.close();
            let output = ws.take_output();
            self.pipe.write_plain(&output);
        }
        self.start_close(now);
    }

    fn start_close(&mut self, now: Instant) {
        self.pipe.close_notify();
        self.close_silently(now);
    }

    /// Ends the connection once what is queued is out, with no close_notify.
    fn close_silently(&mut self, now: Instant) {
        self.phase = Phase::Closing;
        self.deadline = now + self.shared.config.limits.linger;
    }

    /// Queues one record as a binary message; `false` if it was dropped (not a WebSocket,
    /// closing, or too much queued).
    pub fn send_record(&mut self, record: &Record, now: Instant) -> bool {
        let Phase::WebSocket(ws) = &mut self.phase else {
            return false;
        };
        if self.pipe.pending() >= self.shared.config.limits.max_tx_bytes || !ws.can_write() {
            return false;
        }
        if ws.send(record).is_err() {
            return false;
        }
        let output = ws.take_output();
        self.pipe.write_shaped(&output, now);
        true
    }

    /// The next record received.
    pub fn poll_record(&mut self) -> Option<Record> {
        self.records.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// The bytes to write to the TCP connection.
    pub fn transmit(&self) -> &[u8] {
        self.pipe.transmit()
    }

    /// `n` bytes of [`Self::transmit`] were written.
    pub fn advance_transmit(&mut self, n: usize) {
        self.pipe.advance(n);
    }

    /// When [`Self::handle_timeout`] must run.
    pub fn next_deadline(&self) -> Instant {
        self.pipe
            .held_deadline()
            .map_or(self.deadline, |h| h.min(self.deadline))
    }

    /// Whether this connection is an open WebSocket (a peer).
    pub fn is_websocket(&self) -> bool {
        matches!(self.phase, Phase::WebSocket(_))
    }

    /// Whether every byte this connection will send is queued: once [`Self::transmit`] is
    /// empty, shut the TCP connection's sending side.
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing)
    }

    /// Whether the connection should be dropped now (it closed and lingered long enough).
    pub fn is_dead(&self) -> bool {
        self.dead
    }
}
