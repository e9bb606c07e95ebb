//! A mix that drops real packets but passes loops is caught by loops shaped like real
//! traffic, and was not by the old shapes. In-memory network, virtual clock.
//!
//! The network is five cyclic layers: a gateway, a layer-1 mix, two layer-2 mixes (one of
//! them the attacker), a layer-3 mix and an exit; each relay links to every node of the next
//! layer. A client sends real packets through all layers, with exponential per-hop delays
//! (mean 20 ms), as pb-client does. The attacker is modified relay code: it unwraps what it
//! gets, drops one in ten of the packets it takes for real and forwards the rest at once.
//! Under the old loop shapes (no delay at any hop, always the first node of a layer) it takes
//! a packet with no delay for a loop and passes it: every link's loop statistics stay clean.
//! Under the new shapes (a node drawn per layer, exponential delays like real packets) it
//! cannot tell, and the link to it loses about 10% of its loops, above
//! [`LOOP_LOSS_ALERT`], within the 45 s run (about 360 loops on that link at 8 a second).
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::collections::HashMap;

use common::{
    Delivered, FORMAT, MAILBOX, Recorder, Sim, endpoint, hop, key, keys, ms, packet, relay_addr,
    send, text,
};
use pb_io::{Packet, PacketIo, mem::MemIo};
use pb_mix::{LOOP_LOSS_ALERT, LoopMonitor, LoopStats, SharedReplayFilter, Time};
use pb_pipeline::{LoopCover, LoopPlan, Neighbour, Pipeline, PipelineConfig};
use pb_sphinx::{DelayMs, Epoch, Hop, MailboxId, MemoryReplayFilter, Processed, process};

const EPOCH: Epoch = Epoch(1);
/// The relays by layer: 0 the gateway, 1 a mix, 2 and 3 the layer-2 mixes (3 is the
/// attacker), 4 a mix, 5 the exit.
const LAYERS: [&[u8]; 5] = [&[0], &[1], &[2, 3], &[4], &[5]];
const ATTACKER: u8 = 3;
const RATE: u32 = 100;
const LOOP_RATE: u32 = 8;
const MEAN_DELAY: u32 = 20;
const RUN_MS: u64 = 45_000;

fn layer_of(relay: u8) -> usize {
    LAYERS.iter().position(|l| l.contains(&relay)).unwrap()
}

fn relay_hop(relay: u8) -> Hop {
    hop(relay, EPOCH, 0)
}

fn loop_mailbox(relay: u8) -> MailboxId {
    MailboxId([0xf0 + relay; 16])
}

