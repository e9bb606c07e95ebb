//! One pipeline core of a running relay: what the cores share ([`Shared`]), where delivered
//! packets go ([`Forwarder`]), and the core loop ([`run_core`]), which sleeps until the
//! pipeline's next deadline (a link slot, a delay expiry, a batch top-up) or the next
//! packet, whichever comes first, instead of polling.
//!
//! Also which sources the packet port serves ([`static_sources`], [`sources_for_links`],
//! [`install_sources`]): a relay takes packets only from its adjacent layers. Mixes and
//! exits drop every other source ([`StrangerPolicy::Drop`]); gateways, whose clients send
//! their packets to the packet port from any address, hold every other source to a token
//! bucket ([`StrangerPolicy::Limit`], [`source_limits`]). Until a relay knows a link (a
//! gossip relay before its first topology) nothing is filtered; a topology that goes away
//! later leaves the last link set in force (with no links nothing is forwarded anyway).

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pb_io::{
    PacketIo,
    sources::{SourceFilter, SourceLimits, StrangerPolicy},
    xdp::XdpProgram,
};
use pb_mix::{LinkStats, SharedReplayFilter, Time};
use pb_pipeline::{CoverPool, Handoff, Neighbour, Pipeline, PipelineConfig, Sink};
use pb_sphinx::{MailboxId, NodeKeys};

use crate::{
    config::{RelayConfig, Topology},
    metrics::CoreReport,
    published::Published,
    roles::Roles,
};

/// The longest a core sleeps without looking at its stop flag, keys and links.
const MAX_SLEEP: Duration = Duration::from_millis(20);
/// Kept free before a slot for waking up and spinning, beyond the pacer's spin: no unwrap
/// work may reach into it.
const MARGIN: Duration = Duration::from_micros(50);
/// The longest stretch of unwrap work a core does at once. A real-time core holds its CPU
/// while it works; other real-time pacers on that CPU (another core's, the gateway's client
/// link) wait at most this long.
const MAX_CHUNK: Duration = Duration::from_micros(300);

/// The keys every core processes with, and the generation each core has taken.
#[derive(Debug)]
pub struct KeyBox {
    /// The keys (epoch rotation publishes new ones).
    pub keys: Published<NodeKeys>,
    /// The generation each core has adopted.
    pub adopted: Vec<AtomicU64>,
}

