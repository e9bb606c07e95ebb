//! Fifty gossip nodes on a simulated network: a virtual clock, seeded latency and loss, no
//! sockets. Shows, in one deterministic run:
//!
//! - every node reaches the same topology hash, over all fifty, within a bounded time;
//! - a newer descriptor (a node's next keys) replaces the old one everywhere;
//! - a stopped node leaves every view within the failure bound;
//! - a partition (two halves that cannot reach each other) heals once the link is back;
//! - descriptors with a bad signature, a stale epoch, an oversized field or an old, replayed
//!   version, and malformed datagrams, are refused and counted, and never enter a topology;
//! - SWIM packets that speak for a relay without its identity key (impersonating its address,
//!   a bad signature, a squatted address) are refused and counted, and evict nobody;
//! - and, with eight sybils in one /24 among them, three stewards each compute the same
//!   checkpoint in two epochs running, admitting four of the sybils; their signatures travel
//!   by gossip until every node holds the checkpoint that k = 3 stewards open;
//! - a flood of signed SWIM datagrams from 250 strangers (20,000 a second) at one node knocks
//!   nobody out of membership;
//! - five stewards (k = 3) split 3 | 2 by a partition across an epoch change: only the side
//!   with three cosigns the new epoch, the other keeps the last checkpoint; after healing,
//!   every node holds one checkpoint of the new epoch.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use foca::{Codec as _, Header, Member, Message, State};
use pb_control::{
    Descriptor, Gossip, GossipConfig, IdentityKey, IdentityKeyPair, Invalid, Role,
    SignedDescriptor, Transport, TransportOffer,
    admission::Policy,
    checkpoint::Stewards,
    note::{NoteSigner, sign},
    wire::{KIND_SYNC, MAX_DATAGRAM, Peer, SwimCodec, swim_datagram, sync_datagrams},
};
use pb_sphinx::{Epoch, EpochKey};

