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

use pb_sphinx::{MailboxId, NodeId, PACKET_LEN, PAYLOAD_LEN, SurbId};

use crate::{published::Published, slots::Slots};

/// Client to gateway: a page of the directory.
pub const DIR_REQUEST: u8 = 0x01;
/// Client to gateway: register (or refresh) a mailbox.
pub const HELLO: u8 = 0x02;
/// Gateway to client: a directory page.
pub const DIR_PAGE: u8 = 0x81;
/// Gateway to client: the mailbox is registered (and the gateway's node id, which the
/// client's SURBs end at).
pub const WELCOME: u8 = 0x82;
/// Gateway to client: a SURB reply for its mailbox.
pub const REPLY: u8 = 0x83;
/// Derivation context of a mailbox id from the client's token.
pub const MAILBOX_CONTEXT: &str = "PhantomBand v1 mailbox";
/// A mailbox not refreshed for this long is forgotten.
pub const MAILBOX_IDLE: Duration = Duration::from_secs(120);
/// Most mailboxes held.
const MAX_MAILBOXES: usize = 65536;
/// Descriptors per directory page: each is a u16 length and at most 224 bytes.
pub const PER_PAGE: usize = 6;

/// The mailbox of a client's token.
pub fn mailbox_of(token: &[u8; 32]) -> MailboxId {
    let key = blake3::derive_key(MAILBOX_CONTEXT, token);
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    MailboxId(id)
}

/// The signed directory a gateway serves: the epoch and its live members' descriptors.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    /// The epoch the descriptors are for.
    pub epoch: u32,
    /// Each descriptor's signed bytes.
    pub descriptors: Vec<Vec<u8>>,
}

/// A reply on its way from a core to the client link.
pub struct ToClient {
    mailbox: MailboxId,
    surb: SurbId,
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
            surb: SurbId([0; 16]),
            payload: [0; PAYLOAD_LEN],
        });
        Self {
            slots: Arc::new(slots),
            stats,
        }
    }

    /// Queues a SURB reply for `mailbox` (from a core's sink).
    pub fn push(&self, mailbox: MailboxId, surb: SurbId, payload: &[u8]) {
        let Ok(payload) = <&[u8; PAYLOAD_LEN]>::try_from(payload) else {
            return;
        };
        let queued = self.slots.push_with(|slot| {
            slot.mailbox = mailbox;
            slot.surb = surb;
            slot.payload = *payload;
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
    directory: Arc<Published<Directory>>,
    mailboxes: HashMap<MailboxId, (SocketAddr, Instant)>,
    buf: Vec<u8>,
}

impl ClientLink {
    /// Binds the client socket.
    pub fn bind(
        addr: SocketAddr,
        node: NodeId,
        replies: ReplyQueue,
        directory: Arc<Published<Directory>>,
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
        let mut out = vec![0u8; PACKET_LEN];
        while !stop.load(Ordering::Relaxed) {
            // Requests first, a bounded number per turn, then every queued reply.
            for _ in 0..64 {
                match self.socket.recv_from(&mut self.buf) {
                    Ok((n, from)) => self.request(n, from, &mut out),
                    Err(_) => break,
                }
            }
            while let Some(reply) = self.replies.slots.pop() {
                match self.mailboxes.get(&reply.mailbox) {
                    Some((client, _)) => {
                        out.fill(0);
                        out[0] = REPLY;
                        out[1..17].copy_from_slice(&reply.surb.0);
                        out[17..17 + PAYLOAD_LEN].copy_from_slice(&reply.payload);
                        if self.socket.send_to(&out, client).is_ok() {
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

    fn request(&mut self, n: usize, from: SocketAddr, out: &mut [u8]) {
        let stats = &self.replies.stats;
        let datagram = &self.buf[..n];
        if n != PACKET_LEN {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        out.fill(0);
        match datagram[0] {
            DIR_REQUEST => {
                // kind, nonce (8), page.
                let (_, directory) = self.directory.get();
                let page = usize::from(datagram[9]);
                let pages = directory.descriptors.len().div_ceil(PER_PAGE).max(1);
                out[0] = DIR_PAGE;
                out[1..9].copy_from_slice(&datagram[1..9]);
                out[9] = page.min(255) as u8;
                out[10] = pages.min(255) as u8;
                out[11..15].copy_from_slice(&directory.epoch.to_be_bytes());
                let items: Vec<&Vec<u8>> = directory
                    .descriptors
                    .iter()
                    .skip(page * PER_PAGE)
                    .take(PER_PAGE)
                    .collect();
                out[15] = items.len() as u8;
                let mut at = 16;
                for d in items {
                    out[at..at + 2].copy_from_slice(&(d.len() as u16).to_be_bytes());
                    out[at + 2..at + 2 + d.len()].copy_from_slice(d);
                    at += 2 + d.len();
                }
                stats.pages.fetch_add(1, Ordering::Relaxed);
            }
            HELLO => {
                let mut token = [0u8; 32];
                token.copy_from_slice(&datagram[1..33]);
                let mailbox = mailbox_of(&token);
                zeroize::Zeroize::zeroize(&mut token);
                if self.mailboxes.len() >= MAX_MAILBOXES && !self.mailboxes.contains_key(&mailbox) {
                    return;
                }
                self.mailboxes.insert(mailbox, (from, Instant::now()));
                out[0] = WELCOME;
                out[1..17].copy_from_slice(&mailbox.0);
                out[17..33].copy_from_slice(&self.node.0);
                stats.hellos.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        let _ = self.socket.send_to(out, from);
    }
}
