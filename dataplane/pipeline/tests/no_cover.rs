//! The anonymity harness's known-bad configuration (`Pipeline::without_cover`), on the
//! in-memory network and a virtual clock: idle slots send nothing, so a link carries
//! exactly its real packets, and the rate follows the load (what the harness's observer
//! must then see). The same link with cover sends its rate whatever the load.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{FORMAT, Sim, endpoint, hop, key, keys, ms, packet, receive_all, relay_addr, send};
use pb_mix::{LoopMonitor, SharedReplayFilter};
use pb_pipeline::{LoopCover, Neighbour, Pipeline};
use pb_sphinx::{Epoch, MailboxId};

const EPOCH: Epoch = Epoch(1);
const RATE: u32 = 100;

/// Packets the neighbour got in 2 idle seconds, then in 2 seconds with 30 real packets.
fn idle_then_busy(cover: bool) -> (usize, usize) {
    let mut sim = Sim::new(1);
    let neighbour_addr = relay_addr(1);
    let mut neighbour = sim.net.bind(&endpoint(neighbour_addr)).unwrap();
    let config = common::config(
        vec![Neighbour {
            node: hop(1, EPOCH, 2).node,
            addr: neighbour_addr,
        }],
        RATE,
    );
    let replay = SharedReplayFilter::new(100_000).unwrap();
    replay.prepare(EPOCH);
    let loops = LoopMonitor::new([7; 32], 1, 64, pb_mix::Time(pb_mix::Time::SECOND)).unwrap();
    let filler = LoopCover::new(
        FORMAT,
        EPOCH,
        vec![vec![hop(1, EPOCH, 2)]],
        config.loop_mailbox,
        0,
        loops,
        [9; 32],
    );
    let io = sim.net.bind(&endpoint(relay_addr(0))).unwrap();
    let pipeline = Pipeline::new(
        io,
        &config,
        keys(key(0, EPOCH), None),
        &replay,
        Box::new(filler),
        Box::new(common::NoSink),
        sim.now(),
    )
    .unwrap();
    sim.relays.push(if cover {
        pipeline
    } else {
        pipeline.without_cover()
    });
    let node_keys = keys(key(1, EPOCH), None);
    sim.run_until(ms(2_000));
    let idle = receive_all(&mut neighbour, &node_keys).len();
    let mut client = sim
        .net
        .bind(&endpoint("10.0.0.100:0".parse().unwrap()))
        .unwrap();
    let route = [hop(0, EPOCH, 2), hop(1, EPOCH, 2)];
    for n in 0..30u64 {
        let seed = blake3::hash(&n.to_le_bytes());
        let p = packet(
            EPOCH,
            &route,
            MailboxId([0xab; 16]),
            b"real",
            *seed.as_bytes(),
        );
        send(&mut client, relay_addr(0), &p);
    }
    sim.run_until(ms(4_000));
    (idle, receive_all(&mut neighbour, &node_keys).len())
}

#[test]
fn without_cover_a_link_carries_only_its_real_packets() {
    let (idle, busy) = idle_then_busy(false);
    assert_eq!((idle, busy), (0, 30));
    // With cover (the real configuration) the same link sends its rate both times.
    let (idle, busy) = idle_then_busy(true);
    assert!(idle.abs_diff(2 * RATE as usize) <= 1, "{idle}");
    assert!(busy.abs_diff(2 * RATE as usize) <= 1, "{busy}");
}
