//! One node's gossip, sans-IO: SWIM membership and failure detection (foca) plus the
//! spreading of signed descriptors, from which it keeps the epoch's [`Topology`].
//!
//! Descriptors travel two ways. As foca custom broadcasts, piggybacked on SWIM traffic (a
//! new or newer descriptor is passed on a bounded number of times). And, because those are
//! best-effort, as direct syncs: a node pushes every descriptor it holds to each member that
//! comes up and, every `resync_every`, to one random member, and re-arms its own. Both paths
//! end in the same [`Directory`], which verifies and counts.
//!
//! The topology deals the mixes over the layers among every descriptor held, then keeps the
//! live members only: a node SWIM declares down leaves every view within the
//! failure-detection bound, and nobody else changes layer when it does.
//!
//! Every SWIM packet is signed by its sender and carries the sender's descriptor; a packet is
//! handed to foca only if that descriptor is valid, the signature is its identity's, and the
//! packet's source is the gossip address the descriptor names (which the directory gives to
//! one identity only). So nobody speaks for a relay without its identity key. What a relay
//! says about *other* members (SWIM's piggybacked updates) is still taken on its word; see
//! docs/spec/descriptor.md for what that leaves open.
//!
//! Inputs: [`handle_datagram`](Gossip::handle_datagram), [`handle_timeout`](Gossip::handle_timeout);
//! outputs: [`poll_transmit`](Gossip::poll_transmit), [`poll_timeout`](Gossip::poll_timeout).
//! Time is a [`Duration`] since any fixed origin the caller chooses.

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::SocketAddr,
    num::{NonZeroU8, NonZeroUsize},
    rc::Rc,
    time::Duration,
};

use foca::{BroadcastHandler, Foca, Invalidates, Notification, OwnedNotification, Runtime, Timer};
use pb_sphinx::Epoch;
use rand::{RngExt as _, SeedableRng as _, rngs::Xoshiro256PlusPlus};

use crate::{
    admission::{Policy, admit},
    checkpoint::{Checkpoint, Stewards, descriptor_set_hash, empty_tree_root},
    cosign::{self, COSIGN_EVERY, Cosigning, KIND_COSIG},
    descriptor::{IdentityKey, IdentityKeyPair, Invalid, SignedDescriptor},
    directory::{Directory, Offered},
    probe::{KIND_ECHO, KIND_PROBE},
    records::{KIND_RECORD, Reassembly},
    topology::{Topology, TopologyError},
    wire::{self, KIND_SWIM, KIND_SYNC, MAX_DATAGRAM, Peer, SWIM_OVERHEAD, SwimCodec},
};

/// Gossip settings.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// The network's shared seed for the topology's randomness.
    pub network_seed: [u8; 32],
    /// Gossip addresses to announce to while no member is known.
    pub seeds: Vec<SocketAddr>,
    /// Most descriptors held.
    pub max_descriptors: usize,
    /// SWIM probe period.
    pub probe_period: Duration,
    /// SWIM probe round trip allowance (under `probe_period`).
    pub probe_rtt: Duration,
    /// How long a suspect has to refute before it is declared down.
    pub suspect_to_down_after: Duration,
    /// Period of the descriptor sync with a random member and of re-arming one's own.
    pub resync_every: Duration,
    /// Period of announcing to the seeds while no member is known.
    pub announce_every: Duration,
    /// Networks whose special-purpose addresses descriptors may name anyway (a testbed's
    /// own range, from the network file); none by default.
    pub allowed_prefixes: Vec<(std::net::IpAddr, u8)>,
}

impl GossipConfig {
    /// Defaults for a network with seed `network_seed`, joined through `seeds`: 1 s probes,
    /// 4 s to refute, 10 s resync, 2 s announce retries, 4096 descriptors.
    pub fn new(network_seed: [u8; 32], seeds: Vec<SocketAddr>) -> Self {
        Self {
            network_seed,
            seeds,
            max_descriptors: 4096,
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            suspect_to_down_after: Duration::from_secs(4),
            resync_every: Duration::from_secs(10),
            announce_every: Duration::from_secs(2),
            allowed_prefixes: Vec::new(),
        }
    }

    /// An upper bound on how long after a node stops every other node has declared it down
    /// (for tests and operators): a probe must reach it (each member is probed once per
    /// round of `members` probe periods), the indirect probes fail, the suspicion times out
    /// and the verdict spreads.
    pub fn failure_bound(&self, members: usize) -> Duration {
        self.probe_period * (members as u32 + 2) + self.suspect_to_down_after * 2
    }

    fn foca(&self) -> foca::Config {
        let mut c = foca::Config::simple();
        c.probe_period = self.probe_period;
        c.probe_rtt = self.probe_rtt;
        c.suspect_to_down_after = self.suspect_to_down_after;
        c.num_indirect_probes = NonZeroUsize::MIN.saturating_add(2);
        c.max_transmissions = NonZeroU8::MIN.saturating_add(9);
        c.max_packet_size = NonZeroUsize::MIN.saturating_add(MAX_DATAGRAM - SWIM_OVERHEAD - 1);
        // How a partition heals: a node that learns it was declared down rejoins under a
        // new bump. (foca 2.0 also sends that notice after a refuted suspicion; `Gossip`
        // drops those stale suspicion timers before foca sees them.)
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: Duration::from_millis(200),
            num_members: NonZeroUsize::MIN.saturating_add(2),
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.resync_every * 3,
            num_members: NonZeroUsize::MIN,
        });
        // How a partition heals: both sides keep knocking on the members they lost.
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.resync_every / 2,
            num_members: NonZeroUsize::MIN.saturating_add(1),
        });
        c.remove_down_after = Some(Duration::from_secs(3600));
        c
    }
}

