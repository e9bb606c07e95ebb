//! `pb-relay run --config relay.toml`: runs a relay (gateway, mix or exit) over AF_XDP or
//! UDP from a static topology until SIGINT/SIGTERM or `--seconds`, with one pipeline per
//! core (per AF_XDP queue, or per `SO_REUSEPORT` UDP socket), each owning some of the links.
//!
//! SIGHUP re-reads the configuration and topology files to rotate to the next epoch: the new
//! key becomes current, the old one stays accepted as the previous epoch's until the next
//! rotation, and the replay filter's table of the epoch before is reused for the new one.
//!
//! Output (stdout, one line each, for operators and tests): every `--stats-interval` seconds
//! `window <k> link <i> sent <n> real <n> cover <n> missed <n>` per link, and at exit
//! `stat <name> <value>` for every counter (summed over cores), then `core <c> …` and
//! `link <i> …` lines. Counters only: never keys, payloads or routes.

mod client_link;
mod config;
mod exit;
mod gossip_mode;
mod published;
mod slots;

use std::{
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use config::{Backend, RelayConfig, Topology};
use gossip_mode::GossipDriver;
use pb_io::IoStats;
use pb_io::{
    PacketIo,
    afxdp::{AfXdpConfig, AfXdpIo},
    udp::{UdpConfig, UdpIo},
    xdp::XdpProgram,
};
use pb_mix::{LinkStats, LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{
    CoverPool, Handoff, LoopCover, Neighbour, Pipeline, PipelineConfig, PipelineStats, Sink,
};
use pb_sphinx::{DropReason, Epoch, EpochKey, Hop, MailboxId, NodeKeys};
use published::Published;

#[derive(Parser)]
#[command(name = "pb-relay", about = "The PhantomBand relay")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Run {
        /// The relay's configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
        #[arg(long)]
        seconds: Option<f64>,
        /// Print per-link slot counts every this many seconds (0: never).
        #[arg(long, default_value_t = 1.0)]
        stats_interval: f64,
    },
    /// Make a new identity key (gossip mode) and print its public key and node id.
    Keygen {
        /// Where to write it (created with mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Ask a running relay's admin endpoint for its status.
    Status {
        /// The admin endpoint (gossip.admin).
        #[arg(long, default_value = "127.0.0.1:9100")]
        admin: SocketAddr,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            seconds,
            stats_interval,
        } => run(&config, seconds, stats_interval),
        Command::Keygen { out } => gossip_mode::keygen(&out).map(|pair| {
            let public = pair.public();
            println!("identity {}", hexs(&public.0));
            println!("node {}", hexs(&public.node_id().0));
        }),
        Command::Status { admin } => status(admin),
    };
    if let Err(error) = result {
        let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
        eprintln!("pb-relay: {}", chain.join(": "));
        std::process::exit(1);
    }
}

/// Where a core's delivered packets go: SURB replies to the gateway's client link, client
/// messages to the exit, anything else to a local UDP endpoint (`mailbox (16) ‖ message`)
/// if one is configured.
struct Forwarder {
    socket: Option<(UdpSocket, SocketAddr)>,
    buffer: Vec<u8>,
    replies: Option<client_link::ReplyQueue>,
    exit: Option<exit::ExitInbox>,
}

impl Forwarder {
    /// A forwarder to `to` (none: delivered messages are dropped).
    fn new(to: Option<SocketAddr>, roles: &Roles) -> anyhow::Result<Self> {
        let socket = match to {
            Some(to) => Some((
                UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
                    .context("deliver_to socket")?,
                to,
            )),
            None => None,
        };
        Ok(Self {
            socket,
            buffer: Vec::with_capacity(2048),
            replies: roles.replies.clone(),
            exit: roles.exit.clone(),
        })
    }
}

impl Sink for Forwarder {
    fn deliver(&mut self, mailbox: MailboxId, reply: Option<pb_sphinx::SurbId>, message: &[u8]) {
        // A gateway passes SURB replies to its clients; an exit takes client messages.
        match (reply, &self.replies, &self.exit) {
            (None, _, Some(exit)) if mailbox == pb_proto::message::EXIT_MAILBOX => {
                return exit.push(message);
            }
            // A gateway passes everything else for a mailbox to its client: SURB replies,
            // and the client's loops.
            (_, Some(replies), _) => return replies.push(mailbox, reply, message),
            _ => {}
        }
        if let Some((socket, to)) = &self.socket {
            self.buffer.clear();
            self.buffer.extend_from_slice(&mailbox.0);
            self.buffer.extend_from_slice(message);
            // A full local socket drops the datagram (counted by the receiver, not here).
            let _ = socket.send_to(&self.buffer, to);
        }
    }
}

