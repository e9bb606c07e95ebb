//! `pb-perf sphinx`: PB-Sphinx unwrap (per format and batch size) and creation per second on
//! one pinned core, side by side in the same run with Nym's `sphinx-packet` crate on equal
//! settings: the same route length, packets of the closest size, the same CPU. Also the
//! X25519 operation itself, in `pb-x25519-batch` SIMD lanes and on curve25519-dalek's ladder, which
//! is what bounds the unwrap rate.
//!
//! Then the unwrap rate against the number of cores (`sphinx.unwrap_cores`): every core
//! unwraps on its own, as the relay's per-core pipelines do, for both implementations.
//!
//! Both sides process distinct valid packets for the first hop; each PB-Sphinx iteration
//! copies the packet into a work buffer and unwraps it in place, each Nym iteration parses
//! the bytes and processes them (its API). Replay checking is left out on both sides (Nym's
//! `process` does none; PhantomBand's relay filter is the dataplane's).

use std::{
    hint::black_box,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use pb_sphinx::{
    DelayMs, DropReason, Epoch, EpochKey, Format, Hop, MailboxId, NodeId, NodeKeys, PACKET_LEN,
    Processed, ReplayFilter, ReplayTag, create_packet_with, process, process_batch,
};
use serde_json::Value;
use sphinx_packet::{
    SphinxPacket,
    constants::{DESTINATION_ADDRESS_LENGTH, IDENTIFIER_LENGTH, NODE_ADDRESS_LENGTH},
    header::{HEADER_SIZE, delays},
    packet::builder::SphinxPacketBuilder,
    route::{Destination, DestinationAddressBytes, Node, NodeAddressBytes},
};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::{
    progress::Progress,
    report::{Measurement, row},
};

/// Settings of one `pb-perf sphinx` run.
#[derive(Clone, Debug)]
pub struct SphinxArgs {
    /// Seconds each measurement runs.
    pub seconds: f64,
    /// Route length.
    pub hops: usize,
    /// Batch sizes for PB-Sphinx unwrap.
    pub batches: Vec<usize>,
    /// Core counts for the unwrap rate against cores (empty: 1 to every core allowed).
    pub cores: Vec<usize>,
}

/// Batch size of the per-core runs (the relay's).
const CORES_BATCH: usize = 32;

/// Operations per second of `work` run on each of `cpus` at once for `seconds`: each thread
/// is pinned to its CPU and calls `work` until told to stop; `work` returns how many
/// operations it did.
fn on_cores(
    cpus: &[usize],
    seconds: f64,
    work: &(dyn Fn(&AtomicBool) -> usize + Sync),
) -> anyhow::Result<f64> {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let counts = thread::scope(|scope| {
        let threads: Vec<_> = cpus
            .iter()
            .map(|&cpu| {
                let stop = &stop;
                scope.spawn(move || -> anyhow::Result<usize> {
                    pb_testbed::pin_to_cpu(cpu)?;
                    Ok(work(stop))
                })
            })
            .collect();
        thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow!("a thread panicked")))
            })
            .collect::<anyhow::Result<Vec<usize>>>()
    })?;
    Ok(counts.iter().sum::<usize>() as f64 / start.elapsed().as_secs_f64())
}

/// Distinct packets cycled through, so no two consecutive unwraps see the same bytes.
const DISTINCT: usize = 256;

/// Accepts everything: replay filtering is not what is measured (also `pb-perf relay`'s
/// baseline).
pub(crate) struct NoReplayFilter;

impl ReplayFilter for NoReplayFilter {
    fn check_and_insert(&mut self, _: Epoch, _: &ReplayTag) -> bool {
        false
    }
}

/// One measurement: `step(i)` performs `per_call` operations on its `i`-th call.
struct Bench<'a> {
    bench: &'static str,
    implementation: &'static str,
    params: Vec<(&'static str, Value)>,
    per_call: usize,
    step: Box<dyn FnMut(usize) + 'a>,
    rates: Vec<f64>,
    calls: usize,
}

/// PB-Sphinx unwrap of `batch` packets at a time, as a relay core does: each call copies the
/// next packets into its work buffers and unwraps them in place.
struct Unwrapper {
    work: Vec<[u8; PACKET_LEN]>,
    results: Vec<Result<Processed, DropReason>>,
}

impl Unwrapper {
    fn new(batch: usize) -> Self {
        Self {
            work: vec![[0u8; PACKET_LEN]; batch],
            results: vec![Err(DropReason::WrongLength); batch],
        }
    }

