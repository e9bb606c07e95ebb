//! Ethernet / IPv4 / IPv6 / UDP headers of PhantomBand datagrams: parse a received frame into
//! its peer and payload, and build the headers in front of a payload to transmit.
//!
//! The header layouts are the zerocopy types of `pb-xdp-common`, the same definitions the XDP
//! program reads, so both sides agree on every offset. Parsing never panics: any frame is
//! either a [`Datagram`] or a [`WireError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use pb_xdp_common::{ETH_P_IPV4, ETH_P_IPV6, EthHdr, IPPROTO_UDP, Ipv4Hdr, Ipv6Hdr, UdpHdr};
use zerocopy::{FromBytes, IntoBytes};

/// Why a frame is not a PhantomBand datagram. `Copy`, for hot-path counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Frame shorter than the headers it announces.
    #[error("frame truncated")]
    Truncated,
    /// Neither IPv4 nor IPv6.
    #[error("not IP")]
    NotIp,
    /// IP header fields inconsistent (version, header length, total length).
    #[error("malformed IP header")]
    BadIpHeader,
    /// An IPv4 fragment or an IPv6 packet with extension headers.
    #[error("fragmented or extension headers")]
    Fragmented,
    /// Not UDP.
    #[error("not UDP")]
    NotUdp,
    /// UDP to another port.
    #[error("wrong UDP port")]
    WrongPort,
    /// UDP length inconsistent with the IP length or the frame.
    #[error("bad UDP length")]
    BadUdpLength,
    /// Payload is not exactly the PhantomBand packet length.
    #[error("wrong packet size")]
    WrongSize,
}

/// A parsed PhantomBand datagram inside a received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Sender's address and port.
    pub src: SocketAddr,
    /// Our address and port it was sent to.
    pub dst: SocketAddr,
    /// Offset of the UDP payload in the frame.
    pub payload_offset: usize,
    /// Length of the UDP payload.
    pub payload_len: usize,
}

/// Bytes of Ethernet + IP + UDP headers in front of the payload for a peer of this family.
pub const fn header_len(ipv6: bool) -> usize {
    EthHdr::LEN + if ipv6 { Ipv6Hdr::LEN } else { Ipv4Hdr::LEN } + UdpHdr::LEN
}

/// The largest header [`header_len`] returns.
pub const MAX_HEADER_LEN: usize = header_len(true);

/// Parses an Ethernet frame carrying a PhantomBand datagram to `port` whose payload is exactly
/// `packet_len` bytes. Trailing bytes after the IP datagram (Ethernet padding) are ignored.
pub fn parse(frame: &[u8], port: u16, packet_len: usize) -> Result<Datagram, WireError> {
    let (eth, rest) = EthHdr::ref_from_prefix(frame).map_err(|_| WireError::Truncated)?;
    let (src_ip, dst_ip, l4, l4_offset): (IpAddr, IpAddr, &[u8], usize) = match eth.ether_type() {
        ETH_P_IPV4 => {
            let (ip, _) = Ipv4Hdr::ref_from_prefix(rest).map_err(|_| WireError::Truncated)?;
            let ihl = ip.header_len();
            let total = usize::from(u16::from_be_bytes(ip.total_len));
            if ip.version() != 4 || ihl < Ipv4Hdr::LEN || total < ihl {
                return Err(WireError::BadIpHeader);
            }
            if total > rest.len() {
                return Err(WireError::Truncated);
            }
            if ip.is_fragment() {
                return Err(WireError::Fragmented);
            }
            if ip.protocol != IPPROTO_UDP {
                return Err(WireError::NotUdp);
            }
            (
                Ipv4Addr::from(ip.src).into(),
                Ipv4Addr::from(ip.dst).into(),
                &rest[ihl..total],
                EthHdr::LEN + ihl,
            )
        }
        ETH_P_IPV6 => {
            let (ip, body) = Ipv6Hdr::ref_from_prefix(rest).map_err(|_| WireError::Truncated)?;
            if ip.version() != 6 {
                return Err(WireError::BadIpHeader);
            }
            let payload = usize::from(u16::from_be_bytes(ip.payload_len));
            if payload > body.len() {
                return Err(WireError::Truncated);
            }
            if ip.next_header != IPPROTO_UDP {
                return Err(match ip.next_header {
                    0 | 43 | 44 | 60 => WireError::Fragmented,
                    _ => WireError::NotUdp,
                });
            }
            (
                Ipv6Addr::from(ip.src).into(),
                Ipv6Addr::from(ip.dst).into(),
                &body[..payload],
                EthHdr::LEN + Ipv6Hdr::LEN,
            )
        }
        _ => return Err(WireError::NotIp),
    };
    let (udp, _) = UdpHdr::ref_from_prefix(l4).map_err(|_| WireError::Truncated)?;
    if udp.dst_port() != port {
        return Err(WireError::WrongPort);
    }
    let udp_len = usize::from(udp.length());
    if udp_len < UdpHdr::LEN || udp_len > l4.len() {
        return Err(WireError::BadUdpLength);
    }
    let payload_len = udp_len - UdpHdr::LEN;
    if payload_len != packet_len {
        return Err(WireError::WrongSize);
    }
    Ok(Datagram {
        src: SocketAddr::new(src_ip, udp.src_port()),
        dst: SocketAddr::new(dst_ip, port),
        payload_offset: l4_offset + UdpHdr::LEN,
        payload_len,
    })
}

