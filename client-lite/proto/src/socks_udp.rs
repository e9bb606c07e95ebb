//! The header of a SOCKS5 UDP relay datagram (RFC 1928, section 7), both ways: what an
//! application sends to the UDP ASSOCIATE relay port, and what the relay sends back.
//!
//! ```text
//! RSV (2 bytes, 0) | FRAG (1) | ATYP (1) | DST.ADDR (4, 16, or 1 + name) | DST.PORT (2) | DATA
//! ```
//!
//! Fragments are not reassembled: the RFC lets an implementation without reassembly drop
//! every datagram whose FRAG is not 0, and [`parse`] refuses them. Every malformed
//! datagram gets a typed [`UdpError`] for the caller to count and drop; a relay answers none
//! of them. The destination is a user's ([`Target`], whose `Debug` is scrubbed).

use crate::socks::{ATYP_NAME, ATYP_V4, ATYP_V6, Target};

/// The most data a relayed datagram carries here: what fits an Ethernet-sized datagram
/// after the largest header (a 255-byte name), and more than any DNS query over UDP or a
/// QUIC Initial needs. Longer ones are refused, not truncated.
pub const MAX_DATA: usize = 1472 - HEADER_MAX;
/// The longest header: RSV, FRAG, ATYP, a 255-byte name with its length, the port.
pub const HEADER_MAX: usize = 2 + 1 + 1 + 1 + 255 + 2;

/// Why a datagram was refused (each a counter's name at the relay).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    /// Shorter than its header.
    #[error("datagram shorter than its SOCKS5 UDP header")]
    Short,
    /// RSV is not 0.
    #[error("SOCKS5 UDP header: reserved bytes not zero")]
    Reserved,
    /// FRAG is not 0: a fragment, which this relay does not reassemble (RFC 1928 allows
    /// dropping them).
    #[error("SOCKS5 UDP fragment (not reassembled)")]
    Fragment,
    /// An address type other than 1, 3 or 4, or a name that is empty or not printable
    /// ASCII.
    #[error("SOCKS5 UDP header: bad address")]
    Address,
    /// More data than [`MAX_DATA`].
    #[error("SOCKS5 UDP datagram longer than {MAX_DATA} bytes of data")]
    TooLong,
}

/// A datagram's destination (or, from the relay, its source) and its data.
///
/// # Errors
///
/// [`UdpError`]: see its variants.
pub fn parse(datagram: &[u8]) -> Result<(Target, &[u8]), UdpError> {
    let [r0, r1, frag, atyp, rest @ ..] = datagram else {
        return Err(UdpError::Short);
    };
    if (*r0, *r1) != (0, 0) {
        return Err(UdpError::Reserved);
    }
    if *frag != 0 {
        return Err(UdpError::Fragment);
    }
    let (address, rest) = match *atyp {
        ATYP_V4 => rest.split_at_checked(4).ok_or(UdpError::Short)?,
        ATYP_V6 => rest.split_at_checked(16).ok_or(UdpError::Short)?,
        ATYP_NAME => {
            let (&len, rest) = rest.split_first().ok_or(UdpError::Short)?;
            rest.split_at_checked(usize::from(len))
                .ok_or(UdpError::Short)?
        }
        _ => return Err(UdpError::Address),
    };
    let ([p0, p1], data) = rest
        .split_first_chunk::<2>()
        .map(|(port, data)| (*port, data))
        .ok_or(UdpError::Short)?;
    let target =
        Target::from_wire(*atyp, address, u16::from_be_bytes([p0, p1])).ok_or(UdpError::Address)?;
    if data.len() > MAX_DATA {
        return Err(UdpError::TooLong);
    }
    Ok((target, data))
}