/// Counters of one gossip node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Datagrams received.
    pub datagrams: u64,
    /// Datagrams with an unknown kind, too long, or a sync that does not parse.
    pub malformed: u64,
    /// SWIM packets foca refused (bad encoding, not for us, from a stale identity...).
    pub swim_refused: u64,
    /// SWIM packets not from who they say: the sender's descriptor refused, a bad signature,
    /// or a source other than the gossip address the sender's descriptor names.
    pub swim_unauthenticated: u64,
    /// SWIM datagrams from members dropped unread: their source, or all members together,
    /// sent too many.
    pub swim_limited: u64,
    /// Datagrams (of any kind) from sources that are no member, dropped unread: the source,
    /// or all strangers together, sent too many.
    pub strangers_limited: u64,
    /// Descriptors received (both paths), before verification.
    pub descriptors_received: u64,
    /// Descriptors accepted as new or newer.
    pub descriptors_accepted: u64,
    /// Sync and cosignature datagrams from members dropped unread: their source, or all
    /// members together, sent too many.
    pub sync_limited: u64,
    /// Directory pushes not sent: the destination had one recently, or the push budget
    /// was spent (a forged announce must not turn a relay into an amplifier).
    pub pushes_limited: u64,
    /// Datagrams dropped because the outgoing queue was full.
    pub transmit_dropped: u64,
    /// Stewards' signatures kept (valid, for this network and epoch).
    pub cosigs_kept: u64,
    /// Cosignature datagrams refused (malformed, another network, a bad signature, or no
    /// stewards configured).
    pub cosigs_refused: u64,
    /// Cosignatures for another epoch than ours (late or early; not refused as bad).
    pub cosigs_other_epoch: u64,
    /// Measurement records put back together from their fragments (a steward's).
    pub records_received: u64,
    /// Record fragments refused: malformed, or a record that did not hash to its id.
    pub records_refused: u64,
    /// Record fragments dropped unread: this node is no steward.
    pub records_not_steward: u64,
    /// Record fragments sent (to the stewards).
    pub records_sent: u64,
    /// Probes sent before a directory push (the address must echo one first).
    pub probes_sent: u64,
    /// Probes not sent: the probe budget was spent.
    pub probes_limited: u64,
    /// Echoes refused: a cookie not the address's, or not signed by the identity that
    /// claims the address.
    pub echoes_refused: u64,
    /// SWIM datagrams from a source that is neither a member nor proven, held until the
    /// source echoes a probe (a relay joining; or a forged source, which never echoes).
    pub swim_held: u64,
    /// Such datagrams dropped: the table of held datagrams was full.
    pub swim_held_dropped: u64,
}

/// Most datagrams waiting to be sent.
const MAX_TRANSMIT: usize = 4096;
/// Most membership events kept for [`Gossip::poll_event`].
const MAX_EVENTS: usize = 1024;
/// Directory pushes at once, and per second after that, over all destinations.
const PUSH_BURST: u32 = 64;
const PUSH_PER_SECOND: u32 = 8;
/// Destinations remembered for the once-per-resync push rule (and addresses proven, probed).
const PUSH_DESTINATIONS: usize = 4096;
/// An address is probed again at most this often.
const PROBE_AGAIN: Duration = Duration::from_secs(1);
/// Sources with a SWIM datagram held for a probe's echo, and how long one waits.
const HELD_SOURCES: usize = 256;
const HELD_FOR: Duration = Duration::from_secs(5);
/// Sync datagrams held per source (a directory push is a few).
const HELD_SYNCS: usize = 8;
/// Probes at once, and per second after that, over all addresses.
const PROBE_BURST: u32 = 256;
const PROBES_PER_SECOND: u32 = 64;

/// Refills a token bucket `(tokens, last refill)` at `rate` per second up to `burst`.
fn refill(bucket: &mut (u32, Duration), now: Duration, burst: u32, rate: u32) {
    let elapsed = now.saturating_sub(bucket.1);
    let add = (elapsed.as_millis() * u128::from(rate) / 1000) as u64;
    if add > 0 {
        bucket.0 = (u64::from(bucket.0) + add).min(u64::from(burst)) as u32;
        bucket.1 = now;
    }
}

/// Token buckets for datagrams that cost signature checks (a sync up to seven, a SWIM packet
/// one or two): per source address and overall, so that a flood costs a bounded amount of
/// CPU.
struct RateLimit {
    rates: Rates,
    sources: std::collections::HashMap<std::net::IpAddr, (u32, Duration)>,
    global: (u32, Duration),
}

/// Datagrams a source may send at once and per second after that; the same for all sources
/// together.
#[derive(Clone, Copy)]
struct Rates {
    burst: u32,
    per_second: u32,
    global_burst: u32,
    global_per_second: u32,
}

const SYNC_RATES: Rates = Rates {
    burst: 32,
    per_second: 4,
    global_burst: 2048,
    global_per_second: 512,
};
/// A member sends a handful of SWIM packets a second to any one other (probes, periodic
/// gossip, indirect probes for others).
const SWIM_RATES: Rates = Rates {
    burst: 128,
    per_second: 64,
    global_burst: 8192,
    global_per_second: 4096,
};
/// Sources that are no member's gossip address (a relay joining, or anyone): a budget of
/// their own, so that junk from strangers, however much, never takes a member's turn.
const STRANGER_SWIM_RATES: Rates = Rates {
    burst: 16,
    per_second: 8,
    global_burst: 512,
    global_per_second: 256,
};
const STRANGER_SYNC_RATES: Rates = Rates {
    burst: 8,
    per_second: 2,
    global_burst: 256,
    global_per_second: 64,
};
/// Sources remembered; past this, those whose bucket would be full again are forgotten.
const LIMITED_SOURCES: usize = 4096;

impl RateLimit {
    fn new(rates: Rates) -> Self {
        Self {
            rates,
            sources: std::collections::HashMap::new(),
            global: (rates.global_burst, Duration::ZERO),
        }
    }

    /// Takes a token for `source` at `now`, refilling first; `false` when either bucket is
    /// empty. IPv6 sources count by /64 (one host holds a whole /64).
    fn allow(&mut self, source: std::net::IpAddr, now: Duration) -> bool {
        let source = match source {
            std::net::IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                std::net::IpAddr::V6(o.into())
            }
            v4 => v4,
        };
        let r = self.rates;
        if self.sources.len() >= LIMITED_SOURCES && !self.sources.contains_key(&source) {
            // Forget the sources whose bucket would be full again anyway.
            let full_after = Duration::from_secs(u64::from(r.burst / r.per_second) + 1);
            self.sources
                .retain(|_, (_, last)| now.saturating_sub(*last) < full_after);
            if self.sources.len() >= LIMITED_SOURCES {
                return false;
            }
        }
        let entry = self.sources.entry(source).or_insert((r.burst, now));
        refill(entry, now, r.burst, r.per_second);
        refill(&mut self.global, now, r.global_burst, r.global_per_second);
        if entry.0 == 0 || self.global.0 == 0 {
            return false;
        }
        entry.0 -= 1;
        self.global.0 -= 1;
        true
    }
}