const NODES: usize = 50;
const EPOCH: Epoch = Epoch(5);
/// The run's seed; `PB_SIM_SEED` picks another (the test must pass for every seed).
fn seed() -> u64 {
    std::env::var("PB_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0005)
}
/// Percent of datagrams lost.
const LOSS: u64 = 5;

/// Node `i`'s address: each of the fifty in a /24 of its own, the nodes after them (the
/// sybils of the stewards' test) all in 203.0.113.0/24.
fn addr(i: usize, port: u16) -> SocketAddr {
    let ip = if i < NODES {
        Ipv4Addr::new(198, 18, i as u8, 1)
    } else {
        Ipv4Addr::new(203, 0, 113, (i - NODES) as u8 + 1)
    };
    SocketAddr::new(ip.into(), port)
}

/// A real X25519 key of node `i`'s (version `version`) for `epoch`.
fn sphinx_key(i: usize, version: u64, epoch: Epoch) -> [u8; 32] {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
    secret[8..16].copy_from_slice(&version.to_le_bytes());
    EpochKey::from_secret(epoch, secret).public_key()
}

fn pair(i: usize) -> IdentityKeyPair {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    IdentityKeyPair::from_seed(&seed)
}

fn role(i: usize) -> Role {
    match i % 10 {
        0 => Role::Gateway,
        9 => Role::Exit,
        _ => Role::Mix,
    }
}

fn descriptor(i: usize, version: u64, epoch: Epoch) -> SignedDescriptor {
    let p = pair(i);
    p.sign(&Descriptor {
        identity: p.public(),
        version,
        role: role(i),
        epoch,
        sphinx_current: sphinx_key(i, version, epoch),
        sphinx_next: sphinx_key(i, version, Epoch(epoch.0 + 1)),
        // A new version moves the packet port, so that the topology hash shows it.
        packet_addr: addr(i, 47469 + version as u16),
        gossip_addr: addr(i, 47471),
        link_key: p.link_public(),
        transports: vec![TransportOffer {
            transport: Transport::Udp,
            port: 1,
            params: vec![],
        }],
    })
    .unwrap()
}

/// A small deterministic generator for latency and loss (splitmix64).
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

struct Net {
    nodes: Vec<Option<Gossip>>,
    /// Deliveries by (due, sequence): (to, from, bytes).
    wire: BTreeMap<(Duration, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    sequence: u64,
    now: Duration,
    dice: Dice,
    /// While set, nodes below this index and the others cannot reach each other.
    partition: Option<usize>,
    index: BTreeMap<SocketAddr, usize>,
    /// Datagrams seen per kind, for `PB_WRITE_CORPUS`.
    corpus: BTreeMap<u8, u64>,
    /// What was sent to addresses outside the network: per address, each datagram's kind
    /// and length.
    outside: BTreeMap<SocketAddr, Vec<(u8, usize)>>,
}

impl Net {
    fn new() -> Self {
        Self::with(NODES)
    }

    /// A network of `n` nodes.
    fn with(n: usize) -> Self {
        let seeds: Vec<SocketAddr> = (0..3).map(|i| addr(i, 47471)).collect();
        // The simulation's own range and the attackers' are allowed in descriptors.
        let config = GossipConfig {
            allowed_prefixes: vec![
                (Ipv4Addr::new(198, 18, 0, 0).into(), 15),
                (Ipv4Addr::new(203, 0, 113, 0).into(), 24),
            ],
            ..GossipConfig::new([0x42; 32], seeds)
        };
        let nodes = (0..n)
            .map(|i| {
                Some(
                    Gossip::new(
                        config.clone(),
                        pair(i),
                        descriptor(i, 1, EPOCH),
                        EPOCH,
                        1,
                        seed() ^ i as u64,
                        Duration::ZERO,
                    )
                    .unwrap(),
                )
            })
            .collect();
        let mut net = Self {
            nodes,
            wire: BTreeMap::new(),
            sequence: 0,
            now: Duration::ZERO,
            dice: Dice(seed()),
            partition: None,
            index: (0..n).map(|i| (addr(i, 47471), i)).collect(),
            corpus: BTreeMap::new(),
            outside: BTreeMap::new(),
        };
        for i in 0..n {
            net.flush(i);
        }
        net
    }

    /// Moves node `i`'s outgoing datagrams onto the wire.
    fn flush(&mut self, i: usize) {
        let from = addr(i, 47471);
        while let Some((to, bytes)) = self.nodes[i].as_mut().and_then(Gossip::poll_transmit) {
            assert!(bytes.len() <= MAX_DATAGRAM, "an oversized datagram");
            self.send(from, to, bytes);
        }
    }

    fn send(&mut self, from: SocketAddr, to: SocketAddr, bytes: Vec<u8>) {
        // `PB_WRITE_CORPUS=DIR` keeps a sample of real datagrams of each kind as fuzzing
        // seeds: every 97th, 30 of each.
        if let Ok(dir) = std::env::var("PB_WRITE_CORPUS") {
            let seen = self.corpus.entry(bytes[0]).or_default();
            *seen += 1;
            if seen.is_multiple_of(97) && *seen <= 97 * 30 {
                let name = format!("{dir}/datagram-{}-{:02}", bytes[0], *seen / 97);
                std::fs::write(name, &bytes).unwrap();
            }
        }
        if !self.index.contains_key(&to) {
            self.outside
                .entry(to)
                .or_default()
                .push((bytes[0], bytes.len()));
        }
        if self.dice.next() % 100 < LOSS {
            return;
        }
        let latency = Duration::from_micros(500 + self.dice.next() % 20_000);
        self.sequence += 1;
        self.wire
            .insert((self.now + latency, self.sequence), (to, from, bytes));
    }

    fn blocked(&self, a: usize, b: usize) -> bool {
        self.partition.is_some_and(|p| (a < p) != (b < p))
    }

    /// Runs the network until `until`.
    fn run_until(&mut self, until: Duration) {
        loop {
            let next_timer = self
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(i, n)| n.as_ref().map(|n| (n.poll_timeout(), i)))
                .min();
            let next_delivery = self.wire.keys().next().map(|k| k.0);
            let due = match (next_timer, next_delivery) {
                (Some((t, _)), Some(d)) => t.min(d),
                (Some((t, _)), None) => t,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            if due > until {
                break;
            }
            self.now = due;
            if next_delivery == Some(due) {
                let (_, (to, from, bytes)) = self.wire.pop_first().unwrap();
                let (Some(&t), Some(&f)) = (self.index.get(&to), self.index.get(&from)) else {
                    continue; // the attacker's address, or nowhere
                };
                if self.blocked(t, f) {
                    continue;
                }
                if let Some(node) = self.nodes[t].as_mut() {
                    node.handle_datagram(due, from, &bytes);
                    self.flush(t);
                }
            } else if let Some((_, i)) = next_timer {
                if let Some(node) = self.nodes[i].as_mut() {
                    node.handle_timeout(due);
                }
                self.flush(i);
            }
        }
        self.now = until;
    }

    /// Each running node's topology hash and node count (None: no topology).
    fn views(&mut self) -> Vec<Option<([u8; 32], usize)>> {
        self.nodes
            .iter_mut()
            .flatten()
            .map(|n| n.topology().ok().map(|t| (t.hash(), t.nodes().count())))
            .collect()
    }

    /// Runs in one-second steps until every running node has the same topology of `count`
    /// nodes, or `limit` passes; returns when it happened.
    fn converge(&mut self, count: usize, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now - start <= limit {
            let views = self.views();
            let first = views[0];
            if first.is_some_and(|(_, n)| n == count) && views.iter().all(|v| *v == first) {
                return Some(self.now - start);
            }
            let next = self.now + Duration::from_secs(1);
            self.run_until(next);
        }
        None
    }
}

#[test]
fn fifty_nodes_agree_detect_failures_heal_and_refuse_forgeries() {
    let config = GossipConfig::new([0x42; 32], Vec::new());
    let bound = config.failure_bound(NODES);
    let mut net = Net::new();

    // 1. Everyone converges on one topology over all fifty.
    let joined = net.converge(NODES, Duration::from_secs(60));
    assert!(
        joined.is_some(),
        "no agreement within 60 s: {:?}",
        net.views()
    );
    let hashes: BTreeSet<_> = net.views().into_iter().collect();
    assert_eq!(hashes.len(), 1);

    // 2. Node 7 publishes its next descriptor (new version, new next key): it replaces the
    // old one everywhere.
    let before = net.views()[0];
    net.nodes[7]
        .as_mut()
        .unwrap()
        .publish(descriptor(7, 2, EPOCH))
        .unwrap();
    net.flush(7);
    let spread = net.converge(NODES, Duration::from_secs(60));
    assert!(spread.is_some(), "{:?}", net.views());
    let after = net.views()[0];
    assert_ne!(after, before, "node 7's new port is in every topology");

    // 3. Forgeries and junk, sent to node 5 by an outsider.
    let attacker = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 9).into(), 4000);
    let outsider = IdentityKeyPair::from_seed(&[0xee; 32]);
    let forged = {
        let d = Descriptor {
            identity: outsider.public(),
            version: 1,
            role: Role::Mix,
            epoch: EPOCH,
            sphinx_current: sphinx_key(0xee, 1, EPOCH),
            sphinx_next: sphinx_key(0xee, 1, Epoch(EPOCH.0 + 1)),
            packet_addr: attacker,
            gossip_addr: attacker,
            link_key: outsider.link_public(),
            transports: vec![],
        };
        outsider.sign(&d).unwrap()
    };
    let mut bad_signature = forged.bytes().to_vec();
    *bad_signature.last_mut().unwrap() ^= 1;
    let stale = {
        // Two epochs behind: neither of its keys is for the current epoch.
        let mut d = forged.descriptor().clone();
        d.epoch = Epoch(EPOCH.0 - 2);
        outsider.sign(&d).unwrap()
    };
    let mut oversized = forged.bytes()[..forged.bytes().len() - 65].to_vec();
    oversized.push(9);
    oversized.extend_from_slice(&[0; 9]);
    oversized.extend_from_slice(&[0; 64]);
    let replayed = descriptor(7, 1, EPOCH);
    let mut junk = Vec::new();
    junk.extend(sync_datagrams([
        bad_signature.as_slice(),
        stale.bytes(),
        oversized.as_slice(),
        replayed.bytes(),
    ]));
    junk.push(vec![KIND_SYNC, 0, 200, 1, 2]); // truncated sync
    junk.push(vec![9, 9, 9]); // unknown kind
    junk.push(vec![1, 0xff, 0xff]); // a SWIM datagram that does not split
    junk.push(vec![KIND_SYNC; MAX_DATAGRAM + 1]); // too long
    // A SWIM packet, signed by a member (node 3) and sent from its address, whose header
    // does not decode: foca refuses it. (From the outsider, whom no node has proven, it
    // would only be held for a probe's echo.)
    let undecodable = swim_datagram(&pair(3), descriptor(3, 1, EPOCH).bytes(), &[0xff]);

    // Attempts to evict node 11 from node 5's view by speaking for it.
    let victim = |bump| Peer {
        addr: addr(11, 47471),
        bump,
    };
    let to_node5 = Peer {
        addr: addr(5, 47471),
        bump: 1,
    };
    let gossip_packet = |src: Peer, update: Member<Peer>| {
        let mut packet = Vec::new();
        let header = Header {
            src,
            src_incarnation: 0,
            dst: to_node5,
            message: Message::Gossip,
        };
        SwimCodec.encode_header(&header, &mut packet).unwrap();
        packet.extend_from_slice(&1u16.to_be_bytes());
        SwimCodec.encode_member(&update, &mut packet).unwrap();
        packet
    };
    // The outsider, under its own valid descriptor, claims node 11's address with a higher
    // bump (which would make foca replace node 11's identity).
    let renamed = gossip_packet(victim(2), Member::new(victim(2), 0, State::Alive));
    junk.push(swim_datagram(&outsider, forged.bytes(), &renamed));
    // Node 3's real descriptor, a packet declaring node 11 down, signed by someone else.
    let down = gossip_packet(
        Peer {
            addr: addr(3, 47471),
            bump: 1,
        },
        Member::new(victim(1), 1, State::Down),
    );
    junk.push(swim_datagram(
        &outsider,
        descriptor(3, 1, EPOCH).bytes(),
        &down,
    ));
    // A second outsider registers node 11's gossip address as its own, then speaks for it.
    let squatter = IdentityKeyPair::from_seed(&[0xdd; 32]);
    let squat = {
        let mut d = forged.descriptor().clone();
        d.identity = squatter.public();
        d.gossip_addr = addr(11, 47471);
        d.packet_addr = SocketAddr::new(addr(11, 47471).ip(), 4000);
        squatter.sign(&d).unwrap()
    };
    // It sends it from node 11's address (spoofed): from anywhere else it would not even be
    // read.
    let squatting = swim_datagram(&squatter, squat.bytes(), &renamed);
    let node5 = net.nodes[5].as_mut().unwrap();
    // Gossip itself brings old versions (node 7's first descriptor, still travelling):
    // count what the junk adds.
    let reasons = [
        Invalid::BadSignature,
        Invalid::StaleEpoch,
        Invalid::Oversized(""),
        Invalid::OldVersion,
        Invalid::AddressTaken,
    ];
    let before_junk: Vec<u64> = reasons.iter().map(|r| node5.rejected(*r)).collect();
    let stats_before = node5.stats();
    // Syncs as if from a member (node 3; syncs carry no signature of their sender): from an
    // unproven source they would only be held until it echoed a probe.
    for datagram in &junk {
        let from = if datagram.first() == Some(&KIND_SYNC) {
            addr(3, 47471)
        } else {
            attacker
        };
        node5.handle_datagram(net.now, from, datagram);
    }
    node5.handle_datagram(net.now, addr(11, 47471), &squatting);
    node5.handle_datagram(net.now, addr(3, 47471), &undecodable);
    for (reason, before) in reasons.iter().zip(before_junk) {
        assert_eq!(node5.rejected(*reason), before + 1, "{reason:?}");
    }
    let stats = node5.stats();
    assert_eq!(stats.malformed - stats_before.malformed, 4, "{stats:?}");
    assert_eq!(
        stats.swim_refused - stats_before.swim_refused,
        1,
        "{stats:?}"
    );
    assert_eq!(
        stats.swim_unauthenticated - stats_before.swim_unauthenticated,
        3,
        "{stats:?}"
    );
    // A validly signed descriptor of a node SWIM does not know (the outsider's) is held but
    // never enters a topology: only live members are placed. (It is dealt over the layers
    // with every other descriptor held, as a member's that went down is, so the layers may
    // move: no more than joining would move them.)
    node5.handle_datagram(net.now, attacker, &sync_datagrams([forged.bytes()])[0]);
    net.flush(5);
    net.run_until(net.now + Duration::from_secs(15));
    for (i, node) in net.nodes.iter_mut().enumerate() {
        let t = node.as_mut().unwrap().topology().unwrap();
        assert!(
            t.nodes().all(|p| p.identity != outsider.public()),
            "node {i} placed the outsider"
        );
        assert_eq!(t.nodes().count(), NODES, "node {i}");
    }
    // Every node still agrees; the replayed old version did not replace the new one
    // anywhere (node 7's packet port is version 2's); node 11 is a live member everywhere.
    let views: BTreeSet<_> = net.views().into_iter().collect();
    assert_eq!(views.len(), 1, "{views:?}");
    let seven = pair(7).public();
    for node in net.nodes.iter_mut().flatten() {
        let t = node.topology().unwrap();
        let placed = t.nodes().find(|p| p.identity == seven).unwrap();
        assert_eq!(placed.packet_addr, addr(7, 47471));
    }
    for node in net.nodes.iter().flatten() {
        assert!(node.live_members().contains(&addr(11, 47471)));
    }

    // 4. A node stops: it leaves every view within the failure bound.
    let stopped = 13;
    net.nodes[stopped] = None;
    let gone = net.converge(NODES - 1, bound);
    assert!(
        gone.is_some(),
        "node {stopped} still in some view after {bound:?}: {:?}",
        net.views()
    );
    for node in net.nodes.iter_mut().flatten() {
        let t = node.topology().unwrap();
        let id: IdentityKey = pair(stopped).public();
        assert!(t.nodes().all(|p| p.identity != id));
    }

    // 5. A partition: the halves lose each other, then heal.
    net.partition = Some(NODES / 2);
    net.run_until(net.now + bound * 2);
    let views = net.views();
    let split: BTreeSet<_> = views.iter().collect();
    assert!(split.len() >= 2, "the partition did not split the views");
    net.partition = None;
    let healed = net.converge(NODES - 1, Duration::from_secs(120));
    assert!(
        healed.is_some(),
        "the partition did not heal: {:?}",
        net.views()
    );

    println!(
        "joined in {:?}, new descriptor everywhere in {:?}, stopped node gone in {:?} (bound {:?}), healed in {:?}",
        joined.unwrap(),
        spread.unwrap(),
        gone.unwrap(),
        bound,
        healed.unwrap()
    );
}

