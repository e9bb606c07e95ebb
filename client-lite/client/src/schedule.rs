//! When the client sends, sans I/O: two Poisson processes (its packets at the profile's
//! mean gap, its loops at the loop gap), drawn from a random stream of their own. Nothing
//! the user does reaches this stream, so the send times are the same whether the user is
//! idle or busy: what is sent at each time (a real packet or cover) is decided after the
//! time is, by [`crate::session::slot_packet`].

use std::time::Duration;

use crate::session::{Profile, Random};

/// A random stream from a 32-byte seed (BLAKE3 in extendable-output mode).
pub struct StreamRandom(blake3::OutputReader);

impl StreamRandom {
    /// The stream of `seed`.
    pub fn new(seed: &[u8; 32]) -> Self {
        Self(
            blake3::Hasher::new_derive_key("PhantomBand v1 client send schedule")
                .update(seed)
                .finalize_xof(),
        )
    }
}

impl Random for StreamRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill(buf);
    }
}

/// What is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// A send slot: a real packet or cover.
    Send,
    /// A loop packet.
    Loop,
}

/// Further behind than this (a suspended machine), a process starts again from now
/// rather than sending everything it missed in a burst.
const MAX_BEHIND: Duration = Duration::from_secs(1);

/// The client's send times.
pub struct Schedule {
    random: StreamRandom,
    mean_gap: Duration,
    loop_gap: Duration,
    next_send: Duration,
    next_loop: Duration,
}

impl core::fmt::Debug for Schedule {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Schedule")
            .field("mean_gap", &self.mean_gap)
            .field("loop_gap", &self.loop_gap)
            .finish_non_exhaustive()
    }
}

impl Schedule {
    /// The schedule of `profile` from `start` on, its times drawn from `seed`.
    pub fn new(seed: &[u8; 32], profile: &Profile, start: Duration) -> Self {
        let mut random = StreamRandom::new(seed);
        let next_send = start + random.exponential(profile.mean_gap);
        let next_loop = start + random.exponential(profile.loop_gap);
        Self {
            random,
            mean_gap: profile.mean_gap,
            loop_gap: profile.loop_gap,
            next_send,
            next_loop,
        }
    }

    /// The next event and its time.
    pub fn next(&self) -> (Duration, Due) {
        if self.next_loop < self.next_send {
            (self.next_loop, Due::Loop)
        } else {
            (self.next_send, Due::Send)
        }
    }

    /// The next event if it is due by `by`, and its time; the schedule moves past it.
    pub fn take(&mut self, by: Duration) -> Option<(Duration, Due)> {
        let (at, due) = self.next();
        if at > by {
            return None;
        }
        let (next, gap) = match due {
            Due::Send => (&mut self.next_send, self.mean_gap),
            Due::Loop => (&mut self.next_loop, self.loop_gap),
        };
        *next += self.random.exponential(gap);
        if *next + MAX_BEHIND < by {
            *next = by;
        }
        Some((at, due))
    }
}

#[cfg(test)]
mod tests;
