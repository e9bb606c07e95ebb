//! Cover traffic and loops. Both are genuine PB-Sphinx packets, indistinguishable on the
//! link:
//!
//! - **link cover** fills every slot no real packet takes: a one-hop packet for the
//!   neighbour's [`COVER_MAILBOX`], which the neighbour unwraps, counts and drops;
//! - **loops**, on a Poisson process of `loop_rate` a second per link, whatever the link's
//!   load: queued on the link like real packets (a loop that waited for an idle slot would
//!   never measure a busy link), routed out through the link's neighbour, then through one
//!   node drawn at random from each following layer, back to the relay's own loop mailbox,
//!   with a per-hop delay drawn from the same exponential distribution as real traffic's.
//!   A mix therefore cannot tell a loop from a real packet by its route or its delay, and
//!   one that drops real packets drops loops too: its links show it in the [`LoopMonitor`]'s
//!   counts (a loop's token names the link it left on).
//!
//! Why loops are bounded: a loop occupies a slot on every link of its route, so if every idle
//! slot started one, the network would fill with circulating loops, leave no room for real
//! packets and starve the relays furthest down the cycle of their own loops (seen in the
//! five-relay testnet). Bounding loops keeps their load at `hops × loop_rate` per link.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use crossbeam::queue::ArrayQueue;
use pb_mix::{LOOP_TOKEN_LEN, LoopMonitor, LoopStats, RTT_BUCKET_COUNT, Time};
use pb_sphinx::{
    CreateError, DelayMs, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with,
};

use crate::ready::ReadyQueue;

/// The mailbox of one-hop link cover: a relay drops (and counts) what is delivered to it,
/// and records no replay entry for it (see pb-sphinx).
pub use pb_sphinx::COVER_MAILBOX;

/// The mean per-hop delay loops draw unless told otherwise: the client profiles' mean.
pub const DEFAULT_LOOP_DELAY: DelayMs = DelayMs(20);

/// Provides cover packets for a link's idle slots, makes the relay's loops and counts them.
pub trait CoverSource {
    /// Whether a cover packet for link `link` is at hand. The pipeline asks at every slot,
    /// a real packet queued or not, and misses the slot (for real and cover alike) when it
    /// is not, so that the link's schedule never depends on its traffic.
    fn ready(&mut self, link: usize) -> bool;

    /// Writes a cover packet for link `link` into `out`; `false` when none is available
    /// (the pipeline counts the slot as missed).
    fn fill(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool;

    /// Whether a loop for link `link` is due at `now` (cheap: asked every turn).
    fn loop_due(&mut self, link: usize, now: Time) -> bool;

    /// Writes the loop due for link `link` into `out`; the pipeline queues it on the link
    /// like a real packet. `false` when there is none.
    fn take_loop(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool;

    /// A message delivered to the relay's loop mailbox, to be checked and counted as one of
    /// its loops if it is one. `false` if it cannot be (too short, or no room to check it).
    fn loop_returned(&mut self, message: &[u8], now: Time) -> bool;

    /// Counts loops overdue at `now` as lost.
    fn expire(&mut self, now: Time);

    /// Loop counters of `link`.
    fn loop_stats(&self, link: usize) -> LoopStats;
}

/// Where a link's loops go: out to the link's neighbour (`first`), through one node drawn
/// from each of `via` (the candidates of each following layer, in order), and `back` to this
/// relay; without `back` the link carries link cover only (no way back fits, e.g. a link
/// within the relay's own layer). The hops' delays are drawn per loop.
#[derive(Clone)]
pub struct LoopPlan {
    /// The link's neighbour.
    pub first: Hop,
    /// The candidates of each layer between the neighbour and this relay.
    pub via: Vec<Vec<Hop>>,
    /// Each candidate's route weight (the ledger's reputation, as clients weigh routes),
    /// layer by layer as in `via`; a layer whose weights are missing, of another length or
    /// all zero draws its candidates alike.
    pub weights: Vec<Vec<u64>>,
    /// This relay, the loop's last hop.
    pub back: Option<Hop>,
}

/// Opaque: a relay's loop routes are kept out of logs.
impl core::fmt::Debug for LoopPlan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LoopPlan")
            .field("layers", &(self.via.len() + 2))
            .finish_non_exhaustive()
    }
}

