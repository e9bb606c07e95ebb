//! `pb-relay`: the command line and the wiring. `run` builds the shared state, opens one
//! packet backend per core (AF_XDP queues or `SO_REUSEPORT` UDP sockets) and starts the role
//! services; the library's [`pb_relay::serve`] then runs the cores ([`pb_relay::core`]) and
//! drives static mode's reloads or gossip mode from the main thread until SIGINT/SIGTERM or
//! `--seconds`, and prints the summary ([`pb_relay::report`]). Logs go through `tracing`
//! (`PB_LOG=debug`).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use pb_io::{
    PacketIo,
    afxdp::{AfXdpConfig, AfXdpIo},
    sources::{SourceFilter, StrangerPolicy},
    udp::{UdpConfig, UdpIo},
    xdp::XdpProgram,
};
use pb_mix::{LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{CoverPool, Handoff, LoopCover, PipelineConfig};
use pb_relay::{
    admin::Admin,
    config::{Backend, RelayConfig},
    core::{KeyBox, Shared},
    gossip_mode::{self, GossipDriver},
    published::Published,
    replay, roles,
    serve::{Control, MAX_LINKS, Mode, serve},
    static_mode::{self, Running},
};
use pb_sphinx::MailboxId;
use tracing::warn;

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
        /// The admin endpoint (`admin` in the configuration).
        #[arg(long, default_value = "127.0.0.1:9100")]
        admin: SocketAddr,
    },
}

fn main() {
    pb_log::init("pb-relay");
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            seconds,
            stats_interval,
        } => run(&config, seconds, stats_interval),
        Command::Keygen { out } => gossip_mode::keygen(&out).map(|pair| {
            let public = pair.public();
            println!("identity {}", hex(&public.0));
            println!("node {}", hex(&public.node_id().0));
        }),
        Command::Status { admin } => status(admin),
    };
    if let Err(error) = result {
        let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
        eprintln!("pb-relay: {}", chain.join(": "));
        std::process::exit(1);
    }
}

fn duration(name: &str, seconds: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= Duration::from_secs(365 * 24 * 3600))
        .with_context(|| format!("--{name} must be a number of seconds, at least 0"))
}

