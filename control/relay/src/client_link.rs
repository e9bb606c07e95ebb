//! The gateway's client link: where clients fetch the signed directory, register the mailbox
//! their replies come to, send their Sphinx packets and receive their replies.
//!
//! Every client speaks through `pb_link`: a Noise handshake to this relay's link key behind
//! a stateless cookie, then fixed-size records of random-looking bytes at a constant rate
//! each way, carried by any of the transports the gateway listens on (`pb_transport`). A
//! record from someone without the key gets nothing back; an init without a valid cookie
//! for its source gets one record (the cookie) and nothing is kept; state is kept only once
//! Noise succeeds, and the downlink runs only to a source that proved it receives. A
//! mailbox is registered inside a link with the client's secret token, so only that client
//! can move it to another link (a phone that changed networks). Replies leave at the
//! client's own constant rate, padding when none is due, so the link's timing says nothing
//! about what the user does. Format: docs/spec/client-link.md.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pb_link::{GatewayKey, GatewayLink, Message, Responded, Responder};
use pb_pipeline::Handoff;
use pb_proto::link::{self, FromClient};
use pb_sphinx::{Epoch, MESSAGE_LEN, MailboxId, NodeId, PAYLOAD_LEN, SurbId};
use pb_transport::{Listener, Peer, TransportKind};

use crate::{published::Published, slots::Slots};

/// A mailbox without a link, not registered again for this long, is forgotten.
pub const MAILBOX_IDLE: Duration = Duration::from_secs(120);
/// A link not heard from for this long is closed (a client sends records at a constant
/// rate, at least one a second, so silence means it is gone; a client that moved makes a
/// new link). Its downlink runs until then.
pub const LINK_IDLE: Duration = Duration::from_secs(10);
/// How often idle links and mailboxes are looked for.
const EXPIRE_EVERY: Duration = Duration::from_secs(2);
/// Most links held; past that, the one heard from longest ago is closed.
const MAX_LINKS: usize = 65536;
/// Most mailboxes held; past that, the one seen longest ago is forgotten.
const MAX_MAILBOXES: usize = 65536;
/// Messages a mailbox without a link holds (its client is changing links).
const HELD: usize = 512;
/// Bytes queued for clients over all links, at most (about 190 MB).
const MAX_QUEUED: usize = 190 << 20;
/// Longest wait between two turns.
const TURN: Duration = Duration::from_millis(1);
/// A slot due within this long is waited for before any other work (a turn's work is
/// bounded well below it), so that work never delays a slot.
const GUARD: Duration = Duration::from_micros(400);
/// Records taken from one listener in one turn, at most (bounds a turn's work).
const PER_TURN: usize = 128;

/// The signed directory a gateway serves: the epoch and its live members' descriptors.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// The epoch the descriptors are for.
    pub epoch: u32,
    /// Each descriptor's signed bytes, and whether its relay is live.
    pub descriptors: Vec<(bool, Vec<u8>)>,
    /// The stewards' cosigned checkpoint naming these descriptors (a signed note), when the
    /// relay follows a network file and holds one.
    pub checkpoint: Option<String>,
    /// The reputation table (its text) whose hash that checkpoint commits to, when the
    /// relay keeps a copy of the ledger and has computed it (docs/spec/ledger.md).
    pub reputation: Option<String>,
}

/// A reply on its way from a core to the client link.
pub struct ToClient {
    mailbox: MailboxId,
    /// A SURB reply's SURB; none for a forward packet's message (a client's loop).
    surb: Option<SurbId>,
    payload: [u8; PAYLOAD_LEN],
}

/// Counters of the client link. None counts the replies themselves: next to the records
/// sent, that would publish how much of a client's downlink is padding, which is what the
/// padding hides.
#[derive(Debug, Default)]
pub struct ClientLinkStats {
    /// Replies for a mailbox nobody holds (expired, or never registered).
    pub no_mailbox: AtomicU64,
    /// Replies the cores could not queue (the link thread fell behind).
    pub queue_full: AtomicU64,
    /// Replies dropped because their mailbox's queue (or all queues) were full.
    pub mailbox_full: AtomicU64,
    /// Records sent in downlink slots (replies and padding together).
    pub downlink_sent: AtomicU64,
    /// Downlink slots missed (the thread was late).
    pub downlink_missed: AtomicU64,
    /// Mailboxes or links forgotten to make room for new ones (the table was full).
    pub evicted: AtomicU64,
    /// Records from strangers (no init made with our key, or no record of a link): dropped
    /// without an answer.
    pub strangers: AtomicU64,
    /// Cookie replies sent (inits without a valid cookie for their source).
    pub cookies: AtomicU64,
    /// Handshakes completed: links opened.
    pub handshakes: AtomicU64,
    /// Links closed (idle, gone, or replaced by a new handshake).
    pub links_closed: AtomicU64,
    /// Messages in a link that were no request of a client.
    pub malformed: AtomicU64,
    /// Mailboxes registered (or moved to another link).
    pub registrations: AtomicU64,
    /// Sphinx packets clients sent over their links, passed to the cores.
    pub packets_in: AtomicU64,
    /// Sphinx packets dropped because the cores' arrivals queue was full.
    pub arrivals_full: AtomicU64,
    /// Directory pages served.
    pub pages: AtomicU64,
    /// Cosigned checkpoints served.
    pub checkpoints: AtomicU64,
    /// Reputation table pages served.
    pub reputation_pages: AtomicU64,
}

