//! One relay core's packet pipeline over any [`PacketIo`] backend (AF_XDP or UDP):
//!
//! ```text
//! recv batch ─▶ process_batch (in place, SIMD lanes) ─▶ shared replay filter
//!   ─▶ delay queue (the header's delay, at every hop, the last one included)
//!   ─▶ the next hop's link (bounded queue), or the Sink for packets delivered here
//!   ─▶ pacer: every 1/R a due real packet, else a loop cover packet ─▶ send batch
//! ```
//!
//! Packets delivered to this relay go to a [`Sink`] (a gateway's mailboxes, an exit), except
//! its own returning loops, which its [`CoverSource`] counts per link.
//! Frames stay in the backend's pool from receive to transmit; nothing allocates per packet
//! (cover packets are built into freshly allocated frames of the pool).
//!
//! A relay with several cores runs one pipeline per core (per NIC queue or `SO_REUSEPORT`
//! socket), all sharing one replay filter. Each link is owned by one core, which paces it
//! and sends on it ([`Pipeline::shard`]); a packet received on another core crosses to the
//! owner through a bounded lock-free [`Handoff`] once its delay is over. Cover can be built
//! on a core of its own ([`CoverPool`]).
//!
//! Not here: threads, clocks and sleeping (the caller passes `now`, waits until
//! [`Pipeline::next_deadline`] and calls [`Pipeline::step`]); configuration files, keys and
//! topology (pb-relay's); the packet format (pb-sphinx) and the mixing structures (pb-mix).
#![forbid(unsafe_code)]

mod cover;
mod handoff;
pub mod ready;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use pb_io::{IoError, Packet, PacketIo};
use pb_mix::{
    DelayError, DelayQueue, Filler, Link, LinkStats, LoopStats, SharedReplayFilter, Time,
};
use pb_sphinx::{
    DelayMs, DropReason, MailboxId, NodeId, NodeKeys, PACKET_LEN, Processed, SurbId, message,
    process_batch,
};

pub use cover::{
    COVER_MAILBOX, CoverHandle, CoverPool, CoverSource, DEFAULT_LOOP_DELAY, LoopCover, LoopPlan,
};
pub use handoff::Handoff;

/// What unwrapping a packet is assumed to cost before the first batch is measured: a
/// serial X25519 and the symmetric work, on a slow core.
const INITIAL_UNWRAP_NS: u64 = 100_000;
/// The most one batch's measured time per packet counts for: unwrapping a packet takes tens
/// of microseconds, and a batch that measured more was interrupted (its thread preempted,
/// the machine stalled), which says nothing of the next one.
const MAX_UNWRAP_SAMPLE_NS: u64 = 1_000_000;

/// Room before a slot in which a core finding that no packet fits means the estimate is
/// wrong: twice what a packet costs on a slow core. Below it, "no packet fits" is how a
/// core's work normally ends before its slot, and lowering the estimate there would let
/// the next batch run into the slot.
const RELIEF_ROOM_NS: u64 = 2 * INITIAL_UNWRAP_NS;

/// The moving average of what unwrapping one packet costs (1/8 new), after a batch that
/// took `sample` nanoseconds a packet (at most [`MAX_UNWRAP_SAMPLE_NS`] of it counts).
fn unwrap_estimate(old: u64, sample: u64) -> u64 {
    (old.saturating_mul(7) + sample.min(MAX_UNWRAP_SAMPLE_NS)) / 8
}

/// The estimate after a core had `room` nanoseconds before a slot and `estimate` left no
/// packet to unwrap in it: 1/16 lower if the room was at least [`RELIEF_ROOM_NS`],
/// unchanged otherwise.
fn relieved_estimate(estimate: u64, room: u64) -> u64 {
    if room >= RELIEF_ROOM_NS && estimate > room {
        (estimate - estimate / 16).max(1)
    } else {
        estimate
    }
}

/// One outgoing link: the neighbour's node id and UDP endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// Its node id, as routing commands name it.
    pub node: NodeId,
    /// Where its packets go.
    pub addr: SocketAddr,
}

/// Settings of one pipeline.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// The links, one per next-hop neighbour.
    pub neighbours: Vec<Neighbour>,
    /// Packets per second on every link.
    pub link_rate: u32,
    /// Real packets a link queues before refusing.
    pub link_queue: usize,
    /// Late slots a link sends at once before counting the rest as missed.
    pub max_burst: u32,
    /// Packets the delay queue holds.
    pub delay_capacity: usize,
    /// Longest per-hop delay accepted.
    pub max_delay: DelayMs,
    /// Packets received per batch (at most [`pb_io::MAX_BATCH`]).
    pub batch: usize,
    /// This relay's loop mailbox: packets delivered to it are its own loops returning.
    pub loop_mailbox: MailboxId,
}

