//! Seven `pb-relay` processes in gossip mode, each in its own network namespace on a bridge
//! (UDP backend): a gateway, five mixes and an exit that know only two seeds.
//!
//! Shows: they converge to one topology hash; a client that fetches the gateway's signed
//! descriptors (`/descriptors`), verifies them and computes the topology itself gets the same
//! hash, and its packets cross gateway, three mix layers and exit byte-identical; a killed
//! mix leaves every view within the failure bound and the dataplane forwards through the
//! new topology without any relay restarting; the mix, restarted, rejoins everywhere.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    path::Path,
    time::Duration,
};

use common::{Net, Relay, admin_get, client_topology, hex, identity_seed, packets, send_through};
use pb_control::Topology;
use pb_testbed::{Star, star};

const RELAYS: usize = 7;
const ADMIN: &str = "127.0.0.1:9100";
const DELIVER_PORT: u16 = 9000;
/// Epochs long enough that none ends during the test.
const EPOCH_SECONDS: u64 = 604_800;

fn write_files(bed: &Star, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let seeds = [bed.nodes[0].v4, bed.nodes[1].v4];
    for i in 0..RELAYS {
        std::fs::write(
            dir.join(format!("identity{i}.key")),
            hex(&identity_seed(i)) + "\n",
        )
        .unwrap();
        let deliver = (i == RELAYS - 1).then(|| SocketAddr::from(([127, 0, 0, 1], DELIVER_PORT)));
        let config = common::config(
            bed.nodes[i].v4,
            &seeds,
            i,
            RELAYS,
            ADMIN.parse().unwrap(),
            EPOCH_SECONDS,
            deliver,
        );
        std::fs::write(dir.join(format!("relay{i}.toml")), config).unwrap();
    }
}

fn start(bed: &Star, dir: &Path, i: usize) -> Relay {
    Relay::start(bed.nodes[i].ns.exec(
        env!("CARGO_BIN_EXE_pb-relay"),
        [
            "run",
            "--stats-interval",
            "0",
            "--config",
            dir.join(format!("relay{i}.toml")).to_str().unwrap(),
        ],
    ))
}

/// GET `path` from relay `i`'s admin endpoint, inside its namespace.
fn admin(bed: &Star, i: usize, path: &str) -> String {
    let stream = bed.nodes[i]
        .ns
        .in_netns(|| TcpStream::connect(ADMIN).unwrap())
        .unwrap();
    admin_get(stream, path)
}

fn client_view(bed: &Star) -> Topology {
    client_topology(&admin(bed, 0, "/status"), &admin(bed, 0, "/descriptors"))
}

#[test]
fn gossip_network_converges_survives_a_failure_and_takes_the_node_back() {
    if !pb_testbed::require_privileged(
        "gossip_network_converges_survives_a_failure_and_takes_the_node_back",
    ) {
        return;
    }
    let bed = star("gossip", RELAYS + 1).unwrap();
    let dir = std::env::temp_dir().join(format!("pb-gossipnet-{}", std::process::id()));
    write_files(&bed, &dir);
    let mut net = Net {
        relays: Vec::new(),
        dir: dir.clone(),
    };
    let deliveries = bed.nodes[RELAYS - 1]
        .ns
        .in_netns(|| UdpSocket::bind(("127.0.0.1", DELIVER_PORT)).unwrap())
        .unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let client = bed.nodes[RELAYS]
        .ns
        .in_netns(|| UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    for i in 0..RELAYS {
        net.relays.push(Some(start(&bed, &dir, i)));
    }
    let through = |net: &mut Net, topology: &Topology, tag: u8| {
        let gateway = topology.layer(0)[0].packet_addr;
        if let Err(e) = send_through(
            &packets(topology, 10, tag),
            gateway,
            &client,
            &deliveries,
            common::STEP,
        ) {
            net.fail(&e);
        }
    };

    // 1. One topology everywhere; the client computes the same from signed descriptors.
    let (hash, _, took) = net.converge(RELAYS, 0);
    let topology = client_view(&bed);
    assert_eq!(hex(&topology.hash()), hash, "the client's view differs");
    through(&mut net, &topology, 1);
    let pids: Vec<u32> = net.relays.iter().flatten().map(|r| r.child.id()).collect();

    // 2. Kill a mix from a layer of two (the topology stays complete without it).
    let victim_node = (1..=pb_control::MIX_LAYERS)
        .map(|l| topology.layer(l))
        .find(|layer| layer.len() == 2)
        .unwrap()[1]
        .node;
    let victim = (0..RELAYS)
        .find(|&i| {
            pb_control::IdentityKeyPair::from_seed(&identity_seed(i))
                .public()
                .node_id()
                == victim_node
        })
        .unwrap();
    let mut killed = net.relays[victim].take().unwrap();
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let (after_kill, _, gone_in) = net.converge(RELAYS - 1, 0);
    assert_ne!(after_kill, hash);
    // SWIM's bound for this network (the relays run pb-control's default settings), plus
    // the test's own polling.
    let bound =
        pb_control::GossipConfig::new(common::NETWORK_SEED, Vec::new()).failure_bound(RELAYS);
    assert!(
        gone_in <= bound + Duration::from_secs(2),
        "left the views after {gone_in:?}, bound {bound:?}"
    );
    let topology = client_view(&bed);
    assert_eq!(hex(&topology.hash()), after_kill);
    assert!(topology.find(victim_node).is_none());
    through(&mut net, &topology, 2);
    // Nobody restarted.
    let still: Vec<u32> = net.relays.iter().flatten().map(|r| r.child.id()).collect();
    assert!(still.iter().all(|p| pids.contains(p)));

    // 3. The mix comes back (new keys, newer descriptor) and rejoins everywhere.
    net.relays[victim] = Some(start(&bed, &dir, victim));
    let (rejoined, _, back_in) = net.converge(RELAYS, 0);
    let topology = client_view(&bed);
    assert_eq!(hex(&topology.hash()), rejoined);
    assert!(topology.find(victim_node).is_some());
    through(&mut net, &topology, 3);

    // 4. Metrics answer; every relay stops cleanly and never panicked.
    let metrics = admin(&bed, 0, "/metrics");
    assert!(metrics.contains("pb_gossip_members 7"), "{metrics}");
    assert!(metrics.contains("pb_packets_received_total"), "{metrics}");
    assert!(
        metrics.contains("pb_link_loops_lost_total{link=\"0\"}"),
        "{metrics}"
    );
    for relay in net.relays.iter_mut().flatten() {
        let (status, stderr) = relay.stop();
        assert!(status.success(), "{status}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    println!(
        "converged in {took:?}; a killed mix left every view in {gone_in:?} (bound {bound:?}); rejoined in {back_in:?}"
    );
}