impl LoopPlan {
    /// A fixed route (`route[0]` the neighbour, the last hop this relay; a single hop: link
    /// cover only) as a plan with one candidate per layer; `None` for an empty route.
    pub fn fixed(route: &[Hop]) -> Option<Self> {
        let (first, rest) = route.split_first()?;
        let (back, via) = match rest.split_last() {
            Some((back, via)) => (Some(*back), via.iter().map(|h| vec![*h]).collect()),
            None => (None, Vec::new()),
        };
        Some(Self {
            first: *first,
            via,
            weights: Vec::new(),
            back,
        })
    }
}

/// Loop and link cover: for link `i`, loops along `plans[i]` on a Poisson process of
/// `loop_rate` a second, delivered to this relay's loop mailbox; link cover for its neighbour
/// for idle slots.
///
/// Packet randomness, route choices, delays and loop times come from a keyed blake3 of a
/// counter under a secret key (a CSPRNG in counter mode): the relay draws the key from the OS
/// at start; tests pass a fixed one.
pub struct LoopCover {
    format: Format,
    epoch: Epoch,
    /// One per link; `None`: the link has no route at all.
    plans: Vec<Option<LoopPlan>>,
    mailbox: MailboxId,
    key: [u8; 32],
    counter: u64,
    /// Mean nanoseconds between loops on one link (`u64::MAX`: no loops).
    loop_gap: u64,
    mean_delay: DelayMs,
    /// When each link's next loop is due.
    next_loop: Vec<Time>,
    /// Cover packets that could not be built, by the last error.
    pub last_error: Option<CreateError>,
    /// Loops built.
    pub loops: u64,
    /// Link cover packets built.
    pub link_cover: u64,
    monitor: LoopMonitor,
}

impl core::fmt::Debug for LoopCover {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Routes are this relay's own loops: not secret from it, but kept out of logs.
        f.debug_struct("LoopCover")
            .field("format", &self.format)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// The longest per-hop delay a loop draws, as a multiple of the mean (an exponential
/// exceeds 20 means with probability e^-20).
const DELAY_CAP_MEANS: u32 = 20;

impl LoopCover {
    /// Cover in `format` for `epoch`: loops along the fixed `routes` (one per link, see
    /// [`LoopPlan::fixed`]; [`set_plans`](Self::set_plans) gives routes drawn per loop)
    /// delivered to `mailbox`, `loop_rate` per second per link on average (0: none), hops
    /// delayed by [`DEFAULT_LOOP_DELAY`] on average (see
    /// [`with_mean_delay`](Self::with_mean_delay)), counted by `monitor`; link cover
    /// otherwise.
    pub fn new(
        format: Format,
        epoch: Epoch,
        routes: Vec<Vec<Hop>>,
        mailbox: MailboxId,
        loop_rate: u32,
        monitor: LoopMonitor,
        key: [u8; 32],
    ) -> Self {
        let mut cover = Self {
            format,
            epoch,
            plans: Vec::new(),
            mailbox,
            key,
            counter: 0,
            loop_gap: Time::SECOND
                .checked_div(u64::from(loop_rate))
                .unwrap_or(u64::MAX),
            mean_delay: DEFAULT_LOOP_DELAY,
            next_loop: Vec::new(),
            last_error: None,
            loops: 0,
            link_cover: 0,
            monitor,
        };
        let plans = routes.iter().map(|r| LoopPlan::fixed(r)).collect();
        cover.set_plans(epoch, plans, Time(0));
        cover
    }

    /// Loops draw each hop's delay from an exponential distribution with mean `mean` (the
    /// network's, as clients use for real packets; 0: no delay).
    pub fn with_mean_delay(mut self, mean: DelayMs) -> Self {
        self.mean_delay = mean;
        self
    }

