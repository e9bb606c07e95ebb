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

use std::{net::UdpSocket, time::Duration};

use common::{client_view, converge, hex, packets, send_through, stop_all};
use pb_control::Topology;
use pb_testnet::{Node, Testnet};

const RELAYS: usize = 7;
const DELIVER_PORT: u16 = 9000;

#[test]
fn gossip_network_converges_survives_a_failure_and_takes_the_node_back() {
    if !pb_testbed::require_privileged(
        "gossip_network_converges_survives_a_failure_and_takes_the_node_back",
    ) {
        return;
    }
    let network = common::network()
        .relays(RELAYS)
        .netns("gossip")
        // The builder's epochs: they begin about now, so none ends during the test.
        .admin(true)
        .deliver_to(RELAYS - 1, ([127, 0, 0, 1], DELIVER_PORT).into())
        .build()
        .unwrap();
    let mut net = Testnet::create(network).unwrap();
    let exit = Node::Relay(RELAYS - 1);
    let deliveries = net
        .in_node(exit, || {
            UdpSocket::bind(("127.0.0.1", DELIVER_PORT)).unwrap()
        })
        .unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let client = net
        .in_node(Node::Client, || UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    net.start_relays().unwrap();
    let through = |net: &mut Testnet, topology: &Topology, tag: u8| {
        let gateway = topology.layer(0)[0].packet_addr;
        if let Err(e) = send_through(
            &packets(topology, 10, tag),
            gateway,
            &client,
            &deliveries,
            common::STEP,
        ) {
            common::fail(net, &e);
        }
    };
    let pids = |net: &Testnet| -> Vec<u32> {
        (0..RELAYS)
            .filter(|&i| net.running(i))
            .filter_map(|i| net.relay(i).map(|r| r.child.id()))
            .collect()
    };

    // 1. One topology everywhere; the client computes the same from signed descriptors.
    let (view, took) = converge(&mut net, RELAYS, 0);
    let topology = client_view(&net);
    assert_eq!(
        hex(&topology.hash()),
        view.hash,
        "the client's view differs"
    );
    through(&mut net, &topology, 1);
    let before = pids(&net);

    // 2. Kill a mix from a layer of two (the topology stays complete without it).
    let victim_node = (1..=pb_control::MIX_LAYERS)
        .map(|l| topology.layer(l))
        .find(|layer| layer.len() == 2)
        .unwrap()[1]
        .node;
    let victim = (0..RELAYS)
        .find(|&i| net.network().node_id(i) == victim_node)
        .unwrap();
    net.kill(victim);
    let (after_kill, gone_in) = converge(&mut net, RELAYS - 1, 0);
    assert_ne!(after_kill.hash, view.hash);
    // SWIM's bound for this network (the relays run pb-control's default settings), plus
    // the test's own polling.
    let bound =
        pb_control::GossipConfig::new(common::NETWORK_SEED, Vec::new()).failure_bound(RELAYS);
    assert!(
        gone_in <= bound + Duration::from_secs(2),
        "left the views after {gone_in:?}, bound {bound:?}"
    );
    let topology = client_view(&net);
    assert_eq!(hex(&topology.hash()), after_kill.hash);
    assert!(topology.find(victim_node).is_none());
    through(&mut net, &topology, 2);
    // Nobody restarted.
    assert!(pids(&net).iter().all(|p| before.contains(p)));

    // 3. The mix comes back (new keys, newer descriptor) and rejoins everywhere.
    net.start_relay(victim).unwrap();
    let (rejoined, back_in) = converge(&mut net, RELAYS, 0);
    let topology = client_view(&net);
    assert_eq!(hex(&topology.hash()), rejoined.hash);
    assert!(topology.find(victim_node).is_some());
    through(&mut net, &topology, 3);

    // 4. Metrics answer; every relay stops cleanly and never panicked.
    let metrics = net.admin_get(0, "/metrics").unwrap();
    assert!(metrics.contains("pb_gossip_members 7"), "{metrics}");
    assert!(metrics.contains("pb_packets_received_total"), "{metrics}");
    assert!(
        metrics.contains("pb_link_loops_lost_total{link=\"0\"}"),
        "{metrics}"
    );
    stop_all(&mut net);
    println!(
        "converged in {took:?}; a killed mix left every view in {gone_in:?} (bound {bound:?}); rejoined in {back_in:?}"
    );
}
