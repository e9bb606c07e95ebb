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

use pb_mix::{LoopMonitor, Time};
use pb_sphinx::{CreateError, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};

/// The mailbox of one-hop link cover: a relay drops (and counts) what is delivered to it.
pub const COVER_MAILBOX: MailboxId = MailboxId([0; 16]);

/// Builds a cover packet for a link's slot.
pub trait CoverSource {
    /// Writes a cover packet for link `link` into `out`, registering it with `loops` if it is
    /// a loop; `false` when none can be built (counted by the pipeline; the slot goes unused).
    fn fill(
        &mut self,
        link: usize,
        now: Time,
        loops: &mut LoopMonitor,
        out: &mut [u8; PACKET_LEN],
    ) -> bool;
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
    /// `mailbox`, at most `loop_rate` per second per link (0: none), link cover otherwise.
    pub fn new(
        format: Format,
        epoch: Epoch,
        routes: Vec<Vec<Hop>>,
        mailbox: MailboxId,
        loop_rate: u32,
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
        }
    }

    /// New routes (and epoch) after a key rotation or topology change.
    pub fn set_routes(&mut self, epoch: Epoch, routes: Vec<Vec<Hop>>) {
        self.epoch = epoch;
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
    fn fill(
        &mut self,
        link: usize,
        now: Time,
        loops: &mut LoopMonitor,
        out: &mut [u8; PACKET_LEN],
    ) -> bool {
        match self.routes.get(link) {
            Some(route) if !route.is_empty() => {}
            _ => return false,
        }
        let seed = self.next_seed();
        let route = &self.routes[link];
        let is_loop = self.loop_interval != u64::MAX && now >= self.next_loop[link];
        let built = if is_loop {
            let Ok(token) = loops.send(link, now) else {
                return false;
            };
            // After a quiet spell, do not burst loops to catch up.
            self.next_loop[link] = self.next_loop[link].plus(self.loop_interval).max(now);
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
