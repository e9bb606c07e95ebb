//! A full replay filter refuses every packet it would have to record, but never link cover:
//! one-hop packets for the cover mailbox need no entry (pb-sphinx does not record them), so
//! a relay whose filter has filled up still takes its neighbours' cover, while real packets
//! and loops are refused (counted as `replay_filter_full`). On the in-memory network,
//! virtual clock.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use common::{
    Delivered, MAILBOX, NoCover, Recorder, Sim, config, endpoint, hop, key, keys, ms, packet,
    relay_addr, send, text,
};
use pb_mix::{SharedReplayFilter, Verdict};
use pb_pipeline::{COVER_MAILBOX, Pipeline};
use pb_sphinx::{DropReason, Epoch, ReplayTag};

const EPOCH: Epoch = Epoch(5);

#[test]
fn cover_still_arrives_when_the_replay_filter_is_full() {
    let replay = SharedReplayFilter::new(16).unwrap();
    replay.prepare(EPOCH);
    // Fill every slot; the next tag has no room.
    for i in 0..replay.slots() {
        let tag = ReplayTag(
            *blake3::hash(&i.to_le_bytes())
                .as_bytes()
                .first_chunk()
                .unwrap(),
        );
        assert_eq!(replay.check_and_insert(EPOCH, &tag), Verdict::Fresh);
    }
    assert_eq!(replay.fill(EPOCH).unwrap().percent(), 100);

    let delivered = Delivered::default();
    let mut sim = Sim::new(3);
    let io = sim.net.bind(&endpoint(relay_addr(0))).unwrap();
    let pipeline_config = config(Vec::new(), 100);
    let loop_mailbox = pipeline_config.loop_mailbox;
    let pipeline = Pipeline::new(
        io,
        &pipeline_config,
        keys(key(0, EPOCH), None),
        &replay,
        Box::new(NoCover),
        Box::new(Recorder(delivered.clone())),
        sim.now(),
    )
    .unwrap();
    sim.relays.push(pipeline);
    let mut neighbour = sim.net.bind(&endpoint(relay_addr(1))).unwrap();

    let one_hop = [hop(0, EPOCH, 0)];
    let cover: Vec<_> = (0..3)
        .map(|i| packet(EPOCH, &one_hop, COVER_MAILBOX, &[], [i; 32]))
        .collect();
    for p in &cover {
        send(&mut neighbour, relay_addr(0), p);
    }
    // A replayed cover packet is taken too: it is dropped on arrival, like the original.
    send(&mut neighbour, relay_addr(0), &cover[0]);
    // A real message and a loop need an entry: refused.
    let real = packet(EPOCH, &one_hop, MAILBOX, &text(1), [7; 32]);
    let a_loop = packet(EPOCH, &one_hop, loop_mailbox, &text(2), [8; 32]);
    send(&mut neighbour, relay_addr(0), &real);
    send(&mut neighbour, relay_addr(0), &a_loop);
    sim.run_until(ms(50));

    let stats = sim.relays[0].stats();
    let replays = DropReason::ALL
        .iter()
        .position(|r| *r == DropReason::Replay)
        .unwrap();
    assert_eq!(stats.cover_received, 4, "{stats:?}");
    assert_eq!(stats.dropped[replays], 2, "{stats:?}");
    assert_eq!(stats.replay_filter_full, 2, "{stats:?}");
    assert_eq!((stats.delivered, stats.loops_returned), (0, 0));
    assert!(delivered.lock().unwrap().is_empty());
    // The cover is counted in the fill all the same (the fill must not tell it apart).
    let fill = replay.fill(EPOCH).unwrap();
    assert_eq!(fill.packets, fill.slots + 4);
}
