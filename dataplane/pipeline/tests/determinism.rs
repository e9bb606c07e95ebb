//! The same seeded scenario, run twice on the in-memory network, gives byte-identical
//! per-link transmit schedules; another seed gives others. Everything random in the scenario
//! (the network's losses, the client's routes, send times and packet randomness, the cover
//! and loop keys) comes from the seed; nothing reads a clock or the OS's randomness.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::{collections::BTreeMap, net::SocketAddr};

use common::{
    Delivered, FORMAT, MAILBOX, Recorder, Sim, endpoint, hop, key, keys, ms, packet, relay_addr,
    send, text,
};
use pb_io::mem::{Fate, NetStats};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{LoopCover, Neighbour, Pipeline, PipelineConfig};
use pb_sphinx::{Epoch, Hop, MailboxId};

const EPOCH: Epoch = Epoch(1);
const RELAYS: u8 = 4;
const RATE: u32 = 100;
const PACKETS: u32 = 60;
const LOSS: f64 = 0.05;
const RUN: u64 = 1000;

/// 32 bytes drawn from `seed` for the purpose `what` and index `n`.
fn draw(seed: u64, what: &str, n: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("pb-pipeline determinism test");
    h.update(&seed.to_le_bytes());
    h.update(what.as_bytes());
    h.update(&n.to_le_bytes());
    *h.finalize().as_bytes()
}

