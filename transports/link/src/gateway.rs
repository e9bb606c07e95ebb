//! The gateway's end: one [`Responder`] for all clients (it keeps nothing per client until
//! a handshake completes), and a [`GatewayLink`] per client whose handshake did.

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use crate::{
    Record,
    clock::{SLOT_JITTER, SlotClock},
    framing::{Message, Packer, Unpacker},
    handshake::{GatewayKey, Greeting, Handshaker, NONCE, Rates},
    record::{PLAIN_LEN, Session},
};

/// The downlink rate a client gets that asks for 0.
pub const DEFAULT_DOWN: u16 = 100;
/// The most either way.
pub const MAX_RATE: u16 = 1000;
/// Bytes of messages held for one client, at most.
const MAX_QUEUED: usize = 1 << 20;

/// Counters of the responder and its links.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// Records that were no init of ours (dropped without an answer).
    pub strangers: u64,
    /// Cookie replies sent.
    pub cookies: u64,
    /// Handshakes completed.
    pub handshakes: u64,
}

/// What to do with a record from a peer without a session.
#[derive(Debug)]
pub enum Responded {
    /// Drop it, answer nothing.
    Stranger,
    /// Send this record back (a cookie), keep nothing.
    Reply(Record),
    /// Send this record back (the handshake's response) and keep the link.
    Open(Record, Box<GatewayLink>),
}

/// The gateway's handshakes.
pub struct Responder {
    handshaker: Handshaker,
    random: blake3::OutputReader,
    stats: GatewayStats,
}

impl core::fmt::Debug for Responder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Responder")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Responder {
    /// The responder for link key `key`; `seed` (32 random bytes drawn at start) keys its
    /// cookies and its nonces.
    pub fn new(key: GatewayKey, seed: &[u8; 32]) -> Self {
        let cookie_key = blake3::derive_key("PhantomBand v1 link cookies", seed);
        Self {
            handshaker: Handshaker::new(key, cookie_key),
            random: blake3::Hasher::new_derive_key("PhantomBand v1 link gateway nonces")
                .update(seed)
                .finalize_xof(),
            stats: GatewayStats::default(),
        }
    }

    /// The public link key.
    pub fn public(&self) -> [u8; 32] {
        self.handshaker.public()
    }

    /// Counters.
    pub fn stats(&self) -> GatewayStats {
        self.stats
    }

    /// Takes a record from `source` at `now` that opened in no session.
    pub fn respond(&mut self, now: Duration, source: SocketAddr, record: &Record) -> Responded {
        let mut nonce = [0u8; NONCE];
        self.random.fill(&mut nonce);
        match self.handshaker.greet(now, source, record, nonce) {
            Greeting::Stranger => {
                self.stats.strangers += 1;
                Responded::Stranger
            }
            Greeting::Cookie(reply) => {
                self.stats.cookies += 1;
                Responded::Reply(*reply)
            }
            Greeting::Accepted(accepted) => {
                let asked = accepted.asked;
                let granted = Rates {
                    down: if asked.down == 0 {
                        DEFAULT_DOWN
                    } else {
                        asked.down.min(MAX_RATE)
                    },
                    up: asked.up.clamp(1, MAX_RATE),
                };
                self.random.fill(&mut nonce);
                let mut jitter_key = zeroize::Zeroizing::new([0u8; 32]);
                self.random.fill(&mut jitter_key[..]);
                match accepted.accept(granted, nonce) {
                    Ok((response, session)) => {
                        self.stats.handshakes += 1;
                        let link = GatewayLink::new(session, granted, now, &jitter_key);
                        Responded::Open(response, Box::new(link))
                    }
                    Err(_) => {
                        self.stats.strangers += 1;
                        Responded::Stranger
                    }
                }
            }
        }
    }
}

/// One client's link, after its handshake: records at the client's downlink rate.
pub struct GatewayLink {
    session: Session,
    down: SlotClock,
    granted: Rates,
    packer: Packer,
    unpacker: Unpacker,
    inbox: VecDeque<Message>,
    heard: Duration,
    /// Records from this client that did not open (dropped).
    pub dropped: u64,
    /// Whether idle slots carry padding (always, but in a known-bad testbed setup).
    padding: bool,
}

impl core::fmt::Debug for GatewayLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GatewayLink")
            .field("granted", &self.granted)
            .finish_non_exhaustive()
    }
}

impl GatewayLink {
    fn new(session: Session, granted: Rates, now: Duration, jitter_key: &[u8; 32]) -> Self {
        Self {
            session,
            // The first slot one period after the response: the response is this slot's
            // record.
            down: SlotClock::new(
                u32::from(granted.down),
                now + Duration::from_nanos(1_000_000_000 / u64::from(granted.down.max(1))),
            )
            .with_jitter(SLOT_JITTER, *jitter_key),
            granted,
            packer: Packer::new(MAX_QUEUED),
            unpacker: Unpacker::default(),
            inbox: VecDeque::new(),
            heard: now,
            dropped: 0,
            padding: true,
        }
    }

    /// INSECURE, for the anonymity harness's known-bad configuration only: a slot with
    /// nothing queued sends nothing instead of padding, so the downlink follows the
    /// client's downloads.
    pub fn set_padding(&mut self, on: bool) {
        self.padding = on;
    }

    /// The rates granted.
    pub fn granted(&self) -> Rates {
        self.granted
    }

    /// When the client was last heard (a record that opened).
    pub fn heard(&self) -> Duration {
        self.heard
    }

    /// Takes a record from the client; `false` if it did not open in this session (then it
    /// may be a new handshake from the same peer: see [`Responder::respond`]).
    pub fn handle_record(&mut self, now: Duration, record: &Record) -> bool {
        match self.session.open(record) {
            Some((counter, body)) => {
                self.heard = now;
                let inbox = &mut self.inbox;
                self.unpacker.take(counter, &body, |m| inbox.push_back(m));
                true
            }
            None => {
                self.dropped += 1;
                false
            }
        }
    }

    /// The next message from the client.
    pub fn poll_message(&mut self) -> Option<Message> {
        self.inbox.pop_front()
    }

    /// Queues a message for the client; `false` if its queue is full.
    pub fn send(&mut self, message: Message, urgent: bool) -> bool {
        self.packer.push(message, urgent)
    }

    /// Bytes queued for the client.
    pub fn queued(&self) -> usize {
        self.packer.queued()
    }

    /// The records of the downlink slots due at `now` (at most a few: a late caller
    /// misses the rest), each carrying messages or padding.
    pub fn poll_records(&mut self, now: Duration, mut out: impl FnMut(Record)) {
        let due = self.down.take(now);
        let mut body = zeroize::Zeroizing::new([0u8; PLAIN_LEN]);
        for _ in 0..due {
            if !self.padding && self.packer.is_empty() {
                continue;
            }
            self.packer.fill(&mut body);
            out(self.session.seal(&body));
        }
    }

    /// When the next downlink slot is due.
    pub fn next_due(&self) -> Duration {
        self.down.next_due()
    }

    /// Downlink slots missed so far.
    pub fn missed(&self) -> u64 {
        self.down.missed()
    }
}
