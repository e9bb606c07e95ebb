//! The relay's mixing core, sans-IO: what happens to a packet between "unwrapped" and "sent".
//!
//! - [`SharedReplayFilter`]: the replay tags of every core's packets, one lock-free table per
//!   epoch, bounded, prepared before its epoch begins and cleared once the epoch is over; its
//!   [`Fill`] says how close it is to refusing.
//! - [`DelayQueue`]: holds each packet for the delay its header asks for (a timer wheel with
//!   one-millisecond ticks and a preallocated slab: no allocation per packet).
//! - [`Link`]: one outgoing link's bounded queue and constant-rate pacer: exactly R slots a
//!   second, each filled by a due real packet or else by cover.
//! - [`LoopMonitor`]: the relay's own loop packets (its cover), sent on a link and expected
//!   back; the ones that never return are counted per link, so a link that drops shows up.
//!
//! What it does not: I/O, threads, clocks or randomness. Time is a [`Time`] argument, items
//! are the caller's frame handles, and cover packets come from a caller's closure. The relay
//! pipeline (threads, UMEM frames, queues between cores) is built on top of it.
#![forbid(unsafe_code)]

mod delay;
mod loops;
mod pacer;
mod replay;

pub use delay::{DelayError, DelayQueue};
pub use loops::{
    LOOP_LOSS_ALERT, LOOP_LOSS_MIN_SETTLED, LOOP_TOKEN_LEN, LoopError, LoopMonitor, LoopStats,
    RTT_BUCKET_COUNT, RTT_BUCKETS_MS, rtt_bucket,
};
pub use pacer::{Filler, Link, LinkStats, Sent};
pub use replay::{
    Fill, MAX_PROBE, MAX_SLOTS, ReplayHandle, ReplayStats, SharedReplayFilter, Verdict,
};

/// A point in time in nanoseconds since an origin the caller picks (a monotonic clock in the
/// relay, a virtual one in simulations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// Nanoseconds in a millisecond.
    pub const MS: u64 = 1_000_000;
    /// Nanoseconds in a second.
    pub const SECOND: u64 = 1_000_000_000;

    /// `self` plus `nanos`, saturating.
    pub fn plus(self, nanos: u64) -> Time {
        Time(self.0.saturating_add(nanos))
    }
}

/// Why a mixing structure could not be built from its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A capacity of zero, or one too large to allocate.
    #[error("capacity {0} is out of range (1 to {1})")]
    Capacity(usize, usize),
    /// A link rate of zero packets per second.
    #[error("a link rate must be at least 1 packet per second")]
    ZeroRate,
}