impl KeyBox {
    /// `keys` for `cores` cores, none adopted yet.
    pub fn new(keys: NodeKeys, cores: usize) -> Self {
        Self {
            keys: Published::new(keys),
            adopted: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Waits until every core processes with the current generation (or `timeout`).
    pub fn wait_adopted(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        let want = self.keys.generation();
        while self
            .adopted
            .iter()
            .any(|a| a.load(Ordering::Acquire) != want)
        {
            if start.elapsed() > timeout {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// What the cores share.
pub struct Shared {
    /// Every core's pipeline settings.
    pub pipeline: PipelineConfig,
    /// The keys.
    pub keys: KeyBox,
    /// The links (gossip mode: they follow the topology).
    pub links: Published<Vec<Neighbour>>,
    /// Each core's counters, refreshed every second (for the admin endpoint).
    pub snapshots: Mutex<Vec<Option<CoreReport>>>,
    /// The replay filter of every core.
    pub replay: SharedReplayFilter,
    /// Cover built ahead on a thread of its own.
    pub cover: CoverPool,
    /// Packets crossing between cores, and those the relay makes itself.
    pub handoff: Arc<Handoff>,
    /// The core owning each link.
    pub owner: Vec<usize>,
    /// The CPU each core is pinned to (empty: none).
    pub cpus: Vec<usize>,
    /// Where delivered messages go if no role takes them.
    pub deliver_to: Option<SocketAddr>,
    /// The gateway's and exit's services.
    pub roles: Roles,
    /// Where cores send the lines they print (the control thread writes them out).
    pub lines: std::sync::mpsc::Sender<Vec<u8>>,
    /// Whether idle slots carry cover (`mix.insecure_no_cover` turns it off).
    pub cover_on: bool,
    /// Whether cores send their slots at real-time priority (`io.realtime`).
    pub realtime: bool,
    /// How core 0 times its slots, for the line after the banner.
    pub timing: Mutex<Option<String>>,
    /// The links' slot offsets: the largest, and the seed of every link's key.
    pub slot_jitter: (Duration, zeroize::Zeroizing<[u8; 32]>),
    /// The cores' clock.
    pub clock: Arc<dyn Fn() -> Time + Send + Sync>,
    /// Set to stop every core.
    pub stop: Arc<AtomicBool>,
    /// When the relay started.
    pub start: Instant,
    /// How often cores print their `window` lines (zero: never).
    pub interval: Duration,
    /// The loops' loss judgements (the main thread's; never taken by a core).
    pub loop_watch: Mutex<crate::loop_watch::LoopWatch>,
    /// The sources the packet port serves (the UDP backend's cores check them; the XDP
    /// program's maps hold the same, see [`install_sources`]).
    pub sources: Published<SourceFilter>,
    /// The XDP program (AF_XDP backend): its maps and counters. Only the main thread
    /// takes the lock.
    pub xdp: Mutex<Option<XdpProgram>>,
}

impl Shared {
    /// The cores' latest counters (for `/metrics`).
    pub fn snapshot(&self) -> Vec<CoreReport> {
        self.snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// The per-source limits of this relay: the token bucket ([`pb_io::sources`]'s defaults,
/// raised to twice the link rate so that a relay link from a non-adjacent sender, such as
/// an exit's to a gateway, is never cut) and the gateway's client-link port.
pub fn source_limits(config: &RelayConfig) -> SourceLimits {
    let defaults = SourceLimits::default();
    let link = config.mix.link_rate.saturating_mul(2);
    SourceLimits {
        client_port: config
            .gossip
            .as_ref()
            .and_then(|g| g.client_bind)
            .map(|a| a.port()),
        rate: defaults.rate.max(link),
        burst: defaults.burst.max(link),
    }
}

/// Static mode's sources: the nodes of the layers before and after this node's (the
/// topology is a cycle: the previous layer sends forward, and replies and loops come round
/// from it too). A gateway limits every other source; any other node drops it.
pub fn static_sources(topology: &Topology, me: pb_sphinx::NodeId) -> SourceFilter {
    let Some(node) = topology.node(me) else {
        return SourceFilter::default();
    };
    let layers = topology.layers.max(1);
    let previous = (node.layer + layers - 1) % layers;
    let next = (node.layer + 1) % layers;
    let policy = if node.role == pb_control::Role::Gateway {
        StrangerPolicy::Limit
    } else {
        StrangerPolicy::Drop
    };
    SourceFilter::new(
        policy,
        topology
            .nodes
            .iter()
            .filter(|n| n.layer == previous || n.layer == next)
            .map(|n| n.addr.ip()),
    )
}

/// The sources once `links` are the links: their addresses, under the policy in force
/// (gateways keep limiting strangers; anyone else starts dropping them with its first link
/// set). An empty link set (no topology) keeps `current`.
pub fn sources_for_links(current: &SourceFilter, links: &[Neighbour]) -> SourceFilter {
    if links.is_empty() {
        return current.clone();
    }
    let policy = match current.policy {
        StrangerPolicy::Limit => StrangerPolicy::Limit,
        StrangerPolicy::Pass | StrangerPolicy::Drop => StrangerPolicy::Drop,
    };
    SourceFilter::new(policy, links.iter().map(|n| n.addr.ip()))
}

/// Puts `filter` in force: for the cores (UDP backend) and in the XDP program's maps. A
/// filter the maps refuse (too many addresses) leaves the program's previous one, with a
/// warning.
pub fn install_sources(shared: &Shared, filter: SourceFilter) {
    if let Some(program) = shared
        .xdp
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_mut()
        && let Err(e) = program.set_sources(&filter)
    {
        pb_log::warn_limited!("installing the packet port's sources in XDP: {e}");
    }
    shared.sources.set(filter);
}

/// Where a core's delivered packets go: SURB replies to the gateway's client link, client
/// messages to the exit, anything else to a local UDP endpoint (`mailbox (16) ‖ message`)
/// if one is configured.
struct Forwarder {
    socket: Option<(UdpSocket, SocketAddr)>,
    buffer: Vec<u8>,
    roles: Roles,
}

impl Forwarder {
    /// A forwarder to `to` (none: delivered messages no role takes are dropped).
    fn new(to: Option<SocketAddr>, roles: &Roles) -> anyhow::Result<Self> {
        let socket = match to {
            Some(to) => Some((
                UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
                    .context("deliver_to socket")?,
                to,
            )),
            None => None,
        };
        Ok(Self {
            socket,
            buffer: Vec::with_capacity(2048),
            roles: roles.clone(),
        })
    }
}

impl Sink for Forwarder {
    fn deliver(&mut self, mailbox: MailboxId, reply: Option<pb_sphinx::SurbId>, message: &[u8]) {
        if self.roles.deliver(mailbox, reply, message) {
            return;
        }
        if let Some((socket, to)) = &self.socket {
            self.buffer.clear();
            self.buffer.extend_from_slice(&mailbox.0);
            self.buffer.extend_from_slice(message);
            // A full local socket drops the datagram (counted by the receiver, not here).
            let _ = socket.send_to(&self.buffer, to);
        }
    }
}

/// How long to wait for packets at `now`: until the pipeline's next deadline, at most
/// [`MAX_SLEEP`].
pub fn sleep_until(deadline: Option<Time>, now: Time) -> Duration {
    deadline.map_or(MAX_SLEEP, |d| {
        Duration::from_nanos(d.0.saturating_sub(now.0)).min(MAX_SLEEP)
    })
}

/// What a core does before its next slot at `left` from now, unwrapping a packet costing
/// `cost`: wait for the slot and send it (nothing fits before it), or receive and unwrap
/// up to `budget` packets, waiting at most `wait` for them, so that a batch arriving at the
/// end of the wait is done `margin` before the slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Wait for the slot, then send.
    Send,
    /// Work first.
    Work {
        /// Packets to unwrap at most.
        budget: usize,
        /// The longest wait for them.
        wait: Duration,
    },
}

/// The core's plan with `left` until its next slot; see [`Plan`].
pub fn plan(left: Duration, cost: Duration, batch: usize, margin: Duration) -> Plan {
    let room = left.saturating_sub(margin);
    let cost = cost.max(Duration::from_nanos(1));
    let fits = usize::try_from(room.as_nanos() / cost.as_nanos()).unwrap_or(usize::MAX);
    if fits == 0 {
        return Plan::Send;
    }
    let chunk = usize::try_from(MAX_CHUNK.as_nanos() / cost.as_nanos()).unwrap_or(usize::MAX);
    let budget = fits.min(chunk.max(1)).min(batch.max(1));
    let work = cost.saturating_mul(u32::try_from(budget).unwrap_or(u32::MAX));
    Plan::Work {
        budget,
        wait: room.saturating_sub(work),
    }
}

/// One turn of a core: the next slot sent at its deadline, or work that ends before it
/// (see [`plan`]).
fn turn<I: PacketIo>(
    pipeline: &mut Pipeline<'_, I>,
    pacer: &pb_pacing::Pacer,
    now: impl Fn() -> Time,
) -> anyhow::Result<()> {
    let t = now();
    let wait = sleep_until(pipeline.next_deadline(), t);
    let Some(slot) = pipeline.next_slot() else {
        pipeline.step(t, wait)?;
        return Ok(());
    };
    let left = Duration::from_nanos(slot.0.saturating_sub(t.0));
    // The pacer sleeps to its spin before the slot; the margin keeps work out of that too.
    let margin = pacer.spin() + MARGIN;
    match plan(left, pipeline.unwrap_cost(), usize::MAX, margin) {
        Plan::Send => {
            // No packet fits: where there was ample room, the estimate is too high to
            // ever let a packet be unwrapped again unless it comes down.
            pipeline.relieve_unwrap_cost(left.saturating_sub(margin));
            pipeline.prepare(t);
            let _emitting = pacer.emit_at(Instant::now() + left);
            pipeline.send_slots(now())?;
        }
        Plan::Work { budget, wait: most } => {
            pipeline.step_within(t, wait.min(most), budget)?;
            // Close to the slot now (the wait ran out, or the work took it there): too
            // close for another batch, so the slot, rather than polling until then.
            let left = Duration::from_nanos(slot.0.saturating_sub(now().0));
            let work = pipeline
                .unwrap_cost()
                .saturating_mul(u32::try_from(budget).unwrap_or(u32::MAX));
            if left <= margin + work {
                pipeline.prepare(now());
                let _emitting = pacer.emit_at(Instant::now() + left);
                pipeline.send_slots(now())?;
            }
        }
    }
    Ok(())
}

fn report<I: PacketIo>(pipeline: &Pipeline<'_, I>) -> CoreReport {
    CoreReport {
        stats: pipeline.stats(),
        io: pipeline.io().stats(),
        links: pipeline.link_stats(),
        owned: (0..pipeline.neighbours().len())
            .map(|i| pipeline.owns(i))
            .collect(),
    }
}

/// One core: pinned if asked, running its pipeline until the relay stops; its counters at
/// the end.
pub fn run_core<I: PacketIo>(
    core: usize,
    cores: usize,
    io: I,
    shared: &Shared,
    ready: std::sync::mpsc::Sender<()>,
) -> anyhow::Result<CoreReport> {
    if let Some(cpu) = shared.cpus.get(core) {
        pb_io::cpu::pin_current_thread(*cpu).with_context(|| format!("io.cpus: CPU {cpu}"))?;
    }
    let now = || (shared.clock)();
    let (mut generation, keys) = shared.keys.keys.get();
    let mut pipeline = Pipeline::new(
        io,
        &shared.pipeline,
        keys,
        &shared.replay,
        Box::new(shared.cover.handle()),
        Box::new(Forwarder::new(shared.deliver_to, &shared.roles)?),
        now(),
    )?;
    // Sharded even alone: the handoff also carries the packets the relay makes itself.
    pipeline = pipeline.shard(core, shared.owner.clone(), shared.handoff.clone())?;
    if !shared.cover_on {
        pipeline = pipeline.without_cover();
    }
    pipeline = pipeline.with_slot_jitter(shared.slot_jitter.0, *shared.slot_jitter.1);
    // Real-time from here on (before the relay is announced, so the line after the banner
    // can say how slots are timed; a refusal is a warning of each core's own).
    let pacer = pb_pacing::Pacer::new(shared.realtime);
    if !pacer.realtime() {
        tracing::warn!("core {core}: slot timing: {}", pacer.describe());
    }
    if core == 0 {
        *shared
            .timing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pacer.describe());
    }
    let _ = ready.send(());
    drop(ready);
    let mut windows = crate::report::Windows::new(pipeline.link_stats());
    let mut links_generation = 0;
    let mut sources_generation = None;
    let mut snapshot_at = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        // New keys or links: an atomic load per turn; the lock only when they changed.
        if shared.keys.keys.generation() != generation {
            let (g, keys) = shared.keys.keys.get();
            pipeline.set_keys(keys);
            generation = g;
            shared.keys.adopted[core].store(g, Ordering::Release);
        }
        if shared.links.generation() != links_generation {
            let (g, neighbours) = shared.links.get();
            let owner = Handoff::round_robin(neighbours.len(), cores);
            pipeline.set_neighbours(neighbours, owner, now())?;
            links_generation = g;
            windows.reset(pipeline.link_stats());
        }
        if sources_generation != Some(shared.sources.generation()) {
            let (g, filter) = shared.sources.get();
            pipeline.io_mut().set_sources(&filter);
            sources_generation = Some(g);
        }
        turn(&mut pipeline, &pacer, now)?;
        // A real-time core never waits for a lock a normal thread may hold (and be
        // preempted holding): the snapshot is skipped if the lock is taken, and the window
        // lines go to the control thread, which prints them.
        if snapshot_at.elapsed() >= Duration::from_secs(1)
            && let Ok(mut snapshots) = shared.snapshots.try_lock()
        {
            snapshot_at = Instant::now();
            if let Some(slot) = snapshots.get_mut(core) {
                *slot = Some(report(&pipeline));
            }
        }
        if windows.due(shared.start.elapsed(), shared.interval) {
            let owned: Vec<bool> = (0..pipeline.neighbours().len())
                .map(|i| pipeline.owns(i))
                .collect();
            let current: Vec<LinkStats> = pipeline.link_stats();
            let mut text = Vec::new();
            windows.print(&mut text, &current, &owned)?;
            // The control thread has gone only when the relay stops.
            let _ = shared.lines.send(text);
        }
    }
    Ok(report(&pipeline))
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for Shared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use std::net::IpAddr;

    use pb_sphinx::NodeId;

    use super::*;
    use crate::config::TopologyNode;

    fn node(i: u8, role: pb_control::Role, layer: u32) -> TopologyNode {
        TopologyNode {
            id: NodeId([i; 16]),
            role,
            layer,
            addr: SocketAddr::from(([198, 18, 0, i], 47470)),
            public_key: [i; 32],
        }
    }

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([198, 18, 0, i])
    }

    #[test]
    fn static_sources_are_the_adjacent_layers() {
        use pb_control::Role::{Exit, Gateway, Mix};
        let topology = Topology {
            nodes: vec![
                node(1, Gateway, 0),
                node(2, Mix, 1),
                node(3, Mix, 2),
                node(4, Mix, 3),
                node(5, Exit, 4),
            ],
            layers: 5,
        };
        let mix = static_sources(&topology, NodeId([3; 16]));
        assert_eq!(mix.policy, StrangerPolicy::Drop);
        assert_eq!(mix.allowed().collect::<Vec<_>>(), vec![ip(2), ip(4)]);
        // The gateway's previous layer is the exits' (the cycle), and it limits strangers.
        let gateway = static_sources(&topology, NodeId([1; 16]));
        assert_eq!(gateway.policy, StrangerPolicy::Limit);
        assert_eq!(gateway.allowed().collect::<Vec<_>>(), vec![ip(2), ip(5)]);
        assert_eq!(
            static_sources(&topology, NodeId([9; 16])),
            SourceFilter::default()
        );
    }

    #[test]
    fn the_first_links_turn_the_filter_on_and_no_topology_keeps_it() {
        let links = |ips: &[u8]| -> Vec<Neighbour> {
            ips.iter()
                .map(|i| Neighbour {
                    node: NodeId([*i; 16]),
                    addr: SocketAddr::from(([198, 18, 0, *i], 47470)),
                })
                .collect()
        };
        let off = SourceFilter::default();
        assert_eq!(sources_for_links(&off, &[]), off);
        let on = sources_for_links(&off, &links(&[2, 3]));
        assert_eq!(on.policy, StrangerPolicy::Drop);
        assert_eq!(on.allowed().collect::<Vec<_>>(), vec![ip(2), ip(3)]);
        assert_eq!(sources_for_links(&on, &[]), on);
        let moved = sources_for_links(&on, &links(&[4]));
        assert_eq!(moved.allowed().collect::<Vec<_>>(), vec![ip(4)]);
        // A gateway keeps limiting strangers.
        let gateway = SourceFilter::new(StrangerPolicy::Limit, []);
        let gateway = sources_for_links(&gateway, &links(&[2]));
        assert_eq!(gateway.policy, StrangerPolicy::Limit);
        assert!(gateway.is_allowed("198.18.0.2".parse().unwrap()));
    }

    #[test]
    fn work_before_a_slot_ends_a_margin_before_it() {
        const M: Duration = Duration::from_micros(150);
        let us = Duration::from_micros;
        // Far from the slot: a chunk of at most MAX_CHUNK, and a wait that leaves room.
        assert_eq!(
            plan(us(10_000), us(50), 32, M),
            Plan::Work {
                budget: 6,
                wait: us(10_000) - M - us(50 * 6)
            }
        );
        assert!(matches!(
            plan(us(10_000), us(5), 32, M),
            Plan::Work { budget: 32, .. }
        ));
        // Close: only what fits, and no wait.
        assert_eq!(
            plan(M + us(120), us(50), 32, M),
            Plan::Work {
                budget: 2,
                wait: us(20)
            }
        );
        // Nothing fits: the slot.
        assert_eq!(plan(M + us(49), us(50), 32, M), Plan::Send);
        assert_eq!(plan(Duration::ZERO, us(50), 32, M), Plan::Send);
        // A zero cost (a clock too coarse) still bounds the batch.
        assert!(matches!(
            plan(us(1_000), Duration::ZERO, 8, M),
            Plan::Work { budget: 8, .. }
        ));
        for left in (0..5_000).step_by(37) {
            if let Plan::Work { budget, wait } = plan(us(left), us(40), 64, M) {
                assert!(budget >= 1);
                assert!(wait + us(40) * budget as u32 + M <= us(left));
            }
        }
    }

    #[test]
    fn a_core_sleeps_until_its_deadline_but_not_longer_than_the_cap() {
        let now = Time(5 * Time::MS);
        assert_eq!(
            sleep_until(Some(Time(7 * Time::MS + 300)), now),
            Duration::from_nanos(2 * Time::MS + 300)
        );
        assert_eq!(sleep_until(Some(Time(Time::MS)), now), Duration::ZERO);
        assert_eq!(sleep_until(None, now), MAX_SLEEP);
        assert_eq!(sleep_until(Some(Time(u64::MAX)), now), MAX_SLEEP);
    }
}