    /// Unwraps `packets[first..]` (cycling) for one batch; returns how many failed.
    fn unwrap(&mut self, packets: &[[u8; PACKET_LEN]], first: usize, keys: &NodeKeys) -> usize {
        for (j, w) in self.work.iter_mut().enumerate() {
            *w = packets[(first + j) % packets.len()];
        }
        if let [one] = self.work.as_mut_slice() {
            self.results[0] = process(one, keys, &mut NoReplayFilter);
        } else {
            let mut refs: Vec<&mut [u8]> = self.work.iter_mut().map(|w| w.as_mut_slice()).collect();
            process_batch(&mut refs, keys, &mut NoReplayFilter, &mut self.results);
        }
        black_box(&self.work);
        self.results
            .iter()
            .filter(|r| {
                !matches!(
                    r,
                    Ok(Processed::Forward { .. }) | Ok(Processed::Deliver { .. })
                )
            })
            .count()
    }
}

/// Nym's parse and process of one packet (its API); whether it succeeded.
fn nym_unwrap(bytes: &[u8], secret: &StaticSecret) -> bool {
    SphinxPacket::from_bytes(bytes)
        .and_then(|p| p.process(secret))
        .map(black_box)
        .is_ok()
}

/// Rounds each measurement is split into. Rounds of all measurements alternate, so a slow
/// spell of a shared VM hits every implementation alike; the median round is reported.
const ROUNDS: usize = 5;

impl Bench<'_> {
    /// Runs one round of `seconds` and records its rate.
    fn round(&mut self, seconds: f64) {
        for _ in 0..2 {
            (self.step)(self.calls);
            self.calls += 1;
        }
        let budget = Duration::from_secs_f64(seconds);
        let start = Instant::now();
        let mut calls = 0usize;
        while start.elapsed() < budget {
            for _ in 0..4 {
                (self.step)(self.calls);
                self.calls += 1;
                calls += 1;
            }
        }
        self.rates
            .push((calls * self.per_call) as f64 / start.elapsed().as_secs_f64());
    }

    fn median(&self) -> f64 {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r.get(r.len() / 2).copied().unwrap_or(0.0)
    }
}