/// Appends a datagram from (or to) `target` carrying `data` to `out`.
///
/// # Errors
///
/// [`UdpError::TooLong`] if `data` exceeds [`MAX_DATA`]; [`UdpError::Address`] for a name
/// that is empty, longer than 255 bytes or not printable ASCII. Nothing is appended then.
pub fn encode(target: &Target, data: &[u8], out: &mut Vec<u8>) -> Result<(), UdpError> {
    if data.len() > MAX_DATA {
        return Err(UdpError::TooLong);
    }
    let port = target.port().to_be_bytes();
    match target {
        Target::V4(ip, _) => {
            out.extend_from_slice(&[0, 0, 0, ATYP_V4]);
            out.extend_from_slice(&ip.octets());
        }
        Target::V6(ip, _) => {
            out.extend_from_slice(&[0, 0, 0, ATYP_V6]);
            out.extend_from_slice(&ip.octets());
        }
        Target::Name(name, _) => {
            let len = u8::try_from(name.len()).map_err(|_| UdpError::Address)?;
            if len == 0 || !name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(UdpError::Address);
            }
            out.extend_from_slice(&[0, 0, 0, ATYP_NAME, len]);
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.extend_from_slice(&port);
    out.extend_from_slice(data);
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    /// A DNS query to 192.0.2.53:53 as PySocks and RFC 1928 lay it out.
    #[test]
    fn a_datagram_to_an_ipv4_address_parses() {
        let wire = [0, 0, 0, 1, 192, 0, 2, 53, 0, 53, 0xab, 0xcd];
        let (target, data) = parse(&wire).unwrap();
        assert_eq!(target, Target::V4(Ipv4Addr::new(192, 0, 2, 53), 53));
        assert_eq!(data, [0xab, 0xcd]);
        let mut out = Vec::new();
        encode(&target, data, &mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn names_and_ipv6_round_trip() {
        for target in [
            Target::Name("dns.example".into(), 853),
            Target::V6(Ipv6Addr::LOCALHOST, 443),
        ] {
            let mut out = Vec::new();
            encode(&target, b"payload", &mut out).unwrap();
            assert_eq!(parse(&out).unwrap(), (target, &b"payload"[..]));
        }
        // An empty datagram is a datagram.
        let mut out = Vec::new();
        encode(&Target::V4(Ipv4Addr::UNSPECIFIED, 0), b"", &mut out).unwrap();
        assert_eq!(parse(&out).unwrap().1, b"");
    }

    #[test]
    fn malformed_datagrams_are_refused_by_kind() {
        assert_eq!(parse(&[]), Err(UdpError::Short));
        assert_eq!(parse(&[0, 0, 0]), Err(UdpError::Short));
        assert_eq!(
            parse(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 53]),
            Err(UdpError::Reserved)
        );
        assert_eq!(
            parse(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 53]),
            Err(UdpError::Fragment)
        );
        assert_eq!(
            parse(&[0, 0, 0, 9, 1, 2, 3, 4, 0, 53]),
            Err(UdpError::Address)
        );
        assert_eq!(parse(&[0, 0, 0, 1, 1, 2, 3, 4, 0]), Err(UdpError::Short));
        assert_eq!(
            parse(&[0, 0, 0, 4, 1, 2, 3, 4, 0, 53]),
            Err(UdpError::Short)
        );
        assert_eq!(parse(&[0, 0, 0, 3, 5, b'a', b'b']), Err(UdpError::Short));
        assert_eq!(parse(&[0, 0, 0, 3, 0, 0, 53]), Err(UdpError::Address));
        assert_eq!(
            parse(&[0, 0, 0, 3, 2, b'a', b' ', 0, 53]),
            Err(UdpError::Address)
        );
        let mut long = vec![0, 0, 0, 1, 1, 2, 3, 4, 0, 53];
        long.resize(long.len() + MAX_DATA, 7);
        assert_eq!(parse(&long).unwrap().1.len(), MAX_DATA);
        long.push(7);
        assert_eq!(parse(&long), Err(UdpError::TooLong));
    }

    #[test]
    fn what_cannot_be_encoded_appends_nothing() {
        let mut out = vec![1];
        let long_name = Target::Name("a".repeat(256), 53);
        assert_eq!(encode(&long_name, b"", &mut out), Err(UdpError::Address));
        let v4 = Target::V4(Ipv4Addr::LOCALHOST, 53);
        assert_eq!(
            encode(&v4, &[0; MAX_DATA + 1], &mut out),
            Err(UdpError::TooLong)
        );
        assert_eq!(out, [1]);
    }

    proptest::proptest! {
        /// Any bytes: a typed error or a target and data that encode back to the same
        /// bytes; never a panic.
        #[test]
        fn any_bytes_parse_to_an_error_or_round_trip(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1600),
        ) {
            if let Ok((target, data)) = parse(&bytes) {
                let mut out = Vec::new();
                encode(&target, data, &mut out).unwrap();
                proptest::prop_assert_eq!(out, bytes);
            }
        }

        /// Any destination and data that fit: what is encoded parses back the same.
        #[test]
        fn any_datagram_round_trips(
            octets in proptest::array::uniform16(proptest::num::u8::ANY),
            kind in 0u8..3,
            name in "[!-~]{1,255}",
            port in proptest::num::u16::ANY,
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..=MAX_DATA),
        ) {
            let target = match kind {
                0 => Target::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]), port),
                1 => Target::V6(Ipv6Addr::from(octets), port),
                _ => Target::Name(name, port),
            };
            let mut out = Vec::new();
            encode(&target, &data, &mut out).unwrap();
            proptest::prop_assert_eq!(parse(&out).unwrap(), (target, &data[..]));
        }
    }
}
