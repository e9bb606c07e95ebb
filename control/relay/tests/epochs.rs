//! Five `pb-relay` processes in gossip mode on loopback (unprivileged) with 12-second
//! epochs: at the boundary every relay moves to the next epoch's keys, which it published
//! ahead, and to the next topology; packets made under the previous epoch still cross the
//! network during the overlap (its keys and its links are kept for it), and after the overlap
//! they are dropped as past-epoch at the first relay.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::{
    net::{Ipv4Addr, UdpSocket},
    thread,
    time::{Duration, SystemTime},
};

use common::{client_view, converge, hex, packets, send_through, stat, stop_all};
use pb_testnet::{Node, Testnet};

const RELAYS: usize = 5;
const EPOCH_SECONDS: u64 = 12;

fn seconds_into_epoch() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % EPOCH_SECONDS
}

#[test]
fn epochs_turn_over_with_an_overlap() {
    // Loopback addresses of this test run alone: 127.77.<pid>.10 and on.
    let first = Ipv4Addr::new(127, 77, (std::process::id() % 200) as u8, 10);
    let [a, b, c, d] = first.octets();
    let exit = Ipv4Addr::new(a, b, c, d + RELAYS as u8 - 1);
    let network = common::network()
        .relays(RELAYS)
        .loopback(first)
        .gossip(EPOCH_SECONDS)
        .gossip_seeds(1)
        .admin(true)
        .deliver_to(RELAYS - 1, (exit, 9000).into())
        .build()
        .unwrap();
    let deliveries = UdpSocket::bind((exit, 9000)).unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let client = UdpSocket::bind((network.address(Node::Client), 0)).unwrap();
    let mut net = Testnet::start(network).unwrap();

    // The network agrees; take the client's view early enough in an epoch that the packets
    // are made before it ends.
    // (The relays and the gateway's directory move at slightly different moments: near a
    // boundary, take both again until they name the same epoch.)
    let (mut view, _) = converge(&mut net, RELAYS, 0);
    let old = loop {
        while seconds_into_epoch() > EPOCH_SECONDS - 5 {
            thread::sleep(Duration::from_millis(200));
        }
        view = converge(&mut net, RELAYS, view.epoch).0;
        let old = client_view(&net);
        if old.epoch().0 == view.epoch {
            break old;
        }
        view.epoch = view.epoch.max(old.epoch().0);
    };
    let epoch = view.epoch;
    let during_overlap = packets(&old, 3, 1);
    let after_overlap = packets(&old, 1, 2);

    // The boundary: everyone moves to the next epoch (and its topology).
    let (new_view, _) = converge(&mut net, RELAYS, epoch + 1);
    assert_eq!(new_view.epoch, epoch + 1);
    let gateway = old.layer(0)[0].packet_addr;
    // Within the overlap (two seconds here): the old epoch's packets still go through.
    if let Err(e) = send_through(&during_overlap, gateway, &client, &deliveries, common::STEP) {
        common::fail(&mut net, &format!("during the overlap: {e}"));
    }
    // The new epoch's topology, as a client sees it.
    let new = client_view(&net);
    assert_eq!(hex(&new.hash()), new_view.hash);
    if let Err(e) = send_through(
        &packets(&new, 3, 3),
        gateway,
        &client,
        &deliveries,
        common::STEP,
    ) {
        common::fail(&mut net, &format!("in the new epoch: {e}"));
    }
    // After the overlap: the old epoch is past.
    thread::sleep(Duration::from_secs(3));
    // (Two seconds is ample for a packet to cross five relays on loopback.)
    assert!(
        send_through(
            &after_overlap,
            gateway,
            &client,
            &deliveries,
            Duration::from_secs(2)
        )
        .is_err()
    );
    stop_all(&mut net);
    let past = stat(&net, 0, "dropped_past_epoch").unwrap_or(0);
    assert_eq!(past, 1, "the gateway drops the late packet as past-epoch");
}
