//! Property tests of the header codec: anything built parses back to the same addresses and
//! payload with a valid UDP checksum, and no input of any shape makes the parser panic.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pb_io::wire::{self, Route};
use proptest::prelude::*;

fn addr_pair() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<[u8; 4]>(),
            any::<u16>()
        )
            .prop_map(|(s, sp, d, dp)| (
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(s)), sp),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(d)), dp),
            )),
        (
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<[u8; 16]>(),
            any::<u16>()
        )
            .prop_map(|(s, sp, d, dp)| (
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(s)), sp),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::from(d)), dp),
            )),
    ]
}

proptest! {
    #[test]
    fn built_frames_parse_back(
        (src, dst) in addr_pair(),
        macs in any::<([u8; 6], [u8; 6])>(),
        payload in proptest::collection::vec(any::<u8>(), 0..1500),
    ) {
        let v6 = dst.is_ipv6();
        let header = wire::header_len(v6);
        let mut frame = vec![0u8; header + payload.len()];
        frame[header..].copy_from_slice(&payload);
        let route = Route { src_mac: macs.0, dst_mac: macs.1, src, dst };
        let len = wire::build(&mut frame, &route, payload.len()).unwrap();
        prop_assert_eq!(len, frame.len());
        let d = wire::parse(&frame, dst.port(), payload.len()).unwrap();
        prop_assert_eq!(d.src, src);
        prop_assert_eq!(d.dst, dst);
        prop_assert_eq!(&frame[d.payload_offset..d.payload_offset + d.payload_len], payload.as_slice());
        prop_assert!(wire::udp_checksum_ok(&frame, &d));
        prop_assert_eq!(&frame[..6], &macs.1[..]);
        prop_assert_eq!(&frame[6..12], &macs.0[..]);
    }

    #[test]
    fn parse_never_panics(frame in proptest::collection::vec(any::<u8>(), 0..200), port in any::<u16>(), len in 0usize..200) {
        let _ = wire::parse(&frame, port, len);
    }

    #[test]
    fn parse_never_panics_on_mutated_real_frames(
        v6 in any::<bool>(),
        flips in proptest::collection::vec((0usize..70, any::<u8>()), 1..8),
        cut in 0usize..120,
    ) {
        let (src, dst): (SocketAddr, SocketAddr) = if v6 {
            ("[fd70:6862::2]:1".parse().unwrap(), "[fd70:6862::1]:47470".parse().unwrap())
        } else {
            ("198.18.0.2:1".parse().unwrap(), "198.18.0.1:47470".parse().unwrap())
        };
        let mut frame = vec![0u8; wire::header_len(v6) + 64];
        wire::build(&mut frame, &Route { src_mac: [0; 6], dst_mac: [0; 6], src, dst }, 64).unwrap();
        for (at, value) in flips {
            if let Some(b) = frame.get_mut(at) { *b ^= value; }
        }
        frame.truncate(frame.len().saturating_sub(cut));
        let _ = wire::parse(&frame, 47470, 64);
    }
}
