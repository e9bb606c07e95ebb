//! What a client's check of a gateway's view costs (issue "Trust root": well under 10 ms of
//! CPU per epoch on a phone-class core for a 100-relay network): a network of 100 relays
//! (10 gateways, 80 mixes, 10 exits), its checkpoint signed by 3 of 5 stewards, and
//! `pb_control::trust::verify_view` run again and again, as pb-client runs it on every
//! directory fetch. Prints the mean time per check.
//!
//! ```sh
//! cargo run --release --locked -p pb-control --example verify_cost
//! # aarch64, under qemu (docs/perf.md has the full command)
//! ```
#![expect(clippy::unwrap_used, reason = "a benchmark's setup")]

use std::{
    net::SocketAddr,
    time::{Duration, Instant, SystemTime},
};

use pb_control::{
    Descriptor, IdentityKeyPair, Role, Topology,
    admission::Policy,
    checkpoint::{Checkpoint, Stewards, descriptor_set_hash, empty_tree_root},
    network::NetworkFile,
    note::{NoteSigner, sign},
    trust::verify_view,
};
use pb_sphinx::{Epoch, EpochKey};

const RELAYS: usize = 100;
const EPOCH_SECONDS: u64 = 3600;

fn main() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let epoch = Epoch((now / EPOCH_SECONDS) as u32);
    let seed = [0x42; 32];
    let served: Vec<(bool, Vec<u8>)> = (0..RELAYS)
        .map(|i| {
            let mut s = [0u8; 32];
            s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let pair = IdentityKeyPair::from_seed(&s);
            let role = match i % 10 {
                0 => Role::Gateway,
                9 => Role::Exit,
                _ => Role::Mix,
            };
            let at = SocketAddr::from(([198, 18, i as u8, 1], 47470));
            let d = pair
                .sign(&Descriptor {
                    identity: pair.public(),
                    version: 1,
                    role,
                    epoch,
                    sphinx_current: EpochKey::from_secret(epoch, s).public_key(),
                    sphinx_next: EpochKey::from_secret(Epoch(epoch.0 + 1), s).public_key(),
                    packet_addr: at,
                    gossip_addr: SocketAddr::new(at.ip(), 47471),
                    link_key: pair.link_public(),
                    transports: vec![],
                })
                .unwrap();
            (true, d.bytes().to_vec())
        })
        .collect();
    let descriptors: Vec<_> = served
        .iter()
        .map(|(_, b)| pb_control::SignedDescriptor::parse(b).unwrap())
        .collect();
    let checkpoint = Checkpoint {
        network: "pb.test/cost".into(),
        tree_size: 0,
        tree_root: empty_tree_root(),
        reputation: [0; 32],
        epoch,
        descriptors: descriptor_set_hash(served.iter().map(|(_, b)| &b[..])),
        topology: Topology::compute(&seed, epoch, descriptors.iter().map(|d| d.descriptor()))
            .unwrap()
            .hash(),
    };
    let pairs: Vec<IdentityKeyPair> = (1..=5u8)
        .map(|i| IdentityKeyPair::from_seed(&[0xa0 + i; 32]))
        .collect();
    let signers: Vec<NoteSigner<'_>> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| NoteSigner::new(&format!("pb.test/cost/s{i}"), p).unwrap())
        .collect();
    let network = NetworkFile {
        stewards: Stewards::new(
            "pb.test/cost",
            signers.iter().map(|s| s.key().clone()).collect(),
            3,
        )
        .unwrap(),
        seed,
        gateways: vec![pb_control::network::GatewayEntry {
            addr: "198.18.0.1:47480".parse().unwrap(),
            link_key: [9; 32],
            offers: vec![],
        }],
        epoch_seconds: EPOCH_SECONDS,
        policy: Policy::default(),
        allow_prefixes: Vec::new(),
        ledger: None,
    };
    let note = sign(&checkpoint.text(), &[&signers[0], &signers[2], &signers[4]]).unwrap();
    // Warm up, then as many checks as fit in about three seconds.
    verify_view(&network, note.as_bytes(), &served, now).unwrap();
    let start = Instant::now();
    let mut runs = 0u32;
    while start.elapsed() < Duration::from_secs(3) {
        let v = verify_view(&network, note.as_bytes(), &served, now).unwrap();
        assert_eq!(v.topology.nodes().count(), RELAYS);
        runs += 1;
    }
    let mean = start.elapsed() / runs;
    println!(
        "verify_view, {RELAYS} relays, 3 of 5 stewards: {runs} checks, {:.2} ms each (target: well under 10 ms)",
        mean.as_secs_f64() * 1000.0
    );
}