#[test]
fn three_stewards_sign_the_same_checkpoint_each_epoch_and_cap_sybils() {
    const SYBILS: usize = 8;
    const STEWARDS: [usize; 3] = [0, 1, 2];
    const NETWORK: &str = "pb.test/simulation";
    let mut net = Net::with(NODES + SYBILS);
    assert!(
        net.converge(NODES + SYBILS, Duration::from_secs(60))
            .is_some(),
        "no agreement: {:?}",
        net.views()
            .iter()
            .map(|v| v.map(|(h, n)| (h[0], n)))
            .collect::<Vec<_>>()
    );
    let policy = Policy::default();
    let pairs: Vec<IdentityKeyPair> = STEWARDS.iter().map(|&s| pair(s)).collect();
    let signers: Vec<NoteSigner<'_>> = pairs
        .iter()
        .enumerate()
        .map(|(k, p)| NoteSigner::new(&format!("{NETWORK}/steward-{k}"), p).unwrap())
        .collect();
    let stewards = Stewards::new(
        NETWORK,
        signers.iter().map(|s| s.key().clone()).collect(),
        3,
    )
    .unwrap();
    // Every node follows the stewards' signatures; nodes 0 to 2 sign as stewards.
    for node in net.nodes.iter_mut().flatten() {
        node.set_stewards(stewards.clone(), policy);
    }
    for epoch in [EPOCH, Epoch(EPOCH.0 + 1)] {
        if epoch != EPOCH {
            // The next epoch: every descriptor is still fresh (its next key is this one's).
            for node in net.nodes.iter_mut().flatten() {
                node.set_epoch(epoch);
            }
            // Until the new one is cosigned, nodes hold the last epoch's.
            let held = net.nodes[30]
                .as_ref()
                .unwrap()
                .cosigned_checkpoint()
                .unwrap();
            assert_eq!(stewards.open(held.as_bytes()).unwrap().0.epoch, EPOCH);
            // Relays following the stewards deal over what the policy admits.
            assert!(
                net.converge(NODES + policy.per_ipv4_24, Duration::from_secs(60))
                    .is_some()
            );
        }
        let made: Vec<_> = STEWARDS
            .iter()
            .map(|&s| {
                net.nodes[s]
                    .as_ref()
                    .unwrap()
                    .checkpoint(NETWORK, &policy)
                    .unwrap()
            })
            .collect();
        let (checkpoint, admitted) = made[0].clone();
        assert!(
            made.iter().all(|m| *m == made[0]),
            "the stewards' checkpoints differ in {epoch:?}: {made:?}"
        );
        assert_eq!(checkpoint.epoch, epoch);
        // All fifty, and four of the eight sybils in their one /24.
        assert_eq!(admitted.len(), NODES + policy.per_ipv4_24);
        let note = sign(&checkpoint.text(), &signers.iter().collect::<Vec<_>>()).unwrap();
        let (opened, signed) = stewards.open(note.as_bytes()).unwrap();
        assert_eq!((opened, signed.len()), (checkpoint.clone(), 3));
        // By gossip: within a few rounds every node (gateways among them) holds that
        // checkpoint with the three stewards' signatures, despite the loss. (Six rounds of
        // 5 s: with 5% loss, some one of the 171 steward-node pairs losing three rounds in
        // a row is a 2% chance per seed; six, one in a million.)
        net.run_until(net.now + Duration::from_secs(30));
        for (i, node) in net.nodes.iter().enumerate() {
            let node = node.as_ref().unwrap();
            let held = node
                .cosigned_checkpoint()
                .unwrap_or_else(|| panic!("node {i} holds no cosigned checkpoint in {epoch:?}"));
            let (opened, signed) = stewards.open(held.as_bytes()).unwrap();
            assert_eq!((opened, signed.len()), (checkpoint.clone(), 3), "node {i}");
            assert_eq!(node.stats().cosigs_refused, 0, "node {i}");
        }
    }
    // Every node sends a measurement record (two fragments each) to the stewards, six times
    // 5 s apart as relays do through the next epoch: despite the loss, each steward ends
    // with every node's record once, and no other node receives any.
    let record = |i: usize| format!("record of node {i}\n{}", "x".repeat(2_000)).into_bytes();
    for _ in 0..6 {
        for i in 0..net.nodes.len() {
            let sent = net.nodes[i].as_mut().unwrap().send_record(&record(i));
            assert_eq!(sent, STEWARDS.len(), "node {i}");
            net.flush(i);
        }
        net.run_until(net.now + Duration::from_secs(5));
    }
    for (i, node) in net.nodes.iter_mut().enumerate() {
        let node = node.as_mut().unwrap();
        let mut got: Vec<Vec<u8>> = std::iter::from_fn(|| node.poll_record()).collect();
        got.sort();
        if STEWARDS.contains(&i) {
            let mut all: Vec<Vec<u8>> = (0..NODES + SYBILS).map(record).collect();
            all.sort();
            assert!(
                got == all,
                "steward {i}: {} of {} records",
                got.len(),
                all.len()
            );
            assert_eq!(node.stats().records_refused, 0);
        } else {
            assert!(got.is_empty(), "node {i} is no steward");
            assert_eq!(node.stats().records_not_steward, 0, "node {i}");
        }
    }
}

