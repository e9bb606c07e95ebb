//! Round trips through 1 to 5 relays, SURB replies, replays and epochs, in both formats.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use common::*;
use pb_sphinx::*;

/// Walks `packet` through `relays` in order, checking each hop's routing, and returns the
/// final hop's result.
fn walk(packet: &mut [u8; PACKET_LEN], relays: &[Relay], route: &[Hop]) -> Processed {
    let mut replay = MemoryReplayFilter::default();
    for (i, relay) in relays.iter().enumerate() {
        let result =
            process(packet, &relay.keys, &mut replay).unwrap_or_else(|e| panic!("hop {i}: {e}"));
        assert_eq!(packet.len(), PACKET_LEN);
        if i + 1 < relays.len() {
            match result {
                Processed::Forward { next, delay, .. } => {
                    assert_eq!(next, relays[i + 1].id, "hop {i} next");
                    assert_eq!(delay, route[i].delay, "hop {i} delay");
                }
                other => panic!("hop {i}: expected forward, got {other:?}"),
            }
        } else {
            return result;
        }
    }
    unreachable!("routes are not empty")
}

#[test]
fn packets_reach_their_mailbox_through_1_to_5_hops() {
    for (format, hops) in Format::ALL
        .into_iter()
        .flat_map(|f| (1..=MAX_HOPS).map(move |h| (f, h)))
    {
        let relays = relays(hops);
        let route = route(&relays);
        let msg = test_message(format.message_len() - hops, hops as u8);
        let mut packet = [0u8; PACKET_LEN];
        let first = create_packet_with(
            format,
            &mut packet,
            EPOCH,
            &route,
            MAILBOX,
            &msg,
            &[hops as u8; 32],
        )
        .unwrap();
        assert_eq!(first, relays[0].id);
        match walk(&mut packet, &relays, &route) {
            Processed::Deliver { mailbox, delay, .. } => {
                assert_eq!(mailbox, MAILBOX);
                assert_eq!(delay, route[hops - 1].delay);
                assert_eq!(
                    &message(&packet)[..msg.len()],
                    msg.as_slice(),
                    "{format:?} {hops} hops"
                );
                assert!(message(&packet)[msg.len()..].iter().all(|&b| b == 0));
            }
            other => panic!("{format:?} {hops} hops: expected deliver, got {other:?}"),
        }
    }
}

#[test]
fn surb_replies_reach_their_creator_through_1_to_5_hops() {
    for (format, hops) in Format::ALL
        .into_iter()
        .flat_map(|f| (1..=MAX_HOPS).map(move |h| (f, h)))
    {
        let relays = relays(hops);
        let route = route(&relays);
        let id = SurbId([hops as u8; 16]);
        let (surb, secrets) =
            create_surb_with(format, EPOCH, &route, MAILBOX, id, &[0x70 + hops as u8; 32]).unwrap();
        // The SURB travels as bytes to the exit.
        let bytes = surb.to_bytes();
        assert_eq!(bytes.len(), format.surb_len());
        let surb = Surb::from_bytes(&bytes[..]).unwrap();
        assert_eq!(surb.format(), format);
        assert_eq!(surb.epoch(), EPOCH);
        let reply = test_message(700, 3);
        let mut packet = [0u8; PACKET_LEN];
        assert_eq!(surb.into_reply(&mut packet, &reply).unwrap(), relays[0].id);
        match walk(&mut packet, &relays, &route) {
            Processed::DeliverReply { mailbox, surb, .. } => {
                assert_eq!((mailbox, surb), (MAILBOX, id));
                assert_eq!(secrets.id(), id);
                let opened = secrets.open_reply(payload_mut(&mut packet)).unwrap();
                assert_eq!(&opened[..reply.len()], reply.as_slice());
            }
            other => panic!("{format:?} {hops} hops: expected a reply, got {other:?}"),
        }
    }
}

