//! `pb-perf e2e`: the whole path on one machine, without root. Eight `pb-relay` processes in
//! gossip mode on loopback addresses (a gateway, three mix layers of two, an exit), a file
//! server, and `pb-client`; per client profile, the time to the first byte of a fetch and
//! the download rate through the mixnet, against the same fetch made directly; then the
//! client's CPU and memory while it sits idle with its cover running.
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
}

const RELAYS: usize = 8;

/// Runs the testnet and measures; see the module docs.
pub fn run(args: &E2eArgs) -> anyhow::Result<Vec<Measurement>> {
    let client = binary("pb-client")?;
    let network = Network::builder()
        .relays(RELAYS)
        .link_rate(args.link_rate)
        .loop_rate(1)
        .build()?;
    let progress = Progress::new("pb-perf e2e", 1 + args.profiles.len() * (args.fetches + 1));
    progress.step(&format!(
        "starting {RELAYS} relays on {}",
        network.relay_range()
    ));
    let mut net = Testnet::start(network)?;
    net.wait_for_agreement(Duration::from_secs(60))?;
    let server =
        FileServer::start(net.listen(Node::Web, 0)?, Arc::new(pattern(args.bytes)))?.addr();
    let mut rows = Vec::new();
    // The baseline: the same fetch, straight to the server.
    let mut direct_first = Vec::new();
    let mut direct_rate = Vec::new();
    for _ in 0..args.fetches {
        let (first, all) = fetch(None, server, args.bytes)?;
        direct_first.push(first.as_secs_f64() * 1e3);
        direct_rate.push(args.bytes as f64 / 1024.0 / all.as_secs_f64());
    }
    let params = |profile: &str| {
        vec![
            ("profile", json!(profile)),
            ("bytes", json!(args.bytes)),
            ("link_rate", json!(args.link_rate)),
        ]
    };
    rows.push(row(
        "e2e.ttfb",
        "direct",
        &params("-"),
        median(direct_first),
        "ms",
    ));
    rows.push(row(
        "e2e.throughput",
        "direct",
        &params("-"),
        median(direct_rate),
        "KiB/s",
    ));
    for (k, profile) in args.profiles.iter().enumerate() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 21080 + k as u16));
        let mut command = net.client_command(&client);
        command.args(["--listen", &listen.to_string(), "--profile", profile]);
        let k = net.start_client(
            &format!("pb-client ({profile})"),
            command,
            Duration::from_secs(30),
        )?;
        let mut firsts = Vec::new();
        let mut rates = Vec::new();
        for n in 0..args.fetches {
            progress.step(&format!(
                "profile {profile}: fetch {}/{} of {} KiB",
                n + 1,
                args.fetches,
                args.bytes / 1024
            ));
            let (first, all) = fetch(Some(listen), server, args.bytes)
                .with_context(|| format!("profile {profile}"))?;
            firsts.push(first.as_secs_f64() * 1e3);
            rates.push(args.bytes as f64 / 1024.0 / all.as_secs_f64());
        }
        rows.push(row(
            "e2e.ttfb",
            "pb-client",
            &params(profile),
            median(firsts),
            "ms",
        ));
        rows.push(row(
            "e2e.throughput",
            "pb-client",
            &params(profile),
            median(rates),
            "KiB/s",
        ));
        // Idle: no stream open, cover (and SURB top-ups) running.
        thread::sleep(Duration::from_secs(3));
        progress.step(&format!(
            "profile {profile}: watching the idle client for {} s",
            args.idle_seconds
        ));
        let pid = net
            .process(k)
            .ok_or_else(|| anyhow!("pb-client is gone"))?
            .child
            .id();
        let (cpu0, t0) = (cpu_seconds(&process_stat(pid))?, Instant::now());
        thread::sleep(Duration::from_secs_f64(args.idle_seconds));
        let cpu = (cpu_seconds(&process_stat(pid))? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        rows.push(row(
            "e2e.idle_cpu",
            "pb-client",
            &params(profile),
            (cpu * 100.0).round() / 100.0,
            "% of a core",
        ));
        rows.push(row(
            "e2e.idle_rss",
            "pb-client",
            &params(profile),
            (rss_mib(pid)? * 10.0).round() / 10.0,
            "MiB",
        ));
        if let Some(proc) = net.process_mut(k) {
            proc.terminate()?;
        }
    }
    Ok(rows)
}