/// Five stewards, k = 3, split 3 | 2 by a partition across an epoch change: the side with
/// three stewards cosigns its view of the new epoch; the side with two cosigns nothing new and
/// keeps the last epoch's checkpoint (so its clients refuse the new epoch rather than use a
/// checkpoint fewer than k signed). Once the link is back, every node holds one checkpoint of
/// the new epoch over the whole network.
#[test]
fn a_partition_leaves_the_side_without_k_stewards_on_the_last_checkpoint() {
    const STEWARDS: [usize; 5] = [0, 1, 2, NODES / 2, NODES / 2 + 1];
    const NETWORK: &str = "pb.test/partition";
    let config = GossipConfig::new([0x42; 32], Vec::new());
    let bound = config.failure_bound(NODES);
    let mut net = Net::new();
    assert!(net.converge(NODES, Duration::from_secs(60)).is_some());
    let policy = Policy::default();
    let pairs: Vec<IdentityKeyPair> = STEWARDS.iter().map(|&s| pair(s)).collect();
    let keys = pairs
        .iter()
        .enumerate()
        .map(|(k, p)| {
            NoteSigner::new(&format!("{NETWORK}/steward-{k}"), p)
                .unwrap()
                .key()
                .clone()
        })
        .collect();
    let stewards = Stewards::new(NETWORK, keys, 3).unwrap();
    for node in net.nodes.iter_mut().flatten() {
        node.set_stewards(stewards.clone(), policy);
    }
    net.run_until(net.now + Duration::from_secs(20));
    let held = |net: &Net, i: usize| {
        let note = net.nodes[i].as_ref().unwrap().cosigned_checkpoint();
        let note = note.unwrap_or_else(|| panic!("node {i} holds no cosigned checkpoint"));
        let (checkpoint, signed) = stewards.open(note.as_bytes()).unwrap();
        (checkpoint, signed.len())
    };
    for i in 0..NODES {
        assert_eq!(held(&net, i).0.epoch, EPOCH, "node {i}");
    }

    // The halves lose each other; a relay of the two stewards' side publishes a new
    // descriptor, which only its side learns (liveness is not in a checkpoint: without a
    // descriptor that differs, both sides would sign the same text); the epoch changes.
    net.partition = Some(NODES / 2);
    net.run_until(net.now + bound * 2);
    let moved = NODES - 1;
    net.nodes[moved]
        .as_mut()
        .unwrap()
        .publish(descriptor(moved, 2, EPOCH))
        .unwrap();
    net.run_until(net.now + Duration::from_secs(10));
    let next = Epoch(EPOCH.0 + 1);
    for node in net.nodes.iter_mut().flatten() {
        node.set_epoch(next);
    }
    net.run_until(net.now + Duration::from_secs(30));
    // The checkpoint node `i`'s own view gives.
    let own = |net: &Net, i: usize| {
        let node = net.nodes[i].as_ref().unwrap();
        node.checkpoint(NETWORK, &policy).unwrap().0
    };
    let side_a = own(&net, 0);
    for i in 0..NODES {
        let (checkpoint, signed) = held(&net, i);
        if i < NODES / 2 {
            assert_eq!(checkpoint, side_a, "node {i} (three stewards' side)");
            assert!(signed >= 3, "node {i}: {signed} signatures");
        } else {
            assert_eq!(
                checkpoint.epoch, EPOCH,
                "node {i} (two stewards' side) moved to a checkpoint fewer than k signed"
            );
        }
    }
    assert_ne!(
        side_a,
        own(&net, NODES / 2),
        "the partition did not split the views"
    );

    // The link is back: one view, one checkpoint of the new epoch everywhere.
    net.partition = None;
    assert!(
        net.converge(NODES, Duration::from_secs(120)).is_some(),
        "the partition did not heal"
    );
    net.run_until(net.now + Duration::from_secs(30));
    let whole = own(&net, 0);
    for i in 0..NODES {
        let (checkpoint, signed) = held(&net, i);
        assert_eq!(checkpoint, whole, "node {i} after healing");
        assert!(signed >= 3, "node {i}: {signed} signatures");
    }
}

