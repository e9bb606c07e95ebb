//! A relay offered five times its link rate, on the in-memory network and a virtual clock:
//! the deterministic version of `udp_overload.rs`.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{FORMAT, Sim, endpoint, hop, key, keys, ms, packet, receive_all, relay_addr, send};
use pb_mix::{LinkStats, LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{COVER_MAILBOX, LoopCover, Neighbour, Pipeline, PipelineConfig};
use pb_sphinx::{DelayMs, Epoch, MailboxId, Processed};

const EPOCH: Epoch = Epoch(1);
const RATE: u64 = 200;
const OFFERED: u64 = 5 * RATE;
const SECONDS: u64 = 3;
const LOAD_MAILBOX: MailboxId = MailboxId([0xab; 16]);

/// Covers `udp_overload.rs`'s assertions, each exactly where the socket test needs slack:
/// - every one-second window carries the rate (exactly, not within 2%) and misses no slot,
///   under load as before and after it, and the link misses none over the run;
/// - under load the link carries real packets only (every slot of the full windows);
/// - every packet offered is received; each is forwarded or refused by the delay queue; pb-sphinx
///   drops none; the bounded queues refuse more than half; real sent + refused = offered;
/// - what the link sent arrived at the neighbour.
///
/// And more: the neighbour unwraps every arrival, the real ones to the load's mailbox and
/// the cover to the cover mailbox, as many as the link counted; the relay's own receive
/// queue dropped nothing (the excess was refused by the pipeline's queues, nowhere else);
/// and once the load is over every frame is back in the relay's pool.
#[test]
fn five_times_the_link_rate_keeps_the_rate_and_counts_the_excess() {
    let mut sim = Sim::new(1);
    let neighbour_addr = relay_addr(1);
    let mut neighbour = sim.net.bind(&endpoint(neighbour_addr)).unwrap();
    let config = PipelineConfig {
        neighbours: vec![Neighbour {
            node: hop(1, EPOCH, 2).node,
            addr: neighbour_addr,
        }],
        link_rate: RATE as u32,
        link_queue: 64,
        max_burst: 32,
        delay_capacity: 256,
        max_delay: DelayMs(1000),
        batch: 32,
        loop_mailbox: MailboxId([0xf0; 16]),
    };
    let replay = SharedReplayFilter::new(100_000).unwrap();
    replay.prepare(EPOCH);
    let loops = LoopMonitor::new([7; 32], 1, 64, Time(Time::SECOND)).unwrap();
    // Link cover for the idle slots before and after the load, no loops.
    let cover = LoopCover::new(
        FORMAT,
        EPOCH,
        vec![vec![hop(1, EPOCH, 2)]],
        MailboxId([0xf0; 16]),
        0,
        loops,
        [9; 32],
    );
    let relay_config = endpoint(relay_addr(0));
    let io = sim.net.bind(&relay_config).unwrap();
    sim.relays.push(
        Pipeline::new(
            io,
            &config,
            keys(key(0, EPOCH), None),
            &replay,
            Box::new(cover),
            Box::new(common::NoSink),
            sim.now(),
        )
        .unwrap(),
    );
    let route = [hop(0, EPOCH, 2), hop(1, EPOCH, 2)];
    let packets: Vec<_> = (0..OFFERED * SECONDS)
        .map(|n| {
            let seed = blake3::hash(&n.to_le_bytes());
            packet(EPOCH, &route, LOAD_MAILBOX, b"load", *seed.as_bytes())
        })
        .collect();
    let mut client = sim
        .net
        .bind(&endpoint("10.0.0.100:0".parse().unwrap()))
        .unwrap();

    // Five times the link rate, in bursts of ten every 10 ms, for SECONDS; then one more
    // second for the queues to drain. The link is counted in one-second windows.
    let mut windows: Vec<LinkStats> = Vec::new();
    let mut last = LinkStats::default();
    let mut window_end = |sim: &Sim<'_>, windows: &mut Vec<LinkStats>| {
        let current = sim.relays[0].link_stats()[0];
        windows.push(LinkStats {
            real: current.real - last.real,
            cover: current.cover - last.cover,
            missed: current.missed - last.missed,
            dropped_full: current.dropped_full - last.dropped_full,
        });
        last = current;
    };
    for (i, chunk) in packets.chunks(10).enumerate() {
        let due = ms(10 * i as u64);
        if due.0.is_multiple_of(Time::SECOND) && due.0 > 0 {
            sim.run_until(due);
            window_end(&sim, &mut windows);
        }
        sim.run_until(due);
        for p in chunk {
            send(&mut client, relay_addr(0), p);
        }
    }
    for second in SECONDS..=SECONDS + 1 {
        sim.run_until(Time(second * Time::SECOND));
        window_end(&sim, &mut windows);
    }

    let (stats, link) = (sim.relays[0].stats(), sim.relays[0].link_stats()[0]);
    assert_eq!(windows.len() as u64, SECONDS + 1, "{windows:?}");
    for w in &windows {
        assert_eq!(w.real + w.cover, RATE, "{windows:?}");
        assert_eq!(w.missed, 0, "{windows:?}");
    }
    assert_eq!(link.missed, 0, "{link:?}");
    for w in &windows[1..SECONDS as usize] {
        assert_eq!(w.real, RATE, "{windows:?}");
    }
    let offered = OFFERED * SECONDS;
    let refused = stats.dropped_link_full + stats.dropped_delay.iter().sum::<u64>();
    assert_eq!(stats.received, offered, "{stats:?}");
    assert_eq!(
        stats.forwarded + stats.dropped_delay.iter().sum::<u64>(),
        offered,
        "{stats:?}"
    );
    assert_eq!(stats.dropped.iter().sum::<u64>(), 0, "{stats:?}");
    assert!(refused > offered / 2, "{stats:?}");
    assert_eq!(link.real + refused, offered, "{stats:?} {link:?}");

    let arrived = receive_all(&mut neighbour, &keys(key(1, EPOCH), None));
    assert_eq!(arrived.len() as u64, link.real + link.cover);
    let to = |mailbox: MailboxId| {
        arrived
            .iter()
            .filter(
                |r| matches!(r, Ok((Processed::Deliver { mailbox: m, .. }, _)) if *m == mailbox),
            )
            .count() as u64
    };
    assert_eq!(to(LOAD_MAILBOX), link.real);
    assert_eq!(to(COVER_MAILBOX), link.cover);
    let io = sim.relays[0].io();
    assert_eq!(io.dropped_queue_full(), 0);
    assert_eq!(
        io.free_frames(),
        relay_config.frame_count as usize,
        "a frame leaked"
    );
}
