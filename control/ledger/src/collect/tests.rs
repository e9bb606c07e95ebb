#![expect(clippy::unwrap_used, reason = "tests")]

use pb_control::IdentityKeyPair;

use super::*;

fn stats(sent: u64, lost: u64, rtt: [u64; RTT_BUCKET_COUNT]) -> LoopStats {
    LoopStats {
        sent,
        returned: rtt.iter().sum(),
        lost,
        rtt,
    }
}

fn node(b: u8) -> NodeId {
    NodeId([b; 16])
}

#[test]
fn the_recorder_sums_per_neighbour_and_closes_consistent_records() {
    let me = IdentityKeyPair::from_seed(&[9; 32]);
    let mut r = Recorder::default();
    r.observe(&[
        (node(1), stats(10, 1, [5, 4, 0, 0, 0, 0, 0, 0])),
        (node(2), stats(4, 0, [0, 0, 0, 0, 0, 0, 0, 0])),
    ]);
    // Link 1 now leads to node 3: what it grows from here counts for node 3.
    r.observe(&[
        (node(1), stats(20, 2, [10, 7, 0, 0, 0, 0, 0, 1])),
        (node(3), stats(10, 0, [0, 0, 6, 0, 0, 0, 0, 0])),
    ]);
    let m = r.close("pb.test/network", Epoch(7), me.public());
    assert_eq!(m.links.len(), 3);
    assert_eq!(
        (
            m.links[0].neighbour,
            m.links[0].sent,
            m.links[0].returned,
            m.links[0].lost
        ),
        (node(1), 20, 18, 2)
    );
    assert_eq!(m.links[0].rtt, [10, 7, 0, 0, 0, 0, 0, 1]);
    assert_eq!((m.links[1].sent, m.links[1].returned), (4, 0));
    // Six loops came back on a link that sent six since node 3 took it.
    assert_eq!(
        (m.links[2].neighbour, m.links[2].sent, m.links[2].returned),
        (node(3), 6, 6)
    );
    m.sign(&me).unwrap();
    // A new epoch starts from nothing; loops sent before that settle in it count as sent.
    r.observe(&[
        (node(1), stats(20, 5, [12, 7, 0, 0, 0, 0, 0, 1])),
        (node(3), stats(10, 0, [0, 0, 6, 0, 0, 0, 0, 0])),
    ]);
    let m = r.close("pb.test/network", Epoch(8), me.public());
    assert_eq!(m.links.len(), 1);
    assert_eq!(
        (m.links[0].sent, m.links[0].returned, m.links[0].lost),
        (5, 2, 3)
    );
    m.sign(&me).unwrap();
}

#[test]
fn the_recorder_keeps_the_busiest_links_and_never_the_relay_itself() {
    let me = IdentityKeyPair::from_seed(&[9; 32]);
    let mut r = Recorder::default();
    let mut links: Vec<(NodeId, LoopStats)> = (0..MAX_LINKS as u8 + 6)
        .map(|i| (node(i), stats(u64::from(i) + 1, 0, [0; RTT_BUCKET_COUNT])))
        .collect();
    links.push((
        me.public().node_id(),
        stats(1_000, 0, [0; RTT_BUCKET_COUNT]),
    ));
    r.observe(&links);
    let m = r.close("pb.test/network", Epoch(1), me.public());
    assert_eq!(m.links.len(), MAX_LINKS);
    assert_eq!(
        m.links[0].neighbour,
        node(6),
        "the six quietest are left out"
    );
    m.sign(&me).unwrap();
}

fn record(seed: u8, network: &str, epoch: u32) -> SignedMeasurement {
    let pair = IdentityKeyPair::from_seed(&[seed; 32]);
    Measurement {
        network: network.into(),
        epoch: Epoch(epoch),
        relay: pair.public(),
        links: Vec::new(),
    }
    .sign(&pair)
    .unwrap()
}

