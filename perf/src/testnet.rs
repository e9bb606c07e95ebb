//! `pb-perf testnet`, the main job (`make demo`): a whole PhantomBand network on this
//! machine, without root. Eight `pb-relay` processes on loopback (a gateway, three mix layers
//! of two, an exit), a web server, and `pb-client` on 127.0.0.1:1080. It fetches a file
//! through the client and prints a summary: the topology, each link's rate, the bytes
//! delivered, latency percentiles. Then it keeps the network up for a browser or curl until
//! Ctrl-C, which stops everything. `--exit-after-summary` stops after the summary.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use pb_testbed::Proc;
use serde_json::json;

use crate::{
    e2e_bench::{RELAYS, SEED, Testnet, binary, fetch, file_server, ip, wait_for},
    report::{Measurement, row},
};

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
}

const STEPS: usize = 6;

fn step(n: usize, what: &str) {
    eprintln!("pb-perf testnet: [{n}/{STEPS}] {what}");
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
    let lines = window_lines(net.relays.get(i)?, from, to);
    let links: std::collections::BTreeSet<u64> = lines.iter().map(|l| l.1).collect();
    let sent: u64 = lines.iter().map(|l| l.2).sum();
    (!lines.is_empty()).then(|| (sent as f64 / lines.len() as f64, links.len()))
}

/// Every relay's windows from `first` on, for `count` windows: for each window, the mean
/// packets per link over every relay's links.
fn windows(net: &Testnet, first: u64, count: u64) -> Vec<(u64, f64)> {
    let mut sums: std::collections::BTreeMap<u64, (u64, u64)> = std::collections::BTreeMap::new();
    for relay in &net.relays {
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
    net.relays
        .iter()
        .filter_map(|r| {
            r.last("window ")
                .and_then(|l| l.split_whitespace().nth(1).and_then(|k| k.parse().ok()))
        })
        .min()
        .unwrap_or(0)
}

/// Runs the main job; see the module docs.
pub fn run(args: &TestnetArgs) -> anyhow::Result<Vec<Measurement>> {
    // One at a time: the addresses are fixed, so a second run would only collide.
    if TcpListener::bind(args.listen).is_err() {
        bail!(
            "{} is taken: is a testnet already running? Stop it with Ctrl-C where it runs (or pass --listen)",
            args.listen
        );
    }
    if UdpSocket::bind((ip(0), 47471)).is_err() {
        bail!(
            "a PhantomBand testnet is already running on 127.79.0.0/24 (its gateway's gossip port is taken): stop it with Ctrl-C where it runs"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let client_bin = binary("pb-client")?;
    step(
        1,
        &format!("starting {RELAYS} relays on 127.79.0.1-{RELAYS}"),
    );
    let started = Instant::now();
    let net = Testnet::start(args.link_rate)?;
    step(
        2,
        &format!(
            "the relays agree on topology {} ({:.1} s)",
            &net.hash[..16.min(net.hash.len())],
            started.elapsed().as_secs_f64()
        ),
    );
    let server = file_server(args.bytes)?;
    let small = file_server(1024)?;
    step(3, &format!("starting pb-client on {}", args.listen));
    let client = Proc::start({
        let mut c = Command::new(&client_bin);
        c.args(["--listen", &args.listen.to_string()])
            .args(["--gateway", &format!("{}:47480", ip(0))])
            .args(["--network-seed", SEED]);
        c
    })
    .context("starting pb-client")?;
    wait_for("pb-client ready", Duration::from_secs(30), || {
        client.last("pb-client: ready").is_some()
    })
    .with_context(|| client.tail(5))?;
    step(
        4,
        &format!("fetching {} KiB through the mixnet", args.bytes / 1024),
    );
    let (first, all) = fetch(Some(args.listen), server, args.bytes)?;
    step(5, "measuring latency (20 small fetches)");
    let mut latencies = Vec::new();
    for _ in 0..20 {
        latencies.push(fetch(Some(args.listen), small, 1024)?.0.as_secs_f64() * 1e3);
    }
    latencies.sort_by(f64::total_cmp);
    let rate = args.bytes as f64 / 1024.0 / all.as_secs_f64();
    let mut rows = vec![row(
        "testnet.fetch",
        "pb-client",
        &[("bytes", json!(args.bytes))],
        (rate * 10.0).round() / 10.0,
        "KiB/s",
    )];
    for p in [50u32, 90, 100] {
        rows.push(row(
            "testnet.ttfb",
            "pb-client",
            &[("percentile", json!(p))],
            percentile(&latencies, f64::from(p) / 100.0).round(),
            "ms",
        ));
    }
    // The links' rate each second, idle, then while a fetch runs: the same.
    step(6, "watching the links for 6 s idle, then 6 s busy");
    let idle_from = newest_window(&net) + 1;
    thread::sleep(Duration::from_secs(7));
    let busy_from = newest_window(&net) + 1;
    let listen = args.listen;
    let bytes = args.bytes;
    thread::scope(|scope| {
        let fetching = scope.spawn(move || fetch(Some(listen), server, bytes));
        thread::sleep(Duration::from_secs(7));
        let _ = fetching.join();
    });
    let idle = windows(&net, idle_from, 6);
    let busy: Vec<(u64, f64)> = windows(&net, busy_from, 6)
        .into_iter()
        .map(|(t, r)| (t + 6, r))
        .collect();
    for (phase, points) in [("idle", &idle), ("busy", &busy)] {
        for (t, rate) in points.iter() {
            rows.push(row(
                "testnet.link_rate_over_time",
                "mean per link",
                &[("t", json!(t)), ("phase", json!(phase))],
                rate.round(),
                "pkt/s",
            ));
        }
    }
    let mean = |v: &[(u64, f64)]| v.iter().map(|p| p.1).sum::<f64>() / v.len().max(1) as f64;
    let mut link_lines = Vec::new();
    for i in 0..RELAYS {
        if let Some((per_link, links)) = relay_rate(&net, i, idle_from, busy_from + 6) {
            rows.push(row(
                "testnet.link_rate",
                &format!("relay{i}"),
                &[("links", json!(links)), ("target", json!(args.link_rate))],
                per_link.round(),
                "pkt/s per link",
            ));
            let role = match i {
                0 => "gateway",
                _ if i == RELAYS - 1 => "exit   ",
                _ => "mix    ",
            };
            link_lines.push(format!(
                "  relay {i} ({role} {}): {links} links, {per_link:.0} packets/s each",
                ip(i)
            ));
        }
    }
    if !args.json {
        println!();
        println!(
            "PhantomBand testnet: {RELAYS} relays on 127.79.0.1-{RELAYS}, topology {}",
            net.hash
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
    println!("(the exit here opens only 127.79.0.0/16; a real exit refuses local addresses)");
    println!("Ctrl-C stops everything.");
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("pb-perf testnet: stopping");
    drop(client);
    drop(net);
    Ok(if args.json { rows } else { Vec::new() })
}