    /// New plans (and epoch) after a key rotation or topology change, from `now` on: one
    /// per link, `None` for a link without a route.
    pub fn set_plans(&mut self, epoch: Epoch, plans: Vec<Option<LoopPlan>>, now: Time) {
        self.epoch = epoch;
        let old = self.next_loop.len();
        self.next_loop.resize(plans.len(), now);
        for link in old..plans.len() {
            let gap = self.draw_gap();
            self.next_loop[link] = now.plus(gap);
        }
        self.plans = plans;
    }

    fn next_seed(&mut self) -> [u8; 32] {
        self.counter += 1;
        *blake3::keyed_hash(&self.key, &self.counter.to_le_bytes()).as_bytes()
    }

    /// A uniform draw in (0, 1].
    fn uniform(&mut self) -> f64 {
        let seed = self.next_seed();
        let mut bits = [0u8; 8];
        bits.copy_from_slice(&seed[..8]);
        ((u64::from_le_bytes(bits) >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// An exponential draw with mean `mean` (in any unit).
    fn exponential(&mut self, mean: f64) -> f64 {
        -self.uniform().ln() * mean
    }

    /// The wait until a link's next loop.
    fn draw_gap(&mut self) -> u64 {
        if self.loop_gap == u64::MAX {
            return u64::MAX / 4;
        }
        self.exponential(self.loop_gap as f64) as u64
    }

    fn draw_delay(&mut self) -> DelayMs {
        let mean = self.mean_delay.0;
        if mean == 0 {
            return DelayMs(0);
        }
        let cap = mean.saturating_mul(DELAY_CAP_MEANS);
        DelayMs((self.exponential(f64::from(mean)) as u32).min(cap))
    }

    /// A loop route for `link`, drawn like a real packet's: a node per layer, a delay per hop.
    fn draw_route(&mut self, link: usize) -> Option<Vec<Hop>> {
        let layers = self.plans.get(link)?.as_ref()?.via.len();
        if layers + 2 > pb_sphinx::MAX_HOPS {
            return None;
        }
        // The draws first, then the route from the plan (no copy of the plan per loop).
        let mut draws = [0f64; pb_sphinx::MAX_HOPS];
        for d in draws.iter_mut().take(layers) {
            *d = self.uniform();
        }
        let plan = self.plans.get(link)?.as_ref()?;
        let back = plan.back?;
        let mut route = Vec::with_capacity(layers + 2);
        route.push(plan.first);
        for (i, (layer, draw)) in plan.via.iter().zip(draws).enumerate() {
            if layer.is_empty() {
                return None;
            }
            let pick = match plan.weights.get(i) {
                Some(w) if w.len() == layer.len() && w.iter().any(|&x| x > 0) => weighted(w, draw),
                _ => (draw * layer.len() as f64) as usize,
            };
            route.push(layer[pick.min(layer.len() - 1)]);
        }
        route.push(back);
        for hop in &mut route {
            hop.delay = self.draw_delay();
        }
        Some(route)
    }
}

/// The index `draw` (uniform in [0, 1)) falls on when each index takes a share of [0, 1)
/// proportional to its weight.
fn weighted(weights: &[u64], draw: f64) -> usize {
    let total: f64 = weights.iter().map(|&w| w as f64).sum();
    let mut left = draw * total;
    for (i, &w) in weights.iter().enumerate() {
        if left < w as f64 {
            return i;
        }
        left -= w as f64;
    }
    weights.iter().rposition(|&w| w > 0).unwrap_or(0)
}

impl Drop for LoopCover {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl CoverSource for LoopCover {
    /// Builds on demand: ready whenever the link has a route.
    fn ready(&mut self, link: usize) -> bool {
        self.plans.get(link).is_some_and(Option::is_some)
    }

    fn fill(&mut self, link: usize, _now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        if !self.ready(link) {
            return false;
        }
        let Some(Some(plan)) = self.plans.get(link) else {
            return false;
        };
        let mut hop = plan.first;
        hop.delay = DelayMs(0);
        let seed = self.next_seed();
        self.link_cover += 1;
        let built = create_packet_with(
            self.format,
            out,
            self.epoch,
            &[hop],
            COVER_MAILBOX,
            &[],
            &seed,
        );
        match built {
            Ok(_) => true,
            Err(e) => {
                self.last_error = Some(e);
                false
            }
        }
    }

    fn loop_due(&mut self, link: usize, now: Time) -> bool {
        self.loop_gap != u64::MAX
            && self
                .plans
                .get(link)
                .is_some_and(|p| p.as_ref().is_some_and(|p| p.back.is_some()))
            && self.next_loop.get(link).is_some_and(|t| now >= *t)
    }

    fn take_loop(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        if !self.loop_due(link, now) {
            return false;
        }
        // The next one a Poisson gap after this one was due (not after now: a late turn
        // does not slow the process down; a long stall does not burst either).
        let gap = self.draw_gap();
        self.next_loop[link] = self.next_loop[link].plus(gap).max(now);
        let Some(route) = self.draw_route(link) else {
            return false;
        };
        let Ok(token) = self.monitor.send(link, now) else {
            return false;
        };
        let seed = self.next_seed();
        self.loops += 1;
        match create_packet_with(
            self.format,
            out,
            self.epoch,
            &route,
            self.mailbox,
            &token,
            &seed,
        ) {
            Ok(_) => true,
            Err(e) => {
                self.last_error = Some(e);
                false
            }
        }
    }

    fn loop_returned(&mut self, message: &[u8], now: Time) -> bool {
        self.monitor.receive(message, now).is_ok()
    }

    fn expire(&mut self, now: Time) {
        self.monitor.expire(now);
    }

    fn loop_stats(&self, link: usize) -> LoopStats {
        self.monitor.stats(link)
    }
}

/// Cover and loops built ahead of time on another core: a builder thread owns a
/// [`LoopCover`] and keeps, per link, a bounded queue of ready cover packets full and a small
/// queue of due loops; the pipelines take from them, so cover costs a forwarding core a copy
/// instead of a packet creation.
///
/// Nothing the pipelines touch is locked: the queues are lock-free, returning loops' tokens
/// reach the builder through another lock-free queue (the builder checks and counts them),
/// and the loop counters come back as atomics. Only [`set_routes`](Self::set_routes) (the
/// control plane) and the builder share a mutex. Dropping the pool stops the thread.
pub struct CoverPool {
    handle: CoverHandle,
    stop: Arc<AtomicBool>,
    builder: Option<thread::JoinHandle<()>>,
}

/// One relay core's access to a [`CoverPool`]: ready cover and loops for the links it owns,
/// and the way back for its returning loops. Cheap to clone, one per core.
#[derive(Clone)]
pub struct CoverHandle {
    shared: Arc<Shared>,
}

/// Ready packets for one link: the builder (normal priority) pushes, relay cores (real
/// time) pop, and never wait for the builder (see [`ReadyQueue`]).
type ReadyPackets = ReadyQueue<Ready>;

/// What the builder and the pipelines share.
struct Shared {
    cover: Vec<ReadyPackets>,
    loops: Vec<ReadyPackets>,
    /// Tokens of messages delivered to the loop mailbox, and when, for the builder to check.
    returns: ArrayQueue<([u8; LOOP_TOKEN_LEN], Time)>,
    /// Per link: loops sent, returned, lost, then the returned ones' round-trip-time
    /// buckets (published by the builder).
    stats: Vec<[AtomicU64; 3 + RTT_BUCKET_COUNT]>,
    /// Moves on when routes change with `discard`: packets built before are dropped.
    generation: AtomicU64,
    /// New routes for the builder.
    pending: Mutex<Option<NewRoutes>>,
}

/// Routes for the builder to take up: the epoch, a plan per link, whether to discard what is
/// built.
type NewRoutes = (Epoch, Vec<Option<LoopPlan>>, bool);

/// A packet ready for a link, and the routes' generation it was built for.
type Ready = ([u8; PACKET_LEN], u64);

/// Loops queued per link at most: one is due every `1 / loop_rate` on average, and the
/// pipeline takes them every turn.
const LOOP_QUEUE: usize = 4;
/// Returning loops awaiting the builder's check; beyond, they are not counted (and show as
/// lost), which a builder that keeps up never lets happen.
const RETURN_QUEUE: usize = 4096;

impl core::fmt::Debug for CoverPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CoverPool")
            .field("links", &self.handle.shared.cover.len())
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for CoverHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CoverHandle")
            .field("links", &self.shared.cover.len())
            .finish_non_exhaustive()
    }
}

impl CoverPool {
    /// Packets to keep ready per link at `rate` slots a second: a quarter of a second of
    /// slots (at least 16, at most 1024), so that a builder thread delayed by the scheduler
    /// or busy with a burst of loops does not leave a slot without cover.
    pub fn depth_for(rate: u32) -> usize {
        (rate as usize / 4).clamp(16, 1024)
    }

    /// Starts a builder thread for up to `links` links (routes may name fewer, and change
    /// with [`set_routes`](Self::set_routes)) keeping `depth` cover packets ready per link,
    /// reading time from `clock` (the same origin as the pipeline's). `on_start` runs first on
    /// the builder thread (e.g. to pin it to a core of its own).
    pub fn start(
        cover: LoopCover,
        links: usize,
        depth: usize,
        clock: Arc<dyn Fn() -> Time + Send + Sync>,
        on_start: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            cover: (0..links).map(|_| ReadyQueue::new(depth)).collect(),
            loops: (0..links).map(|_| ReadyQueue::new(LOOP_QUEUE)).collect(),
            returns: ArrayQueue::new(RETURN_QUEUE),
            stats: (0..links).map(|_| Default::default()).collect(),
            generation: AtomicU64::new(0),
            pending: Mutex::new(None),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let builder = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::Builder::new()
                .name("pb-cover".into())
                .spawn(move || {
                    on_start();
                    build(cover, &shared, &stop, clock.as_ref());
                })?
        };
        Ok(Self {
            handle: CoverHandle { shared },
            stop,
            builder: Some(builder),
        })
    }

    /// Cover packets ready for `link`.
    pub fn ready(&self, link: usize) -> usize {
        self.handle
            .shared
            .cover
            .get(link)
            .map_or(0, ReadyPackets::len)
    }

    /// A handle for one relay core's pipeline; the builder runs as long as the pool lives.
    pub fn handle(&self) -> CoverHandle {
        self.handle.clone()
    }

    /// Builds cover and loops for `epoch` along `plans` (one per link, at most the pool's
    /// links) from the builder's next round on, after a key rotation or a new topology. With
    /// `discard`, packets already built are dropped (the links changed); without, they still
    /// go out (a key rotation: relays keep the previous epoch's key through the overlap).
    pub fn set_routes(&self, epoch: Epoch, plans: Vec<Option<LoopPlan>>, discard: bool) {
        let mut pending = self
            .handle
            .shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // A change not yet taken up that discards keeps discarding.
        let discard = discard || pending.as_ref().is_some_and(|p| p.2);
        *pending = Some((epoch, plans, discard));
    }
}

/// The builder's loop: take up new routes, check returned loops, queue due loops, top every
/// cover queue up, expire overdue loops, publish the counters; wait a little when idle.
fn build(
    mut cover: LoopCover,
    shared: &Shared,
    stop: &AtomicBool,
    clock: &(dyn Fn() -> Time + Send + Sync),
) {
    let mut packet = [0u8; PACKET_LEN];
    while !stop.load(Ordering::Acquire) {
        let now = clock();
        let update = match shared.pending.try_lock() {
            Ok(mut pending) => pending.take(),
            Err(_) => None,
        };
        if let Some((epoch, plans, discard)) = update {
            cover.set_plans(epoch, plans, now);
            if discard {
                shared.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
        let generation = shared.generation.load(Ordering::Acquire);
        while let Some((token, at)) = shared.returns.pop() {
            cover.loop_returned(&token, at);
        }
        let mut built = false;
        for link in 0..shared.cover.len() {
            let now = clock();
            if !shared.loops[link].is_full() && cover.take_loop(link, now, &mut packet) {
                let _ = shared.loops[link].push((packet, generation));
                built = true;
            }
            if !shared.cover[link].is_full() && cover.fill(link, now, &mut packet) {
                let _ = shared.cover[link].push((packet, generation));
                built = true;
            }
        }
        cover.expire(clock());
        for (link, counters) in shared.stats.iter().enumerate() {
            let s = cover.loop_stats(link);
            let values = [s.sent, s.returned, s.lost].into_iter().chain(s.rtt);
            for (counter, value) in counters.iter().zip(values) {
                counter.store(value, Ordering::Relaxed);
            }
        }
        if !built {
            thread::sleep(Duration::from_micros(500));
        }
    }
}

impl Drop for CoverPool {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(builder) = self.builder.take() {
            let _ = builder.join();
        }
    }
}

impl CoverHandle {
    /// Takes a packet of the current generation from `queue` (older ones are dropped).
    fn take(&self, queue: Option<&ReadyPackets>, out: &mut [u8; PACKET_LEN]) -> bool {
        let Some(queue) = queue else {
            return false;
        };
        let current = self.shared.generation.load(Ordering::Acquire);
        while let Some((packet, generation)) = queue.pop() {
            if generation == current {
                *out = packet;
                return true;
            }
        }
        false
    }
}

impl CoverSource for CoverHandle {
    /// Ready while the link's queue holds a packet. (One built for routes that were just
    /// replaced may answer for a slot and then be discarded by `fill`: that slot is missed
    /// and counted, right after a topology change only.)
    fn ready(&mut self, link: usize) -> bool {
        self.shared.cover.get(link).is_some_and(|q| !q.is_empty())
    }

    fn fill(&mut self, link: usize, _now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        self.take(self.shared.cover.get(link), out)
    }

    fn loop_due(&mut self, link: usize, _now: Time) -> bool {
        self.shared.loops.get(link).is_some_and(|q| !q.is_empty())
    }

    fn take_loop(&mut self, link: usize, _now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        self.take(self.shared.loops.get(link), out)
    }

    fn loop_returned(&mut self, message: &[u8], now: Time) -> bool {
        let Some(token) = message
            .get(..LOOP_TOKEN_LEN)
            .and_then(|t| <[u8; LOOP_TOKEN_LEN]>::try_from(t).ok())
        else {
            return false;
        };
        self.shared.returns.push((token, now)).is_ok()
    }

    fn expire(&mut self, _now: Time) {
        // The builder expires loops.
    }

    fn loop_stats(&self, link: usize) -> LoopStats {
        let Some(counters) = self.shared.stats.get(link) else {
            return LoopStats::default();
        };
        let load = |i: usize| counters[i].load(Ordering::Relaxed);
        LoopStats {
            sent: load(0),
            returned: load(1),
            lost: load(2),
            rtt: core::array::from_fn(|b| load(3 + b)),
        }
    }
}

impl CoverSource for CoverPool {
    fn ready(&mut self, link: usize) -> bool {
        self.handle.ready(link)
    }

    fn fill(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        self.handle.fill(link, now, out)
    }

    fn loop_due(&mut self, link: usize, now: Time) -> bool {
        self.handle.loop_due(link, now)
    }

    fn take_loop(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        self.handle.take_loop(link, now, out)
    }

    fn loop_returned(&mut self, message: &[u8], now: Time) -> bool {
        self.handle.loop_returned(message, now)
    }

    fn expire(&mut self, now: Time) {
        self.handle.expire(now);
    }

    fn loop_stats(&self, link: usize) -> LoopStats {
        self.handle.loop_stats(link)
    }
}

#[cfg(test)]
mod tests {
    use super::weighted;

    #[test]
    fn a_weighted_draw_falls_on_each_candidate_by_its_share() {
        let weights = [900_000, 150_000, 0, 100_000];
        let mut counts = [0u32; 4];
        for i in 0..1_150 {
            counts[weighted(&weights, (f64::from(i) + 0.5) / 1_150.0)] += 1;
        }
        assert_eq!(counts, [900, 150, 0, 100]);
        assert_eq!(weighted(&weights, 0.999_999_999), 3);
        assert_eq!(weighted(&[0, 5, 0], 0.0), 1);
        assert_eq!(weighted(&[0, 5, 0], 0.999), 1);
    }
}
