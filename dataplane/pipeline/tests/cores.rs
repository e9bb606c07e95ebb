//! A relay on several cores and across epochs and topologies, on the in-memory network and a
//! virtual clock: the deterministic version of `udp_cores.rs`.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::sync::Arc;

use common::{
    MAILBOX, NoCover, NoSink, Sim, config, endpoint, hop, key, keys, ms, packet, receive_all,
    relay_addr, send, text,
};
use pb_io::mem::{MemConfig, MemIo};
use pb_mix::{SharedReplayFilter, Time};
use pb_pipeline::{Handoff, Neighbour, Pipeline, PipelineStats};
use pb_sphinx::{DropReason, Epoch, Hop, PACKET_LEN, Processed};

/// A packet along `route` carrying message `n` to the test mailbox.
fn numbered(epoch: Epoch, route: &[Hop], n: u32) -> [u8; PACKET_LEN] {
    packet(epoch, route, MAILBOX, &text(n), [(n % 251) as u8 + 1; 32])
}

fn index(r: DropReason) -> usize {
    DropReason::ALL.iter().position(|x| *x == r).unwrap()
}

/// Covers `udp_cores.rs`'s first test: two pipelines share one (`reuse_port`) address, one
/// replay filter and a handoff; each paces one of the two links; every packet is sent twice
/// by two different senders, so that many replays land on the core that did not see the
/// original. Asserted as there: each neighbour unwraps exactly its packets, byte-identical;
/// received = 2 × packets, forwarded = packets, replay drops = packets; some packets were
/// handed off, all taken over, none dropped on the way; a core sends on its own link only.
/// Added: both cores received traffic (the spread is deterministic, not the kernel's).
#[test]
fn two_cores_share_the_links_and_the_replay_filter() {
    const EPOCH: Epoch = Epoch(1);
    const PACKETS: u32 = 200;
    let mut sim = Sim::new(1);
    let neighbour_addrs = [relay_addr(1), relay_addr(2)];
    let mut neighbours: Vec<MemIo> = neighbour_addrs
        .iter()
        .map(|a| sim.net.bind(&endpoint(*a)).unwrap())
        .collect();
    let config = config(
        (0..2)
            .map(|i| Neighbour {
                node: hop(i as u8 + 1, EPOCH, 1).node,
                addr: neighbour_addrs[i],
            })
            .collect(),
        2000,
    );
    let replay = SharedReplayFilter::new(10_000).unwrap();
    replay.prepare(EPOCH);
    let handoff = Arc::new(Handoff::new(2, 256));
    let owner = Handoff::round_robin(2, 2);
    let shared = MemConfig {
        reuse_port: true,
        ..endpoint(relay_addr(0))
    };
    for core in 0..2 {
        let io = sim.net.bind(&shared).unwrap();
        let pipeline = Pipeline::new(
            io,
            &config,
            keys(key(0, EPOCH), None),
            &replay,
            Box::new(NoCover),
            Box::new(NoSink),
            sim.now(),
        )
        .unwrap()
        .shard(core, owner.clone(), handoff.clone())
        .unwrap();
        assert!(pipeline.owns(core) && !pipeline.owns(1 - core));
        sim.relays.push(pipeline);
    }

    // Sixteen senders (sixteen flows to spread over the two cores); packet n goes to
    // neighbour 1 + n % 2; each is sent twice, by two different senders.
    let mut senders: Vec<MemIo> = (0..16)
        .map(|_| {
            sim.net
                .bind(&endpoint("10.0.1.1:0".parse().unwrap()))
                .unwrap()
        })
        .collect();
    let mut want: [Vec<Vec<u8>>; 2] = Default::default();
    for n in 0..PACKETS {
        let next = 1 + (n % 2) as u8;
        let p = numbered(EPOCH, &[hop(0, EPOCH, 1), hop(next, EPOCH, 1)], n);
        send(&mut senders[n as usize % 16], relay_addr(0), &p);
        send(&mut senders[(n as usize + 5) % 16], relay_addr(0), &p);
        want[usize::from(next) - 1].push(text(n));
        if n % 32 == 31 {
            let next = Time(sim.now().0 + 5 * Time::MS);
            sim.run_until(next);
        }
    }
    let end = Time(sim.now().0 + 300 * Time::MS);
    sim.run_until(end);

    let reports: Vec<(PipelineStats, Vec<pb_mix::LinkStats>)> = sim
        .relays
        .iter()
        .map(|p| (p.stats(), p.link_stats()))
        .collect();
    for (i, neighbour) in neighbours.iter_mut().enumerate() {
        let me = keys(key(i as u8 + 1, EPOCH), None);
        let mut got: Vec<Vec<u8>> = receive_all(neighbour, &me)
            .into_iter()
            .map(|result| match result {
                Ok((Processed::Deliver { mailbox, .. }, message)) if mailbox == MAILBOX => message,
                other => panic!("neighbour {i}: {other:?}"),
            })
            .collect();
        got.sort();
        want[i].sort();
        assert!(
            got == want[i],
            "neighbour {i}: {} of {}: {reports:?}",
            got.len(),
            want[i].len()
        );
    }
    let sum = |f: &dyn Fn(&PipelineStats) -> u64| reports.iter().map(|(s, _)| f(s)).sum::<u64>();
    assert_eq!(sum(&|s| s.received), 2 * u64::from(PACKETS));
    assert_eq!(sum(&|s| s.forwarded), u64::from(PACKETS));
    assert_eq!(
        sum(&|s| s.dropped[index(DropReason::Replay)]),
        u64::from(PACKETS)
    );
    assert!(sum(&|s| s.handed_off) > 0, "{reports:?}");
    assert_eq!(sum(&|s| s.handed_off), sum(&|s| s.taken_over));
    assert_eq!(sum(&|s| s.dropped_handoff), 0);
    for (core, (stats, links)) in reports.iter().enumerate() {
        assert!(stats.received > 0, "core {core} received nothing");
        // A core sends on its own link only: every packet for it, however it arrived.
        assert_eq!(links[core].real, u64::from(PACKETS) / 2, "core {core}");
        assert_eq!(
            links[1 - core].real + links[1 - core].missed,
            0,
            "core {core}"
        );
    }
}

