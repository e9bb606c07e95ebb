//! The bytes inside the DNS messages, sans-IO: base32 for query names, the chunks that cut
//! records into pieces ([`Chunk`]), the sender's cutter ([`Chunker`]) and the receiver's
//! reassembly ([`Assembler`]).
//!
//! A chunk is `record number (u16 BE) | offset (u16 BE) | length (u16 BE) | bytes`; a length
//! of 0 ends a payload (what follows is padding). Records are numbered by their sender,
//! wrapping; a record is whole when chunks covering its 1452 bytes have arrived.

use std::collections::VecDeque;

use pb_transport::{RECORD_LEN, Record};

/// A chunk's header: record number, offset, length.
pub const CHUNK_HEADER: usize = 6;
/// Records waiting to be cut into chunks, per sender: more are refused.
pub const SEND_QUEUE: usize = 256;
/// Records being reassembled at once: past that the oldest is given up (it lost a chunk).
pub const PARTIAL_RECORDS: usize = 32;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `bytes` in lowercase base32 (RFC 4648's alphabet), without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The bytes `text` encodes in base32 (either case: resolvers may change it), `None` if a
/// character is not base32. Trailing bits that make no whole byte are dropped.
pub fn base32_decode(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in text {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// One piece of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The record's number (its sender's, wrapping).
    pub record: u16,
    /// Where in the record the bytes go.
    pub offset: u16,
    /// The bytes.
    pub bytes: &'a [u8],
}

/// The chunks at the start of `payload`, up to its end marker (a zero length) or its end.
/// A chunk that runs past the payload, or past a record's end, ends the list: what follows
/// it cannot be trusted to be chunks.
pub fn chunks(payload: &[u8]) -> impl Iterator<Item = Chunk<'_>> {
    let mut rest = payload;
    core::iter::from_fn(move || {
        let (header, after) = rest.split_first_chunk::<CHUNK_HEADER>()?;
        let record = u16::from_be_bytes([header[0], header[1]]);
        let offset = u16::from_be_bytes([header[2], header[3]]);
        let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if len == 0 || len > after.len() || usize::from(offset) + len > RECORD_LEN {
            rest = &[];
            return None;
        }
        let (bytes, next) = after.split_at(len);
        rest = next;
        Some(Chunk {
            record,
            offset,
            bytes,
        })
    })
}

/// Cuts queued records into chunks, in order, as room in each message allows.
#[derive(Debug, Default)]
pub struct Chunker {
    queue: VecDeque<Box<Record>>,
    /// The number of the record at the front of the queue.
    front_number: u16,
    /// How much of the front record is sent.
    front_sent: usize,
}

impl Chunker {
    /// Queues `record`; `false` if the queue is full (the record is dropped).
    pub fn push(&mut self, record: &Record) -> bool {
        if self.queue.len() >= SEND_QUEUE {
            return false;
        }
        self.queue.push_back(Box::new(*record));
        true
    }

    /// Records queued (the front one may be partly sent).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Appends chunks to `out` until it holds `room` bytes or nothing is left, then the end
    /// marker if there is room for it. A chunk is not cut below `min_chunk` bytes unless
    /// that is what is left of its record.
    pub fn fill(&mut self, out: &mut Vec<u8>, room: usize, min_chunk: usize) {
        let limit = out.len() + room;
        while let Some(front) = self.queue.front() {
            let space = limit.saturating_sub(out.len() + CHUNK_HEADER);
            let left = RECORD_LEN - self.front_sent;
            let n = left.min(space);
            if n == 0 || (n < left && n < min_chunk) {
                break;
            }
            out.extend_from_slice(&self.front_number.to_be_bytes());
            out.extend_from_slice(&(self.front_sent as u16).to_be_bytes());
            out.extend_from_slice(&(n as u16).to_be_bytes());
            out.extend_from_slice(&front[self.front_sent..self.front_sent + n]);
            self.front_sent += n;
            if self.front_sent == RECORD_LEN {
                self.queue.pop_front();
                self.front_number = self.front_number.wrapping_add(1);
                self.front_sent = 0;
            }
        }
        if out.len() + CHUNK_HEADER <= limit {
            out.extend_from_slice(&[0; CHUNK_HEADER]);
        }
    }
}

/// A record being put together.
#[derive(Debug)]
struct Partial {
    number: u16,
    bytes: Box<Record>,
    /// The offsets of the chunks taken (a resolver's retry repeats a query).
    offsets: Vec<(u16, u16)>,
    filled: usize,
}

/// Puts records together from chunks.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: VecDeque<Partial>,
    /// Numbers of records recently completed: a late repeat of their chunks is ignored.
    done: VecDeque<u16>,
    whole: VecDeque<Box<Record>>,
    /// Records given up for a lost chunk.
    pub lost: u64,
    /// Chunks that overlapped another of their record (not a repeat): the record is dropped.
    pub bad: u64,
}

