//! Transport records: a session's sealed records, and the window that refuses replays.
//!
//! ```text
//! [ counter (8, masked) | ChaCha20-Poly1305 of the 1428-byte body, nonce = counter (1444) ]
//! ```
//!
//! The counter is XORed with the first 8 bytes of a keyed BLAKE3 of the ciphertext's first
//! 16 bytes (a key per direction, derived from the handshake hash), as QUIC protects its
//! packet numbers: the record is random bytes throughout, and a receiver still finds the
//! nonce without trying several. A receiver takes each counter once, within a window of
//! [`WINDOW`] behind the highest it has seen, so a record replayed, or one held back and
//! sent late, is dropped.

use zeroize::Zeroizing;

use crate::{LinkError, RECORD_LEN, Record};

/// Bytes of plaintext a record carries.
pub const PLAIN_LEN: usize = RECORD_LEN - 8 - TAG;
const TAG: usize = 16;
/// How far behind the highest counter seen a record may still arrive.
pub const WINDOW: u64 = 1024;
/// How far ahead of the highest counter seen a record may be (more is a forgery, or a
/// peer so far ahead that something is wrong).
const AHEAD: u64 = 1 << 20;

/// An established session: its keys, its counter and its replay window.
pub struct Session {
    transport: snow::StatelessTransportState,
    hp_send: Zeroizing<[u8; 32]>,
    hp_recv: Zeroizing<[u8; 32]>,
    sent: u64,
    /// The highest counter taken plus one (0: none yet).
    top: u64,
    /// Bit i: counter `top - 1 - i` was taken.
    seen: [u64; (WINDOW / 64) as usize],
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

fn header_mask(key: &[u8; 32], sample: &[u8]) -> [u8; 8] {
    let h = blake3::keyed_hash(key, sample);
    let mut m = [0u8; 8];
    m.copy_from_slice(&h.as_bytes()[..8]);
    m
}

impl Session {
    pub(crate) fn from_handshake(
        state: snow::HandshakeState,
        initiator: bool,
    ) -> Result<Self, LinkError> {
        if !state.is_handshake_finished() {
            return Err(LinkError::Handshake);
        }
        let hash = state.get_handshake_hash().to_vec();
        let up = Zeroizing::new(blake3::derive_key("PhantomBand v1 link header up", &hash));
        let down = Zeroizing::new(blake3::derive_key("PhantomBand v1 link header down", &hash));
        let transport = state
            .into_stateless_transport_mode()
            .map_err(|_| LinkError::Handshake)?;
        let (hp_send, hp_recv) = if initiator { (up, down) } else { (down, up) };
        Ok(Self {
            transport,
            hp_send,
            hp_recv,
            sent: 0,
            top: 0,
            seen: [0; (WINDOW / 64) as usize],
        })
    }

    /// Seals `body` as the next record.
    pub fn seal(&mut self, body: &[u8; PLAIN_LEN]) -> Record {
        let counter = self.sent;
        self.sent += 1;
        let mut record = [0u8; RECORD_LEN];
        // Writing into a buffer of exactly the body plus the tag cannot fail.
        let _ = self
            .transport
            .write_message(counter, body, &mut record[8..]);
        let mask = header_mask(&self.hp_send, &record[8..24]);
        for (i, b) in counter.to_le_bytes().iter().enumerate() {
            record[i] = b ^ mask[i];
        }
        record
    }

    /// Opens `record`: its counter and body, unless it is not ours (or altered), or a
    /// counter already taken or too old.
    pub fn open(&mut self, record: &Record) -> Option<(u64, Zeroizing<[u8; PLAIN_LEN]>)> {
        let mask = header_mask(&self.hp_recv, &record[8..24]);
        let mut c = [0u8; 8];
        for (i, b) in record[..8].iter().enumerate() {
            c[i] = b ^ mask[i];
        }
        let counter = u64::from_le_bytes(c);
        if !self.fresh(counter) {
            return None;
        }
        let mut body = Zeroizing::new([0u8; PLAIN_LEN]);
        match self
            .transport
            .read_message(counter, &record[8..], &mut body[..])
        {
            Ok(PLAIN_LEN) => {
                self.take(counter);
                Some((counter, body))
            }
            _ => None,
        }
    }

    fn fresh(&self, counter: u64) -> bool {
        if counter >= self.top {
            return counter - self.top < AHEAD;
        }
        let behind = self.top - 1 - counter;
        behind < WINDOW && self.seen[(behind / 64) as usize] & (1 << (behind % 64)) == 0
    }

    fn take(&mut self, counter: u64) {
        if counter >= self.top {
            let shift = counter + 1 - self.top;
            self.shift(shift);
            self.top = counter + 1;
        }
        let behind = self.top - 1 - counter;
        self.seen[(behind / 64) as usize] |= 1 << (behind % 64);
    }

    /// Moves the window `by` counters on: bit i becomes bit i + by.
    fn shift(&mut self, by: u64) {
        if by >= WINDOW {
            self.seen = [0; (WINDOW / 64) as usize];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        let n = self.seen.len();
        for i in (0..n).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| self.seen[j]);
            let carry = i
                .checked_sub(words + 1)
                .filter(|_| bits > 0)
                .map_or(0, |j| self.seen[j] >> (64 - bits));
            self.seen[i] = if bits == 0 { lo } else { lo << bits | carry };
        }
    }

    /// Records sealed so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}
