//! QPACK (RFC 9204) without a dynamic table, sans-IO.
//!
//! The client announces `SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0`, so a field section it
//! receives may refer only to the static table; one that refers to a dynamic table is an
//! error (RFC 9204 §2.2.3). Strings may be Huffman-coded (RFC 7541 Appendix B; decoded with
//! `octets`, the codec quiche itself uses). The encoder writes static references and plain
//! literals, never Huffman (both are what a QPACK encoder may choose).

use super::{H3Error, QpackError};

/// The static table (RFC 9204 Appendix A).
const STATIC: [(&str, &str); 99] = [
    (":authority", ""),
    (":path", "/"),
    ("age", "0"),
    ("content-disposition", ""),
    ("content-length", "0"),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("referer", ""),
    ("set-cookie", ""),
    (":method", "CONNECT"),
    (":method", "DELETE"),
    (":method", "GET"),
    (":method", "HEAD"),
    (":method", "OPTIONS"),
    (":method", "POST"),
    (":method", "PUT"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "103"),
    (":status", "200"),
    (":status", "304"),
    (":status", "404"),
    (":status", "503"),
    ("accept", "*/*"),
    ("accept", "application/dns-message"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-ranges", "bytes"),
    ("access-control-allow-headers", "cache-control"),
    ("access-control-allow-headers", "content-type"),
    ("access-control-allow-origin", "*"),
    ("cache-control", "max-age=0"),
    ("cache-control", "max-age=2592000"),
    ("cache-control", "max-age=604800"),
    ("cache-control", "no-cache"),
    ("cache-control", "no-store"),
    ("cache-control", "public, max-age=31536000"),
    ("content-encoding", "br"),
    ("content-encoding", "gzip"),
    ("content-type", "application/dns-message"),
    ("content-type", "application/javascript"),
    ("content-type", "application/json"),
    ("content-type", "application/x-www-form-urlencoded"),
    ("content-type", "image/gif"),
    ("content-type", "image/jpeg"),
    ("content-type", "image/png"),
    ("content-type", "text/css"),
    ("content-type", "text/html; charset=utf-8"),
    ("content-type", "text/plain"),
    ("content-type", "text/plain;charset=utf-8"),
    ("range", "bytes=0-"),
    ("strict-transport-security", "max-age=31536000"),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains",
    ),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains; preload",
    ),
    ("vary", "accept-encoding"),
    ("vary", "origin"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "1; mode=block"),
    (":status", "100"),
    (":status", "204"),
    (":status", "206"),
    (":status", "302"),
    (":status", "400"),
    (":status", "403"),
    (":status", "421"),
    (":status", "425"),
    (":status", "500"),
    ("accept-language", ""),
    ("access-control-allow-credentials", "FALSE"),
    ("access-control-allow-credentials", "TRUE"),
    ("access-control-allow-headers", "*"),
    ("access-control-allow-methods", "get"),
    ("access-control-allow-methods", "get, post, options"),
    ("access-control-allow-methods", "options"),
    ("access-control-expose-headers", "content-length"),
    ("access-control-request-headers", "content-type"),
    ("access-control-request-method", "get"),
    ("access-control-request-method", "post"),
    ("alt-svc", "clear"),
    ("authorization", ""),
    (
        "content-security-policy",
        "script-src 'none'; object-src 'none'; base-uri 'none'",
    ),
    ("early-data", "1"),
    ("expect-ct", ""),
    ("forwarded", ""),
    ("if-range", ""),
    ("origin", ""),
    ("purpose", "prefetch"),
    ("server", ""),
    ("timing-allow-origin", "*"),
    ("upgrade-insecure-requests", "1"),
    ("user-agent", ""),
    ("x-forwarded-for", ""),
    ("x-frame-options", "deny"),
    ("x-frame-options", "sameorigin"),
];

/// One decoded field line.
pub type Field = (Vec<u8>, Vec<u8>);

