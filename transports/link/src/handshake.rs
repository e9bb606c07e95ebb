//! The handshake: Noise `NK` behind a stateless cookie, in masked records.
//!
//! ```text
//! client                                              gateway
//!   init   [nonce 16 | mask_up(type 1, cookie 0, noise e es, 0…, mac1)]  ──▶  mac1 checked (one hash)
//!          ◀──  [nonce 16 | mask_down(type 2, cookie, mac1 echoed)]       cookie for the source, nothing kept
//!   init   [nonce 16 | mask_up(type 1, cookie, noise e es, 0…, mac1)]    ──▶  cookie checked, then Noise
//!          ◀──  [nonce 16 | mask_down(type 3, noise e ee, mac1 echoed)]   the session is kept from here
//! ```
//!
//! `mask_up` and `mask_down` XOR a BLAKE3 keystream keyed by a key derived from the
//! gateway's static public key and drawn from the record's random nonce; `mac1` is a keyed
//! BLAKE3 of the nonce and everything before it (it ends the record), under another key derived from that public
//! key. So to anyone who does not know the gateway's key every record is random bytes, and
//! the gateway drops a stranger's record after one hash, saying nothing. Only an address
//! that received its cookie gets a handshake: a spoofed source never does, and the gateway
//! answers every record with at most one record, so the link cannot amplify.

use std::{net::SocketAddr, time::Duration};

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

use crate::{LinkError, RECORD_LEN, Record, record::Session};

const PATTERN: &str = "Noise_NK_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"PhantomBand client link v1";
/// A cookie is valid in the period it was made in and the next.
pub const COOKIE_PERIOD: Duration = Duration::from_secs(60);

/// Random bytes at the start of every handshake record.
pub const NONCE: usize = 16;
const INIT: u8 = 1;
const COOKIE: u8 = 2;
const RESPONSE: u8 = 3;
/// Noise's first message: the ephemeral key, then the 16-byte payload sealed.
const MSG1: usize = 32 + PAYLOAD + 16;
/// The second: the gateway's ephemeral key, then its payload sealed.
const MSG2: usize = 32 + PAYLOAD + 16;
const PAYLOAD: usize = 16;
/// Where an init's MAC sits in its unmasked body: the last 16 bytes, covering all before.
const MAC1_AT: usize = RECORD_LEN - NONCE - 16;
const VERSION: u8 = 1;

/// A cookie: proof that an address receives what the gateway sends it.
pub type Cookie = [u8; 16];

/// What a client asks for and a gateway grants: records a second each way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rates {
    /// Gateway to client.
    pub down: u16,
    /// Client to gateway.
    pub up: u16,
}

impl Rates {
    fn encode(self) -> [u8; PAYLOAD] {
        let mut p = [0u8; PAYLOAD];
        p[0] = VERSION;
        p[1..3].copy_from_slice(&self.down.to_be_bytes());
        p[3..5].copy_from_slice(&self.up.to_be_bytes());
        p
    }

    fn decode(p: &[u8]) -> Option<Self> {
        if p.len() != PAYLOAD || p[0] != VERSION {
            return None;
        }
        Some(Self {
            down: u16::from_be_bytes([p[1], p[2]]),
            up: u16::from_be_bytes([p[3], p[4]]),
        })
    }
}

/// A gateway's static link key. Never printed.
pub struct GatewayKey {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl core::fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GatewayKey").finish_non_exhaustive()
    }
}

impl GatewayKey {
    /// The key whose secret scalar is `secret` (clamped as X25519 clamps).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let s = x25519_dalek::StaticSecret::from(secret);
        let public = x25519_dalek::PublicKey::from(&s).to_bytes();
        Self {
            secret: Zeroizing::new(s.to_bytes()),
            public,
        }
    }

    /// The public half: what descriptors and network files carry.
    pub fn public(&self) -> [u8; 32] {
        self.public
    }
}

/// The keys both sides derive from the gateway's public key.
#[derive(Clone)]
pub(crate) struct Masks {
    up: [u8; 32],
    down: [u8; 32],
    mac1: [u8; 32],
}

impl Masks {
    pub(crate) fn new(gateway: &[u8; 32]) -> Self {
        Self {
            up: blake3::derive_key("PhantomBand v1 link mask up", gateway),
            down: blake3::derive_key("PhantomBand v1 link mask down", gateway),
            mac1: blake3::derive_key("PhantomBand v1 link mac1", gateway),
        }
    }
}

/// XORs the keystream of `key` and `nonce` into `data`.
fn mask(key: &[u8; 32], nonce: &[u8], data: &mut [u8]) {
    let mut stream = blake3::Hasher::new_keyed(key).update(nonce).finalize_xof();
    let mut block = [0u8; 64];
    for chunk in data.chunks_mut(64) {
        stream.fill(&mut block[..chunk.len()]);
        for (d, k) in chunk.iter_mut().zip(block.iter()) {
            *d ^= k;
        }
    }
}

