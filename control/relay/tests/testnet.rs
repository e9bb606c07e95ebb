//! A five-relay testnet of real `pb-relay` processes, each in its own network namespace on a
//! bridge: gateway → three mixes (one per layer) → exit → gateway. Run once over AF_XDP (the
//! XDP program attached to every relay's interface) and once over the UDP backend. The
//! gateway runs two pipeline cores (two AF_XDP queues, or two `SO_REUSEPORT` sockets), and
//! the client sends from many ports, so that its packets arrive on both cores and those on
//! the core not owning the gateway's link cross to the other.
//!
//! Shows: client packets injected at the gateway arrive at the exit byte-identical, exactly
//! once; every link sends the same count per one-second window (within 2%) idle and busy;
//! malformed, replayed and wrong-epoch packets are dropped and counted at the gateway; every
//! relay's loops come back; relays exit cleanly and their memory does not grow.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    collections::HashMap,
    net::UdpSocket,
    thread,
    time::{Duration, Instant},
};

use pb_sphinx::{DelayMs, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};
use pb_testnet::{Backend, Network, Node, Testnet};

const EPOCH: Epoch = Epoch(1);
const FORMAT: Format = Format::V2;
const RATE: u64 = 100;
const RELAYS: usize = 5;
const MAILBOX: MailboxId = MailboxId([0xab; 16]);
const DELIVER_PORT: u16 = 9000;
const DEADLINE: Duration = Duration::from_secs(90);

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Output {
    stats: HashMap<String, u64>,
    /// (window, link) → packets sent in that window.
    windows: Vec<(u64, u64)>,
    loops_returned: u64,
    /// Packets received by each core.
    core_received: Vec<u64>,
}

fn parse(text: &str) -> Output {
    let mut stats = HashMap::new();
    let mut windows = Vec::new();
    let mut loops_returned = 0;
    let mut core_received = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["stat", name, value] => {
                stats.insert((*name).to_owned(), value.parse().unwrap());
            }
            ["window", w, "link", _, "sent", n, ..] => {
                windows.push((w.parse().unwrap(), n.parse().unwrap()));
            }
            ["core", _, "received", n, ..] => core_received.push(n.parse().unwrap()),
            ["link", _, rest @ ..] => {
                if let Some(pos) = rest.iter().position(|w| *w == "loops_returned") {
                    loops_returned += rest[pos + 1].parse::<u64>().unwrap();
                }
            }
            _ => {}
        }
    }
    Output {
        stats,
        windows,
        loops_returned,
        core_received,
    }
}

