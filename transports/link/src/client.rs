//! The client's end of the link: handshake, then records at its constant uplink rate.

use std::{collections::VecDeque, time::Duration};

use crate::{
    LinkError, Record,
    clock::{SLOT_JITTER, SlotClock},
    framing::{Message, Packer, Unpacker},
    handshake::{Answer, Initiator, NONCE, Rates},
    record::{PLAIN_LEN, Session},
};

/// An init is sent again after this long without an answer.
pub const RETRY: Duration = Duration::from_secs(1);
/// Inits sent before the gateway counts as not answering.
pub const TRIES: u32 = 8;
/// Bytes of messages held for sending.
const MAX_QUEUED: usize = 1 << 20;

/// Counters of a client's link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Records sent: handshake, data and padding alike.
    pub sent: u64,
    /// Records that opened (the gateway's, in the session).
    pub opened: u64,
    /// Records that did not open or answer our handshake (dropped).
    pub dropped: u64,
    /// Uplink slots missed because the caller was late.
    pub missed: u64,
}

#[expect(clippy::large_enum_variant, reason = "one per link")]
enum State {
    Handshaking {
        initiator: Box<Initiator>,
        tries: u32,
        next_try: Duration,
    },
    Open {
        session: Session,
        up: SlotClock,
        granted: Rates,
    },
    Failed(LinkError),
}

/// A client's link to one gateway.
pub struct ClientLink {
    state: State,
    packer: Packer,
    unpacker: Unpacker,
    inbox: VecDeque<Message>,
    /// Handshake records to send at once.
    out: VecDeque<Record>,
    random: blake3::OutputReader,
    stats: ClientStats,
    /// Whether idle uplink slots carry padding (always, but in a known-bad testbed setup).
    padding: bool,
}

