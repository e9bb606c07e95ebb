//! The server side, in three visible stages: find and MAC-check the client hello
//! ([`VerifiedHello`]), refuse replays ([`FreshHello`]), answer ([`ServerHandshake::respond`]).

use std::fmt;
use std::time::SystemTime;

use zeroize::Zeroizing;

use crate::crypto::{self, EphemeralKey, MarkKey, Transcript};
use crate::error::HandshakeError;
use crate::framing::PrngSeed;
use crate::handshake::{EpochHour, Established, MAC_LENGTH, MARK_LENGTH, REPRESENTATIVE_LENGTH};
use crate::identity::{IdentityPublicKey, NodeId, ServerIdentity};
use crate::replay::ReplayFilter;
use crate::{Entropy, MAX_HANDSHAKE_LENGTH, uniform_inclusive};

/// The smallest client padding obfs4proxy accepts (the client's minimum).
const CLIENT_MIN_PADDING: usize = 77;
/// Server padding: up to what leaves room for the hello and the 45-byte seed frame in 8192.
const SERVER_MIN_PADDING: usize = 0;
const SERVER_MAX_PADDING: usize = MAX_HANDSHAKE_LENGTH - (96 + 45);

/// A server handshake waiting for a client hello. Make one per accepted connection.
pub struct ServerHandshake {
    node_id: NodeId,
    public_key: IdentityPublicKey,
    secret: Zeroizing<[u8; 32]>,
    mark_key: MarkKey,
    prng_seed: PrngSeed,
    ephemeral: EphemeralKey,
    padding_length: usize,
    received: Vec<u8>,
}

impl fmt::Debug for ServerHandshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandshake")
            .field("node_id", &self.node_id)
            .field("received", &self.received.len())
            .finish_non_exhaustive()
    }
}

/// What feeding bytes to a server handshake gave.
#[derive(Debug)]
pub enum ServerProgress {
    /// The client hello is not complete yet.
    NeedMore(ServerHandshake),
    /// The client hello was valid and fresh.
    Done {
        /// The server hello and the inline seed frame, to be sent in one write.
        reply: Vec<u8>,
        /// The session's framers.
        established: Established,
    },
}

/// A client hello whose mark and MAC checked out for one of the epoch hours E-1, E, E+1.
struct VerifiedHello {
    representative: [u8; REPRESENTATIVE_LENGTH],
    mac: [u8; MAC_LENGTH],
    /// The client's epoch hour, which the server hello's MAC must use.
    epoch_text: Vec<u8>,
}

/// A verified hello whose MAC the replay filter had not seen.
struct FreshHello(VerifiedHello);

impl ServerHandshake {
    /// A handshake for `identity`, announcing `prng_seed` (obfs4proxy's `drbg-seed`) in the
    /// seed frame. The ephemeral key is made now, before any byte is read.
    pub fn new(identity: &ServerIdentity, prng_seed: PrngSeed, rng: &mut dyn Entropy) -> Self {
        let ephemeral = EphemeralKey::generate(rng);
        let padding_length = uniform_inclusive(rng, SERVER_MIN_PADDING, SERVER_MAX_PADDING);
        Self {
            node_id: identity.node_id(),
            public_key: identity.public_key(),
            secret: Zeroizing::new(*identity.secret()),
            mark_key: MarkKey::new(&identity.public_key(), &identity.node_id()),
            prng_seed,
            ephemeral,
            padding_length,
            received: Vec::new(),
        }
    }

    /// Takes bytes from the client. On an error, obfs4proxy keeps reading and discarding for
    /// 30 to 89 seconds before closing rather than answer; the caller should do likewise.
    pub fn handle_bytes(
        mut self,
        bytes: &[u8],
        now: SystemTime,
        replay: &mut ReplayFilter,
        rng: &mut dyn Entropy,
    ) -> Result<ServerProgress, HandshakeError> {
        self.received.extend_from_slice(bytes);
        let Some(verified) = self.verify_hello(EpochHour::at(now))? else {
            return Ok(ServerProgress::NeedMore(self));
        };
        let fresh = refuse_replay(verified, now, replay)?;
        let (reply, established) = self.respond(fresh, rng)?;
        Ok(ServerProgress::Done { reply, established })
    }

