//! `pb-perf testnet`, the main job (`make demo`): a whole PhantomBand network on this
//! machine. Eight `pb-relay` processes (a gateway, three mix layers of two, an exit), a web
//! server, and `pb-client` with its SOCKS5 proxy on 127.0.0.1:1080.
//!
//! - As root, each relay runs in a network namespace of its own, joined by a bridge, on
//!   AF_XDP with the XDP program attached to its veth in native mode; the web server and
//!   pb-client have namespaces too, and 127.0.0.1:1080 here is forwarded to pb-client's.
//! - Without root (or with `--backend udp`), the relays run on loopback addresses
//!   127.79.0.1-8 over UDP, and pb-client listens on 127.0.0.1:1080 itself.
//!
//! It fetches a file through the client and prints a summary: the topology, each link's
//! rate, the bytes delivered, latency percentiles. Then it keeps the network up for a
//! browser or curl until Ctrl-C, which stops everything. `--exit-after-summary` stops after
//! the summary. Progress goes to stderr (a bar on a terminal, a line per step elsewhere).

use std::{
    net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pb_testbed::{Netns, Proc};
use pb_testnet::{
    FileServer, GOSSIP_PORT, Network, Node, Testnet, binary, fetch, interrupted, pattern,
};
use serde_json::json;

use crate::{
    progress::Progress,
    report::{Measurement, row},
};

/// Where the relays run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// Network namespaces and AF_XDP as root, loopback and UDP otherwise.
    Auto,
    /// Loopback addresses, the UDP backend (no root needed).
    Udp,
    /// Network namespaces, AF_XDP with the XDP program in native mode (root).
    Xdp,
}

/// Settings of the main job.
pub struct TestnetArgs {
    /// Where pb-client listens.
    pub listen: SocketAddr,
    /// Stop after the summary instead of waiting for Ctrl-C.
    pub exit_after_summary: bool,
    /// Packets per second on every link.
    pub link_rate: u32,
    /// Bytes of the fetch.
    pub bytes: usize,
    /// Whether the caller prints the rows as JSON (then no human summary).
    pub json: bool,
    /// Where the relays run.
    pub backend: Backend,
    /// What carries pb-client's link: `udp`, `quic` or `wss`.
    pub transport: String,
}

const STEPS: usize = 6;

const RELAYS: usize = 8;

/// An error if the user asked the run to stop, so that setup ends and tears down.
fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted: everything started is stopped again");
    }
    Ok(())
}

/// Where pb-client listens inside its namespace.
const CLIENT_IN_NETNS: &str = "127.0.0.1:1080";

/// Forwards each connection to `listener` to `inner` inside `ns`, until `stop` is set (and
/// one more connection arrives to wake the accept).
fn forward(listener: &TcpListener, ns: &Netns, inner: SocketAddr, stop: &AtomicBool) {
    for outer in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(outer) = outer else { continue };
        // The socket is made inside the namespace and stays there.
        let Ok(Ok(inner)) = ns.in_netns(|| TcpStream::connect(inner)) else {
            continue;
        };
        let (Ok(outer2), Ok(inner2)) = (outer.try_clone(), inner.try_clone()) else {
            continue;
        };
        for (mut from, to) in [(outer, inner2), (inner, outer2)] {
            thread::spawn(move || {
                let mut to_w = &to;
                let _ = std::io::copy(&mut from, &mut to_w);
                let _ = to.shutdown(Shutdown::Write);
            });
        }
    }
}

/// A relay's window lines (`window <k> link <i> sent <n> …`) in windows `from..to`:
/// (window, link, packets sent).
fn window_lines(relay: &Proc, from: u64, to: u64) -> Vec<(u64, u64, u64)> {
    relay
        .lines_with("window ")
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| words.get(i).and_then(|w| w.parse::<u64>().ok());
            Some((number(1)?, number(3)?, number(5)?))
        })
        .filter(|(k, _, _)| (from..to).contains(k))
        .collect()
}

/// Relay `i`'s mean packets per second per link over windows `from..to`, and its links.
fn relay_rate(net: &Testnet, i: usize, from: u64, to: u64) -> Option<(f64, usize)> {
    let lines = window_lines(net.relay(i)?, from, to);
    let links: std::collections::BTreeSet<u64> = lines.iter().map(|l| l.1).collect();
    let sent: u64 = lines.iter().map(|l| l.2).sum();
    (!lines.is_empty()).then(|| (sent as f64 / lines.len() as f64, links.len()))
}