impl core::fmt::Debug for ClientLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientLink")
            .field("open", &self.is_open())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl ClientLink {
    /// Starts a link at `now` to the gateway whose link key is `gateway`, asking for
    /// `rates`; its nonces are drawn from `seed` (32 random bytes). The first init is
    /// ready at once ([`poll_record`](Self::poll_record)).
    pub fn new(now: Duration, gateway: &[u8; 32], rates: Rates, seed: &[u8; 32]) -> Self {
        let mut random = blake3::Hasher::new_derive_key("PhantomBand v1 link client nonces")
            .update(seed)
            .finalize_xof();
        let mut nonce = [0u8; NONCE];
        random.fill(&mut nonce);
        let (state, out) = match Initiator::new(gateway, rates, nonce) {
            Ok((initiator, init)) => (
                State::Handshaking {
                    initiator: Box::new(initiator),
                    tries: 1,
                    next_try: now + RETRY,
                },
                VecDeque::from([init]),
            ),
            Err(e) => (State::Failed(e), VecDeque::new()),
        };
        Self {
            state,
            packer: Packer::new(MAX_QUEUED),
            unpacker: Unpacker::default(),
            inbox: VecDeque::new(),
            out,
            random,
            stats: ClientStats::default(),
            padding: true,
        }
    }

    fn nonce(&mut self) -> [u8; NONCE] {
        let mut n = [0u8; NONCE];
        self.random.fill(&mut n);
        n
    }

    /// Whether the handshake is done.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Why the link failed, if it did.
    pub fn failed(&self) -> Option<LinkError> {
        match self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The rates the gateway granted, once open.
    pub fn granted(&self) -> Option<Rates> {
        match self.state {
            State::Open { granted, .. } => Some(granted),
            _ => None,
        }
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Queues a message for the gateway (`urgent`: ahead of the others). Messages queued
    /// before the handshake is done wait for it.
    pub fn send(&mut self, message: Message, urgent: bool) -> Result<(), LinkError> {
        if message.body.len() > crate::framing::MAX_MESSAGE {
            return Err(LinkError::TooLong);
        }
        if self.packer.push(message, urgent) {
            Ok(())
        } else {
            Err(LinkError::Backlogged)
        }
    }

    /// Bytes of messages waiting to be sent.
    pub fn queued(&self) -> usize {
        self.packer.queued()
    }

    /// The next message from the gateway.
    pub fn poll_message(&mut self) -> Option<Message> {
        self.inbox.pop_front()
    }

    /// Takes a record from the gateway.
    pub fn handle_record(&mut self, now: Duration, record: &Record) {
        let nonce = self.nonce();
        let mut jitter_key = zeroize::Zeroizing::new([0u8; 32]);
        if matches!(self.state, State::Handshaking { .. }) {
            self.random.fill(&mut jitter_key[..]);
        }
        let state = core::mem::replace(&mut self.state, State::Failed(LinkError::Handshake));
        self.state = match state {
            State::Handshaking {
                initiator,
                tries,
                next_try,
            } => match (*initiator).handle(record, nonce) {
                (_, Answer::Open(session, granted)) => {
                    self.stats.opened += 1;
                    State::Open {
                        session,
                        up: SlotClock::new(u32::from(granted.up), now)
                            .with_jitter(SLOT_JITTER, *jitter_key),
                        granted,
                    }
                }
                (Some(initiator), Answer::Again(init)) => {
                    self.out.push_back(*init);
                    State::Handshaking {
                        initiator: Box::new(initiator),
                        tries,
                        next_try,
                    }
                }
                (Some(initiator), Answer::NotMine) => {
                    self.stats.dropped += 1;
                    State::Handshaking {
                        initiator: Box::new(initiator),
                        tries,
                        next_try,
                    }
                }
                (None, _) => {
                    self.stats.dropped += 1;
                    State::Failed(LinkError::Handshake)
                }
            },
            State::Open {
                mut session,
                up,
                granted,
            } => {
                match session.open(record) {
                    Some((counter, body)) => {
                        self.stats.opened += 1;
                        let inbox = &mut self.inbox;
                        self.unpacker.take(counter, &body, |m| inbox.push_back(m));
                    }
                    None => self.stats.dropped += 1,
                }
                State::Open {
                    session,
                    up,
                    granted,
                }
            }
            failed @ State::Failed(_) => failed,
        };
    }

    /// INSECURE, for the anonymity harness's known-bad configuration only: an uplink slot
    /// with nothing queued sends nothing instead of padding, so the uplink follows the
    /// user's traffic.
    pub fn set_padding(&mut self, on: bool) {
        self.padding = on;
    }

    /// The next record to send at `now`, if one is due: a handshake record, or the record
    /// of an uplink slot (messages, or padding when none wait).
    pub fn poll_record(&mut self, now: Duration) -> Option<Record> {
        if let Some(record) = self.out.pop_front() {
            self.stats.sent += 1;
            return Some(record);
        }
        let nonce = self.nonce();
        match &mut self.state {
            State::Handshaking {
                initiator,
                tries,
                next_try,
            } => {
                if now < *next_try {
                    return None;
                }
                if *tries >= TRIES {
                    self.state = State::Failed(LinkError::NoAnswer);
                    return None;
                }
                *tries += 1;
                *next_try = now + RETRY;
                self.stats.sent += 1;
                Some(initiator.init(nonce))
            }
            State::Open { session, up, .. } => {
                let missed = up.missed();
                let due = up.take(now);
                self.stats.missed += up.missed() - missed;
                if due == 0 {
                    return None;
                }
                if !self.padding && self.packer.is_empty() {
                    return None;
                }
                let mut body = zeroize::Zeroizing::new([0u8; PLAIN_LEN]);
                for i in 0..due {
                    if i > 0 && !self.padding && self.packer.is_empty() {
                        break;
                    }
                    self.packer.fill(&mut body);
                    let record = session.seal(&body);
                    if i == 0 {
                        self.out.push_front(record);
                    } else {
                        self.out.push_back(record);
                    }
                }
                self.stats.sent += 1;
                self.out.pop_front()
            }
            State::Failed(_) => None,
        }
    }

    /// When [`poll_record`](Self::poll_record) has something next (none: failed).
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        if !self.out.is_empty() {
            return Some(now);
        }
        match &self.state {
            State::Handshaking { next_try, .. } => Some(*next_try),
            State::Open { up, .. } => Some(up.next_due()),
            State::Failed(_) => None,
        }
    }
}
