#![expect(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;

use pb_sphinx::EpochKey;

use super::*;
use crate::{
    Descriptor, IdentityKeyPair, Role,
    admission::Policy,
    checkpoint::{Stewards, empty_tree_root},
    note::{NoteSigner, sign},
};

const EPOCH_SECONDS: u64 = 3600;
const EPOCH: Epoch = Epoch(500_000);
/// Half way through the epoch.
const NOW: u64 = EPOCH.0 as u64 * EPOCH_SECONDS + 1800;
const SEED: [u8; 32] = [0x42; 32];

fn relay(seed: u8, role: Role) -> SignedDescriptor {
    let pair = IdentityKeyPair::from_seed(&[seed; 32]);
    let at: SocketAddr = format!("198.18.{seed}.1:47470").parse().unwrap();
    pair.sign(&Descriptor {
        identity: pair.public(),
        version: 1,
        role,
        epoch: EPOCH,
        sphinx_current: EpochKey::from_secret(EPOCH, [seed; 32]).public_key(),
        sphinx_next: EpochKey::from_secret(Epoch(EPOCH.0 + 1), [seed; 32]).public_key(),
        packet_addr: at,
        gossip_addr: SocketAddr::new(at.ip(), 47471),
        link_key: pair.link_public(),
        transports: vec![],
    })
    .unwrap()
}

/// A gateway, six mixes and an exit (seeds `base` to `base + 7`).
fn relays(base: u8) -> Vec<SignedDescriptor> {
    (0..8u8)
        .map(|i| {
            let role = match i {
                0 => Role::Gateway,
                7 => Role::Exit,
                _ => Role::Mix,
            };
            relay(base + i, role)
        })
        .collect()
}

fn served(relays: &[SignedDescriptor]) -> Vec<(bool, Vec<u8>)> {
    relays.iter().map(|d| (true, d.bytes().to_vec())).collect()
}

fn checkpoint_of(relays: &[SignedDescriptor], epoch: Epoch) -> Checkpoint {
    Checkpoint {
        network: "pb.test/trust".into(),
        tree_size: 0,
        tree_root: empty_tree_root(),
        reputation: [0; 32],
        epoch,
        descriptors: descriptor_set_hash(relays.iter().map(|d| d.bytes())),
        topology: Topology::compute(&SEED, epoch, relays.iter().map(|d| d.descriptor()))
            .unwrap()
            .hash(),
    }
}

struct Setup {
    pairs: Vec<IdentityKeyPair>,
    network: NetworkFile,
}

impl Setup {
    fn new() -> Self {
        let pairs: Vec<IdentityKeyPair> = (1..=5u8)
            .map(|i| IdentityKeyPair::from_seed(&[0xa0 + i; 32]))
            .collect();
        let keys = pairs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                NoteSigner::new(&format!("pb.test/trust/s{i}"), p)
                    .unwrap()
                    .key()
                    .clone()
            })
            .collect();
        let network = NetworkFile {
            stewards: Stewards::new("pb.test/trust", keys, 3).unwrap(),
            seed: SEED,
            gateways: vec![crate::network::GatewayEntry {
                addr: "198.18.0.1:47480".parse().unwrap(),
                link_key: [9; 32],
                offers: vec![],
            }],
            epoch_seconds: EPOCH_SECONDS,
            policy: Policy::default(),
            allow_prefixes: Vec::new(),
            ledger: None,
        };
        Self { pairs, network }
    }

    /// `checkpoint` signed by stewards `by`.
    fn note(&self, checkpoint: &Checkpoint, by: &[usize]) -> Vec<u8> {
        let signers: Vec<NoteSigner<'_>> = by
            .iter()
            .map(|&i| NoteSigner::new(&format!("pb.test/trust/s{i}"), &self.pairs[i]).unwrap())
            .collect();
        sign(&checkpoint.text(), &signers.iter().collect::<Vec<_>>())
            .unwrap()
            .into_bytes()
    }
}

#[test]
fn an_honest_view_verifies_and_withheld_relays_are_left_out() {
    let s = Setup::new();
    let honest = relays(10);
    let note = s.note(&checkpoint_of(&honest, EPOCH), &[0, 2, 4]);
    let v = verify_view(&s.network, &note, &served(&honest), NOW).unwrap();
    assert_eq!(v.checkpoint.epoch, EPOCH);
    assert_eq!(v.topology.nodes().count(), 8);
    // Marking a mix not live (withholding) is allowed: it is left out of the routes.
    let mut view = served(&honest);
    view[3].0 = false;
    let v = verify_view(&s.network, &note, &view, NOW).unwrap();
    assert_eq!(v.topology.nodes().count(), 7);
    assert!(v.topology.find(honest[3].descriptor().node_id()).is_none());
}