#[test]
fn a_tampered_reply_does_not_open() {
    for format in Format::ALL {
        let relays = relays(3);
        let route = route(&relays);
        let (surb, secrets) =
            create_surb_with(format, EPOCH, &route, MAILBOX, SurbId([1; 16]), &[9; 32]).unwrap();
        let mut packet = [0u8; PACKET_LEN];
        surb.into_reply(&mut packet, b"hello").unwrap();
        packet[format.payload_at() + 500] ^= 0x01;
        walk(&mut packet, &relays, &route);
        assert_eq!(
            secrets.open_reply(payload_mut(&mut packet)).unwrap_err(),
            SurbError::Tampered
        );
    }
}

#[test]
fn a_replayed_packet_is_reported_as_a_replay() {
    for format in Format::ALL {
        let relays = relays(2);
        let route = route(&relays);
        let mut packet = [0u8; PACKET_LEN];
        create_packet_with(
            format,
            &mut packet,
            EPOCH,
            &route,
            MAILBOX,
            b"once",
            &[1; 32],
        )
        .unwrap();
        let mut copy = packet;
        let mut replay = MemoryReplayFilter::default();
        assert!(matches!(
            process(&mut packet, &relays[0].keys, &mut replay),
            Ok(Processed::Forward { .. })
        ));
        assert_eq!(
            process(&mut copy, &relays[0].keys, &mut replay),
            Err(DropReason::Replay)
        );
    }
}

/// A replay filter with no room left: it refuses (reports as seen) every tag it is asked to
/// record, as the relay's bounded filter does when full, and counts the requests and the
/// packets that needed no entry.
#[derive(Default)]
struct FullFilter {
    asked: usize,
    unrecorded: usize,
}

impl ReplayFilter for FullFilter {
    fn check_and_insert(&mut self, _: Epoch, _: &ReplayTag) -> bool {
        self.asked += 1;
        true
    }

    fn count_unrecorded(&mut self, epoch: Epoch) {
        assert_eq!(epoch, EPOCH);
        self.unrecorded += 1;
    }
}

/// One-hop link cover needs no replay tag, so a full filter does not stop it (and it is
/// never asked); a replayed cover packet is delivered to the cover mailbox again, where it
/// is dropped. Everything else, a real message, a loop to the relay's own mailbox, a SURB
/// reply, or a packet to forward, still needs a tag and is refused.
#[test]
fn link_cover_passes_a_full_replay_filter_and_nothing_else_does() {
    for format in Format::ALL {
        let relays = relays(2);
        let one_hop = &route(&relays)[..1];
        let make = |route: &[Hop], mailbox: MailboxId, seed: u8| {
            let mut p = [0u8; PACKET_LEN];
            create_packet_with(format, &mut p, EPOCH, route, mailbox, b"x", &[seed; 32]).unwrap();
            p
        };
        let cover = make(one_hop, COVER_MAILBOX, 1);
        let mut full = FullFilter::default();
        for _ in 0..2 {
            let mut copy = cover;
            match process(&mut copy, &relays[0].keys, &mut full) {
                Ok(Processed::Deliver { mailbox, .. }) => assert_eq!(mailbox, COVER_MAILBOX),
                other => panic!("{format:?}: cover refused: {other:?}"),
            }
        }
        assert_eq!(
            (full.asked, full.unrecorded),
            (0, 2),
            "{format:?}: cover asked the filter, or was not counted"
        );

        let loop_mailbox = MailboxId([0xfe; 16]);
        let (surb, _) =
            create_surb_with(format, EPOCH, one_hop, MAILBOX, SurbId([4; 16]), &[5; 32]).unwrap();
        let mut reply = [0u8; PACKET_LEN];
        surb.into_reply(&mut reply, b"r").unwrap();
        let others = [
            make(one_hop, MAILBOX, 2),
            make(one_hop, loop_mailbox, 3),
            reply,
            make(&route(&relays), COVER_MAILBOX, 6),
        ];
        for (i, mut packet) in others.into_iter().enumerate() {
            assert_eq!(
                process(&mut packet, &relays[0].keys, &mut full),
                Err(DropReason::Replay),
                "{format:?}: packet {i} passed a full filter"
            );
        }
        assert_eq!((full.asked, full.unrecorded), (others.len(), 2));
    }
}

