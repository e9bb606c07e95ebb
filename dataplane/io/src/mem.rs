//! An in-memory backend for tests and simulations: [`MemIo`] endpoints joined by a virtual
//! network, [`MemNet`], that runs on the caller's clock and a seeded RNG, in the manner of
//! quinn's test `Pair`.
//!
//! What it is:
//! - a [`PacketIo`] that behaves like the real backends towards its caller: each endpoint has
//!   its own bounded pool of [`FRAME_SIZE`]-byte frames (the same frame pool code as the UDP
//!   backend); frames return only through [`PacketIo::send`] and [`PacketIo::release`]; a
//!   receive or [`PacketIo::alloc`] that finds no free frame counts an `alloc_failure`; packets of another endpoint are counted as
//!   `foreign_packets` and left alone; datagrams of the wrong length are dropped as
//!   `rx_dropped_malformed`;
//! - a network: a datagram sent at virtual time `t` waits in its destination's receive queue
//!   from `t + latency` on, unless the network loses it (a loss rate drawn from the seeded
//!   RNG, one draw per datagram) or the queue is full (dropped and counted, like a full socket
//!   buffer). Endpoints bound with `reuse_port` share an address and the network spreads
//!   sources over them by a fixed hash of the source address, like `SO_REUSEPORT`;
//! - a recorder: every datagram sent is logged with its virtual send time, source,
//!   destination, bytes and [`Fate`], so a test can compare per-link schedules byte for byte.
//!
//! Time is a `u64` of nanoseconds since an origin the test picks (the count inside
//! `pb_mix::Time`, which this crate does not depend on). It moves only when the test calls
//! [`MemNet::set_now`]. Hence [`PacketIo::recv`] never blocks or sleeps: its timeout is
//! ignored, since nothing could arrive while the caller waited; a test advances time to the
//! next deadline or [`MemIo::next_arrival`] instead.
//!
//! What it is not: a model of a real network (no reordering, bandwidth, MTU, address families
//! or ICMP) or of the kernel beyond the bounded receive queue; the transmit side never fills
//! (`send` takes every packet). It copies and allocates per datagram: it is for tests, not
//! speed. The RNG (SplitMix64) is statistical, not cryptographic. Endpoints share the network
//! behind a mutex, so they can move to other threads, but determinism needs the test to drive
//! them in a fixed order.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use crate::{IoError, IoStats, Packet, PacketIo, pool::FramePool};

/// Bytes in one frame of an endpoint's pool: the largest payload.
pub const FRAME_SIZE: usize = crate::pool::FRAME_SIZE;

/// The first port handed out to endpoints bound to port 0.
const FIRST_EPHEMERAL_PORT: u16 = 40_000;

/// Settings of one in-memory endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemConfig {
    /// Address to bind; port 0 picks the next free port (deterministically, from 40000).
    pub bind: SocketAddr,
    /// Exact payload length accepted on receive; other sizes are dropped and counted.
    pub packet_len: u16,
    /// Frames in the pool.
    pub frame_count: u32,
    /// Datagrams the receive queue holds (arrived or on their way); more are dropped.
    pub queue: usize,
    /// Share the address with other endpoints bound with `reuse_port`.
    pub reuse_port: bool,
}

impl MemConfig {
    /// Defaults for `bind`: the default packet length, 1024 frames, a queue of 1024.
    pub fn new(bind: SocketAddr) -> Self {
        Self {
            bind,
            packet_len: crate::DEFAULT_PACKET_LEN,
            frame_count: 1024,
            queue: 1024,
            reuse_port: false,
        }
    }
}

/// What became of a sent datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fate {
    /// Put in the destination's receive queue.
    Queued,
    /// Lost on the way (the loss rate).
    Lost,
    /// Dropped: the destination's receive queue was full.
    QueueFull,
    /// Dropped: nothing is bound to the destination address.
    Unreachable,
}

