//! `pb-perf relay`: packets forwarded per second through one relay pipeline on one pinned
//! core, over AF_XDP and over UDP, with the batch-unwrap rate of the same core measured in the
//! same run as the baseline (the bar: forwarding at least 80% of it), at each link
//! count of `--links`; and the slots the links missed, saturated and idle.
//!
//! Two namespaces on a veth pair: the relay in `a`; the generator and the sink in `b`. The
//! relay has N links, one per sink node id, all to the sink's socket. The generator sends
//! distinct two-hop PB-Sphinx v2 packets (relay, then sink `i mod N`) with zero delay, at most
//! `--in-flight` ahead of the sink; the relay unwraps them, checks replays, queues them on
//! their links (each paced at 1/N of `--link-rate`, so slots are never the limit) and sends
//! them to the sink, which recognises each forwarded packet by the hash of the bytes the
//! relay must produce (computed when the packets are built) and records its latency. Slots
//! the links found empty carry one-hop link cover from a [`CoverPool`] whose builder runs on
//! the generator's CPU, as pb-relay builds cover on a thread of its own. The idle runs send
//! nothing: every slot of every link, at `--idle-link-rate`, is cover.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use hdrhistogram::Histogram;
use pb_io::{
    PacketIo, XdpCounter,
    afxdp::{AfXdpConfig, AfXdpIo, BindMode},
    udp::{UdpConfig, UdpIo},
    xdp::{AttachMode, XdpProgram},
};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{CoverPool, LoopCover, Neighbour, Pipeline, PipelineConfig, Sink};
use pb_sphinx::{
    DelayMs, DropReason, Epoch, EpochKey, Format, Hop, MailboxId, MemoryReplayFilter, NodeId,
    NodeKeys, PACKET_LEN, create_packet_with, process, process_batch,
};
use serde_json::Value;

use crate::{
    procfs::CpuClock,
    progress::Progress,
    report::{self, Measurement},
    sphinx_bench::NoReplayFilter,
};

/// Settings of one `pb-perf relay` run.
#[derive(Clone, Debug)]
pub struct RelayArgs {
    /// Measured seconds per backend (and for the baseline).
    pub seconds: f64,
    /// Packets built for the run (each is sent once: replays would be dropped).
    pub packets: usize,
    /// Slots per second over all the relay's links (0: 90% of the unwrap rate).
    pub link_rate: u32,
    /// Packets the generator keeps in flight.
    pub in_flight: usize,
    /// Link counts to measure.
    pub links: Vec<usize>,
    /// Packets per second on every link in the idle runs.
    pub idle_link_rate: u32,
}

const PORT: u16 = 47470;
const SINK_PORT: u16 = 47471;
const EPOCH: Epoch = Epoch(1);
const FORMAT: Format = Format::V2;

fn relay_keys() -> NodeKeys {
    NodeKeys {
        current: EpochKey::from_secret(EPOCH, [0x61; 32]),
        previous: None,
        format: Some(FORMAT),
    }
}

const RELAY: NodeId = NodeId([0x61; 16]);

/// The node id of sink `j` (every sink is the same socket, with one key).
fn sink(j: usize) -> NodeId {
    let mut id = [0x62; 16];
    id[..8].copy_from_slice(&(j as u64).to_le_bytes());
    NodeId(id)
}

fn sink_hop(j: usize) -> Hop {
    Hop {
        node: sink(j),
        public_key: EpochKey::from_secret(EPOCH, [0x62; 32]).public_key(),
        delay: DelayMs(0),
    }
}

/// The run's packets and, for each, the 16-byte hash of what the relay must send on.
struct Load {
    packets: Vec<[u8; PACKET_LEN]>,
    expected: HashMap<[u8; 16], u32>,
}

/// A packet and the hash of what the relay makes of it.
type Built = ([u8; PACKET_LEN], [u8; 16]);

