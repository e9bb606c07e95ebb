//! Gossip mode: the relay finds the network by gossip (pb-control's SWIM and signed
//! descriptors) instead of a topology file, makes fresh Sphinx keys every epoch (never
//! stored), publishes the next epoch's key ahead, and serves a local admin endpoint.
//!
//! Driven from the relay's main thread by a mio poll over the gossip socket and the admin
//! listener; the pipeline cores pick up new keys and links between turns.

use std::{
    collections::VecDeque,
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, anyhow};
use mio::{Events, Interest, Poll, Token, unix::SourceFd};
use pb_control::{
    Descriptor, Gossip, GossipConfig, IdentityKeyPair, Invalid, SignedDescriptor, Topology,
};
use pb_pipeline::{LoopPlan, Neighbour};
use pb_sphinx::{DelayMs, Epoch, EpochKey, Format, Hop, NodeId, NodeKeys};

use crate::{admin::Admin, config::GossipSettings};

const GOSSIP: Token = Token(0);
/// Gossip datagrams handled per turn at most.
const MAX_DATAGRAMS_PER_TURN: usize = 256;
const ADMIN: Token = Token(1);

/// Reads an identity key file: the 32-byte Ed25519 seed in hex, one line.
pub fn read_identity(path: &Path) -> anyhow::Result<IdentityKeyPair> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read identity file {}", path.display()))?,
    );
    let seed = zeroize::Zeroizing::new(
        crate::config::hex::<32>("identity file", text.trim())
            .map_err(|_| anyhow!("identity file {}: expected 64 hex digits", path.display()))?,
    );
    Ok(IdentityKeyPair::from_seed(&seed))
}

/// `pb-relay keygen`: a new identity seed from the OS, written to `path` (mode 0600, never
/// over an existing file).
pub fn keygen(path: &Path) -> anyhow::Result<IdentityKeyPair> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("OS randomness: {e}"))?;
    let pair = IdentityKeyPair::from_seed(&seed);
    let mut text: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    zeroize::Zeroize::zeroize(&mut seed);
    text.push('\n');
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
    zeroize::Zeroize::zeroize(&mut text);
    written.with_context(|| format!("cannot create identity file {}", path.display()))?;
    Ok(pair)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

fn fresh_key(epoch: Epoch) -> anyhow::Result<EpochKey> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| anyhow!("OS randomness: {e}"))?;
    let key = EpochKey::from_secret(epoch, secret);
    zeroize::Zeroize::zeroize(&mut secret);
    Ok(key)
}

/// What the cores must take after a turn.
#[derive(Default)]
pub struct Update {
    /// New keys (an epoch began, or its overlap ended); the epoch to prepare the replay
    /// filter for comes with them.
    pub keys: Option<(Epoch, NodeKeys)>,
    /// The previous epoch, when the overlap ended with these keys: once the cores have
    /// dropped its key, its replay table is cleared for the epoch after the current one.
    pub retired: Option<Epoch>,
    /// New links and their loop routes (a new topology).
    pub links: Option<(Epoch, Vec<Neighbour>, Vec<Option<LoopPlan>>)>,
    /// Lines for the operator (stderr).
    pub notes: Vec<String>,
    /// Lines for tests and scripts (stdout): `topology <hash> nodes <n> links <k> epoch <e>`.
    pub reports: Vec<String>,
    /// The signed directory clients fetch (a new topology): the epoch and every
    /// descriptor, with whether its relay is live.
    pub directory: Option<Arc<crate::client_link::Directory>>,
}

/// Counters and state for the admin endpoint, filled in by the caller (dataplane) and here.
pub type Metrics = Vec<(String, u64)>;

