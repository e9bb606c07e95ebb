//! The packet port takes packets only from the relay's adjacent layers, and a gateway holds
//! every other source to a per-source token bucket. Real `pb-relay` processes in network
//! namespaces of this test's own (pb-testnet), so privileged: root or `CI=true`, skipped
//! with a message otherwise; namespaces, veths and XDP programs go away with the testnet
//! whatever happens.
//!
//! - A mix (static topology gateway → mix → exit) on AF_XDP: junk datagrams from the
//!   client's namespace, which is no layer's, are dropped in XDP (`xdp_drop_stranger`) and
//!   never reach Sphinx; the same junk from the gateway's namespace (a link) does, and is
//!   dropped there (`dropped_*`). The same on the UDP backend (`io_rx_dropped_stranger`).
//! - A gateway on AF_XDP: a flood to its client link from one source is cut to the bucket
//!   (XDP passes at most the burst plus the rate for the time the flood took, and the client
//!   link receives no more than that), while a second source is served in full.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    collections::HashMap,
    net::UdpSocket,
    thread,
    time::{Duration, Instant},
};

use pb_io::sources::SourceLimits;
use pb_sphinx::PACKET_LEN;
use pb_testnet::{Backend, Network, Node, Testnet};

/// One testnet at a time: two CPUs.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