/// Where delivered packets go (the role: a gateway's mailboxes, an exit's streams).
pub trait Sink {
    /// A packet for `mailbox` arrived with `message`: the delivered message area, or, for a
    /// SURB reply (`reply` names the SURB), the still-wrapped payload, which only the SURB's
    /// owner can open.
    fn deliver(&mut self, mailbox: MailboxId, reply: Option<SurbId>, message: &[u8]);
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// A mixing structure's setting is out of range.
    #[error("{what}: {source}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// Why.
        #[source]
        source: pb_mix::ConfigError,
    },
    /// Two links name the same neighbour.
    #[error("neighbour {0:?} is listed twice")]
    DuplicateNeighbour(NodeId),
    /// The backend failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// A shard's core or link owners do not fit the handoff or the links.
    #[error("shard: {0}")]
    Shard(&'static str),
}

/// Counters of one pipeline. Per-link slot counts are in [`Pipeline::link_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipelineStats {
    /// Packets received, counted when their batch is unwrapped (a held-back small batch
    /// counts once it goes on, see [`TOP_UP_BELOW`]).
    pub received: u64,
    /// Packets unwrapped and queued for their next hop.
    pub forwarded: u64,
    /// Packets delivered to the sink.
    pub delivered: u64,
    /// Own loops queued on their links.
    pub loops_sent: u64,
    /// Messages delivered to the relay's own loop mailbox and passed to the cover source to
    /// be checked (its [`LoopStats`] count the loops that were genuine and in time).
    pub loops_returned: u64,
    /// Link cover from neighbours, received and dropped.
    pub cover_received: u64,
    /// Packets dropped by pb-sphinx, by [`DropReason`] (indexed like [`DropReason::ALL`]).
    /// `Replay` also counts the packets the replay filter could not record, which it refuses
    /// as if replayed: those are counted again in the two fields below.
    pub dropped: [u64; DropReason::ALL.len()],
    /// Of the `Replay` drops: the replay filter's table was full around the packet's slot.
    pub replay_filter_full: u64,
    /// Of the `Replay` drops: no replay-filter table served the packet's epoch.
    pub replay_filter_no_table: u64,
    /// Forwarded packets naming a next hop this relay has no link to (on arrival, or when
    /// their delay ended after the link went away with a new topology).
    pub dropped_no_link: u64,
    /// Packets the delay queue refused, by reason (full, too long, lagging).
    pub dropped_delay: [u64; 3],
    /// Packets a full link queue refused.
    pub dropped_link_full: u64,
    /// Cover packets that could not be built (no frame, or the cover source failed).
    pub cover_failures: u64,
    /// Packets passed to the core that owns their link.
    pub handed_off: u64,
    /// Packets another core passed to this one for a link it owns.
    pub taken_over: u64,
    /// Packets that could not cross to their link's core (its inbox full, no buffer free,
    /// or, on arrival, no frame free).
    pub dropped_handoff: u64,
    /// Packets the relay made itself ([`Handoff::inject`]) taken for a link it has.
    pub injected: u64,
    /// Packets that arrived over a gateway's client links and joined a batch.
    pub arrived: u64,
}

/// A received batch smaller than this is held back (not yet unwrapped) for up to
/// [`TOP_UP_WAIT`], so that more packets can join it: the unwrap runs four packets per SIMD
/// group, and a lone packet or two would waste most of one.
pub const TOP_UP_BELOW: usize = 4;
/// How long a small batch waits for company (adds at most this to a packet's latency). The
/// wait is a deadline in [`Pipeline::next_deadline`], not a sleep.
pub const TOP_UP_WAIT: Duration = Duration::from_micros(150);

/// A packet held in the delay queue for the delay its header asks of this hop: one to
/// forward (its next hop; links may change while it waits) or one to deliver here (its
/// mailbox, and for a SURB reply the SURB). A last hop holds packets like any other hop, so
/// what an exit or a gateway releases is mixed as much as what a mix forwards.
enum Held {
    Forward(Packet, NodeId),
    Deliver {
        packet: Packet,
        mailbox: MailboxId,
        reply: Option<SurbId>,
    },
}

impl Held {
    fn into_packet(self) -> Packet {
        match self {
            Held::Forward(packet, _) | Held::Deliver { packet, .. } => packet,
        }
    }
}

/// The index of a delay-queue refusal in [`PipelineStats::dropped_delay`].
fn delay_error_index(reason: DelayError) -> usize {
    match reason {
        DelayError::Full => 0,
        DelayError::TooLong => 1,
        DelayError::Lagging => 2,
    }
}