/// One testnet at a time: two at once would share two CPUs between ten relays.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn testnet(backend: Backend) {
    let _serial = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Static topology, one relay per layer; the gateway runs two cores (two queues on its
    // interface, or two sockets), the others one; the exit delivers to the test.
    let network = Network::builder()
        .relays(RELAYS)
        .relay_binary(env!("CARGO_BIN_EXE_pb-relay"))
        .netns(match backend {
            Backend::AfXdp => "relay-af_",
            Backend::Udp => "relay-udp",
        })
        .backend(backend)
        .format(FORMAT)
        .static_topology(EPOCH.0, Vec::new())
        .link_rate(RATE as u32)
        .gateway_cores(2)
        .deliver_to(RELAYS - 1, ([127, 0, 0, 1], DELIVER_PORT).into())
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();

    // The exit hands delivered messages to this socket in its namespace.
    let deliveries = net
        .in_node(Node::Relay(RELAYS - 1), || {
            UdpSocket::bind(("127.0.0.1", DELIVER_PORT)).unwrap()
        })
        .unwrap();
    deliveries
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    net.start_relays().unwrap();
    let rss = |net: &Testnet| -> Vec<u64> { net.relays().map(|r| rss_kib(r.child.id())).collect() };

    // Idle: three seconds of cover only.
    thread::sleep(Duration::from_secs(3));
    let rss_idle = rss(&net);
    let idle_windows_end = 3;

    // Busy: a client in the client's namespace sends 300 packets through all five relays, at most
    // 40 in flight; then one malformed datagram, one replay and one wrong-epoch packet.
    // Many source ports: many flows for the gateway's queues (or sockets) to share.
    let clients: Vec<UdpSocket> = net
        .in_node(Node::Client, || {
            (0..32)
                .map(|_| UdpSocket::bind("0.0.0.0:0").unwrap())
                .collect()
        })
        .unwrap();
    let client = &clients[0];
    let gateway = network.packet_addr(0);
    let route: Vec<Hop> = (0..RELAYS)
        .map(|i| Hop {
            node: network.node_id(i),
            public_key: network.public_key(i, EPOCH.0),
            delay: DelayMs(3),
        })
        .collect();
    let mut sent: Vec<Vec<u8>> = Vec::new();
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buf = [0u8; 2048];
    let mut receive = |got: &mut Vec<Vec<u8>>| {
        while let Ok(n) = deliveries.recv(&mut buf) {
            assert_eq!(&buf[..16], &MAILBOX.0, "delivered to the wrong mailbox");
            got.push(buf[16..n].to_vec());
        }
    };
    let start = Instant::now();
    let mut first_packet = [0u8; PACKET_LEN];
    for n in 0..300u32 {
        while sent.len() > got.len() + 40 {
            receive(&mut got);
            assert!(
                start.elapsed() < DEADLINE,
                "the testnet stopped delivering ({} of {})",
                got.len(),
                sent.len()
            );
        }
        let message: Vec<u8> = (0..FORMAT.message_len())
            .map(|j| (n as usize * 31 + j) as u8)
            .collect();
        let mut packet = [0u8; PACKET_LEN];
        create_packet_with(
            FORMAT,
            &mut packet,
            EPOCH,
            &route,
            MAILBOX,
            &message,
            &n.to_le_bytes().repeat(8).try_into().unwrap(),
        )
        .unwrap();
        clients[n as usize % clients.len()]
            .send_to(&packet, gateway)
            .unwrap();
        if n == 0 {
            first_packet = packet;
        }
        sent.push(message);
    }
    client.send_to(&first_packet, gateway).unwrap(); // a replay
    client.send_to(&[7u8; 100], gateway).unwrap(); // malformed (wrong size)
    let mut future = [0u8; PACKET_LEN];
    let future_hop = Hop {
        public_key: network.public_key(0, 2),
        ..route[0]
    };
    create_packet_with(
        FORMAT,
        &mut future,
        Epoch(2),
        &[future_hop],
        MAILBOX,
        b"early",
        &[3; 32],
    )
    .unwrap();
    client.send_to(&future, gateway).unwrap();
    while got.len() < sent.len() {
        receive(&mut got);
        assert!(
            start.elapsed() < DEADLINE,
            "only {} of {} delivered",
            got.len(),
            sent.len()
        );
    }
    let busy_seconds = start.elapsed().as_secs();
    // Two more seconds so the last windows and loops settle.
    thread::sleep(Duration::from_secs(2));
    receive(&mut got);
    let rss_end = rss(&net);

    // Stop every relay cleanly and read what it printed.
    let mut outputs = Vec::new();
    for i in 0..RELAYS {
        let status = net.stop(i).unwrap();
        let output = net.relay(i).unwrap().output();
        assert!(status.success(), "relay {i} exited with {status}: {output}");
        assert!(!output.contains("panicked"), "relay {i}: {output}");
        outputs.push(parse(&output));
    }

    // Every message exactly once, byte-identical.
    let mut want = sent.clone();
    want.sort();
    got.sort();
    assert_eq!(got.len(), want.len(), "each message exactly once");
    assert!(got == want, "delivered messages differ from those sent");

    // The gateway dropped and counted the bad packets.
    let gw = &outputs[0].stats;
    assert_eq!(gw["dropped_replay"], 1, "{gw:?}");
    assert_eq!(gw["dropped_future_epoch"], 1, "{gw:?}");
    let malformed = if backend == Backend::AfXdp {
        gw["xdp_drop_wrong_size"]
    } else {
        gw["io_rx_dropped_malformed"]
    };
    assert_eq!(malformed, 1, "{gw:?}");
    // Both gateway cores received client packets; those on core 1 crossed to core 0, which
    // owns the gateway's only link, and none was lost on the way.
    let cores = &outputs[0].core_received;
    assert!(
        cores.len() == 2 && cores.iter().all(|n| *n > 0),
        "{cores:?}"
    );
    assert!(gw["handed_off"] > 0, "{gw:?}");
    assert_eq!(gw["handed_off"], gw["taken_over"], "{gw:?}");
    assert_eq!(gw["dropped_handoff"], 0, "{gw:?}");

    // Constant rate: every full window of every link, idle or busy, within 2% of the rate.
    for (i, out) in outputs.iter().enumerate() {
        let windows: Vec<u64> = out
            .windows
            .iter()
            .filter(|(w, _)| *w >= 1)
            .map(|(_, n)| *n)
            .collect();
        assert!(
            windows.len() >= idle_windows_end + busy_seconds as usize,
            "relay {i}: {:?}",
            out.windows
        );
        for n in &windows {
            let off = (*n as f64 - RATE as f64).abs() / RATE as f64;
            assert!(
                off <= 0.02,
                "relay {i}: a window sent {n}, rate {RATE}: {:?}",
                out.windows
            );
        }
        assert!(
            out.loops_returned > 0,
            "relay {i}: no loop came back: {:?}",
            out.stats
        );
        assert_eq!(out.stats["dropped_no_link"], 0, "relay {i}");
        if i > 0 {
            let bad: u64 = out
                .stats
                .iter()
                .filter(|(k, _)| k.starts_with("dropped_"))
                .map(|(_, v)| v)
                .sum();
            assert_eq!(bad, 0, "relay {i} dropped: {:?}", out.stats);
        }
        // Bounded memory: busy traffic did not make a relay grow.
        assert!(
            rss_end[i] <= rss_idle[i] + 16 * 1024,
            "relay {i}: RSS {} KiB idle, {} KiB after",
            rss_idle[i],
            rss_end[i]
        );
    }
    drop(net);
}

#[test]
fn testnet_over_af_xdp() {
    if !pb_testbed::require_privileged("testnet_over_af_xdp") {
        return;
    }
    testnet(Backend::AfXdp);
}

#[test]
fn testnet_over_udp() {
    if !pb_testbed::require_privileged("testnet_over_udp") {
        return;
    }
    testnet(Backend::Udp);
}