/// What the node learned from the outside since the last poll (for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A member came up.
    MemberUp(SocketAddr),
    /// A member was declared down.
    MemberDown(SocketAddr),
}

/// Shared between the node and foca's broadcast handler (foca owns the handler).
struct Shared {
    directory: Directory,
    epoch: Epoch,
    /// The topology must be recomputed.
    dirty: bool,
    stats: GossipStats,
}

impl Shared {
    fn offer(&mut self, bytes: &[u8]) -> Result<Offered, Invalid> {
        self.stats.descriptors_received += 1;
        let result = self.directory.offer(bytes, self.epoch);
        if let Ok(Offered::New | Offered::Updated) = result {
            self.stats.descriptors_accepted += 1;
            self.dirty = true;
        }
        result
    }
}

/// The dissemination key of a descriptor: a newer version of the same identity replaces
/// an older one in the broadcast queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DescriptorKey {
    identity: IdentityKey,
    version: u64,
}

impl Invalidates for DescriptorKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.identity == other.identity && self.version >= other.version
    }
}

impl DescriptorKey {
    /// Read from bytes the directory has just accepted (so the fixed fields are there).
    fn of(bytes: &[u8]) -> Option<Self> {
        let identity: [u8; 32] = bytes.get(4..36)?.try_into().ok()?;
        let version: [u8; 8] = bytes.get(36..44)?.try_into().ok()?;
        Some(Self {
            identity: IdentityKey(identity),
            version: u64::from_be_bytes(version),
        })
    }
}

struct Handler(Rc<RefCell<Shared>>);

/// Never returned: a refused item is dropped and counted, not an error for the packet.
#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

impl BroadcastHandler<Peer> for Handler {
    type Key = DescriptorKey;
    type Error = Never;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Peer>,
    ) -> Result<Option<DescriptorKey>, Never> {
        let offered = self.0.borrow_mut().offer(data);
        Ok(match offered {
            Ok(Offered::New | Offered::Updated) => DescriptorKey::of(data),
            // Added locally (our own, or one learned by sync): (re-)arm it for gossip.
            Ok(Offered::Unchanged) if sender.is_none() => DescriptorKey::of(data),
            _ => None,
        })
    }
}

/// foca's runtime: collects what a call produced.
#[derive(Default)]
struct Outbox {
    sends: Vec<(Peer, Vec<u8>)>,
    timers: Vec<(Duration, Timer<Peer>)>,
    notes: Vec<OwnedNotification<Peer>>,
}

impl Runtime<Peer> for Outbox {
    fn notify(&mut self, notification: Notification<'_, Peer>) {
        self.notes.push(notification.to_owned());
    }

    fn send_to(&mut self, to: Peer, data: &[u8]) {
        // Signed and framed by `settle`, which has the key.
        self.sends.push((to, data.to_vec()));
    }

    fn submit_after(&mut self, event: Timer<Peer>, after: Duration) {
        self.timers.push((after, event));
    }
}

type Swim = Foca<Peer, SwimCodec, Xoshiro256PlusPlus, Handler>;

/// What an unproven source sent, waiting for its echo: its last SWIM packet (authenticated,
/// foca's bytes) with the descriptor that came with it (verified, not filed), and its first
/// few sync datagrams; and when the last of it came.
#[derive(Default)]
struct Held {
    at: Duration,
    descriptor: Option<Vec<u8>>,
    swim: Option<Vec<u8>>,
    syncs: Vec<Vec<u8>>,
}

/// One node's gossip state.
pub struct Gossip {
    config: GossipConfig,
    swim: Swim,
    shared: Rc<RefCell<Shared>>,
    identity: IdentityKeyPair,
    own: SignedDescriptor,
    out: Outbox,
    transmit: VecDeque<(SocketAddr, Vec<u8>)>,
    /// foca's timers by (due, sequence).
    timers: BTreeMap<(Duration, u64), Timer<Peer>>,
    sequence: u64,
    next_resync: Duration,
    next_announce: Duration,
    rng: Xoshiro256PlusPlus,
    topology: Result<Topology, TopologyError>,
    events: VecDeque<Event>,
    sync_limit: RateLimit,
    swim_limit: RateLimit,
    /// The same for sources that are no member's gossip address.
    stranger_sync_limit: RateLimit,
    stranger_swim_limit: RateLimit,
    /// The live members' gossip addresses (their datagrams draw on the members' budgets).
    members: std::collections::HashSet<SocketAddr>,
    /// Cookies for probes, and the addresses that echoed one (signed by the identity that
    /// claims them) and when: only those get directory pushes.
    cookies: crate::probe::Cookies,
    proven: std::collections::HashMap<SocketAddr, Duration>,
    /// Addresses probed with a push waiting for their echo.
    awaiting: std::collections::HashSet<SocketAddr>,
    /// What each source that is neither a member nor proven sent (see [`Held`]): read when
    /// the source echoes a probe.
    held: std::collections::HashMap<SocketAddr, Held>,
    /// When each address was last probed, and the probes' budget.
    probed: std::collections::HashMap<SocketAddr, Duration>,
    probe_budget: (u32, Duration),
    /// When each destination last got a directory push.
    pushed: std::collections::HashMap<SocketAddr, Duration>,
    push_budget: (u32, Duration),
    now: Duration,
    /// Stewards' signatures over the epoch's checkpoint, and our own if we are one.
    cosigning: Option<(Cosigning, Policy)>,
    /// A steward's measurement records in assembly, and the whole ones to take.
    records: Reassembly,
    /// The ledger's tree size and root, and its reputation table's hash, that this node's
    /// checkpoints name (a steward signs them).
    ledger: (u64, [u8; 32], [u8; 32]),
}

impl core::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gossip")
            .field("me", self.swim.identity())
            .field("members", &self.swim.num_members())
            .finish_non_exhaustive()
    }
}

/// Why a gossip node could not start.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// Its own descriptor was refused (epoch out of range, or the directory is full).
    #[error("own descriptor refused: {0}")]
    OwnDescriptor(Invalid),
    /// Its own descriptor names another identity than the key it was given.
    #[error("own descriptor is not signed by this node's identity key")]
    NotOurs,
}