#[test]
fn every_forgery_a_gateway_can_serve_is_refused_with_its_reason() {
    let s = Setup::new();
    let honest = relays(10);
    let good = checkpoint_of(&honest, EPOCH);
    let note = s.note(&good, &[0, 1, 2]);
    let check = |note: &[u8], view: &[(bool, Vec<u8>)], now: u64| {
        verify_view(&s.network, note, view, now).err().unwrap()
    };
    // (a) An invented network of self-signed relays, with the real checkpoint...
    let invented = relays(100);
    assert_eq!(
        check(&note, &served(&invented), NOW),
        Hostile::DescriptorSet
    );
    // ... or with a checkpoint the attacker signed itself (under the stewards' names).
    let fake_stewards: Vec<IdentityKeyPair> = (1..=3u8)
        .map(|i| IdentityKeyPair::from_seed(&[0xe0 + i; 32]))
        .collect();
    let fakes: Vec<NoteSigner<'_>> = fake_stewards
        .iter()
        .enumerate()
        .map(|(i, p)| NoteSigner::new(&format!("pb.test/trust/s{i}"), p).unwrap())
        .collect();
    let forged = sign(
        &checkpoint_of(&invented, EPOCH).text(),
        &fakes.iter().collect::<Vec<_>>(),
    )
    .unwrap();
    assert_eq!(
        check(forged.as_bytes(), &served(&invented), NOW),
        Hostile::Checkpoint(CheckpointError::TooFewSignatures { got: 0, need: 3 })
    );
    // (b) The real network with one mix replaced by the attacker's, or one left out.
    let mut swapped = honest.clone();
    swapped[4] = relay(200, Role::Mix);
    assert_eq!(check(&note, &served(&swapped), NOW), Hostile::DescriptorSet);
    assert_eq!(
        check(&note, &served(&honest[1..]), NOW),
        Hostile::DescriptorSet
    );
    // (c) A stale checkpoint: two epochs ago, or the clock a day on.
    let stale = s.note(
        &Checkpoint {
            epoch: Epoch(EPOCH.0 - 2),
            ..good.clone()
        },
        &[0, 1, 2],
    );
    assert!(matches!(
        check(&stale, &served(&honest), NOW),
        Hostile::Epoch { got, .. } if got == EPOCH.0 - 2
    ));
    assert!(matches!(
        check(&note, &served(&honest), NOW + 86_400),
        Hostile::Epoch { .. }
    ));
    // (d) k - 1 signatures.
    let short = s.note(&good, &[3, 4]);
    assert_eq!(
        check(&short, &served(&honest), NOW),
        Hostile::Checkpoint(CheckpointError::TooFewSignatures { got: 2, need: 3 })
    );
    // A descriptor altered in transit: no longer the attested set.
    let mut altered = served(&honest);
    let last = altered[2].1.len() - 1;
    altered[2].1[last] ^= 1;
    assert_eq!(check(&note, &altered, NOW), Hostile::DescriptorSet);
    // k stewards attesting bytes that are not a descriptor: refused all the same.
    let mut junk = served(&honest);
    junk[2].1.truncate(40);
    let attested_junk = s.note(
        &Checkpoint {
            descriptors: descriptor_set_hash(junk.iter().map(|(_, b)| &b[..])),
            ..good.clone()
        },
        &[0, 1, 2],
    );
    assert!(matches!(
        check(&attested_junk, &junk, NOW),
        Hostile::Descriptor(_)
    ));
    // k stewards signing a topology the descriptors do not give.
    let wrong = s.note(
        &Checkpoint {
            topology: [0; 32],
            ..good.clone()
        },
        &[0, 1, 2],
    );
    assert_eq!(check(&wrong, &served(&honest), NOW), Hostile::Topology);
    // Every reason is one line.
    for h in [Hostile::DescriptorSet, Hostile::Topology] {
        assert!(!h.to_string().contains('\n'));
    }
}

#[test]
fn the_clock_allows_the_epoch_and_its_edges() {
    let s = Setup::new();
    let start = u64::from(EPOCH.0) * EPOCH_SECONDS;
    assert_eq!(allowed_epochs(&s.network, start + 1800), (EPOCH.0, EPOCH.0));
    // Early in an epoch the previous one's checkpoint still does; late, the next one's.
    assert_eq!(
        allowed_epochs(&s.network, start + 10),
        (EPOCH.0 - 1, EPOCH.0)
    );
    assert_eq!(
        allowed_epochs(&s.network, start + EPOCH_SECONDS - 10),
        (EPOCH.0, EPOCH.0 + 1)
    );
}