/// One datagram an endpoint sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Transmission {
    /// Virtual time it was sent, in nanoseconds.
    pub at: u64,
    /// The sending endpoint's address.
    pub src: SocketAddr,
    /// The address it was sent to.
    pub dst: SocketAddr,
    /// Its payload.
    pub bytes: Vec<u8>,
    /// What became of it.
    pub fate: Fate,
}

/// Counters of the whole network; all monotonic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by any endpoint.
    pub sent: u64,
    /// Of those, put in a receive queue.
    pub queued: u64,
    /// Lost on the way.
    pub lost: u64,
    /// Dropped at a full receive queue.
    pub queue_full: u64,
    /// Sent to an address nothing is bound to.
    pub unreachable: u64,
}

/// A virtual network of [`MemIo`] endpoints on a virtual clock. Cheap to clone: clones share
/// the network.
#[derive(Clone)]
pub struct MemNet {
    shared: Arc<Mutex<Net>>,
}

impl core::fmt::Debug for MemNet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let net = self.lock();
        f.debug_struct("MemNet")
            .field("now", &net.now)
            .field("endpoints", &net.endpoints.len())
            .field("stats", &net.stats)
            .finish_non_exhaustive()
    }
}

/// A datagram in a receive queue.
struct Datagram {
    arrives: u64,
    src: SocketAddr,
    bytes: Vec<u8>,
}

struct Endpoint {
    reuse_port: bool,
    queue: VecDeque<Datagram>,
    capacity: usize,
    dropped_full: u64,
}

struct Net {
    now: u64,
    rng: SplitMix64,
    /// A datagram is lost when a draw is below this (`u64::MAX`: always).
    loss: u64,
    latency: u64,
    next_id: u64,
    next_port: u16,
    endpoints: BTreeMap<u64, Endpoint>,
    /// The endpoints bound to each address, in bind order.
    bound: BTreeMap<SocketAddr, Vec<u64>>,
    recording: bool,
    log: Vec<Transmission>,
    /// Buffers of received datagrams, for reuse.
    spare: Vec<Vec<u8>>,
    stats: NetStats,
}

/// SplitMix64: a small seeded generator, enough for reproducible loss.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// FNV-1a of the source address: which endpoint of a `reuse_port` group gets its datagrams.
fn flow_hash(src: &SocketAddr) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    match src.ip() {
        IpAddr::V4(ip) => eat(&ip.octets()),
        IpAddr::V6(ip) => eat(&ip.octets()),
    }
    eat(&src.port().to_be_bytes());
    hash
}

impl Net {
    /// Routes one datagram sent now from `src` to `dst`, drawing its loss.
    fn transmit(&mut self, src: SocketAddr, dst: SocketAddr, payload: &[u8]) {
        self.stats.sent += 1;
        let draw = self.rng.next();
        let fate = match self.bound.get(&dst) {
            None => Fate::Unreachable,
            Some(_) if self.loss == u64::MAX || draw < self.loss => Fate::Lost,
            Some(group) => {
                let id = group[(flow_hash(&src) % group.len() as u64) as usize];
                match self.endpoints.get_mut(&id) {
                    Some(e) if e.queue.len() < e.capacity => {
                        let mut bytes = self.spare.pop().unwrap_or_default();
                        bytes.clear();
                        bytes.extend_from_slice(payload);
                        e.queue.push_back(Datagram {
                            arrives: self.now.saturating_add(self.latency),
                            src,
                            bytes,
                        });
                        Fate::Queued
                    }
                    Some(e) => {
                        e.dropped_full += 1;
                        Fate::QueueFull
                    }
                    None => Fate::Unreachable,
                }
            }
        };
        match fate {
            Fate::Queued => self.stats.queued += 1,
            Fate::Lost => self.stats.lost += 1,
            Fate::QueueFull => self.stats.queue_full += 1,
            Fate::Unreachable => self.stats.unreachable += 1,
        }
        if self.recording {
            self.log.push(Transmission {
                at: self.now,
                src,
                dst,
                bytes: payload.to_vec(),
                fate,
            });
        }
    }
}