/// The gossip side of a relay.
pub struct GossipDriver {
    settings: GossipSettings,
    /// The transports its descriptor offers clients (a gateway's), fixed at start.
    offers: Vec<pb_control::TransportOffer>,
    format: Format,
    gossip: Gossip,
    socket: UdpSocket,
    admin: Option<Admin>,
    poll: Poll,
    events: Events,
    origin: Instant,
    epoch: Epoch,
    current: EpochKey,
    next: EpochKey,
    previous: Option<EpochKey>,
    /// When the previous epoch's key stops being accepted.
    overlap_until: Option<Instant>,
    version: u64,
    last_hash: Option<[u8; 32]>,
    /// The neighbours last handed to the cores.
    links: Vec<NodeId>,
    /// Through the overlap, the previous epoch's neighbours stay linked too: packets made
    /// under the previous epoch's topology still travel its links.
    overlap_links: Vec<NodeId>,
    buf: Vec<u8>,
    pending: VecDeque<(SocketAddr, Vec<u8>)>,
    /// The stewards' cosigned checkpoint held (a signed note), and, for a gateway, the
    /// admitted descriptors it names, which are what clients get.
    checkpointed: Option<(String, Vec<pb_control::SignedDescriptor>)>,
    next_checkpoint_look: Duration,
    /// The relay's part in the ledger (with a network file).
    ledger: Option<crate::ledger::Ledger>,
    /// The checkpoint whose reputation table a gateway serves.
    reputation_served: Option<String>,
    /// The reputation table the loop routes were last weighed by (its hash).
    last_weights: Option<[u8; 32]>,
    /// The reputation table hash of the cosigned checkpoint held.
    checkpoint_reputation: [u8; 32],
}

impl GossipDriver {
    /// Reads the identity, binds the sockets, makes this epoch's and the next epoch's keys and
    /// starts gossiping.
    pub fn start(
        settings: &GossipSettings,
        format: Format,
        admin: Option<SocketAddr>,
    ) -> anyhow::Result<Self> {
        let identity = read_identity(&settings.identity_file)?;
        let ledger = crate::ledger::Ledger::start(settings, &identity)?;
        let epoch = Epoch((unix_now().as_secs() / settings.epoch_seconds) as u32);
        let current = fresh_key(epoch)?;
        let next = fresh_key(Epoch(epoch.0.wrapping_add(1)))?;
        let socket = UdpSocket::bind(settings.bind)
            .with_context(|| format!("gossip.bind: cannot bind {}", settings.bind))?;
        socket.set_nonblocking(true)?;
        let admin = admin.map(|a| Admin::bind(a, "admin")).transpose()?;
        let poll = Poll::new().context("mio poll")?;
        poll.registry().register(
            &mut SourceFd(&socket.as_raw_fd()),
            GOSSIP,
            Interest::READABLE,
        )?;
        if let Some(a) = &admin {
            poll.registry().register(
                &mut SourceFd(&a.listener().as_raw_fd()),
                ADMIN,
                Interest::READABLE,
            )?;
        }
        // Versions grow across restarts: the start time in milliseconds.
        let version = unix_now().as_millis() as u64;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(|e| anyhow!("OS randomness: {e}"))?;
        // What clients are offered, read once: the listeners present this TLS key from
        // start to end, so every epoch's descriptor must name the same pin.
        let offers = crate::transports::offers(settings)?;
        let own = sign(
            &identity, settings, &offers, version, epoch, &current, &next,
        )?;
        let gossip = Gossip::new(
            GossipConfig {
                // A testbed's network file allows its own range in descriptors.
                allowed_prefixes: settings
                    .network
                    .iter()
                    .flat_map(|n| n.allow_prefixes.iter().copied())
                    .chain(settings.allow_prefixes.iter().copied())
                    .collect(),
                ..GossipConfig::new(settings.network_seed, settings.seeds.clone())
            },
            identity,
            own,
            epoch,
            unix_now().as_secs() as u32,
            u64::from_le_bytes(random),
            Duration::ZERO,
        )
        .map_err(|e| anyhow!("gossip: {e}"))?;
        let mut gossip = gossip;
        if let Some(network) = &settings.network {
            gossip.set_stewards(network.stewards.clone(), network.policy);
        }
        if let Some(ledger) = &ledger {
            ledger.attach(&mut gossip);
        }
        Ok(Self {
            settings: settings.clone(),
            offers,
            format,
            gossip,
            socket,
            admin,
            poll,
            events: Events::with_capacity(64),
            origin: Instant::now(),
            epoch,
            current,
            next,
            previous: None,
            overlap_until: None,
            version,
            last_hash: None,
            links: Vec::new(),
            overlap_links: Vec::new(),
            buf: vec![0; 2048],
            pending: VecDeque::new(),
            checkpointed: None,
            next_checkpoint_look: Duration::ZERO,
            ledger,
            reputation_served: None,
            last_weights: None,
            checkpoint_reputation: [0; 32],
        })
    }

