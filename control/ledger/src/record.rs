//! Measurement records: what one relay's loops through each of its links measured in one
//! epoch, signed by the relay. They are the ledger's entries (docs/spec/ledger.md). Counts
//! only: loops sent, returned and lost per link, and the returned loops' round-trip times in
//! [`RTT_BUCKETS`]; no client, no client address, no time of any single packet.
//!
//! A record is a C2SP signed note (`pb_control::note`), so that anyone holding the log can
//! check who measured what with the relay's identity key alone, which the record carries
//! (a node id is derived from it, so a record cannot speak for another relay):
//!
//! ```text
//! PhantomBand v1 measurement
//! network <network name>
//! epoch <n>
//! relay <identity key, base64>
//! link <neighbour node id, hex> sent <n> returned <n> lost <n> rtt <n> <n> <n> <n> <n> <n> <n> <n>
//! …
//!
//! — pb-relay-<node id, hex> <base64(key ID || Ed25519 signature)>
//! ```
//!
//! Links are in ascending order of node id, one line each, at most [`MAX_LINKS`]; a link's
//! returned and lost loops are at most those sent, and its RTT counts add up to those
//! returned. Anything else, and any text [`Measurement::text`] would not write back the
//! same, is refused.

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use pb_control::{
    IdentityKey, IdentityKeyPair,
    checkpoint::decimal,
    note::{Note, NoteError, NoteKey, NoteSigner, sign},
};
use pb_sphinx::{Epoch, NodeId};

/// The first line of every record.
pub const HEADER: &str = "PhantomBand v1 measurement";
/// Buckets in a link's RTT histogram.
pub use pb_mix::RTT_BUCKET_COUNT;
/// Upper bounds (ms, exclusive) of the round-trip-time buckets; the last bucket holds the
/// rest: the relay's loop monitor's buckets (`pb_mix`), which it counts in.
pub use pb_mix::RTT_BUCKETS_MS as RTT_BUCKETS;
/// The most links a record holds (a relay links to the layers before and after its own).
pub const MAX_LINKS: usize = 64;

/// Why a record was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The signed note itself was refused (malformed, or its signature did not verify).
    #[error("{0}")]
    Note(#[from] NoteError),
    /// The text is not a record (the line named).
    #[error("not a measurement record: bad {0} line")]
    Malformed(&'static str),
    /// Counts that cannot be (returned or lost above sent, RTTs not adding up).
    #[error("link {0}: counts that do not add up")]
    Inconsistent(usize),
    /// Links out of order, twice, the relay itself, or more than [`MAX_LINKS`].
    #[error("the links are out of order, repeated, the relay's own, or too many")]
    BadLinks,
}

/// One link's loops in one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkMeasurement {
    /// The neighbour at the link's far end.
    pub neighbour: NodeId,
    /// Loops sent on the link.
    pub sent: u64,
    /// Loops that came back in time.
    pub returned: u64,
    /// Loops that did not.
    pub lost: u64,
    /// Returned loops by round-trip time ([`RTT_BUCKETS`]).
    pub rtt: [u64; RTT_BUCKET_COUNT],
}

impl LinkMeasurement {
    /// The bucket of a round trip of `ms` milliseconds.
    pub fn bucket(ms: u64) -> usize {
        pb_mix::rtt_bucket(ms)
    }

    fn consistent(&self) -> bool {
        let rtt: u128 = self.rtt.iter().map(|&c| u128::from(c)).sum();
        u128::from(self.returned) + u128::from(self.lost) <= u128::from(self.sent)
            && rtt == u128::from(self.returned)
    }
}

/// What one relay measured in one epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measurement {
    /// The network's name.
    pub network: String,
    /// The epoch measured.
    pub epoch: Epoch,
    /// The measuring relay's identity key.
    pub relay: IdentityKey,
    /// Its links, in ascending order of neighbour.
    pub links: Vec<LinkMeasurement>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// The note key name a relay signs its records under.
pub fn key_name(relay: &IdentityKey) -> String {
    format!("pb-relay-{}", hex(&relay.node_id().0))
}