#[test]
fn epochs_past_the_overlap_are_dropped_with_that_reason() {
    let old = relay(1, Epoch(9));
    let mut rotated = relay(1, Epoch(10));
    let route_old = route(std::slice::from_ref(&old));
    let mut packet = [0u8; PACKET_LEN];
    create_packet(
        &mut packet,
        Epoch(9),
        &route_old,
        MAILBOX,
        b"late",
        &[2; 32],
    )
    .unwrap();

    // During the overlap the previous key still works.
    rotated.keys.previous = Some(old.keys.current.clone());
    let mut p = packet;
    assert!(matches!(
        process(&mut p, &rotated.keys, &mut MemoryReplayFilter::default()),
        Ok(Processed::Deliver { .. })
    ));

    // After it, the same packet is a past-epoch drop.
    rotated.keys.previous = None;
    let mut p = packet;
    assert_eq!(
        process(&mut p, &rotated.keys, &mut MemoryReplayFilter::default()),
        Err(DropReason::PastEpoch)
    );

    // A packet for an epoch not yet started is a future-epoch drop.
    let future = relay(1, Epoch(11));
    let mut p = [0u8; PACKET_LEN];
    create_packet(
        &mut p,
        Epoch(11),
        &route(std::slice::from_ref(&future)),
        MAILBOX,
        b"early",
        &[3; 32],
    )
    .unwrap();
    assert_eq!(
        process(&mut p, &rotated.keys, &mut MemoryReplayFilter::default()),
        Err(DropReason::FutureEpoch)
    );
}

#[test]
fn malformed_buffers_are_typed_drops() {
    let r = relay(1, EPOCH);
    let mut filter = MemoryReplayFilter::default();
    assert_eq!(
        process(&mut [0u8; 10], &r.keys, &mut filter),
        Err(DropReason::WrongLength)
    );
    assert_eq!(
        process(&mut [0u8; PACKET_LEN + 1], &r.keys, &mut filter),
        Err(DropReason::WrongLength)
    );
    let mut zero = [0u8; PACKET_LEN];
    assert_eq!(
        process(&mut zero, &r.keys, &mut filter),
        Err(DropReason::UnknownVersion)
    );
    // Right version and epoch, α = 0 (low order).
    zero[0] = VERSION;
    zero[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&EPOCH.0.to_be_bytes());
    assert_eq!(
        process(&mut zero, &r.keys, &mut filter),
        Err(DropReason::InvalidElement)
    );
    // Random α: the MAC fails.
    zero[ALPHA_AT] = 9;
    assert_eq!(
        process(&mut zero, &r.keys, &mut filter),
        Err(DropReason::BadMac)
    );
}

#[test]
fn creation_rejects_bad_routes_and_long_messages() {
    let relays = relays(MAX_HOPS + 1);
    let route = route(&relays);
    let mut packet = [0u8; PACKET_LEN];
    assert_eq!(
        create_packet(&mut packet, EPOCH, &[], MAILBOX, b"", &[0; 32]),
        Err(CreateError::BadRouteLength(0))
    );
    assert_eq!(
        create_packet(&mut packet, EPOCH, &route, MAILBOX, b"", &[0; 32]),
        Err(CreateError::BadRouteLength(MAX_HOPS + 1))
    );
    assert_eq!(
        create_packet(
            &mut packet,
            EPOCH,
            &route[..1],
            MAILBOX,
            &[0; MESSAGE_LEN + 1],
            &[0; 32]
        ),
        Err(CreateError::MessageTooLong(MESSAGE_LEN + 1, MESSAGE_LEN))
    );
    let v2_max = Format::V2.message_len();
    assert_eq!(
        create_packet_with(
            Format::V2,
            &mut packet,
            EPOCH,
            &route[..1],
            MAILBOX,
            &vec![0; v2_max + 1],
            &[0; 32]
        ),
        Err(CreateError::MessageTooLong(v2_max + 1, v2_max))
    );
    let mut bad = route[..1].to_vec();
    bad[0].public_key = [0; 32];
    assert_eq!(
        create_packet(&mut packet, EPOCH, &bad, MAILBOX, b"", &[0; 32]),
        Err(CreateError::BadPublicKey(0))
    );
}