/// Signed SWIM datagrams from strangers, 20,000 a second from 250 addresses (each above its
/// own per-source limit) for 30 s, at one node: its members' probes and acks draw on the members' budget, which the flood cannot
/// touch, so nobody declares the node down; the flood is counted as `strangers_limited`.
/// (With one budget for everyone, the flood took the members' turns and the node was
/// declared down everywhere.)
#[test]
fn a_flood_from_strangers_knocks_nobody_out_of_membership() {
    let mut net = Net::new();
    assert!(net.converge(NODES, Duration::from_secs(60)).is_some());
    let victim = 5;
    // An outsider's valid descriptor and a signed SWIM packet, sent from elsewhere.
    let elsewhere = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 99).into(), 4000);
    let junk = outsider_ping(0xee, elsewhere, victim);
    let start = net.now;
    let mut sent = 0u64;
    let mut k = 0u8;
    while net.now < start + Duration::from_secs(30) {
        let node = net.nodes[victim].as_mut().unwrap();
        for _ in 0..20 {
            k = (k + 1) % 250;
            let from = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 1 + k).into(), 4000);
            node.handle_datagram(net.now, from, &junk);
            sent += 1;
        }
        net.flush(victim);
        let next = net.now + Duration::from_millis(1);
        net.run_until(next);
    }
    let views = net.views();
    assert!(
        views
            .iter()
            .all(|v| *v == views[0] && v.is_some_and(|(_, n)| n == NODES)),
        "a node left some view under the flood: {views:?}"
    );
    let stats = net.nodes[victim].as_ref().unwrap().stats();
    assert!(
        stats.strangers_limited > sent * 9 / 10,
        "{} of {sent} limited: {stats:?}",
        stats.strangers_limited
    );
}