/// One core's pipeline over backend `I`.
pub struct Pipeline<'r, I: PacketIo> {
    io: I,
    keys: NodeKeys,
    replay: &'r SharedReplayFilter,
    delay: DelayQueue<Held>,
    links: Vec<Link<Packet>>,
    neighbours: Vec<Neighbour>,
    link_of: HashMap<NodeId, usize>,
    cover: Box<dyn CoverSource + Send>,
    sink: Box<dyn Sink + Send>,
    loop_mailbox: MailboxId,
    /// Whether idle slots carry cover (always, but in a known-bad testbed configuration).
    cover_on: bool,
    /// What unwrapping a packet costs lately, in nanoseconds ([`Pipeline::unwrap_cost`]).
    unwrap_ns: u64,
    /// The links' slot offsets: the largest, in nanoseconds, and the key every link's own
    /// is derived from ([`Pipeline::with_slot_jitter`]).
    jitter: Option<(u64, zeroize::Zeroizing<[u8; 32]>)>,
    batch: usize,
    /// A new link's rate, queue capacity and burst.
    rate: (u32, usize, u32),
    /// This pipeline's core and the core owning each link (all 0 for a lone pipeline).
    core: usize,
    owner: Vec<usize>,
    handoff: Option<Arc<Handoff>>,
    /// Received packets not yet unwrapped: a batch waiting for company until
    /// `top_up_until`.
    rx: Vec<Packet>,
    /// When a held-back small batch must be unwrapped, with or without company.
    top_up_until: Option<Time>,
    tx: Vec<Packet>,
    /// Frames on their way back to the pool (reused, so no allocation per turn).
    spare: Vec<Packet>,
    results: Vec<Result<Processed, DropReason>>,
    stats: PipelineStats,
}

impl<I: PacketIo> core::fmt::Debug for Pipeline<'_, I> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stats", &self.stats)
            .field("links", &self.links)
            .finish_non_exhaustive()
    }
}

impl<'r, I: PacketIo> Pipeline<'r, I> {
    /// A pipeline on `io` processing with `keys`, sharing `replay` with the relay's other
    /// cores, filling idle slots from `cover` (which also counts the loops), starting at `now`.
    pub fn new(
        io: I,
        config: &PipelineConfig,
        keys: NodeKeys,
        replay: &'r SharedReplayFilter,
        cover: Box<dyn CoverSource + Send>,
        sink: Box<dyn Sink + Send>,
        now: Time,
    ) -> Result<Self, PipelineError> {
        let config_error = |what| move |source| PipelineError::Config { what, source };
        let delay = DelayQueue::new(config.delay_capacity, config.max_delay, now)
            .map_err(config_error("delay queue"))?;
        let mut links = Vec::new();
        let mut link_of = HashMap::new();
        for (i, n) in config.neighbours.iter().enumerate() {
            if link_of.insert(n.node, i).is_some() {
                return Err(PipelineError::DuplicateNeighbour(n.node));
            }
            links.push(
                Link::new(
                    config.link_rate,
                    config.link_queue,
                    config.max_burst,
                    now.plus(phase(i, config.neighbours.len(), config.link_rate)),
                )
                .map_err(config_error("link"))?,
            );
        }
        let batch = config.batch.clamp(1, pb_io::MAX_BATCH);
        Ok(Self {
            io,
            keys,
            replay,
            delay,
            links,
            neighbours: config.neighbours.clone(),
            link_of,
            cover,
            sink,
            loop_mailbox: config.loop_mailbox,
            cover_on: true,
            unwrap_ns: INITIAL_UNWRAP_NS,
            jitter: None,
            batch,
            rate: (config.link_rate, config.link_queue, config.max_burst),
            core: 0,
            owner: vec![0; config.neighbours.len()],
            handoff: None,
            rx: Vec::with_capacity(batch),
            top_up_until: None,
            tx: Vec::with_capacity(4 * batch),
            spare: Vec::with_capacity(4 * batch),
            results: vec![Err(DropReason::WrongLength); batch],
            stats: PipelineStats::default(),
        })
    }

    /// INSECURE, for the anonymity harness's known-bad configuration only: idle slots stay
    /// empty instead of carrying cover (and count as missed), so that every link's rate
    /// follows its real traffic, which is exactly what an observer must not see.
    #[must_use]
    pub fn without_cover(mut self) -> Self {
        self.cover_on = false;
        self
    }

