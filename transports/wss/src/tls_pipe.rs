//! rustls as a sans-IO pipe: TCP bytes in, plaintext out; plaintext in, TCP bytes queued.

use std::io::{self, Read, Write};

/// A TLS connection (either side) with its queue of bytes for the TCP socket.
pub(crate) struct TlsPipe {
    tls: rustls::Connection,
    tx: Vec<u8>,
    /// Bytes at the front of `tx` already handed to the socket.
    tx_sent: usize,
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
        let mut pipe = Self {
            tls,
            tx: Vec::new(),
            tx_sent: 0,
        };
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

    /// Queues plaintext (sent once the handshake is done, if it is not yet).
    pub(crate) fn write_plain(&mut self, data: &[u8]) {
        // Writing to rustls's unbounded buffer cannot fail or come up short.
        let _ = self.tls.writer().write_all(data);
        self.pull();
    }

    /// Queues close_notify.
    pub(crate) fn close_notify(&mut self) {
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

    /// Bytes waiting for the socket.
    pub(crate) fn pending(&self) -> usize {
        self.tx.len() - self.tx_sent
    }
}
