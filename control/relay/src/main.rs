//! `pb-relay run --config relay.toml`: runs one relay pipeline (gateway, mix or exit) over
//! AF_XDP or UDP from a static topology until SIGINT/SIGTERM or `--seconds`.
//!
//! Output (stdout, one line each, for operators and tests): every `--stats-interval` seconds
//! `window <k> link <i> sent <n> real <n> cover <n> missed <n>` per link, and at exit
//! `stat <name> <value>` for every counter. Counters only: never keys, payloads or routes.

mod config;

use std::{
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand};
use config::{Backend, RelayConfig, Topology};
use pb_io::{
    PacketIo,
    afxdp::{AfXdpConfig, AfXdpIo},
    udp::{UdpConfig, UdpIo},
    xdp::XdpProgram,
};
use pb_mix::{LinkStats, LoopMonitor, SharedReplayFilter, Time};
use pb_pipeline::{CoverPool, LoopCover, Neighbour, Pipeline, PipelineConfig, Sink};
use pb_sphinx::{DropReason, EpochKey, Hop, MailboxId, NodeKeys};

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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            config,
            seconds,
            stats_interval,
        } => run(&config, seconds, stats_interval),
    };
    if let Err(error) = result {
        let chain: Vec<String> = error.chain().map(ToString::to_string).collect();
        eprintln!("pb-relay: {}", chain.join(": "));
        std::process::exit(1);
    }
}

/// Hands delivered messages to a local UDP endpoint: `mailbox (16) ‖ message`.
struct Forwarder {
    socket: Option<(UdpSocket, SocketAddr)>,
    buffer: Vec<u8>,
}

