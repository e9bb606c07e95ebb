//! `pb-perf e2e`: the whole path on one machine, without root. Eight `pb-relay` processes in
//! gossip mode on loopback addresses (a gateway, three mix layers of two, an exit), a file
//! server, and `pb-client`; per client profile, the time to the first byte of a fetch and
//! the download rate through the mixnet, against the same fetch made directly; then the
//! client's CPU and memory while it sits idle with its cover running.
//!
//! With `--tun` (root) the testnet runs in network namespaces and each profile is measured
//! twice, side by side: through SOCKS5 and in VPN mode (`pb-client --tun`, the fetch made
//! with no proxy from the client's namespace, so it crosses the TUN device and smoltcp).
//!
//! The relays and the client are the release binaries next to `pb-perf` (build them with
//! `cargo build --release -p pb-relay -p pb-client -p pb-perf`).

use std::{
    net::SocketAddr,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use pb_testnet::{FileServer, Network, Node, Testnet, binary, fetch, pattern};
use serde_json::json;

use crate::{
    procfs::{cpu_seconds, process_stat, rss_mib},
    progress::Progress,
    report::{Measurement, median, row},
};

/// Settings of a run.
pub struct E2eArgs {
    /// Bytes per fetch.
    pub bytes: usize,
    /// Fetches per profile (the median is reported).
    pub fetches: usize,
    /// Seconds the idle client is watched.
    pub idle_seconds: f64,
    /// Client profiles to measure.
    pub profiles: Vec<String>,
    /// Packets per second on every relay link.
    pub link_rate: u32,
    /// Measure VPN mode too (network namespaces: root).
    pub tun: bool,
}

const RELAYS: usize = 8;

/// Runs the testnet and measures; see the module docs.
pub fn run(args: &E2eArgs) -> anyhow::Result<Vec<Measurement>> {
    let client = binary("pb-client")?;
    let mut builder = Network::builder()
        .relays(RELAYS)
        .link_rate(args.link_rate)
        .loop_rate(1);
    let modes: &[&str] = if args.tun {
        pb_testbed::privileged().map_err(|why| {
            anyhow!("--tun: VPN mode runs in network namespaces with a TUN device: {why}")
        })?;
        builder = builder.netns("e2e");
        &["socks", "tun"]
    } else {
        &["socks"]
    };
    let network = builder.build()?;
    let progress = Progress::new(
        "pb-perf e2e",
        1 + args.profiles.len() * modes.len() * (args.fetches + 1),
    );
    progress.step(&format!(
        "starting {RELAYS} relays on {}",
        network.relay_range()
    ));
    let mut net = Testnet::start(network)?;
    net.wait_for_agreement(Duration::from_secs(60))?;
    let server =
        FileServer::start(net.listen(Node::Web, 0)?, Arc::new(pattern(args.bytes)))?.addr();
    let mut rows = Vec::new();
    // Fetches are made from the client's node (its namespace, or here on loopback).
    let fetch_from_client = |net: &Testnet, socks: Option<SocketAddr>| {
        net.in_node(Node::Client, || fetch(socks, server, args.bytes))?
    };
    // The baseline: the same fetch, straight to the server.
    let mut direct_first = Vec::new();
    let mut direct_rate = Vec::new();
    for _ in 0..args.fetches {
        let (first, all) = fetch_from_client(&net, None)?;
        direct_first.push(first.as_secs_f64() * 1e3);
        direct_rate.push(args.bytes as f64 / 1024.0 / all.as_secs_f64());
    }
    let params = |profile: &str, mode: &str| {
        vec![
            ("profile", json!(profile)),
            ("mode", json!(mode)),
            ("bytes", json!(args.bytes)),
            ("link_rate", json!(args.link_rate)),
        ]
    };
    rows.push(row(
        "e2e.ttfb",
        "direct",
        &params("-", "-"),
        median(direct_first),
        "ms",
    ));
    rows.push(row(
        "e2e.throughput",
        "direct",
        &params("-", "-"),
        median(direct_rate),
        "KiB/s",
    ));
    let runs = args
        .profiles
        .iter()
        .flat_map(|p| modes.iter().map(move |m| (p, *m)));
    for (k, (profile, mode)) in runs.enumerate() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 21080 + k as u16));
        let mut command = net.client_command(&client);
        command.args(["--listen", &listen.to_string(), "--profile", profile]);
        if mode == "tun" {
            command.args(["--tun", "pbtun0"]);
        }
        let k = net.start_client(
            &format!("pb-client ({profile}, {mode})"),
            command,
            Duration::from_secs(30),
        )?;
        let pid = net
            .process(k)
            .ok_or_else(|| anyhow!("pb-client is gone"))?
            .child
            .id();
        let mut firsts = Vec::new();
        let mut rates = Vec::new();
        let (busy0, t0) = (cpu_seconds(&process_stat(pid))?, Instant::now());
        for n in 0..args.fetches {
            progress.step(&format!(
                "profile {profile}, {mode}: fetch {}/{} of {} KiB",
                n + 1,
                args.fetches,
                args.bytes / 1024
            ));
            let socks = (mode == "socks").then_some(listen);
            let (first, all) = fetch_from_client(&net, socks)
                .with_context(|| format!("profile {profile}, {mode}"))?;
            firsts.push(first.as_secs_f64() * 1e3);
            rates.push(args.bytes as f64 / 1024.0 / all.as_secs_f64());
        }
        let busy = (cpu_seconds(&process_stat(pid))? - busy0) / t0.elapsed().as_secs_f64() * 100.0;
        rows.push(row(
            "e2e.ttfb",
            "pb-client",
            &params(profile, mode),
            median(firsts),
            "ms",
        ));
        rows.push(row(
            "e2e.throughput",
            "pb-client",
            &params(profile, mode),
            median(rates),
            "KiB/s",
        ));
        rows.push(row(
            "e2e.busy_cpu",
            "pb-client",
            &params(profile, mode),
            (busy * 100.0).round() / 100.0,
            "% of a core",
        ));
        // Idle: no stream open, cover (and SURB top-ups) running.
        thread::sleep(Duration::from_secs(3));
        progress.step(&format!(
            "profile {profile}, {mode}: watching the idle client for {} s",
            args.idle_seconds
        ));
        let (cpu0, t0) = (cpu_seconds(&process_stat(pid))?, Instant::now());
        thread::sleep(Duration::from_secs_f64(args.idle_seconds));
        let cpu = (cpu_seconds(&process_stat(pid))? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        rows.push(row(
            "e2e.idle_cpu",
            "pb-client",
            &params(profile, mode),
            (cpu * 100.0).round() / 100.0,
            "% of a core",
        ));
        rows.push(row(
            "e2e.idle_rss",
            "pb-client",
            &params(profile, mode),
            (rss_mib(pid)? * 10.0).round() / 10.0,
            "MiB",
        ));
        if let Some(proc) = net.process_mut(k) {
            proc.terminate()?;
        }
    }
    Ok(rows)
}
