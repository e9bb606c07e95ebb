//! `pb-perf idle`: what one relay core costs with nothing to forward. A pipeline with
//! `--links` links at `--link-rate` packets per second each (all cover, built ahead on a
//! thread of its own as in pb-relay) runs on loopback UDP under two loops, side by side and
//! interleaved in one run:
//!
//! - `sleep-until-deadline`: pb-relay's core loop, which waits for packets until the
//!   pipeline's next deadline ([`pb_relay::core::sleep_until`]);
//! - `poll-1ms`: the loop it replaced, which waited at most 1 ms every turn.
//!
//! Reported per loop: the core thread's CPU (percent of one core, from
//! `/proc/thread-self/schedstat`), its turns per second, and the slots each link filled per
//! second and missed (so a loop that saves CPU by missing slots would show it). No root.
//!
//! With `--baseline-relay PATH`, also the whole process: the `pb-relay` next to pb-perf and
//! the binary at PATH (say, one built from an older commit) run in turn as a static-mode
//! relay with the same links, and each one's CPU (the process, and its `pb-core-0` thread)
//! is read from `/proc` over the measured seconds. Their configuration is rendered from
//! `pb_relay::config::file` without keys an older relay would not know.

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pb_io::udp::{UdpConfig, UdpIo};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{CoverPool, Neighbour, Pipeline, PipelineConfig, Sink};
use pb_sphinx::{DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, NodeId, NodeKeys};
use serde_json::json;

use crate::{
    procfs::{CpuClock, cpu_seconds, process_stat, thread_stat},
    progress::Progress,
    report::{Measurement, median, row},
};

/// Settings of a run.
#[derive(Debug)]
pub struct IdleArgs {
    /// Measured seconds per loop and round.
    pub seconds: f64,
    /// Rounds (each measures both loops; the median round is reported).
    pub rounds: usize,
    /// Links of the relay.
    pub links: usize,
    /// Packets per second on every link.
    pub link_rate: u32,
    /// A pb-relay binary to compare the current one with, as whole processes.
    pub baseline_relay: Option<std::path::PathBuf>,
}

/// The core loop's waiting policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    SleepUntilDeadline,
    Poll1ms,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::SleepUntilDeadline => "sleep-until-deadline",
            Policy::Poll1ms => "poll-1ms",
        }
    }
}

/// Delivered packets go nowhere (nothing is delivered: there is no traffic).
struct Discard;

impl Sink for Discard {
    fn deliver(&mut self, _: MailboxId, _: Option<pb_sphinx::SurbId>, _: &[u8]) {}
}

/// One loop's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    cpu_percent: f64,
    turns_per_second: f64,
    sent_per_link_second: f64,
    missed_per_second: f64,
}

const EPOCH: Epoch = Epoch(9);

fn key(i: u8) -> EpochKey {
    EpochKey::from_secret(EPOCH, [0x40 + i; 32])
}