/// Every single-bit change of the header, tried exhaustively, is dropped by the first hop.
#[test]
fn every_header_bit_flip_is_dropped_at_the_first_hop() {
    for format in Format::ALL {
        let relays = relays(3);
        let route = route(&relays);
        let mut packet = [0u8; PACKET_LEN];
        create_packet_with(
            format,
            &mut packet,
            EPOCH,
            &route,
            MAILBOX,
            b"exhaustive",
            &[5; 32],
        )
        .unwrap();
        for bit in 0..format.header_len() * 8 {
            let mut p = packet;
            p[bit / 8] ^= 1 << (bit % 8);
            let result = process(&mut p, &relays[0].keys, &mut MemoryReplayFilter::default());
            assert!(
                result.is_err(),
                "{format:?} header bit {bit} flipped and still processed: {result:?}"
            );
        }
    }
}

/// α plus any small-order point gives the same X25519 secret; the MAC over α refuses it.
#[test]
fn alpha_plus_small_order_point_is_refused() {
    for format in Format::ALL {
        alpha_plus_small_order_point_is_refused_in(format);
    }
}

fn alpha_plus_small_order_point_is_refused_in(format: Format) {
    use curve25519_dalek::{constants::EIGHT_TORSION, montgomery::MontgomeryPoint};
    let relays = relays(2);
    let route = route(&relays);
    let mut packet = [0u8; PACKET_LEN];
    create_packet_with(
        format,
        &mut packet,
        EPOCH,
        &route,
        MAILBOX,
        b"torsion",
        &[6; 32],
    )
    .unwrap();
    let mut alpha = [0u8; 32];
    alpha.copy_from_slice(&packet[ALPHA_AT..BETA_AT]);
    let point = MontgomeryPoint(alpha).to_edwards(0).unwrap();
    let mut tried = 0;
    for torsion in &EIGHT_TORSION[1..] {
        let other = (point + torsion).to_montgomery().to_bytes();
        if other == alpha {
            continue; // (x, y) and (−x, y) share a u-coordinate
        }
        tried += 1;
        let mut p = packet;
        p[ALPHA_AT..BETA_AT].copy_from_slice(&other);
        let result = process(&mut p, &relays[0].keys, &mut MemoryReplayFilter::default());
        assert!(
            matches!(
                result,
                Err(DropReason::BadMac) | Err(DropReason::InvalidElement)
            ),
            "α + torsion accepted: {result:?}"
        );
    }
    assert!(tried >= 3, "only {tried} distinct encodings tried");
    // The untouched packet still goes through.
    assert!(
        process(
            &mut packet,
            &relays[0].keys,
            &mut MemoryReplayFilter::default()
        )
        .is_ok()
    );
}

/// Small-order and off-curve α values are invalid elements, not crashes or MAC checks.
#[test]
fn small_order_and_twist_alphas_are_invalid_elements() {
    let r = relay(1, EPOCH);
    let mut p_minus_1 = [0xff; 32];
    p_minus_1[0] = 0xec;
    p_minus_1[31] = 0x7f;
    let mut one = [0u8; 32];
    one[0] = 1;
    for (format, alpha) in Format::ALL
        .into_iter()
        .flat_map(|f| [[0u8; 32], one, p_minus_1].map(|a| (f, a)))
    {
        let mut packet = [0u8; PACKET_LEN];
        packet[0] = format.version();
        packet[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&EPOCH.0.to_be_bytes());
        packet[ALPHA_AT..BETA_AT].copy_from_slice(&alpha);
        let result = process(&mut packet, &r.keys, &mut MemoryReplayFilter::default());
        assert_eq!(result, Err(DropReason::InvalidElement), "α = {alpha:02x?}");
    }
}