/// `count` packets, taking turns among `sinks` sinks.
fn build_load(count: usize, sinks: usize) -> anyhow::Result<Load> {
    let relay_hop = Hop {
        node: RELAY,
        public_key: relay_keys().current.public_key(),
        delay: DelayMs(0),
    };
    let threads = pb_testbed::allowed_cpus()
        .map(|c| c.len())
        .unwrap_or(1)
        .max(1);
    let chunks: Vec<anyhow::Result<Vec<Built>>> = thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    let keys = relay_keys();
                    let mut out = Vec::new();
                    let mut i = t;
                    while i < count {
                        let mut seed = [0u8; 32];
                        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                        let mut packet = [0u8; PACKET_LEN];
                        // By the thread's own count: the threads' lists are joined one after
                        // the other, and each must cycle through every sink.
                        let route = [relay_hop, sink_hop(out.len() % sinks.max(1))];
                        create_packet_with(
                            FORMAT,
                            &mut packet,
                            EPOCH,
                            &route,
                            MailboxId([5; 16]),
                            &(i as u64).to_le_bytes(),
                            &seed,
                        )
                        .map_err(|e| anyhow!("{e}"))?;
                        let mut forwarded = packet;
                        process(&mut forwarded, &keys, &mut MemoryReplayFilter::default())
                            .map_err(|e| anyhow!("building the load: {e}"))?;
                        let mut hash = [0u8; 16];
                        hash.copy_from_slice(&blake3::hash(&forwarded).as_bytes()[..16]);
                        out.push((packet, hash));
                        i += threads;
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("builder panicked")))
            })
            .collect()
    });
    let mut packets = Vec::with_capacity(count);
    let mut expected = HashMap::with_capacity(count);
    for chunk in chunks {
        for (packet, hash) in chunk? {
            expected.insert(hash, packets.len() as u32);
            packets.push(packet);
        }
    }
    Ok(Load { packets, expected })
}

/// Batch-32 unwrap of the load's packets on this thread for `seconds`: packets per CPU
/// second.
fn baseline(load: &Load, seconds: f64) -> anyhow::Result<f64> {
    let keys = relay_keys();
    let mut cpu = CpuClock::for_this_thread()?;
    let mut work = vec![[0u8; PACKET_LEN]; 32];
    let mut results = vec![Err(DropReason::WrongLength); 32];
    let (start, cpu_start) = (Instant::now(), cpu.now_ns());
    let mut done = 0usize;
    while start.elapsed().as_secs_f64() < seconds {
        for (j, w) in work.iter_mut().enumerate() {
            *w = load.packets[(done + j) % load.packets.len()];
        }
        let mut refs: Vec<&mut [u8]> = work.iter_mut().map(|w| w.as_mut_slice()).collect();
        process_batch(&mut refs, &keys, &mut NoReplayFilter, &mut results);
        done += 32;
    }
    let cpu_secs = (cpu.now_ns() - cpu_start) as f64 / 1e9;
    Ok(done as f64 / cpu_secs.max(1e-9))
}

/// Delivered packets are not expected here (the relay only forwards).
struct Discard;

impl Sink for Discard {
    fn deliver(&mut self, _: MailboxId, _: Option<pb_sphinx::SurbId>, _: &[u8]) {}
}

struct RelayResult {
    forwarded: u64,
    cpu_secs: f64,
    wall_secs: f64,
    cover: u64,
    missed: u64,
    slots: u64,
    drops: u64,
    cover_failures: u64,
}

/// One measured run: the relay's links and the rate of each, the generator's window (0:
/// idle, nothing sent) and how long.
#[derive(Clone, Copy, Debug)]
struct Run {
    links: usize,
    link_rate: u32,
    in_flight: usize,
    seconds: f64,
}

/// The CPUs of a run: the relay's, and the one shared by the generator, the sink and the
/// relay's cover builder.
#[derive(Clone, Copy, Debug)]
struct Cpus {
    relay: usize,
    other: usize,
}