    /// Offsets every link's slots by secret amounts below `max` (see
    /// [`pb_mix::Link::with_jitter`]; at most half a slot interval), each link's drawn
    /// from `seed` and its neighbour's node id. Links made later get theirs too.
    #[must_use]
    pub fn with_slot_jitter(mut self, max: Duration, seed: [u8; 32]) -> Self {
        let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let jitter = (max > 0).then(|| (max, zeroize::Zeroizing::new(seed)));
        let links = std::mem::take(&mut self.links);
        self.links = links
            .into_iter()
            .zip(&self.neighbours)
            .map(|(link, n)| jittered(link, jitter.as_ref(), n.node))
            .collect();
        self.jitter = jitter;
        self
    }

    /// Makes this pipeline core `core` of several sharing `handoff`: it paces and sends only
    /// the links `owner` gives to it (`owner[link]` is the owning core) and passes packets
    /// for the others to their owners.
    pub fn shard(
        mut self,
        core: usize,
        owner: Vec<usize>,
        handoff: Arc<Handoff>,
    ) -> Result<Self, PipelineError> {
        if core >= handoff.cores() {
            return Err(PipelineError::Shard(
                "core number beyond the handoff's cores",
            ));
        }
        if owner.len() != self.links.len() {
            return Err(PipelineError::Shard("one owner per link needed"));
        }
        if owner.iter().any(|o| *o >= handoff.cores()) {
            return Err(PipelineError::Shard(
                "a link's owner is beyond the handoff's cores",
            ));
        }
        self.core = core;
        self.owner = owner;
        self.handoff = Some(handoff);
        Ok(self)
    }

    /// Whether this pipeline paces and sends on `link`.
    pub fn owns(&self, link: usize) -> bool {
        self.owner.get(link) == Some(&self.core)
    }

    /// Counters so far.
    pub fn stats(&self) -> PipelineStats {
        self.stats
    }

    /// Slot counters of every link, in neighbour order (zero for links other cores own).
    pub fn link_stats(&self) -> Vec<LinkStats> {
        self.links.iter().map(|l| l.stats).collect()
    }

    /// Loop counters of link `link` (sent, returned, lost).
    pub fn loop_stats(&self, link: usize) -> LoopStats {
        self.cover.loop_stats(link)
    }

    /// The backend (its counters).
    pub fn io(&self) -> &I {
        &self.io
    }

    /// The backend, to change its settings (such as the sources it serves,
    /// [`PacketIo::set_sources`]) between turns.
    pub fn io_mut(&mut self) -> &mut I {
        &mut self.io
    }

    /// Replaces the keys (epoch rotation).
    pub fn set_keys(&mut self, keys: NodeKeys) {
        self.keys = keys;
    }

    /// When the pipeline next has something to do without input: the earliest slot of a link
    /// it owns, delay expiry or held-back small batch ([`TOP_UP_WAIT`]). A caller sleeps
    /// until then (or until a packet arrives) and calls [`step`](Self::step); `None` when
    /// nothing is pending. Packets other cores hand over are taken on the next turn, at the
    /// latest at the owned link's next slot, which is when they could leave anyway.
    pub fn next_deadline(&self) -> Option<Time> {
        self.links
            .iter()
            .enumerate()
            .filter(|(i, _)| self.owns(*i))
            .map(|(_, l)| l.next_slot_time())
            .chain(self.delay.next_due())
            .chain(self.top_up_until)
            .min()
    }

    /// One turn: receive a batch (waiting at most `wait`, and never past a held-back
    /// batch's deadline), unwrap it, release due packets to their links, fill due slots,
    /// send. Never sleeps itself: a small batch is held back until it fills up or its
    /// deadline passes (see [`TOP_UP_BELOW`]), which [`next_deadline`](Self::next_deadline)
    /// reports.
    pub fn step(&mut self, now: Time, wait: Duration) -> Result<(), IoError> {
        self.step_within(now, wait, self.batch)
    }

    /// As [`step`](Self::step), unwrapping at most `budget` packets (at least one); the
    /// rest of a batch waits for the next turn. A core that must send a slot soon gives the
    /// budget that [`unwrap_cost`](Self::unwrap_cost) says fits before it.
    pub fn step_within(&mut self, now: Time, wait: Duration, budget: usize) -> Result<(), IoError> {
        self.receive(now, wait, budget.max(1))?;
        self.emit(now)
    }

    /// Sends what is due at `now` without receiving: packets whose delay expired go to
    /// their links, and the links' due slots leave (real packets or cover). A core calls
    /// it at a slot's deadline, when nothing else may come first.
    pub fn emit(&mut self, now: Time) -> Result<(), IoError> {
        self.prepare(now);
        self.send_slots(now)
    }