/// Link-layer and network addresses of one transmitted datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Our MAC address.
    pub src_mac: [u8; 6],
    /// The next hop's MAC address.
    pub dst_mac: [u8; 6],
    /// Our address and port.
    pub src: SocketAddr,
    /// The peer's address and port.
    pub dst: SocketAddr,
}

/// Why headers could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// Source and destination are of different address families.
    #[error("source and destination address families differ")]
    FamilyMismatch,
    /// The buffer cannot hold headers plus payload, or the payload exceeds a UDP datagram.
    #[error("payload does not fit")]
    TooLong,
}

/// Writes Ethernet, IP and UDP headers into `frame[..header_len]` for the payload already in
/// `frame[header_len..header_len + payload_len]`, computing the IPv4 header checksum and the
/// UDP checksum. Returns the total frame length.
pub fn build(frame: &mut [u8], route: &Route, payload_len: usize) -> Result<usize, BuildError> {
    let ipv6 = match (route.src, route.dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => false,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => true,
        _ => return Err(BuildError::FamilyMismatch),
    };
    let hdr = header_len(ipv6);
    let total = hdr + payload_len;
    let udp_len = UdpHdr::LEN + payload_len;
    if total > frame.len() || udp_len > usize::from(u16::MAX) - Ipv4Hdr::LEN {
        return Err(BuildError::TooLong);
    }
    let udp_len16 = udp_len as u16;
    let eth = EthHdr {
        dst: route.dst_mac,
        src: route.src_mac,
        ether_type: if ipv6 { ETH_P_IPV6 } else { ETH_P_IPV4 }.to_be_bytes(),
    };
    eth.write_to_prefix(frame)
        .map_err(|_| BuildError::TooLong)?;
    let udp_offset = hdr - UdpHdr::LEN;
    let mut udp = UdpHdr {
        src_port: route.src.port().to_be_bytes(),
        dst_port: route.dst.port().to_be_bytes(),
        len: udp_len16.to_be_bytes(),
        checksum: [0; 2],
    };
    match (route.src, route.dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let mut ip = Ipv4Hdr {
                version_ihl: 0x45,
                tos: 0,
                total_len: (Ipv4Hdr::LEN as u16 + udp_len16).to_be_bytes(),
                id: [0; 2],
                frag_off: [0x40, 0], // don't fragment
                ttl: 64,
                protocol: IPPROTO_UDP,
                checksum: [0; 2],
                src: s.ip().octets(),
                dst: d.ip().octets(),
            };
            ip.checksum = fold(sum_bytes(0, ip.as_bytes())).to_be_bytes();
            ip.write_to_prefix(&mut frame[EthHdr::LEN..])
                .map_err(|_| BuildError::TooLong)?;
            let pseudo = pseudo_v4(&s, &d, udp_len16);
            udp.checksum = udp_checksum(pseudo, &udp, &frame[hdr..total]);
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            let ip = Ipv6Hdr {
                version_tc_flow: [0x60, 0, 0, 0],
                payload_len: udp_len16.to_be_bytes(),
                next_header: IPPROTO_UDP,
                hop_limit: 64,
                src: s.ip().octets(),
                dst: d.ip().octets(),
            };
            ip.write_to_prefix(&mut frame[EthHdr::LEN..])
                .map_err(|_| BuildError::TooLong)?;
            let pseudo = pseudo_v6(&s, &d, udp_len16);
            udp.checksum = udp_checksum(pseudo, &udp, &frame[hdr..total]);
        }
        _ => return Err(BuildError::FamilyMismatch),
    }
    udp.write_to_prefix(&mut frame[udp_offset..])
        .map_err(|_| BuildError::TooLong)?;
    Ok(total)
}