/// The last hop cannot tell the route length: its β padding is random, not zeros.
#[test]
fn last_hop_padding_is_random() {
    for format in Format::ALL {
        last_hop_padding_is_random_in(format);
    }
}

fn last_hop_padding_is_random_in(format: Format) {
    let relays = relays(1);
    let route = route(&relays);
    let mut seen = Vec::new();
    for seed in [1u8, 2] {
        let mut packet = [0u8; PACKET_LEN];
        create_packet_with(
            format,
            &mut packet,
            EPOCH,
            &route,
            MAILBOX,
            b"pad",
            &[seed; 32],
        )
        .unwrap();
        assert!(matches!(
            process(
                &mut packet,
                &relays[0].keys,
                &mut MemoryReplayFilter::default()
            ),
            Ok(Processed::Deliver { .. })
        ));
        // After the last hop, β begins with the plaintext padding of a 1-hop route.
        let len = format.beta_len() - format.block_len();
        let padding = packet[BETA_AT..BETA_AT + len].to_vec();
        assert!(
            padding.iter().filter(|&&b| b == 0).count() < 16,
            "padding looks like zeros"
        );
        seen.push(padding);
    }
    assert_ne!(seen[0], seen[1]);
}

/// The MAC covers the epoch field even when two epochs share a key.
#[test]
fn mac_covers_the_epoch() {
    let secret = [0x33; 32];
    let old = EpochKey::from_secret(Epoch(10), secret);
    let keys = NodeKeys {
        current: EpochKey::from_secret(Epoch(11), secret),
        previous: Some(old.clone()),
        format: None,
    };
    let hop = Hop {
        node: NodeId([1; 16]),
        public_key: old.public_key(),
        delay: DelayMs(0),
    };
    let mut packet = [0u8; PACKET_LEN];
    create_packet(&mut packet, Epoch(10), &[hop], MAILBOX, b"epoch", &[8; 32]).unwrap();
    let mut moved = packet;
    moved[EPOCH_AT..EPOCH_AT + 4].copy_from_slice(&11u32.to_be_bytes());
    assert_eq!(
        process(&mut moved, &keys, &mut MemoryReplayFilter::default()),
        Err(DropReason::BadMac)
    );
    assert!(process(&mut packet, &keys, &mut MemoryReplayFilter::default()).is_ok());
}

/// A SURB used twice makes the second reply a replay at the first hop.
#[test]
fn a_reused_surb_is_a_replay() {
    for format in Format::ALL {
        a_reused_surb_is_a_replay_in(format);
    }
}

fn a_reused_surb_is_a_replay_in(format: Format) {
    let relays = relays(2);
    let route = route(&relays);
    let (surb, _secrets) =
        create_surb_with(format, EPOCH, &route, MAILBOX, SurbId([4; 16]), &[10; 32]).unwrap();
    let bytes = surb.to_bytes();
    let mut filter = MemoryReplayFilter::default();
    for (i, reply) in [&b"first"[..], &b"second"[..]].iter().enumerate() {
        let mut packet = [0u8; PACKET_LEN];
        Surb::from_bytes(&bytes[..])
            .unwrap()
            .into_reply(&mut packet, reply)
            .unwrap();
        let result = process(&mut packet, &relays[0].keys, &mut filter);
        if i == 0 {
            assert!(
                matches!(result, Ok(Processed::Forward { .. })),
                "{result:?}"
            );
        } else {
            assert_eq!(result, Err(DropReason::Replay));
        }
    }
}

