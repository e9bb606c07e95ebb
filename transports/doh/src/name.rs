//! Query names: the zone a gateway answers for ([`Zone`]), and the upstream bytes a name
//! carries below it (base32, in labels of at most 63 characters, the name at most 253
//! characters long).
//!
//! A query's bytes are `session id (8) | sequence (u16 BE) | chunks | end | padding`, always
//! as many as the zone leaves room for: every query name of one client has one length.

use hickory_proto::rr::Name;

use crate::wire::{base32_decode, base32_encode};

/// The longest domain name in text, without the final dot.
const MAX_NAME_TEXT: usize = 253;
/// The longest label.
const MAX_LABEL: usize = 63;
/// A session id and the query's sequence number.
pub const QUERY_HEADER: usize = 8 + 2;
/// The shortest zone room worth a transport: a header and one chunk of 16 bytes.
const MIN_ROOM: usize = QUERY_HEADER + crate::wire::CHUNK_HEADER + 16;

/// Why a zone cannot carry the link.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// Not a domain name.
    #[error("{0:?} is not a domain name")]
    NotAName(String),
    /// So long that query names below it carry too little.
    #[error("{0:?} is too long: names below it would carry less than {MIN_ROOM} bytes")]
    TooLong(String),
}

/// The zone a gateway's name server answers for (e.g. `t.example.net`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    name: Name,
    /// Base32 characters a query name holds below the zone.
    chars: usize,
}

impl Zone {
    /// The zone `text` (with or without the final dot).
    pub fn parse(text: &str) -> Result<Self, ZoneError> {
        let not_a_name = || ZoneError::NotAName(text.to_owned());
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() || !trimmed.is_ascii() {
            return Err(not_a_name());
        }
        let mut name = Name::from_ascii(trimmed).map_err(|_| not_a_name())?;
        name.set_fqdn(true);
        let name = name.to_lowercase();
        // Labels of 63 characters and their dots, then the zone.
        let left = MAX_NAME_TEXT.saturating_sub(trimmed.len() + 1);
        let full = left / (MAX_LABEL + 1);
        let rest = left % (MAX_LABEL + 1);
        let chars = full * MAX_LABEL + rest.saturating_sub(1);
        let zone = Zone { name, chars };
        if zone.room() < MIN_ROOM {
            return Err(ZoneError::TooLong(text.to_owned()));
        }
        Ok(zone)
    }

    /// The zone's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The bytes one query name carries (header, chunks, padding).
    pub fn room(&self) -> usize {
        self.chars * 5 / 8
    }

    /// The query name carrying `bytes` (at most [`Zone::room`] of them).
    pub fn encode(&self, bytes: &[u8]) -> Option<Name> {
        if bytes.len() > self.room() {
            return None;
        }
        let text = base32_encode(bytes);
        let mut labels: Vec<&[u8]> = text.as_bytes().chunks(MAX_LABEL).collect();
        for label in self.name.iter() {
            labels.push(label);
        }
        let mut name = Name::from_labels(labels).ok()?;
        name.set_fqdn(true);
        Some(name)
    }

    /// The bytes `name` carries, if it is a name below this zone made by [`Zone::encode`]
    /// (its labels base32, in either case); `None` for the zone itself and anything else.
    pub fn decode(&self, name: &Name) -> Option<Vec<u8>> {
        if !self.name.zone_of(name) {
            return None;
        }
        let below =
            usize::from(name.num_labels()).checked_sub(usize::from(self.name.num_labels()))?;
        if below == 0 {
            return None;
        }
        let mut text = Vec::with_capacity(self.chars);
        for label in name.iter().take(below) {
            text.extend_from_slice(label);
        }
        base32_decode(&text)
    }
}

/// What makes a session id one the gateway answers: a key both ends derive from the
/// gateway's link key and zone (`SHA-256("PhantomBand v1 dns session\0" ‖ link key ‖ zone)`,
/// the first 16 bytes), as the secret path of QUIC and WSS is derived. A session id is a
/// random nonce (4 bytes) and its tag (the first 4 bytes of HMAC-SHA256 under the key of
/// the nonce): a prober who knows only the zone makes names the server treats as any other
/// name (NXDOMAIN), not sessions.
#[derive(Clone)]
pub struct SessionKey([u8; 16]);