impl Measurement {
    /// Its text, as signed.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{HEADER}\nnetwork {}\nepoch {}\nrelay {}\n",
            self.network,
            self.epoch.0,
            BASE64.encode(self.relay.0)
        );
        for l in &self.links {
            text.push_str(&format!(
                "link {} sent {} returned {} lost {} rtt",
                hex(&l.neighbour.0),
                l.sent,
                l.returned,
                l.lost
            ));
            for c in l.rtt {
                text.push_str(&format!(" {c}"));
            }
            text.push('\n');
        }
        text
    }

    /// Checks what [`text`](Self::text) cannot express wrongly: counts that add up, links in
    /// order, none twice, not the relay itself, at most [`MAX_LINKS`], a usable network name.
    pub fn check(&self) -> Result<(), RecordError> {
        if self.network.is_empty()
            || self.network.contains(char::is_whitespace)
            || self.network.chars().any(|c| c.is_ascii_control())
        {
            return Err(RecordError::Malformed("network"));
        }
        let own = self.relay.node_id();
        if self.links.len() > MAX_LINKS
            || self
                .links
                .windows(2)
                .any(|w| w[0].neighbour >= w[1].neighbour)
            || self.links.iter().any(|l| l.neighbour == own)
        {
            return Err(RecordError::BadLinks);
        }
        if let Some(i) = self.links.iter().position(|l| !l.consistent()) {
            return Err(RecordError::Inconsistent(i));
        }
        Ok(())
    }

    /// Parses a record's text, exactly as [`text`](Self::text) writes it, and checks it.
    pub fn parse(text: &str) -> Result<Self, RecordError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(RecordError::Malformed("last"))?;
        let mut lines = body.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(RecordError::Malformed("header"));
        }
        let mut field = |name: &'static str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .ok_or(RecordError::Malformed(name))
        };
        let network = field("network")?.to_owned();
        let epoch = decimal(field("epoch")?)
            .and_then(|e| u32::try_from(e).ok())
            .ok_or(RecordError::Malformed("epoch"))?;
        let relay: [u8; 32] = BASE64
            .decode(field("relay")?)
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or(RecordError::Malformed("relay"))?;
        let mut links = Vec::new();
        for line in lines {
            if links.len() == MAX_LINKS {
                return Err(RecordError::BadLinks);
            }
            links.push(parse_link(line).ok_or(RecordError::Malformed("link"))?);
        }
        let m = Self {
            network,
            epoch: Epoch(epoch),
            relay: IdentityKey(relay),
            links,
        };
        m.check()?;
        if m.text() != text {
            return Err(RecordError::Malformed("non-canonical"));
        }
        Ok(m)
    }

    /// Signs it with the relay's key pair (whose public key must be `relay`).
    pub fn sign(&self, pair: &IdentityKeyPair) -> Result<SignedMeasurement, RecordError> {
        self.check()?;
        if pair.public() != self.relay {
            return Err(RecordError::Malformed("relay"));
        }
        let signer = NoteSigner::new(&key_name(&self.relay), pair)?;
        let note = sign(&self.text(), &[&signer])?;
        Ok(SignedMeasurement {
            measurement: self.clone(),
            note,
        })
    }
}

fn parse_link(line: &str) -> Option<LinkMeasurement> {
    let mut words = line.split(' ');
    let mut after = |word: &str| {
        (words.next()? == word).then_some(())?;
        words.next()
    };
    let neighbour = NodeId(unhex::<16>(after("link")?)?);
    let sent = decimal(after("sent")?)?;
    let returned = decimal(after("returned")?)?;
    let lost = decimal(after("lost")?)?;
    let first = decimal(after("rtt")?)?;
    let mut rtt = [0u64; RTT_BUCKET_COUNT];
    rtt[0] = first;
    for c in rtt.iter_mut().skip(1) {
        *c = decimal(words.next()?)?;
    }
    if words.next().is_some() {
        return None;
    }
    Some(LinkMeasurement {
        neighbour,
        sent,
        returned,
        lost,
        rtt,
    })
}

/// A measurement record whose signature by the relay it names has been checked: made only
/// by [`Measurement::sign`] or [`SignedMeasurement::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedMeasurement {
    measurement: Measurement,
    note: String,
}

impl SignedMeasurement {
    /// Opens a record: a signed note whose text is a [`Measurement`], signed by the key it
    /// names (other signatures are ignored).
    pub fn open(bytes: &[u8]) -> Result<Self, RecordError> {
        let note = Note::parse(bytes)?;
        let measurement = Measurement::parse(note.text)?;
        let key = NoteKey::new(&key_name(&measurement.relay), measurement.relay)?;
        note.verify(&[key])?;
        let note = String::from_utf8(bytes.to_vec()).map_err(|_| NoteError::BadCharacters)?;
        Ok(Self { measurement, note })
    }

    /// What it says.
    pub fn measurement(&self) -> &Measurement {
        &self.measurement
    }

    /// The signed note: the log entry.
    pub fn as_bytes(&self) -> &[u8] {
        self.note.as_bytes()
    }
}

#[cfg(test)]
mod tests;
