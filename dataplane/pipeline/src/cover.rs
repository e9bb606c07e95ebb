//! Cover traffic: what fills a link's slot when no real packet is due. A relay's cover packets
//! are loops: genuine PB-Sphinx packets routed out on the link and back to the relay's own
//! loop mailbox, carrying a token from its [`LoopMonitor`], so that loops lost on the way are
//! counted per link.

use pb_mix::{LoopMonitor, Time};
use pb_sphinx::{CreateError, Epoch, Format, Hop, MailboxId, PACKET_LEN, create_packet_with};

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

/// Loop cover: for link `i`, a packet along `routes[i]` (which starts at that link's
/// neighbour and ends at this relay) delivered to this relay's loop mailbox.
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
    /// Loop packets that could not be built, by the last error.
    pub last_error: Option<CreateError>,
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
    /// Loops in `format` for `epoch` along `routes` (one per link), delivered to `mailbox`.
    pub fn new(
        format: Format,
        epoch: Epoch,
        routes: Vec<Vec<Hop>>,
        mailbox: MailboxId,
        key: [u8; 32],
    ) -> Self {
        Self {
            format,
            epoch,
            routes,
            mailbox,
            key,
            counter: 0,
            last_error: None,
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
        let Some(route) = self.routes.get(link) else {
            return false;
        };
        if route.is_empty() {
            return false;
        }
        let Ok(token) = loops.send(link, now) else {
            return false;
        };
        let seed = self.next_seed();
        let route = &self.routes[link];
        match create_packet_with(
            self.format,
            out,
            self.epoch,
            route,
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
}