impl Gossip {
    /// A node with `identity` publishing `own` (signed by it; the node listens on its gossip
    /// address) in `epoch`, with `bump` larger than on any earlier run of this node (e.g. the
    /// start time in seconds) and `rng_seed` from the OS (a test's seed in simulations).
    pub fn new(
        config: GossipConfig,
        identity: IdentityKeyPair,
        own: SignedDescriptor,
        epoch: Epoch,
        bump: u32,
        rng_seed: u64,
        now: Duration,
    ) -> Result<Self, GossipError> {
        if own.descriptor().identity != identity.public() {
            return Err(GossipError::NotOurs);
        }
        let me = Peer {
            addr: own.descriptor().gossip_addr,
            bump,
        };
        let shared = Rc::new(RefCell::new(Shared {
            directory: Directory::new(config.max_descriptors)
                .allowing(config.allowed_prefixes.clone()),
            epoch,
            dirty: true,
            stats: GossipStats::default(),
        }));
        shared
            .borrow_mut()
            .directory
            .offer_signed(own.clone(), epoch)
            .map_err(GossipError::OwnDescriptor)?;
        let mut swim = Foca::with_custom_broadcast(
            me,
            config.foca(),
            Xoshiro256PlusPlus::seed_from_u64(rng_seed),
            SwimCodec,
            Handler(shared.clone()),
        );
        // Queue our own descriptor for dissemination (refused only if oversized, which a
        // descriptor never is).
        let _ = swim.add_broadcast(own.bytes());
        let cookies = crate::probe::Cookies::new(&identity, rng_seed, config.resync_every);
        let mut node = Self {
            next_resync: now + config.resync_every,
            next_announce: now,
            config,
            swim,
            shared,
            identity,
            own,
            out: Outbox::default(),
            transmit: VecDeque::new(),
            timers: BTreeMap::new(),
            sequence: 0,
            rng: Xoshiro256PlusPlus::seed_from_u64(rng_seed ^ 0x5eed),
            topology: Err(TopologyError::EmptyLayer { layer: 0 }),
            events: VecDeque::new(),
            sync_limit: RateLimit::new(SYNC_RATES),
            swim_limit: RateLimit::new(SWIM_RATES),
            stranger_sync_limit: RateLimit::new(STRANGER_SYNC_RATES),
            stranger_swim_limit: RateLimit::new(STRANGER_SWIM_RATES),
            members: std::collections::HashSet::new(),
            cookies,
            proven: std::collections::HashMap::new(),
            awaiting: std::collections::HashSet::new(),
            held: std::collections::HashMap::new(),
            probed: std::collections::HashMap::new(),
            probe_budget: (PROBE_BURST, now),
            pushed: std::collections::HashMap::new(),
            push_budget: (PUSH_BURST, now),
            now,
            cosigning: None,
            records: Reassembly::default(),
            ledger: (0, empty_tree_root(), [0; 32]),
        };
        node.handle_timeout(now);
        Ok(node)
    }

    /// Takes a token for a datagram of `kind` from `from`: a member's from the members'
    /// budgets, anyone else's from the strangers' (counted apart when refused).
    fn allowed(&mut self, kind: u8, from: SocketAddr, now: Duration) -> bool {
        let member = self.members.contains(&from);
        let limit = match (kind == KIND_SWIM, member) {
            (true, true) => &mut self.swim_limit,
            (true, false) => &mut self.stranger_swim_limit,
            (false, true) => &mut self.sync_limit,
            (false, false) => &mut self.stranger_sync_limit,
        };
        if limit.allow(from.ip(), now) {
            return true;
        }
        let stats = &mut self.shared.borrow_mut().stats;
        match (kind == KIND_SWIM, member) {
            (true, true) => stats.swim_limited += 1,
            (false, true) => stats.sync_limited += 1,
            (_, false) => stats.strangers_limited += 1,
        }
        false
    }

    /// A datagram from `from` arrived at the gossip socket.
    pub fn handle_datagram(&mut self, now: Duration, from: SocketAddr, bytes: &[u8]) {
        self.now = now;
        self.shared.borrow_mut().stats.datagrams += 1;
        match bytes.split_first() {
            _ if bytes.len() > MAX_DATAGRAM => self.malformed(),
            // An echo is read only from an address probed lately: the probes' budget is its
            // budget, and a joining relay's echo never waits behind strangers' traffic.
            Some((&KIND_ECHO, _))
                if self
                    .probed
                    .get(&from)
                    .is_none_or(|at| now.saturating_sub(*at) >= HELD_FOR) =>
            {
                self.shared.borrow_mut().stats.echoes_refused += 1;
            }
            Some((&kind, _))
                if [KIND_SWIM, KIND_SYNC, KIND_COSIG, KIND_PROBE, KIND_RECORD].contains(&kind)
                    && !self.allowed(kind, from, now) => {}
            Some((&KIND_PROBE, body)) => match crate::probe::parse_probe(body) {
                // Stateless: the echo is no larger than the probe, and signed.
                Some(cookie) => {
                    let echo = crate::probe::echo(&self.identity, &cookie, from);
                    self.queue(from, echo);
                }
                None => self.malformed(),
            },
            Some((&KIND_ECHO, body)) => self.echoed(now, from, body),
            Some((&KIND_SWIM, body)) => match wire::parse_swim(body) {
                Ok(datagram) => {
                    let known = self.knows(from);
                    if !self.authentic(&datagram, from, known) {
                        self.shared.borrow_mut().stats.swim_unauthenticated += 1;
                    } else if known {
                        self.feed_swim(now, datagram.packet);
                    } else {
                        // A source foca does not know yet: what it says, and its descriptor,
                        // wait until it proves that it answers at `from`. Otherwise one
                        // forged datagram would make it a member that every relay then
                        // pings, gossips to and links to, and its descriptor would move
                        // every mix's layer.
                        self.hold(now, from, |held| {
                            held.descriptor = Some(datagram.descriptor.to_vec());
                            held.swim = Some(datagram.packet.to_vec());
                        });
                    }
                }
                Err(_) => self.malformed(),
            },

            Some((&KIND_COSIG, body)) => {
                let kept = self.cosigning.as_mut().map(|(c, _)| c.receive(body));
                let mut shared = self.shared.borrow_mut();
                match kept {
                    Some(Ok(())) => shared.stats.cosigs_kept += 1,
                    // Late (the epoch moved on while it travelled) or early: not an attack.
                    Some(Err(cosign::Refused::OtherEpoch)) => shared.stats.cosigs_other_epoch += 1,
                    _ => shared.stats.cosigs_refused += 1,
                }
            }
            Some((&KIND_RECORD, body)) => {
                let steward = self.cosigning.as_ref().is_some_and(|(c, _)| c.is_steward());
                let kept = steward.then(|| self.records.receive(body, now));
                let mut shared = self.shared.borrow_mut();
                match kept {
                    None => shared.stats.records_not_steward += 1,
                    Some(Ok(true)) => shared.stats.records_received += 1,
                    Some(Ok(false)) => {}
                    Some(Err(_)) => shared.stats.records_refused += 1,
                }
            }
            Some((&KIND_SYNC, body)) => match wire::parse_sync(body) {
                Ok(_) if self.knows(from) => self.file_sync(now, body),
                // Descriptors pushed from an unproven source wait for its echo too.
                Ok(_) => self.hold(now, from, |held| {
                    if held.syncs.len() < HELD_SYNCS {
                        held.syncs.push(body.to_vec());
                    }
                }),
                Err(_) => self.malformed(),
            },
            _ => self.malformed(),
        }
    }