/// A deterministic stream of uniform draws in [0, 1).
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> f64 {
        self.0 += 1;
        let h = blake3::hash(&self.0.to_le_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.as_bytes()[..8]);
        (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn exponential_ms(&mut self, mean: u32) -> u32 {
        (-(1.0 - self.next()).ln() * f64::from(mean)) as u32
    }
}

/// The attacker: unwraps every packet with its keys; drops one in ten of those it takes for
/// real (a delay at its hop), forwards everything else at once; swallows what is delivered
/// to it.
struct Attacker {
    io: MemIo,
    replay: MemoryReplayFilter,
    draws: Draws,
    dropped_real: u64,
    passed: u64,
}

impl Attacker {
    fn tick(&mut self) {
        let keys = keys(key(ATTACKER, EPOCH), None);
        let mut got: Vec<Packet> = Vec::new();
        while self
            .io
            .recv(&mut got, 64, std::time::Duration::ZERO)
            .unwrap()
            > 0
        {}
        let mut out = Vec::new();
        for p in &got {
            let mut bytes = self.io.payload(p).to_vec();
            let Ok(Processed::Forward { next, delay, .. }) =
                process(&mut bytes, &keys, &mut self.replay)
            else {
                continue;
            };
            let looks_real = delay != DelayMs(0);
            if looks_real && self.draws.next() < 0.1 {
                self.dropped_real += 1;
                continue;
            }
            self.passed += 1;
            let to = (0..6u8).find(|r| relay_hop(*r).node == next).unwrap();
            out.push((relay_addr(to), bytes));
        }
        self.io.release(&mut got);
        for (to, bytes) in out {
            send(&mut self.io, to, &bytes);
        }
    }
}

/// What one run left: each honest relay's loop counters per link (by neighbour), the
/// attacker's counters, and the real packets the exit got.
struct Outcome {
    loops: HashMap<(u8, u8), LoopStats>,
    dropped_real: u64,
    passed: u64,
    delivered: usize,
}

/// The 45-second run, loops in the new shapes (`real_shapes`) or the old ones.
fn run(real_shapes: bool) -> Outcome {
    let honest: Vec<u8> = (0..6).filter(|r| *r != ATTACKER).collect();
    let filters: Vec<SharedReplayFilter> = honest
        .iter()
        .map(|_| {
            let f = SharedReplayFilter::new(1 << 20).unwrap();
            f.prepare(EPOCH);
            f
        })
        .collect();
    let delivered = Delivered::default();
    let mut sim = Sim::new(5);
    sim.net.set_latency(Time::MS);
    sim.net.set_recording(false);
    let next_layer = |r: u8| LAYERS[(layer_of(r) + 1) % LAYERS.len()];
    for (n, &r) in honest.iter().enumerate() {
        let neighbours: Vec<u8> = next_layer(r).to_vec();
        let config = PipelineConfig {
            neighbours: neighbours
                .iter()
                .map(|j| Neighbour {
                    node: relay_hop(*j).node,
                    addr: relay_addr(*j),
                })
                .collect(),
            loop_mailbox: loop_mailbox(r),
            ..common::config(Vec::new(), RATE)
        };
        // The layers between the neighbour and this relay, around the cycle.
        let between = |first: u8| {
            let mut layers = Vec::new();
            let mut l = (layer_of(first) + 1) % LAYERS.len();
            while l != layer_of(r) {
                layers.push(LAYERS[l]);
                l = (l + 1) % LAYERS.len();
            }
            layers
        };
        let plans = neighbours
            .iter()
            .map(|first| {
                let via = between(*first);
                Some(if real_shapes {
                    LoopPlan {
                        first: relay_hop(*first),
                        via: via
                            .iter()
                            .map(|l| l.iter().map(|j| relay_hop(*j)).collect())
                            .collect(),
                        weights: Vec::new(),
                        back: Some(relay_hop(r)),
                    }
                } else {
                    // The old shapes: the first node of each layer.
                    LoopPlan {
                        first: relay_hop(*first),
                        via: via.iter().map(|l| vec![relay_hop(l[0])]).collect(),
                        weights: Vec::new(),
                        back: Some(relay_hop(r)),
                    }
                })
            })
            .collect();
        let monitor =
            LoopMonitor::new([r + 1; 32], neighbours.len(), 4096, Time(2 * Time::SECOND)).unwrap();
        let mut cover = LoopCover::new(
            FORMAT,
            EPOCH,
            Vec::new(),
            loop_mailbox(r),
            LOOP_RATE,
            monitor,
            [r + 9; 32],
        )
        .with_mean_delay(DelayMs(if real_shapes { MEAN_DELAY } else { 0 }));
        cover.set_plans(EPOCH, plans, Time(0));
        let io = sim.net.bind(&endpoint(relay_addr(r))).unwrap();
        sim.relays.push(
            Pipeline::new(
                io,
                &config,
                keys(key(r, EPOCH), None),
                &filters[n],
                Box::new(cover),
                Box::new(Recorder(delivered.clone())),
                sim.now(),
            )
            .unwrap(),
        );
    }
    let mut attacker = Attacker {
        io: sim.net.bind(&endpoint(relay_addr(ATTACKER))).unwrap(),
        replay: MemoryReplayFilter::default(),
        draws: Draws(1 << 40),
        dropped_real: 0,
        passed: 0,
    };
    let mut client = sim
        .net
        .bind(&endpoint("10.0.9.9:0".parse().unwrap()))
        .unwrap();
    let mut draws = Draws(0);
    // Real packets: 20 a second, gateway to exit, a node per layer, exponential delays.
    let mut next_real = 0u64;
    let mut sent = 0u32;
    for t in 1..=RUN_MS {
        sim.run_until(ms(t));
        attacker.tick();
        if t >= next_real {
            let route: Vec<Hop> = LAYERS
                .iter()
                .map(|layer| {
                    let pick = layer[(draws.next() * layer.len() as f64) as usize];
                    hop(pick, EPOCH, draws.exponential_ms(MEAN_DELAY))
                })
                .collect();
            let seed = *blake3::hash(&sent.to_le_bytes()).as_bytes();
            let p = packet(EPOCH, &route, MAILBOX, &text(sent), seed);
            send(&mut client, relay_addr(0), &p);
            sent += 1;
            next_real = t + 50;
        }
    }
    let mut loops = HashMap::new();
    for (n, &r) in honest.iter().enumerate() {
        for (l, j) in next_layer(r).iter().enumerate() {
            loops.insert((r, *j), sim.relays[n].loop_stats(l));
        }
    }
    let delivered = delivered.lock().unwrap().len();
    Outcome {
        loops,
        dropped_real: attacker.dropped_real,
        passed: attacker.passed,
        delivered,
    }
}

#[test]
fn a_mix_dropping_real_packets_shows_in_loops_shaped_like_real_traffic() {
    let old = run(false);
    let new = run(true);
    for (name, outcome) in [("old shapes", &old), ("real shapes", &new)] {
        // The attack ran: it dropped real packets and passed others.
        assert!(
            outcome.dropped_real > 20 && outcome.passed > 400,
            "{name}: dropped {} passed {}",
            outcome.dropped_real,
            outcome.passed
        );
        assert!(outcome.delivered > 600, "{name}: {}", outcome.delivered);
        // Every link sent loops, and loops came back on every one.
        for (link, s) in &outcome.loops {
            assert!(s.sent > 250 && s.returned > 200, "{name}: {link:?} {s:?}");
        }
    }
    // The control: the old shapes told the attacker which packets were loops, so every
    // link's loops came back, the link to the attacker's included.
    for (link, s) in &old.loops {
        assert_eq!(s.lost, 0, "old shapes, link {link:?}: {s:?}");
        assert!(!s.alarming());
    }
    // The new shapes: the link into the attacker loses about a tenth of its loops, above
    // the threshold; a link whose loops never pass the attacker loses none.
    let into_attacker = new.loops[&(1, ATTACKER)];
    let loss = into_attacker.loss().unwrap();
    assert!(
        into_attacker.alarming() && loss > LOOP_LOSS_ALERT,
        "link into the attacker: {into_attacker:?}"
    );
    let clean = new.loops[&(2, 4)];
    assert_eq!(
        clean.lost, 0,
        "a loop from layer 2 never passes layer 2: {clean:?}"
    );
    assert!(!clean.alarming());
}