fn pseudo_v4(s: &SocketAddrV4, d: &SocketAddrV4, udp_len: u16) -> u32 {
    let mut sum = sum_bytes(0, &s.ip().octets());
    sum = sum_bytes(sum, &d.ip().octets());
    sum + u32::from(IPPROTO_UDP) + u32::from(udp_len)
}

fn pseudo_v6(s: &SocketAddrV6, d: &SocketAddrV6, udp_len: u16) -> u32 {
    let mut sum = sum_bytes(0, &s.ip().octets());
    sum = sum_bytes(sum, &d.ip().octets());
    sum + u32::from(IPPROTO_UDP) + u32::from(udp_len)
}

fn udp_checksum(pseudo: u32, udp: &UdpHdr, payload: &[u8]) -> [u8; 2] {
    let sum = sum_bytes(sum_bytes(pseudo, udp.as_bytes()), payload);
    match fold(sum) {
        // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
        0 => [0xff, 0xff],
        c => c.to_be_bytes(),
    }
}

/// One's-complement sum of big-endian 16-bit words, added to `sum` and returned folded to at
/// most 17 bits, so the result can be passed on as the `sum` of the next call. An odd final
/// byte is padded with zero (only the last call of a checksum may have odd length).
///
/// Adds 64 bits at a time: the one's-complement sum of 32-bit words folds to the same 16-bit
/// sum as that of their 16-bit halves, and a u64 accumulator cannot overflow for any frame.
fn sum_bytes(sum: u32, bytes: &[u8]) -> u32 {
    let mut acc = u64::from(sum);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_be_bytes(word);
        acc += (word >> 32) + (word & 0xffff_ffff);
    }
    let mut tail = chunks.remainder().chunks_exact(2);
    for pair in &mut tail {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = tail.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// Folds carries and complements.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Verifies the UDP checksum of a parsed datagram (a zero IPv4 checksum means none). Frames
/// from a veth peer may carry an unfinished checksum, so the receive path does not call this;
/// tests do.
pub fn udp_checksum_ok(frame: &[u8], dgram: &Datagram) -> bool {
    let Some(udp_offset) = dgram.payload_offset.checked_sub(UdpHdr::LEN) else {
        return false;
    };
    let end = dgram.payload_offset + dgram.payload_len;
    let Some(segment) = frame.get(udp_offset..end) else {
        return false;
    };
    let udp_len = segment.len() as u16;
    let pseudo = match (dgram.src, dgram.dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            if segment.get(6..8) == Some(&[0, 0]) {
                return true;
            }
            pseudo_v4(&s, &d, udp_len)
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => pseudo_v6(&s, &d, udp_len),
        _ => return false,
    };
    fold(sum_bytes(pseudo, segment)) == 0
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn route(v6: bool) -> Route {
        let (src, dst): (SocketAddr, SocketAddr) = if v6 {
            (
                "[fd70:6862::1]:40000".parse().unwrap(),
                "[fd70:6862::2]:47470".parse().unwrap(),
            )
        } else {
            (
                "198.18.0.1:40000".parse().unwrap(),
                "198.18.0.2:47470".parse().unwrap(),
            )
        };
        Route {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src,
            dst,
        }
    }

    fn frame_with_payload(v6: bool, payload_len: usize) -> Vec<u8> {
        let r = route(v6);
        let hdr = header_len(v6);
        let mut frame = vec![0u8; hdr + payload_len];
        for (i, b) in frame[hdr..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let n = build(&mut frame, &r, payload_len).unwrap();
        assert_eq!(n, frame.len());
        frame
    }

    #[test]
    fn build_then_parse_round_trips_both_families() {
        for v6 in [false, true] {
            let frame = frame_with_payload(v6, 1452);
            let d = parse(&frame, 47470, 1452).unwrap();
            assert_eq!(d.src, route(v6).src);
            assert_eq!(d.dst, route(v6).dst);
            assert_eq!(d.payload_offset, header_len(v6));
            assert_eq!(d.payload_len, 1452);
            assert!(udp_checksum_ok(&frame, &d));
        }
    }

    /// The plain definition: 16-bit big-endian words, end-around carry.
    fn naive_sum(bytes: &[u8]) -> u16 {
        let mut sum = 0u32;
        for pair in bytes.chunks(2) {
            let word = u32::from(pair[0]) << 8 | u32::from(*pair.get(1).unwrap_or(&0));
            sum += word;
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn wide_sum_equals_the_definition() {
        let mut bytes = Vec::new();
        for len in 0..300usize {
            bytes.push((len * 151 + 7) as u8);
            let fast = fold(sum_bytes(0, &bytes));
            assert_eq!(fast, !naive_sum(&bytes), "length {}", bytes.len());
        }
        let ones = vec![0xffu8; 4000];
        assert_eq!(fold(sum_bytes(0, &ones)), !naive_sum(&ones));
        // Chained calls, as the UDP checksum makes them.
        let (a, b) = bytes.split_at(100);
        assert_eq!(fold(sum_bytes(sum_bytes(0, a), b)), !naive_sum(&bytes));
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let frame = frame_with_payload(false, 100);
        assert_eq!(fold(sum_bytes(0, &frame[14..34])), 0);
    }

    #[test]
    fn known_ipv4_header_checksum() {
        // Example header from RFC 1071 discussions / Wikipedia: checksum 0xb861.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum_bytes(0, &hdr)), 0xb861);
    }

    #[test]
    fn corrupted_payload_fails_checksum() {
        let mut frame = frame_with_payload(true, 64);
        let d = parse(&frame, 47470, 64).unwrap();
        frame[d.payload_offset + 5] ^= 0x10;
        assert!(!udp_checksum_ok(&frame, &d));
    }

    #[test]
    fn rejects_wrong_size_port_and_truncation() {
        let frame = frame_with_payload(false, 1452);
        assert_eq!(parse(&frame, 47470, 1400), Err(WireError::WrongSize));
        assert_eq!(parse(&frame, 1, 1452), Err(WireError::WrongPort));
        assert_eq!(
            parse(&frame[..frame.len() - 1], 47470, 1452),
            Err(WireError::Truncated)
        );
        assert_eq!(parse(&frame[..10], 47470, 1452), Err(WireError::Truncated));
        let mut frag = frame.clone();
        frag[20] = 0x20; // more fragments
        assert_eq!(parse(&frag, 47470, 1452), Err(WireError::Fragmented));
        let mut arp = frame;
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse(&arp, 47470, 1452), Err(WireError::NotIp));
    }

    #[test]
    fn padding_after_datagram_is_ignored() {
        let mut frame = frame_with_payload(false, 4);
        frame.resize(60, 0); // Ethernet minimum frame with padding
        let d = parse(&frame, 47470, 4).unwrap();
        assert_eq!(d.payload_len, 4);
    }

    #[test]
    fn family_mismatch_and_overflow_are_errors() {
        let mut r = route(false);
        r.dst = route(true).dst;
        let mut frame = vec![0u8; 200];
        assert_eq!(build(&mut frame, &r, 10), Err(BuildError::FamilyMismatch));
        assert_eq!(
            build(&mut frame, &route(true), 199),
            Err(BuildError::TooLong)
        );
    }

    #[test]
    fn parse_never_panics_on_any_prefix_or_bit_flip() {
        let frame = frame_with_payload(true, 300);
        for cut in 0..frame.len() {
            let _ = parse(&frame[..cut], 47470, 300);
        }
        for bit in 0..(header_len(true) * 8) {
            let mut f = frame.clone();
            f[bit / 8] ^= 1 << (bit % 8);
            let _ = parse(&f, 47470, 300);
        }
    }
}
