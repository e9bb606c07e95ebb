//! One pipeline core of a running relay: what the cores share ([`Shared`]), where delivered
//! packets go ([`Forwarder`]), and the core loop ([`run_core`]), which sleeps until the
//! pipeline's next deadline (a link slot, a delay expiry, a batch top-up) or the next
//! packet, whichever comes first, instead of polling.

use std::{
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use pb_io::PacketIo;
use pb_mix::{LinkStats, SharedReplayFilter, Time};
use pb_pipeline::{CoverPool, Handoff, Neighbour, Pipeline, PipelineConfig, Sink};
use pb_sphinx::{MailboxId, NodeKeys};

use crate::{metrics::CoreReport, published::Published, roles::Roles};

/// The longest a core sleeps without looking at its stop flag, keys and links.
const MAX_SLEEP: Duration = Duration::from_millis(20);

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
    let _ = ready.send(());
    drop(ready);
    let mut windows = crate::report::Windows::new(pipeline.link_stats());
    let mut links_generation = 0;
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
        let t = now();
        pipeline.step(t, sleep_until(pipeline.next_deadline(), t))?;
        if snapshot_at.elapsed() >= Duration::from_secs(1) {
            snapshot_at = Instant::now();
            if let Some(slot) = shared
                .snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(core)
            {
                *slot = Some(report(&pipeline));
            }
        }
        if windows.due(shared.start.elapsed(), shared.interval) {
            let owned: Vec<bool> = (0..pipeline.neighbours().len())
                .map(|i| pipeline.owns(i))
                .collect();
            let current: Vec<LinkStats> = pipeline.link_stats();
            let mut out = std::io::stdout().lock();
            windows.print(&mut out, &current, &owned)?;
            out.flush()?;
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
    use super::*;

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
