//! The gateway's downlink to its clients, sans I/O: each client's replies wait in its
//! mailbox and leave at the client's own rate, one datagram per slot, padding when nothing
//! is due (Loopix's provider does the same by pull). An observer of the client's access
//! link then sees the same datagrams at the same times whether the user downloads or not.
//!
//! Slots are those of a relay link ([`pb_mix::Link`]): `rate` in every second, at
//! fixed offsets from the moment the downlink started. The rate is what the client asked
//! for in its hello, within [1, [`MAX_RATE`]]; a change takes effect only once the current
//! rate has been held for [`RATE_HOLD`], so a rate follows announced steps, never the
//! traffic. Padding is a reply datagram with random bytes in place of the SURB id and the
//! wrapped payload: on the wire, only the client can tell it from a reply.
//!
//! A constant stream to an address that only claimed to be a client would make the gateway
//! an amplifier (one spoofed hello, minutes of datagrams at the victim). The downlink
//! therefore runs only while the client's hellos echo the cookie the gateway sent to its
//! address (return routability), and stops [`VERIFIED_FOR`] after the last such hello; the
//! mailbox keeps its queue meanwhile.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::SocketAddr,
};

use pb_mix::{Filler, Link, Time};
use pb_proto::link;
use pb_sphinx::{MailboxId, PACKET_LEN};

/// The rate a client gets that asks for none (0 in its hello), in datagrams a second.
pub const DEFAULT_RATE: u16 = 100;
/// The most a client may ask for.
pub const MAX_RATE: u16 = 1000;
/// How long a rate is held before the client may step to another.
pub const RATE_HOLD: u64 = 60 * Time::SECOND;
/// How long a hello with a valid cookie keeps the downlink running (clients say hello
/// every 10 s).
pub const VERIFIED_FOR: u64 = 35 * Time::SECOND;
/// Datagrams queued per mailbox (the client's SURB supply bounds what arrives).
pub const QUEUE_DEPTH: usize = 512;
/// Datagrams queued over all mailboxes (about 190 MB).
pub const MAX_QUEUED: usize = 1 << 17;
/// Late slots sent at once when the thread fell behind; older ones are missed.
const MAX_BURST: u32 = 4;

/// A datagram for a client, exactly [`PACKET_LEN`] bytes.
pub type Datagram = Box<[u8; PACKET_LEN]>;

/// Why a datagram was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No such mailbox (expired, or never registered).
    NoMailbox,
    /// Its queue, or all queues together, are full.
    Full,
}

/// Counters of the downlink. None says which slots carried data: that is what the
/// padding hides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DownlinkStats {
    /// Datagrams sent in slots (data and padding alike).
    pub sent: u64,
    /// Slots not sent: the thread was more than a few slots late.
    pub missed: u64,
    /// Mailboxes forgotten to make room for a new one (the table was full).
    pub evicted: u64,
}

/// One slot's content.
enum Out {
    Pad,
    Data(Datagram),
}

/// Padding for every empty slot.
struct Padding;

impl Filler<Out> for Padding {
    fn ready(&mut self) -> bool {
        true
    }
    fn cover(&mut self) -> Option<Out> {
        Some(Out::Pad)
    }
}

struct Mailbox {
    addr: SocketAddr,
    seen: Time,
    rate: u16,
    rate_since: Time,
    /// The downlink runs until then.
    verified_until: Time,
    link: Link<Out>,
    /// Which heap entry is current (older ones are skipped).
    generation: u32,
}

impl Mailbox {
    fn active(&self, now: Time) -> bool {
        self.verified_until > now
    }
}

/// Every client's mailbox and slots.
pub struct Downlink {
    mailboxes: HashMap<MailboxId, Mailbox>,
    by_addr: HashMap<SocketAddr, MailboxId>,
    due: BinaryHeap<Reverse<(Time, u32, [u8; 16])>>,
    queued: usize,
    max_mailboxes: usize,
    /// The bytes of padding, a stream from a seed drawn at start.
    random: blake3::OutputReader,
    stats: DownlinkStats,
}