fn run(path: &Path, seconds: Option<f64>, stats_interval: f64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let config = RelayConfig::from_toml(&text, &dir)
        .with_context(|| format!("config {}", path.display()))?;
    let limit = seconds.map(|s| duration("seconds", s)).transpose()?;
    let interval = duration("stats-interval", stats_interval)?;

    // What each mode starts from: the node, its keys, its links and their loop plans, and
    // the replay filter it needs.
    let (node, epoch, keys, neighbours, plans, described, mode, plan, filter) = match &config.gossip
    {
        None => {
            let loaded = static_mode::load(path)?;
            let me = loaded.me()?;
            let role = format!("{:?}", me.role);
            let described = format!("{role}, layer {}", me.layer);
            let running = Running {
                path: path.to_owned(),
                epoch: config.epoch,
                key: loaded.key.clone(),
                previous: None,
                overlap_until: None,
                overlap: replay::overlap(config.mix.epoch_seconds),
                neighbours: loaded.neighbours(),
                format: config.format,
            };
            let admin = config.admin.map(|a| Admin::bind(a, "admin")).transpose()?;
            (
                config.node,
                config.epoch,
                running.node_keys(),
                loaded.neighbours(),
                loaded.plans(),
                described,
                Mode::Static {
                    running: Box::new(running),
                    admin,
                    role,
                },
                loaded.replay,
                pb_relay::core::static_sources(&loaded.topology, config.node),
            )
        }
        Some(settings) => {
            let plan = replay::plan(&config, replay::Ingress::gossip(settings))
                .with_context(|| format!("config {}", path.display()))?;
            let driver = GossipDriver::start(settings, config.format, config.admin)?;
            let described = format!("{:?}, gossip on {}", settings.role, settings.bind);
            (
                driver.node_id(),
                driver.epoch(),
                driver.node_keys(),
                Vec::new(),
                Vec::new(),
                described,
                Mode::Gossip(Box::new(driver)),
                plan,
                // No filter before the first topology, but a gateway limits strangers from
                // the start (its clients are all strangers).
                if settings.role == pb_control::Role::Gateway {
                    SourceFilter::new(StrangerPolicy::Limit, [])
                } else {
                    SourceFilter::default()
                },
            )
        }
    };
    let max_links = match mode {
        Mode::Static { .. } => neighbours.len().max(1),
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
    };
    let mut random = zeroize::Zeroizing::new([0u8; 64]);
    getrandom::fill(&mut random[..]).map_err(|e| anyhow!("OS randomness: {e}"))?;
    let mut cover_key = zeroize::Zeroizing::new([0u8; 32]);
    let mut loop_key = zeroize::Zeroizing::new([0u8; 32]);
    cover_key.copy_from_slice(&random[..32]);
    loop_key.copy_from_slice(&random[32..]);
    let (line_sender, lines) = std::sync::mpsc::channel();
    let mut jitter_seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut jitter_seed[..]).map_err(|e| anyhow!("OS randomness: {e}"))?;
    let replay = SharedReplayFilter::new(plan.capacity)?;
    replay::start(&replay, epoch);

    let loops = LoopMonitor::new(
        *loop_key,
        max_links,
        4096,
        Time(config.mix.loop_timeout_ms * Time::MS),
    )?;
    let mut cover = LoopCover::new(
        config.format,
        epoch,
        Vec::new(),
        loop_mailbox,
        config.mix.loop_rate,
        loops,
        *cover_key,
    )
    .with_mean_delay(config.mix.loop_delay);
    cover.set_plans(epoch, plans, Time(0));
    // Cover is built ahead on a thread of its own, so idle slots cost a core a copy.
    let origin = Instant::now();
    let clock: Arc<dyn Fn() -> Time + Send + Sync> =
        Arc::new(move || Time(origin.elapsed().as_nanos() as u64));
    let cover = CoverPool::start(
        cover,
        max_links,
        CoverPool::depth_for(config.mix.link_rate),
        clock.clone(),
        Box::new(|| {}),
    )
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
    let (roles, services) = roles::start(&config, &keys, &handoff, &stop)?;
    let shared = Shared {
        owner: Handoff::round_robin(neighbours.len(), cores),
        handoff,
        roles,
        pipeline,
        keys: KeyBox::new(keys, cores),
        links: Published::new(neighbours.clone()),
        snapshots: Mutex::new(vec![None; cores]),
        replay,
        cover,
        lines: line_sender,
        cover_on: config.mix.cover,
        realtime: config.realtime,
        timing: Mutex::new(None),
        slot_jitter: (config.mix.slot_jitter, jitter_seed),
        cpus: config.cpus.clone(),
        deliver_to: config.deliver_to,
        clock,
        stop,
        start: Instant::now(),
        interval,
        loop_watch: Mutex::new(pb_relay::loop_watch::LoopWatch::default()),
        sources: Published::new(filter),
        xdp: Mutex::new(None),
    };
    if !config.mix.cover {
        tracing::warn!(
            "mix.insecure_no_cover: no cover and no padding: every link shows its traffic (the anonymity harness's known-bad setup; never for real users)"
        );
    }
    // Real-time cores must not fault: a fault can wait for a lock a preempted thread holds.
    if config.realtime
        && let Err(e) = pb_pacing::lock_memory()
    {
        tracing::warn!(
            "slot timing: cannot lock the relay's memory ({e}): a page fault can delay a slot under load"
        );
    }
    let limits = pb_relay::core::source_limits(&config);
    let banner = format!(
        "node {} ({described}), {} links at {} pkt/s, format {:?}, {cores} core{}, replay filter {} ({} packets per epoch)",
        short(&node.0),
        neighbours.len(),
        config.mix.link_rate,
        config.format,
        if cores == 1 { "" } else { "s" },
        replay::bytes(plan.memory()),
        plan.capacity,
    );
    let control = Control {
        limit,
        reload: &reload,
        mode,
        banner,
        node,
        lines,
    };
    let result = match &config.backend {
        Backend::Udp { bind } => {
            let mut udp = UdpConfig::new(*bind);
            udp.packet_len = pb_sphinx::PACKET_LEN as u16;
            udp.reuse_port = cores > 1;
            udp.limits = limits;
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
                    warn!(
                        "io.queues binds {covered} of the {total} receive queues of {}; packets hashed to the others are dropped (xdp drop_no_socket): list them all, or reduce the queues (ethtool -L)",
                        io_config.interface
                    );
                }
            }
            let mut program = XdpProgram::attach_with(
                &io_config.interface,
                io_config.xdp_mode,
                io_config.port,
                io_config.packet_len,
                &limits,
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
            *shared
                .xdp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(program);
            let result = serve(ios, &shared, control);
            if let Some(Ok(counters)) = shared
                .xdp
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_ref()
                .map(XdpProgram::counters)
            {
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `pb-relay status`: the admin endpoint's `/status`.
fn status(admin: SocketAddr) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
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