    /// The first half of [`emit`](Self::emit): packets whose delay expired by `now` go to
    /// their links (or are delivered), and packets other cores handed over are taken. A
    /// core does this just before a slot's deadline, so that at the deadline only the
    /// send is left.
    pub fn prepare(&mut self, now: Time) {
        self.release_due(now);
        self.take_over();
    }

    /// The second half of [`emit`](Self::emit): the links' slots due by `now` leave.
    pub fn send_slots(&mut self, now: Time) -> Result<(), IoError> {
        self.transmit(now)?;
        self.cover.expire(now);
        Ok(())
    }

    /// The earliest slot of a link this core owns (`None`: no links).
    pub fn next_slot(&self) -> Option<Time> {
        self.links
            .iter()
            .enumerate()
            .filter(|(i, _)| self.owns(*i))
            .map(|(_, l)| l.next_slot_time())
            .min()
    }

    /// What unwrapping one packet has cost lately (a moving average over batches), for a
    /// core to size the work it starts before a slot.
    pub fn unwrap_cost(&self) -> Duration {
        Duration::from_nanos(self.unwrap_ns)
    }

    /// The core had `room` before a slot and the estimate left no packet to unwrap in it.
    /// Where that room is ample (twice a slow core's cost a packet) the estimate is lowered
    /// by 1/16, since only unwrapping measures it again: without this, an estimate above
    /// the time between a core's slots would keep the core from ever receiving again.
    pub fn relieve_unwrap_cost(&mut self, room: Duration) {
        let room = u64::try_from(room.as_nanos()).unwrap_or(u64::MAX);
        self.unwrap_ns = relieved_estimate(self.unwrap_ns, room);
    }