fn duration(name: &str, seconds: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= Duration::from_secs(365 * 24 * 3600))
        .with_context(|| format!("--{name} must be a number of seconds, at least 0"))
}

/// The configuration and topology files, parsed and checked against each other.
struct Loaded {
    config: RelayConfig,
    topology: Topology,
    key: EpochKey,
}

fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let config = RelayConfig::from_toml(&text, &dir)
        .with_context(|| format!("config {}", path.display()))?;
    let topology_text = std::fs::read_to_string(&config.topology)
        .with_context(|| format!("cannot read topology {}", config.topology.display()))?;
    let topology = Topology::from_toml(&topology_text)
        .with_context(|| format!("topology {}", config.topology.display()))?;
    let key = EpochKey::from_secret(config.epoch, config.secret);
    let me = topology
        .node(config.node)
        .ok_or_else(|| anyhow!("node.id: not in the topology"))?;
    if me.public_key != key.public_key() {
        return Err(anyhow!(
            "node.secret: does not match this node's public key in the topology"
        ));
    }
    Ok(Loaded {
        config,
        topology,
        key,
    })
}

impl Loaded {
    /// The links: every node of the next layer.
    fn neighbours(&self) -> Vec<Neighbour> {
        self.topology
            .neighbours(self.config.node)
            .iter()
            .map(|n| Neighbour {
                node: n.id,
                addr: n.addr,
            })
            .collect()
    }

    /// One loop route per link, with this epoch's keys.
    fn routes(&self) -> Vec<Vec<Hop>> {
        let hop = |n: &config::TopologyNode| Hop {
            node: n.id,
            public_key: n.public_key,
            delay: pb_sphinx::DelayMs(0),
        };
        self.topology
            .neighbours(self.config.node)
            .iter()
            .map(|n| {
                self.topology
                    .loop_route(self.config.node, n)
                    .into_iter()
                    .map(hop)
                    .collect()
            })
            .collect()
    }
}

/// The keys every core processes with, and the generation each core has taken.
struct KeyBox {
    keys: Published<NodeKeys>,
    adopted: Vec<AtomicU64>,
}

