#![expect(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;

use pb_sphinx::EpochKey;

use super::*;
use crate::{Descriptor, IdentityKeyPair, Role};

const EPOCH: Epoch = Epoch(10);

fn real_key(seed: u8) -> [u8; 32] {
    EpochKey::from_secret(EPOCH, [seed; 32]).public_key()
}

fn descriptor(seed: u8, addr: &str, epoch: Epoch, sphinx: [u8; 32]) -> SignedDescriptor {
    let pair = IdentityKeyPair::from_seed(&[seed; 32]);
    let packet_addr: SocketAddr = addr.parse().unwrap();
    pair.sign(&Descriptor {
        identity: pair.public(),
        version: 1,
        role: Role::Mix,
        epoch,
        sphinx_current: sphinx,
        sphinx_next: real_key(seed.wrapping_add(100)),
        packet_addr,
        gossip_addr: SocketAddr::new(packet_addr.ip(), 47471),
        link_key: pair.link_public(),
        transports: vec![],
    })
    .unwrap()
}

#[test]
fn real_keys_are_usable_and_small_order_twist_or_non_canonical_ones_are_not() {
    for seed in 1..20 {
        assert!(usable_sphinx_key(&real_key(seed)));
    }
    let mut p = [0xff; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    let mut p_minus_1 = p;
    p_minus_1[0] = 0xec;
    let mut one = [0; 32];
    one[0] = 1;
    // 0 and 1 (small order), -1 (the twist), p and above (second encodings), the top bit.
    for bad in [[0; 32], one, p_minus_1, p, [0xff; 32]] {
        assert!(!usable_sphinx_key(&bad), "{bad:02x?}");
    }
    let mut high = real_key(1);
    high[31] |= 0x80;
    assert!(!usable_sphinx_key(&high));
    // The order-8 points of Curve25519 (their u-coordinates, as RFC 7748 implementations
    // list them), and a point of the twist.
    let order_8 = [
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    ];
    for hex in order_8 {
        let mut key = [0u8; 32];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        assert!(!usable_sphinx_key(&key), "{hex}");
    }
    let twist = (2u8..=255)
        .map(|u| {
            let mut k = [0u8; 32];
            k[0] = u;
            k
        })
        .find(|k| MontgomeryPoint(*k).to_edwards(0).is_none())
        .unwrap();
    assert!(!usable_sphinx_key(&twist));
}

#[test]
fn admission_refuses_stale_bad_dead_and_crowded_relays_whatever_the_order() {
    let mut all = vec![
        descriptor(1, "198.18.1.1:47470", EPOCH, real_key(1)),
        // The previous epoch's descriptor still has the key for this one (its next key).
        descriptor(2, "198.18.2.1:47470", Epoch(9), real_key(2)),
        descriptor(3, "198.18.3.1:47470", Epoch(8), real_key(3)),
        descriptor(4, "198.18.4.1:47470", EPOCH, [0; 32]),
        descriptor(5, "198.18.5.1:47470", EPOCH, real_key(5)),
    ];
    // Six in one /24, three in one /48 (and an IPv4-mapped address in another /24's count).
    for i in 0..6u8 {
        all.push(descriptor(
            20 + i,
            &format!("203.0.113.{}:47470", 10 + i),
            EPOCH,
            real_key(20 + i),
        ));
    }
    for i in 0..3u8 {
        all.push(descriptor(
            40 + i,
            &format!("[2001:db8:1:{i}::1]:47470"),
            EPOCH,
            real_key(40 + i),
        ));
    }
    all.push(descriptor(
        50,
        "[::ffff:198.18.1.2]:47470",
        EPOCH,
        real_key(50),
    ));
    let policy = Policy {
        per_ipv4_24: 4,
        per_ipv6_48: 2,
    };
    let a = admit(EPOCH, &all, &policy);
    let why = |seed: u8| {
        let id = IdentityKeyPair::from_seed(&[seed; 32]).public().node_id();
        a.refused.iter().find(|(n, _)| *n == id).map(|(_, w)| *w)
    };
    assert_eq!(why(1), None);
    assert_eq!(why(2), None);
    assert_eq!(why(3), Some(Refused::Stale));
    assert_eq!(why(4), Some(Refused::BadSphinxKey));
    assert_eq!(why(5), None, "liveness is not admission's business");
    assert_eq!(
        why(50),
        None,
        "the mapped address shares a /24 with one relay only"
    );
    let full: Vec<NodeId> = a
        .refused
        .iter()
        .filter(|(_, w)| *w == Refused::PrefixFull)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(full.len(), 2 + 1);
    // In the crowded /24, those of smallest node id are admitted.
    let mut crowded: Vec<NodeId> = (20..26u8)
        .map(|s| IdentityKeyPair::from_seed(&[s; 32]).public().node_id())
        .collect();
    crowded.sort_by_key(|n| n.0);
    for id in &crowded[..4] {
        assert!(a.admitted.iter().any(|d| d.descriptor().node_id() == *id));
    }
    for id in &crowded[4..] {
        assert!(full.contains(id));
    }
    assert_eq!(a.admitted.len(), 1 + 1 + 1 + 4 + 2 + 1);
    // The same set in another order: the same decision.
    let mut reversed = all.clone();
    reversed.reverse();
    let b = admit(EPOCH, &reversed, &policy);
    let ids = |x: &Admission<'_>| -> Vec<NodeId> {
        x.admitted
            .iter()
            .map(|d| d.descriptor().node_id())
            .collect()
    };
    assert_eq!(ids(&a), ids(&b));
}