    /// Whether `from` is a live member's gossip address or proven by an echo.
    fn knows(&self, from: SocketAddr) -> bool {
        self.members.contains(&from) || self.proven.contains_key(&from)
    }

    /// Files the descriptors of a sync datagram (parsed before), passing new ones on.
    fn file_sync(&mut self, now: Duration, body: &[u8]) {
        let Ok(items) = wire::parse_sync(body) else {
            return self.malformed();
        };
        for item in items {
            let offered = self.shared.borrow_mut().offer(item);
            if let Ok(Offered::New | Offered::Updated) = offered {
                // Pass it on with the SWIM traffic too.
                let _ = self.swim.add_broadcast(item);
            }
        }
        self.settle(now);
    }

    /// Whether a SWIM datagram comes from the relay it names as its source: the descriptor
    /// it carries is valid (or an older version of one held), the signature is that
    /// identity's, and the packet's source is the gossip address of the descriptor held.
    /// The datagram's source (`from`) must be that address too: checked first, before any
    /// signature, so that packets from elsewhere cost no verification. A descriptor new to
    /// us is filed only if `file` (the source is known); otherwise only its signature is
    /// checked, and it waits with the datagram for the source's echo.
    fn authentic(
        &mut self,
        datagram: &wire::SwimDatagram<'_>,
        from: SocketAddr,
        file: bool,
    ) -> bool {
        let Some(key) = DescriptorKey::of(datagram.descriptor) else {
            return false;
        };
        let held = |shared: &Shared| {
            shared
                .directory
                .get(&key.identity)
                .map(|h| (h.bytes() == datagram.descriptor, h.descriptor().gossip_addr))
        };
        let known = held(&self.shared.borrow());
        let gossip_addr = match known {
            Some((true, addr)) if addr != from => return false,
            Some((true, addr)) => addr,
            // New to us, or another version: verified and filed like any descriptor. An
            // older version (a late or replayed datagram) still names the identity; the
            // held, newer one says where it speaks from.
            _ => {
                // The address it claims, read unverified: from elsewhere, it costs no
                // signature check.
                let claimed = SignedDescriptor::parse_attested(datagram.descriptor)
                    .map(|d| d.descriptor().gossip_addr);
                if claimed.is_ok_and(|a| a != from) {
                    return false;
                }
                if !file {
                    // Verified, not filed: the address it claims is where it speaks from.
                    match SignedDescriptor::parse(datagram.descriptor) {
                        Ok(d) if d.descriptor().gossip_addr == from => from,
                        _ => return false,
                    }
                } else {
                    let offered = self.shared.borrow_mut().offer(datagram.descriptor);
                    match offered {
                        Ok(Offered::New | Offered::Updated) => {
                            let _ = self.swim.add_broadcast(datagram.descriptor);
                        }
                        Ok(Offered::Unchanged) | Err(Invalid::OldVersion) => {}
                        Err(_) => return false,
                    }
                    match held(&self.shared.borrow()) {
                        Some((_, addr)) => addr,
                        None => return false,
                    }
                }
            }
        };
        if !key
            .identity
            .verify(wire::SWIM_CONTEXT, datagram.packet, datagram.signature)
        {
            return false;
        }
        // A header that does not decode is foca's to refuse (and count).
        use foca::Codec as _;
        SwimCodec
            .decode_header(datagram.packet)
            .map_or(true, |header| header.src.addr == gossip_addr)
    }

    /// Hands foca an authenticated SWIM packet.
    fn feed_swim(&mut self, now: Duration, packet: &[u8]) {
        let mut out = std::mem::take(&mut self.out);
        if self.swim.handle_data(packet, &mut out).is_err() {
            self.shared.borrow_mut().stats.swim_refused += 1;
        }
        self.out = out;
        self.settle(now);
    }

    /// Keeps what an unproven `from` sent (`keep` adds it to what is held for it) and
    /// probes `from`; it is read when the echo comes, and forgotten after [`HELD_FOR`].
    fn hold(&mut self, now: Duration, from: SocketAddr, keep: impl FnOnce(&mut Held)) {
        if self.held.len() >= HELD_SOURCES && !self.held.contains_key(&from) {
            self.held.retain(|_, h| now.saturating_sub(h.at) < HELD_FOR);
            if self.held.len() >= HELD_SOURCES {
                self.shared.borrow_mut().stats.swim_held_dropped += 1;
                return;
            }
        }
        let held = self.held.entry(from).or_default();
        held.at = now;
        keep(held);
        self.shared.borrow_mut().stats.swim_held += 1;
        self.probe(now, from);
    }

    fn malformed(&mut self) {
        self.shared.borrow_mut().stats.malformed += 1;
    }