    /// Receives into the batch and unwraps up to `budget` of it, unless it is too small and
    /// its top-up deadline has not passed (then it waits in `rx` for the next turn).
    fn receive(&mut self, now: Time, wait: Duration, budget: usize) -> Result<(), IoError> {
        let wait = match self.top_up_until {
            Some(until) => wait.min(Duration::from_nanos(until.0.saturating_sub(now.0))),
            None => wait,
        };
        // Packets a gateway's clients sent over their links join the batch first; then
        // the wire, without waiting if they already make a batch.
        let wait = if self.take_arrivals() > 0 || self.rx.len() >= TOP_UP_BELOW {
            Duration::ZERO
        } else {
            wait
        };
        let room = self.batch - self.rx.len();
        self.io.recv(&mut self.rx, room, wait)?;
        let got = self.rx.len();
        if got == 0 {
            return Ok(());
        }
        if got < TOP_UP_BELOW && self.batch >= TOP_UP_BELOW {
            let until = *self
                .top_up_until
                .get_or_insert(now.plus(TOP_UP_WAIT.as_nanos() as u64));
            if now < until {
                return Ok(());
            }
        }
        self.top_up_until = None;
        let got = got.min(budget);
        self.stats.received += got as u64;
        let (keys, results) = (&self.keys, &mut self.results[..got]);
        let mut replay = self.replay.handle();
        let started = std::time::Instant::now();
        self.io.with_payloads_mut(&self.rx[..got], &mut |payloads| {
            process_batch(payloads, keys, &mut replay, &mut results[..payloads.len()]);
        });
        let per_packet = (started.elapsed().as_nanos() / got as u128) as u64;
        // A moving average, so that one slow batch does not starve the next.
        self.unwrap_ns = unwrap_estimate(self.unwrap_ns, per_packet);
        self.stats.replay_filter_full += replay.stats.full;
        self.stats.replay_filter_no_table += replay.stats.no_table;
        let drop = &mut self.spare;
        for (packet, result) in self.rx.drain(..got).zip(self.results.iter()) {
            match *result {
                Ok(Processed::Forward { next, delay, .. }) => {
                    if !self.link_of.contains_key(&next) {
                        self.stats.dropped_no_link += 1;
                        drop.push(packet);
                        continue;
                    }
                    match self.delay.insert(now, delay, Held::Forward(packet, next)) {
                        Ok(()) => self.stats.forwarded += 1,
                        Err((reason, held)) => {
                            self.stats.dropped_delay[delay_error_index(reason)] += 1;
                            drop.push(held.into_packet());
                        }
                    }
                }
                Ok(Processed::Deliver { mailbox, delay, .. }) => {
                    let held = Held::Deliver {
                        packet,
                        mailbox,
                        reply: None,
                    };
                    if let Err((reason, held)) = self.delay.insert(now, delay, held) {
                        self.stats.dropped_delay[delay_error_index(reason)] += 1;
                        drop.push(held.into_packet());
                    }
                }
                Ok(Processed::DeliverReply {
                    mailbox,
                    surb,
                    delay,
                    ..
                }) => {
                    let held = Held::Deliver {
                        packet,
                        mailbox,
                        reply: Some(surb),
                    };
                    if let Err((reason, held)) = self.delay.insert(now, delay, held) {
                        self.stats.dropped_delay[delay_error_index(reason)] += 1;
                        drop.push(held.into_packet());
                    }
                }
                Err(reason) => {
                    if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
                        self.stats.dropped[i] += 1;
                    }
                    drop.push(packet);
                }
            }
        }
        self.io.release(&mut self.spare);
        Ok(())
    }

    /// Moves packets that arrived over client links into the batch, each in a frame of
    /// this core's pool; how many.
    fn take_arrivals(&mut self) -> usize {
        let Some(handoff) = &self.handoff else {
            return 0;
        };
        if !handoff.has_arrivals() {
            return 0;
        }
        let mut taken = 0;
        let local = self.io.local_addr();
        while self.rx.len() < self.batch {
            let Some(bytes) = handoff.receive_arrival() else {
                break;
            };
            match self.io.alloc(local) {
                Some(mut packet) => {
                    self.io.set_len(&mut packet, PACKET_LEN);
                    self.io.payload_mut(&packet).copy_from_slice(&bytes[..]);
                    self.stats.arrived += 1;
                    self.rx.push(packet);
                    taken += 1;
                }
                None => self.stats.dropped_handoff += 1,
            }
            handoff.give_back(bytes);
        }
        taken
    }

    fn release_due(&mut self, now: Time) {
        let Self {
            io,
            links,
            link_of,
            stats,
            spare,
            delay,
            core,
            owner,
            handoff,
            sink,
            cover,
            loop_mailbox,
            ..
        } = self;
        delay.poll_due(now, |held| {
            let (packet, next) = match held {
                Held::Forward(packet, next) => (packet, next),
                Held::Deliver {
                    packet,
                    mailbox,
                    reply,
                } => {
                    match reply {
                        None => {
                            let bytes = message(io.payload(&packet));
                            if mailbox == COVER_MAILBOX {
                                stats.cover_received += 1;
                            } else if mailbox == *loop_mailbox {
                                if cover.loop_returned(bytes, now) {
                                    stats.loops_returned += 1;
                                }
                            } else {
                                sink.deliver(mailbox, None, bytes);
                                stats.delivered += 1;
                            }
                        }
                        Some(surb) => {
                            let payload = pb_sphinx::payload_mut(io.payload_mut(&packet));
                            sink.deliver(mailbox, Some(surb), payload);
                            stats.delivered += 1;
                        }
                    }
                    spare.push(packet);
                    return;
                }
            };
            let Some(&link) = link_of.get(&next) else {
                stats.dropped_no_link += 1;
                spare.push(packet);
                return;
            };
            if owner[link] == *core {
                if let Err(packet) = links[link].push(packet) {
                    stats.dropped_link_full += 1;
                    spare.push(packet);
                }
                return;
            }
            let crossed = handoff
                .as_ref()
                .is_some_and(|h| h.send(owner[link], next, io.payload(&packet)));
            if crossed {
                stats.handed_off += 1;
            } else {
                stats.dropped_handoff += 1;
            }
            spare.push(packet);
        });
        io.release(spare);
    }

    /// Moves packets other cores passed to this one into frames of its own, onto their links.
    fn take_over(&mut self) {
        let Some(handoff) = &self.handoff else {
            return;
        };
        while let Some(crossing) = handoff.receive(self.core) {
            // While a new topology reaches the cores one after the other, a packet may come
            // for a link this core does not (or no longer) own: dropped and counted.
            let link = self
                .link_of
                .get(&crossing.next)
                .copied()
                .filter(|l| self.owner[*l] == self.core);
            let frame = link.and_then(|l| self.io.alloc(self.neighbours[l].addr));
            match (link, frame) {
                (Some(link), Some(mut packet)) => {
                    self.io.set_len(&mut packet, PACKET_LEN);
                    self.io
                        .payload_mut(&packet)
                        .copy_from_slice(&crossing.bytes[..]);
                    self.stats.taken_over += 1;
                    if let Err(packet) = self.links[link].push(packet) {
                        self.stats.dropped_link_full += 1;
                        self.spare.push(packet);
                    }
                }
                _ => self.stats.dropped_handoff += 1,
            }
            handoff.give_back(crossing.bytes);
        }
        // Packets the relay made itself: onto the link here, or on to its owner.
        while let Some(injected) = handoff.receive_injected() {
            let Some(&link) = self.link_of.get(&injected.next) else {
                self.stats.dropped_no_link += 1;
                continue;
            };
            self.stats.injected += 1;
            if self.owner[link] != self.core {
                if handoff.send(self.owner[link], injected.next, &injected.bytes[..]) {
                    self.stats.handed_off += 1;
                } else {
                    self.stats.dropped_handoff += 1;
                }
                continue;
            }
            match self.io.alloc(self.neighbours[link].addr) {
                Some(mut packet) => {
                    self.io.set_len(&mut packet, PACKET_LEN);
                    self.io
                        .payload_mut(&packet)
                        .copy_from_slice(&injected.bytes[..]);
                    if let Err(packet) = self.links[link].push(packet) {
                        self.stats.dropped_link_full += 1;
                        self.spare.push(packet);
                    }
                }
                None => self.stats.dropped_handoff += 1,
            }
        }
        self.io.release(&mut self.spare);
    }

    /// Replaces the links with `neighbours` (a new topology), `owner[i]` being the core that
    /// owns link `i` (all 0 without a handoff). A neighbour that stays keeps its link, pacer
    /// and queue (its address is updated); a new one gets a new link starting at `now`; the
    /// packets queued for one that goes are dropped and counted as `dropped_no_link`. Packets
    /// still in the delay queue go to their next hop's link when due, if it still has one.
    pub fn set_neighbours(
        &mut self,
        neighbours: Vec<Neighbour>,
        owner: Vec<usize>,
        now: Time,
    ) -> Result<(), PipelineError> {
        let cores = self.handoff.as_ref().map_or(1, |h| h.cores());
        if owner.len() != neighbours.len() {
            return Err(PipelineError::Shard("one owner per link needed"));
        }
        if owner.iter().any(|o| *o >= cores) {
            return Err(PipelineError::Shard(
                "a link's owner is beyond the handoff's cores",
            ));
        }
        let mut link_of = HashMap::new();
        for (i, n) in neighbours.iter().enumerate() {
            if link_of.insert(n.node, i).is_some() {
                return Err(PipelineError::DuplicateNeighbour(n.node));
            }
        }
        let mut old: HashMap<NodeId, Link<Packet>> = self
            .neighbours
            .iter()
            .map(|n| n.node)
            .zip(self.links.drain(..))
            .collect();
        let mut links = Vec::with_capacity(neighbours.len());
        for (i, n) in neighbours.iter().enumerate() {
            let link = match old.remove(&n.node) {
                Some(link) => link,
                None => jittered(
                    Link::new(
                        self.rate.0,
                        self.rate.1,
                        self.rate.2,
                        now.plus(phase(i, neighbours.len(), self.rate.0)),
                    )
                    .map_err(|source| PipelineError::Config {
                        what: "link",
                        source,
                    })?,
                    self.jitter.as_ref(),
                    n.node,
                ),
            };
            links.push(link);
        }
        for (_, mut gone) in old {
            for packet in gone.drain() {
                self.stats.dropped_no_link += 1;
                self.spare.push(packet);
            }
        }
        self.io.release(&mut self.spare);
        self.links = links;
        self.link_of = link_of;
        self.neighbours = neighbours;
        self.owner = owner;
        Ok(())
    }

    /// The links' neighbours, in link order.
    pub fn neighbours(&self) -> &[Neighbour] {
        &self.neighbours
    }

    fn transmit(&mut self, now: Time) -> Result<(), IoError> {
        let Self {
            io,
            cover,
            tx,
            stats,
            spare,
            links,
            neighbours,
            core,
            owner,
            cover_on,
            ..
        } = self;
        for (index, link) in links.iter_mut().enumerate() {
            if owner[index] != *core {
                continue;
            }
            let peer = neighbours[index].addr;
            // A due loop joins the link's queue like a real packet.
            if cover.loop_due(index, now)
                && let Some(packet) = built_frame(&mut *io, peer, spare, |frame| {
                    cover.take_loop(index, now, frame)
                })
            {
                match link.push(packet) {
                    Ok(()) => stats.loops_sent += 1,
                    Err(packet) => {
                        stats.dropped_link_full += 1;
                        spare.push(packet);
                    }
                }
            }
            let mut filler = SlotCover {
                on: *cover_on,
                io: &mut *io,
                cover: cover.as_mut(),
                stats: &mut *stats,
                spare: &mut *spare,
                link: index,
                peer,
                now,
            };
            link.poll_transmit(now, &mut filler, |mut packet, _, _| {
                packet.peer = peer;
                tx.push(packet);
            });
        }
        io.release(spare);
        while !self.tx.is_empty() {
            let before = self.tx.len();
            self.io.send(&mut self.tx)?;
            self.io.poll_completions()?;
            if self.tx.len() == before {
                // The ring is full: the rest goes next turn (slots keep their order).
                break;
            }
        }
        Ok(())
    }
}

