//! Helpers shared by the gossip-mode tests: the network they describe (through pb-testnet,
//! which renders and runs it), waiting for agreement, the client's view of the network and
//! packets through it.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::{
    net::{SocketAddr, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use pb_control::{SignedDescriptor, Topology};
use pb_sphinx::{DelayMs, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};
use pb_testnet::{Network, NetworkBuilder, Testnet, View};

pub const NETWORK_SEED: [u8; 32] = [0x42; 32];
pub const MAILBOX: MailboxId = MailboxId([0xab; 16]);
pub const FORMAT: Format = Format::V2;
/// Longer than any step of the tests may take.
pub const STEP: Duration = Duration::from_secs(40);

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(text: &str) -> Vec<u8> {
    (0..text.len() / 2)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The gossip tests' network: this crate's pb-relay, format v2, seed 0x42…, identity seeds
/// 0x60…, 40 packets per second per link, a loop per second, no stats lines; the caller
/// adds the rest.
pub fn network() -> NetworkBuilder {
    Network::builder()
        .relay_binary(env!("CARGO_BIN_EXE_pb-relay"))
        .format(FORMAT)
        .network_seed(NETWORK_SEED)
        .identity_seeds(0x60)
        .link_rate(40)
        .loop_rate(1)
        .stats_interval(0.0)
}

/// Waits until every running relay reports the same topology of `nodes` nodes (in an epoch
/// at least `min_epoch`): that view and how long it took.
pub fn converge(net: &mut Testnet, nodes: usize, min_epoch: u32) -> (View, Duration) {
    let start = Instant::now();
    match net.wait_for_view(nodes, min_epoch, STEP) {
        Ok(view) => (view, start.elapsed()),
        Err(e) => fail(net, &format!("no agreement on {nodes} nodes: {e}")),
    }
}

/// Stops every running relay and fails with what they printed.
pub fn fail(net: &mut Testnet, why: &str) -> ! {
    for i in 0..net.network().relays() {
        if net.running(i) {
            let _ = net.stop(i);
        }
    }
    let mut report = String::new();
    for i in 0..net.network().relays() {
        if let Some(relay) = net.relay(i) {
            let out = relay.output();
            let stats: Vec<&str> = out
                .lines()
                .filter(|l| {
                    (l.starts_with("stat ") && !l.ends_with(" 0"))
                        || l.starts_with("link ")
                        || l.starts_with("pb-relay")
                })
                .collect();
            report += &format!("relay {i}: {stats:#?}\n");
        }
    }
    panic!("{why}\n{report}");
}

/// Stops every running relay cleanly and checks it exited well and never panicked.
pub fn stop_all(net: &mut Testnet) {
    for i in 0..net.network().relays() {
        if net.running(i) {
            let status = net.stop(i).unwrap();
            let output = net.relay(i).unwrap().output();
            assert!(status.success(), "relay {i}: {status}: {output}");
            assert!(!output.contains("panicked"), "relay {i}: {output}");
        }
    }
}

/// Counter `name` from the `stat <name> <value>` lines a relay printed when it stopped.
pub fn stat(net: &Testnet, i: usize, name: &str) -> Option<u64> {
    net.relay(i)?.lines_with("stat ").iter().find_map(|l| {
        let (key, value) = l.strip_prefix("stat ")?.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok()).flatten()
    })
}

/// The client's view from a gateway's `/status` and `/descriptors`: every descriptor
/// verified, the topology computed here.
pub fn client_topology(status: &str, descriptors: &str) -> Topology {
    let epoch: u32 = status
        .lines()
        .find_map(|l| l.strip_prefix("epoch "))
        .unwrap()
        .parse()
        .unwrap();
    // `hex` for a live relay, `hex down` for one that is not.
    let descriptors: Vec<(bool, SignedDescriptor)> = descriptors
        .lines()
        .map(|l| {
            let (hex, live) = match l.strip_suffix(" down") {
                Some(h) => (h, false),
                None => (l, true),
            };
            match SignedDescriptor::parse(&unhex(hex)) {
                Ok(d) => (live, d),
                Err(e) => panic!("a descriptor that does not verify: {e}"),
            }
        })
        .collect();
    let live: Vec<_> = descriptors
        .iter()
        .filter(|(l, _)| *l)
        .map(|(_, d)| d.descriptor().identity)
        .collect();
    Topology::compute_live(
        &NETWORK_SEED,
        Epoch(epoch),
        descriptors.iter().map(|(_, d)| d.descriptor()),
        |d| live.contains(&d.identity),
    )
    .unwrap()
}

/// The client's view through relay 0's admin endpoint.
pub fn client_view(net: &Testnet) -> Topology {
    client_topology(
        &net.admin_get(0, "/status").unwrap(),
        &net.admin_get(0, "/descriptors").unwrap(),
    )
}

/// Packets through `topology` (gateway, the first node of each mix layer, exit), made for
/// its epoch, carrying messages tagged `tag`.
pub fn packets(topology: &Topology, count: u32, tag: u8) -> Vec<(Vec<u8>, [u8; PACKET_LEN])> {
    let route: Vec<Hop> = (0..pb_control::LAYERS)
        .map(|layer| {
            let p = &topology.layer(layer)[0];
            Hop {
                node: p.node,
                public_key: p.sphinx_key,
                delay: DelayMs(2),
            }
        })
        .collect();
    (0..count)
        .map(|n| {
            let message: Vec<u8> = (0..FORMAT.message_len())
                .map(|j| (j as u32 * 7 + n) as u8 ^ tag)
                .collect();
            let mut packet = [0u8; PACKET_LEN];
            // Fresh randomness per packet: the same would be a replay.
            let seed: [u8; 32] = [[tag; 16], [n as u8; 16]].concat().try_into().unwrap();
            create_packet_with(
                FORMAT,
                &mut packet,
                topology.epoch(),
                &route,
                MAILBOX,
                &message,
                &seed,
            )
            .unwrap();
            (message, packet)
        })
        .collect()
}

/// Sends `packets` to `gateway` and checks that each message arrives at `deliveries`
/// exactly once, byte-identical, within `patience` (or says how many did).
pub fn send_through(
    packets: &[(Vec<u8>, [u8; PACKET_LEN])],
    gateway: SocketAddr,
    client: &UdpSocket,
    deliveries: &UdpSocket,
    patience: Duration,
) -> Result<(), String> {
    let mut sent = Vec::new();
    for (message, packet) in packets {
        client.send_to(packet, gateway).unwrap();
        sent.push(message.clone());
        thread::sleep(Duration::from_millis(20));
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while got.len() < sent.len() && start.elapsed() < patience {
        if let Ok(n) = deliveries.recv(&mut buf) {
            assert_eq!(&buf[..16], &MAILBOX.0);
            got.push(buf[16..n].to_vec());
        }
    }
    got.sort();
    sent.sort();
    if got != sent {
        return Err(format!("{} of {} delivered intact", got.len(), sent.len()));
    }
    Ok(())
}