impl MemNet {
    /// An empty network at time 0 whose losses are drawn from `seed`: no loss and no latency
    /// until set, every datagram recorded.
    pub fn new(seed: u64) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Net {
                now: 0,
                rng: SplitMix64(seed),
                loss: 0,
                latency: 0,
                next_id: 0,
                next_port: FIRST_EPHEMERAL_PORT,
                endpoints: BTreeMap::new(),
                bound: BTreeMap::new(),
                recording: true,
                log: Vec::new(),
                spare: Vec::new(),
                stats: NetStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        // Every update leaves the network consistent, so a panic elsewhere does not taint it.
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loses each datagram sent from now on with probability `loss` (clamped to 0..=1).
    pub fn set_loss(&self, loss: f64) {
        let loss = if loss.is_nan() {
            0.0
        } else {
            loss.clamp(0.0, 1.0)
        };
        // 2^64 × loss; a float-to-int `as` saturates, and 1.0 means every datagram.
        self.lock().loss = if loss >= 1.0 {
            u64::MAX
        } else {
            (loss * 18_446_744_073_709_551_616.0) as u64
        };
    }

    /// Delivers datagrams sent from now on `nanos` after they were sent.
    pub fn set_latency(&self, nanos: u64) {
        self.lock().latency = nanos;
    }

    /// Whether sent datagrams are recorded (on by default).
    pub fn set_recording(&self, on: bool) {
        self.lock().recording = on;
    }

    /// The virtual time, in nanoseconds.
    pub fn now(&self) -> u64 {
        self.lock().now
    }

    /// Moves the virtual time to `nanos`; an earlier time is ignored (time never goes back).
    pub fn set_now(&self, nanos: u64) {
        let mut net = self.lock();
        net.now = net.now.max(nanos);
    }

    /// A new endpoint. Refused like `bind(2)` (`IoError::Sys { call: "bind" }`, address in
    /// use) when the address is taken, unless this and every endpoint holding it set
    /// `reuse_port`.
    pub fn bind(&self, config: &MemConfig) -> Result<MemIo, IoError> {
        let in_use = || IoError::Sys {
            call: "bind",
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let mut net = self.lock();
        let mut local = config.bind;
        if local.port() == 0 {
            let start = net.next_port;
            loop {
                local.set_port(net.next_port);
                net.next_port = net.next_port.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
                if !net.bound.contains_key(&local) {
                    break;
                }
                if net.next_port == start {
                    return Err(in_use());
                }
            }
        }
        let shareable = |group: &Vec<u64>, net: &Net| {
            config.reuse_port
                && group
                    .iter()
                    .all(|id| net.endpoints.get(id).is_some_and(|e| e.reuse_port))
        };
        if let Some(group) = net.bound.get(&local)
            && !shareable(group, &net)
        {
            return Err(in_use());
        }
        let id = net.next_id;
        net.next_id += 1;
        net.endpoints.insert(
            id,
            Endpoint {
                reuse_port: config.reuse_port,
                queue: VecDeque::new(),
                capacity: config.queue,
                dropped_full: 0,
            },
        );
        net.bound.entry(local).or_default().push(id);
        Ok(MemIo {
            id,
            net: self.clone(),
            local,
            pool: FramePool::new(config.frame_count),
            packet_len: usize::from(config.packet_len),
            stats: IoStats::default(),
        })
    }

    /// Every datagram sent so far (since the last [`take_transmissions`](Self::take_transmissions)),
    /// in the order sent.
    pub fn transmissions(&self) -> Vec<Transmission> {
        self.lock().log.clone()
    }

    /// Takes the record of sent datagrams, leaving it empty.
    pub fn take_transmissions(&self) -> Vec<Transmission> {
        std::mem::take(&mut self.lock().log)
    }

    /// Counters so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }
}

/// One endpoint of a [`MemNet`], implementing [`PacketIo`]. Dropping it unbinds its address
/// and discards what waits in its queue.
pub struct MemIo {
    id: u64,
    net: MemNet,
    local: SocketAddr,
    pool: FramePool,
    packet_len: usize,
    stats: IoStats,
}

impl core::fmt::Debug for MemIo {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MemIo")
            .field("local", &self.local)
            .field("free", &self.pool.free_frames())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Drop for MemIo {
    fn drop(&mut self) {
        let mut net = self.net.lock();
        net.endpoints.remove(&self.id);
        if let Some(group) = net.bound.get_mut(&self.local) {
            group.retain(|id| *id != self.id);
            if group.is_empty() {
                net.bound.remove(&self.local);
            }
        }
    }
}

impl MemIo {
    /// The network this endpoint belongs to.
    pub fn net(&self) -> &MemNet {
        &self.net
    }

    /// Frames in the pool that no packet holds.
    pub fn free_frames(&self) -> usize {
        self.pool.free_frames()
    }

    /// Datagrams in the receive queue that have arrived by now.
    pub fn waiting(&self) -> usize {
        let net = self.net.lock();
        let now = net.now;
        net.endpoints.get(&self.id).map_or(0, |e| {
            e.queue.iter().take_while(|d| d.arrives <= now).count()
        })
    }

    /// When the first datagram in the receive queue arrives (at or before now: it is there).
    pub fn next_arrival(&self) -> Option<u64> {
        let net = self.net.lock();
        net.endpoints
            .get(&self.id)
            .and_then(|e| e.queue.front())
            .map(|d| d.arrives)
    }

    /// Datagrams dropped because the receive queue was full.
    pub fn dropped_queue_full(&self) -> u64 {
        let net = self.net.lock();
        net.endpoints.get(&self.id).map_or(0, |e| e.dropped_full)
    }
}

impl PacketIo for MemIo {
    // release, alloc, capacity, set_len, payload, payload_mut, with_payloads_mut and stats:
    // the frame pool's, written once in `pool`.
    crate::pool::packet_io_pool_methods!();

    /// Takes up to `max` datagrams that have arrived by the network's time. Never blocks:
    /// `timeout` is ignored (in a virtual world, the test moves time).
    fn recv(
        &mut self,
        out: &mut Vec<Packet>,
        max: usize,
        _timeout: Duration,
    ) -> Result<usize, IoError> {
        if max == 0 {
            return Ok(0);
        }
        if self.pool.free_frames() == 0 {
            self.stats.alloc_failures += 1;
            return Ok(0);
        }
        let mut net = self.net.lock();
        let now = net.now;
        let Net {
            endpoints, spare, ..
        } = &mut *net;
        let Some(endpoint) = endpoints.get_mut(&self.id) else {
            return Ok(0);
        };
        let mut accepted = 0;
        while accepted < max {
            if endpoint.queue.front().is_none_or(|d| d.arrives > now) {
                break;
            }
            let Some((frame, _)) = self.pool.take() else {
                break;
            };
            let Some(datagram) = endpoint.queue.pop_front() else {
                self.pool.put_back(frame);
                break;
            };
            let packet = if datagram.bytes.len() == self.packet_len {
                self.pool
                    .write_received(frame, &datagram.bytes, datagram.src)
            } else {
                None
            };
            accepted += usize::from(self.pool.deliver(frame, packet, out, &mut self.stats));
            spare.push(datagram.bytes);
        }
        Ok(accepted)
    }

    /// Sends every packet of `batch` (the transmit side never fills).
    fn send(&mut self, batch: &mut Vec<Packet>) -> Result<usize, IoError> {
        let mut sent = 0;
        let net = self.net.clone();
        let mut net = net.lock();
        for packet in batch.drain(..) {
            if self.pool.payload_range(&packet).is_some() {
                net.transmit(self.local, packet.peer, self.pool.payload(&packet));
                self.stats.tx_packets += 1;
                sent += 1;
            } else if self.pool.owns(&packet) {
                self.stats.tx_dropped_invalid += 1;
            }
            // Ours: the frame goes back; another endpoint's: counted, left alone.
            self.pool.release(packet, &mut self.stats);
        }
        Ok(sent)
    }

    fn poll_completions(&mut self) -> Result<usize, IoError> {
        Ok(0)
    }

    fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[cfg(test)]
mod tests;