/// One pipeline on the virtual network with a client and neighbours; `run` sends packets
/// and steps until they are received.
struct Bench<'r> {
    sim: Sim<'r>,
    client: MemIo,
}

impl<'r> Bench<'r> {
    fn new(
        replay: &'r SharedReplayFilter,
        neighbours: Vec<Neighbour>,
        node_keys: pb_sphinx::NodeKeys,
    ) -> Self {
        let mut sim = Sim::new(1);
        let io = sim.net.bind(&endpoint(relay_addr(0))).unwrap();
        let pipeline = Pipeline::new(
            io,
            &config(neighbours, 2000),
            node_keys,
            replay,
            Box::new(NoCover),
            Box::new(NoSink),
            sim.now(),
        )
        .unwrap();
        sim.relays.push(pipeline);
        let client = sim
            .net
            .bind(&endpoint("10.0.0.100:0".parse().unwrap()))
            .unwrap();
        Self { sim, client }
    }

    fn pipeline(&mut self) -> &mut Pipeline<'r, MemIo> {
        &mut self.sim.relays[0]
    }

    /// Sends `packets` and runs for `settle` (at least until all are received).
    fn run(&mut self, packets: &[[u8; PACKET_LEN]], settle: Time) -> PipelineStats {
        let target = self.sim.relays[0].stats().received + packets.len() as u64;
        for p in packets {
            send(&mut self.client, relay_addr(0), p);
        }
        let end = Time(self.sim.now().0 + settle.0);
        self.sim.run_until(end);
        let stats = self.sim.relays[0].stats();
        assert_eq!(stats.received, target, "packets went missing");
        stats
    }
}