    /// Finds M_C as the 32 bytes before the end (the client sends nothing after its MAC) and
    /// checks MAC_C against E, E-1 and E+1, all three evaluated.
    fn verify_hello(&self, epoch: EpochHour) -> Result<Option<VerifiedHello>, HandshakeError> {
        let received = &self.received;
        if received.len() < REPRESENTATIVE_LENGTH + MARK_LENGTH + MAC_LENGTH {
            return Ok(None);
        }
        let end = received.len().min(MAX_HANDSHAKE_LENGTH);
        let mark_at = end - (MARK_LENGTH + MAC_LENGTH);
        let mut representative = [0u8; REPRESENTATIVE_LENGTH];
        representative.copy_from_slice(&received[..REPRESENTATIVE_LENGTH]);
        let mark = self.mark_key.mac128(&[&representative]);
        let mark_found = mark_at >= REPRESENTATIVE_LENGTH + CLIENT_MIN_PADDING
            && crypto::mac_eq(&mark, &received[mark_at..mark_at + MARK_LENGTH]);
        if !mark_found {
            if received.len() >= MAX_HANDSHAKE_LENGTH {
                return Err(HandshakeError::MarkNotFound);
            }
            return Ok(None);
        }

        let mac_at = mark_at + MARK_LENGTH;
        let sent_mac = &received[mac_at..mac_at + MAC_LENGTH];
        let candidates = [
            Some(epoch.0),
            epoch.0.checked_sub(1),
            epoch.0.checked_add(1),
        ];
        let mut accepted = None;
        for hour in candidates.into_iter().flatten() {
            let epoch_text = EpochHour(hour).text();
            let expected = self.mark_key.mac128(&[&received[..mac_at], &epoch_text]);
            if crypto::mac_eq(&expected, sent_mac) && accepted.is_none() {
                accepted = Some(epoch_text);
            }
        }
        let epoch_text = accepted.ok_or(HandshakeError::BadMac)?;
        if received.len() > mac_at + MAC_LENGTH {
            return Err(HandshakeError::TrailingData);
        }
        let mut mac = [0u8; MAC_LENGTH];
        mac.copy_from_slice(sent_mac);
        Ok(Some(VerifiedHello {
            representative,
            mac,
            epoch_text,
        }))
    }

    /// Runs ntor and builds `Y' | AUTH | P_S | M_S | MAC_S | seed frame`.
    fn respond(
        self,
        hello: FreshHello,
        rng: &mut dyn Entropy,
    ) -> Result<(Vec<u8>, Established), HandshakeError> {
        let FreshHello(hello) = hello;
        let client_public = crypto::decode_representative(&hello.representative);
        let s1 = crypto::x25519(self.ephemeral.secret(), &client_public)?;
        let s2 = crypto::x25519(&self.secret, &client_public)?;
        let transcript = Transcript {
            identity: &self.public_key,
            node_id: &self.node_id,
            client_public: &client_public,
            server_public: self.ephemeral.public(),
        };
        let ntor = crypto::ntor(&s1, &s2, &transcript);

        let mut padding = vec![0u8; self.padding_length];
        rng.fill_bytes(&mut padding);
        let representative = self.ephemeral.representative();
        let mark = self.mark_key.mac128(&[representative]);
        let mac = self.mark_key.mac128(&[
            representative,
            &ntor.auth,
            &padding,
            &mark,
            &hello.epoch_text,
        ]);
        let mut reply = [&representative[..], &ntor.auth, &padding, &mark, &mac].concat();

        let mut established = Established::server(&crypto::expand_keys(&ntor.key_seed));
        established
            .encoder
            .encode_prng_seed(&self.prng_seed, &mut reply)?;
        Ok((reply, established))
    }
}

fn refuse_replay(
    hello: VerifiedHello,
    now: SystemTime,
    replay: &mut ReplayFilter,
) -> Result<FreshHello, HandshakeError> {
    if replay.test_and_set(now, &hello.mac) {
        return Err(HandshakeError::Replayed);
    }
    Ok(FreshHello(hello))
}