fn draw_u64(seed: u64, what: &str, n: u64) -> u64 {
    let b = draw(seed, what, n);
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

fn relay_hop(i: u8) -> Hop {
    hop(i, EPOCH, 3)
}

fn loop_mailbox(i: u8) -> MailboxId {
    MailboxId([0xf0 + i; 16])
}

/// Each link's transmissions, in order: (virtual time, bytes, whether the network lost it).
type Schedules = BTreeMap<(SocketAddr, SocketAddr), Vec<(u64, Vec<u8>, bool)>>;

struct Outcome {
    schedules: Schedules,
    net: NetStats,
    delivered: usize,
    loops_returned: u64,
}

/// Four relays, each linked to the other three, with loops and link cover; a client sends
/// packets along random three-hop routes at random times; the network loses 5%.
fn run(seed: u64) -> Outcome {
    let delivered = Delivered::default();
    let filters: Vec<SharedReplayFilter> = (0..RELAYS)
        .map(|_| {
            let f = SharedReplayFilter::new(10_000).unwrap();
            f.prepare(EPOCH);
            f
        })
        .collect();
    let mut sim = Sim::new(seed);
    sim.net.set_loss(LOSS);
    sim.net.set_latency(300_000);
    for i in 0..RELAYS {
        let others: Vec<u8> = (0..RELAYS).filter(|j| *j != i).collect();
        let config = PipelineConfig {
            neighbours: others
                .iter()
                .map(|j| Neighbour {
                    node: relay_hop(*j).node,
                    addr: relay_addr(*j),
                })
                .collect(),
            link_queue: 256,
            loop_mailbox: loop_mailbox(i),
            ..common::config(Vec::new(), RATE)
        };
        // The loop on link i → j comes back through the relay after j.
        let routes = others
            .iter()
            .map(|j| {
                let k = (0..RELAYS).find(|k| *k != i && *k != *j).unwrap();
                vec![relay_hop(*j), relay_hop(k), relay_hop(i)]
            })
            .collect();
        let monitor = LoopMonitor::new(
            draw(seed, "loop key", u64::from(i)),
            others.len(),
            1024,
            Time(2 * Time::SECOND),
        )
        .unwrap();
        let cover = LoopCover::new(
            FORMAT,
            EPOCH,
            routes,
            loop_mailbox(i),
            10,
            monitor,
            draw(seed, "cover key", u64::from(i)),
        );
        let io = sim.net.bind(&endpoint(relay_addr(i))).unwrap();
        sim.relays.push(
            Pipeline::new(
                io,
                &config,
                keys(key(i, EPOCH), None),
                &filters[usize::from(i)],
                Box::new(cover),
                Box::new(Recorder(delivered.clone())),
                sim.now(),
            )
            .unwrap(),
        );
    }

    let mut client = sim
        .net
        .bind(&endpoint("10.0.9.9:0".parse().unwrap()))
        .unwrap();
    for n in 0..PACKETS {
        let pick = draw_u64(seed, "route", u64::from(n));
        let first = (pick % u64::from(RELAYS)) as u8;
        let second = (first + 1 + ((pick >> 8) % 3) as u8) % RELAYS;
        let third = (second + 1 + ((pick >> 16) % 3) as u8) % RELAYS;
        let route = [relay_hop(first), relay_hop(second), relay_hop(third)];
        let at = Time(
            u64::from(n) * 10 * Time::MS + draw_u64(seed, "jitter", u64::from(n)) % (5 * Time::MS),
        );
        let p = packet(
            EPOCH,
            &route,
            MAILBOX,
            &text(n),
            draw(seed, "packet", u64::from(n)),
        );
        sim.run_until(at);
        send(&mut client, relay_addr(first), &p);
    }
    sim.run_until(ms(RUN));

    let mut schedules = Schedules::new();
    for t in sim.net.transmissions() {
        schedules
            .entry((t.src, t.dst))
            .or_default()
            .push((t.at, t.bytes, t.fate == Fate::Lost));
    }
    let delivered = delivered.lock().unwrap().len();
    Outcome {
        schedules,
        net: sim.net.stats(),
        delivered,
        loops_returned: (0..RELAYS as usize)
            .flat_map(|r| (0..3).map(move |l| (r, l)))
            .map(|(r, l)| sim.relays[r].loop_stats(l).returned)
            .sum(),
    }
}

/// Two runs with one seed: every link's schedule (send times, bytes, losses) is identical,
/// byte for byte. A run with another seed differs. The scenario is not trivial: real packets
/// were delivered, loops came back, the network lost some datagrams, all twelve links
/// carried traffic, and every link sent one packet per slot (its schedule's times are the
/// slots').
#[test]
fn the_same_seed_gives_the_same_schedules() {
    let first = run(7);
    let second = run(7);
    let other = run(8);

    // The relays' links (the client's datagrams are in the schedules too).
    let relay_links: Vec<_> = first
        .schedules
        .iter()
        .filter(|(link, _)| link.0.port() == pb_io::DEFAULT_PORT)
        .collect();
    assert_eq!(relay_links.len(), 12, "every link carried traffic");
    assert!(first.delivered > 0 && first.loops_returned > 0);
    assert!(
        first.net.lost > 0 && first.net.queued > 0,
        "{:?}",
        first.net
    );
    assert_eq!(first.net.queue_full + first.net.unreachable, 0);
    let interval = Time::SECOND / u64::from(RATE);
    for (link, schedule) in relay_links {
        let times: Vec<u64> = schedule.iter().map(|(at, _, _)| *at).collect();
        // Slot k at the link's phase (under one interval) plus k intervals.
        let phase = times[0];
        let slots: Vec<u64> = (0..RUN * u64::from(RATE) / 1000)
            .map(|k| phase + k * interval)
            .collect();
        assert!(
            phase < interval && times == slots,
            "link {link:?} strayed from its slots"
        );
    }

    for (link, schedule) in &first.schedules {
        assert!(
            second.schedules.get(link) == Some(schedule),
            "link {link:?} differs between two runs with one seed"
        );
    }
    assert_eq!(first.schedules.len(), second.schedules.len());
    assert_eq!(first.net, second.net);
    assert_eq!(
        (first.delivered, first.loops_returned),
        (second.delivered, second.loops_returned)
    );
    assert!(
        first.schedules != other.schedules,
        "another seed gave the same schedules"
    );
}
