//! `pb-perf sphinx`: PB-Sphinx unwrap (per format and batch size) and creation per second on
//! one pinned core, side by side in the same run with Nym's `sphinx-packet` crate on equal
//! settings: the same route length, packets of the closest size, the same CPU. Also the
//! X25519 operation itself, in `pb-lanes` SIMD lanes and on curve25519-dalek's ladder, which
//! is what bounds the unwrap rate.
//!
//! Both sides process distinct valid packets for the first hop; each PB-Sphinx iteration
//! copies the packet into a work buffer and unwraps it in place, each Nym iteration parses
//! the bytes and processes them (its API). Replay checking is left out on both sides (Nym's
//! `process` does none; PhantomBand's relay filter is the dataplane's).

use std::{
    hint::black_box,
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

use crate::report::{Measurement, row};

/// Settings of one `pb-perf sphinx` run.
#[derive(Clone, Debug)]
pub struct SphinxArgs {
    /// Seconds each measurement runs.
    pub seconds: f64,
    /// Route length.
    pub hops: usize,
    /// Batch sizes for PB-Sphinx unwrap.
    pub batches: Vec<usize>,
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
    let cpu = pb_testbed::allowed_cpus()
        .ok()
        .and_then(|c| c.last().copied())
        .unwrap_or(0);
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
        let mut work = vec![[0u8; PACKET_LEN]; batch];
        let mut results = vec![Err(DropReason::WrongLength); batch];
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
                for (j, w) in work.iter_mut().enumerate() {
                    *w = packets[(call * batch + j) % DISTINCT];
                }
                if batch == 1 {
                    results[0] = process(&mut work[0], keys, &mut NoReplayFilter);
                } else {
                    let mut refs: Vec<&mut [u8]> =
                        work.iter_mut().map(|w| w.as_mut_slice()).collect();
                    process_batch(&mut refs, keys, &mut NoReplayFilter, &mut results);
                }
                let bad = results
                    .iter()
                    .filter(|r| {
                        !matches!(
                            r,
                            Ok(Processed::Forward { .. }) | Ok(Processed::Deliver { .. })
                        )
                    })
                    .count();
                failures.set(failures.get() + bad);
                black_box(&work);
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
    let lanes = pb_lanes::Backend::detect();
    for (implementation, backend) in [
        (lanes_name(lanes), lanes),
        ("dalek-ladder", pb_lanes::Backend::Portable),
    ] {
        let (x_scalars, x_points) = (&x_scalars, &x_points);
        let mut out = vec![[0u8; 32]; 16];
        benches.push(Bench {
            bench: "x25519",
            implementation,
            params: vec![("batch", 16.into())],
            per_call: 16,
            step: Box::new(move |_| {
                pb_lanes::x25519_many_with(backend, x_scalars, x_points, &mut out);
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
                match SphinxPacket::from_bytes(&nym_packets[call % DISTINCT])
                    .and_then(|p| p.process(secret))
                {
                    Ok(processed) => {
                        black_box(processed);
                    }
                    Err(_) => failures.set(failures.get() + 1),
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

    let round_seconds = args.seconds / ROUNDS as f64;
    for round in 1..=ROUNDS {
        eprintln!(
            "pb-perf sphinx: round {round}/{ROUNDS}: {} measurements of {round_seconds:.2}s on cpu {cpu}",
            benches.len()
        );
        for bench in &mut benches {
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
    Ok(rows)
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::V1 => "v1",
        Format::V2 => "v2",
    }
}

fn lanes_name(backend: pb_lanes::Backend) -> &'static str {
    match backend {
        pb_lanes::Backend::Avx2x4 => "pb-lanes-avx2x4",
        pb_lanes::Backend::Portable => "pb-lanes-portable",
    }
}