/// A relay of an attacker's whose gossip address is a victim's (any host) speaks with signed
/// SWIM packets from that address (spoofed), again and again. A node takes a source into
/// membership, and files its descriptor, only once it has echoed a probe, so the spoofed
/// member never joins: nobody pings it, gossips to it, links to it or pushes it the
/// directory (hundreds of kilobytes in a large network), and no layer moves for it. The victim gets a few 81-byte probes, fewer bytes than the attacker
/// sent, and the spoofed address never shows up in any node's membership.
#[test]
fn a_spoofed_announce_gets_a_probe_not_a_directory_push() {
    let mut net = Net::new();
    assert!(net.converge(NODES, Duration::from_secs(60)).is_some());
    let victim = SocketAddr::new(Ipv4Addr::new(203, 0, 113, 50).into(), 53);
    let mut sent = 0;
    for round in 0..10 {
        for target in [5, 6, 7] {
            let datagram = outsider_ping(0xab, victim, target);
            sent += datagram.len();
            let now = net.now;
            net.nodes[target]
                .as_mut()
                .unwrap()
                .handle_datagram(now, victim, &datagram);
            net.flush(target);
        }
        net.run_until(net.now + Duration::from_secs(if round == 9 { 30 } else { 1 }));
    }
    let got = net.outside.get(&victim).cloned().unwrap_or_default();
    for node in net.nodes.iter().flatten() {
        assert!(
            !node.live_members().contains(&victim),
            "the spoofed address became a member"
        );
        // Nor is its descriptor filed: a new mix would move every mix's layer.
        assert_eq!(
            node.descriptors(),
            NODES,
            "the spoofed descriptor was filed"
        );
    }
    assert!(
        !got.iter().any(|(kind, _)| *kind == KIND_SYNC),
        "a directory push reached the victim: {got:?}"
    );
    let probes = got.iter().filter(|(kind, _)| *kind == 4).count();
    assert!(probes >= 1, "no probe: {got:?}");
    assert!(
        got.iter().all(|(kind, _)| *kind == 4),
        "the victim got more than probes: {got:?}"
    );
    let received: usize = got.iter().map(|(_, len)| len).sum();
    assert!(
        received <= sent,
        "amplification: the attacker sent {sent} bytes, the victim got {received}"
    );
    println!(
        "attacker sent {sent} bytes; the victim got {received} in {} datagrams ({probes} probes)",
        got.len()
    );
}