/// Every relay's windows from `first` on, for `count` windows: for each window, the mean
/// packets per link over every relay's links.
fn windows(net: &Testnet, first: u64, count: u64) -> Vec<(u64, f64)> {
    let mut sums: std::collections::BTreeMap<u64, (u64, u64)> = std::collections::BTreeMap::new();
    for relay in net.relays() {
        for (k, _, sent) in window_lines(relay, first, first + count) {
            let e = sums.entry(k).or_default();
            e.0 += sent;
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(k, (sent, links))| (k - first, sent as f64 / links as f64))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// The newest window every relay has printed.
fn newest_window(net: &Testnet) -> u64 {
    net.relays()
        .filter_map(|r| {
            r.last("window ")
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse().ok()))
        })
        .min()
        .unwrap_or(0)
}

/// The main job's network, and whether it runs in namespaces. Its epochs are `epoch_seconds`
/// long if given (a network file built into pb-client fixes them), otherwise a length under
/// which an epoch begins about now, so that none ends during the run.
fn demo_network(args: &TestnetArgs, epoch_seconds: Option<u64>) -> anyhow::Result<(Network, bool)> {
    let netns = match args.backend {
        Backend::Udp => false,
        Backend::Xdp => true,
        Backend::Auto => pb_testbed::privileged().is_ok(),
    };
    let network = Network::builder()
        .relays(RELAYS)
        .link_rate(args.link_rate)
        .loop_rate(1)
        .admin(true);
    let network = match epoch_seconds {
        Some(s) => network.gossip(s),
        None => network,
    };
    let network = if netns {
        network.netns("pbdemo").backend(pb_testnet::Backend::AfXdp)
    } else {
        network
    }
    .build()?;
    Ok((network, netns))
}

/// The network file of a demo network: its identity keys, addresses and seed are fixed, its
/// epoch length is the one it was built with.
fn network_file_of(network: &Network) -> anyhow::Result<String> {
    let file = network
        .network_file()
        .context("the demo network runs in gossip mode, which has a network file")?;
    Ok(file.render())
}

/// `pb-perf testnet --write-network-file PATH`: the network file of the network [`run`]
/// would start with `args` now, which `make demo` builds into pb-client.
pub fn write_network_file(args: &TestnetArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let text = network_file_of(&demo_network(args, None)?.0)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("pb-perf: the demo network's file is in {}", path.display());
    Ok(())
}

/// The network file built into `client` (`pb-client --show-network`), if any.
fn built_in_network(client: &std::path::Path) -> Option<pb_control::network::NetworkFile> {
    let out = std::process::Command::new(client)
        .arg("--show-network")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    pb_control::network::NetworkFile::parse(&out.stdout).ok()
}