fn mac1(key: &[u8; 32], nonce: &[u8], body: &[u8]) -> [u8; 16] {
    let hash = blake3::Hasher::new_keyed(key)
        .update(nonce)
        .update(body)
        .finalize();
    let mut m = [0u8; 16];
    m.copy_from_slice(&hash.as_bytes()[..16]);
    m
}

/// Builds a masked record: `nonce`, then `plain` (zero-padded) masked with `key`.
fn seal_record(key: &[u8; 32], nonce: [u8; NONCE], plain: &[u8]) -> Record {
    let mut record = [0u8; RECORD_LEN];
    record[..NONCE].copy_from_slice(&nonce);
    record[NONCE..NONCE + plain.len()].copy_from_slice(plain);
    let (n, rest) = record.split_at_mut(NONCE);
    mask(key, n, rest);
    record
}

/// The unmasked body of a record under `key`.
fn open_record(key: &[u8; 32], record: &Record) -> Zeroizing<Vec<u8>> {
    let mut body = Zeroizing::new(record[NONCE..].to_vec());
    mask(key, &record[..NONCE], &mut body);
    body
}

fn params() -> snow::params::NoiseParams {
    // A constant that parses: checked by every handshake test.
    PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("{PATTERN} is a valid pattern"))
}

/// The client's side of a handshake in flight.
pub struct Initiator {
    state: snow::HandshakeState,
    masks: Masks,
    msg1: [u8; MSG1],
    /// The gateway's latest cookie (zeros: none yet).
    cookie: Cookie,
    /// The MACs of the inits sent: a reply must echo one.
    sent: Vec<[u8; 16]>,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Initiator").finish_non_exhaustive()
    }
}

/// What a record from the gateway did to a handshake.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per handshake record, moved once"
)]
pub enum Answer {
    /// A cookie: send this init (carrying it) now.
    Again(Box<Record>),
    /// The handshake is done.
    Open(Session, Rates),
    /// Not an answer to this handshake (dropped).
    NotMine,
}

impl Initiator {
    /// Starts a handshake with the gateway whose public link key is `gateway`, asking for
    /// `rates`: the first init to send (`nonce` fresh random bytes).
    pub fn new(
        gateway: &[u8; 32],
        rates: Rates,
        nonce: [u8; NONCE],
    ) -> Result<(Self, Record), LinkError> {
        let mut state = snow::Builder::new(params())
            .prologue(PROLOGUE)
            .and_then(|b| b.remote_public_key(gateway))
            .and_then(|b| b.build_initiator())
            .map_err(|_| LinkError::Handshake)?;
        let mut msg1 = [0u8; MSG1];
        let n = state
            .write_message(&rates.encode(), &mut msg1)
            .map_err(|_| LinkError::Handshake)?;
        if n != MSG1 {
            return Err(LinkError::Handshake);
        }
        let mut me = Self {
            state,
            masks: Masks::new(gateway),
            msg1,
            cookie: [0; 16],
            sent: Vec::new(),
        };
        let record = me.init(nonce);
        Ok((me, record))
    }

    /// An init (again), carrying the latest cookie.
    pub fn init(&mut self, nonce: [u8; NONCE]) -> Record {
        let mut plain = [0u8; RECORD_LEN - NONCE];
        plain[0] = INIT;
        plain[1..17].copy_from_slice(&self.cookie);
        plain[17..17 + MSG1].copy_from_slice(&self.msg1);
        let m = mac1(&self.masks.mac1, &nonce, &plain[..MAC1_AT]);
        plain[MAC1_AT..].copy_from_slice(&m);
        if self.sent.len() == 8 {
            self.sent.remove(0);
        }
        self.sent.push(m);
        seal_record(&self.masks.up, nonce, &plain)
    }

    /// Takes a record from the gateway (`nonce` fresh random bytes, for an init to resend).
    pub fn handle(mut self, record: &Record, nonce: [u8; NONCE]) -> (Option<Self>, Answer) {
        let body = open_record(&self.masks.down, record);
        let echoed = |at: usize| {
            let e = &body[at..at + 16];
            self.sent.iter().any(|m| bool::from(m.ct_eq(e)))
        };
        match body[0] {
            COOKIE if echoed(17) => {
                self.cookie.copy_from_slice(&body[1..17]);
                let again = self.init(nonce);
                (Some(self), Answer::Again(Box::new(again)))
            }
            RESPONSE if echoed(1 + MSG2) => {
                let mut payload = [0u8; MSG2];
                let opened = self
                    .state
                    .read_message(&body[1..1 + MSG2], &mut payload)
                    .ok()
                    .and_then(|n| Rates::decode(&payload[..n]));
                let Some(rates) = opened else {
                    return (Some(self), Answer::NotMine);
                };
                match Session::from_handshake(self.state, true) {
                    Ok(session) => (None, Answer::Open(session, rates)),
                    Err(_) => (None, Answer::NotMine),
                }
            }
            _ => (Some(self), Answer::NotMine),
        }
    }
}

/// The gateway's side: its key and its cookies. Keeps nothing per client.
pub struct Handshaker {
    key: GatewayKey,
    masks: Masks,
    cookie_key: Zeroizing<[u8; 32]>,
}