/// The relay thread: pinned, in namespace `a`, running the pipeline until `stop`, measuring
/// from `measuring` on.
fn relay(
    bed: &pb_testbed::TwoNode,
    backend: &str,
    run: Run,
    cpus: Cpus,
    flags: &Flags<'_>,
    replay: &SharedReplayFilter,
) -> anyhow::Result<RelayResult> {
    pb_testbed::pin_to_cpu(cpus.relay)?;
    let _inside = bed.a.enter()?;
    let config = PipelineConfig {
        neighbours: (0..run.links)
            .map(|j| Neighbour {
                node: sink(j),
                addr: SocketAddr::new(bed.link.b_v4.into(), SINK_PORT),
            })
            .collect(),
        link_rate: run.link_rate,
        link_queue: 8192,
        max_burst: 1024,
        delay_capacity: 1 << 16,
        max_delay: DelayMs(1000),
        batch: 32,
        loop_mailbox: MailboxId([0x71; 16]),
    };
    if backend == "af_xdp" {
        let mut program =
            XdpProgram::attach_new(&bed.link.a_if, AttachMode::Native, PORT, PACKET_LEN as u16)?;
        let mut c = AfXdpConfig::new(bed.link.a_if.clone(), 0);
        c.packet_len = PACKET_LEN as u16;
        c.bind = BindMode::Copy;
        let mut io = AfXdpIo::open(&c)?;
        program.register(0, io.fd())?;
        io.resolve_peer(IpAddr::V4(bed.link.b_v4), Duration::from_secs(5))
            .context("resolving the sink's MAC")?;
        let result = drive(io, &config, replay, flags, cpus.other);
        let c = program.counters()?;
        if c.get(XdpCounter::DropNoSocket) + c.get(XdpCounter::DropWrongSize) > 0 {
            eprintln!("pb-perf relay: the XDP program dropped packets");
        }
        result
    } else {
        let mut u = UdpConfig::new(SocketAddr::new(bed.link.a_v4.into(), PORT));
        u.packet_len = PACKET_LEN as u16;
        drive(UdpIo::open(&u)?, &config, replay, flags, cpus.other)
    }
}

/// The phase flags the generator sets and the relay reads.
struct Flags<'a> {
    measuring: &'a AtomicBool,
    stop: &'a AtomicBool,
    ready: &'a AtomicBool,
}

