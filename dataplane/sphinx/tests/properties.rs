//! Property tests: tampering is caught where the spec says, sizes never change, and batch
//! processing equals one-at-a-time processing; in both formats.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use pb_sphinx::*;
use proptest::prelude::*;

fn packet_for(format: Format, hops: usize, seed: u8) -> ([u8; PACKET_LEN], Vec<Relay>) {
    let relays = relays(hops);
    let route = route(&relays);
    let mut packet = [0u8; PACKET_LEN];
    create_packet_with(
        format,
        &mut packet,
        EPOCH,
        &route,
        MAILBOX,
        &test_message(300, seed),
        &[seed; 32],
    )
    .unwrap();
    (packet, relays)
}

fn any_format() -> impl Strategy<Value = Format> {
    prop_oneof![Just(Format::V1), Just(Format::V2)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A flipped header bit is dropped by the first hop that sees it (here, the first).
    #[test]
    fn header_bit_flips_are_dropped_at_the_first_hop(format in any_format(), hops in 1usize..=MAX_HOPS, bit in 0usize..HEADER_MAX * 8, seed in any::<u8>()) {
        let bit = bit % (format.header_len() * 8);
        let (mut packet, relays) = packet_for(format, hops, seed);
        packet[bit / 8] ^= 1 << (bit % 8);
        let result = process(&mut packet, &relays[0].keys, &mut MemoryReplayFilter::default());
        prop_assert!(result.is_err(), "flip of header bit {bit} passed: {result:?}");
    }

    /// A flipped header bit after the first hop is dropped at the next hop.
    #[test]
    fn header_bit_flips_in_flight_are_dropped_at_the_next_hop(format in any_format(), bit in 0usize..HEADER_MAX * 8, seed in any::<u8>()) {
        let bit = bit % (format.header_len() * 8);
        let (mut packet, relays) = packet_for(format, 3, seed);
        let mut filter = MemoryReplayFilter::default();
        let first = process(&mut packet, &relays[0].keys, &mut filter);
        prop_assert!(matches!(first, Ok(Processed::Forward { .. })), "first hop: {:?}", first);
        packet[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(process(&mut packet, &relays[1].keys, &mut filter).is_err());
    }

    /// A flipped payload bit anywhere on the path is detected at the final hop.
    #[test]
    fn payload_bit_flips_are_detected_at_the_final_hop(format in any_format(), hops in 1usize..=MAX_HOPS, at_hop in 0usize..MAX_HOPS, bit in 0usize..PAYLOAD_LEN * 8, seed in any::<u8>()) {
        let at_hop = at_hop % hops;
        let bit = bit % (format.payload_len() * 8);
        let (mut packet, relays) = packet_for(format, hops, seed);
        let mut filter = MemoryReplayFilter::default();
        for (i, relay) in relays.iter().enumerate() {
            if i == at_hop {
                packet[format.payload_at() + bit / 8] ^= 1 << (bit % 8);
            }
            let result = process(&mut packet, &relay.keys, &mut filter);
            if i + 1 < hops {
                prop_assert!(matches!(result, Ok(Processed::Forward { .. })), "hop {} must still forward", i);
            } else {
                prop_assert_eq!(result, Err(DropReason::PayloadTampered));
            }
        }
    }

    /// Every hop sees, and emits, exactly one packet length.
    #[test]
    fn packets_are_the_same_size_at_every_hop(format in any_format(), hops in 1usize..=MAX_HOPS, len in 0usize..=MESSAGE_LEN, seed in any::<u8>()) {
        let len = len % (format.message_len() + 1);
        let relays = relays(hops);
        let route = route(&relays);
        let mut packet = vec![0u8; PACKET_LEN];
        let fixed: &mut [u8; PACKET_LEN] = (&mut packet[..]).try_into().unwrap();
        create_packet_with(format, fixed, EPOCH, &route, MAILBOX, &test_message(len, seed), &[seed; 32]).unwrap();
        let mut filter = MemoryReplayFilter::default();
        for relay in &relays {
            prop_assert!(process(&mut packet, &relay.keys, &mut filter).is_ok());
            prop_assert_eq!(packet.len(), PACKET_LEN);
        }
    }

    /// Batch results equal single results, invalid packets, in-batch replays and both formats
    /// mixed in one batch included.
    #[test]
    fn batch_equals_single(kinds in proptest::collection::vec(0u8..10, 1..40), seed in any::<u8>()) {
        let relay = relay(1, EPOCH);
        let next = relay_for_route();
        let route = vec![
            Hop { node: relay.id, public_key: relay.keys.current.public_key(), delay: DelayMs(5) },
            Hop { node: next.id, public_key: next.keys.current.public_key(), delay: DelayMs(6) },
        ];
        let mut packets: Vec<Vec<u8>> = Vec::new();
        for (i, kind) in kinds.iter().enumerate() {
            let mut p = [0u8; PACKET_LEN];
            let format = if (seed as usize + i).is_multiple_of(3) { Format::V2 } else { Format::V1 };
            create_packet_with(format, &mut p, EPOCH, &route, MAILBOX, b"batch", &[seed ^ i as u8; 32]).unwrap();
            let mut p = p.to_vec();
            match kind {
                0 | 1 => {}
                2 => p[ALPHA_AT + 3] ^= 0x10,                 // bad MAC
                3 => p.truncate(PACKET_LEN - 1),             // wrong length
                4 => p[1..5].copy_from_slice(&[0, 0, 0, 1]),  // past epoch
                5 => if let Some(prev) = packets.last() { p = prev.clone() }, // replay of the previous one
                6 => p[ALPHA_AT..ALPHA_AT + 32].copy_from_slice(&P_PLUS_9), // non-canonical α
                7 => p[ALPHA_AT..ALPHA_AT + 32].fill(0),                     // small order
                8 => p[ALPHA_AT..ALPHA_AT + 32].copy_from_slice(&P_MINUS_1), // on the twist
                _ => {                                                       // α + torsion
                    let alpha: [u8; 32] = p[ALPHA_AT..ALPHA_AT + 32].try_into().unwrap();
                    p[ALPHA_AT..ALPHA_AT + 32].copy_from_slice(&plus_torsion(&alpha));
                }
            }
            packets.push(p);
        }
        let mut singles = packets.clone();
        let mut filter = MemoryReplayFilter::default();
        let single: Vec<_> = singles.iter_mut().map(|p| process(p, &relay.keys, &mut filter)).collect();

        let mut batched = packets.clone();
        let mut refs: Vec<&mut [u8]> = batched.iter_mut().map(|p| p.as_mut_slice()).collect();
        let mut results = vec![Err(DropReason::WrongLength); refs.len()];
        process_batch(&mut refs, &relay.keys, &mut MemoryReplayFilter::default(), &mut results);
        prop_assert_eq!(&results, &single);
        prop_assert_eq!(batched, singles, "buffers after processing differ");
    }
}

/// 2^255 - 10 = p + 9: a non-canonical encoding of the base point's u-coordinate.
const P_PLUS_9: [u8; 32] = {
    let mut b = [0xff; 32];
    b[0] = 0xf6;
    b[31] = 0x7f;
    b
};

/// p - 1: a u-coordinate on the twist.
const P_MINUS_1: [u8; 32] = {
    let mut b = [0xff; 32];
    b[0] = 0xec;
    b[31] = 0x7f;
    b
};

/// The u-coordinate of α plus a point of order 8 (X25519 gives the same shared secret).
fn plus_torsion(alpha: &[u8; 32]) -> [u8; 32] {
    use curve25519_dalek::{constants::EIGHT_TORSION, montgomery::MontgomeryPoint};
    let point = MontgomeryPoint(*alpha).to_edwards(0).unwrap();
    (point + EIGHT_TORSION[1]).to_montgomery().to_bytes()
}

fn relay_for_route() -> Relay {
    relay(2, EPOCH)
}

#[test]
fn sanity_the_properties_can_fail() {
    // The tampering property relies on drops; an untouched packet must pass.
    let (mut packet, relays) = packet_for(Format::V2, 2, 1);
    match process(
        &mut packet,
        &relays[0].keys,
        &mut MemoryReplayFilter::default(),
    ) {
        Ok(Processed::Forward { .. }) => {}
        other => panic!("untouched packet: {other:?}"),
    }
}