impl core::fmt::Debug for Handshaker {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handshaker").finish_non_exhaustive()
    }
}

/// What the gateway makes of a record that is no transport record of a session.
#[derive(Debug)]
pub enum Greeting {
    /// Not an init made with our key (random bytes, another gateway's, altered): dropped
    /// without an answer.
    Stranger,
    /// An init without a valid cookie for its source: answer with this, keep nothing.
    Cookie(Box<Record>),
    /// A valid init: what the client asks for; [`Accepted::accept`] makes the session.
    Accepted(Box<Accepted>),
}

/// A valid init, its Noise message read.
pub struct Accepted {
    state: snow::HandshakeState,
    masks: Masks,
    echo: [u8; 16],
    /// What the client asked for.
    pub asked: Rates,
}

impl core::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Accepted")
            .field("asked", &self.asked)
            .finish_non_exhaustive()
    }
}

impl Accepted {
    /// Grants `rates`: the response to send (`nonce` fresh random bytes) and the session.
    pub fn accept(
        mut self,
        rates: Rates,
        nonce: [u8; NONCE],
    ) -> Result<(Record, Session), LinkError> {
        let mut msg2 = [0u8; MSG2];
        let n = self
            .state
            .write_message(&rates.encode(), &mut msg2)
            .map_err(|_| LinkError::Handshake)?;
        if n != MSG2 {
            return Err(LinkError::Handshake);
        }
        let mut plain = [0u8; 1 + MSG2 + 16];
        plain[0] = RESPONSE;
        plain[1..1 + MSG2].copy_from_slice(&msg2);
        plain[1 + MSG2..].copy_from_slice(&self.echo);
        let record = seal_record(&self.masks.down, nonce, &plain);
        let session = Session::from_handshake(self.state, false)?;
        Ok((record, session))
    }
}

impl Handshaker {
    /// The gateway with link key `key`, its cookies keyed by `cookie_key` (32 random bytes
    /// drawn at start).
    pub fn new(key: GatewayKey, cookie_key: [u8; 32]) -> Self {
        let masks = Masks::new(&key.public);
        Self {
            key,
            masks,
            cookie_key: Zeroizing::new(cookie_key),
        }
    }

    /// The public link key.
    pub fn public(&self) -> [u8; 32] {
        self.key.public
    }

    fn cookie_at(&self, source: SocketAddr, period: u64) -> Cookie {
        let mut h = blake3::Hasher::new_keyed(&self.cookie_key);
        match source.ip() {
            std::net::IpAddr::V4(a) => h.update(&a.to_ipv6_mapped().octets()),
            std::net::IpAddr::V6(a) => h.update(&a.octets()),
        };
        h.update(&source.port().to_be_bytes())
            .update(&period.to_be_bytes());
        let mut c = [0u8; 16];
        c.copy_from_slice(&h.finalize().as_bytes()[..16]);
        c
    }

    fn period(now: Duration) -> u64 {
        now.as_secs() / COOKIE_PERIOD.as_secs()
    }

    /// Takes a record from `source` at `now` that no session of ours opened (`nonce`
    /// fresh random bytes, for a cookie reply).
    pub fn greet(
        &self,
        now: Duration,
        source: SocketAddr,
        record: &Record,
        nonce: [u8; NONCE],
    ) -> Greeting {
        let body = open_record(&self.masks.up, record);
        let end = 17 + MSG1;
        let expected = mac1(&self.masks.mac1, &record[..NONCE], &body[..MAC1_AT]);
        if body[0] != INIT || !bool::from(expected.ct_eq(&body[MAC1_AT..])) {
            return Greeting::Stranger;
        }
        let period = Self::period(now);
        let cookie = &body[1..17];
        let valid = [period, period.saturating_sub(1)]
            .iter()
            .fold(subtle::Choice::from(0), |ok, p| {
                ok | self.cookie_at(source, *p).ct_eq(cookie)
            });
        if !bool::from(valid) {
            let mut plain = [0u8; 1 + 16 + 16];
            plain[0] = COOKIE;
            plain[1..17].copy_from_slice(&self.cookie_at(source, period));
            plain[17..].copy_from_slice(&expected);
            return Greeting::Cookie(Box::new(seal_record(&self.masks.down, nonce, &plain)));
        }
        let Ok(mut state) = snow::Builder::new(params())
            .prologue(PROLOGUE)
            .and_then(|b| b.local_private_key(&self.key.secret[..]))
            .and_then(|b| b.build_responder())
        else {
            return Greeting::Stranger;
        };
        let mut payload = [0u8; MSG1];
        let asked = state
            .read_message(&body[17..end], &mut payload)
            .ok()
            .and_then(|n| Rates::decode(&payload[..n]));
        match asked {
            Some(asked) => Greeting::Accepted(Box::new(Accepted {
                state,
                masks: self.masks.clone(),
                echo: expected,
                asked,
            })),
            None => Greeting::Stranger,
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests;
