//! The client's side, sans-IO: TLS with the gateway's key pinned, the upgrade request a
//! browser sends, the check of the `101`, then records as binary messages.

use std::{collections::VecDeque, sync::Arc, time::Instant};

use base64::Engine as _;
use pb_transport::{CarrierError, Record};
use rustls::pki_types::ServerName;
use tungstenite::protocol::Role;

use crate::{
    ALPN, ConfigError, WssClientConfig,
    http::accept_key,
    tls_pipe::TlsPipe,
    ws::{WsError, WsSession},
};

/// Bytes of the gateway's response head at most.
const MAX_RESPONSE_HEAD: usize = 8192;

enum Phase {
    /// Waiting for the `101`; `head` holds the response so far.
    Upgrading {
        head: Vec<u8>,
        accept: String,
    },
    Open(Box<WsSession>),
    /// Closed or failed: nothing more is read.
    Done,
}

/// A client's connection to a gateway's WebSocket.
pub struct ClientCore {
    pipe: TlsPipe,
    phase: Phase,
    deadline: Instant,
    idle_timeout: std::time::Duration,
    max_tx_bytes: usize,
    records: VecDeque<Record>,
}

impl core::fmt::Debug for ClientCore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientCore").finish_non_exhaustive()
    }
}

/// The upgrade request, header for header as Chrome sends it over HTTP/1.1.
fn upgrade_request(config: &WssClientConfig, key: &str) -> String {
    let host = if config.port == 443 {
        config.server_name.clone()
    } else {
        format!("{}:{}", config.server_name, config.port)
    };
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Connection: Upgrade\r\n\
         Pragma: no-cache\r\n\
         Cache-Control: no-cache\r\n\
         User-Agent: {ua}\r\n\
         Upgrade: websocket\r\n\
         Origin: https://{host}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n",
        path = config.path.as_str(),
        ua = config.user_agent,
    )
}

impl ClientCore {
    /// A connection started at `now`; `key` is 16 random bytes (the `Sec-WebSocket-Key`).
    pub fn new(config: &WssClientConfig, key: [u8; 16], now: Instant) -> Result<Self, ConfigError> {
        let tls = pb_transport::tls::client_config(config.pin, &[ALPN])
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let name = ServerName::try_from(config.server_name.clone())
            .map_err(|_| ConfigError::BadServerName)?;
        let tls = rustls::ClientConnection::new(Arc::new(tls), name)
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let mut pipe = TlsPipe::new(tls);
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        // Sent as soon as the TLS handshake is done.
        pipe.write_plain(upgrade_request(config, &key).as_bytes());
        Ok(Self {
            pipe,
            phase: Phase::Upgrading {
                head: Vec::new(),
                accept: accept_key(&key),
            },
            deadline: now + config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            max_tx_bytes: config.max_tx_bytes,
            records: VecDeque::new(),
        })
    }

    fn fail(&mut self, error: CarrierError) -> Result<(), CarrierError> {
        self.phase = Phase::Done;
        Err(error)
    }