#[test]
fn a_steward_keeps_the_first_record_per_relay_of_the_epochs_it_collects() {
    let mut c = Collector::new("pb.test/network");
    let now = Epoch(10);
    for (seed, epoch) in [(2, 9), (1, 9), (3, 8)] {
        c.offer(record(seed, "pb.test/network", epoch).as_bytes(), now)
            .unwrap();
    }
    assert!(matches!(
        c.offer(record(1, "pb.test/network", 9).as_bytes(), now),
        Err(Refused::Held)
    ));
    for epoch in [10, 7, 11] {
        assert!(matches!(
            c.offer(record(4, "pb.test/network", epoch).as_bytes(), now),
            Err(Refused::OtherEpoch(e)) if e == epoch
        ));
    }
    assert!(matches!(
        c.offer(record(4, "pb.test/other", 9).as_bytes(), now),
        Err(Refused::OtherNetwork)
    ));
    let mut forged = record(4, "pb.test/network", 9).as_bytes().to_vec();
    let last = forged.len() - 3;
    forged[last] ^= 1;
    assert!(matches!(c.offer(&forged, now), Err(Refused::Record(_))));
    assert_eq!((c.count(Epoch(9)), c.count(Epoch(8))), (2, 1));
    let batch = c.take(Epoch(9));
    let relays: Vec<NodeId> = batch
        .iter()
        .map(|r| r.measurement().relay.node_id())
        .collect();
    assert!(relays.windows(2).all(|w| w[0] < w[1]), "in order of relay");
    assert_eq!(relays.len(), 2);
    assert_eq!(c.count(Epoch(8)), 0, "older epochs are dropped");
    // A record of a taken epoch, sent again late, is not taken twice.
    assert!(matches!(
        c.offer(record(5, "pb.test/network", 9).as_bytes(), now),
        Err(Refused::OtherEpoch(9))
    ));
}

#[test]
fn the_operators_log_appends_publishes_and_reopens() {
    let dir = std::env::temp_dir().join(format!("pb-ledger-collect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut log = Log::open(TileDir::new(&dir), "checkpoint").unwrap();
    assert_eq!(log.tree().size(), 0);
    let batch: Vec<SignedMeasurement> =
        (1..=200).map(|s| record(s, "pb.test/network", 3)).collect();
    log.append(&batch[..150]).unwrap();
    log.append(&batch[150..]).unwrap();
    assert_eq!(log.tree().size(), 200);
    let text = Checkpoint {
        network: "pb.test/network".into(),
        tree_size: 200,
        tree_root: log.root().0,
        reputation: [0; 32],
        epoch: Epoch(5),
        descriptors: [0; 32],
        topology: [0; 32],
    }
    .text();
    let pair = IdentityKeyPair::from_seed(&[1; 32]);
    let signer = pb_control::note::NoteSigner::new("pb.test/steward-1", &pair).unwrap();
    let note = pb_control::note::sign(&text, &[&signer]).unwrap();
    assert_eq!(tree_of(note.as_bytes()), Some((200, log.root())));
    log.dir().write("checkpoint", note.as_bytes()).unwrap();
    let again = Log::open(TileDir::new(&dir), "checkpoint").unwrap();
    assert_eq!(again.root(), log.root());
    assert_eq!(again.entries(), log.entries());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_write_is_made_good_by_the_next_append() {
    let dir = std::env::temp_dir().join(format!("pb-ledger-collect-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut log = Log::open(TileDir::new(&dir), "proposal").unwrap();
    log.append(&[record(1, "pb.test/network", 3)]).unwrap();
    // A file where the tiles' directory must go: the next write fails.
    std::fs::remove_dir_all(dir.join("tile")).unwrap();
    std::fs::write(dir.join("tile"), b"in the way").unwrap();
    assert!(log.append(&[record(2, "pb.test/network", 3)]).is_err());
    assert_eq!(
        log.tree().size(),
        2,
        "the entry is in the tree all the same"
    );
    std::fs::remove_file(dir.join("tile")).unwrap();
    log.append(&[record(3, "pb.test/network", 4)]).unwrap();
    let (_, entries) = TileDir::new(&dir).read_log(3, &log.root()).unwrap();
    assert_eq!(entries, log.entries());
    std::fs::remove_dir_all(&dir).unwrap();
}