/// Cover for one link's slots in one turn: ready when the cover source has a packet for the
/// link (asked at every slot, real packet queued or not), built straight into a fresh frame
/// of the pool for an idle slot.
struct SlotCover<'a, I: PacketIo> {
    /// Cover on (off: only real packets leave, see [`Pipeline::without_cover`]).
    on: bool,
    io: &'a mut I,
    cover: &'a mut (dyn CoverSource + Send),
    stats: &'a mut PipelineStats,
    spare: &'a mut Vec<Packet>,
    link: usize,
    peer: SocketAddr,
    now: Time,
}

impl<I: PacketIo> Filler<Packet> for SlotCover<'_, I> {
    fn ready(&mut self) -> bool {
        !self.on || self.cover.ready(self.link)
    }

    fn cover(&mut self) -> Option<Packet> {
        if !self.on {
            return None;
        }
        let (link, now, cover) = (self.link, self.now, &mut *self.cover);
        let packet = built_frame(self.io, self.peer, self.spare, |frame| {
            cover.fill(link, now, frame)
        });
        if packet.is_none() {
            self.stats.cover_failures += 1;
        }
        packet
    }
}

/// A fresh frame of the pool for `peer`, written by `build` (a packet the relay makes:
/// cover or a loop); `None` when no frame is free or `build` fails (the frame goes back
/// through `spare`).
fn built_frame<I: PacketIo>(
    io: &mut I,
    peer: SocketAddr,
    spare: &mut Vec<Packet>,
    build: impl FnOnce(&mut [u8; PACKET_LEN]) -> bool,
) -> Option<Packet> {
    let mut packet = io.alloc(peer)?;
    io.set_len(&mut packet, PACKET_LEN);
    let built = match <&mut [u8; PACKET_LEN]>::try_from(io.payload_mut(&packet)) {
        Ok(frame) => build(frame),
        Err(_) => false,
    };
    if built {
        Some(packet)
    } else {
        spare.push(packet);
        None
    }
}

