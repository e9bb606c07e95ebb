//! The gateway's client link: where clients fetch the signed directory, register the mailbox
//! their replies come to, and receive those replies. UDP for now (the transports add
//! disguises); every datagram either way is exactly [`PACKET_LEN`] bytes, so sizes tell an
//! observer nothing. A hello is sealed to the gateway's Sphinx key for the epoch (the one in
//! the checkpointed directory), so its token is never in clear; the welcome is sealed back
//! and signed with the gateway's identity key, so a client knows which relay registered it. Clients send their Sphinx packets to the gateway's packet address like
//! any relay does; this socket carries only the rest. Format: docs/spec/client-link.md.
//!
//! A mailbox id is derived from a secret token the client picks per session, so only that
//! client can (re)register it, for instance from a new address after its phone changed
//! networks. Replies leave at the client's own constant rate, padding when none is due
//! ([`crate::downlink`]), so the link's timing says nothing about what the user does.
//! Requests are answered with at most one datagram of the same size, and the constant
//! downlink runs only to an address that echoed the cookie sent to it: the link cannot be
//! used to amplify.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pb_control::IdentityKeyPair;
use pb_mix::Time;
use pb_proto::link::{self, Cookie, FromClient};
use pb_sphinx::{Epoch, EpochKey, MESSAGE_LEN, MailboxId, NodeId, NodeKeys, PAYLOAD_LEN, SurbId};

use crate::{
    downlink::{Downlink, Refused},
    published::Published,
    slots::Slots,
};

/// A mailbox not refreshed for this long is forgotten.
pub const MAILBOX_IDLE: Duration = Duration::from_secs(120);
/// Most mailboxes held.
const MAX_MAILBOXES: usize = 65536;
/// A cookie is good for the period it was made in and the next one.
const COOKIE_PERIOD: Duration = Duration::from_secs(60);
/// Longest sleep between two looks at the socket and the reply queue.
const TURN: Duration = Duration::from_millis(1);

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
}

/// A reply on its way from a core to the client link.
pub struct ToClient {
    mailbox: MailboxId,
    /// A SURB reply's SURB; none for a forward packet's message (a client's loop).
    surb: Option<SurbId>,
    payload: [u8; PAYLOAD_LEN],
}

/// Counters of the client link. None counts the replies themselves: next to the datagrams
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
    /// Datagrams sent in downlink slots (replies and padding together).
    pub downlink_sent: AtomicU64,
    /// Downlink slots missed (the thread was late).
    pub downlink_missed: AtomicU64,
    /// Mailboxes forgotten to make room for a new one (the table was full).
    pub evicted: AtomicU64,
    /// Hellos whose cookie was missing or stale (the downlink waits for a good one).
    pub unverified: AtomicU64,
    /// Hellos that did not open: sealed to another key or epoch, or altered.
    pub unopened: AtomicU64,
    /// Datagrams from clients that were not a known request of the right size.
    pub malformed: AtomicU64,
    /// Mailboxes registered or refreshed.
    pub hellos: AtomicU64,
    /// Directory pages served.
    pub pages: AtomicU64,
    /// Cosigned checkpoints served.
    pub checkpoints: AtomicU64,
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
            ("unverified", &self.unverified),
            ("unopened", &self.unopened),
            ("malformed", &self.malformed),
            ("hellos", &self.hellos),
            ("pages", &self.pages),
            ("checkpoints", &self.checkpoints),
        ]
        .into_iter()
        .map(|(name, v)| crate::metrics::role_metric("client_link", name, v))
        .collect()
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
            self.stats.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The client link's thread.
pub struct ClientLink {
    socket: UdpSocket,
    node: NodeId,
    /// Signs welcomes.
    identity: IdentityKeyPair,
    /// The Sphinx keys the cores process with; hellos are sealed to them.
    keys: Arc<Published<NodeKeys>>,
    /// Those keys with their public halves, for the generation in front.
    hello_keys: (u64, Vec<(EpochKey, [u8; 32])>),
    replies: ReplyQueue,
    directory: Arc<Published<Arc<Directory>>>,
    downlink: Downlink,
    /// This run's cookies (keyed from the OS's randomness at start).
    cookies: pb_control::probe::Cookies,
    origin: Instant,
    buf: Vec<u8>,
}

