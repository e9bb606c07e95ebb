//! Shared setup of the pipeline tests on the in-memory backend (`pb_io::mem`): keys, hops
//! and packets; sinks and cover sources; and [`Sim`], pipelines on a virtual network stepped
//! on a virtual clock, each exactly when it has something to do.
#![allow(dead_code, reason = "each test file uses a part of it")]
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use pb_io::{
    Packet, PacketIo,
    mem::{MemConfig, MemIo, MemNet},
};
use pb_mix::{LoopStats, Time};
use pb_pipeline::{CoverSource, Pipeline, PipelineConfig, Sink};
use pb_sphinx::{
    DelayMs, Epoch, EpochKey, Format, Hop, MailboxId, MemoryReplayFilter, NodeId, NodeKeys,
    PACKET_LEN, Processed, SurbId, create_packet_with, message, process,
};

pub const FORMAT: Format = Format::V2;
/// The mailbox test messages go to.
pub const MAILBOX: MailboxId = MailboxId([0xab; 16]);

/// Relay `i`'s key for `epoch`.
pub fn key(i: u8, epoch: Epoch) -> EpochKey {
    EpochKey::from_secret(epoch, [i + 1; 32])
}

/// Relay `i` as a hop of a route, asking for `delay_ms` there.
pub fn hop(i: u8, epoch: Epoch, delay_ms: u32) -> Hop {
    Hop {
        node: NodeId([i + 1; 16]),
        public_key: key(i, epoch).public_key(),
        delay: DelayMs(delay_ms),
    }
}

/// Keys with one format, the current one and perhaps the previous epoch's.
pub fn keys(current: EpochKey, previous: Option<EpochKey>) -> NodeKeys {
    NodeKeys {
        current,
        previous,
        format: Some(FORMAT),
    }
}

/// Relay `i`'s address on the virtual network.
pub fn relay_addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i + 1], pb_io::DEFAULT_PORT))
}

/// An endpoint config with room for every test's traffic: 8192 frames, a queue of 8192.
pub fn endpoint(bind: SocketAddr) -> MemConfig {
    MemConfig {
        frame_count: 8192,
        queue: 8192,
        ..MemConfig::new(bind)
    }
}

/// Message `n` of a test: distinct bytes per packet, a full message area.
pub fn text(n: u32) -> Vec<u8> {
    (0..FORMAT.message_len())
        .map(|j| (n as usize * 13 + j) as u8)
        .collect()
}

/// A packet along `route` carrying `message` to `mailbox`, its randomness from `seed`.
pub fn packet(
    epoch: Epoch,
    route: &[Hop],
    mailbox: MailboxId,
    message: &[u8],
    seed: [u8; 32],
) -> [u8; PACKET_LEN] {
    let mut p = [0u8; PACKET_LEN];
    create_packet_with(FORMAT, &mut p, epoch, route, mailbox, message, &seed).unwrap();
    p
}

/// Sends `bytes` from `io` to `to` now.
pub fn send(io: &mut MemIo, to: SocketAddr, bytes: &[u8]) {
    let mut p = io.alloc(to).unwrap();
    io.set_len(&mut p, bytes.len());
    io.payload_mut(&p).copy_from_slice(bytes);
    assert_eq!(io.send(&mut vec![p]).unwrap(), 1);
}

/// What a plain endpoint (a neighbour that is no pipeline) makes of a packet: unwrapped with
/// its keys.
pub type Unwrapped = Result<(Processed, Vec<u8>), pb_sphinx::DropReason>;

/// Receives everything waiting at `io` and unwraps each packet with `keys` (a fresh replay
/// filter per packet): the outcome and the delivered message area.
pub fn receive_all(io: &mut MemIo, keys: &NodeKeys) -> Vec<Unwrapped> {
    let mut got: Vec<Packet> = Vec::new();
    while io.recv(&mut got, 64, Duration::ZERO).unwrap() > 0 {}
    let out = got
        .iter()
        .map(|p| {
            let mut bytes = io.payload(p).to_vec();
            let result = process(&mut bytes, keys, &mut MemoryReplayFilter::default());
            result.map(|r| (r, message(&bytes).to_vec()))
        })
        .collect();
    io.release(&mut got);
    out
}

/// Delivered messages, in order: (mailbox, message area).
pub type Delivered = Arc<Mutex<Vec<(MailboxId, Vec<u8>)>>>;