impl Assembler {
    /// Takes one chunk.
    pub fn take(&mut self, chunk: Chunk<'_>) {
        if self.done.contains(&chunk.record) {
            return;
        }
        let i = match self.partial.iter().position(|p| p.number == chunk.record) {
            Some(i) => i,
            None => {
                if self.partial.len() >= PARTIAL_RECORDS {
                    self.partial.pop_front();
                    self.lost += 1;
                }
                self.partial.push_back(Partial {
                    number: chunk.record,
                    bytes: Box::new([0; RECORD_LEN]),
                    offsets: Vec::new(),
                    filled: 0,
                });
                self.partial.len() - 1
            }
        };
        let p = &mut self.partial[i];
        let start = chunk.offset;
        let end = start + chunk.bytes.len() as u16;
        if p.offsets.contains(&(start, end)) {
            return;
        }
        if p.offsets.iter().any(|&(s, e)| start < e && s < end) {
            self.bad += 1;
            self.partial.remove(i);
            return;
        }
        p.offsets.push((start, end));
        p.bytes[usize::from(start)..usize::from(end)].copy_from_slice(chunk.bytes);
        p.filled += chunk.bytes.len();
        if p.filled == RECORD_LEN
            && let Some(p) = self.partial.remove(i)
        {
            if self.done.len() >= 2 * PARTIAL_RECORDS {
                self.done.pop_front();
            }
            self.done.push_back(p.number);
            self.whole.push_back(p.bytes);
        }
    }

    /// Takes every chunk of `payload`.
    pub fn take_all(&mut self, payload: &[u8]) {
        for chunk in chunks(payload) {
            self.take(chunk);
        }
    }

    /// The next whole record.
    pub fn pop(&mut self) -> Option<Record> {
        self.whole.pop_front().map(|b| *b)
    }

    /// Whole records not yet taken.
    pub fn ready(&self) -> usize {
        self.whole.len()
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn base32_round_trips_and_ignores_case() {
        for n in 0..40 {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let text = base32_encode(&bytes);
            assert_eq!(text.len(), (n * 8usize).div_ceil(5));
            assert_eq!(base32_decode(text.as_bytes()).unwrap(), bytes);
            assert_eq!(
                base32_decode(text.to_ascii_uppercase().as_bytes()).unwrap(),
                bytes
            );
        }
        assert_eq!(base32_encode(b"foobar"), "mzxw6ytboi");
        assert!(base32_decode(b"ab-c").is_none());
        assert!(base32_decode(b"01").is_none());
    }

    fn record(seed: u8) -> Record {
        core::array::from_fn(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
    }

    #[test]
    fn records_cross_in_chunks_of_any_room() {
        for room in [40, 134, 500, 925, 4000] {
            let mut chunker = Chunker::default();
            let mut assembler = Assembler::default();
            for s in 1..=5 {
                assert!(chunker.push(&record(s)));
            }
            let mut rounds = 0;
            while !chunker.is_empty() {
                let mut payload = Vec::new();
                chunker.fill(&mut payload, room, 1);
                assert!(payload.len() <= room, "room {room}");
                assembler.take_all(&payload);
                rounds += 1;
                assert!(rounds < 1000);
            }
            for s in 1..=5 {
                assert_eq!(assembler.pop().unwrap(), record(s), "room {room}");
            }
            assert!(assembler.pop().is_none());
        }
    }

    #[test]
    fn a_repeated_payload_gives_its_record_once() {
        let mut chunker = Chunker::default();
        chunker.push(&record(9));
        let mut payloads = Vec::new();
        while !chunker.is_empty() {
            let mut p = Vec::new();
            chunker.fill(&mut p, 300, 1);
            payloads.push(p);
        }
        let mut assembler = Assembler::default();
        for p in &payloads {
            assembler.take_all(p);
            assembler.take_all(p);
        }
        assembler.take_all(&payloads[0]);
        assert_eq!(assembler.pop().unwrap(), record(9));
        assert!(assembler.pop().is_none());
        assert_eq!(assembler.bad, 0);
    }

    #[test]
    fn a_lost_chunk_loses_its_record_only() {
        let mut chunker = Chunker::default();
        for s in 1..=3 {
            chunker.push(&record(s));
        }
        let mut assembler = Assembler::default();
        let mut i = 0;
        while !chunker.is_empty() {
            let mut p = Vec::new();
            chunker.fill(&mut p, 200, 1);
            // The third payload holds only record 1's bytes.
            if i != 2 {
                assembler.take_all(&p);
            }
            i += 1;
        }
        assert_eq!(assembler.pop().unwrap(), record(2));
        assert_eq!(assembler.pop().unwrap(), record(3));
        assert!(assembler.pop().is_none());
        // Record 1 waits for its lost chunk until as many others are under way.
        assert_eq!(assembler.lost, 0);
        for n in 100..100 + PARTIAL_RECORDS as u16 {
            assembler.take(Chunk {
                record: n,
                offset: 0,
                bytes: &[1; 10],
            });
        }
        assert_eq!(assembler.lost, 1);
    }

    #[test]
    fn garbage_never_panics_and_overlaps_drop_the_record() {
        let mut assembler = Assembler::default();
        let mut x: u32 = 7;
        for _ in 0..2000 {
            let len = (x % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect();
            assembler.take_all(&bytes);
        }
        let mut overlap = Vec::new();
        for (off, len) in [(0u16, 100u16), (50, 100)] {
            overlap.extend_from_slice(&7u16.to_be_bytes());
            overlap.extend_from_slice(&off.to_be_bytes());
            overlap.extend_from_slice(&len.to_be_bytes());
            overlap.extend(core::iter::repeat_n(1, usize::from(len)));
        }
        let before = assembler.bad;
        assembler.take_all(&overlap);
        assert_eq!(assembler.bad, before + 1);
    }

    #[test]
    fn a_chunk_past_the_record_ends_the_payload() {
        let mut p = Vec::new();
        p.extend_from_slice(&1u16.to_be_bytes());
        p.extend_from_slice(&1450u16.to_be_bytes());
        p.extend_from_slice(&3u16.to_be_bytes());
        p.extend_from_slice(&[1, 2, 3]);
        assert_eq!(chunks(&p).count(), 0);
    }
}