/// Runs every measurement and returns them.
pub fn run(args: &SphinxArgs) -> anyhow::Result<Vec<Measurement>> {
    if !(1..=pb_sphinx::MAX_HOPS).contains(&args.hops) {
        return Err(anyhow!("--hops must be 1 to {}", pb_sphinx::MAX_HOPS));
    }
    let allowed = pb_testbed::allowed_cpus().unwrap_or_else(|_| vec![0]);
    let cpu = allowed.last().copied().unwrap_or(0);
    let cores: Vec<usize> = if args.cores.is_empty() {
        (1..=allowed.len()).collect()
    } else {
        args.cores.clone()
    };
    if let Some(c) = cores.iter().find(|c| **c == 0 || **c > allowed.len()) {
        return Err(anyhow!(
            "--cores {c}: this process may run on {} CPUs ({allowed:?})",
            allowed.len()
        ));
    }
    pb_testbed::pin_to_cpu(cpu).context("pinning to one core")?;
    let mut rows = Vec::new();

    // --- PhantomBand ---
    let epoch = Epoch(1);
    let keys: Vec<NodeKeys> = (0..args.hops)
        .map(|i| {
            let secret: [u8; 32] = std::array::from_fn(|j| (i * 31 + j * 7 + 1) as u8);
            NodeKeys {
                current: EpochKey::from_secret(epoch, secret),
                previous: None,
                format: None,
            }
        })
        .collect();
    let route: Vec<Hop> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| Hop {
            node: NodeId([i as u8; 16]),
            public_key: k.current.public_key(),
            delay: DelayMs(10),
        })
        .collect();
    let message = [13u8; 16];
    let mailbox = MailboxId([3; 16]);
    let mut formats = Vec::new();
    for format in Format::ALL {
        let mut packets = vec![[0u8; PACKET_LEN]; DISTINCT];
        for (i, p) in packets.iter_mut().enumerate() {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            create_packet_with(format, p, epoch, &route, mailbox, &message, &seed)
                .map_err(|e| anyhow!("{e}"))?;
        }
        formats.push((format, Value::from(format_name(format)), packets));
    }
    let hops_v = Value::from(args.hops);
    let len_v = Value::from(PACKET_LEN);
    let failures = std::cell::Cell::new(0usize);

    // --- Nym's sphinx-packet, on equal settings ---
    let nym_keys: Vec<(StaticSecret, PublicKey)> = (0..args.hops)
        .map(|_| {
            let sk = StaticSecret::random();
            let pk = PublicKey::from(&sk);
            (sk, pk)
        })
        .collect();
    let nym_route: Vec<Node> = nym_keys
        .iter()
        .enumerate()
        .map(|(i, (_, pk))| {
            Node::new(
                NodeAddressBytes::from_bytes([i as u8; NODE_ADDRESS_LENGTH]),
                *pk,
            )
        })
        .collect();
    let nym_delays = delays::generate_from_average_duration(args.hops, Duration::from_millis(10));
    let destination = Destination::new(
        DestinationAddressBytes::from_bytes([3; DESTINATION_ADDRESS_LENGTH]),
        [4; IDENTIFIER_LENGTH],
    );
    // The closest packet size: header plus payload making 1452 bytes.
    let builder = SphinxPacketBuilder::new().with_payload_size(PACKET_LEN - HEADER_SIZE);
    let nym_packets: Vec<Vec<u8>> = (0..DISTINCT)
        .map(|_| {
            builder
                .build_packet(message, &nym_route, &destination, &nym_delays)
                .map(|p| p.to_bytes())
        })
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!("nym sphinx-packet: {e:?}"))?;
    let nym_len = Value::from(nym_packets[0].len());

    // The X25519 operation alone: 16 independent (scalar, point) pairs per call, as a batch
    // of 16 packets needs.
    let x_scalars: Vec<[u8; 32]> = (0..16u8).map(|i| [i.wrapping_mul(29) | 1; 32]).collect();
    let x_points: Vec<[u8; 32]> = formats[0].2[..16]
        .iter()
        .map(|p| std::array::from_fn(|j| p[pb_sphinx::ALPHA_AT + j]))
        .collect();
    let mut benches: Vec<Bench<'_>> = Vec::new();
    for ((_, format_v, packets), &batch) in formats
        .iter()
        .flat_map(|f| args.batches.iter().map(move |b| (f, b)))
    {
        let mut unwrapper = Unwrapper::new(batch);
        let (keys, failures) = (&keys[0], &failures);
        benches.push(Bench {
            bench: "sphinx.unwrap",
            implementation: "phantomband",
            params: vec![
                ("format", format_v.clone()),
                ("batch", batch.into()),
                ("hops", hops_v.clone()),
                ("packet_len", len_v.clone()),
            ],
            per_call: batch,
            step: Box::new(move |call| {
                let bad = unwrapper.unwrap(packets, call * batch, keys);
                failures.set(failures.get() + bad);
            }),
            rates: Vec::new(),
            calls: 0,
        });
    }
    for (format, format_v, _) in &formats {
        let mut out = [0u8; PACKET_LEN];
        let (route, format) = (&route, *format);
        benches.push(Bench {
            bench: "sphinx.create",
            implementation: "phantomband",
            params: vec![
                ("format", format_v.clone()),
                ("hops", hops_v.clone()),
                ("packet_len", len_v.clone()),
            ],
            per_call: 1,
            step: Box::new(move |call| {
                let mut seed = [7u8; 32];
                seed[..8].copy_from_slice(&(call as u64).to_le_bytes());
                let _ = black_box(create_packet_with(
                    format, &mut out, epoch, route, mailbox, &message, &seed,
                ));
            }),
            rates: Vec::new(),
            calls: 0,
        });
    }
    let lanes = pb_x25519_batch::Backend::detect();
    for (implementation, backend) in [
        (lanes_name(lanes), lanes),
        ("dalek-ladder", pb_x25519_batch::Backend::Portable),
    ] {
        let (x_scalars, x_points) = (&x_scalars, &x_points);
        let mut out = vec![[0u8; 32]; 16];
        benches.push(Bench {
            bench: "x25519",
            implementation,
            params: vec![("batch", 16.into())],
            per_call: 16,
            step: Box::new(move |_| {
                pb_x25519_batch::x25519_many_with(backend, x_scalars, x_points, &mut out);
                black_box(&out);
            }),
            rates: Vec::new(),
            calls: 0,
        });
    }
    {
        let (nym_packets, secret, failures) = (&nym_packets, &nym_keys[0].0, &failures);
        benches.push(Bench {
            bench: "sphinx.unwrap",
            implementation: "nym-sphinx",
            params: vec![
                ("batch", 1.into()),
                ("hops", hops_v.clone()),
                ("packet_len", nym_len.clone()),
            ],
            per_call: 1,
            step: Box::new(move |call| {
                if !nym_unwrap(&nym_packets[call % DISTINCT], secret) {
                    failures.set(failures.get() + 1);
                }
            }),
            rates: Vec::new(),
            calls: 0,
        });
    }
    {
        let (builder, nym_route, destination, nym_delays) =
            (&builder, &nym_route, &destination, &nym_delays);
        benches.push(Bench {
            bench: "sphinx.create",
            implementation: "nym-sphinx",
            params: vec![("hops", hops_v.clone()), ("packet_len", nym_len.clone())],
            per_call: 1,
            step: Box::new(move |_| {
                let _ =
                    black_box(builder.build_packet(message, nym_route, destination, nym_delays));
            }),
            rates: Vec::new(),
            calls: 0,
        });
    }

    let progress = Progress::new("pb-perf sphinx", ROUNDS * benches.len() + 2 * cores.len());
    let round_seconds = args.seconds / ROUNDS as f64;
    for round in 1..=ROUNDS {
        for bench in &mut benches {
            progress.step(&format!(
                "round {round}/{ROUNDS}: {} {} ({round_seconds:.2} s on cpu {cpu})",
                bench.bench, bench.implementation
            ));
            bench.round(round_seconds);
        }
    }
    if failures.get() > 0 {
        return Err(anyhow!(
            "{} unwraps failed during the benchmark",
            failures.get()
        ));
    }
    for b in &benches {
        let unit = if b.bench == "x25519" { "op/s" } else { "pkt/s" };
        rows.push(row(
            b.bench,
            b.implementation,
            &b.params,
            b.median().round(),
            unit,
        ));
    }
    drop(benches);

    // Unwrap rate against cores: every thread unwraps its own packets, in batches as a relay
    // core does; Nym's one at a time (its API).
    let (_, format_v, packets) = formats.last().ok_or_else(|| anyhow!("no packet format"))?;
    let bad = AtomicUsize::new(0);
    let phantomband = |stop: &AtomicBool| {
        let mut unwrapper = Unwrapper::new(CORES_BATCH);
        let mut done = 0;
        while !stop.load(Ordering::Relaxed) {
            bad.fetch_add(unwrapper.unwrap(packets, done, &keys[0]), Ordering::Relaxed);
            done += CORES_BATCH;
        }
        done
    };
    let secret = &nym_keys[0].0;
    let nym = |stop: &AtomicBool| {
        let mut done = 0;
        while !stop.load(Ordering::Relaxed) {
            if !nym_unwrap(&nym_packets[done % DISTINCT], secret) {
                bad.fetch_add(1, Ordering::Relaxed);
            }
            done += 1;
        }
        done
    };
    let core_seconds = (args.seconds / 2.0).max(0.2);
    for &n in &cores {
        let cpus = &allowed[allowed.len() - n..];
        for (implementation, work, params) in [
            (
                "phantomband",
                &phantomband as &(dyn Fn(&AtomicBool) -> usize + Sync),
                vec![
                    ("cores", n.into()),
                    ("format", format_v.clone()),
                    ("batch", CORES_BATCH.into()),
                    ("hops", hops_v.clone()),
                ],
            ),
            (
                "nym-sphinx",
                &nym,
                vec![
                    ("cores", n.into()),
                    ("batch", 1.into()),
                    ("hops", hops_v.clone()),
                ],
            ),
        ] {
            progress.step(&format!(
                "{implementation} unwrap on {n} core(s) ({core_seconds:.1} s)"
            ));
            let rate = on_cores(cpus, core_seconds, work)?;
            rows.push(row(
                "sphinx.unwrap_cores",
                implementation,
                &params,
                rate.round(),
                "pkt/s",
            ));
        }
    }
    if bad.load(Ordering::Relaxed) > 0 {
        return Err(anyhow!(
            "{} unwraps failed on several cores",
            bad.load(Ordering::Relaxed)
        ));
    }
    Ok(rows)
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::V1 => "v1",
        Format::V2 => "v2",
    }
}

fn lanes_name(backend: pb_x25519_batch::Backend) -> &'static str {
    match backend {
        pb_x25519_batch::Backend::Avx2x4 => "pb-lanes-avx2x4",
        pb_x25519_batch::Backend::Portable => "pb-lanes-portable",
    }
}