    /// Reads the links' loop counters for the ledger's records (`links[i]`: link `i`'s
    /// neighbour now and its counters since the relay started).
    pub fn observe_loops(&mut self, links: &[(NodeId, pb_mix::LoopStats)]) {
        if let Some(ledger) = &mut self.ledger {
            ledger.observe(links);
        }
    }

    /// This relay's node id.
    pub fn node_id(&self) -> NodeId {
        self.gossip.identity().public().node_id()
    }

    /// The current epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The keys the cores process with now.
    pub fn node_keys(&self) -> NodeKeys {
        NodeKeys {
            current: self.current.clone(),
            previous: self.previous.clone(),
            format: Some(self.format),
        }
    }

    /// Waits at most `wait` for gossip or admin traffic, handles it and what is due, and says
    /// what changed. `metrics` are the dataplane's counters for the admin endpoint.
    pub fn turn(&mut self, wait: Duration, metrics: &dyn Fn() -> Metrics) -> Update {
        let mut update = Update::default();
        let now = self.origin.elapsed();
        let until_due = self.gossip.poll_timeout().saturating_sub(now);
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait.min(until_due)))
            && e.kind() != std::io::ErrorKind::Interrupted
        {
            update.notes.push(format!("gossip poll: {e}"));
        }
        let mut admin_ready = false;
        for event in &self.events {
            admin_ready |= event.token() == ADMIN;
        }
        let now = self.origin.elapsed();
        // The datagrams waiting, at most a bounded number per turn so that a flood cannot
        // hold back timers and acks (the socket is read again next turn, within `wait`).
        for _ in 0..MAX_DATAGRAMS_PER_TURN {
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    let bytes = &self.buf[..len];
                    self.gossip.handle_datagram(now, from, bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break, // e.g. ICMP unreachable reported on the socket: ignore
            }
        }
        self.gossip.handle_timeout(now);
        while let Some(event) = self.gossip.poll_event() {
            // Relay addresses are public (they are in every descriptor); no user appears here.
            // Sybils can churn membership, so these lines are rate-limited.
            match event {
                pb_control::Event::MemberUp(addr) => {
                    pb_log::info_limited!("gossip: member {addr} up");
                }
                pb_control::Event::MemberDown(addr) => {
                    pb_log::info_limited!("gossip: member {addr} down");
                }
            }
        }
        self.epoch_clock(&mut update);
        self.flush();
        self.topology_changed(&mut update);
        self.checkpoint_changed(&mut update, now);
        if let Some(ledger) = &mut self.ledger {
            update
                .notes
                .extend(ledger.turn(&mut self.gossip, self.epoch, now));
        }
        self.serve_reputation(&mut update);
        if admin_ready {
            self.serve_admin(metrics);
        }
        update
    }

    fn flush(&mut self) {
        while let Some(d) = self.gossip.poll_transmit() {
            self.pending.push_back(d);
        }
        while let Some((to, bytes)) = self.pending.pop_front() {
            match self.socket.send_to(&bytes, to) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.pending.push_front((to, bytes));
                    break;
                }
                // An unreachable peer: SWIM notices by itself.
                Err(_) => {}
            }
        }
    }

    /// Moves to the next epoch at its boundary; ends the overlap.
    fn epoch_clock(&mut self, update: &mut Update) {
        let due = Epoch((unix_now().as_secs() / self.settings.epoch_seconds) as u32);
        if due.0 > self.epoch.0 {
            let result = if due.0 == self.epoch.0.wrapping_add(1) {
                fresh_key(Epoch(due.0.wrapping_add(1))).map(|next| {
                    let current = std::mem::replace(&mut self.next, next);
                    Some(std::mem::replace(&mut self.current, current))
                })
            } else {
                // Skipped epochs (a suspended machine): no overlap, all keys new.
                fresh_key(due).and_then(|c| {
                    self.current = c;
                    self.next = fresh_key(Epoch(due.0.wrapping_add(1)))?;
                    Ok(None)
                })
            };
            match result {
                Ok(previous) => {
                    self.previous = previous;
                    let ended = self.epoch;
                    self.epoch = due;
                    if let Some(ledger) = &mut self.ledger {
                        let clock = self.origin.elapsed();
                        update.notes.extend(ledger.epoch_began(
                            ended,
                            due,
                            &mut self.gossip,
                            clock,
                        ));
                    }
                    // The previous epoch's packets are accepted for a sixth of an epoch (at
                    // most a minute): long enough for those in flight.
                    let overlap = crate::replay::overlap(self.settings.epoch_seconds);
                    self.overlap_until = Some(Instant::now() + overlap);
                    self.version += 1;
                    match sign(
                        self.gossip.identity(),
                        &self.settings,
                        &self.offers,
                        self.version,
                        self.epoch,
                        &self.current,
                        &self.next,
                    ) {
                        Ok(own) => {
                            self.gossip.set_epoch(self.epoch);
                            if let Err(e) = self.gossip.publish(own) {
                                update.notes.push(format!("own descriptor refused: {e}"));
                            }
                        }
                        Err(e) => update.notes.push(format!("signing the descriptor: {e}")),
                    }
                    update.keys = Some((self.epoch, self.node_keys()));
                    update.notes.push(format!("epoch {} began", self.epoch.0));
                    self.overlap_links = self.links.clone();
                    self.last_hash = None;
                }
                Err(e) => update.notes.push(format!("epoch change: {e}")),
            }
        }
        if self.overlap_until.is_some_and(|t| Instant::now() >= t) {
            self.overlap_until = None;
            self.previous = None;
            self.overlap_links.clear();
            // The links shrink to this epoch's topology.
            self.last_hash = None;
            update.keys = Some((self.epoch, self.node_keys()));
            update.retired = Some(Epoch(self.epoch.0.wrapping_sub(1)));
        }
    }

    /// New links and routes when the topology's hash moved.
    fn topology_changed(&mut self, update: &mut Update) {
        let me = self.node_id();
        let epoch = self.epoch;
        let Ok(topology) = self.gossip.topology() else {
            if self.last_hash.take().is_some() || update.keys.is_some() {
                update.links = Some((epoch, Vec::new(), Vec::new()));
                update
                    .reports
                    .push(format!("topology none epoch {}", epoch.0));
            }
            return;
        };
        // Loop routes weigh relays by the reputation table the stewards committed to, once
        // this relay's copy of the ledger gives it (as clients' routes do).
        let weights_id = self
            .ledger
            .as_ref()
            .and_then(|l| l.holds_table(&self.checkpoint_reputation))
            .unwrap_or(false)
            .then_some(self.checkpoint_reputation);
        if self.last_hash == Some(topology.hash()) && self.last_weights == weights_id {
            return;
        }
        self.last_hash = Some(topology.hash());
        self.last_weights = weights_id;
        let mut topology = topology.clone();
        if let Some((weights, unlisted)) = self
            .ledger
            .as_ref()
            .and_then(|l| weights_id.and_then(|c| l.route_weights(&c)))
        {
            topology.weigh(weights, unlisted);
        }
        let topology = &topology;
        let (mut neighbours, mut routes) = links_of(topology, me);
        let my = topology.find(me);
        for old in &self.overlap_links {
            if neighbours.iter().any(|n| n.node == *old) {
                continue;
            }
            if let (Some(p), Some(my)) = (topology.find(*old), my) {
                neighbours.push(Neighbour {
                    node: p.node,
                    addr: p.packet_addr,
                });
                routes.push(Some(loop_plan(topology, p, my)));
            }
        }
        self.links = neighbours.iter().map(|n| n.node).collect();
        update.reports.push(format!(
            "topology {} nodes {} links {} epoch {}",
            hex(&topology.hash()),
            topology.nodes().count(),
            neighbours.len(),
            epoch.0
        ));
        update.links = Some((epoch, neighbours, routes));
        // Only a gateway serves the directory to clients.
        if self.settings.client_bind.is_some() {
            update.directory = Some(self.client_directory());
        }
    }

    /// A gateway whose copy of the ledger now gives the table its checkpoint commits to
    /// serves it from now on (the copy may trail the checkpoint by a fetch).
    fn serve_reputation(&mut self, update: &mut Update) {
        if self.settings.client_bind.is_none() || update.directory.is_some() {
            return;
        }
        let Some((note, _)) = &self.checkpointed else {
            return;
        };
        if self.reputation_served.as_deref() == Some(note.as_str()) {
            return;
        }
        if self.reputation_for().is_some() {
            self.reputation_served = Some(note.clone());
            update.directory = Some(self.client_directory());
        }
    }

    /// What a gateway serves clients: with a cosigned checkpoint, the checkpoint and the
    /// descriptors it admitted, each with whether its relay is live now; without one (no
    /// network file, or none cosigned yet), every descriptor held.
    fn client_directory(&self) -> Arc<crate::client_link::Directory> {
        let directory = match &self.checkpointed {
            Some((note, admitted)) => {
                let live = self.gossip.live_members();
                crate::client_link::Directory {
                    epoch: self.epoch.0,
                    descriptors: admitted
                        .iter()
                        .map(|d| {
                            (
                                live.contains(&d.descriptor().gossip_addr),
                                d.bytes().to_vec(),
                            )
                        })
                        .collect(),
                    checkpoint: Some(note.clone()),
                    reputation: self.reputation_for(),
                }
            }
            None => crate::client_link::Directory {
                epoch: self.epoch.0,
                descriptors: self.gossip.client_view(),
                checkpoint: None,
                reputation: None,
            },
        };
        Arc::new(directory)
    }

    /// The reputation table the cosigned checkpoint held commits to, if this relay's copy
    /// of the ledger gives it.
    fn reputation_for(&self) -> Option<String> {
        let ledger = self.ledger.as_ref()?;
        if ledger.holds_table(&self.checkpoint_reputation)? {
            ledger.table_text()
        } else {
            None
        }
    }

    /// Once a second: whether the stewards' cosigned checkpoint changed. Every relay with a
    /// network file reports it; a gateway serves it with the admitted descriptors, once its
    /// own view gives the same checkpoint (it knows the admitted set only from that).
    fn checkpoint_changed(&mut self, update: &mut Update, now: Duration) {
        let Some(network) = &self.settings.network else {
            return;
        };
        if now < self.next_checkpoint_look {
            return;
        }
        self.next_checkpoint_look = now + Duration::from_secs(1);
        let Some(note) = self.gossip.cosigned_checkpoint() else {
            return;
        };
        if self.checkpointed.as_ref().is_some_and(|(n, _)| *n == note) {
            return;
        }
        let Ok((checkpoint, signers)) = network.stewards.open(note.as_bytes()) else {
            return;
        };
        let admitted = match self
            .gossip
            .checkpoint(network.stewards.network(), &network.policy)
        {
            // The ledger's tree is the stewards' to witness, not every relay's view.
            Ok((own, admitted))
                if own.epoch == checkpoint.epoch
                    && own.descriptors == checkpoint.descriptors
                    && own.topology == checkpoint.topology =>
            {
                admitted
                    .iter()
                    .filter_map(|b| pb_control::SignedDescriptor::parse(b).ok())
                    .collect()
            }
            // Our view differs: a gateway cannot tell which descriptors the stewards
            // admitted, and looks again in a second.
            _ if self.settings.client_bind.is_some() => return,
            _ => Vec::new(),
        };
        update.reports.push(format!(
            "checkpoint epoch {} signers {} topology {}",
            checkpoint.epoch.0,
            signers.len(),
            hex(&checkpoint.topology)
        ));
        self.checkpoint_reputation = checkpoint.reputation;
        self.checkpointed = Some((note, admitted));
        if self.settings.client_bind.is_some() {
            update.directory = Some(self.client_directory());
        }
    }

    fn serve_admin(&mut self, metrics: &dyn Fn() -> Metrics) {
        let Some(admin) = self.admin.take() else {
            return;
        };
        admin.serve(&mut |path| match path {
            "/health" => Some("ok\n".to_owned()),
            "/status" => Some(self.status()),
            "/metrics" => Some(self.metrics(metrics)),
            "/descriptors" => Some(self.descriptors()),
            _ => None,
        });
        self.admin = Some(admin);
    }

    fn status(&mut self) -> String {
        let members = self.gossip.live_members().len();
        let descriptors = self.gossip.descriptors();
        let me = self.node_id();
        let mut s = format!(
            "node {}\nrole {:?}\nepoch {}\nmembers {members}\ndescriptors {descriptors}\n",
            hex(&me.0),
            self.settings.role,
            self.epoch.0,
        );
        match self.gossip.topology() {
            Ok(t) => {
                s += &format!("topology {} nodes {}\n", hex(&t.hash()), t.nodes().count());
                // Public: every relay computes every relay's layer.
                if let Some(p) = t.find(me) {
                    s += &format!("layer {}\n", p.layer);
                }
            }
            Err(e) => s += &format!("topology none ({e})\n"),
        }
        if let Some(ledger) = &self.ledger {
            s += &ledger.status(me);
        }
        s
    }

    fn metrics(&mut self, dataplane: &dyn Fn() -> Metrics) -> String {
        let g = self.gossip.stats();
        let mut lines = vec![
            ("pb_epoch".to_owned(), u64::from(self.epoch.0)),
            (
                "pb_gossip_members".to_owned(),
                self.gossip.live_members().len() as u64,
            ),
            (
                "pb_gossip_descriptors".to_owned(),
                self.gossip.descriptors() as u64,
            ),
            ("pb_gossip_datagrams_total".to_owned(), g.datagrams),
            ("pb_gossip_malformed_total".to_owned(), g.malformed),
            ("pb_gossip_swim_refused_total".to_owned(), g.swim_refused),
            (
                "pb_gossip_swim_unauthenticated_total".to_owned(),
                g.swim_unauthenticated,
            ),
            ("pb_gossip_swim_limited_total".to_owned(), g.swim_limited),
            ("pb_gossip_sync_limited_total".to_owned(), g.sync_limited),
            (
                "pb_gossip_strangers_limited_total".to_owned(),
                g.strangers_limited,
            ),
            ("pb_gossip_cosigs_kept_total".to_owned(), g.cosigs_kept),
            (
                "pb_gossip_cosigs_refused_total".to_owned(),
                g.cosigs_refused,
            ),
            ("pb_gossip_probes_sent_total".to_owned(), g.probes_sent),
            (
                "pb_gossip_probes_limited_total".to_owned(),
                g.probes_limited,
            ),
            ("pb_gossip_swim_held_total".to_owned(), g.swim_held),
            (
                "pb_gossip_swim_held_dropped_total".to_owned(),
                g.swim_held_dropped,
            ),
            (
                "pb_gossip_echoes_refused_total".to_owned(),
                g.echoes_refused,
            ),
            (
                "pb_gossip_pushes_limited_total".to_owned(),
                g.pushes_limited,
            ),
            (
                "pb_gossip_transmit_dropped_total".to_owned(),
                g.transmit_dropped,
            ),
            (
                "pb_gossip_equivocations_total".to_owned(),
                self.gossip.equivocations(),
            ),
            (
                "pb_gossip_descriptors_accepted_total".to_owned(),
                g.descriptors_accepted,
            ),
            ("pb_gossip_records_sent_total".to_owned(), g.records_sent),
            (
                "pb_gossip_records_received_total".to_owned(),
                g.records_received,
            ),
            (
                "pb_gossip_records_refused_total".to_owned(),
                g.records_refused,
            ),
            (
                "pb_gossip_records_not_steward_total".to_owned(),
                g.records_not_steward,
            ),
        ];
        for reason in Invalid::ALL {
            lines.push((
                format!(
                    "pb_gossip_descriptors_rejected_total{{reason=\"{}\"}}",
                    reason.name()
                ),
                self.gossip.rejected(reason),
            ));
        }
        if let Some(ledger) = &self.ledger {
            lines.extend(ledger.metrics(self.node_id()));
        }
        lines.extend(dataplane());
        crate::metrics::render(&lines)
    }

    /// The client view: every signed descriptor, hex, one per line; a relay that is not a
    /// live member has ` down` after its descriptor.
    fn descriptors(&mut self) -> String {
        self.gossip
            .client_view()
            .iter()
            .map(|(live, bytes)| hex(bytes) + if *live { "\n" } else { " down\n" })
            .collect()
    }

    /// Tells the others this relay is leaving (at shutdown).
    pub fn leave(&mut self) {
        self.gossip.leave(self.origin.elapsed());
        self.flush();
    }
}

