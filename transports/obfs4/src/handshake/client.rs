//! The client side: send the hello, then read until the server hello and check it.

use std::fmt;
use std::time::SystemTime;

use crate::crypto::{self, EphemeralKey, MarkKey, Transcript};
use crate::error::HandshakeError;
use crate::handshake::{
    AUTH_LENGTH, EpochHour, Established, MAC_LENGTH, MARK_LENGTH, REPRESENTATIVE_LENGTH,
};
use crate::identity::Cert;
use crate::{Entropy, MAX_HANDSHAKE_LENGTH, uniform_inclusive};

/// Client padding: at least enough that the hello is as long as the server's shortest reply
/// with its seed frame ((96 + 45) - 64), at most up to the handshake limit.
const CLIENT_MIN_PADDING: usize = 77;
const CLIENT_MAX_PADDING: usize =
    MAX_HANDSHAKE_LENGTH - (REPRESENTATIVE_LENGTH + MARK_LENGTH + MAC_LENGTH);
/// The shortest server hello: Y', AUTH, no padding, M_S, MAC_S.
const SERVER_MIN_HELLO: usize = REPRESENTATIVE_LENGTH + AUTH_LENGTH + MARK_LENGTH + MAC_LENGTH;

/// A client handshake waiting for the server hello.
///
/// Build it before connecting (the Elligator2 key search takes a variable time), send
/// [`ClientHandshake::hello`], send nothing else, and feed what arrives to
/// [`ClientHandshake::handle_bytes`].
pub struct ClientHandshake {
    cert: Cert,
    mark_key: MarkKey,
    ephemeral: EphemeralKey,
    epoch_text: Vec<u8>,
    hello: Vec<u8>,
    received: Vec<u8>,
}

impl fmt::Debug for ClientHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHandshake")
            .field("hello", &self.hello.len())
            .field("received", &self.received.len())
            .finish_non_exhaustive()
    }
}

/// What feeding bytes to a client handshake gave.
#[derive(Debug)]
pub enum ClientProgress {
    /// The server hello is not complete yet.
    NeedMore(ClientHandshake),
    /// The server proved it holds the cert's key; the session's framers.
    Done(Established),
}

impl ClientHandshake {
    /// A new handshake with the bridge `cert`; `now` fixes the epoch hour in the MAC.
    pub fn new(cert: &Cert, rng: &mut dyn Entropy, now: SystemTime) -> Self {
        let ephemeral = EphemeralKey::generate(rng);
        let padding_length = uniform_inclusive(rng, CLIENT_MIN_PADDING, CLIENT_MAX_PADDING);
        let mut padding = vec![0u8; padding_length];
        rng.fill_bytes(&mut padding);

        let mark_key = MarkKey::new(&cert.public_key, &cert.node_id);
        let epoch_text = EpochHour::at(now).text();
        let representative = ephemeral.representative();
        let mark = mark_key.mac128(&[representative]);
        let mac = mark_key.mac128(&[representative, &padding, &mark, &epoch_text]);
        let hello = [&representative[..], &padding, &mark, &mac].concat();
        Self {
            cert: *cert,
            mark_key,
            ephemeral,
            epoch_text,
            hello,
            received: Vec::new(),
        }
    }

    /// The client hello, to be sent whole before anything else.
    pub fn hello(&self) -> &[u8] {
        &self.hello
    }

    /// Takes bytes from the server. On `Done`, bytes after the server hello (its seed frame
    /// and anything later) are already in the decoder.
    pub fn handle_bytes(mut self, bytes: &[u8]) -> Result<ClientProgress, HandshakeError> {
        self.received.extend_from_slice(bytes);
        if self.received.len() < SERVER_MIN_HELLO {
            return Ok(ClientProgress::NeedMore(self));
        }
        let Some(mark_at) = self.find_server_mark() else {
            if self.received.len() >= MAX_HANDSHAKE_LENGTH {
                return Err(HandshakeError::MarkNotFound);
            }
            return Ok(ClientProgress::NeedMore(self));
        };
        let mac_at = mark_at + MARK_LENGTH;
        let expected_mac = self
            .mark_key
            .mac128(&[&self.received[..mac_at], &self.epoch_text]);
        if !crypto::mac_eq(&expected_mac, &self.received[mac_at..mac_at + MAC_LENGTH]) {
            return Err(HandshakeError::BadMac);
        }

        let mut representative = [0u8; REPRESENTATIVE_LENGTH];
        representative.copy_from_slice(&self.received[..REPRESENTATIVE_LENGTH]);
        let server_public = crypto::decode_representative(&representative);
        let s1 = crypto::x25519(self.ephemeral.secret(), &server_public)?;
        let s2 = crypto::x25519(self.ephemeral.secret(), &self.cert.public_key.0)?;
        let transcript = Transcript {
            identity: &self.cert.public_key,
            node_id: &self.cert.node_id,
            client_public: self.ephemeral.public(),
            server_public: &server_public,
        };
        let ntor = crypto::ntor(&s1, &s2, &transcript);
        let sent_auth = &self.received[REPRESENTATIVE_LENGTH..REPRESENTATIVE_LENGTH + AUTH_LENGTH];
        if !crypto::mac_eq(&ntor.auth, sent_auth) {
            return Err(HandshakeError::BadAuth);
        }

        let mut established = Established::client(&crypto::expand_keys(&ntor.key_seed));
        established
            .decoder
            .handle_bytes(&self.received[mac_at + MAC_LENGTH..]);
        Ok(ClientProgress::Done(established))
    }

    /// Where M_S starts: a substring search after Y' and AUTH within the first 8192 bytes,
    /// with room for MAC_S after it (the server may send frames right behind its hello).
    fn find_server_mark(&self) -> Option<usize> {
        let mut representative = [0u8; REPRESENTATIVE_LENGTH];
        representative.copy_from_slice(&self.received[..REPRESENTATIVE_LENGTH]);
        let mark = self.mark_key.mac128(&[&representative]);
        let start = REPRESENTATIVE_LENGTH + AUTH_LENGTH;
        let end = self.received.len().min(MAX_HANDSHAKE_LENGTH);
        let found = self.received[start..end]
            .windows(MARK_LENGTH)
            .position(|window| window == mark)?;
        let mark_at = start + found;
        (mark_at + MARK_LENGTH + MAC_LENGTH <= end).then_some(mark_at)
    }
}
