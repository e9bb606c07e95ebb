//! The client's loops: real messages, on a Poisson process of their own. The client keeps a
//! session of its own with an exit drawn at random, and at each loop tick sends it a probe:
//! an empty message on the session's channel, which the exit acknowledges through one of
//! the session's SURBs. A probe goes gateway, mix layers 1, 2, 3, exit, and its
//! acknowledgement comes back exit, 3, 2, 1, gateway, with the delays of any packet: it is
//! a real message, so no relay on the way can tell it from one, and one that drops real
//! packets drops probes alike. A probe not acknowledged in time is sent again by the
//! channel; those retransmissions are the loops lost.
//!
//! (Loops used to be Sphinx packets from the client back to its own mailbox through layers
//! 1, 2 and 1 again, a shape no real packet takes: a mix could pass them and drop the rest.)

use std::time::Duration;

use pb_control::{LAYERS, Topology};
use pb_sphinx::{MailboxId, NodeId, PACKET_LEN, SurbId};

use crate::session::{NoRoute, Profile, Random, Session};

/// Loop counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Probes sent (the first time).
    pub sent: u64,
    /// Probes acknowledged.
    pub returned: u64,
    /// Probes sent again because no acknowledgement came in time.
    pub lost: u64,
}

impl LoopStats {
    fn add(&mut self, other: LoopStats) {
        self.sent += other.sent;
        self.returned += other.returned;
        self.lost += other.lost;
    }
}

/// The client's loops.
#[derive(Debug, Default)]
pub struct Loops {
    session: Option<Session>,
    /// Counters of the sessions retired before this one.
    before: LoopStats,
}

impl Loops {
    /// No loop session yet: it is made with the first probe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counters, over every loop session of the run.
    pub fn stats(&self) -> LoopStats {
        let mut stats = self.before;
        if let Some(s) = &self.session {
            stats.add(session_stats(s));
        }
        stats
    }

    /// The next probe, its acknowledgement to come back to `mailbox` at `gateway`. A loop
    /// session whose exit left the topology, or whose channel gave up, is replaced by one
    /// with another exit.
    pub fn packet(
        &mut self,
        now: Duration,
        topology: &Topology,
        gateway: NodeId,
        mailbox: MailboxId,
        profile: &Profile,
        random: &mut dyn Random,
    ) -> Result<[u8; PACKET_LEN], NoRoute> {
        let stale = self
            .session
            .as_ref()
            .is_some_and(|s| s.is_broken() || topology.find(s.exit()).is_none());
        if stale && let Some(old) = self.session.take() {
            self.before.add(session_stats(&old));
        }
        if self.session.is_none() {
            let exits = topology.layer(LAYERS - 1);
            let exit = exits
                .get(random.below(exits.len()))
                .ok_or(NoRoute::Topology)?
                .node;
            self.session = Some(Session::new(random, mailbox, exit, *profile));
        }
        let session = self.session.as_mut().ok_or(NoRoute::Topology)?;
        session.probe();
        session.packet(now, topology, gateway, random)
    }

    /// Ends the loop session (its replies came through a gateway left behind); the next
    /// probe starts another.
    pub fn restart(&mut self) {
        if let Some(old) = self.session.take() {
            self.before.add(session_stats(&old));
        }
    }

    /// Whether `surb` is one the loop session handed out.
    pub fn owns(&self, surb: &SurbId) -> bool {
        self.session.as_ref().is_some_and(|s| s.owns(surb))
    }

    /// A reply through one of the loop session's SURBs: the exit's acknowledgements.
    pub fn reply(&mut self, now: Duration, surb: SurbId, payload: &mut [u8]) {
        if let Some(s) = &mut self.session {
            s.reply(now, surb, payload);
        }
    }
}

/// A loop session's counters: every new message it sent is a probe.
fn session_stats(session: &Session) -> LoopStats {
    let (channel, in_flight) = session.channel_stats();
    LoopStats {
        sent: channel.sent,
        returned: channel.sent.saturating_sub(in_flight as u64),
        lost: channel.retransmitted,
    }
}

#[cfg(test)]
mod tests;
