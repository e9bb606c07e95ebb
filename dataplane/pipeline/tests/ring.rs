//! Three relays in a ring (0 → 1 → 2 → 0) on the in-memory network, on a virtual clock: the
//! deterministic version of `udp_ring.rs` (which runs the same over UDP sockets on loopback).
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{
    Delivered, FORMAT, MAILBOX, Recorder, Sim, endpoint, hop, key, keys, ms, packet, relay_addr,
    send,
};
use pb_io::{PacketIo, mem::Fate};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{LoopCover, Neighbour, Pipeline, PipelineConfig};
use pb_sphinx::{DelayMs, DropReason, Epoch, EpochKey, Hop, MailboxId};

const EPOCH: Epoch = Epoch(1);
const PACKETS: u32 = 200;
/// Packets a second on every link.
const RATE: u64 = 100;

fn loop_mailbox(i: u8) -> MailboxId {
    MailboxId([0xf0 + i; 16])
}

fn ring_hop(i: u8) -> Hop {
    hop(i, EPOCH, 5)
}

/// Covers `udp_ring.rs`'s assertions, each on the virtual network:
/// - client packets injected at relay 0 reach relay 2's sink byte-identical, each exactly
///   once, all for the user mailbox;
/// - at relay 0 a replay is dropped as `Replay` (a real replay: the filter was neither full
///   nor without a table), a packet for an unknown epoch as `FutureEpoch`, and a 100-byte
///   datagram as malformed by the backend;
/// - on every relay loops come back, nothing is dropped for want of a link, every cover
///   packet could be built, and relays 1 and 2 drop nothing.
///
/// And, which sockets and a wall clock cannot show: no loop is lost (the network loses
/// nothing), and every link sends exactly one packet in each of its slots, at the slot's
/// time (every 10 ms from the start): pacing driven by `next_deadline` alone.
#[test]
fn a_ring_of_three_relays_forwards_mixes_and_loops() {
    let delivered: Delivered = Delivered::default();
    let filters: Vec<SharedReplayFilter> = (0..3)
        .map(|_| {
            let f = SharedReplayFilter::new(100_000).unwrap();
            f.prepare(EPOCH);
            f
        })
        .collect();
    let mut sim = Sim::new(1);
    sim.net.set_latency(200_000);
    for i in 0..3u8 {
        let next = (i + 1) % 3;
        let config = PipelineConfig {
            neighbours: vec![Neighbour {
                node: ring_hop(next).node,
                addr: relay_addr(next),
            }],
            link_rate: RATE as u32,
            link_queue: 256,
            max_burst: 8,
            delay_capacity: 4096,
            max_delay: DelayMs(10_000),
            batch: 32,
            loop_mailbox: loop_mailbox(i),
        };
        // Relay i's loops go once around the ring: i+1, i+2, back to i.
        let route = vec![ring_hop(next), ring_hop((i + 2) % 3), ring_hop(i)];
        let loops = LoopMonitor::new([0x10 + i; 32], 1, 4096, Time(5 * Time::SECOND)).unwrap();
        let cover = LoopCover::new(
            FORMAT,
            EPOCH,
            vec![route],
            loop_mailbox(i),
            20,
            loops,
            [i; 32],
        );
        let io = sim.net.bind(&endpoint(relay_addr(i))).unwrap();
        let pipeline = Pipeline::new(
            io,
            &config,
            keys(key(i, EPOCH), None),
            &filters[usize::from(i)],
            Box::new(cover),
            Box::new(Recorder(delivered.clone())),
            sim.now(),
        )
        .unwrap();
        sim.relays.push(pipeline);
    }

    // A client sends 200 packets along 0 → 1 → 2 to a mailbox at relay 2, one every 10 ms,
    // plus one replay, one malformed datagram and one packet for an epoch relay 0 has no key
    // for.
    let mut client = sim
        .net
        .bind(&endpoint("10.0.0.100:0".parse().unwrap()))
        .unwrap();
    let route = [ring_hop(0), ring_hop(1), ring_hop(2)];
    let mut sent = Vec::new();
    for n in 0..PACKETS {
        let message: Vec<u8> = (0..400)
            .map(|j| (n as u8).wrapping_mul(7) ^ j as u8)
            .collect();
        let p = packet(EPOCH, &route, MAILBOX, &message, [n as u8; 32]);
        sim.run_until(ms(10 * u64::from(n)));
        send(&mut client, relay_addr(0), &p);
        if n == 0 {
            send(&mut client, relay_addr(0), &p); // the replay
        }
        sent.push(message);
    }
    send(&mut client, relay_addr(0), &[0u8; 100]);
    let future_hop = Hop {
        public_key: EpochKey::from_secret(Epoch(2), [1; 32]).public_key(),
        ..ring_hop(0)
    };
    let future = packet(Epoch(2), &[future_hop], MAILBOX, b"early", [9; 32]);
    send(&mut client, relay_addr(0), &future);

    // Until every message has arrived, then one more second for the loops.
    let limit = ms(60_000);
    let undelivered = |_: &Sim<'_>| delivered.lock().unwrap().len() < sent.len();
    assert!(
        sim.run_while(limit, undelivered),
        "only {} of {} delivered by {limit:?}",
        delivered.lock().unwrap().len(),
        sent.len()
    );
    let end = Time(sim.now().0 + Time::SECOND);
    sim.run_until(end);

    let mut got = delivered.lock().unwrap().clone();
    assert!(got.iter().all(|(m, _)| *m == MAILBOX));
    let mut want: Vec<(MailboxId, Vec<u8>)> = sent
        .into_iter()
        .map(|m| {
            let mut padded = m.clone();
            padded.resize(FORMAT.message_len(), 0);
            (MAILBOX, padded)
        })
        .collect();
    got.sort_by(|a, b| a.1.cmp(&b.1));
    want.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(got.len(), want.len(), "each message exactly once");
    assert!(got == want, "delivered messages differ from those sent");

    let first = sim.relays[0].stats();
    let index = |r: DropReason| DropReason::ALL.iter().position(|x| *x == r).unwrap();
    assert_eq!(first.dropped[index(DropReason::Replay)], 1, "{first:?}");
    assert_eq!(
        first.dropped[index(DropReason::FutureEpoch)],
        1,
        "{first:?}"
    );
    assert_eq!(
        first.replay_filter_full + first.replay_filter_no_table,
        0,
        "{first:?}"
    );
    assert_eq!(sim.relays[0].io().stats().rx_dropped_malformed, 1);
    for (i, relay) in sim.relays.iter().enumerate() {
        let (stats, loops) = (relay.stats(), relay.loop_stats(0));
        assert!(
            loops.returned > 0,
            "relay {i}: no loop came back: {stats:?}"
        );
        assert_eq!(loops.lost, 0, "relay {i}: {loops:?}");
        assert_eq!(stats.dropped_no_link, 0);
        assert_eq!(stats.cover_failures, 0, "relay {i}");
        let bad: u64 = stats.dropped.iter().sum();
        if i > 0 {
            assert_eq!(bad, 0, "relay {i} dropped {:?}", stats.dropped);
        }
    }

    // Every link: one packet per slot, each at its slot's time, none missed, none lost.
    let log = sim.net.transmissions();
    assert!(log.iter().all(|t| t.fate == Fate::Queued));
    for (i, relay) in sim.relays.iter().enumerate() {
        let times: Vec<u64> = log
            .iter()
            .filter(|t| t.src == relay_addr(i as u8))
            .map(|t| t.at)
            .collect();
        let slots: Vec<u64> = (0..times.len() as u64)
            .map(|k| k * Time::SECOND / RATE)
            .collect();
        assert!(times == slots, "relay {i}'s link strayed from its slots");
        assert!(times.len() as u64 >= RATE * end.0 / Time::SECOND);
        let link = relay.link_stats()[0];
        assert_eq!(link.missed, 0, "relay {i}: {link:?}");
        assert_eq!(link.real + link.cover, times.len() as u64);
    }
}