const LINK_RATE: u32 = 50;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `stat <name> <value>` lines of a relay's output.
fn stats(output: &str) -> HashMap<String, u64> {
    output
        .lines()
        .filter_map(|l| l.strip_prefix("stat "))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// A metric's value in Prometheus text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Relay `i`'s `/metrics`, once its admin endpoint answers (within ten seconds).
fn metrics(net: &Testnet, i: usize) -> String {
    let start = Instant::now();
    loop {
        match net.admin_get(i, "/metrics") {
            Ok(text) if text.contains("pb_source_filter_policy") => return text,
            _ if start.elapsed() < Duration::from_secs(10) => {
                thread::sleep(Duration::from_millis(50));
            }
            other => panic!("relay {i}'s /metrics: {other:?}\n{}", net.report(30)),
        }
    }
}

/// Relay `i`'s `/metrics` once `name` reads `want` (the cores refresh their counters there
/// every second), or after five seconds whatever it reads.
fn metrics_when(net: &Testnet, i: usize, name: &str, want: u64) -> String {
    let start = Instant::now();
    loop {
        let text = metrics(net, i);
        if metric(&text, name) == Some(want) || start.elapsed() > Duration::from_secs(5) {
            return text;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `n` junk datagrams of the packet size from a socket in `node` to `to`, a millisecond
/// apart (well below any queue's depth: none is lost on the way).
fn send_junk(net: &Testnet, node: Node, to: std::net::SocketAddr, n: usize, fill: u8) {
    let socket = net
        .in_node(node, || UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    for _ in 0..n {
        socket.send_to(&[fill; PACKET_LEN], to).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
}

fn mix_takes_packets_from_its_links_only(backend: Backend, tag: &str) {
    let _serial = serial();
    const STRANGER: usize = 200;
    const FROM_LINK: usize = 50;
    // Gateway (layer 0) → mix (1) → exit (2) → gateway: the mix's adjacent layers are the
    // gateway's and the exit's. The client's namespace is none of them.
    let network = Network::builder()
        .relays(3)
        .relay_binary(env!("CARGO_BIN_EXE_pb-relay"))
        .netns(tag)
        .backend(backend)
        .format(pb_sphinx::Format::V2)
        .static_topology(1, Vec::new())
        .link_rate(LINK_RATE)
        .admin(true)
        .stats_interval(0.0)
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    net.start_relays().unwrap();
    let mix = network.packet_addr(1);
    let before = metrics(&net, 1);
    assert_eq!(
        metric(&before, "pb_source_filter_policy"),
        Some(1),
        "a mix drops strangers:\n{before}"
    );
    assert_eq!(metric(&before, "pb_source_filter_allowed"), Some(2));

    send_junk(&net, Node::Client, mix, STRANGER, 0x5a);
    send_junk(&net, Node::Relay(0), mix, FROM_LINK, 0xa5);
    let (stranger_metric, stranger_stat) = match backend {
        Backend::AfXdp => ("pb_xdp_drop_stranger_total", "xdp_drop_stranger"),
        Backend::Udp => ("pb_io_rx_dropped_stranger_total", "io_rx_dropped_stranger"),
    };
    let after = metrics_when(&net, 1, stranger_metric, STRANGER as u64);
    assert_eq!(
        metric(&after, stranger_metric),
        Some(STRANGER as u64),
        "{after}"
    );

    let status = net.stop(1).unwrap();
    let output = net.relay(1).unwrap().output();
    assert!(status.success(), "the mix exited with {status}: {output}");
    let stats = stats(&output);
    assert_eq!(stats[stranger_stat], STRANGER as u64, "{stats:?}");
    // What came from the link reached Sphinx and was dropped there, each datagram once;
    // what came from the stranger did not reach it at all (the links' own cover is valid
    // and drops nothing).
    let sphinx_drops: u64 = stats
        .iter()
        .filter(|(k, _)| k.starts_with("dropped_"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(sphinx_drops, FROM_LINK as u64, "{stats:?}");
    // The links' own traffic (cover) kept arriving.
    assert!(stats["received"] > FROM_LINK as u64, "{stats:?}");
    println!(
        "{stranger_stat} {}, received {}, dropped in Sphinx {sphinx_drops}",
        stats[stranger_stat], stats["received"]
    );
    drop(net);
}

#[test]
fn a_mix_on_af_xdp_drops_strangers_in_xdp() {
    if !pb_testbed::require_privileged("a_mix_on_af_xdp_drops_strangers_in_xdp") {
        return;
    }
    mix_takes_packets_from_its_links_only(Backend::AfXdp, "sfx");
}

#[test]
fn a_mix_on_udp_drops_strangers_before_sphinx() {
    if !pb_testbed::require_privileged("a_mix_on_udp_drops_strangers_before_sphinx") {
        return;
    }
    mix_takes_packets_from_its_links_only(Backend::Udp, "sfu");
}

#[test]
fn a_gateway_cuts_a_client_link_flood_to_the_bucket() {
    if !pb_testbed::require_privileged("a_gateway_cuts_a_client_link_flood_to_the_bucket") {
        return;
    }
    let _serial = serial();
    const FLOOD: usize = 4000;
    const SECOND: usize = 100;
    // A gossip gateway alone: its client link runs from the start.
    let network = Network::builder()
        .relays(1)
        .relay_binary(env!("CARGO_BIN_EXE_pb-relay"))
        .netns("sfc")
        .backend(Backend::AfXdp)
        .format(pb_sphinx::Format::V2)
        .network_seed([0x42; 32])
        .identity_seeds(0x60)
        .gossip(3600)
        .gossip_seeds(1)
        .link_rate(LINK_RATE)
        .admin(true)
        .stats_interval(0.0)
        .build()
        .unwrap();
    let mut net = Testnet::create(network.clone()).unwrap();
    net.start_relays().unwrap();
    let link = network.client_link();
    let before = metrics(&net, 0);
    assert_eq!(
        metric(&before, "pb_source_filter_policy"),
        Some(2),
        "a gateway limits strangers:\n{before}"
    );
    // The relay's own limits: the defaults (the link rate is far below them).
    let limits = SourceLimits::default();
    let passed = |m: &str| metric(m, "pb_xdp_client_link_passed_total").unwrap();
    let dropped = |m: &str| metric(m, "pb_xdp_drop_client_link_rate_total").unwrap();
    let received = |m: &str| metric(m, "pb_client_link_strangers_total").unwrap();
    assert_eq!((passed(&before), dropped(&before)), (0, 0), "{before}");

    // One source floods: 4000 junk requests in bursts of 40, about 20,000 a second.
    let flooder = net
        .in_node(Node::Client, || UdpSocket::bind("0.0.0.0:0").unwrap())
        .unwrap();
    let start = Instant::now();
    for i in 0..FLOOD {
        flooder.send_to(&[0x5a; PACKET_LEN], link).unwrap();
        if i % 40 == 39 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    // What the bucket can have let through: the burst, and the rate over the time the
    // flood took (with a margin for the first and last datagram's time in flight).
    let took = start.elapsed() + Duration::from_millis(100);
    let bound = u64::from(limits.burst) + (f64::from(limits.rate) * took.as_secs_f64()) as u64;
    thread::sleep(Duration::from_millis(300));
    let flooded = metrics(&net, 0);
    let (p1, d1, r1) = (passed(&flooded), dropped(&flooded), received(&flooded));
    println!(
        "flood: sent {FLOOD} in {took:?}; XDP passed {p1}, dropped {d1}; the client link received {r1} (bound {bound})"
    );
    assert_eq!(p1 + d1, FLOOD as u64, "XDP saw every datagram: {flooded}");
    assert!(p1 >= u64::from(limits.burst), "the burst passes: {p1}");
    assert!(
        p1 <= bound,
        "passed {p1}, more than the bucket allows ({bound})"
    );
    assert!(r1 <= p1, "the client link received {r1}, XDP passed {p1}");
    assert!(r1 > 0, "the client link received nothing");

    // A second source is not affected by the first one's empty bucket.
    send_junk(&net, Node::Web, link, SECOND, 0x33);
    thread::sleep(Duration::from_millis(300));
    let second = metrics(&net, 0);
    let (p2, d2, r2) = (passed(&second), dropped(&second), received(&second));
    println!(
        "second source: sent {SECOND}; XDP passed {}, dropped {}; the client link received {}",
        p2 - p1,
        d2 - d1,
        r2 - r1
    );
    assert_eq!((p2 - p1, d2 - d1), (SECOND as u64, 0), "{second}");
    assert_eq!(r2 - r1, SECOND as u64, "{second}");

    let status = net.stop(0).unwrap();
    let output = net.relay(0).unwrap().output();
    assert!(
        status.success(),
        "the gateway exited with {status}: {output}"
    );
    assert_eq!(stats(&output)["xdp_drop_client_link_rate"], d2);
    drop(net);
}