/// A signed SWIM ping to node `to` by an outsider (identity seed `seed`) whose valid
/// descriptor claims `claimed` as both its addresses.
fn outsider_ping(seed: u8, claimed: SocketAddr, to: usize) -> Vec<u8> {
    let outsider = IdentityKeyPair::from_seed(&[seed; 32]);
    let descriptor = outsider
        .sign(&Descriptor {
            identity: outsider.public(),
            version: 1,
            role: Role::Mix,
            epoch: EPOCH,
            sphinx_current: sphinx_key(usize::from(seed), 1, EPOCH),
            sphinx_next: sphinx_key(usize::from(seed), 1, Epoch(EPOCH.0 + 1)),
            packet_addr: claimed,
            gossip_addr: claimed,
            link_key: outsider.link_public(),
            transports: vec![],
        })
        .unwrap();
    let mut packet = Vec::new();
    let header = Header {
        src: Peer {
            addr: claimed,
            bump: 1,
        },
        src_incarnation: 0,
        dst: Peer {
            addr: addr(to, 47471),
            bump: 1,
        },
        message: Message::Ping(1),
    };
    SwimCodec.encode_header(&header, &mut packet).unwrap();
    packet.extend_from_slice(&0u16.to_be_bytes());
    swim_datagram(&outsider, descriptor.bytes(), &packet)
}
