//! Slots do not depend on content, at any link count: one core with 64 links sends exactly
//! the link rate on every one of them when idle (a per-turn cover budget once made links
//! beyond the eighth miss their slots), at staggered phases, and a link carrying real
//! packets keeps exactly the schedule it has when idle. In-memory network, virtual clock.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use common::{
    FORMAT, MAILBOX, NoSink, Sim, endpoint, hop, key, keys, ms, packet, relay_addr, send, text,
};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{LoopCover, Neighbour, Pipeline, PipelineConfig};
use pb_sphinx::{Epoch, MailboxId};

const EPOCH: Epoch = Epoch(1);
const LINKS: u8 = 64;
const RATE: u32 = 100;
const RUN_MS: u64 = 2000;

/// Each link's send times, by destination.
type Schedules = BTreeMap<SocketAddr, Vec<u64>>;

/// Relay 0 on one core with links to relays 1..=64, link cover from an on-demand source;
/// `real` packets (one hop through relay 0 to relay `1 + n % 8`, zero delay) sent to it at
/// `n` × 7 ms. Returns every link's send times and the relay's slot counters.
fn run(real: u32) -> (Schedules, Vec<pb_mix::LinkStats>, u64) {
    let filter = SharedReplayFilter::new(10_000).unwrap();
    filter.prepare(EPOCH);
    let mut sim = Sim::new(1);
    let neighbours: Vec<Neighbour> = (1..=LINKS)
        .map(|i| Neighbour {
            node: hop(i, EPOCH, 0).node,
            addr: relay_addr(i),
        })
        .collect();
    let loop_mailbox = MailboxId([0xf0; 16]);
    let config = PipelineConfig {
        loop_mailbox,
        ..common::config(neighbours, RATE)
    };
    // One-hop link cover for each neighbour (no loops: a loop needs a way back).
    let routes = (1..=LINKS).map(|i| vec![hop(i, EPOCH, 0)]).collect();
    let monitor = LoopMonitor::new([3; 32], usize::from(LINKS), 64, Time(Time::SECOND)).unwrap();
    let cover = LoopCover::new(FORMAT, EPOCH, routes, loop_mailbox, 0, monitor, [4; 32]);
    let io = sim.net.bind(&endpoint(relay_addr(0))).unwrap();
    sim.relays.push(
        Pipeline::new(
            io,
            &config,
            keys(key(0, EPOCH), None),
            &filter,
            Box::new(cover),
            Box::new(NoSink),
            sim.now(),
        )
        .unwrap(),
    );
    let mut client = sim
        .net
        .bind(&endpoint("10.0.9.9:0".parse().unwrap()))
        .unwrap();
    for n in 0..real {
        sim.run_until(ms(u64::from(n) * 7));
        let route = [hop(0, EPOCH, 0), hop(1 + (n % 8) as u8, EPOCH, 0)];
        let p = packet(EPOCH, &route, MAILBOX, &text(n), [n as u8; 32]);
        send(&mut client, relay_addr(0), &p);
    }
    sim.run_until(ms(RUN_MS));
    let mut schedules = Schedules::new();
    for t in sim.net.transmissions() {
        if t.src == relay_addr(0) {
            schedules.entry(t.dst).or_default().push(t.at);
        }
    }
    let relay = &sim.relays[0];
    (schedules, relay.link_stats(), relay.stats().cover_failures)
}

#[test]
fn sixty_four_idle_links_on_one_core_each_send_exactly_the_rate() {
    let (schedules, stats, cover_failures) = run(0);
    assert_eq!(schedules.len(), usize::from(LINKS), "every link sent");
    let per_link = RUN_MS * u64::from(RATE) / 1000;
    let interval = Time::SECOND / u64::from(RATE);
    for (link, times) in &schedules {
        assert_eq!(
            times.len() as u64,
            per_link,
            "link to {link}: not exactly R"
        );
        // Slot k at the link's phase plus k slot intervals, the phase under one interval.
        assert!(times[0] < interval, "link to {link} starts late");
        for (k, at) in times.iter().enumerate() {
            assert_eq!(
                at - times[0],
                k as u64 * interval,
                "link to {link}, slot {k}"
            );
        }
    }
    for (i, s) in stats.iter().enumerate() {
        assert_eq!((s.cover, s.real, s.missed), (per_link, 0, 0), "link {i}");
    }
    assert_eq!(cover_failures, 0);
    // The links' phases are spread over the slot interval, not all at one instant.
    let phases: BTreeSet<u64> = schedules.values().map(|t| t[0]).collect();
    assert!(phases.len() > usize::from(LINKS) / 2, "{phases:?}");
}

#[test]
fn a_link_carrying_real_packets_keeps_its_idle_schedule() {
    let (idle, _, _) = run(0);
    let (busy, stats, _) = run(200);
    let real: u64 = stats.iter().map(|s| s.real).sum();
    assert_eq!(real, 200, "every real packet took a slot");
    assert_eq!(stats.iter().map(|s| s.missed).sum::<u64>(), 0);
    assert_eq!(idle, busy, "the slots on the wire depend on the traffic");
}
