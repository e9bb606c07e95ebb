//! rustls as a sans-IO pipe: TCP bytes in, plaintext out; plaintext in, TCP bytes queued.
//! The link's records are written shaped ([`TlsPipe::write_shaped`]): cut into TLS records of
//! drawn sizes rather than one TLS record per WebSocket frame.

use std::{
    io::{self, Read, Write},
    time::{Duration, Instant},
};

/// The smallest and largest TLS record (plaintext bytes) of shaped writes: each record's
/// size is drawn uniformly between them, so that record and segment sizes do not repeat the
/// 1456- and 1460-byte frames of the link's records.
const SHAPED_RECORD: core::ops::RangeInclusive<usize> = 200..=3000;
/// The longest shaped bytes wait for the next shaped write to fill their record (about two
/// slots of the default link): then they go as a record of their own.
const SHAPED_HOLD: Duration = Duration::from_millis(20);

/// A TLS connection (either side) with its queue of bytes for the TCP socket.
pub(crate) struct TlsPipe {
    tls: rustls::Connection,
    tx: Vec<u8>,
    /// Bytes at the front of `tx` already handed to the socket.
    tx_sent: usize,
    /// Shaped plaintext waiting to fill the next TLS record's drawn size, and since when.
    held: Vec<u8>,
    held_since: Option<Instant>,
    /// That size.
    next_record: usize,
    /// The draws' generator (xorshift64*, seeded from the OS): sizes only, no secret.
    draws: u64,
}

/// What feeding bytes gave.
#[derive(Debug, Default)]
pub(crate) struct Fed {
    /// The peer sent close_notify: no more data will come.
    pub peer_closed: bool,
}

impl core::fmt::Debug for TlsPipe {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsPipe")
            .field("tx", &self.pending())
            .finish_non_exhaustive()
    }
}

impl TlsPipe {
    pub(crate) fn new(tls: impl Into<rustls::Connection>) -> Self {
        let mut tls = tls.into();
        // Writes are taken whole; the cores bound what they queue by `pending` instead.
        tls.set_buffer_limit(None);
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        let mut pipe = Self {
            tls,
            tx: Vec::new(),
            tx_sent: 0,
            held: Vec::new(),
            held_since: None,
            next_record: *SHAPED_RECORD.start(),
            draws: u64::from_le_bytes(seed) | 1,
        };
        pipe.next_record = pipe.draw();
        pipe.pull();
        pipe
    }

    /// Hands over TCP bytes; appends the plaintext they carry to `plain`. An error is fatal
    /// (its alert, if any, is queued for the peer).
    pub(crate) fn feed(&mut self, bytes: &[u8], plain: &mut Vec<u8>) -> Result<Fed, rustls::Error> {
        let mut rd = bytes;
        let mut fed = Fed::default();
        // An empty read would tell rustls the TCP stream ended: only read what is there.
        while !rd.is_empty() {
            match self.tls.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(_) => {}
                // rustls refuses bytes only when its plaintext buffer is full, and it is
                // drained below on every turn; treat it as the peer's fault if it happens.
                Err(_) => return Err(rustls::Error::General("TLS input refused".into())),
            }
            let result = self.tls.process_new_packets();
            fed.peer_closed |= self.drain_plaintext(plain);
            self.pull();
            result?;
        }
        Ok(fed)
    }

    /// Moves the decrypted bytes to `plain`; whether the peer closed.
    fn drain_plaintext(&mut self, plain: &mut Vec<u8>) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    /// Queues plaintext (sent once the handshake is done, if it is not yet), after any
    /// shaped bytes held.
    pub(crate) fn write_plain(&mut self, data: &[u8]) {
        self.release_held();
        self.encrypt(data);
    }

    fn encrypt(&mut self, data: &[u8]) {
        // Writing to rustls's unbounded buffer cannot fail or come up short; each write is
        // one TLS record (or more, past 16 KiB).
        let _ = self.tls.writer().write_all(data);
        self.pull();
    }

    /// Queues plaintext cut into TLS records of drawn sizes at `now`: what does not fill
    /// the next record waits for the next shaped write (the link writes every slot), for
    /// [`SHAPED_HOLD`] at most ([`Self::release_due`]), or for any other write or close.
    pub(crate) fn write_shaped(&mut self, data: &[u8], now: Instant) {
        self.held.extend_from_slice(data);
        while self.held.len() >= self.next_record {
            let rest = self.held.split_off(self.next_record);
            let record = core::mem::replace(&mut self.held, rest);
            self.encrypt(&record);
            self.next_record = self.draw();
            self.held_since = None;
        }
        if !self.held.is_empty() && self.held_since.is_none() {
            self.held_since = Some(now);
        }
    }

    /// When shaped bytes held must go whatever comes, if any are held.
    pub(crate) fn held_deadline(&self) -> Option<Instant> {
        self.held_since.map(|t| t + SHAPED_HOLD)
    }

    /// Sends the shaped bytes held if they waited long enough by `now`.
    pub(crate) fn release_due(&mut self, now: Instant) {
        if self.held_deadline().is_some_and(|at| at <= now) {
            self.release_held();
        }
    }

    fn release_held(&mut self) {
        self.held_since = None;
        if !self.held.is_empty() {
            let held = core::mem::take(&mut self.held);
            self.encrypt(&held);
            self.next_record = self.draw();
        }
    }

    /// The next shaped record's size.
    fn draw(&mut self) -> usize {
        self.draws ^= self.draws >> 12;
        self.draws ^= self.draws << 25;
        self.draws ^= self.draws >> 27;
        let x = self.draws.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let span = (SHAPED_RECORD.end() - SHAPED_RECORD.start() + 1) as u64;
        SHAPED_RECORD.start() + (x % span) as usize
    }

    /// Queues close_notify (after any shaped bytes held).
    pub(crate) fn close_notify(&mut self) {
        self.release_held();
        self.tls.send_close_notify();
        self.pull();
    }

    /// Forgets every byte not yet handed to the socket (a connection closed without a word).
    pub(crate) fn discard_pending(&mut self) {
        self.tx.clear();
        self.tx_sent = 0;
    }

    /// Queues bytes for the socket as they are, outside TLS.
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) {
        self.tx.extend_from_slice(bytes);
    }

    /// Whether the TLS handshake is still running.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.tls.is_handshaking()
    }

    /// Moves rustls's queued TLS records to `tx`.
    fn pull(&mut self) {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.tx) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// The bytes waiting for the socket.
    pub(crate) fn transmit(&self) -> &[u8] {
        &self.tx[self.tx_sent..]
    }

    /// `n` bytes of [`Self::transmit`] went to the socket.
    pub(crate) fn advance(&mut self, n: usize) {
        self.tx_sent = (self.tx_sent + n).min(self.tx.len());
        if self.tx_sent == self.tx.len() {
            self.tx.clear();
            self.tx_sent = 0;
        } else if self.tx_sent > 64 * 1024 {
            self.tx.drain(..self.tx_sent);
            self.tx_sent = 0;
        }
    }

    /// Bytes waiting for the socket (shaped bytes held included).
    pub(crate) fn pending(&self) -> usize {
        self.tx.len() - self.tx_sent + self.held.len()
    }
}
