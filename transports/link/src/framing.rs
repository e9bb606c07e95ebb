//! Messages inside records: a stream of `kind (u8), length (u16 BE), bytes` packed back to
//! back, a message spanning records when it does not fit. Each record body starts with the
//! offset of the first message that begins in it (`0xFFFF`: none does), so after a lost
//! record the receiver drops the message it was in and picks up at the next start. A kind
//! of 0 where a message would start ends the record: the rest is padding.

use std::collections::VecDeque;

use crate::record::PLAIN_LEN;

/// Stream bytes per record (after the 2-byte offset).
pub const STREAM_LEN: usize = PLAIN_LEN - 2;
/// Longest message body.
pub const MAX_MESSAGE: usize = u16::MAX as usize;
const HEADER: usize = 3;
const NONE: u16 = 0xFFFF;

/// One message of the link.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// What it is (never 0; the meanings are `pb_proto::link`'s).
    pub kind: u8,
    /// Its bytes.
    pub body: Vec<u8>,
}

impl core::fmt::Debug for Message {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The bytes may be a user's: never printed.
        f.debug_struct("Message")
            .field("kind", &self.kind)
            .field("len", &self.body.len())
            .finish()
    }
}

/// Messages waiting to be packed, in two classes: urgent ones (answers, registrations)
/// go before the rest.
#[derive(Debug)]
pub struct Packer {
    urgent: VecDeque<Message>,
    bulk: VecDeque<Message>,
    /// The message being sent, encoded, and how much of it went.
    current: Option<(Vec<u8>, usize)>,
    queued: usize,
    max_queued: usize,
}

impl Packer {
    /// A packer holding at most `max_queued` bytes of messages.
    pub fn new(max_queued: usize) -> Self {
        Self {
            urgent: VecDeque::new(),
            bulk: VecDeque::new(),
            current: None,
            queued: 0,
            max_queued,
        }
    }

    /// Queues `message` (`urgent`: ahead of the others); `false` if it is too long, has
    /// kind 0, or the queue is full.
    pub fn push(&mut self, message: Message, urgent: bool) -> bool {
        if message.kind == 0
            || message.body.len() > MAX_MESSAGE
            || self.queued + message.body.len() + HEADER > self.max_queued
        {
            return false;
        }
        self.queued += message.body.len() + HEADER;
        if urgent {
            self.urgent.push_back(message);
        } else {
            self.bulk.push_back(message);
        }
        true
    }

    /// Bytes queued (whole messages not yet fully sent).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.urgent.is_empty() && self.bulk.is_empty()
    }

    /// Fills a record body; whether it carries any message bytes (otherwise it is all
    /// padding).
    pub fn fill(&mut self, body: &mut [u8; PLAIN_LEN]) -> bool {
        body.fill(0);
        let (head, stream) = body.split_at_mut(2);
        let mut at = 0;
        let mut first = None;
        while at < STREAM_LEN {
            if self.current.is_none() {
                let Some(m) = self.urgent.pop_front().or_else(|| self.bulk.pop_front()) else {
                    break;
                };
                let mut encoded = Vec::with_capacity(HEADER + m.body.len());
                encoded.push(m.kind);
                encoded.extend_from_slice(&(m.body.len() as u16).to_be_bytes());
                encoded.extend_from_slice(&m.body);
                self.current = Some((encoded, 0));
                first.get_or_insert(at);
            }
            let Some((encoded, sent)) = &mut self.current else {
                break;
            };
            let n = (encoded.len() - *sent).min(STREAM_LEN - at);
            stream[at..at + n].copy_from_slice(&encoded[*sent..*sent + n]);
            *sent += n;
            at += n;
            if *sent == encoded.len() {
                self.queued -= encoded.len();
                self.current = None;
            }
        }
        let first = first.map_or(NONE, |f| f as u16);
        head.copy_from_slice(&first.to_be_bytes());
        at > 0
    }
}

/// Reassembles messages from record bodies taken in counter order.
#[derive(Debug, Default)]
pub struct Unpacker {
    /// The message being reassembled (its header and bytes so far).
    partial: Vec<u8>,
    /// Whether `partial` continues into the next record in order.
    in_sync: bool,
    /// The counter the next record in order has.
    next: u64,
    /// Records whose stream did not line up with their offset (a broken sender).
    pub desync: u64,
    /// Records that arrived after a later one (reordered): dropped.
    pub late: u64,
}

impl Unpacker {
    /// Takes the body of record `counter`; passes each message completed to `out`.
    pub fn take(&mut self, counter: u64, body: &[u8; PLAIN_LEN], mut out: impl FnMut(Message)) {
        if counter < self.next {
            self.late += 1;
            return;
        }
        let first = u16::from_be_bytes([body[0], body[1]]);
        let stream = &body[2..];
        let first = (first != NONE).then_some(usize::from(first));
        if first.is_some_and(|f| f >= STREAM_LEN) {
            self.desync += 1;
            self.partial.clear();
            self.in_sync = false;
            self.next = counter + 1;
            return;
        }
        let mut at = 0;
        if counter != self.next || !self.in_sync {
            // A record was lost (or this is the first): what was being reassembled is gone.
            self.partial.clear();
            match first {
                Some(f) => at = f,
                None => {
                    self.in_sync = false;
                    self.next = counter + 1;
                    return;
                }
            }
        }
        self.next = counter + 1;
        self.in_sync = true;
        while at < STREAM_LEN {
            if self.partial.is_empty() {
                if stream[at] == 0 {
                    // Padding to the end.
                    break;
                }
                // A message starts here: the offset must say one starts here or before.
                match first {
                    Some(f) if at < f => {
                        self.desync += 1;
                        at = f;
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        self.desync += 1;
                        break;
                    }
                }
            }
            let need = if self.partial.len() < HEADER {
                HEADER - self.partial.len()
            } else {
                HEADER + usize::from(u16::from_be_bytes([self.partial[1], self.partial[2]]))
                    - self.partial.len()
            };
            let n = need.min(STREAM_LEN - at);
            self.partial.extend_from_slice(&stream[at..at + n]);
            at += n;
            if self.partial.len() >= HEADER {
                let len = usize::from(u16::from_be_bytes([self.partial[1], self.partial[2]]));
                if self.partial.len() == HEADER + len {
                    let kind = self.partial[0];
                    let body = self.partial.split_off(HEADER);
                    self.partial.clear();
                    out(Message { kind, body });
                }
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests;