impl ClientLinkStats {
    /// Every counter with its metric name.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        [
            ("no_mailbox", &self.no_mailbox),
            ("queue_full", &self.queue_full),
            ("mailbox_full", &self.mailbox_full),
            ("downlink_sent", &self.downlink_sent),
            ("downlink_missed", &self.downlink_missed),
            ("evicted", &self.evicted),
            ("strangers", &self.strangers),
            ("cookies", &self.cookies),
            ("handshakes", &self.handshakes),
            ("links_closed", &self.links_closed),
            ("malformed", &self.malformed),
            ("registrations", &self.registrations),
            ("packets_in", &self.packets_in),
            ("arrivals_full", &self.arrivals_full),
            ("pages", &self.pages),
            ("checkpoints", &self.checkpoints),
            ("reputation_pages", &self.reputation_pages),
        ]
        .into_iter()
        .map(|(name, v)| crate::metrics::role_metric("client_link", name, v))
        .collect()
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the cores hold to pass replies on: a bounded queue (no allocation per packet).
#[derive(Clone)]
pub struct ReplyQueue {
    slots: Arc<Slots<ToClient>>,
    stats: Arc<ClientLinkStats>,
}

impl ReplyQueue {
    /// A queue of `depth` replies, its buffers allocated now.
    pub fn new(depth: usize, stats: Arc<ClientLinkStats>) -> Self {
        let slots = Slots::new(depth, || ToClient {
            mailbox: MailboxId([0; 16]),
            surb: None,
            payload: [0; PAYLOAD_LEN],
        });
        Self {
            slots: Arc::new(slots),
            stats,
        }
    }

    /// Queues a delivery for `mailbox` (from a core's sink): a SURB reply's payload, or a
    /// forward packet's message (`surb` none).
    pub fn push(&self, mailbox: MailboxId, surb: Option<SurbId>, payload: &[u8]) {
        if payload.len() > PAYLOAD_LEN {
            return;
        }
        let queued = self.slots.push_with(|slot| {
            slot.mailbox = mailbox;
            slot.surb = surb;
            slot.payload[..payload.len()].copy_from_slice(payload);
            slot.payload[payload.len()..].fill(0);
        });
        if !queued {
            ClientLinkStats::add(&self.stats.queue_full, 1);
        }
    }
}

/// A link: which listener, which of its peers.
type Key = (usize, Peer);

struct Client {
    link: Box<GatewayLink>,
    mailbox: Option<MailboxId>,
    /// Which heap entry is current (older ones are skipped).
    generation: u32,
}

struct Mailbox {
    link: Option<Key>,
    /// What arrived while no link held the mailbox.
    held: VecDeque<Message>,
    seen: Duration,
}

/// The client link's thread.
pub struct ClientLink {
    listeners: Vec<Box<dyn Listener>>,
    node: NodeId,
    responder: Responder,
    links: HashMap<Key, Client>,
    due: BinaryHeap<Reverse<(Duration, Key, u32)>>,
    mailboxes: HashMap<MailboxId, Mailbox>,
    /// Bytes queued in all links.
    queued: usize,
    replies: ReplyQueue,
    directory: Arc<Published<Arc<Directory>>>,
    handoff: Arc<Handoff>,
    origin: Instant,
    generation: u32,
    /// Whether idle downlink slots carry padding (see `mix.insecure_no_cover`).
    padding: bool,
    /// Whether the thread asks for real-time priority.
    realtime: bool,
}