/// Runs one relay core under `policy` for `seconds`.
fn measure(args: &IdleArgs, policy: Policy) -> anyhow::Result<Figures> {
    let me = NodeId([0xee; 16]);
    // The neighbours: sockets nobody reads (the kernel drops what overflows them).
    let sinks: Vec<UdpSocket> = (0..args.links)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .context("binding the neighbours' sockets")?;
    let neighbours: Vec<Neighbour> = sinks
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Neighbour {
                node: NodeId([i as u8 + 1; 16]),
                addr: s.local_addr()?,
            })
        })
        .collect::<std::io::Result<_>>()?;
    let hop = |node: NodeId, k: &EpochKey| Hop {
        node,
        public_key: k.public_key(),
        delay: DelayMs(0),
    };
    let routes: Vec<Vec<Hop>> = neighbours
        .iter()
        .enumerate()
        .map(|(i, n)| vec![hop(n.node, &key(i as u8 + 1)), hop(me, &key(0))])
        .collect();
    let loop_mailbox = MailboxId([0x11; 16]);
    let config = PipelineConfig {
        neighbours: neighbours.clone(),
        link_rate: args.link_rate,
        link_queue: 1024,
        max_burst: 8,
        delay_capacity: 1024,
        max_delay: DelayMs(10_000),
        batch: 32,
        loop_mailbox,
    };
    let origin = Instant::now();
    let clock: Arc<dyn Fn() -> Time + Send + Sync> =
        Arc::new(move || Time(origin.elapsed().as_nanos() as u64));
    let monitor = LoopMonitor::new([7; 32], args.links, 4096, Time(5 * Time::SECOND))?;
    let cover =
        pb_pipeline::LoopCover::new(Format::V2, EPOCH, routes, loop_mailbox, 1, monitor, [9; 32]);
    let pool = CoverPool::start(
        cover,
        args.links,
        CoverPool::depth_for(args.link_rate),
        clock.clone(),
        Box::new(|| {}),
    )
    .context("starting the cover builder")?;
    let replay = SharedReplayFilter::new(1024)?;
    replay.prepare(EPOCH);
    let keys = NodeKeys {
        current: key(0),
        previous: None,
        format: Some(Format::V2),
    };
    let io = UdpIo::open(&UdpConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))))?;
    let mut pipeline = Pipeline::new(
        io,
        &config,
        keys,
        &replay,
        Box::new(pool.handle()),
        Box::new(Discard),
        clock(),
    )?;
    // Let the cover builder fill its queues before measuring.
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(300) {
        let t = clock();
        pipeline.step(t, pb_relay::core::sleep_until(pipeline.next_deadline(), t))?;
    }
    let before = pipeline.link_stats();
    let mut cpu = CpuClock::for_this_thread()?;
    let (cpu0, start) = (cpu.now_ns(), Instant::now());
    let mut turns = 0u64;
    let limit = Duration::from_secs_f64(args.seconds);
    while start.elapsed() < limit {
        let t = clock();
        let wait = match policy {
            Policy::SleepUntilDeadline => pb_relay::core::sleep_until(pipeline.next_deadline(), t),
            Policy::Poll1ms => Duration::from_millis(1),
        };
        pipeline.step(t, wait)?;
        turns += 1;
    }
    let (cpu_ns, secs) = (cpu.now_ns() - cpu0, start.elapsed().as_secs_f64());
    let after = pipeline.link_stats();
    let sent: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| (a.real + a.cover) - (b.real + b.cover))
        .sum();
    let missed: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.missed - b.missed)
        .sum();
    Ok(Figures {
        cpu_percent: cpu_ns as f64 / 1e9 / secs * 100.0,
        turns_per_second: turns as f64 / secs,
        sent_per_link_second: sent as f64 / secs / args.links.max(1) as f64,
        missed_per_second: missed as f64 / secs,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A static-mode relay with `links` links at `link_rate`, on loopback, written into `dir`:
/// this relay in layer 0, `links` nodes in layer 1, one in layer 2 (nobody but this relay
/// runs; its packets go to ports nobody reads).
fn write_static_relay(dir: &Path, links: usize, link_rate: u32) -> anyhow::Result<()> {
    use pb_relay::config::file::{
        ConfigFile, IoSection, MixSection, NodeSection, TopologyEntry, TopologyFile, render,
    };
    let ports: Vec<u16> = (0..links + 2)
        .map(|_| Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()))
        .collect::<std::io::Result<_>>()?;
    let nodes = (0..links + 2)
        .map(|i| {
            let layer = match i {
                0 => 0,
                _ if i <= links => 1,
                _ => 2,
            };
            TopologyEntry {
                id: Some(hex(&[i as u8 + 1; 16])),
                role: Some("mix".into()),
                layer: Some(layer),
                addr: Some(format!("127.0.0.1:{}", ports[i])),
                public_key: Some(hex(&key(i as u8).public_key())),
            }
        })
        .collect();
    std::fs::write(
        dir.join("topology.toml"),
        render(&TopologyFile { node: Some(nodes) })?,
    )?;
    let config = ConfigFile {
        topology: Some("topology.toml".into()),
        node: Some(NodeSection {
            id: Some(hex(&[1; 16])),
            secret: Some(hex(&[0x40; 32])),
            epoch: Some(EPOCH.0),
            format: Some("v2".into()),
        }),
        io: Some(IoSection::udp(SocketAddr::from(([127, 0, 0, 1], ports[0])))),
        mix: Some(MixSection {
            link_rate: Some(link_rate),
            ..MixSection::default()
        }),
        ..ConfigFile::default()
    };
    std::fs::write(dir.join("relay.toml"), render(&config)?)?;
    Ok(())
}

/// Runs `binary` as the static relay in `dir` for `seconds` after a warm-up: its CPU as a
/// process and of its `pb-core-0` thread, in percent of one core.
fn measure_process(binary: &Path, dir: &Path, seconds: f64) -> anyhow::Result<(f64, f64)> {
    let mut child = Command::new(binary)
        .args(["run", "--stats-interval", "0", "--config"])
        .arg(dir.join("relay.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let result = (|| {
        std::thread::sleep(Duration::from_secs(2));
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{} exited at once: {status}", binary.display());
        }
        let process = process_stat(child.id());
        let core = thread_stat(child.id(), "pb-core-0")?;
        let (p0, c0, t0) = (cpu_seconds(&process)?, cpu_seconds(&core)?, Instant::now());
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let (p1, c1) = (cpu_seconds(&process)?, cpu_seconds(&core)?);
        let secs = t0.elapsed().as_secs_f64();
        Ok(((p1 - p0) / secs * 100.0, (c1 - c0) / secs * 100.0))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The whole-process comparison (`--baseline-relay`).
fn processes(
    args: &IdleArgs,
    baseline: &Path,
    progress: &Progress,
) -> anyhow::Result<Vec<Measurement>> {
    let current = pb_testnet::binary("pb-relay")?;
    let dir = std::env::temp_dir().join(format!("pb-perf-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        write_static_relay(&dir, args.links, args.link_rate)?;
        let binaries = [
            ("pb-relay-baseline", baseline),
            ("pb-relay", current.as_path()),
        ];
        let mut figures: Vec<Vec<(f64, f64)>> = vec![Vec::new(); binaries.len()];
        for round in 0..args.rounds {
            for (b, (name, path)) in binaries.iter().enumerate() {
                progress.step(&format!(
                    "round {}/{}: {name} ({}) for {} s",
                    round + 1,
                    args.rounds,
                    path.display(),
                    args.seconds
                ));
                figures[b].push(measure_process(path, &dir, args.seconds)?);
            }
        }
        let mut rows = Vec::new();
        for (b, (name, path)) in binaries.iter().enumerate() {
            let params = [
                ("links", json!(args.links)),
                ("link_rate", json!(args.link_rate)),
                ("backend", json!("udp")),
                ("binary", json!(path.display().to_string())),
            ];
            let process = median(figures[b].iter().map(|f| f.0).collect());
            let core = median(figures[b].iter().map(|f| f.1).collect());
            rows.push(row(
                "relay.idle_process_cpu",
                name,
                &params,
                (process * 100.0).round() / 100.0,
                "% of a core",
            ));
            rows.push(row(
                "relay.idle_core_thread_cpu",
                name,
                &params,
                (core * 100.0).round() / 100.0,
                "% of a core",
            ));
        }
        Ok(rows)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs the comparison; see the module docs.
pub fn run(args: &IdleArgs) -> anyhow::Result<Vec<Measurement>> {
    let policies = [Policy::Poll1ms, Policy::SleepUntilDeadline];
    let steps = args.rounds * (policies.len() + if args.baseline_relay.is_some() { 2 } else { 0 });
    let progress = Progress::new("pb-perf idle", steps);
    let mut figures: Vec<Vec<Figures>> = vec![Vec::new(); policies.len()];
    for round in 0..args.rounds {
        for (p, policy) in policies.iter().enumerate() {
            progress.step(&format!(
                "round {}/{}: {} for {} s",
                round + 1,
                args.rounds,
                policy.name(),
                args.seconds
            ));
            figures[p].push(measure(args, *policy)?);
        }
    }
    let params = [
        ("links", json!(args.links)),
        ("link_rate", json!(args.link_rate)),
        ("backend", json!("udp")),
    ];
    let mut rows = Vec::new();
    for (p, policy) in policies.iter().enumerate() {
        let of = |f: fn(&Figures) -> f64| median(figures[p].iter().map(f).collect());
        let round = |v: f64, places: i32| (v * 10f64.powi(places)).round() / 10f64.powi(places);
        rows.push(row(
            "relay.idle_cpu",
            policy.name(),
            &params,
            round(of(|f| f.cpu_percent), 2),
            "% of a core",
        ));
        rows.push(row(
            "relay.idle_turns",
            policy.name(),
            &params,
            round(of(|f| f.turns_per_second), 0),
            "turns/s",
        ));
        rows.push(row(
            "relay.idle_link_rate",
            policy.name(),
            &params,
            round(of(|f| f.sent_per_link_second), 1),
            "pkt/s",
        ));
        rows.push(row(
            "relay.idle_missed",
            policy.name(),
            &params,
            round(of(|f| f.missed_per_second), 2),
            "slots/s",
        ));
    }
    if let Some(baseline) = &args.baseline_relay {
        rows.extend(processes(args, baseline, &progress)?);
    }
    Ok(rows)
}