    /// Hands over bytes read from the TCP connection at `now`. An error means the
    /// connection is dead (its last bytes, an alert or a close, may still be in
    /// [`Self::transmit`]).
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) -> Result<(), CarrierError> {
        if matches!(self.phase, Phase::Done) {
            return Err(CarrierError::Closed("the connection was closed".into()));
        }
        let mut plain = Vec::new();
        let fed = match self.pipe.feed(bytes, &mut plain) {
            Ok(fed) => fed,
            Err(e) => {
                let open = matches!(self.phase, Phase::Open(_));
                return self.fail(if open {
                    CarrierError::Closed(format!("TLS: {e}"))
                } else {
                    CarrierError::Handshake(format!("TLS: {e}"))
                });
            }
        };
        self.handle_plain(now, plain)?;
        if fed.peer_closed {
            return self.handle_eof();
        }
        Ok(())
    }

    /// Hands over decrypted bytes, as if TLS had carried them: the response and WebSocket
    /// parsers without the TLS handshake in front (for fuzzing them).
    #[cfg(feature = "fuzzing")]
    pub fn handle_plaintext(&mut self, now: Instant, plain: &[u8]) -> Result<(), CarrierError> {
        if matches!(self.phase, Phase::Done) {
            return Err(CarrierError::Closed("the connection was closed".into()));
        }
        self.handle_plain(now, plain.to_vec())
    }

    fn handle_plain(&mut self, now: Instant, mut plain: Vec<u8>) -> Result<(), CarrierError> {
        if let Phase::Upgrading { head, .. } = &mut self.phase {
            head.extend_from_slice(&plain);
            plain.clear();
            match self.check_response() {
                Ok(Some(rest)) => {
                    self.phase = Phase::Open(Box::new(WsSession::new(Role::Client)));
                    self.deadline = now + self.idle_timeout;
                    plain = rest;
                }
                Ok(None) => {}
                Err(e) => return self.fail(e),
            }
        }
        if let Phase::Open(ws) = &mut self.phase
            && !plain.is_empty()
        {
            let records = &mut self.records;
            let result = ws.handle_input(&plain, |r| records.push_back(r));
            let output = ws.take_output();
            self.pipe.write_plain(&output);
            match result {
                Ok(()) => self.deadline = now + self.idle_timeout,
                Err(WsError::Closed) => {
                    self.pipe.close_notify();
                    let e = CarrierError::Closed("the gateway closed the WebSocket".into());
                    return self.fail(e);
                }
                Err(e) => {
                    self.close();
                    return self.fail(CarrierError::Closed(e.to_string()));
                }
            }
        }
        Ok(())
    }

    /// Reads the response head once complete: the bytes after it, if it is a valid `101`.
    fn check_response(&mut self) -> Result<Option<Vec<u8>>, CarrierError> {
        let Phase::Upgrading { head, accept } = &mut self.phase else {
            return Ok(None);
        };
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let handshake = |what: &str| CarrierError::Handshake(what.to_owned());
        let len = match response.parse(head) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if head.len() < MAX_RESPONSE_HEAD => return Ok(None),
            Ok(httparse::Status::Partial) => return Err(handshake("response head too long")),
            Err(e) => return Err(handshake(&format!("not an HTTP response: {e}"))),
        };
        if response.code != Some(101) {
            let code = response.code.unwrap_or(0);
            return Err(handshake(&format!("the gateway answered {code}, not 101")));
        }
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.trim_ascii())
        };
        let is = |name: &str, want: &str| {
            header(name).is_some_and(|v| v.eq_ignore_ascii_case(want.as_bytes()))
        };
        if !is("upgrade", "websocket") || !is("connection", "upgrade") {
            return Err(handshake("the 101 does not upgrade to websocket"));
        }
        if header("sec-websocket-accept") != Some(accept.as_bytes()) {
            return Err(handshake("wrong Sec-WebSocket-Accept"));
        }
        if header("sec-websocket-extensions").is_some()
            || header("sec-websocket-protocol").is_some()
        {
            return Err(handshake("the gateway chose an extension or subprotocol"));
        }
        Ok(Some(head.split_off(len)))
    }

    /// The TCP connection ended (or close_notify came).
    pub fn handle_eof(&mut self) -> Result<(), CarrierError> {
        let error = match self.phase {
            Phase::Upgrading { .. } => {
                CarrierError::Handshake("the gateway closed before the upgrade".into())
            }
            _ => CarrierError::Closed("the gateway closed the connection".into()),
        };
        self.fail(error)
    }

    /// Runs timers; call at [`Self::next_deadline`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CarrierError> {
        self.pipe.release_due(now);
        if now < self.deadline {
            return Ok(());
        }
        let error = match self.phase {
            Phase::Upgrading { .. } => CarrierError::Handshake("timed out".into()),
            Phase::Open(_) => CarrierError::Closed("nothing received for too long".into()),
            Phase::Done => return Ok(()),
        };
        self.close();
        self.fail(error)
    }

    /// Sends a normal WebSocket close (if open) and close_notify.
    pub fn close(&mut self) {
        if let Phase::Open(ws) = &mut self.phase {
            ws.close();
            let output = ws.take_output();
            self.pipe.write_plain(&output);
        }
        if !matches!(self.phase, Phase::Done) {
            self.pipe.close_notify();
        }
        self.phase = Phase::Done;
    }

    /// Whether records can flow.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Whether the TLS handshake is still running.
    pub fn is_tls_handshaking(&self) -> bool {
        self.pipe.is_handshaking()
    }

    /// Queues one record at `now`, cut into TLS records of drawn sizes; `false` if it was
    /// dropped (not open, or too much queued).
    pub fn send_record(&mut self, record: &Record, now: Instant) -> bool {
        let Phase::Open(ws) = &mut self.phase else {
            return false;
        };
        if self.pipe.pending() >= self.max_tx_bytes || ws.send(record).is_err() {
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
}