impl ClientLink {
    /// The client link over `listeners`, its handshakes made to `key` (the relay's link
    /// key; `node` is the relay's id, which directory pages name).
    pub fn new(
        listeners: Vec<Box<dyn Listener>>,
        node: NodeId,
        key: GatewayKey,
        replies: ReplyQueue,
        directory: Arc<Published<Arc<Directory>>>,
        handoff: Arc<Handoff>,
    ) -> anyhow::Result<Self> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..]).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        Ok(Self {
            listeners,
            node,
            responder: Responder::new(key, &seed),
            links: HashMap::new(),
            due: BinaryHeap::new(),
            mailboxes: HashMap::new(),
            queued: 0,
            replies,
            directory,
            handoff,
            origin: Instant::now(),
            generation: 0,
            padding: true,
            realtime: true,
        })
    }

    /// Without padding (`false`): INSECURE, see `mix.insecure_no_cover`.
    #[must_use]
    pub fn with_padding(mut self, on: bool) -> Self {
        self.padding = on;
        self
    }

    /// Whether the thread asks for real-time priority (`io.realtime`).
    #[must_use]
    pub fn with_realtime(mut self, on: bool) -> Self {
        self.realtime = on;
        self
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn stats(&self) -> &ClientLinkStats {
        &self.replies.stats
    }

    /// Serves until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        // The downlinks' slots are this thread's to keep: real-time where permitted.
        let pacer = pb_pacing::Pacer::new(self.realtime);
        if pacer.realtime() {
            tracing::info!("client link: slot timing: {}", pacer.describe());
        } else {
            tracing::warn!("client link: slot timing: {}", pacer.describe());
        }
        let mut expire_at = Instant::now() + EXPIRE_EVERY;
        while !stop.load(Ordering::Relaxed) {
            // First every downlink slot that is due or less than GUARD away (waited for
            // precisely), so that no work starts that could delay one; then what arrived.
            self.slots_soon(&pacer);
            for i in 0..self.listeners.len() {
                if let Err(e) = self.listeners[i].drive(Instant::now()) {
                    pb_log::warn_limited!(
                        transport = %self.listeners[i].kind(),
                        "client link listener: {e}"
                    );
                }
                self.receive(i);
            }
            self.take_replies();
            if Instant::now() >= expire_at {
                self.expire(self.now());
                expire_at = Instant::now() + EXPIRE_EVERY;
            }
            // Sleep to the next slot, at most one turn: a precise timer, never an event
            // wait (epoll rounds up to milliseconds, and would wake earlier when clients
            // are busy), since the slots' timing is what an observer sees. What arrives
            // meanwhile waits for the turn.
            let now = self.now();
            let mut wait = self
                .due
                .peek()
                .map_or(TURN, |Reverse((at, _, _))| {
                    at.saturating_sub(now + GUARD + pacer.spin())
                })
                .min(TURN);
            for l in &self.listeners {
                if let Some(at) = l.next_deadline() {
                    wait = wait.min(at.saturating_duration_since(Instant::now()));
                }
            }
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// Sends the slots due now, and those due within [`GUARD`] at their time.
    fn slots_soon(&mut self, pacer: &pb_pacing::Pacer) {
        let now = self.now();
        let at = match self.due.peek() {
            Some(&Reverse((at, _, _))) if at <= now + GUARD + pacer.spin() => at,
            _ => return,
        };
        let _emitting = pacer.emit_at(Instant::now() + at.saturating_sub(now));
        self.slots(self.now());
    }

    /// Sends the records of every downlink slot due by `now`.
    fn slots(&mut self, now: Duration) {
        let (mut sent, mut missed) = (0, 0);
        while let Some(&Reverse((at, key, generation))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(client) = self.links.get_mut(&key) else {
                continue;
            };
            if client.generation != generation {
                continue;
            }
            let (before, was_missed) = (client.link.queued(), client.link.missed());
            let listener = &mut self.listeners[key.0];
            client.link.poll_records(now, |record| {
                sent += 1;
                // A full buffer loses the record, like a lost datagram.
                let _ = listener.send(key.1, &record);
            });
            self.queued -= before - client.link.queued();
            missed += client.link.missed() - was_missed;
            self.due
                .push(Reverse((client.link.next_due(), key, generation)));
        }
        let stats = self.stats();
        ClientLinkStats::add(&stats.downlink_sent, sent);
        ClientLinkStats::add(&stats.downlink_missed, missed);
    }

    /// Takes the records listener `i` received.
    fn receive(&mut self, i: usize) {
        while let Some(peer) = self.listeners[i].poll_closed() {
            self.close((i, peer), false);
        }
        for _ in 0..PER_TURN {
            let Some((peer, record)) = self.listeners[i].recv() else {
                return;
            };
            let now = self.now();
            let key = (i, peer);
            if let Some(client) = self.links.get_mut(&key)
                && client.link.handle_record(now, &record)
            {
                if let Some(m) = client.mailbox.and_then(|m| self.mailboxes.get_mut(&m)) {
                    m.seen = now;
                }
                self.messages(key);
                continue;
            }
            let Some(source) = self.listeners[i].source(peer) else {
                // A peer closed earlier in this turn (a stranger's next datagrams).
                ClientLinkStats::add(&self.stats().strangers, 1);
                continue;
            };
            match self.responder.respond(now, source, &record) {
                Responded::Stranger => {
                    ClientLinkStats::add(&self.stats().strangers, 1);
                    if !self.links.contains_key(&key) {
                        self.listeners[i].close(peer);
                    }
                }
                Responded::Reply(cookie) => {
                    ClientLinkStats::add(&self.stats().cookies, 1);
                    self.listeners[i].send(peer, &cookie);
                    // Stateless: a datagram listener forgets the address at once (a stream
                    // keeps its connection for the init that echoes the cookie).
                    if self.listeners[i].kind() == TransportKind::Udp
                        && !self.links.contains_key(&key)
                    {
                        self.listeners[i].close(peer);
                    }
                }
                Responded::Open(response, link) => {
                    ClientLinkStats::add(&self.stats().handshakes, 1);
                    // A new handshake on a peer replaces its link (the client restarted).
                    self.close(key, false);
                    self.listeners[i].send(peer, &response);
                    self.open(key, link, now);
                }
            }
        }
    }

    fn open(&mut self, key: Key, mut link: Box<GatewayLink>, now: Duration) {
        link.set_padding(self.padding);
        if self.links.len() >= MAX_LINKS
            && let Some((&oldest, _)) = self.links.iter().min_by_key(|(_, c)| c.link.heard())
        {
            ClientLinkStats::add(&self.stats().evicted, 1);
            self.close(oldest, true);
        }
        let _ = now;
        self.generation = self.generation.wrapping_add(1);
        self.due
            .push(Reverse((link.next_due(), key, self.generation)));
        self.links.insert(
            key,
            Client {
                link,
                mailbox: None,
                generation: self.generation,
            },
        );
    }

    /// Forgets link `key` (`tell`: close the peer too); its mailbox stays, holding what
    /// arrives for it.
    fn close(&mut self, key: Key, tell: bool) {
        let Some(client) = self.links.remove(&key) else {
            return;
        };
        ClientLinkStats::add(&self.stats().links_closed, 1);
        self.queued -= client.link.queued();
        if let Some(m) = client.mailbox.and_then(|m| self.mailboxes.get_mut(&m))
            && m.link == Some(key)
        {
            m.link = None;
        }
        if tell {
            self.listeners[key.0].close(key.1);
        }
    }

    /// Answers the messages link `key` received.
    fn messages(&mut self, key: Key) {
        loop {
            let Some(message) = self.links.get_mut(&key).and_then(|c| c.link.poll_message()) else {
                return;
            };
            let answer = match link::parse_request(&message) {
                Some(FromClient::Packet(packet)) => {
                    let stats = &self.replies.stats;
                    if self.handoff.arrive(packet) {
                        ClientLinkStats::add(&stats.packets_in, 1);
                    } else {
                        ClientLinkStats::add(&stats.arrivals_full, 1);
                    }
                    None
                }
                Some(FromClient::DirRequest { nonce, page }) => {
                    // A shared handle: a page request copies no descriptor.
                    let (_, directory) = self.directory.get();
                    let all = &directory.descriptors;
                    let pages = all.len().div_ceil(link::PER_PAGE).max(1);
                    let first = (usize::from(page) * link::PER_PAGE).min(all.len());
                    let items = &all[first..(first + link::PER_PAGE).min(all.len())];
                    ClientLinkStats::add(&self.stats().pages, 1);
                    Some(link::page(
                        nonce,
                        page,
                        pages.min(255) as u8,
                        Epoch(directory.epoch),
                        self.node,
                        items,
                    ))
                }
                Some(FromClient::CheckpointRequest { nonce }) => {
                    let (_, directory) = self.directory.get();
                    ClientLinkStats::add(&self.stats().checkpoints, 1);
                    Some(link::checkpoint(
                        nonce,
                        directory.checkpoint.as_deref().map(str::as_bytes),
                    ))
                }
                Some(FromClient::ReputationRequest { nonce, page }) => {
                    let (_, directory) = self.directory.get();
                    ClientLinkStats::add(&self.stats().reputation_pages, 1);
                    Some(link::reputation_page(
                        nonce,
                        page,
                        directory.reputation.as_deref().map(str::as_bytes),
                    ))
                }
                Some(FromClient::Register { token }) => {
                    let mailbox = link::mailbox_of(token);
                    self.register(key, mailbox);
                    Some(link::registered(mailbox))
                }
                None => {
                    ClientLinkStats::add(&self.stats().malformed, 1);
                    None
                }
            };
            if let Some(answer) = answer {
                self.send(key, answer, true);
            }
        }
    }

    /// Binds `mailbox` to link `key`, taking it from any other link.
    fn register(&mut self, key: Key, mailbox: MailboxId) {
        let now = self.now();
        ClientLinkStats::add(&self.stats().registrations, 1);
        if !self.mailboxes.contains_key(&mailbox) && self.mailboxes.len() >= MAX_MAILBOXES {
            let oldest = self
                .mailboxes
                .iter()
                .min_by_key(|(_, m)| m.seen)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.forget(id);
                ClientLinkStats::add(&self.stats().evicted, 1);
            }
        }
        let m = self.mailboxes.entry(mailbox).or_insert_with(|| Mailbox {
            link: None,
            held: VecDeque::new(),
            seen: now,
        });
        m.seen = now;
        let previous = m.link.replace(key);
        let held: Vec<Message> = m.held.drain(..).collect();
        if let Some(old) = previous.filter(|old| *old != key)
            && let Some(c) = self.links.get_mut(&old)
        {
            c.mailbox = None;
        }
        if let Some(c) = self.links.get_mut(&key)
            && let Some(other) = c.mailbox.replace(mailbox).filter(|o| *o != mailbox)
            && let Some(m) = self.mailboxes.get_mut(&other)
        {
            m.link = None;
        }
        for message in held {
            self.send(key, message, false);
        }
    }

    fn forget(&mut self, id: MailboxId) {
        if let Some(m) = self.mailboxes.remove(&id)
            && let Some(c) = m.link.and_then(|k| self.links.get_mut(&k))
        {
            c.mailbox = None;
        }
    }

    /// Queues `message` on link `key`; `false` if it was dropped (no room).
    fn send(&mut self, key: Key, message: Message, urgent: bool) -> bool {
        let len = message.body.len() + 3;
        let Some(client) = self.links.get_mut(&key) else {
            return false;
        };
        if self.queued + len > MAX_QUEUED || !client.link.send(message, urgent) {
            return false;
        }
        self.queued += len;
        true
    }

    /// Moves what the cores delivered into the clients' links (or their mailboxes, while
    /// they have none).
    fn take_replies(&mut self) {
        while let Some(reply) = self.replies.slots.pop() {
            let message = match reply.surb {
                Some(surb) => link::reply(surb, &reply.payload),
                None => link::looped(&reply.payload[..MESSAGE_LEN]),
            };
            let mailbox = reply.mailbox;
            self.replies.slots.give_back(reply);
            let full = match self.mailboxes.get_mut(&mailbox) {
                None => {
                    ClientLinkStats::add(&self.replies.stats.no_mailbox, 1);
                    false
                }
                Some(m) => match m.link {
                    Some(key) => !self.send(key, message, false),
                    None if m.held.len() < HELD => {
                        m.held.push_back(message);
                        false
                    }
                    None => true,
                },
            };
            if full {
                ClientLinkStats::add(&self.replies.stats.mailbox_full, 1);
            }
        }
    }

    /// Closes links not heard from for [`LINK_IDLE`] and forgets mailboxes without a link
    /// not seen for [`MAILBOX_IDLE`].
    fn expire(&mut self, now: Duration) {
        let idle: Vec<Key> = self
            .links
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.link.heard()) > LINK_IDLE)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.close(key, true);
        }
        self.mailboxes
            .retain(|_, m| m.link.is_some() || now.saturating_sub(m.seen) <= MAILBOX_IDLE);
        // Entries of closed links are skipped as they come up; drop them now when they
        // are most of the heap.
        if self.due.len() > 2 * self.links.len() + 64 {
            let links = &self.links;
            self.due
                .retain(|Reverse((_, k, g))| links.get(k).is_some_and(|c| c.generation == *g));
        }
    }
}

/// The addresses the client link listens on, for logs.
pub fn describe(listeners: &[Box<dyn Listener>]) -> String {
    listeners
        .iter()
        .map(|l| format!("{} on {}", l.kind(), l.local_addr()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for ToClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ToClient").finish_non_exhaustive()
    }
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for ReplyQueue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplyQueue").finish_non_exhaustive()
    }
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for ClientLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClientLink").finish_non_exhaustive()
    }
}