impl Sink for Forwarder {
    fn deliver(&mut self, mailbox: MailboxId, _reply: bool, message: &[u8]) {
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

fn run(path: &PathBuf, seconds: Option<f64>, stats_interval: f64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let config = RelayConfig::from_toml(&text, &dir)
        .with_context(|| format!("config {}", path.display()))?;
    let topology_text = std::fs::read_to_string(&config.topology)
        .with_context(|| format!("cannot read topology {}", config.topology.display()))?;
    let topology = Topology::from_toml(&topology_text)
        .with_context(|| format!("topology {}", config.topology.display()))?;
    let limit = seconds.map(|s| duration("seconds", s)).transpose()?;
    let interval = duration("stats-interval", stats_interval)?;

    let key = EpochKey::from_secret(config.epoch, config.secret);
    let me = topology
        .node(config.node)
        .ok_or_else(|| anyhow!("node.id: not in the topology"))?;
    if me.public_key != key.public_key() {
        return Err(anyhow!(
            "node.secret: does not match this node's public key in the topology"
        ));
    }
    let hop = |n: &config::TopologyNode| Hop {
        node: n.id,
        public_key: n.public_key,
        delay: pb_sphinx::DelayMs(0),
    };
    let neighbours: Vec<&config::TopologyNode> = topology.neighbours(config.node);
    let routes: Vec<Vec<Hop>> = neighbours
        .iter()
        .map(|n| {
            topology
                .loop_route(config.node, n)
                .into_iter()
                .map(hop)
                .collect()
        })
        .collect();
    let loop_mailbox = MailboxId(config.node.0.map(|b| !b));
    let pipeline_config = PipelineConfig {
        neighbours: neighbours
            .iter()
            .map(|n| Neighbour {
                node: n.id,
                addr: n.addr,
            })
            .collect(),
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
    let replay = SharedReplayFilter::new(config.mix.replay_capacity)?;
    replay.prepare(config.epoch);
    let loops = LoopMonitor::new(
        loop_key,
        neighbours.len().max(1),
        4096,
        Time(config.mix.loop_timeout_ms * Time::MS),
    )?;
    let cover = LoopCover::new(
        config.format,
        config.epoch,
        routes,
        loop_mailbox,
        config.mix.loop_rate,
        loops,
        cover_key,
    );
    // Cover is built ahead on a thread of its own, so idle slots cost the pipeline a copy.
    let origin = Instant::now();
    let clock: Arc<dyn Fn() -> Time + Send + Sync> =
        Arc::new(move || Time(origin.elapsed().as_nanos() as u64));
    let cover = CoverPool::start(cover, neighbours.len(), 64, clock.clone(), Box::new(|| {}))
        .context("starting the cover builder")?;
    let sink = Forwarder {
        socket: match config.deliver_to {
            Some(to) => Some((
                UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
                    .context("deliver_to socket")?,
                to,
            )),
            None => None,
        },
        buffer: Vec::with_capacity(2048),
    };
    let keys = NodeKeys {
        current: key,
        previous: None,
        format: Some(config.format),
    };

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    let now = || clock();
    let banner = format!(
        "pb-relay: node {} ({:?}, layer {}), {} links at {} pkt/s, format {:?}",
        short(&config.node.0),
        me.role,
        me.layer,
        neighbours.len(),
        config.mix.link_rate,
        config.format
    );
    let parts = Parts {
        banner,
        config: &pipeline_config,
        keys,
        replay: &replay,
        cover,
        sink,
    };
    match &config.backend {
        Backend::Udp { bind } => {
            let mut udp = UdpConfig::new(*bind);
            udp.packet_len = pb_sphinx::PACKET_LEN as u16;
            let io = UdpIo::open(&udp).with_context(|| format!("binding {bind}"))?;
            drive(io, parts, &stop, limit, interval, now)
        }
        Backend::AfXdp(io_config) => {
            pb_io::afxdp::ifindex(&io_config.interface)?;
            let mut program = XdpProgram::attach_new(
                &io_config.interface,
                io_config.xdp_mode,
                io_config.port,
                io_config.packet_len,
            )?;
            let mut afxdp = AfXdpConfig::new(io_config.interface.clone(), io_config.queues[0]);
            afxdp.port = io_config.port;
            afxdp.packet_len = io_config.packet_len;
            afxdp.bind = io_config.bind;
            let mut io = AfXdpIo::open(&afxdp)?;
            program.register(io_config.queues[0], io.fd())?;
            for n in &pipeline_config.neighbours {
                // Learn next-hop MACs before the first slot; a neighbour that is not up yet
                // is resolved later by the backend (its packets are counted as dropped).
                let _ = io.resolve_peer(n.addr.ip(), Duration::from_secs(2));
            }
            let result = drive(io, parts, &stop, limit, interval, now);
            if let Ok(counters) = program.counters() {
                for (counter, value) in counters.iter() {
                    println!("stat xdp_{} {value}", counter.name());
                }
            }
            result
        }
    }
}

/// What a pipeline is built from, besides its backend.
struct Parts<'a> {
    /// The start-up line, printed once the backend is up.
    banner: String,
    config: &'a PipelineConfig,
    keys: NodeKeys,
    replay: &'a SharedReplayFilter,
    cover: CoverPool,
    sink: Forwarder,
}

fn drive<I: PacketIo>(
    io: I,
    parts: Parts<'_>,
    stop: &AtomicBool,
    limit: Option<Duration>,
    interval: Duration,
    now: impl Fn() -> Time,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut pipeline = Pipeline::new(
        io,
        parts.config,
        parts.keys,
        parts.replay,
        Box::new(parts.cover),
        Box::new(parts.sink),
        now(),
    )?;
    eprintln!("{}", parts.banner);
    let mut window = 0u64;
    let mut last: Vec<LinkStats> = pipeline.link_stats();
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::Relaxed) && limit.is_none_or(|l| start.elapsed() < l) {
        pipeline.step(now(), Duration::from_millis(1))?;
        if !interval.is_zero() && start.elapsed() >= interval * (window as u32 + 1) {
            let current = pipeline.link_stats();
            for (i, (c, l)) in current.iter().zip(&last).enumerate() {
                let (real, cover) = (c.real - l.real, c.cover - l.cover);
                writeln!(
                    out,
                    "window {window} link {i} sent {} real {real} cover {cover} missed {}",
                    real + cover,
                    c.missed - l.missed
                )?;
            }
            out.flush()?;
            last = current;
            window += 1;
        }
    }
    let s = pipeline.stats();
    let io = pipeline.io().stats();
    let mut lines = vec![
        ("received", s.received),
        ("forwarded", s.forwarded),
        ("delivered", s.delivered),
        ("loops_returned", s.loops_returned),
        ("cover_received", s.cover_received),
        ("replay_filter_full", s.replay_filter_full),
        ("replay_filter_no_table", s.replay_filter_no_table),
        ("dropped_no_link", s.dropped_no_link),
        ("dropped_delay_full", s.dropped_delay[0]),
        ("dropped_delay_too_long", s.dropped_delay[1]),
        ("dropped_delay_lagging", s.dropped_delay[2]),
        ("dropped_link_full", s.dropped_link_full),
        ("cover_failures", s.cover_failures),
        ("io_rx_packets", io.rx_packets),
        ("io_rx_dropped_malformed", io.rx_dropped_malformed),
        ("io_tx_packets", io.tx_packets),
        ("io_tx_dropped_no_neighbour", io.tx_dropped_no_neighbour),
    ];
    for (reason, count) in DropReason::ALL.iter().zip(s.dropped) {
        lines.push((drop_name(*reason), count));
    }
    for (name, value) in lines {
        writeln!(out, "stat {name} {value}")?;
    }
    for (i, l) in pipeline.link_stats().iter().enumerate() {
        let loops = pipeline.loop_stats(i);
        writeln!(
            out,
            "link {i} real {} cover {} missed {} dropped_full {} loops_sent {} loops_returned {} loops_lost {}",
            l.real, l.cover, l.missed, l.dropped_full, loops.sent, loops.returned, loops.lost
        )?;
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

/// The first four bytes of an id, for start-up lines.
fn short(id: &[u8; 16]) -> String {
    id[..4].iter().map(|b| format!("{b:02x}")).collect()
}
