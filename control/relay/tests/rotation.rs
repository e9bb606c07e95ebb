//! Epoch rotation of a running relay: SIGHUP re-reads the configuration and topology. The
//! new epoch's packets pass, the previous epoch's still pass through the overlap (replays
//! from before the rotation stay refused), a reload that skips an epoch is refused in one
//! line while the relay keeps running, and after the next rotation the first epoch is past.
//! Unprivileged: one relay on loopback, its neighbours plain sockets of the test.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    collections::HashMap,
    net::{Ipv4Addr, UdpSocket},
    time::{Duration, Instant},
};

use pb_sphinx::{DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};
use pb_testnet::{Network, OutsideNode, Role, Testnet};

const FORMAT: Format = Format::V2;
const MAILBOX: MailboxId = MailboxId([0xab; 16]);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A one-hop packet to the relay's mailbox in `epoch`, carrying `n`.
fn packet(network: &Network, epoch: u32, n: u8) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    let hop = Hop {
        node: network.node_id(0),
        public_key: network.public_key(0, epoch),
        delay: DelayMs(0),
    };
    create_packet_with(
        FORMAT,
        &mut p,
        Epoch(epoch),
        &[hop],
        MAILBOX,
        &[n; 8],
        &[n; 32],
    )
    .unwrap();
    p
}

/// The relay's `pb-relay: …` lines on stderr, one after the other.
struct Lines(usize);

impl Lines {
    /// The next one, waiting up to ten seconds.
    fn next(&mut self, net: &Testnet) -> String {
        let start = Instant::now();
        loop {
            let lines = net.relay(0).unwrap().lines_with("pb-relay: ");
            if let Some(line) = lines.get(self.0) {
                self.0 += 1;
                return line.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no new line from the relay: {}",
                net.report(20)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Sends packets and expects exactly the messages `want` delivered, in any order.
fn exchange(
    net: &Testnet,
    client: &UdpSocket,
    deliveries: &UdpSocket,
    packets: &[[u8; PACKET_LEN]],
    want: &[u8],
) {
    let mut buf = [0u8; 2048];
    for p in packets {
        client.send_to(p, net.network().packet_addr(0)).unwrap();
    }
    let mut got: Vec<u8> = (0..want.len())
        .map(|_| {
            let Ok(n) = deliveries.recv(&mut buf) else {
                panic!("nothing delivered; the relay printed:\n{}", net.report(50));
            };
            assert_eq!(&buf[..16], &MAILBOX.0);
            assert!(n > 16);
            buf[16]
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn sighup_rotates_to_the_next_epoch() {
    // The relay is layer 0 on a loopback address of this test run's own; the two other
    // layers are the test's sockets.
    let neighbours: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let outside = (0..2)
        .map(|i| OutsideNode {
            id: pb_sphinx::NodeId([0x61 + i as u8; 16]),
            role: Role::Mix,
            layer: i as u32 + 1,
            addr: neighbours[i].local_addr().unwrap(),
            public_key: EpochKey::from_secret(Epoch(1), [0x70 + i as u8; 32]).public_key(),
        })
        .collect();
    let deliveries = UdpSocket::bind("127.0.0.1:0").unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let network = Network::builder()
        .relays(1)
        .relay_binary(env!("CARGO_BIN_EXE_pb-relay"))
        .loopback(Ipv4Addr::new(127, 76, (std::process::id() % 200) as u8, 1))
        .format(FORMAT)
        .static_topology(1, outside)
        .gateway_cores(2)
        .link_rate(50)
        .deliver_to(0, deliveries.local_addr().unwrap())
        .stats_interval(0.0)
        .build()
        .unwrap();
    let mut net = Testnet::start(network.clone()).unwrap();
    let mut lines = Lines(0);
    let first = lines.next(&net);
    let id = hex(&net.network().node_id(0).0[..4]);
    assert!(
        first.starts_with(&format!("pb-relay: node {id}")),
        "{first}"
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let packet = |epoch: u32, n: u8| packet(&network, epoch, n);

    exchange(&net, &client, &deliveries, &[packet(1, 1)], &[1]);

    net.set_epoch(2).unwrap();
    net.reload(0).unwrap();
    let line = lines.next(&net);
    assert!(
        line.contains("epoch 2 is current; epoch 1 is accepted"),
        "{line}"
    );
    // Epoch 2, and epoch 1 through the overlap; the replay from epoch 1 stays refused.
    let overlap = [packet(2, 2), packet(1, 3), packet(1, 1)];
    exchange(&net, &client, &deliveries, &overlap, &[2, 3]);

    // Skipping an epoch is refused in one line; the relay runs on in epoch 2.
    net.set_epoch(4).unwrap();
    net.reload(0).unwrap();
    let line = lines.next(&net);
    assert!(
        line.starts_with(
            "pb-relay: warning: reload refused: node.epoch: 4 is not the next epoch (3)"
        ),
        "{line}"
    );
    exchange(&net, &client, &deliveries, &[packet(2, 4)], &[4]);

    net.set_epoch(3).unwrap();
    net.reload(0).unwrap();
    let line = lines.next(&net);
    assert!(
        line.contains("epoch 3 is current; epoch 2 is accepted"),
        "{line}"
    );
    // Epoch 1 is past now.
    let late = [packet(1, 5), packet(3, 6), packet(2, 7)];
    exchange(&net, &client, &deliveries, &late, &[6, 7]);

    assert!(net.stop(0).unwrap().success());
    let stdout = net.relay(0).unwrap().output();
    let stats: HashMap<&str, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("stat "))
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    assert_eq!(stats["delivered"], 6, "{stdout}");
    assert_eq!(stats["dropped_replay"], 1, "{stdout}");
    assert_eq!(stats["dropped_past_epoch"], 1, "{stdout}");
    assert_eq!(stats["replay_filter_no_table"], 0, "{stdout}");
}