impl ClientLink {
    /// Binds the client socket. `identity` is the relay's (it signs the welcomes); `keys`
    /// are the Sphinx keys the cores process with, which hellos are sealed to.
    pub fn bind(
        addr: SocketAddr,
        identity: IdentityKeyPair,
        keys: Arc<Published<NodeKeys>>,
        replies: ReplyQueue,
        directory: Arc<Published<Arc<Directory>>>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let socket = UdpSocket::bind(addr)
            .with_context(|| format!("gossip.client_bind: cannot bind {addr}"))?;
        socket.set_nonblocking(true)?;
        let mut cookie_key = [0u8; 32];
        let mut padding_seed = [0u8; 32];
        getrandom::fill(&mut cookie_key).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        let cookies = pb_control::probe::Cookies::with_key(cookie_key, COOKIE_PERIOD);
        zeroize::Zeroize::zeroize(&mut cookie_key);
        getrandom::fill(&mut padding_seed).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        // Whoever knew the seed could tell padding from replies.
        let downlink = Downlink::new(MAX_MAILBOXES, &padding_seed);
        zeroize::Zeroize::zeroize(&mut padding_seed);
        Ok(Self {
            socket,
            node: identity.public().node_id(),
            identity,
            keys,
            hello_keys: (u64::MAX, Vec::new()),
            replies,
            directory,
            downlink,
            cookies,
            origin: Instant::now(),
            buf: vec![0; 2048],
        })
    }

