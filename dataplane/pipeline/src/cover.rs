//! Cover traffic: what fills a link's slot when no real packet is due. Two kinds, both
//! genuine PB-Sphinx packets, indistinguishable on the link:
//!
//! - **loops**, at most `loop_rate` per second per link: routed out on the link, once around
//!   the network and back to the relay's own loop mailbox, carrying a token from its
//!   [`LoopMonitor`], so that loops lost on the way are counted per link;
//! - **link cover** for every other idle slot: a one-hop packet for the neighbour's
//!   [`COVER_MAILBOX`], which the neighbour unwraps, counts and drops.
//!
//! Why not loops in every idle slot: a loop occupies a slot on every link of its route, so
//! if every idle slot started one, the network would fill with circulating loops, leave no
//! room for real packets and starve the relays furthest down the cycle of their own loops
//! (seen in the five-relay testnet). Bounding loops keeps their load at `hops × loop_rate`
//! per link, well under the link rate.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use crossbeam::queue::ArrayQueue;
use pb_mix::{LoopMonitor, LoopStats, Time};
use pb_sphinx::{CreateError, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};

/// The mailbox of one-hop link cover: a relay drops (and counts) what is delivered to it.
pub const COVER_MAILBOX: MailboxId = MailboxId([0; 16]);

/// Provides cover packets for a link's idle slots and counts the relay's loops.
pub trait CoverSource {
    /// Whether a cover packet for link `link` is at hand. The pipeline asks at every slot,
    /// a real packet queued or not, and misses the slot (for real and cover alike) when it
    /// is not, so that the link's schedule never depends on its traffic.
    fn ready(&mut self, link: usize) -> bool;

    /// Writes a cover packet for link `link` into `out`; `false` when none is available
    /// (the pipeline counts the slot as missed).
    fn fill(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool;

    /// A message delivered to the relay's loop mailbox: `true` if it is one of its loops,
    /// now counted as returned.
    fn loop_returned(&mut self, message: &[u8], now: Time) -> bool;

    /// Counts loops overdue at `now` as lost.
    fn expire(&mut self, now: Time);

    /// Loop counters of `link`.
    fn loop_stats(&self, link: usize) -> LoopStats;
}

/// Loop and link cover: for link `i`, at most `loop_rate` loops a second along `routes[i]`
/// (which starts at that link's neighbour and ends at this relay), delivered to this relay's
/// loop mailbox; otherwise one-hop link cover for that neighbour.
///
/// Packet randomness is a keyed blake3 of a counter under a secret key (a CSPRNG in counter
/// mode): the relay draws the key from the OS at start; tests pass a fixed one.
pub struct LoopCover {
    format: Format,
    epoch: Epoch,
    routes: Vec<Vec<Hop>>,
    mailbox: MailboxId,
    key: [u8; 32],
    counter: u64,
    /// Nanoseconds between loops on one link.
    loop_interval: u64,
    /// When each link may send its next loop.
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

impl LoopCover {
    /// Cover in `format` for `epoch`: loops along `routes` (one per link) delivered to
    /// `mailbox`, at most `loop_rate` per second per link (0: none), counted by `monitor`;
    /// link cover otherwise.
    pub fn new(
        format: Format,
        epoch: Epoch,
        routes: Vec<Vec<Hop>>,
        mailbox: MailboxId,
        loop_rate: u32,
        monitor: LoopMonitor,
        key: [u8; 32],
    ) -> Self {
        let links = routes.len();
        Self {
            format,
            epoch,
            routes,
            mailbox,
            key,
            counter: 0,
            loop_interval: Time::SECOND
                .checked_div(u64::from(loop_rate))
                .unwrap_or(u64::MAX),
            next_loop: vec![Time(0); links],
            last_error: None,
            loops: 0,
            link_cover: 0,
            monitor,
        }
    }