/// Runs the main job; see the module docs.
pub fn run(args: &TestnetArgs) -> anyhow::Result<Vec<Measurement>> {
    // One at a time: the addresses are fixed, so a second run would only collide.
    let Ok(proxy) = TcpListener::bind(args.listen) else {
        bail!(
            "{} is taken: is a testnet already running? Stop it with Ctrl-C where it runs (or pass --listen)",
            args.listen
        );
    };
    let client_bin = binary("pb-client")?;
    // A pb-client built for the demo network (`make demo` builds one) fixes its epoch length.
    let built_in = built_in_network(&client_bin);
    let (network, netns) = demo_network(args, built_in.as_ref().map(|f| f.epoch_seconds))?;
    let own = network_file_of(&network)?;
    let built_in = built_in.is_some_and(|f| f.render() == own);
    if !netns && UdpSocket::bind(network.gossip_addr(0)).is_err() {
        bail!(
            "a PhantomBand testnet is already running on {} (its gateway's gossip port {GOSSIP_PORT} is taken): stop it with Ctrl-C where it runs",
            network.own_range()
        );
    }
    pb_testnet::stop_on_signals()?;
    let progress = Progress::new("pb-perf testnet", STEPS);
    let started = Instant::now();
    if netns {
        progress.step(&format!(
            "building network namespaces, starting {RELAYS} relays on AF_XDP"
        ));
    } else {
        progress.step(&format!(
            "starting {RELAYS} relays on {}",
            network.relay_range()
        ));
    }
    let mut net = Testnet::start(network).context(if netns {
        "the XDP testnet (run without root, or pass --backend udp, for the loopback one)"
    } else {
        "the loopback testnet"
    })?;
    let view = net.wait_for_agreement(Duration::from_secs(60))?;
    let network = net.network();
    progress.note(&format!(
        "{RELAYS} relays {} ({}) agree on topology {} after {:.1} s",
        network.describe(),
        network.relay_range(),
        &view.hash[..16.min(view.hash.len())],
        started.elapsed().as_secs_f64()
    ));
    check_interrupted()?;
    let server = FileServer::start(net.listen(Node::Web, 0)?, Arc::new(pattern(args.bytes)))?;
    let small = FileServer::start(net.listen(Node::Web, 0)?, Arc::new(pattern(1024)))?;
    progress.step(&format!("starting pb-client on {}", args.listen));
    // With namespaces, this process keeps the proxy's address and forwards it to pb-client's
    // namespace; on loopback, pb-client takes the address itself.
    let listen = args.listen.to_string();
    let (proxy, client_listen) = if net.netns(Node::Client).is_some() {
        (Some(proxy), CLIENT_IN_NETNS)
    } else {
        drop(proxy);
        (None, listen.as_str())
    };
    let stop_forwarding = AtomicBool::new(false);
    // pb-client built for this network (`make demo` does) needs no argument but where to
    // listen.
    let client = Proc::start({
        let mut c = if built_in {
            net.command(Node::Client, &client_bin)
        } else {
            net.client_command(&client_bin)
        };
        c.args(["--listen", client_listen, "--transport", &args.transport]);
        c
    })
    .context("starting pb-client")?;
    if built_in {
        progress.note("pb-client runs with its built-in network file (no --network)");
    }
    let net = &net;
    thread::scope(|scope| {
        if let (Some(ns), Some(proxy)) = (net.netns(Node::Client), proxy.as_ref()) {
            let inner: SocketAddr = CLIENT_IN_NETNS.parse()?;
            let stop_forwarding = &stop_forwarding;
            scope.spawn(move || forward(proxy, ns, inner, stop_forwarding));
        }
        // Whatever happens below, the forwarder ends with the scope.
        let _wake = WakeOnDrop {
            stop: &stop_forwarding,
            listen: proxy.as_ref().map(|_| args.listen),
        };
        run_with_client(
            args,
            net,
            &view.hash,
            progress,
            client,
            server.addr(),
            small.addr(),
        )
    })
}

/// Sets the forwarder's stop flag and wakes its accept, when dropped.
struct WakeOnDrop<'a> {
    stop: &'a AtomicBool,
    listen: Option<SocketAddr>,
}

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(listen) = self.listen {
            let _ = TcpStream::connect(listen);
        }
    }
}