/// Covers `udp_cores.rs`'s key rotation test, with the same assertions: through the overlap
/// the previous epoch's packets are still forwarded and its replays still refused (as
/// replays, with a table), and after the next rotation that epoch is past.
#[test]
fn keys_rotate_with_an_overlap() {
    let replay = SharedReplayFilter::new(10_000).unwrap();
    replay.prepare(Epoch(1));
    let neighbour = Neighbour {
        node: hop(1, Epoch(1), 1).node,
        addr: relay_addr(1),
    };
    let mut bench = Bench::new(&replay, vec![neighbour], keys(key(0, Epoch(1)), None));
    let route = |e: Epoch| [hop(0, e, 1), hop(1, e, 1)];
    let settle = ms(5);

    let old = numbered(Epoch(1), &route(Epoch(1)), 0);
    let s = bench.run(&[old], settle);
    assert_eq!(s.forwarded, 1);

    // Epoch 2 begins: epoch 1 is the previous one, still accepted, replays still known.
    replay.prepare(Epoch(2));
    bench
        .pipeline()
        .set_keys(keys(key(0, Epoch(2)), Some(key(0, Epoch(1)))));
    let s = bench.run(
        &[
            numbered(Epoch(2), &route(Epoch(2)), 1),
            numbered(Epoch(1), &route(Epoch(1)), 2),
            old,
        ],
        settle,
    );
    assert_eq!(s.forwarded, 3, "{s:?}");
    assert_eq!(s.dropped[index(DropReason::Replay)], 1, "{s:?}");
    assert_eq!(s.replay_filter_no_table, 0, "{s:?}");

    // Epoch 3: epoch 1 is past; epoch 2 is the overlap.
    replay.prepare(Epoch(3));
    bench
        .pipeline()
        .set_keys(keys(key(0, Epoch(3)), Some(key(0, Epoch(2)))));
    let s = bench.run(
        &[
            numbered(Epoch(1), &route(Epoch(1)), 3),
            numbered(Epoch(2), &route(Epoch(2)), 4),
            numbered(Epoch(3), &route(Epoch(3)), 5),
        ],
        settle,
    );
    assert_eq!(s.dropped[index(DropReason::PastEpoch)], 1, "{s:?}");
    assert_eq!(s.forwarded, 5, "{s:?}");
}

/// Covers `udp_cores.rs`'s topology test, with the same assertions: a packet for a
/// neighbour that is not a link yet is dropped as `dropped_no_link`; after
/// `set_neighbours` a new link carries its packet and the kept one its own, each unwrapped
/// by its neighbour to the message sent; a packet whose link goes away during its delay is
/// dropped and counted; duplicate neighbours and owners beyond the cores are refused.
/// Added: the kept link keeps its counters across the change.
#[test]
fn links_follow_a_new_topology() {
    const EPOCH: Epoch = Epoch(1);
    let replay = SharedReplayFilter::new(10_000).unwrap();
    replay.prepare(EPOCH);
    let neighbour = |i: u8| Neighbour {
        node: hop(i + 1, EPOCH, 1).node,
        addr: relay_addr(i + 1),
    };
    let mut bench = Bench::new(&replay, vec![neighbour(0)], keys(key(0, EPOCH), None));
    let mut sockets: Vec<MemIo> = (0..2)
        .map(|i| bench.sim.net.bind(&endpoint(relay_addr(i + 1))).unwrap())
        .collect();
    let to = |next: u8, n: u32, delay: u32| {
        numbered(EPOCH, &[hop(0, EPOCH, delay), hop(next, EPOCH, 1)], n)
    };

    // Neighbour 2 is not a link yet.
    let s = bench.run(&[to(2, 0, 0)], ms(1));
    assert_eq!(s.dropped_no_link, 1);

    // Now it is; neighbour 1 keeps its link.
    let now = bench.sim.now();
    let kept = bench.pipeline().link_stats()[0];
    bench
        .pipeline()
        .set_neighbours(vec![neighbour(1), neighbour(0)], vec![0, 0], now)
        .unwrap();
    assert_eq!(bench.pipeline().neighbours()[0], neighbour(1));
    assert_eq!(bench.pipeline().link_stats()[1], kept);
    bench.run(&[to(2, 1, 0), to(1, 2, 0)], ms(50));
    for (i, n) in [(1, 1u32), (0, 2)] {
        let got = receive_all(&mut sockets[i], &keys(key(i as u8 + 1, EPOCH), None));
        assert_eq!(got.len(), 1, "neighbour {i}");
        match &got[0] {
            Ok((Processed::Deliver { .. }, message)) => assert_eq!(*message, text(n)),
            other => panic!("neighbour {i}: {other:?}"),
        }
    }

    // A packet for neighbour 1 waits 300 ms; meanwhile neighbour 1 goes away: dropped.
    bench.run(&[to(1, 3, 300)], ms(1));
    let now = bench.sim.now();
    bench
        .pipeline()
        .set_neighbours(vec![neighbour(1)], vec![0], now)
        .unwrap();
    let s = bench.run(&[], ms(500));
    assert_eq!(s.dropped_no_link, 2, "{s:?}");
    assert!(receive_all(&mut sockets[0], &keys(key(1, EPOCH), None)).is_empty());
    let now = bench.sim.now();
    assert!(
        bench
            .pipeline()
            .set_neighbours(vec![neighbour(1), neighbour(1)], vec![0, 0], now)
            .is_err()
    );
    assert!(
        bench
            .pipeline()
            .set_neighbours(vec![neighbour(1)], vec![1], now)
            .is_err()
    );
}