impl core::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SessionKey([scrubbed])")
    }
}

impl SessionKey {
    /// The key of the gateway with `link_key` for `zone`.
    pub fn derive(link_key: &[u8; 32], zone: &Zone) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"PhantomBand v1 dns session\0");
        ctx.update(link_key);
        ctx.update(zone.name().to_ascii().as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&ctx.finish().as_ref()[..16]);
        Self(key)
    }

    fn tag(&self, nonce: &[u8]) -> [u8; 4] {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.0);
        let mut tag = [0u8; 4];
        tag.copy_from_slice(&ring::hmac::sign(&key, nonce).as_ref()[..4]);
        tag
    }

    /// The session id for `nonce`.
    pub fn session_id(&self, nonce: [u8; 4]) -> [u8; 8] {
        let mut id = [0u8; 8];
        id[..4].copy_from_slice(&nonce);
        id[4..].copy_from_slice(&self.tag(&nonce));
        id
    }

    /// Whether `id` (the first 8 bytes of a query's) is a session id under this key.
    pub fn accepts(&self, id: &[u8]) -> bool {
        use subtle::ConstantTimeEq as _;
        id.len() >= 8 && bool::from(self.tag(&id[..4]).ct_eq(&id[4..8]))
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_full_name_is_at_most_253_characters_and_round_trips() {
        for zone in ["t.pb.test", "t.pb.test.", "d.example.com", "x"] {
            let z = Zone::parse(zone).unwrap();
            let bytes: Vec<u8> = (0..z.room()).map(|i| (i * 7) as u8).collect();
            let name = z.encode(&bytes).unwrap();
            let text = name.to_ascii();
            assert!(
                text.trim_end_matches('.').len() <= MAX_NAME_TEXT,
                "{zone}: {text}"
            );
            assert!(name.iter().all(|l| l.len() <= MAX_LABEL));
            assert_eq!(z.decode(&name).unwrap(), bytes, "{zone}");
            let upper = Name::from_ascii(text.to_ascii_uppercase()).unwrap();
            assert_eq!(z.decode(&upper).unwrap(), bytes, "{zone}: case changed");
            assert!(z.encode(&[0; 1000]).is_none());
        }
        assert_eq!(Zone::parse("t.pb.test").unwrap().room(), 149);
    }

    #[test]
    fn other_names_carry_nothing() {
        let z = Zone::parse("t.pb.test").unwrap();
        for other in [
            "t.pb.test.",
            "pb.test.",
            "aaaa.other.test.",
            "www.t.pb.test.x.",
        ] {
            assert!(
                z.decode(&Name::from_ascii(other).unwrap()).is_none(),
                "{other}"
            );
        }
        assert!(
            z.decode(&Name::from_ascii("ab-cd.t.pb.test.").unwrap())
                .is_none()
        );
    }

    #[test]
    fn session_ids_are_tagged_by_the_gateways_key() {
        let zone = Zone::parse("t.pb.test").unwrap();
        let key = SessionKey::derive(&[7; 32], &zone);
        let id = key.session_id([1, 2, 3, 4]);
        assert!(key.accepts(&id));
        let mut forged = id;
        forged[7] ^= 1;
        assert!(!key.accepts(&forged));
        assert!(!key.accepts(&id[..7]));
        let other = SessionKey::derive(&[8; 32], &zone);
        assert!(!other.accepts(&id));
        let other_zone = SessionKey::derive(&[7; 32], &Zone::parse("u.pb.test").unwrap());
        assert!(!other_zone.accepts(&id));
        assert_eq!(format!("{key:?}"), "SessionKey([scrubbed])");
    }

    #[test]
    fn bad_zones_are_refused() {
        assert!(matches!(Zone::parse(""), Err(ZoneError::NotAName(_))));
        assert!(matches!(Zone::parse("a..b"), Err(ZoneError::NotAName(_))));
        let long = ["abcdefghij"; 22].join(".");
        assert!(matches!(Zone::parse(&long), Err(ZoneError::TooLong(_))));
    }
}