    /// Runs what is due at `now`.
    pub fn handle_timeout(&mut self, now: Duration) {
        self.now = now;
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if self.is_stale_suspicion(&timer) {
                continue;
            }
            let mut out = std::mem::take(&mut self.out);
            // An error here is a stale or disconnected timer; foca has already dropped it.
            let _ = self.swim.handle_timer(timer, &mut out);
            self.out = out;
            self.settle(now);
        }
        if now >= self.next_announce {
            self.next_announce = now + self.config.announce_every;
            if self.swim.num_members() == 0 {
                let me = self.swim.identity().addr;
                for seed in self.config.seeds.clone().into_iter().filter(|s| *s != me) {
                    let mut out = std::mem::take(&mut self.out);
                    // Announce is accepted by whoever holds the address, whatever its bump.
                    let _ = self.swim.announce(
                        Peer {
                            addr: seed,
                            bump: 0,
                        },
                        &mut out,
                    );
                    self.out = out;
                }
                self.settle(now);
            }
        }
        if self
            .cosigning
            .as_ref()
            .is_some_and(|(c, _)| now >= c.next_round)
        {
            self.cosign_round(now);
        }
        if now >= self.next_resync {
            self.next_resync = now + self.config.resync_every;
            let _ = self.swim.add_broadcast(self.own.bytes());
            let members: Vec<SocketAddr> = self.swim.iter_members().map(|m| m.id().addr).collect();
            if !members.is_empty() {
                let pick = members[self.rng.random_range(0..members.len())];
                self.push_directory(pick);
            }
        }
    }

    /// A suspicion timer for a member that has refuted it since (its incarnation moved on):
    /// foca would do nothing with it but tell the healthy member it is down.
    fn is_stale_suspicion(&self, timer: &Timer<Peer>) -> bool {
        let Timer::ChangeSuspectToDown {
            member_id,
            incarnation,
            ..
        } = timer
        else {
            return false;
        };
        self.swim
            .iter_membership_state()
            .any(|m| m.id() == member_id && m.incarnation() != *incarnation)
    }

    /// A steward's round: sign the checkpoint of our view if it changed, and send our
    /// signature to every live member.
    fn cosign_round(&mut self, now: Duration) {
        let Some((cosigning, policy)) = self.cosigning.as_ref() else {
            return;
        };
        let (own, policy) = (cosigning.own_name().map(str::to_owned), *policy);
        let network = cosigning.stewards().network().to_owned();
        let made = match &own {
            Some(_) => self.checkpoint(&network, &policy).ok(),
            None => None,
        };
        let Some((cosigning, _)) = self.cosigning.as_mut() else {
            return;
        };
        cosigning.next_round = now + COSIGN_EVERY;
        let (Some(name), Some((checkpoint, _))) = (own, made) else {
            return;
        };
        let Ok(signer) = crate::note::NoteSigner::new(&name, &self.identity) else {
            return;
        };
        let Some((text, line)) = cosigning.sign(&checkpoint, &signer) else {
            return;
        };
        let datagram = cosign::datagram(&text, &line);
        let me = self.swim.identity().addr;
        for member in self.live_members().into_iter().filter(|m| *m != me) {
            self.queue(member, datagram.clone());
        }
    }

    /// Takes part in the stewards' checkpoints of `stewards`' network under `policy`: this
    /// node keeps the stewards' signatures it receives and, if its identity key is a
    /// steward's, signs its own view's checkpoint every [`COSIGN_EVERY`].
    pub fn set_stewards(&mut self, stewards: Stewards, policy: Policy) {
        let own = stewards
            .keys()
            .iter()
            .position(|k| k.public() == self.identity.public());
        let epoch = self.shared.borrow().epoch;
        self.cosigning = Some((Cosigning::new(stewards, own, epoch, self.now), policy));
        // The topology is now dealt over what the policy admits.
        self.shared.borrow_mut().dirty = true;
    }

    /// Sends a measurement record (a signed note, at most
    /// [`MAX_RECORD`](crate::records::MAX_RECORD) bytes) to every live steward, in fragments;
    /// a steward keeps its own. Returns the stewards it went to (0: none live, no stewards
    /// configured, or too long).
    pub fn send_record(&mut self, record: &[u8]) -> usize {
        let Some((cosigning, _)) = self.cosigning.as_ref() else {
            return 0;
        };
        let Some(datagrams) = crate::records::datagrams(record) else {
            return 0;
        };
        let me = self.swim.identity().addr;
        let live = self.live_members();
        let mut to: Vec<SocketAddr> = {
            let shared = self.shared.borrow();
            cosigning
                .stewards()
                .keys()
                .iter()
                .filter_map(|k| shared.directory.get(&k.public()))
                .map(|held| held.descriptor().gossip_addr)
                .filter(|a| live.contains(a))
                .collect()
        };
        to.sort_unstable();
        to.dedup();
        let mut sent = 0;
        for addr in &to {
            if *addr == me {
                for d in &datagrams {
                    if let Ok(true) = self.records.receive(&d[1..], self.now) {
                        self.shared.borrow_mut().stats.records_received += 1;
                    }
                }
                continue;
            }
            for d in &datagrams {
                self.queue(*addr, d.clone());
                sent += 1;
            }
        }
        self.shared.borrow_mut().stats.records_sent += sent;
        to.len()
    }

    /// The ledger's tree (size and root) and the hash of the reputation table its records
    /// give, that this node's checkpoints name from now on: a steward's signature then
    /// covers them (the log operator's after appending, a witness's after checking the
    /// operator's tiles and computing the table itself).
    pub fn set_ledger(&mut self, size: u64, root: [u8; 32], reputation: [u8; 32]) {
        self.ledger = (size, root, reputation);
    }

    /// A whole measurement record a steward received (oldest first); not yet checked.
    pub fn poll_record(&mut self) -> Option<Vec<u8>> {
        self.records.take()
    }

    /// The cosigned checkpoint this node holds (k stewards' signatures over one text), as a
    /// signed note: the current epoch's, or the last one's until the current one's is.
    pub fn cosigned_checkpoint(&self) -> Option<String> {
        self.cosigning.as_ref().and_then(|(c, _)| c.cosigned())
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub fn poll_timeout(&self) -> Duration {
        let foca = self.timers.keys().next().map(|k| k.0);
        let own = self.next_resync.min(self.next_announce);
        let own = self
            .cosigning
            .as_ref()
            .map_or(own, |(c, _)| own.min(c.next_round));
        foca.map_or(own, |f| f.min(own))
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.transmit.pop_front()
    }

    /// The next membership event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Files what the last foca call produced.
    fn settle(&mut self, now: Duration) {
        let sends: Vec<_> = self.out.sends.drain(..).collect();
        for (peer, packet) in sends {
            let datagram = wire::swim_datagram(&self.identity, self.own.bytes(), &packet);
            self.queue(peer.addr, datagram);
        }
        for (after, timer) in self.out.timers.drain(..) {
            self.sequence += 1;
            self.timers.insert((now + after, self.sequence), timer);
        }
        let notes: Vec<_> = self.out.notes.drain(..).collect();
        for note in notes {
            match note {
                OwnedNotification::MemberUp(peer) => {
                    self.members.insert(peer.addr);
                    self.shared.borrow_mut().dirty = true;
                    self.event(Event::MemberUp(peer.addr));
                    self.push_directory(peer.addr);
                }
                OwnedNotification::MemberDown(peer) => {
                    self.members.remove(&peer.addr);
                    self.proven.remove(&peer.addr);
                    self.awaiting.remove(&peer.addr);
                    self.shared.borrow_mut().dirty = true;
                    self.event(Event::MemberDown(peer.addr));
                    // When it comes back (a restart), it gets a push at once.
                    self.pushed.remove(&peer.addr);
                }
                OwnedNotification::Rename(..) | OwnedNotification::Rejoin(_) => {
                    self.shared.borrow_mut().dirty = true;
                }
                // Idle: the announce retries above bring it back. Active, Defunct: nothing.
                _ => {}
            }
        }
    }

    /// Queues a datagram, unless the queue is full (then it is dropped and counted).
    fn queue(&mut self, to: SocketAddr, bytes: Vec<u8>) {
        if self.transmit.len() >= MAX_TRANSMIT {
            self.shared.borrow_mut().stats.transmit_dropped += 1;
            return;
        }
        self.transmit.push_back((to, bytes));
    }

    fn event(&mut self, event: Event) {
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Sends every descriptor held to `to`: at most once per resync period per destination,
    /// and within an overall budget (an unauthenticated announce can name any address).
    /// An echo of one of our probes: `from` is proven if the cookie is its own and the
    /// identity whose descriptor claims `from` signed it; a push waiting for it goes.
    fn echoed(&mut self, now: Duration, from: SocketAddr, body: &[u8]) {
        let Some((cookie, signature)) = crate::probe::parse_echo(body) else {
            return self.malformed();
        };
        let me = self.swim.identity().addr;
        let held_claimant = || {
            self.held
                .get(&from)
                .and_then(|h| h.descriptor.as_deref())
                .and_then(|d| SignedDescriptor::parse_attested(d).ok())
                .map(|d| d.descriptor().identity)
        };
        let claimant = self
            .shared
            .borrow()
            .directory
            .iter()
            .find(|d| d.descriptor().gossip_addr == from)
            .map(|d| d.descriptor().identity)
            .or_else(held_claimant);
        let good = self.cookies.valid(from, &cookie, now)
            && claimant.is_some_and(|id| crate::probe::echo_signed_by(&id, &cookie, me, signature));
        if !good {
            self.shared.borrow_mut().stats.echoes_refused += 1;
            return;
        }
        if self.proven.len() >= PUSH_DESTINATIONS && !self.proven.contains_key(&from) {
            let members = &self.members;
            self.proven.retain(|addr, _| members.contains(addr));
            if self.proven.len() >= PUSH_DESTINATIONS {
                return;
            }
        }
        self.proven.insert(from, now);
        if let Some(held) = self.held.remove(&from)
            && now.saturating_sub(held.at) < HELD_FOR
        {
            let mut filed = true;
            if let Some(descriptor) = &held.descriptor {
                let offered = self.shared.borrow_mut().offer(descriptor);
                match offered {
                    Ok(Offered::New | Offered::Updated) => {
                        let _ = self.swim.add_broadcast(descriptor);
                    }
                    Ok(Offered::Unchanged) | Err(Invalid::OldVersion) => {}
                    Err(_) => filed = false,
                }
            }
            if let (true, Some(packet)) = (filed, &held.swim) {
                self.feed_swim(now, packet);
            }
            for sync in &held.syncs {
                self.file_sync(now, sync);
            }
        }
        if self.awaiting.remove(&from) {
            self.push_directory(from);
        }
    }

    /// Sends `to` a probe, unless one went there in the last second or the probe budget
    /// is spent.
    fn probe(&mut self, now: Duration, to: SocketAddr) {
        if self
            .probed
            .get(&to)
            .is_some_and(|at| now.saturating_sub(*at) < PROBE_AGAIN)
        {
            return;
        }
        refill(&mut self.probe_budget, now, PROBE_BURST, PROBES_PER_SECOND);
        if self.probe_budget.0 == 0 {
            self.shared.borrow_mut().stats.probes_limited += 1;
            return;
        }
        if self.probed.len() >= PUSH_DESTINATIONS {
            self.probed
                .retain(|_, at| now.saturating_sub(*at) < PROBE_AGAIN);
            if self.probed.len() >= PUSH_DESTINATIONS {
                self.shared.borrow_mut().stats.probes_limited += 1;
                return;
            }
        }
        self.probe_budget.0 -= 1;
        self.probed.insert(to, now);
        let probe = crate::probe::probe(&self.cookies.cookie(to, now));
        self.queue(to, probe);
        self.shared.borrow_mut().stats.probes_sent += 1;
    }

    /// Pushes the whole directory to `to`, if `to` has echoed a probe (otherwise probes it
    /// first, and pushes when the echo comes), has not had a push this resync period, and
    /// the push budget allows.
    fn push_directory(&mut self, to: SocketAddr) {
        let now = self.now;
        if !self.proven.contains_key(&to) {
            if self.awaiting.len() < PUSH_DESTINATIONS || self.awaiting.contains(&to) {
                self.awaiting.insert(to);
                self.probe(now, to);
            } else {
                self.shared.borrow_mut().stats.pushes_limited += 1;
            }
            return;
        }
        let recent = self
            .pushed
            .get(&to)
            .is_some_and(|at| now.saturating_sub(*at) < self.config.resync_every);
        refill(&mut self.push_budget, now, PUSH_BURST, PUSH_PER_SECOND);
        if recent || self.push_budget.0 == 0 {
            self.shared.borrow_mut().stats.pushes_limited += 1;
            return;
        }
        if self.pushed.len() >= PUSH_DESTINATIONS {
            let period = self.config.resync_every;
            self.pushed.retain(|_, at| now.saturating_sub(*at) < period);
            if self.pushed.len() >= PUSH_DESTINATIONS {
                self.shared.borrow_mut().stats.pushes_limited += 1;
                return;
            }
        }
        self.push_budget.0 -= 1;
        self.pushed.insert(to, now);
        let datagrams = {
            let shared = self.shared.borrow();
            wire::sync_datagrams(shared.directory.iter().map(SignedDescriptor::bytes))
        };
        for datagram in datagrams {
            self.queue(to, datagram);
        }
    }

    /// Publishes a newer own descriptor (e.g. with the next epoch's key).
    pub fn publish(&mut self, own: SignedDescriptor) -> Result<(), Invalid> {
        let bytes = own.bytes().to_vec();
        match self.shared.borrow_mut().offer(&bytes) {
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        self.own = own;
        let _ = self.swim.add_broadcast(&bytes);
        Ok(())
    }

    /// Moves to `epoch`: descriptors without a key for it are dropped.
    pub fn set_epoch(&mut self, epoch: Epoch) {
        let mut shared = self.shared.borrow_mut();
        shared.epoch = epoch;
        shared.directory.expire(epoch);
        shared.dirty = true;
        if let Some((c, _)) = self.cosigning.as_mut() {
            c.set_epoch(epoch);
            // Sign the new epoch's checkpoint soon, once the views settle.
            c.next_round = self.now + COSIGN_EVERY;
        }
    }

    /// Members this node considers alive, itself included.
    pub fn live_members(&self) -> BTreeSet<SocketAddr> {
        let mut live: BTreeSet<SocketAddr> =
            self.swim.iter_members().map(|m| m.id().addr).collect();
        live.insert(self.swim.identity().addr);
        live
    }

    /// Every descriptor held and whether its relay is a live member: what a gateway serves
    /// to clients, who compute the topology from it as relays do
    /// ([`Topology::compute_live`]: all of them dealt over the layers, the live ones kept).
    /// Each is its signed bytes, as clients receive them.
    pub fn client_view(&self) -> Vec<(bool, Vec<u8>)> {
        let live = self.live_members();
        self.shared
            .borrow()
            .directory
            .iter()
            .map(|s| {
                (
                    live.contains(&s.descriptor().gossip_addr),
                    s.bytes().to_vec(),
                )
            })
            .collect()
    }

    /// The current epoch's topology: every descriptor held (with stewards, every one their
    /// admission policy admits, as in their checkpoint) dealt over the layers, the live
    /// members' kept. Dealt the same way as the stewards' checkpoint, so a client routing
    /// over the checkpointed view uses the links the relays keep.
    pub fn topology(&mut self) -> Result<&Topology, TopologyError> {
        let dirty = std::mem::replace(&mut self.shared.borrow_mut().dirty, false);
        if dirty {
            let live = self.live_members();
            let shared = self.shared.borrow();
            let dealt: Vec<&SignedDescriptor> = match &self.cosigning {
                Some((_, policy)) => admit(shared.epoch, shared.directory.iter(), policy).admitted,
                None => shared.directory.iter().collect(),
            };
            self.topology = Topology::compute_live(
                &self.config.network_seed,
                shared.epoch,
                dealt.iter().map(|s| s.descriptor()),
                |d| live.contains(&d.gossip_addr),
            );
        }
        self.topology.as_ref().map_err(|e| *e)
    }

    /// The checkpoint this node would sign as a steward of `network`: the descriptors it
    /// admits under `policy` (its own view: what it holds; liveness is not part of it),
    /// their set's hash, and the topology dealt over all of them (a client recomputes it from
    /// the admitted descriptors, then leaves out those its gateway marks not live, as relays
    /// do) and the admitted descriptors. The ledger's fields are what
    /// [`set_ledger`](Self::set_ledger) set last (an empty tree's before).
    pub fn checkpoint(
        &self,
        network: &str,
        policy: &Policy,
    ) -> Result<(Checkpoint, Vec<Vec<u8>>), TopologyError> {
        let shared = self.shared.borrow();
        let admission = admit(shared.epoch, shared.directory.iter(), policy);
        let topology = Topology::compute(
            &self.config.network_seed,
            shared.epoch,
            admission.admitted.iter().map(|s| s.descriptor()),
        )?;
        let checkpoint = Checkpoint {
            network: network.to_owned(),
            tree_size: self.ledger.0,
            tree_root: self.ledger.1,
            reputation: self.ledger.2,
            epoch: shared.epoch,
            descriptors: descriptor_set_hash(admission.admitted.iter().map(|s| s.bytes())),
            topology: topology.hash(),
        };
        Ok((
            checkpoint,
            admission
                .admitted
                .iter()
                .map(|s| s.bytes().to_vec())
                .collect(),
        ))
    }

    /// This node's identity key pair (to sign its next descriptors).
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// Counters.
    pub fn stats(&self) -> GossipStats {
        self.shared.borrow().stats
    }

    /// Descriptor refusals for `reason`.
    pub fn rejected(&self, reason: Invalid) -> u64 {
        self.shared.borrow().directory.rejected(reason)
    }

    /// Identities seen signing two different descriptors with one version.
    pub fn equivocations(&self) -> u64 {
        self.shared.borrow().directory.equivocations()
    }

    /// Descriptors held.
    pub fn descriptors(&self) -> usize {
        self.shared.borrow().directory.len()
    }

    /// Leaves the cluster (before shutting down), so that the others know at once.
    pub fn leave(&mut self, now: Duration) {
        let mut out = std::mem::take(&mut self.out);
        let _ = self.swim.leave_cluster(&mut out);
        self.out = out;
        self.settle(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_floods_are_bounded_per_source_and_overall() {
        let mut limit = RateLimit::new(SYNC_RATES);
        let a: std::net::IpAddr = [198, 18, 0, 1].into();
        let t0 = Duration::from_secs(100);
        let allowed = (0..100).filter(|_| limit.allow(a, t0)).count();
        assert_eq!(allowed, SYNC_RATES.burst as usize);
        // A quarter of a second later: one more token.
        assert!(limit.allow(a, t0 + Duration::from_millis(250)));
        assert!(!limit.allow(a, t0 + Duration::from_millis(250)));
        // Many sources: the overall bucket caps them together.
        let mut limit = RateLimit::new(SYNC_RATES);
        let mut total = 0;
        for i in 0..200u32 {
            let ip: std::net::IpAddr = std::net::Ipv4Addr::from(0x0a00_0000 + i).into();
            total += (0..SYNC_RATES.burst)
                .filter(|_| limit.allow(ip, t0))
                .count();
        }
        assert_eq!(total as u32, SYNC_RATES.global_burst);
    }
}