impl KeyBox {
    /// Waits until every core processes with the current generation (or `timeout`).
    fn wait_adopted(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        let want = self.keys.generation();
        while self
            .adopted
            .iter()
            .any(|a| a.load(Ordering::Acquire) != want)
        {
            if start.elapsed() > timeout {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

/// What the cores share.
struct Shared {
    pipeline: PipelineConfig,
    keys: KeyBox,
    /// The links (gossip mode: they follow the topology).
    links: Published<Vec<Neighbour>>,
    /// Each core's counters, refreshed every second (for the admin endpoint).
    snapshots: Mutex<Vec<Option<CoreReport>>>,
    replay: SharedReplayFilter,
    cover: CoverPool,
    handoff: Arc<Handoff>,
    owner: Vec<usize>,
    cpus: Vec<usize>,
    deliver_to: Option<SocketAddr>,
    roles: Roles,
    clock: Arc<dyn Fn() -> Time + Send + Sync>,
    stop: Arc<AtomicBool>,
    start: Instant,
    interval: Duration,
}

/// The services of a gateway (client link) and an exit, and what the cores and the gossip
/// loop share with them.
#[derive(Clone, Default)]
struct Roles {
    replies: Option<client_link::ReplyQueue>,
    client_stats: Option<Arc<client_link::ClientLinkStats>>,
    directory: Option<Arc<Published<Arc<client_link::Directory>>>>,
    exit: Option<exit::ExitInbox>,
    exit_stats: Option<Arc<exit::ExitStats>>,
    epoch: Arc<std::sync::atomic::AtomicU32>,
}

/// The running relay's state that a reload may change.
struct Running {
    path: PathBuf,
    epoch: Epoch,
    key: EpochKey,
    neighbours: Vec<Neighbour>,
    format: pb_sphinx::Format,
}

/// Most links a gossip-mode relay keeps (a layer's size bounds them).
const MAX_LINKS: usize = 256;

/// How the relay knows the network: a static topology (reloaded on SIGHUP) or gossip.
enum Mode {
    Static(Box<Running>),
    Gossip(Box<GossipDriver>),
}

fn run(path: &Path, seconds: Option<f64>, stats_interval: f64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let config = RelayConfig::from_toml(&text, &dir)
        .with_context(|| format!("config {}", path.display()))?;
    let limit = seconds.map(|s| duration("seconds", s)).transpose()?;
    let interval = duration("stats-interval", stats_interval)?;

    // What each mode starts from: the node, its keys, its links and their loop routes.
    let (node, epoch, keys, neighbours, routes, described, mode) = match &config.gossip {
        None => {
            let loaded = load(path)?;
            let me = loaded
                .topology
                .node(loaded.config.node)
                .ok_or_else(|| anyhow!("node.id: not in the topology"))?;
            let described = format!("{:?}, layer {}", me.role, me.layer);
            let keys = NodeKeys {
                current: loaded.key.clone(),
                previous: None,
                format: Some(config.format),
            };
            let running = Running {
                path: path.to_owned(),
                epoch: config.epoch,
                key: loaded.key.clone(),
                neighbours: loaded.neighbours(),
                format: config.format,
            };
            (
                config.node,
                config.epoch,
                keys,
                loaded.neighbours(),
                loaded.routes(),
                described,
                Mode::Static(Box::new(running)),
            )
        }
        Some(settings) => {
            let driver = GossipDriver::start(settings, config.format)?;
            let described = format!("{:?}, gossip on {}", settings.role, settings.bind);
            (
                driver.node_id(),
                driver.epoch(),
                driver.node_keys(),
                Vec::new(),
                Vec::new(),
                described,
                Mode::Gossip(Box::new(driver)),
            )
        }
    };
    let max_links = match mode {
        Mode::Static(_) => neighbours.len().max(1),
        Mode::Gossip(_) => MAX_LINKS,
    };
    let loop_mailbox = MailboxId(node.0.map(|b| !b));
    let pipeline = PipelineConfig {
        neighbours: neighbours.clone(),
        link_rate: config.mix.link_rate,
        link_queue: config.mix.link_queue,
        max_burst: config.mix.max_burst,
        delay_capacity: config.mix.delay_capacity,
        max_delay: config.mix.max_delay,
        batch: config.mix.batch,
        loop_mailbox,
        cover_per_turn: config.mix.cover_per_turn,
    };
    let mut random = [0u8; 64];
    getrandom::fill(&mut random).map_err(|e| anyhow!("OS randomness: {e}"))?;
    let mut cover_key = [0u8; 32];
    let mut loop_key = [0u8; 32];
    cover_key.copy_from_slice(&random[..32]);
    loop_key.copy_from_slice(&random[32..]);
    zeroize::Zeroize::zeroize(&mut random);
    let replay = SharedReplayFilter::new(config.mix.replay_capacity)?;
    replay.prepare(epoch);
    let loops = LoopMonitor::new(
        loop_key,
        max_links,
        4096,
        Time(config.mix.loop_timeout_ms * Time::MS),
    )?;
    zeroize::Zeroize::zeroize(&mut loop_key);
    let cover = LoopCover::new(
        config.format,
        epoch,
        routes,
        loop_mailbox,
        config.mix.loop_rate,
        loops,
        cover_key,
    );
    zeroize::Zeroize::zeroize(&mut cover_key);
    // Cover is built ahead on a thread of its own, so idle slots cost a core a copy.
    let origin = Instant::now();
    let clock: Arc<dyn Fn() -> Time + Send + Sync> =
        Arc::new(move || Time(origin.elapsed().as_nanos() as u64));
    let cover = CoverPool::start(cover, max_links, 64, clock.clone(), Box::new(|| {}))
        .context("starting the cover builder")?;
    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;
    let cores = config.cores;
    let handoff = Arc::new(Handoff::new(cores, config.mix.link_queue.min(4096)));
    let (roles, services) = start_roles(&config, node, epoch, &handoff, &stop)?;
    let shared = Shared {
        owner: Handoff::round_robin(neighbours.len(), cores),
        handoff,
        roles,
        pipeline,
        keys: KeyBox {
            keys: Published::new(keys),
            adopted: (0..cores).map(|_| AtomicU64::new(0)).collect(),
        },
        links: Published::new(neighbours.clone()),
        snapshots: Mutex::new(vec![None; cores]),
        replay,
        cover,
        cpus: config.cpus.clone(),
        deliver_to: config.deliver_to,
        clock,
        stop,
        start: Instant::now(),
        interval,
    };
    let banner = format!(
        "pb-relay: node {} ({described}), {} links at {} pkt/s, format {:?}, {cores} core{}",
        short(&node.0),
        neighbours.len(),
        config.mix.link_rate,
        config.format,
        if cores == 1 { "" } else { "s" },
    );
    let control = Control {
        limit,
        reload: &reload,
        mode,
        banner,
    };
    let result = match &config.backend {
        Backend::Udp { bind } => {
            let mut udp = UdpConfig::new(*bind);
            udp.packet_len = pb_sphinx::PACKET_LEN as u16;
            udp.reuse_port = cores > 1;
            let mut ios = Vec::new();
            for _ in 0..cores {
                let io = UdpIo::open(&udp).with_context(|| format!("binding {bind}"))?;
                // Port 0 binds the others to the port the first one got.
                udp.bind = io.local_addr();
                ios.push(io);
            }
            serve(ios, &shared, control)
        }
        Backend::AfXdp(io_config) => {
            pb_io::afxdp::ifindex(&io_config.interface)?;
            if let Some(total) = pb_io::afxdp::rx_queue_count(&io_config.interface) {
                let covered = io_config.queues.iter().filter(|q| **q < total).count();
                if covered < total as usize {
                    eprintln!(
                        "pb-relay: warning: io.queues binds {covered} of the {total} receive queues of {}; packets hashed to the others are dropped (xdp drop_no_socket): list them all, or reduce the queues (ethtool -L)",
                        io_config.interface
                    );
                }
            }
            let mut program = XdpProgram::attach_new(
                &io_config.interface,
                io_config.xdp_mode,
                io_config.port,
                io_config.packet_len,
            )?;
            let mut ios = Vec::new();
            for (core, queue) in io_config.queues.iter().enumerate() {
                let mut afxdp = AfXdpConfig::new(io_config.interface.clone(), *queue);
                afxdp.port = io_config.port;
                afxdp.packet_len = io_config.packet_len;
                afxdp.bind = io_config.bind;
                let mut io = AfXdpIo::open(&afxdp)?;
                program.register(*queue, io.fd())?;
                for (link, n) in shared.pipeline.neighbours.iter().enumerate() {
                    // Learn the MACs of this core's next hops before the first slot; a
                    // neighbour that is not up yet is resolved later by the backend (its
                    // packets are counted as dropped until then).
                    if shared.owner[link] == core {
                        let _ = io.resolve_peer(n.addr.ip(), Duration::from_secs(2));
                    }
                }
                ios.push(io);
            }
            let result = serve(ios, &shared, control);
            if let Ok(counters) = program.counters() {
                for (counter, value) in counters.iter() {
                    println!("stat xdp_{} {value}", counter.name());
                }
            }
            result
        }
    };
    shared.stop.store(true, Ordering::Relaxed);
    for service in services {
        let _ = service.join();
    }
    result
}

/// Starts a gateway's client link or an exit's service (gossip mode), each on a thread of
/// its own that runs until `stop`.
fn start_roles(
    config: &RelayConfig,
    node: pb_sphinx::NodeId,
    epoch: Epoch,
    handoff: &Arc<Handoff>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<(Roles, Vec<thread::JoinHandle<()>>)> {
    let mut roles = Roles {
        epoch: Arc::new(std::sync::atomic::AtomicU32::new(epoch.0)),
        ..Roles::default()
    };
    let mut services = Vec::new();
    let Some(settings) = &config.gossip else {
        return Ok((roles, services));
    };
    if let Some(bind) = settings.client_bind {
        let stats = Arc::new(client_link::ClientLinkStats::default());
        let replies = client_link::ReplyQueue::new(4096, stats.clone());
        let directory = Arc::new(Published::new(Arc::new(client_link::Directory::default())));
        let link = client_link::ClientLink::bind(bind, node, replies.clone(), directory.clone())?;
        services.push(spawn_service("pb-client-link", stop, move |stop| {
            link.run(stop)
        })?);
        roles.replies = Some(replies);
        roles.client_stats = Some(stats);
        roles.directory = Some(directory);
    }
    if settings.role == pb_control::Role::Exit {
        let stats = Arc::new(exit::ExitStats::default());
        let inbox = exit::ExitInbox::new(4096, stats.clone());
        let policy = exit::ExitPolicy {
            allow: settings.exit_allow.clone(),
        };
        let service = exit::Exit::new(inbox.clone(), handoff.clone(), policy, roles.epoch.clone())?;
        services.push(spawn_service("pb-exit", stop, move |stop| {
            service.run(stop)
        })?);
        roles.exit = Some(inbox);
        roles.exit_stats = Some(stats);
    }
    Ok((roles, services))
}

/// A role's service on a thread named `name`, running until `stop`.
fn spawn_service(
    name: &str,
    stop: &Arc<AtomicBool>,
    run: impl FnOnce(&AtomicBool) + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    let stop = stop.clone();
    thread::Builder::new()
        .name(name.into())
        .spawn(move || run(&stop))
}

/// The main thread's part: when to stop, what to reload, what to announce.
struct Control<'a> {
    limit: Option<Duration>,
    reload: &'a AtomicBool,
    mode: Mode,
    banner: String,
}

/// What one core reports at exit.
#[derive(Clone)]
struct CoreReport {
    stats: PipelineStats,
    io: IoStats,
    links: Vec<LinkStats>,
    /// Which of the links this core owns.
    owned: Vec<bool>,
}

/// Runs one pipeline per backend in `ios` on threads of their own until stopped, then
/// prints the counters.
fn serve<I: PacketIo + Send>(
    ios: Vec<I>,
    shared: &Shared,
    control: Control<'_>,
) -> anyhow::Result<()> {
    let cores = ios.len();
    let (ready, started) = std::sync::mpsc::channel::<()>();
    let reports: Vec<anyhow::Result<CoreReport>> = thread::scope(|scope| {
        let handles: Vec<_> = ios
            .into_iter()
            .enumerate()
            .map(|(core, io)| {
                let ready = ready.clone();
                thread::Builder::new()
                    .name(format!("pb-core-{core}"))
                    .spawn_scoped(scope, move || {
                        let result = run_core(core, cores, io, shared, ready);
                        // One core failing stops the relay.
                        shared.stop.store(true, Ordering::Relaxed);
                        result
                    })
            })
            .collect();
        drop(ready);
        // Announce the relay only once every core is set up (a core that fails to set up
        // drops its sender without sending).
        if (0..cores).all(|_| started.recv().is_ok()) {
            eprintln!("{}", control.banner);
        }
        let mut mode = control.mode;
        while !shared.stop.load(Ordering::Relaxed)
            && control.limit.is_none_or(|l| shared.start.elapsed() < l)
        {
            match &mut mode {
                Mode::Static(running) => {
                    thread::sleep(Duration::from_millis(20));
                    if control.reload.swap(false, Ordering::Relaxed) {
                        match rotate(&mut *running, shared) {
                            Ok(line) => eprintln!("pb-relay: {line}"),
                            Err(e) => {
                                let chain: Vec<String> =
                                    e.chain().map(ToString::to_string).collect();
                                eprintln!("pb-relay: reload refused: {}", chain.join(": "));
                            }
                        }
                    }
                }
                Mode::Gossip(driver) => {
                    if control.reload.swap(false, Ordering::Relaxed) {
                        eprintln!("pb-relay: SIGHUP ignored: gossip mode rotates keys by itself");
                    }
                    let metrics = || dataplane_metrics(shared);
                    let update = driver.turn(Duration::from_millis(20), &metrics);
                    apply(update, shared);
                }
            }
        }
        if let Mode::Gossip(driver) = &mut mode {
            driver.leave();
        }
        shared.stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a pipeline core panicked"))),
                Err(e) => Err(anyhow!("starting a pipeline core: {e}")),
            })
            .collect()
    });
    let reports: Vec<CoreReport> = reports.into_iter().collect::<anyhow::Result<_>>()?;
    print_report(&reports, shared)
}

/// Hands what gossip changed to the cores: keys (after preparing the replay filter for
/// their epoch), links and the cover routes along them.
fn apply(update: gossip_mode::Update, shared: &Shared) {
    for note in update.notes {
        eprintln!("pb-relay: {note}");
    }
    if let Some((epoch, keys)) = update.keys {
        shared.replay.prepare(epoch);
        shared.keys.keys.set(keys);
        shared.roles.epoch.store(epoch.0, Ordering::Relaxed);
    }
    if let (Some(view), Some(directory)) = (update.directory, &shared.roles.directory) {
        directory.set(view);
    }
    if let Some((epoch, mut neighbours, mut routes)) = update.links {
        neighbours.truncate(MAX_LINKS);
        routes.truncate(MAX_LINKS);
        shared.cover.set_routes(epoch, routes, true);
        shared.links.set(neighbours);
    }
    if !update.reports.is_empty() {
        let mut out = std::io::stdout().lock();
        for line in update.reports {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    }
}

/// The dataplane's counters, summed over the cores' latest snapshots, for `/metrics`.
/// A role's counter as a Prometheus metric: `pb_<role>_<name>_total` and its value.
pub(crate) fn counter_metric(role: &str, name: &str, counter: &AtomicU64) -> (String, u64) {
    (
        format!("pb_{role}_{name}_total"),
        counter.load(Ordering::Relaxed),
    )
}

fn dataplane_metrics(shared: &Shared) -> gossip_mode::Metrics {
    let snapshots = shared
        .snapshots
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let reports: Vec<&CoreReport> = snapshots.iter().flatten().collect();
    let sum = |f: &dyn Fn(&CoreReport) -> u64| reports.iter().map(|r| f(r)).sum::<u64>();
    let mut m = vec![
        (
            "pb_packets_received_total".to_owned(),
            sum(&|r| r.stats.received),
        ),
        (
            "pb_packets_forwarded_total".to_owned(),
            sum(&|r| r.stats.forwarded),
        ),
        (
            "pb_packets_delivered_total".to_owned(),
            sum(&|r| r.stats.delivered),
        ),
        (
            "pb_packets_sent_total".to_owned(),
            sum(&|r| r.io.tx_packets),
        ),
        (
            "pb_loops_returned_total".to_owned(),
            sum(&|r| r.stats.loops_returned),
        ),
        (
            "pb_link_real_total".to_owned(),
            sum(&|r| r.links.iter().map(|l| l.real).sum()),
        ),
        (
            "pb_link_cover_total".to_owned(),
            sum(&|r| r.links.iter().map(|l| l.cover).sum()),
        ),
        (
            "pb_link_missed_total".to_owned(),
            sum(&|r| r.links.iter().map(|l| l.missed).sum()),
        ),
        (
            "pb_packets_dropped_total{reason=\"no_link\"}".to_owned(),
            sum(&|r| r.stats.dropped_no_link),
        ),
        (
            "pb_packets_dropped_total{reason=\"link_full\"}".to_owned(),
            sum(&|r| r.stats.dropped_link_full),
        ),
    ];
    // A gateway's client link and an exit's service.
    if let Some(stats) = &shared.roles.client_stats {
        m.extend(stats.metrics());
    }
    if let Some(stats) = &shared.roles.exit_stats {
        m.extend(stats.metrics());
    }
    // Per link (by index in this relay's current links): slots and loops.
    for r in &reports {
        for (i, l) in r.links.iter().enumerate() {
            if !r.owned.get(i).copied().unwrap_or(false) {
                continue;
            }
            let loops = pb_pipeline::CoverSource::loop_stats(&shared.cover, i);
            for (name, value) in [
                ("pb_link_sent_total", l.real + l.cover),
                ("pb_link_real_sent_total", l.real),
                ("pb_link_slots_missed_total", l.missed),
                ("pb_link_loops_sent_total", loops.sent),
                ("pb_link_loops_returned_total", loops.returned),
                ("pb_link_loops_lost_total", loops.lost),
            ] {
                m.push((format!("{name}{{link=\"{i}\"}}"), value));
            }
        }
    }
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        let name = drop_name(*reason).trim_start_matches("dropped_");
        m.push((
            format!("pb_packets_dropped_total{{reason=\"{name}\"}}"),
            sum(&|r| r.stats.dropped[i]),
        ));
    }
    m
}

/// Rotates to the next epoch from the configuration files: the new key becomes current, the
/// old one previous; the replay filter's table of the epoch before the old one is reused.
fn rotate(running: &mut Running, shared: &Shared) -> anyhow::Result<String> {
    let loaded = load(&running.path)?;
    let next = Epoch(running.epoch.0.wrapping_add(1));
    if loaded.config.epoch != next {
        return Err(anyhow!(
            "node.epoch: {} is not the next epoch ({}); restart the relay to jump epochs",
            loaded.config.epoch.0,
            next.0
        ));
    }
    if loaded.config.format != running.format {
        return Err(anyhow!("node.format: changing it needs a restart"));
    }
    if loaded.neighbours() != running.neighbours {
        return Err(anyhow!(
            "topology: this node's links changed; changing them needs a restart"
        ));
    }
    // The table first, so that no core holding the new key finds none for its packets;
    // a core still on the old keys for a turn drops the new epoch's packets as future.
    shared.replay.prepare(next);
    shared.keys.keys.set(NodeKeys {
        current: loaded.key.clone(),
        previous: Some(running.key.clone()),
        format: Some(running.format),
    });
    shared.cover.set_routes(next, loaded.routes(), false);
    // Announce the rotation only once every core processes with the new keys.
    if !shared.keys.wait_adopted(Duration::from_secs(5)) {
        return Err(anyhow!(
            "a pipeline core did not take the new keys within 5 s"
        ));
    }
    let line = format!(
        "epoch {} is current; epoch {} is accepted until the next rotation",
        next.0, running.epoch.0
    );
    running.epoch = next;
    running.key = loaded.key;
    Ok(line)
}

/// One core: pinned if asked, running its pipeline until the relay stops.
fn run_core<I: PacketIo>(
    core: usize,
    cores: usize,
    io: I,
    shared: &Shared,
    ready: std::sync::mpsc::Sender<()>,
) -> anyhow::Result<CoreReport> {
    if let Some(cpu) = shared.cpus.get(core) {
        pb_io::cpu::pin_current_thread(*cpu).with_context(|| format!("io.cpus: CPU {cpu}"))?;
    }
    let now = || (shared.clock)();
    let (mut generation, keys) = shared.keys.keys.get();
    let mut pipeline = Pipeline::new(
        io,
        &shared.pipeline,
        keys,
        &shared.replay,
        Box::new(shared.cover.handle()),
        Box::new(Forwarder::new(shared.deliver_to, &shared.roles)?),
        now(),
    )?;
    // Sharded even alone: the handoff also carries the packets the relay makes itself.
    pipeline = pipeline.shard(core, shared.owner.clone(), shared.handoff.clone())?;
    let _ = ready.send(());
    drop(ready);
    let mut window = 0u64;
    let mut last: Vec<LinkStats> = pipeline.link_stats();
    let mut links_generation = 0;
    let mut snapshot_at = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        // New keys or links: an atomic load per turn; the lock only when they changed.
        if shared.keys.keys.generation() != generation {
            let (g, keys) = shared.keys.keys.get();
            pipeline.set_keys(keys);
            generation = g;
            shared.keys.adopted[core].store(g, Ordering::Release);
        }
        if shared.links.generation() != links_generation {
            let (g, neighbours) = shared.links.get();
            let owner = Handoff::round_robin(neighbours.len(), cores);
            pipeline.set_neighbours(neighbours, owner, now())?;
            links_generation = g;
            last = pipeline.link_stats();
        }
        pipeline.step(now(), Duration::from_millis(1))?;
        if snapshot_at.elapsed() >= Duration::from_secs(1) {
            snapshot_at = Instant::now();
            let report = CoreReport {
                stats: pipeline.stats(),
                io: pipeline.io().stats(),
                links: pipeline.link_stats(),
                owned: (0..pipeline.neighbours().len())
                    .map(|i| pipeline.owns(i))
                    .collect(),
            };
            if let Some(slot) = shared
                .snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(core)
            {
                *slot = Some(report);
            }
        }
        let interval = shared.interval;
        if !interval.is_zero() && shared.start.elapsed() >= interval * (window as u32 + 1) {
            let current = pipeline.link_stats();
            let mut out = std::io::stdout().lock();
            for (i, (c, l)) in current.iter().zip(&last).enumerate() {
                if !pipeline.owns(i) {
                    continue;
                }
                let (real, cover) = (
                    c.real.saturating_sub(l.real),
                    c.cover.saturating_sub(l.cover),
                );
                writeln!(
                    out,
                    "window {window} link {i} sent {} real {real} cover {cover} missed {}",
                    real + cover,
                    c.missed.saturating_sub(l.missed)
                )?;
            }
            out.flush()?;
            last = current;
            window += 1;
        }
    }
    Ok(CoreReport {
        stats: pipeline.stats(),
        io: pipeline.io().stats(),
        links: pipeline.link_stats(),
        owned: (0..pipeline.neighbours().len())
            .map(|i| pipeline.owns(i))
            .collect(),
    })
}

fn print_report(reports: &[CoreReport], shared: &Shared) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let sum = |f: &dyn Fn(&CoreReport) -> u64| reports.iter().map(f).sum::<u64>();
    let mut lines = vec![
        ("received", sum(&|r| r.stats.received)),
        ("forwarded", sum(&|r| r.stats.forwarded)),
        ("delivered", sum(&|r| r.stats.delivered)),
        ("loops_returned", sum(&|r| r.stats.loops_returned)),
        ("cover_received", sum(&|r| r.stats.cover_received)),
        ("replay_filter_full", sum(&|r| r.stats.replay_filter_full)),
        (
            "replay_filter_no_table",
            sum(&|r| r.stats.replay_filter_no_table),
        ),
        ("dropped_no_link", sum(&|r| r.stats.dropped_no_link)),
        ("dropped_delay_full", sum(&|r| r.stats.dropped_delay[0])),
        ("dropped_delay_too_long", sum(&|r| r.stats.dropped_delay[1])),
        ("dropped_delay_lagging", sum(&|r| r.stats.dropped_delay[2])),
        ("dropped_link_full", sum(&|r| r.stats.dropped_link_full)),
        ("dropped_handoff", sum(&|r| r.stats.dropped_handoff)),
        ("handed_off", sum(&|r| r.stats.handed_off)),
        ("taken_over", sum(&|r| r.stats.taken_over)),
        ("cover_failures", sum(&|r| r.stats.cover_failures)),
        ("io_rx_packets", sum(&|r| r.io.rx_packets)),
        (
            "io_rx_dropped_malformed",
            sum(&|r| r.io.rx_dropped_malformed),
        ),
        ("io_tx_packets", sum(&|r| r.io.tx_packets)),
        (
            "io_tx_dropped_no_neighbour",
            sum(&|r| r.io.tx_dropped_no_neighbour),
        ),
    ];
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        lines.push((drop_name(*reason), sum(&|r| r.stats.dropped[i])));
    }
    for (name, value) in lines {
        writeln!(out, "stat {name} {value}")?;
    }
    for (core, r) in reports.iter().enumerate() {
        let s = &r.stats;
        writeln!(
            out,
            "core {core} received {} forwarded {} handed_off {} taken_over {}",
            s.received, s.forwarded, s.handed_off, s.taken_over
        )?;
    }
    for r in reports {
        for (i, l) in r.links.iter().enumerate() {
            if !r.owned.get(i).copied().unwrap_or(false) {
                continue;
            }
            let loops = pb_pipeline::CoverSource::loop_stats(&shared.cover, i);
            writeln!(
                out,
                "link {i} real {} cover {} missed {} dropped_full {} loops_sent {} loops_returned {} loops_lost {}",
                l.real, l.cover, l.missed, l.dropped_full, loops.sent, loops.returned, loops.lost
            )?;
        }
    }
    out.flush()?;
    Ok(())
}

fn drop_name(reason: DropReason) -> &'static str {
    match reason {
        DropReason::WrongLength => "dropped_wrong_length",
        DropReason::UnknownVersion => "dropped_unknown_version",
        DropReason::PastEpoch => "dropped_past_epoch",
        DropReason::FutureEpoch => "dropped_future_epoch",
        DropReason::InvalidElement => "dropped_invalid_element",
        DropReason::BadMac => "dropped_bad_mac",
        DropReason::Replay => "dropped_replay",
        DropReason::BadCommand => "dropped_bad_command",
        DropReason::PayloadTampered => "dropped_payload_tampered",
    }
}

fn hexs(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `pb-relay status`: the admin endpoint's `/status`.
fn status(admin: SocketAddr) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .with_context(|| format!("no relay admin endpoint at {admin}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /status HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("{admin}: not an HTTP answer"))?;
    print!("{body}");
    Ok(())
}

/// The first four bytes of an id, for start-up lines.
fn short(id: &[u8; 16]) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}