    /// New routes (and epoch) after a key rotation or topology change.
    pub fn set_routes(&mut self, epoch: Epoch, routes: Vec<Vec<Hop>>) {
        self.epoch = epoch;
        self.next_loop.resize(routes.len(), Time(0));
        self.routes = routes;
    }

    fn next_seed(&mut self) -> [u8; 32] {
        self.counter += 1;
        *blake3::keyed_hash(&self.key, &self.counter.to_le_bytes()).as_bytes()
    }
}

impl Drop for LoopCover {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl CoverSource for LoopCover {
    /// Builds on demand: ready whenever the link has a route.
    fn ready(&mut self, link: usize) -> bool {
        self.routes.get(link).is_some_and(|r| !r.is_empty())
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

    fn fill(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        match self.routes.get(link) {
            Some(route) if !route.is_empty() => {}
            _ => return false,
        }
        let Some(next_loop) = self.next_loop.get(link).copied() else {
            return false;
        };
        let seed = self.next_seed();
        let route = &self.routes[link];
        // A one-hop route has no way back: link cover only.
        let is_loop = self.loop_interval != u64::MAX && now >= next_loop && route.len() >= 2;
        let built = if is_loop {
            let Ok(token) = self.monitor.send(link, now) else {
                return false;
            };
            // After a quiet spell, do not burst loops to catch up.
            self.next_loop[link] = next_loop.plus(self.loop_interval).max(now);
            self.loops += 1;
            create_packet_with(
                self.format,
                out,
                self.epoch,
                route,
                self.mailbox,
                &token,
                &seed,
            )
        } else {
            self.link_cover += 1;
            create_packet_with(
                self.format,
                out,
                self.epoch,
                &route[..1],
                COVER_MAILBOX,
                &[],
                &seed,
            )
        };
        match built {
            Ok(_) => true,
            Err(e) => {
                self.last_error = Some(e);
                false
            }
        }
    }
}

/// Cover built ahead of time on another core: a builder thread keeps a bounded queue of
/// ready cover packets per link full (from a [`LoopCover`]), and the pipeline's idle slots
/// take from it, so cover costs the forwarding core a copy instead of a packet creation.
///
/// The loop monitor lives with the builder behind a mutex: the builder registers a loop when
/// it builds it (so a loop's round trip includes its wait in the queue, at most the queue's
/// depth in slots), and the pipeline takes the lock only for the rare returning loop and for
/// statistics. The builder also expires overdue loops. Dropping the pool stops the thread.
pub struct CoverPool {
    handle: CoverHandle,
    stop: Arc<AtomicBool>,
    builder: Option<thread::JoinHandle<()>>,
}

/// One relay core's access to a [`CoverPool`]: ready cover for the links it owns, and the
/// shared loop monitor for loops that come back on it. Cheap to clone, one per core.
#[derive(Clone)]
pub struct CoverHandle {
    queues: Arc<Vec<ArrayQueue<Ready>>>,
    cover: Arc<Mutex<LoopCover>>,
    /// Moves on with every [`CoverPool::set_routes`]: packets built before are discarded.
    generation: Arc<AtomicU64>,
}

/// A cover packet ready for a link, and the routes' generation it was built for.
type Ready = ([u8; PACKET_LEN], u64);

impl core::fmt::Debug for CoverPool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CoverPool")
            .field("links", &self.handle.queues.len())
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for CoverHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CoverHandle")
            .field("links", &self.queues.len())
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
    /// with [`set_routes`](Self::set_routes)) keeping `depth` packets ready per link,
    /// reading time from `clock` (the same origin as the pipeline's). `on_start` runs first on
    /// the builder thread (e.g. to pin it to a core of its own).
    pub fn start(
        cover: LoopCover,
        links: usize,
        depth: usize,
        clock: Arc<dyn Fn() -> Time + Send + Sync>,
        on_start: Box<dyn FnOnce() + Send>,
    ) -> std::io::Result<Self> {
        let handle = CoverHandle {
            queues: Arc::new((0..links).map(|_| ArrayQueue::new(depth.max(1))).collect()),
            cover: Arc::new(Mutex::new(cover)),
            generation: Arc::new(AtomicU64::new(0)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let builder = {
            let (handle, stop) = (handle.clone(), stop.clone());
            thread::Builder::new()
                .name("pb-cover".into())
                .spawn(move || {
                    on_start();
                    build(&handle, &stop, clock.as_ref());
                })?
        };
        Ok(Self {
            handle,
            stop,
            builder: Some(builder),
        })
    }

    /// Packets ready for `link`.
    pub fn ready(&self, link: usize) -> usize {
        self.handle.queues.get(link).map_or(0, ArrayQueue::len)
    }

    /// A handle for one relay core's pipeline; the builder runs as long as the pool lives.
    pub fn handle(&self) -> CoverHandle {
        self.handle.clone()
    }

    /// Builds cover for `epoch` along `routes` (one per link, at most the pool's links)
    /// from now on, after a key rotation or a new topology. With `discard`, packets already
    /// built are dropped (the links changed); without, they still go out (a key rotation:
    /// relays keep the previous epoch's key through the overlap).
    pub fn set_routes(&self, epoch: Epoch, routes: Vec<Vec<Hop>>, discard: bool) {
        self.handle.with_cover(|c| {
            c.set_routes(epoch, routes);
            if discard {
                self.handle.generation.fetch_add(1, Ordering::AcqRel);
            }
        });
    }
}

impl CoverHandle {
    fn with_cover<T>(&self, f: impl FnOnce(&mut LoopCover) -> T) -> T {
        match self.cover.lock() {
            Ok(mut c) => f(&mut c),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }
}

/// The builder's loop: top every queue up, then wait a little.
fn build(handle: &CoverHandle, stop: &AtomicBool, clock: &(dyn Fn() -> Time + Send + Sync)) {
    let mut packet = [0u8; PACKET_LEN];
    while !stop.load(Ordering::Acquire) {
        let mut built = false;
        for (link, queue) in handle.queues.iter().enumerate() {
            if queue.is_full() {
                continue;
            }
            let now = clock();
            // Read under the lock, so that a packet is tagged with the routes it was built on.
            let (ok, generation) = handle.with_cover(|c| {
                (
                    c.fill(link, now, &mut packet),
                    handle.generation.load(Ordering::Acquire),
                )
            });
            if ok {
                let _ = queue.push((packet, generation));
                built = true;
            }
        }
        if !built {
            handle.with_cover(|c| c.expire(clock()));
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

impl CoverSource for CoverHandle {
    /// Ready while the link's queue holds a packet. (One built for routes that were just
    /// replaced may answer for a slot and then be discarded by `fill`: that slot is missed
    /// and counted, right after a topology change only.)
    fn ready(&mut self, link: usize) -> bool {
        self.queues.get(link).is_some_and(|q| !q.is_empty())
    }

    fn fill(&mut self, link: usize, _now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        let current = self.generation.load(Ordering::Acquire);
        let Some(queue) = self.queues.get(link) else {
            return false;
        };
        // Packets built for an earlier set of links are dropped here.
        while let Some((packet, generation)) = queue.pop() {
            if generation == current {
                *out = packet;
                return true;
            }
        }
        false
    }

    fn loop_returned(&mut self, message: &[u8], now: Time) -> bool {
        self.with_cover(|c| c.loop_returned(message, now))
    }

    fn expire(&mut self, _now: Time) {
        // The builder expires loops when it has nothing to build.
    }

    fn loop_stats(&self, link: usize) -> LoopStats {
        self.with_cover(|c| c.loop_stats(link))
    }
}

impl CoverSource for CoverPool {
    fn ready(&mut self, link: usize) -> bool {
        self.handle.ready(link)
    }

    fn fill(&mut self, link: usize, now: Time, out: &mut [u8; PACKET_LEN]) -> bool {
        self.handle.fill(link, now, out)
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
