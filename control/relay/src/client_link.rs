//! The gateway's client link: where clients fetch the signed directory, register the mailbox
//! their replies come to, and receive those replies. Plain UDP for now (the transports add
//! disguises); every datagram either way is exactly [`PACKET_LEN`] bytes, so sizes tell an
//! observer nothing. Clients send their Sphinx packets to the gateway's packet address like
//! any relay does; this socket carries only the rest. Format: docs/spec/client-link.md.
//!
//! A mailbox id is derived from a secret token the client picks per session, so only that
//! client can (re)register it, for instance from a new address after its phone changed
//! networks. Requests are answered with at most one datagram of the same size: the link
//! cannot be used to amplify.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use pb_proto::link::{self, FromClient};
use pb_sphinx::{Epoch, MESSAGE_LEN, MailboxId, NodeId, PAYLOAD_LEN, SurbId};

use crate::{published::Published, slots::Slots};

/// A mailbox not refreshed for this long is forgotten.
pub const MAILBOX_IDLE: Duration = Duration::from_secs(120);
/// Most mailboxes held.
const MAX_MAILBOXES: usize = 65536;

/// The signed directory a gateway serves: the epoch and its live members' descriptors.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// The epoch the descriptors are for.
    pub epoch: u32,
    /// Each descriptor's signed bytes, and whether its relay is live.
    pub descriptors: Vec<(bool, Vec<u8>)>,
}

/// A reply on its way from a core to the client link.
pub struct ToClient {
    mailbox: MailboxId,
    /// A SURB reply's SURB; none for a forward packet's message (a client's loop).
    surb: Option<SurbId>,
    payload: [u8; PAYLOAD_LEN],
}

/// Counters of the client link.
#[derive(Debug, Default)]
pub struct ClientLinkStats {
    /// Replies sent to a registered client.
    pub replies: AtomicU64,
    /// Replies for a mailbox nobody holds (expired, or never registered).
    pub no_mailbox: AtomicU64,
    /// Replies the cores could not queue (the link thread fell behind).
    pub queue_full: AtomicU64,
    /// Datagrams from clients that were not a known request of the right size.
    pub malformed: AtomicU64,
    /// Mailboxes registered or refreshed.
    pub hellos: AtomicU64,
    /// Directory pages served.
    pub pages: AtomicU64,
}

impl ClientLinkStats {
    /// Every counter with its metric name.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        [
            ("replies", &self.replies),
            ("no_mailbox", &self.no_mailbox),
            ("queue_full", &self.queue_full),
            ("malformed", &self.malformed),
            ("hellos", &self.hellos),
            ("pages", &self.pages),
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
    replies: ReplyQueue,
    directory: Arc<Published<Arc<Directory>>>,
    mailboxes: HashMap<MailboxId, (SocketAddr, Instant)>,
    buf: Vec<u8>,
}

impl ClientLink {
    /// Binds the client socket.
    pub fn bind(
        addr: SocketAddr,
        node: NodeId,
        replies: ReplyQueue,
        directory: Arc<Published<Arc<Directory>>>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let socket = UdpSocket::bind(addr)
            .with_context(|| format!("gossip.client_bind: cannot bind {addr}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(2)))?;
        Ok(Self {
            socket,
            node,
            replies,
            directory,
            mailboxes: HashMap::new(),
            buf: vec![0; 2048],
        })
    }

    /// Serves until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) {
        let mut expire_at = Instant::now() + MAILBOX_IDLE;
        while !stop.load(Ordering::Relaxed) {
            // Requests first, a bounded number per turn, then every queued reply.
            for _ in 0..64 {
                match self.socket.recv_from(&mut self.buf) {
                    Ok((n, from)) => self.request(n, from),
                    Err(_) => break,
                }
            }
            while let Some(reply) = self.replies.slots.pop() {
                match self.mailboxes.get(&reply.mailbox) {
                    Some((client, _)) => {
                        let datagram = match reply.surb {
                            Some(surb) => link::reply(surb, &reply.payload),
                            None => link::looped(&reply.payload[..MESSAGE_LEN]),
                        };
                        if self.socket.send_to(&datagram, client).is_ok() {
                            self.replies.stats.replies.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        self.replies
                            .stats
                            .no_mailbox
                            .fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.replies.slots.give_back(reply);
            }
            if Instant::now() >= expire_at {
                let now = Instant::now();
                self.mailboxes
                    .retain(|_, (_, seen)| now.duration_since(*seen) < MAILBOX_IDLE);
                expire_at = now + Duration::from_secs(10);
            }
        }
    }

    fn request(&mut self, n: usize, from: SocketAddr) {
        let stats = &self.replies.stats;
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
                    items,
                )
            }
            Some(FromClient::Hello { mut token }) => {
                let mailbox = link::mailbox_of(&token);
                zeroize::Zeroize::zeroize(&mut token);
                if self.mailboxes.len() >= MAX_MAILBOXES && !self.mailboxes.contains_key(&mailbox) {
                    return;
                }
                self.mailboxes.insert(mailbox, (from, Instant::now()));
                stats.hellos.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    client = %pb_log::Sensitive::new(from),
                    ?mailbox,
                    mailboxes = self.mailboxes.len(),
                    "mailbox registered"
                );
                link::welcome(mailbox, self.node)
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
        let _ = self.socket.send_to(&answer, from);
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