/// `link` with its slot offsets, if the pipeline has them: its key is the pipeline's keyed
/// hash of the neighbour's node id.
fn jittered<T>(
    link: Link<T>,
    jitter: Option<&(u64, zeroize::Zeroizing<[u8; 32]>)>,
    node: NodeId,
) -> Link<T> {
    match jitter {
        Some((max, seed)) => {
            let key = blake3::keyed_hash(seed, &node.0);
            link.with_jitter(*max, *key.as_bytes())
        }
        None => link,
    }
}

/// Where link `index` of `links` at `rate` packets a second puts its slots: the links'
/// phases spread evenly over one slot interval (link 0 at the start), so that a relay's
/// links do not all fall due at the same instant and each turn serves a few of them.
fn phase(index: usize, links: usize, rate: u32) -> u64 {
    let interval = Time::SECOND / u64::from(rate.max(1));
    interval * index as u64 / links.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::{MAX_UNWRAP_SAMPLE_NS, RELIEF_ROOM_NS, relieved_estimate, unwrap_estimate};

    /// A batch measured across a stall (100 ms a packet) moves the estimate by at most an
    /// eighth of a millisecond, and ordinary batches bring it back.
    #[test]
    fn a_stalled_batch_does_not_blow_the_unwrap_estimate_up() {
        let mut e = 60_000;
        e = unwrap_estimate(e, 100_000_000);
        assert!(e <= 60_000 + MAX_UNWRAP_SAMPLE_NS / 8, "{e}");
        for _ in 0..64 {
            e = unwrap_estimate(e, 60_000);
        }
        assert!(e < 62_000, "{e}");
    }

    /// An estimate above ample room comes down until a packet fits; near a slot, where a
    /// core's work normally ends, it stays.
    #[test]
    fn only_ample_room_lowers_the_unwrap_estimate() {
        assert_eq!(relieved_estimate(120_000, 60_000), 120_000);
        assert_eq!(relieved_estimate(60_000, RELIEF_ROOM_NS), 60_000);
        let room = 500_000;
        let mut e = 1_000_000;
        let mut turns = 0;
        while e > room {
            e = relieved_estimate(e, room);
            turns += 1;
        }
        assert!(turns <= 16, "{turns}");
        assert_eq!(relieved_estimate(e, room), e);
    }
}