/// The rest of the main job, once the relays agree: pb-client, the fetches, the summary,
/// and the wait for Ctrl-C.
fn run_with_client(
    args: &TestnetArgs,
    net: &Testnet,
    hash: &str,
    progress: Progress,
    client: Proc,
    server: SocketAddr,
    small: SocketAddr,
) -> anyhow::Result<Vec<Measurement>> {
    let network = net.network();
    pb_testnet::wait_for("pb-client ready", Duration::from_secs(30), || {
        client.last("pb-client: ready").is_some()
    })
    .with_context(|| client.tail(5))?;
    progress.step(&format!(
        "fetching {} KiB through the mixnet",
        args.bytes / 1024
    ));
    let (first, all) = fetch(Some(args.listen), server, args.bytes)?;
    check_interrupted()?;
    progress.step("measuring latency (20 small fetches)");
    let mut latencies = Vec::new();
    for _ in 0..20 {
        latencies.push(fetch(Some(args.listen), small, 1024)?.0.as_secs_f64() * 1e3);
    }
    check_interrupted()?;
    latencies.sort_by(f64::total_cmp);
    let rate = args.bytes as f64 / 1024.0 / all.as_secs_f64();
    let mut rows = vec![row(
        "testnet.fetch",
        "pb-client",
        &[
            ("bytes", json!(args.bytes)),
            ("relays", json!(network.tag())),
        ],
        (rate * 10.0).round() / 10.0,
        "KiB/s",
    )];
    for p in [50u32, 90, 100] {
        rows.push(row(
            "testnet.ttfb",
            "pb-client",
            &[("percentile", json!(p)), ("relays", json!(network.tag()))],
            percentile(&latencies, f64::from(p) / 100.0).round(),
            "ms",
        ));
    }
    // The links' rate each second, idle, then while a fetch runs: the same.
    progress.step("watching the links for 6 s, idle");
    let idle_from = newest_window(net) + 1;
    thread::sleep(Duration::from_secs(7));
    check_interrupted()?;
    progress.step("watching the links for 6 s, busy (a fetch runs)");
    let busy_from = newest_window(net) + 1;
    let listen = args.listen;
    let bytes = args.bytes;
    thread::scope(|scope| {
        let fetching = scope.spawn(move || fetch(Some(listen), server, bytes));
        thread::sleep(Duration::from_secs(7));
        let _ = fetching.join();
    });
    check_interrupted()?;
    // The bar ends before the summary.
    drop(progress);
    let idle = windows(net, idle_from, 6);
    let busy: Vec<(u64, f64)> = windows(net, busy_from, 6)
        .into_iter()
        .map(|(t, r)| (t + 6, r))
        .collect();
    for (phase, points) in [("idle", &idle), ("busy", &busy)] {
        for (t, rate) in points.iter() {
            rows.push(row(
                "testnet.link_rate_over_time",
                "mean per link",
                &[
                    ("t", json!(t)),
                    ("phase", json!(phase)),
                    ("relays", json!(network.tag())),
                ],
                rate.round(),
                "pkt/s",
            ));
        }
    }
    let mean = |v: &[(u64, f64)]| v.iter().map(|p| p.1).sum::<f64>() / v.len().max(1) as f64;
    let mut link_lines = Vec::new();
    for i in 0..RELAYS {
        if let Some((per_link, links)) = relay_rate(net, i, idle_from, busy_from + 6) {
            rows.push(row(
                "testnet.link_rate",
                &format!("relay{i}"),
                &[
                    ("links", json!(links)),
                    ("target", json!(args.link_rate)),
                    ("relays", json!(network.tag())),
                ],
                per_link.round(),
                "pkt/s per link",
            ));
            link_lines.push(format!(
                "  relay {i} ({:<7} {}): {links} links, {per_link:.0} packets/s each",
                network.role(i).as_str(),
                network.address(Node::Relay(i))
            ));
        }
    }
    if !args.json {
        println!();
        println!(
            "PhantomBand testnet: {RELAYS} relays {} ({}), topology {}",
            network.describe(),
            network.relay_range(),
            hash
        );
        println!(
            "delivered {} bytes through pb-client in {:.2} s ({rate:.1} KiB/s; first byte after {:.0} ms)",
            args.bytes,
            all.as_secs_f64(),
            first.as_secs_f64() * 1e3
        );
        println!(
            "time to first byte over 20 fetches: p50 {:.0} ms, p90 {:.0} ms, max {:.0} ms",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.9),
            percentile(&latencies, 1.0)
        );
        println!(
            "links (every link carries {} packets/s, real or cover, idle or busy):",
            args.link_rate
        );
        for line in &link_lines {
            println!("{line}");
        }
        println!(
            "mean rate per link: {:.0} packets/s idle, {:.0} packets/s while fetching",
            mean(&idle),
            mean(&busy)
        );
    }
    if args.exit_after_summary {
        eprintln!("pb-perf testnet: stopping (--exit-after-summary)");
        return Ok(if args.json { rows } else { Vec::new() });
    }
    println!();
    println!("The network is up. Point curl or a browser at the SOCKS5 proxy:");
    println!(
        "  curl --socks5-hostname {} http://{server}/ -o /dev/null",
        args.listen
    );
    println!(
        "  browser: SOCKS5 host {} port {}, remote DNS on",
        args.listen.ip(),
        args.listen.port()
    );
    println!(
        "(the exit here opens only {}, the testnet's own addresses; a real exit refuses local ones)",
        network.own_range()
    );
    println!("Ctrl-C stops everything.");
    while !interrupted() {
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("pb-perf testnet: stopping");
    drop(client);
    Ok(if args.json { rows } else { Vec::new() })
}
