//! The pipeline is driven by its deadlines: `receive` holds a small batch back instead of
//! sleeping, `next_deadline` reports when it must go on, and a caller that steps only at
//! deadlines and arrivals sends every slot on time. On the in-memory network, virtual clock.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    FORMAT, MAILBOX, NoCover, NoSink, Sim, endpoint, hop, key, keys, ms, packet, receive_all,
    relay_addr, send, text,
};
use pb_io::{
    IoError, IoStats, Packet, PacketIo,
    mem::{MemIo, MemNet},
};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{
    COVER_MAILBOX, LoopCover, Neighbour, Pipeline, PipelineConfig, TOP_UP_BELOW, TOP_UP_WAIT,
};
use pb_sphinx::{Epoch, MailboxId, Processed};

const EPOCH: Epoch = Epoch(1);
const TOP_UP: u64 = TOP_UP_WAIT.as_nanos() as u64;

/// A [`MemIo`] that remembers the timeout of every `recv`.
struct Spy {
    inner: MemIo,
    waits: Vec<Duration>,
}

impl PacketIo for Spy {
    fn recv(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize, IoError> {
        self.waits.push(timeout);
        self.inner.recv(out, max, timeout)
    }
    fn send(&mut self, batch: &mut Vec<Packet>) -> Result<usize, IoError> {
        self.inner.send(batch)
    }
    fn release(&mut self, packets: &mut Vec<Packet>) {
        self.inner.release(packets);
    }
    fn alloc(&mut self, peer: SocketAddr) -> Option<Packet> {
        self.inner.alloc(peer)
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
    fn set_len(&mut self, packet: &mut Packet, len: usize) {
        self.inner.set_len(packet, len);
    }
    fn payload(&self, packet: &Packet) -> &[u8] {
        self.inner.payload(packet)
    }
    fn payload_mut(&mut self, packet: &Packet) -> &mut [u8] {
        self.inner.payload_mut(packet)
    }
    fn with_payloads_mut(&mut self, packets: &[Packet], f: &mut dyn FnMut(&mut [&mut [u8]])) {
        self.inner.with_payloads_mut(packets, f);
    }
    fn poll_completions(&mut self) -> Result<usize, IoError> {
        self.inner.poll_completions()
    }
    fn stats(&self) -> IoStats {
        self.inner.stats()
    }
    fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr()
    }
}

fn link_config(batch: usize) -> PipelineConfig {
    PipelineConfig {
        batch,
        ..common::config(
            vec![Neighbour {
                node: hop(1, EPOCH, 1).node,
                addr: relay_addr(1),
            }],
            100,
        )
    }
}

/// A packet for the relay at `relay_addr(0)`, on to neighbour 1 after `delay_ms`.
fn through(n: u32, delay_ms: u32) -> [u8; pb_sphinx::PACKET_LEN] {
    let route = [hop(0, EPOCH, delay_ms), hop(1, EPOCH, 1)];
    packet(EPOCH, &route, MAILBOX, &text(n), [n as u8 + 1; 32])
}

/// Steps the pipeline at `at` (moving the network's clock there first) with a long wait.
fn step_at(net: &MemNet, pipeline: &mut Pipeline<'_, Spy>, at: Time) {
    net.set_now(at.0);
    pipeline.step(at, Duration::from_secs(3600)).unwrap();
}

/// A lone packet is held back, not unwrapped, until `TOP_UP_WAIT` after it came, and
/// `next_deadline` says so; the wait asked of the backend never runs past that deadline
/// (however long the caller would wait); a batch that fills up to `TOP_UP_BELOW` goes at
/// once; with batches smaller than that nothing is held back.
#[test]
fn a_small_batch_waits_for_company_until_its_deadline() {
    let replay = SharedReplayFilter::new(1000).unwrap();
    replay.prepare(EPOCH);
    let net = MemNet::new(1);
    let mut client = net
        .bind(&endpoint("10.0.0.100:0".parse().unwrap()))
        .unwrap();
    let spy = |net: &MemNet| Spy {
        inner: net.bind(&endpoint(relay_addr(0))).unwrap(),
        waits: Vec::new(),
    };
    let mut pipeline = Pipeline::new(
        spy(&net),
        &link_config(32),
        keys(key(0, EPOCH), None),
        &replay,
        Box::new(NoCover),
        Box::new(NoSink),
        Time(0),
    )
    .unwrap();
    step_at(&net, &mut pipeline, Time(0));
    assert_eq!(pipeline.next_deadline(), Some(ms(10)), "the next slot");

    // One packet at 1 ms: held until 1 ms + TOP_UP_WAIT.
    send(&mut client, relay_addr(0), &through(0, 3));
    step_at(&net, &mut pipeline, ms(1));
    assert_eq!(pipeline.stats().received, 0);
    let until = ms(1).plus(TOP_UP);
    assert_eq!(pipeline.next_deadline(), Some(until));
    step_at(&net, &mut pipeline, Time(until.0 - 1));
    assert_eq!(pipeline.stats().received, 0);
    assert_eq!(
        pipeline.io().waits.last(),
        Some(&Duration::from_nanos(1)),
        "the backend waits only until the deadline"
    );
    step_at(&net, &mut pipeline, until);
    assert_eq!(pipeline.io().waits.last(), Some(&Duration::ZERO));
    let s = pipeline.stats();
    assert_eq!((s.received, s.forwarded), (1, 1));
    // Next: its delay ends (1.15 ms + 3 ms, on the delay queue's 1 ms ticks) before the slot.
    assert_eq!(pipeline.next_deadline(), Some(ms(5)));

    // One packet at 20 ms, then three more: the batch of four goes before the deadline.
    step_at(&net, &mut pipeline, ms(20));
    send(&mut client, relay_addr(0), &through(1, 3));
    step_at(&net, &mut pipeline, ms(20));
    assert_eq!(pipeline.next_deadline(), Some(ms(20).plus(TOP_UP)));
    for n in 2..1 + TOP_UP_BELOW as u32 {
        send(&mut client, relay_addr(0), &through(n, 3));
    }
    step_at(&net, &mut pipeline, ms(20).plus(10_000));
    assert_eq!(pipeline.stats().received, 1 + TOP_UP_BELOW as u64);
    assert_eq!(pipeline.next_deadline(), Some(ms(24)), "no top-up pending");

    // Batches below TOP_UP_BELOW are never held.
    let net = MemNet::new(1);
    let mut client = net
        .bind(&endpoint("10.0.0.100:0".parse().unwrap()))
        .unwrap();
    let mut small = Pipeline::new(
        spy(&net),
        &link_config(TOP_UP_BELOW - 1),
        keys(key(0, EPOCH), None),
        &replay,
        Box::new(NoCover),
        Box::new(NoSink),
        Time(0),
    )
    .unwrap();
    send(&mut client, relay_addr(0), &through(9, 3));
    step_at(&net, &mut small, ms(1));
    assert_eq!(small.stats().received, 1);
}

/// A pipeline stepped only at its deadlines and at arrivals (13 turns for 100 ms: ten
/// slots, the arrival, the top-up deadline, the delay's end) sends one packet in each slot
/// at the slot's time, cover in the idle ones, and the real packet in the first slot after
/// its delay: 1 ms arrival + 0.15 ms top-up + 25 ms delay, on the 27 ms tick, goes at 30 ms.
#[test]
fn stepping_only_at_deadlines_keeps_every_slot() {
    let replay = SharedReplayFilter::new(1000).unwrap();
    replay.prepare(EPOCH);
    let mut sim = Sim::new(1);
    let mut neighbour = sim.net.bind(&endpoint(relay_addr(1))).unwrap();
    let loops = LoopMonitor::new([1; 32], 1, 16, Time(Time::SECOND)).unwrap();
    let cover = LoopCover::new(
        FORMAT,
        EPOCH,
        vec![vec![hop(1, EPOCH, 1)]],
        MailboxId([0xf0; 16]),
        0,
        loops,
        [2; 32],
    );
    let io = sim.net.bind(&endpoint(relay_addr(0))).unwrap();
    sim.relays.push(
        Pipeline::new(
            io,
            &link_config(32),
            keys(key(0, EPOCH), None),
            &replay,
            Box::new(cover),
            Box::new(NoSink),
            Time(0),
        )
        .unwrap(),
    );
    let mut client = sim
        .net
        .bind(&endpoint("10.0.0.100:0".parse().unwrap()))
        .unwrap();
    sim.run_until(ms(1));
    send(&mut client, relay_addr(0), &through(0, 25));
    sim.run_until(ms(100));

    assert_eq!(sim.steps, 13);
    let log = sim.net.transmissions();
    let times: Vec<u64> = log
        .iter()
        .filter(|t| t.src == relay_addr(0))
        .map(|t| t.at)
        .collect();
    assert_eq!(times, (0..10).map(|k| ms(10 * k).0).collect::<Vec<_>>());
    let arrived = receive_all(&mut neighbour, &keys(key(1, EPOCH), None));
    for (slot, result) in arrived.iter().enumerate() {
        match result {
            Ok((Processed::Deliver { mailbox, .. }, message)) if slot == 3 => {
                assert_eq!((*mailbox, message), (MAILBOX, &text(0)));
            }
            Ok((Processed::Deliver { mailbox, .. }, _)) => assert_eq!(*mailbox, COVER_MAILBOX),
            other => panic!("slot {slot}: {other:?}"),
        }
    }
    assert_eq!(arrived.len(), 10);
}