/// The version byte is covered by the MAC (a v2 packet relabelled v1 is refused), and v2
/// forwards without blinding: the next α is one the sender chose.
#[test]
fn v2_specifics() {
    let relays = relays(1);
    let route = route(&relays);
    let mut packet = [0u8; PACKET_LEN];
    create_packet_with(
        Format::V2,
        &mut packet,
        EPOCH,
        &route,
        MAILBOX,
        b"v2",
        &[12; 32],
    )
    .unwrap();
    let mut relabelled = packet;
    relabelled[0] = Format::V1.version(); // byte 0: the version
    assert_eq!(
        process(
            &mut relabelled,
            &relays[0].keys,
            &mut MemoryReplayFilter::default()
        ),
        Err(DropReason::BadMac)
    );
    let relays = common::relays(2);
    let route = common::route(&relays);
    let mut packet = [0u8; PACKET_LEN];
    create_packet_with(
        Format::V2,
        &mut packet,
        EPOCH,
        &route,
        MAILBOX,
        b"v2",
        &[13; 32],
    )
    .unwrap();
    let before = packet[ALPHA_AT..BETA_AT].to_vec();
    assert!(matches!(
        process(
            &mut packet,
            &relays[0].keys,
            &mut MemoryReplayFilter::default()
        ),
        Ok(Processed::Forward { .. })
    ));
    assert_ne!(packet[ALPHA_AT..BETA_AT].to_vec(), before);
    assert!(matches!(
        process(
            &mut packet,
            &relays[1].keys,
            &mut MemoryReplayFilter::default()
        ),
        Ok(Processed::Deliver { .. })
    ));
}

/// A relay set to its network's format drops the other format's packets as an unknown
/// version, before any cryptography.
#[test]
fn a_relay_set_to_one_format_refuses_the_other() {
    let mut relay = relay(1, EPOCH);
    let route = route(std::slice::from_ref(&relay));
    for only in Format::ALL {
        relay.keys.format = Some(only);
        for format in Format::ALL {
            let mut packet = [0u8; PACKET_LEN];
            create_packet_with(
                format,
                &mut packet,
                EPOCH,
                &route,
                MAILBOX,
                b"one",
                &[14; 32],
            )
            .unwrap();
            let result = process(&mut packet, &relay.keys, &mut MemoryReplayFilter::default());
            if format == only {
                assert!(
                    matches!(result, Ok(Processed::Deliver { .. })),
                    "{result:?}"
                );
            } else {
                assert_eq!(
                    result,
                    Err(DropReason::UnknownVersion),
                    "{only:?} got {format:?}"
                );
            }
        }
    }
}

/// `EpochKey::agree` is X25519 (as x25519-dalek computes it), the same from either side, and
/// refuses the points that would make the result independent of the secret or the encoding
/// malleable.
#[test]
fn agree_is_x25519_and_refuses_small_order_and_non_canonical_points() {
    let a = EpochKey::from_secret(Epoch(1), [0x11; 32]);
    let b = EpochKey::from_secret(Epoch(1), [0x22; 32]);
    let ab = a.agree(&b.public_key()).unwrap();
    assert_eq!(Some(ab), b.agree(&a.public_key()));
    assert_eq!(ab, x25519_dalek::x25519([0x11; 32], b.public_key()));
    // The identity, a point of order 2, one of order 8 (RFC 7748's list of small-order
    // u-coordinates), and p itself (non-canonical zero).
    let mut order8 = [0u8; 32];
    order8.copy_from_slice(
        &(0..32)
            .map(|i| {
                u8::from_str_radix(
                    &"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"
                        [2 * i..2 * i + 2],
                    16,
                )
                .unwrap()
            })
            .collect::<Vec<_>>(),
    );
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    let mut one = [0u8; 32];
    one[0] = 1;
    for bad in [[0u8; 32], one, order8, p] {
        assert_eq!(a.agree(&bad), None, "{bad:?}");
    }
}