/// Appends an integer with an `n`-bit prefix whose high bits are `flags` (RFC 7541 §5.1).
fn put_int(out: &mut Vec<u8>, flags: u8, n: u32, mut value: u64) {
    let max = (1u64 << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 128 {
        out.push(value as u8 & 0x7f | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a plain (not Huffman-coded) string with an `n`-bit length prefix.
fn put_str(out: &mut Vec<u8>, flags: u8, n: u32, s: &[u8]) {
    put_int(out, flags, n, s.len() as u64);
    out.extend_from_slice(s);
}

/// Encodes a field section for `fields` (names in lower case), with no dynamic table.
pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    // Required Insert Count 0, Delta Base 0.
    let mut out = vec![0, 0];
    for (name, value) in fields {
        if let Some(i) = STATIC.iter().position(|e| e == &(*name, *value)) {
            // Indexed field line, static (0b11xxxxxx).
            put_int(&mut out, 0xc0, 6, i as u64);
        } else if let Some(i) = STATIC.iter().position(|(n, _)| n == name) {
            // Literal field line with a static name reference (0b0101xxxx).
            put_int(&mut out, 0x50, 4, i as u64);
            put_str(&mut out, 0x00, 7, value.as_bytes());
        } else {
            // Literal field line with a literal name (0b0010xxxx).
            put_str(&mut out, 0x20, 3, name.as_bytes());
            put_str(&mut out, 0x00, 7, value.as_bytes());
        }
    }
    out
}

/// A reader over a field section's bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&self) -> Result<u8, QpackError> {
        self.buf.first().copied().ok_or(QpackError::Truncated)
    }

    /// An integer with an `n`-bit prefix.
    fn int(&mut self, n: u32) -> Result<u64, QpackError> {
        let max = (1u64 << n) - 1;
        let first = u64::from(self.byte()?) & max;
        self.buf = &self.buf[1..];
        if first < max {
            return Ok(first);
        }
        let mut value = max;
        for shift in (0..63).step_by(7) {
            let b = self.byte()?;
            self.buf = &self.buf[1..];
            value = value
                .checked_add(u64::from(b & 0x7f) << shift)
                .filter(|v| *v < 1 << 62)
                .ok_or(QpackError::IntegerOverflow)?;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(QpackError::IntegerOverflow)
    }

    /// A string whose Huffman flag is bit `n` of the first byte, with an `n`-bit length.
    fn string(&mut self, n: u32, room: usize) -> Result<Vec<u8>, QpackError> {
        let huffman = self.byte()? & (1 << n) != 0;
        let len = usize::try_from(self.int(n)?).map_err(|_| QpackError::TooLarge)?;
        if len > self.buf.len() {
            return Err(QpackError::Truncated);
        }
        let (raw, rest) = self.buf.split_at(len);
        self.buf = rest;
        if huffman {
            octets::Octets::with_slice(raw)
                .get_huffman_decoded_with_max_length(room)
                .map_err(|_| QpackError::Huffman)
        } else if len > room {
            Err(QpackError::TooLarge)
        } else {
            Ok(raw.to_vec())
        }
    }
}

fn static_entry(i: u64) -> Result<(&'static str, &'static str), QpackError> {
    usize::try_from(i)
        .ok()
        .and_then(|i| STATIC.get(i))
        .copied()
        .ok_or(QpackError::BadStaticIndex)
}

/// Decodes a field section that refers to no dynamic table, of at most `max_size` bytes of
/// names and values. Any error means the section is malformed or needs a dynamic table.
pub fn decode(section: &[u8], max_size: usize) -> Result<Vec<Field>, H3Error> {
    decode_inner(section, max_size).map_err(H3Error::Qpack)
}

fn decode_inner(section: &[u8], max_size: usize) -> Result<Vec<Field>, QpackError> {
    let mut r = Reader { buf: section };
    if r.int(8)? != 0 {
        return Err(QpackError::DynamicTable);
    }
    r.int(7)?; // Delta Base: meaningless without a dynamic table.
    let mut room = max_size;
    let mut fields = Vec::new();
    while !r.buf.is_empty() {
        let first = r.byte()?;
        let (name, value) = if first & 0x80 != 0 {
            // Indexed field line: static if T (0x40) is set.
            if first & 0x40 == 0 {
                return Err(QpackError::DynamicTable);
            }
            let (n, v) = static_entry(r.int(6)?)?;
            (n.as_bytes().to_vec(), v.as_bytes().to_vec())
        } else if first & 0x40 != 0 {
            // Literal field line with name reference: static if T (0x10) is set.
            if first & 0x10 == 0 {
                return Err(QpackError::DynamicTable);
            }
            let (n, _) = static_entry(r.int(4)?)?;
            (n.as_bytes().to_vec(), r.string(7, room)?)
        } else if first & 0x20 != 0 {
            // Literal field line with a literal name.
            let name = r.string(3, room)?;
            (name, r.string(7, room)?)
        } else {
            // Post-base references need a dynamic table.
            return Err(QpackError::DynamicTable);
        };
        room = room
            .checked_sub(name.len() + value.len())
            .ok_or(QpackError::TooLarge)?;
        fields.push((name, value));
    }
    Ok(fields)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn what_we_encode_decodes_back() {
        let fields = [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "www.example.org"),
            (":path", "/AAAAAAAAAAAAAAAAAAAAAA"),
            ("content-type", "application/octet-stream"),
            ("x-custom", "v"),
        ];
        let section = encode(&fields);
        // POST and https are indexed (RFC 9204 Appendix A: 20 and 23).
        assert_eq!(&section[..4], &[0, 0, 0xc0 | 20, 0xc0 | 23]);
        let back = decode(&section, 4096).unwrap();
        let back: Vec<(&[u8], &[u8])> = back
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        let want: Vec<(&[u8], &[u8])> = fields
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        assert_eq!(back, want);
    }

    #[test]
    fn huffman_strings_decode() {
        // RFC 7541 §C.4.1: "www.example.com" Huffman-coded, as the value of a literal
        // with static name reference 0 (:authority).
        let mut s = vec![0, 0, 0x50, 0x80 | 12];
        s.extend_from_slice(&[
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ]);
        let f = decode(&s, 4096).unwrap();
        assert_eq!(
            f,
            vec![(b":authority".to_vec(), b"www.example.com".to_vec())]
        );
    }

    #[test]
    fn dynamic_references_truncation_and_oversize_are_errors() {
        let dynamic = H3Error::Qpack(QpackError::DynamicTable);
        assert_eq!(decode(&[1, 0], 100), Err(dynamic));
        assert_eq!(decode(&[0, 0, 0x80], 100), Err(dynamic));
        assert_eq!(decode(&[0, 0, 0x10], 100), Err(dynamic));
        assert_eq!(
            decode(&[0, 0, 0xff, 0x80], 100),
            Err(H3Error::Qpack(QpackError::Truncated))
        );
        assert_eq!(
            decode(&[0, 0, 0xc0 | 63, 100], 100),
            Err(H3Error::Qpack(QpackError::BadStaticIndex))
        );
        let big = encode(&[("x-big", &"a".repeat(200))]);
        assert_eq!(decode(&big, 100), Err(H3Error::Qpack(QpackError::TooLarge)));
        let mut huge = vec![0, 0, 0xff];
        huge.extend_from_slice(&[0xff; 12]);
        assert_eq!(
            decode(&huge, 100),
            Err(H3Error::Qpack(QpackError::IntegerOverflow))
        );
    }
}