/// Runs a pipeline on `io` until `stop`, counting from `measuring` on, with cover built on
/// `cover_cpu`. Says it is ready once every link has cover at hand.
fn drive<I: PacketIo>(
    io: I,
    config: &PipelineConfig,
    replay: &SharedReplayFilter,
    flags: &Flags<'_>,
    cover_cpu: usize,
) -> anyhow::Result<RelayResult> {
    let links = config.neighbours.len();
    let cover_routes = (0..links).map(|j| vec![sink_hop(j)]).collect();
    let origin = Instant::now();
    let now = move || Time(origin.elapsed().as_nanos() as u64);
    let cover = LoopCover::new(
        FORMAT,
        EPOCH,
        cover_routes,
        MailboxId([0x71; 16]),
        0,
        LoopMonitor::new([1; 32], links, 16, Time(Time::SECOND)).map_err(|e| anyhow!("{e}"))?,
        [2; 32],
    );
    let depth = CoverPool::depth_for(config.link_rate);
    let pool = CoverPool::start(
        cover,
        links,
        depth,
        Arc::new(now),
        Box::new(move || {
            let _ = pb_testbed::pin_to_cpu(cover_cpu);
        }),
    )?;
    // The pool starts empty: the links start once every one has most of its depth at hand.
    let filling = Instant::now();
    while (0..links).any(|j| pool.ready(j) < depth * 3 / 4) {
        if filling.elapsed() > Duration::from_secs(30) {
            return Err(anyhow!(
                "the cover builder did not fill {links} links in 30 s"
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut pipeline = Pipeline::new(
        io,
        config,
        relay_keys(),
        replay,
        Box::new(pool.handle()),
        Box::new(Discard),
        now(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let counters = |p: &Pipeline<'_, I>| {
        let s = p.stats();
        let (mut real, mut cover, mut missed) = (0, 0, 0);
        for l in p.link_stats() {
            real += l.real;
            cover += l.cover;
            missed += l.missed;
        }
        let drops = s.dropped.iter().sum::<u64>()
            + s.dropped_link_full
            + s.dropped_delay.iter().sum::<u64>();
        (real, cover, missed, drops, s.cover_failures)
    };
    flags.ready.store(true, Ordering::Release);
    let mut cpu_clock = CpuClock::for_this_thread()?;
    while !flags.measuring.load(Ordering::Acquire) && !flags.stop.load(Ordering::Acquire) {
        pipeline.step(now(), Duration::from_millis(1))?;
    }
    let first = counters(&pipeline);
    let (start, cpu0) = (Instant::now(), cpu_clock.now_ns());
    while !flags.stop.load(Ordering::Acquire) {
        pipeline.step(now(), Duration::from_millis(1))?;
    }
    let last = counters(&pipeline);
    Ok(RelayResult {
        forwarded: last.0 - first.0,
        cover: last.1 - first.1,
        missed: last.2 - first.2,
        slots: (last.0 + last.1 + last.2) - (first.0 + first.1 + first.2),
        drops: last.3 - first.3,
        cover_failures: last.4 - first.4,
        cpu_secs: (cpu_clock.now_ns() - cpu0) as f64 / 1e9,
        wall_secs: start.elapsed().as_secs_f64(),
    })
}

/// A measurement rounded to two decimals (ratios and fractions are small numbers).
fn row(bench: &str, imp: &str, params: &[(&str, Value)], value: f64, unit: &str) -> Measurement {
    report::row(bench, imp, params, (value * 100.0).round() / 100.0, unit)
}

/// Runs the baseline, then both backends at each link count (saturated, one packet at a
/// time for latency, idle); returns the measurements.
pub fn run(args: &RelayArgs) -> anyhow::Result<Vec<Measurement>> {
    pb_testbed::privileged().map_err(|reason| {
        anyhow!("pb-perf relay needs root (network namespaces and XDP): {reason}")
    })?;
    if args.links.contains(&0) {
        return Err(anyhow!("--links: every link count must be at least 1"));
    }
    let allowed = pb_testbed::allowed_cpus()?;
    let cpus = Cpus {
        relay: *allowed.last().ok_or_else(|| anyhow!("no CPU to run on"))?,
        other: *allowed.first().ok_or_else(|| anyhow!("no CPU to run on"))?,
    };
    let progress = Progress::new("pb-perf relay", 1 + 7 * args.links.len());
    let mut rows = Vec::new();

    // Baseline on the relay's core.
    progress.step(&format!(
        "unwrap baseline on cpu {} for {:.1} s",
        cpus.relay, args.seconds
    ));
    let unwrap = {
        let load = build_load(4096, 1)?;
        thread::scope(|s| {
            s.spawn(|| {
                pb_testbed::pin_to_cpu(cpus.relay)?;
                baseline(&load, args.seconds)
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow!("baseline panicked")))
        })?
    };
    rows.push(row(
        "relay.unwrap_baseline",
        "pb-sphinx",
        &[
            ("format", Value::from("v2")),
            ("hops", Value::from(2)),
            ("batch", 32.into()),
        ],
        unwrap,
        "pkt/cpu-s",
    ));

    // The links together run a little under the baseline, so their queues stay full under
    // load: the relay then spends its core on forwarding, not on cover for empty slots.
    let total_rate = if args.link_rate > 0 {
        args.link_rate
    } else {
        ((unwrap * 0.9) as u32).max(100)
    };
    for &links in &args.links {
        let link_rate = (total_rate / links as u32).max(1);
        progress.step(&format!(
            "{links} link{}: building {} packets",
            if links == 1 { "" } else { "s" },
            args.packets
        ));
        let load = build_load(args.packets, links)?;
        for backend in ["af_xdp", "udp"] {
            let p = |load_kind: &str, rate: u32| {
                vec![
                    ("format", Value::from("v2")),
                    ("hops", Value::from(2)),
                    ("links", Value::from(links)),
                    ("link_rate", Value::from(rate)),
                    ("load", Value::from(load_kind)),
                ]
            };
            // Throughput: many packets in flight, the links saturated.
            progress.step(&format!(
                "{backend}, {links} links at {link_rate} pkt/s: saturated, {} in flight, {:.1} s",
                args.in_flight, args.seconds
            ));
            let saturated = Run {
                links,
                link_rate,
                in_flight: args.in_flight,
                seconds: args.seconds,
            };
            let (result, _) = measure(&load, backend, saturated, cpus)?;
            let ps = p("saturated", link_rate);
            let per_cpu = result.forwarded as f64 / result.cpu_secs.max(1e-9);
            rows.push(row(
                "relay.forward",
                backend,
                &ps,
                result.forwarded as f64 / result.wall_secs,
                "pkt/s",
            ));
            rows.push(row(
                "relay.forward_per_cpu",
                backend,
                &ps,
                per_cpu,
                "pkt/cpu-s",
            ));
            rows.push(row(
                "relay.forward_vs_unwrap",
                backend,
                &ps,
                per_cpu / unwrap,
                "ratio",
            ));
            slot_rows(&mut rows, backend, &ps, &result);
            // Latency: one packet at a time, so no queueing; what remains is the relay's own
            // work plus the delay queue's rounding up to the next 1 ms tick (the delay is 0).
            let latency = Run {
                in_flight: 1,
                seconds: (args.seconds / 2.0).max(0.5),
                ..saturated
            };
            progress.step(&format!(
                "{backend}, {links} links: latency, one packet at a time, {:.1} s",
                latency.seconds
            ));
            let (_, histogram) = measure(&load, backend, latency, cpus)?;
            for (q, name) in [(50.0, "p50"), (99.0, "p99"), (99.9, "p99.9")] {
                rows.push(row(
                    &format!("relay.latency_{name}"),
                    backend,
                    &p("one_in_flight", link_rate),
                    histogram.value_at_quantile(q / 100.0) as f64,
                    "us",
                ));
            }
            // Per 100 µs, so that histograms of different bucket widths compare.
            for (upper, share, width) in buckets(&histogram) {
                let mut p = p("one_in_flight", link_rate);
                p.push(("latency_us", upper.into()));
                rows.push(row(
                    "relay.latency_histogram",
                    backend,
                    &p,
                    share * 100.0 / width as f64,
                    "% of packets per 100 us",
                ));
            }
            // Idle: no packets, every slot of every link is cover.
            let idle = Run {
                link_rate: args.idle_link_rate,
                in_flight: 0,
                ..saturated
            };
            progress.step(&format!(
                "{backend}, {links} links at {} pkt/s: idle, {:.1} s",
                idle.link_rate, idle.seconds
            ));
            let (result, _) = measure(&load, backend, idle, cpus)?;
            slot_rows(&mut rows, backend, &p("idle", idle.link_rate), &result);
        }
    }
    Ok(rows)
}

/// The slot rows of one run: the shares of slots missed and carrying cover (as a fraction,
/// with four decimals: the bar is 0.001), and the packets dropped.
fn slot_rows(
    rows: &mut Vec<Measurement>,
    backend: &str,
    params: &[(&str, Value)],
    result: &RelayResult,
) {
    let fraction = |n: u64| {
        let f = n as f64 / result.slots.max(1) as f64;
        (f * 10_000.0).round() / 10_000.0
    };
    rows.push(report::row(
        "relay.slots_missed",
        backend,
        params,
        fraction(result.missed),
        "fraction",
    ));
    rows.push(report::row(
        "relay.slots_cover",
        backend,
        params,
        fraction(result.cover),
        "fraction",
    ));
    rows.push(row(
        "relay.slots",
        backend,
        params,
        result.slots as f64,
        "slots",
    ));
    rows.push(row(
        "relay.slots_missed_count",
        backend,
        params,
        result.missed as f64,
        "slots",
    ));
    rows.push(row(
        "relay.drops",
        backend,
        params,
        result.drops as f64,
        "packets",
    ));
    rows.push(row(
        "relay.cover_failures",
        backend,
        params,
        result.cover_failures as f64,
        "packets",
    ));
}

/// About this many buckets in a latency histogram.
const BUCKETS: u64 = 24;

/// The histogram `h` in about [`BUCKETS`] equal buckets from its fastest value to its 99.9th
/// percentile, each as (its upper bound, the share of all values in it in percent, its
/// width); the last bucket also holds the slowest 0.1%.
fn buckets(h: &Histogram<u64>) -> Vec<(u64, f64, u64)> {
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let lo = h.min();
    let hi = h.value_at_quantile(0.999).max(lo + 1);
    // A round width: 1, 2 or 5 times a power of ten.
    let raw = (hi - lo).div_ceil(BUCKETS).max(1);
    let mut width = 1;
    while width * 5 < raw {
        width *= 10;
    }
    let width = [width, width * 2, width * 5, width * 10]
        .into_iter()
        .find(|w| *w >= raw)
        .unwrap_or(raw);
    let start = lo / width * width;
    // Buckets from `start` until one reaches past `hi`; that last one takes the rest.
    let n = ((hi - start) / width + 1) as usize;
    let mut counts = vec![0u64; n];
    for v in h.iter_recorded() {
        let i = (v.value_iterated_to().saturating_sub(start) / width) as usize;
        counts[i.min(n - 1)] += v.count_at_value();
    }
    (0..n as u64)
        .zip(counts)
        .map(|(k, count)| {
            (
                start + (k + 1) * width,
                count as f64 * 100.0 / total as f64,
                width,
            )
        })
        .collect()
}

/// One measurement of `backend`: a fresh testbed and relay (and replay filter, so the load's
/// packets are fresh to it), the generator keeping `run.in_flight` packets ahead of the sink
/// (none: the relay idles) for `run.seconds` after a half-second warm-up.
fn measure(
    load: &Load,
    backend: &str,
    run: Run,
    cpus: Cpus,
) -> anyhow::Result<(RelayResult, Histogram<u64>)> {
    let Run {
        in_flight, seconds, ..
    } = run;
    let mut next_packet = 0usize;
    let bed = pb_testbed::two_node("relay-bench")?;
    let replay = SharedReplayFilter::new(load.packets.len() * 2).map_err(|e| anyhow!("{e}"))?;
    replay.prepare(EPOCH);
    let (measuring, stop, ready) = (
        AtomicBool::new(false),
        AtomicBool::new(false),
        AtomicBool::new(false),
    );
    let sent_at: Vec<AtomicU64> = (0..load.packets.len()).map(|_| AtomicU64::new(0)).collect();
    let received = AtomicU64::new(0);
    let origin = Instant::now();
    let flags = Flags {
        measuring: &measuring,
        stop: &stop,
        ready: &ready,
    };
    let outcome = thread::scope(|s| -> anyhow::Result<_> {
        let relay_thread = s.spawn(|| relay(&bed, backend, run, cpus, &flags, &replay));
        let sink_socket = bed
            .b
            .in_netns(|| UdpSocket::bind((bed.link.b_v4, SINK_PORT)))??;
        sink_socket.set_read_timeout(Some(Duration::from_millis(10)))?;
        let (stop_flag, measuring_flag, received_count, sent_times) =
            (&stop, &measuring, &received, &sent_at);
        let sink = s.spawn(move || -> anyhow::Result<Histogram<u64>> {
            pb_testbed::pin_to_cpu(cpus.other)?;
            let mut h =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow!("{e}"))?;
            let mut buf = [0u8; 2048];
            while !stop_flag.load(Ordering::Acquire) {
                let Ok(n) = sink_socket.recv(&mut buf) else {
                    continue;
                };
                if n != PACKET_LEN {
                    continue;
                }
                let mut hash = [0u8; 16];
                hash.copy_from_slice(&blake3::hash(&buf[..n]).as_bytes()[..16]);
                if let Some(&i) = load.expected.get(&hash) {
                    received_count.fetch_add(1, Ordering::Relaxed);
                    let sent = sent_times[i as usize].load(Ordering::Relaxed);
                    let now = origin.elapsed().as_nanos() as u64;
                    if measuring_flag.load(Ordering::Relaxed) && sent > 0 {
                        let _ = h.record((now.saturating_sub(sent) / 1000).max(1));
                    }
                }
            }
            Ok(h)
        });
        let client = bed.b.in_netns(|| UdpSocket::bind((bed.link.b_v4, 0)))??;
        let target = SocketAddr::new(bed.link.a_v4.into(), PORT);
        let waiting = Instant::now();
        while !ready.load(Ordering::Acquire) {
            if waiting.elapsed() > Duration::from_secs(40) {
                stop.store(true, Ordering::Release);
                return Err(anyhow!("the relay did not start"));
            }
            thread::sleep(Duration::from_millis(10));
        }
        let warmup = Instant::now();
        let mut sent = 0u64;
        let mut measure_start = None;
        let mut stalled = Instant::now();
        if in_flight == 0 {
            // Idle: every slot is cover.
            thread::sleep(Duration::from_millis(500));
            measuring.store(true, Ordering::Release);
            thread::sleep(Duration::from_secs_f64(seconds));
        }
        while in_flight > 0 && next_packet < load.packets.len() {
            if measure_start.is_none() && warmup.elapsed() > Duration::from_millis(500) {
                measuring.store(true, Ordering::Release);
                measure_start = Some(Instant::now());
            }
            if measure_start.is_some_and(|m| m.elapsed().as_secs_f64() >= seconds) {
                break;
            }
            if sent >= received.load(Ordering::Relaxed) + in_flight as u64 {
                if stalled.elapsed() > Duration::from_millis(250) {
                    // Packets lost on the way (a full socket): let the window move on.
                    received.fetch_add(1, Ordering::Relaxed);
                    stalled = Instant::now();
                }
                thread::yield_now();
                continue;
            }
            stalled = Instant::now();
            sent_at[next_packet].store(origin.elapsed().as_nanos() as u64, Ordering::Relaxed);
            client.send_to(&load.packets[next_packet], target)?;
            next_packet += 1;
            sent += 1;
        }
        if next_packet >= load.packets.len() {
            eprintln!(
                "pb-perf relay: {backend}: ran out of packets; raise --packets for longer runs"
            );
        }
        measuring.store(true, Ordering::Release);
        thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::Release);
        let result = relay_thread
            .join()
            .map_err(|_| anyhow!("relay panicked"))??;
        let histogram = sink.join().map_err(|_| anyhow!("sink panicked"))??;
        Ok((result, histogram))
    });
    drop(bed);
    outcome
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_round_and_add_up_to_every_packet() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 0..2000u64 {
            h.record(1000 + v / 10).unwrap();
        }
        // One slow packet in 2001: beyond the 99.9th percentile, in the last bucket.
        h.record(50_000).unwrap();
        let b = buckets(&h);
        let total: f64 = b.iter().map(|x| x.1).sum();
        assert!((total - 100.0).abs() < 1e-9, "{b:?}");
        assert_eq!((b[0].0, b[0].2), (1010, 10), "width 10 from 1000: {b:?}");
        assert!(b.len() <= BUCKETS as usize + 2, "{b:?}");
        assert!(b.last().unwrap().1 > 0.0, "{b:?}");
        assert!(buckets(&Histogram::<u64>::new(3).unwrap()).is_empty());
    }
}