    fn now(&self) -> Time {
        Time(u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The cookie for `addr` now.
    fn cookie(&self, addr: SocketAddr) -> Cookie {
        self.cookies.cookie(addr, self.origin.elapsed())
    }

    /// The key (and its public half) that hellos for `epoch` are sealed to, if the cores
    /// hold it.
    fn hello_key(&mut self, epoch: Epoch) -> Option<&(EpochKey, [u8; 32])> {
        if self.keys.generation() != self.hello_keys.0 {
            let (generation, keys) = self.keys.get();
            let held = [Some(keys.current), keys.previous];
            self.hello_keys = (
                generation,
                held.into_iter()
                    .flatten()
                    .map(|k| {
                        let public = k.public_key();
                        (k, public)
                    })
                    .collect(),
            );
        }
        self.hello_keys.1.iter().find(|(k, _)| k.epoch() == epoch)
    }

    /// Whether `cookie` is one this run gave `addr`, in this period or the last.
    fn cookie_valid(&self, addr: SocketAddr, cookie: &Cookie) -> bool {
        self.cookies.valid(addr, cookie, self.origin.elapsed())
    }

    /// Serves until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut expire_at = Instant::now() + MAILBOX_IDLE;
        while !stop.load(Ordering::Relaxed) {
            // First every downlink slot that is due, right after the wake-up (so that how
            // much else there is to do never moves a slot); then requests, a bounded number
            // per turn; then replies into their mailboxes.
            let now = self.now();
            let (socket, stats) = (&self.socket, &self.replies.stats);
            let before = self.downlink.stats();
            self.downlink.poll(now, |to, datagram| {
                // A full socket buffer loses the datagram, like a lost packet.
                let _ = socket.send_to(datagram, to);
            });
            let after = self.downlink.stats();
            stats
                .downlink_sent
                .fetch_add(after.sent - before.sent, Ordering::Relaxed);
            stats
                .downlink_missed
                .fetch_add(after.missed - before.missed, Ordering::Relaxed);
            stats.evicted.store(after.evicted, Ordering::Relaxed);
            for _ in 0..64 {
                match self.socket.recv_from(&mut self.buf) {
                    Ok((n, from)) => self.request(n, from),
                    Err(_) => break,
                }
            }
            self.take_replies();
            if Instant::now() >= expire_at {
                let idle = u64::try_from(MAILBOX_IDLE.as_nanos()).unwrap_or(u64::MAX);
                self.downlink.expire(Time(now.0.saturating_sub(idle)));
                expire_at = Instant::now() + Duration::from_secs(10);
            }
            // Sleep to the next slot (a precise timer: the slots' timing is what an
            // observer sees), or one turn.
            let now = self.now();
            let wait = self
                .downlink
                .next_due()
                .map_or(TURN, |due| {
                    Duration::from_nanos(due.0.saturating_sub(now.0))
                })
                .min(TURN);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
    }

    /// Moves what the cores delivered into the clients' mailboxes.
    fn take_replies(&mut self) {
        let stats = &self.replies.stats;
        while let Some(reply) = self.replies.slots.pop() {
            let datagram = Box::new(match reply.surb {
                Some(surb) => link::reply(surb, &reply.payload),
                None => link::looped(&reply.payload[..MESSAGE_LEN]),
            });
            match self.downlink.push(&reply.mailbox, datagram) {
                Ok(()) => {}
                Err(Refused::NoMailbox) => {
                    stats.no_mailbox.fetch_add(1, Ordering::Relaxed);
                }
                Err(Refused::Full) => {
                    stats.mailbox_full.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.replies.slots.give_back(reply);
        }
    }

    fn request(&mut self, n: usize, from: SocketAddr) {
        let stats = self.replies.stats.clone();
        let answer = match link::parse_request(&self.buf[..n]) {
            Some(FromClient::DirRequest { nonce, page }) => {
                // A shared handle: a page request copies no descriptor.
                let (_, directory) = self.directory.get();
                let all = &directory.descriptors;
                let pages = all.len().div_ceil(link::PER_PAGE).max(1);
                let first = (usize::from(page) * link::PER_PAGE).min(all.len());
                let items = &all[first..(first + link::PER_PAGE).min(all.len())];
                stats.pages.fetch_add(1, Ordering::Relaxed);
                link::page(
                    nonce,
                    page,
                    pages.min(255) as u8,
                    Epoch(directory.epoch),
                    self.node,
                    items,
                )
            }
            Some(FromClient::CheckpointRequest { nonce }) => {
                let (_, directory) = self.directory.get();
                stats.checkpoints.fetch_add(1, Ordering::Relaxed);
                link::checkpoint(nonce, directory.checkpoint.as_deref().map(str::as_bytes))
            }
            Some(FromClient::Hello {
                epoch,
                ephemeral,
                sealed,
            }) => {
                let opened = self
                    .hello_key(epoch)
                    .and_then(|(key, public)| link::open_hello(key, public, &ephemeral, &sealed));
                let Some(link::OpenedHello {
                    token,
                    rate,
                    cookie,
                    keys,
                }) = opened
                else {
                    stats.unopened.fetch_add(1, Ordering::Relaxed);
                    pb_log::warn_limited!(
                        client = %pb_log::Sensitive::new(from),
                        epoch = epoch.0,
                        "a hello that does not open (sealed to another key or epoch; counted as unopened)"
                    );
                    return;
                };
                let mailbox = link::mailbox_of(&token);
                drop(token);
                let verified = self.cookie_valid(from, &cookie);
                if !verified {
                    stats.unverified.fetch_add(1, Ordering::Relaxed);
                }
                let now = self.now();
                let Some(rate) = self.downlink.register(mailbox, from, rate, verified, now) else {
                    return;
                };
                stats.hellos.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    client = %pb_log::Sensitive::new(from),
                    ?mailbox,
                    verified,
                    rate,
                    mailboxes = self.downlink.len(),
                    "mailbox registered"
                );
                let cookie = self.cookie(from);
                let signature = self.identity.sign_message(
                    link::WELCOME_CONTEXT,
                    &link::welcome_signed(self.node, &keys, mailbox, &cookie, rate),
                );
                let mut nonce = [0u8; 12];
                if getrandom::fill(&mut nonce).is_err() {
                    return;
                }
                link::welcome(&keys, nonce, &cookie, rate, &signature)
            }
            None => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                pb_log::warn_limited!(
                    client = %pb_log::Sensitive::new(from),
                    "a client-link datagram that is no request (counted as malformed)"
                );
                return;
            }
        };
        // A client whose downlink runs gets the answer in its next slot; anyone else at
        // once (one datagram for one).
        if let Some(answer) = self.downlink.answer(from, Box::new(answer), self.now()) {
            let _ = self.socket.send_to(&answer[..], from);
        }
    }
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