fn sign(
    identity: &IdentityKeyPair,
    settings: &GossipSettings,
    offers: &[pb_control::TransportOffer],
    version: u64,
    epoch: Epoch,
    current: &EpochKey,
    next: &EpochKey,
) -> anyhow::Result<SignedDescriptor> {
    identity
        .sign(&Descriptor {
            identity: identity.public(),
            version,
            role: settings.role,
            epoch,
            sphinx_current: current.public_key(),
            sphinx_next: next.public_key(),
            packet_addr: settings.advertise,
            gossip_addr: settings.bind,
            link_key: identity.link_public(),
            transports: offers.to_vec(),
        })
        .map_err(|e| anyhow!("own descriptor: {e}"))
}

/// This node's links in `topology` (the next layer and, but for gateways, the previous one)
/// and a loop plan per link: the neighbour, a node drawn from each following layer, back to
/// this node.
pub fn links_of(topology: &Topology, me: NodeId) -> (Vec<Neighbour>, Vec<Option<LoopPlan>>) {
    let Some(my) = topology.find(me) else {
        return (Vec::new(), Vec::new());
    };
    let links = topology.links(me);
    let neighbours = links
        .iter()
        .map(|p| Neighbour {
            node: p.node,
            addr: p.packet_addr,
        })
        .collect();
    let routes = links
        .iter()
        .map(|first| Some(loop_plan(topology, first, my)))
        .collect();
    (neighbours, routes)
}