impl core::fmt::Debug for Downlink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Downlink")
            .field("mailboxes", &self.mailboxes.len())
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

/// The rate granted for `asked` (0: the default).
pub fn granted(asked: u16) -> u16 {
    if asked == 0 {
        DEFAULT_RATE
    } else {
        asked.min(MAX_RATE)
    }
}

impl Downlink {
    /// An empty downlink holding at most `max_mailboxes`, its padding drawn from `seed`.
    pub fn new(max_mailboxes: usize, seed: &[u8; 32]) -> Self {
        Self {
            mailboxes: HashMap::new(),
            by_addr: HashMap::new(),
            due: BinaryHeap::new(),
            queued: 0,
            max_mailboxes,
            random: blake3::Hasher::new_derive_key("PhantomBand v1 downlink padding")
                .update(seed)
                .finalize_xof(),
            stats: DownlinkStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> DownlinkStats {
        self.stats
    }

    /// Mailboxes held.
    pub fn len(&self) -> usize {
        self.mailboxes.len()
    }

    /// Whether no mailbox is held.
    pub fn is_empty(&self) -> bool {
        self.mailboxes.is_empty()
    }

    /// Registers or refreshes `mailbox` at `addr`, asking for `asked` datagrams a second;
    /// `verified`: the hello echoed a valid cookie for `addr`, so the downlink runs. The
    /// rate the mailbox holds now (`None` only if that rate cannot be scheduled).
    ///
    /// A mailbox is created only by a verified hello: an address that has not shown it
    /// receives (a spoofed source) gets its welcome and cookie, statelessly, and nothing is
    /// kept for it. When the table is full, the mailbox heard from longest ago makes room.
    pub fn register(
        &mut self,
        mailbox: MailboxId,
        addr: SocketAddr,
        asked: u16,
        verified: bool,
        now: Time,
    ) -> Option<u16> {
        let asked = granted(asked);
        if !self.mailboxes.contains_key(&mailbox) {
            if !verified {
                return Some(asked);
            }
            if self.mailboxes.len() >= self.max_mailboxes {
                self.evict_oldest();
            }
            let link = new_link(asked, now)?;
            self.mailboxes.insert(
                mailbox,
                Mailbox {
                    addr,
                    seen: now,
                    rate: asked,
                    rate_since: now,
                    verified_until: now,
                    link,
                    generation: 0,
                },
            );
        }
        let m = self.mailboxes.get_mut(&mailbox)?;
        if m.addr != addr && !verified && m.active(now) {
            // A running downlink follows a new address only once that address echoes its
            // cookie (a phone that changed networks does within a round trip), so a hello
            // replayed from elsewhere neither moves nor stops it.
            m.seen = now;
            return Some(m.rate);
        }
        if m.addr != addr {
            if self.by_addr.get(&m.addr) == Some(&mailbox) {
                self.by_addr.remove(&m.addr);
            }
            m.addr = addr;
            // A new address must prove itself before the downlink follows it.
            m.verified_until = now;
        }
        self.by_addr.insert(addr, mailbox);
        m.seen = now;
        let step = asked != m.rate && now.0 >= m.rate_since.0.saturating_add(RATE_HOLD);
        if step {
            m.rate = asked;
            m.rate_since = now;
        }
        if verified {
            let restart = step || !m.active(now);
            m.verified_until = now.plus(VERIFIED_FOR);
            if restart {
                // A fresh schedule from now, the queue carried over.
                let mut link = new_link(m.rate, now)?;
                for out in m.link.drain() {
                    let _ = link.push(out);
                }
                m.link = link;
                m.generation = m.generation.wrapping_add(1);
                self.due
                    .push(Reverse((m.link.next_slot_time(), m.generation, mailbox.0)));
            }
        }
        Some(m.rate)
    }

    /// Queues `datagram` for `mailbox`'s next free slot.
    pub fn push(&mut self, mailbox: &MailboxId, datagram: Datagram) -> Result<(), Refused> {
        let m = self.mailboxes.get_mut(mailbox).ok_or(Refused::NoMailbox)?;
        if self.queued >= MAX_QUEUED {
            return Err(Refused::Full);
        }
        m.link
            .push(Out::Data(datagram))
            .map_err(|_| Refused::Full)?;
        self.queued += 1;
        Ok(())
    }

    /// An answer to a request from `addr`: queued ahead of the replies when `addr` holds a
    /// running downlink (so it takes a slot, not an extra datagram); otherwise given back,
    /// to be sent at once.
    pub fn answer(&mut self, addr: SocketAddr, datagram: Datagram, now: Time) -> Option<Datagram> {
        let Some(m) = self
            .by_addr
            .get(&addr)
            .and_then(|id| self.mailboxes.get_mut(id))
        else {
            return Some(datagram);
        };
        if !m.active(now) || self.queued >= MAX_QUEUED {
            return Some(datagram);
        }
        match m.link.push_front(Out::Data(datagram)) {
            Ok(()) => {
                self.queued += 1;
                None
            }
            Err(Out::Data(d)) => Some(d),
            Err(Out::Pad) => None,
        }
    }

    /// When the next slot is due, if any downlink runs.
    pub fn next_due(&self) -> Option<Time> {
        self.due.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Sends every slot due at or before `now`: `send(to, datagram)`.
    pub fn poll(&mut self, now: Time, mut send: impl FnMut(SocketAddr, &[u8; PACKET_LEN])) {
        while let Some(&Reverse((at, generation, id))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(m) = self.mailboxes.get_mut(&MailboxId(id)) else {
                continue;
            };
            if m.generation != generation || !m.active(now) {
                continue;
            }
            let missed = m.link.stats.missed;
            let (addr, random, queued, stats) =
                (m.addr, &mut self.random, &mut self.queued, &mut self.stats);
            m.link.poll_transmit(now, &mut Padding, |out, _, _| {
                stats.sent += 1;
                match out {
                    Out::Pad => {
                        let mut bytes = [0u8; PACKET_LEN - 1];
                        random.fill(&mut bytes);
                        send(addr, &link::padding(&bytes));
                    }
                    Out::Data(d) => {
                        *queued -= 1;
                        send(addr, &d);
                    }
                }
            });
            self.stats.missed += m.link.stats.missed - missed;
            self.due
                .push(Reverse((m.link.next_slot_time(), generation, id)));
        }
    }

    /// Forgets the mailbox heard from longest ago (its queued replies dropped).
    fn evict_oldest(&mut self) {
        let Some((&id, _)) = self.mailboxes.iter().min_by_key(|(_, m)| m.seen) else {
            return;
        };
        if let Some(mut m) = self.mailboxes.remove(&id) {
            self.queued -= m.link.drain().count();
            if self.by_addr.get(&m.addr) == Some(&id) {
                self.by_addr.remove(&m.addr);
            }
            self.stats.evicted += 1;
        }
    }

    /// Forgets mailboxes not refreshed since `before`, with what they held.
    pub fn expire(&mut self, before: Time) {
        let (queued, by_addr) = (&mut self.queued, &mut self.by_addr);
        self.mailboxes.retain(|id, m| {
            if m.seen >= before {
                return true;
            }
            *queued -= m.link.drain().count();
            if by_addr.get(&m.addr) == Some(id) {
                by_addr.remove(&m.addr);
            }
            false
        });
        // Entries of forgotten mailboxes are skipped as they come up; drop them now when
        // they are most of the heap.
        if self.due.len() > 2 * self.mailboxes.len() + 64 {
            let mailboxes = &self.mailboxes;
            self.due.retain(|Reverse((_, g, id))| {
                mailboxes
                    .get(&MailboxId(*id))
                    .is_some_and(|m| m.generation == *g)
            });
        }
    }
}

fn new_link(rate: u16, now: Time) -> Option<Link<Out>> {
    Link::new(u32::from(rate), QUEUE_DEPTH, MAX_BURST, now).ok()
}

#[cfg(test)]
mod tests;