/// A sink that keeps what is delivered.
pub struct Recorder(pub Delivered);

impl Sink for Recorder {
    fn deliver(&mut self, mailbox: MailboxId, _reply: Option<SurbId>, message: &[u8]) {
        self.0.lock().unwrap().push((mailbox, message.to_vec()));
    }
}

/// A sink that drops what is delivered.
pub struct NoSink;

impl Sink for NoSink {
    fn deliver(&mut self, _: MailboxId, _: Option<SurbId>, _: &[u8]) {}
}

/// No cover: idle slots stay empty (counted as missed), so neighbours see real packets only.
/// It says it is always ready, so that real packets still take their slots: a test-only
/// source whose link schedule follows the traffic, unlike any real one.
pub struct NoCover;

impl CoverSource for NoCover {
    fn ready(&mut self, _: usize) -> bool {
        true
    }
    fn fill(&mut self, _: usize, _: Time, _: &mut [u8; PACKET_LEN]) -> bool {
        false
    }
    fn loop_due(&mut self, _: usize, _: Time) -> bool {
        false
    }
    fn take_loop(&mut self, _: usize, _: Time, _: &mut [u8; PACKET_LEN]) -> bool {
        false
    }
    fn loop_returned(&mut self, _: &[u8], _: Time) -> bool {
        false
    }
    fn expire(&mut self, _: Time) {}
    fn loop_stats(&self, _: usize) -> LoopStats {
        LoopStats::default()
    }
}

/// The pipeline settings the tests start from: `rate` packets a second per link.
pub fn config(neighbours: Vec<pb_pipeline::Neighbour>, rate: u32) -> PipelineConfig {
    PipelineConfig {
        neighbours,
        link_rate: rate,
        link_queue: 1024,
        max_burst: 8,
        delay_capacity: 4096,
        max_delay: DelayMs(1000),
        batch: 32,
        loop_mailbox: MailboxId([0xf0; 16]),
    }
}

/// Steps at one instant beyond which the simulation is taken to be stuck.
const MAX_STEPS_AT_ONE_TIME: u32 = 1000;

/// Pipelines on a virtual network. Time moves from event to event: the earliest
/// [`Pipeline::next_deadline`] or arrival of a datagram at a pipeline's endpoint; at each,
/// every pipeline is stepped, in order, with no wait. Nothing reads a clock.
pub struct Sim<'r> {
    pub net: MemNet,
    pub relays: Vec<Pipeline<'r, MemIo>>,
    /// Turns taken over all pipelines.
    pub steps: u64,
}

impl<'r> Sim<'r> {
    /// No pipelines yet, on a network whose losses come from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            net: MemNet::new(seed),
            relays: Vec::new(),
            steps: 0,
        }
    }

    /// The virtual time.
    pub fn now(&self) -> Time {
        Time(self.net.now())
    }

    /// When a pipeline next has something to do.
    pub fn next_event(&self) -> Option<Time> {
        let now = self.now();
        self.relays
            .iter()
            .flat_map(|p| {
                let arrival = p.io().next_arrival().map(|t| Time(t).max(now));
                p.next_deadline().into_iter().chain(arrival)
            })
            .min()
    }

    /// Steps every pipeline at each event before `until`, then moves the clock to `until`.
    pub fn run_until(&mut self, until: Time) {
        self.run_while(until, |_| true);
    }

    /// Like [`run_until`](Self::run_until), but stops early, returning `true`, once `busy`
    /// says the work is done (it is asked after every event).
    pub fn run_while(&mut self, until: Time, mut busy: impl FnMut(&Self) -> bool) -> bool {
        let mut last = None;
        let mut same = 0;
        while let Some(at) = self.next_event().filter(|t| *t < until) {
            same = if last == Some(at) { same + 1 } else { 0 };
            assert!(
                same < MAX_STEPS_AT_ONE_TIME,
                "stuck at {at:?}: a pipeline cannot take what waits for it"
            );
            last = Some(at);
            self.net.set_now(at.0);
            for relay in &mut self.relays {
                relay.step(at, Duration::ZERO).unwrap();
                self.steps += 1;
            }
            if !busy(self) {
                return true;
            }
        }
        self.net.set_now(until.0);
        !busy(self)
    }
}

/// `ms` milliseconds as a [`Time`].
pub fn ms(ms: u64) -> Time {
    Time(ms * Time::MS)
}