/// Loops out through `first` and back to `me`: `first`, then a node drawn per loop from each
/// layer after `first`'s, up to `me`, as a real packet's route takes a node per layer (for a
/// link to the previous layer: `first`, then `me`).
fn loop_plan(topology: &Topology, first: &pb_control::Placed, me: &pb_control::Placed) -> LoopPlan {
    let hop = |p: &pb_control::Placed| Hop {
        node: p.node,
        public_key: p.sphinx_key,
        delay: DelayMs(0),
    };
    let (mut via, mut weights) = (Vec::new(), Vec::new());
    let mut layer = (first.layer + 1) % pb_control::LAYERS;
    while layer != me.layer {
        let nodes = topology.layer(layer);
        if !nodes.is_empty() {
            via.push(nodes.iter().map(hop).collect());
            // Loops choose relays as clients' routes do: by the topology's weights.
            weights.push(nodes.iter().map(|p| topology.weight(&p.node)).collect());
        }
        layer = (layer + 1) % pb_control::LAYERS;
    }
    if via.len() + 2 > pb_sphinx::MAX_HOPS {
        // `first` is in this node's own layer (an overlap link): no loop fits, only link
        // cover.
        return LoopPlan {
            first: hop(first),
            via: Vec::new(),
            weights: Vec::new(),
            back: None,
        };
    }
    LoopPlan {
        first: hop(first),
        via,
        weights,
        back: Some(hop(me)),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for Update {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Update").finish_non_exhaustive()
    }
}

/// Opaque in `Debug`: it holds buffers, sockets or user data.
impl core::fmt::Debug for GossipDriver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GossipDriver").finish_non_exhaustive()
    }
}
