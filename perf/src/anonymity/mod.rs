//! `pb-perf anonymity`: the adversaries of docs/threat-model.md ("What an observer
//! achieves") played against a testnet of eight pb-relay processes on AF_XDP in network
//! namespaces and `--clients` pb-client processes, with the figures each adversary gets.
//!
//! The run has three phases of `--seconds` each, recorded by one observer of every link
//! ([`pb_testbed::Capture`] on the bridge: every frame any node sends, with the kernel's
//! timestamp):
//!
//! 1. *idle*: every client connected, nobody fetching;
//! 2. *busy*: every other client fetches `--fetch-kib` from a server of its own, again and
//!    again, at random times (exponential gaps); the others stay idle;
//! 3. *cpu-hog*: idle again, while a thread per CPU of this machine spins (an unrelated
//!    load, at normal priority).
//!
//! Then three adversaries read the recording:
//!
//! - [`gpa`]: a global passive observer compares every link direction (relay links, client
//!   uplinks and downlinks) idle against busy and idle against cpu-hog: packets per second
//!   per window (Mann-Whitney), sizes (chi-squared), inter-send gaps (Kolmogorov-Smirnov),
//!   gap variance (Brown-Forsythe) and gap autocorrelation (Fisher z), each corrected over
//!   the link directions (Holm); rows `gpa.<statistic>` give the smallest corrected p-value
//!   and the effect size where it is.
//! - [`flows`]: a flow-correlation attacker who sees every client's access link and every
//!   exit connection ranks, for each exit connection, the clients by windowed volume
//!   cross-correlation with a lag search (MixMatch's statistical matcher); rows give the
//!   true-positive rate at 1% and 10% false positives, and `--svg` draws the ROC curve.
//! - [`entropy`]: Loopix's metric, the entropy of the sender distribution that an observer of
//!   every link computes for each packet reaching the exit, given the mixing delays.
//!
//! It also checks the machine's headroom, which the figures depend on: CPU idle per phase
//! (from `/proc/stat`) and the slots the relays missed (their `window` lines). The testbed
//! has few cores, so the rates are scaled down (`--link-rate`, the clients' `low-power`
//! profile) and printed with the results.
//!
//! `--insecure-no-cover` runs the known-bad configuration (relays and clients without cover
//! or padding), where every adversary must win: the harness's own check that it can see.
//! Traffic stays inside the testbed's namespaces.

mod correlation;
mod entropy;
mod stats;

use std::{
    collections::{BTreeMap, HashMap},
    net::{SocketAddr, SocketAddrV4},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use pb_testbed::{Capture, Frame};
use pb_testnet::{
    Backend, FileServer, Network, Node, PACKET_PORT, Testnet, binary, interrupted, pattern,
};
use serde_json::json;

use crate::{
    progress::Progress,
    report::{Measurement, row},
};

/// Relays of the testnet: a gateway, three mix layers of two, an exit.
const RELAYS: usize = 8;
/// The first clients' server port (client `k` fetches from port `SERVER_PORT + k`).
const SERVER_PORT: u16 = 8000;
/// Mean per-hop delay the clients ask for (their profiles'), which the entropy observer
/// assumes.
const MEAN_DELAY: f64 = 0.020;
/// The flow matchers' window, their lag search (the client's downlink follows the exit's
/// bytes), and the covariance matcher's span (windows of the client's volume summed).
const FLOW_WINDOW: f64 = 0.5;
const FLOW_MAX_LAG: usize = 2;
const FLOW_SPAN: usize = 2;
/// The observer's rate window.
const RATE_WINDOW: f64 = 1.0;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct AnonymityArgs {
    /// Seconds per phase.
    pub seconds: f64,
    /// pb-client processes.
    pub clients: usize,
    /// Packets per second on every relay link.
    pub link_rate: u32,
    /// The clients' profile.
    pub profile: String,
    /// Bytes of each fetch, in KiB.
    pub fetch_kib: usize,
    /// The known-bad configuration: no cover, no padding.
    pub insecure_no_cover: bool,
    /// Where the ROC chart goes.
    pub svg: Option<PathBuf>,
    /// Seeds the busy clients' fetch times.
    pub seed: u64,
    /// Where to write the observer's recording (CSV), if anywhere.
    pub record: Option<PathBuf>,
    /// Where the relays' and clients' logs go, if anywhere.
    pub log_dir: Option<PathBuf>,
}

/// One phase's span on the capture's clock (ns since the Unix epoch) and what the machine
/// did meanwhile.
#[derive(Debug, Clone, Copy, Default)]
struct Phase {
    from: u64,
    to: u64,
    cpu_idle: f64,
    /// CPU time the hypervisor ran something else while this machine's CPUs had work
    /// (`/proc/stat`'s steal), in ms summed over the CPUs; 0 on bare metal.
    steal_ms: f64,
    missed: u64,
}

/// A tiny deterministic generator (splitmix64): the fetch schedule, and the modules' tests'
/// data.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[cfg(test)]
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Exponential with mean `mean`.
    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * self.unit().ln()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Idle, stolen and total jiffies of every CPU (`/proc/stat`'s `cpu` line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CpuTimes {
    idle: u64,
    steal: u64,
    total: u64,
}

impl CpuTimes {
    fn now() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
    }

    /// From `/proc/stat`'s text: `cpu user nice system idle iowait irq softirq steal …`.
    fn parse(text: &str) -> Self {
        let fields: Vec<u64> = text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        Self {
            idle: field(3) + field(4),
            steal: field(7),
            total: fields.iter().sum(),
        }
    }
}

/// Milliseconds per jiffy of `/proc/stat` (`USER_HZ`, 100 on every Linux architecture).
const MS_PER_JIFFY: f64 = 10.0;

/// Slots every relay has reported missed so far (its `window` lines).
fn missed_slots(net: &Testnet) -> u64 {
    net.relays()
        .flat_map(|relay| relay.lines_with("window "))
        .filter_map(|line| line.split_whitespace().nth(7)?.parse::<u64>().ok())
        .sum()
}

/// Runs `during` as a phase: its span and the machine's headroom meanwhile.
fn phase(net: &Testnet, during: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<Phase> {
    let before = CpuTimes::now();
    let missed0 = missed_slots(net);
    let from = now_ns();
    during()?;
    let to = now_ns();
    let after = CpuTimes::now();
    Ok(Phase {
        from,
        to,
        cpu_idle: 100.0 * after.idle.saturating_sub(before.idle) as f64
            / after.total.saturating_sub(before.total).max(1) as f64,
        steal_ms: MS_PER_JIFFY * after.steal.saturating_sub(before.steal) as f64,
        missed: missed_slots(net).saturating_sub(missed0),
    })
}

fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the harness.
///
/// # Errors
/// Not root, a process cannot start, or the testnet fails.
pub fn run(args: &AnonymityArgs) -> anyhow::Result<Vec<Measurement>> {
    if let Err(why) = pb_testbed::privileged() {
        bail!("pb-perf anonymity needs network namespaces and AF_XDP: {why}");
    }
    if args.clients < 2 {
        bail!("--clients: at least 2 (one busy, one idle)");
    }
    pb_testnet::stop_on_signals()?;
    let progress = Progress::new("anonymity", 6 + args.clients);
    progress.step("starting eight relays (AF_XDP, namespaces)");
    let network = Network::builder()
        .relays(RELAYS)
        .netns("pbanon")
        .backend(Backend::AfXdp)
        .link_rate(args.link_rate)
        .loop_rate(1)
        .stats_interval(1.0)
        .insecure_no_cover(args.insecure_no_cover);
    let network = match &args.log_dir {
        Some(dir) => network.log_dir(dir),
        None => network,
    }
    .build()?;
    let mut net = Testnet::start(network)?;
    let body = Arc::new(pattern(args.fetch_kib * 1024));
    let mut servers = Vec::new();
    for k in 0..args.clients {
        let port = SERVER_PORT + u16::try_from(k).context("--clients: too many")?;
        servers.push(FileServer::start(
            net.listen(Node::Web, port)?,
            body.clone(),
        )?);
    }
    net.wait_for_agreement(Duration::from_secs(60))?;
    let client_binary = binary("pb-client")?;
    let mut listens = Vec::new();
    for k in 0..args.clients {
        progress.step(&format!("starting pb-client {} of {}", k + 1, args.clients));
        let listen: SocketAddr = ([127, 0, 0, 1], 1081 + k as u16).into();
        let mut command = net.client_command(&client_binary);
        command.args([
            "--listen",
            &listen.to_string(),
            "--profile",
            &args.profile,
            "--transport",
            "udp",
        ]);
        if args.insecure_no_cover {
            command.arg("--insecure-no-cover");
        }
        net.start_client(&format!("client-{k}"), command, Duration::from_secs(60))?;
        listens.push(listen);
        check_interrupted()?;
    }
    // One fetch each first: sessions open, SURBs stocked, the exit's connections known.
    progress.step("one fetch per client to warm up");
    let client_ns = net.netns(Node::Client).context("the clients' namespace")?;
    thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = listens
            .iter()
            .zip(&servers)
            .map(|(listen, server)| {
                let (listen, server) = (*listen, server.addr());
                scope.spawn(move || {
                    client_ns.in_netns(|| pb_testnet::fetch(Some(listen), server, 1024))
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a warm-up fetch panicked"))???;
        }
        Ok(())
    })?;
    thread::sleep(Duration::from_secs(3));
    let switch = net.switch().context("the testbed's switch namespace")?;
    let capture = Capture::start(switch)?;
    let span = Duration::from_secs_f64(args.seconds);
    progress.step(&format!("idle: {} s", args.seconds));
    let idle = phase(&net, || sleep_checked(span))?;
    progress.step(&format!(
        "busy: {} s, every other client fetching at random times",
        args.seconds
    ));
    let mut random = Random(args.seed);
    let fetched = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let busy = phase(&net, || {
        let until = Instant::now() + span;
        thread::scope(|scope| {
            for (k, (listen, server)) in listens.iter().zip(&servers).enumerate() {
                if k % 2 == 1 {
                    continue;
                }
                let (listen, server) = (*listen, server.addr());
                let mut random = Random(random.next());
                let bytes = args.fetch_kib * 1024;
                let (fetched, failed) = (fetched.clone(), failed.clone());
                let mean = args.seconds / 6.0;
                scope.spawn(move || {
                    let mut at = Instant::now() + Duration::from_secs_f64(random.exponential(mean));
                    while at < until && !interrupted() {
                        thread::sleep(at.saturating_duration_since(Instant::now()));
                        if client_ns
                            .in_netns(|| fetch(listen, server, bytes))
                            .is_ok_and(|r| r.is_ok())
                        {
                            fetched.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        at = Instant::now() + Duration::from_secs_f64(random.exponential(mean));
                    }
                });
            }
            thread::sleep(until.saturating_duration_since(Instant::now()));
        });
        Ok(())
    })?;
    check_interrupted()?;
    // Fetches that ran past the phase have finished; let the links drain.
    thread::sleep(Duration::from_secs(3));
    progress.step(&format!(
        "cpu-hog: {} s, a spinning thread per CPU",
        args.seconds
    ));
    let hog = phase(&net, || {
        let stop = AtomicBool::new(false);
        thread::scope(|scope| {
            for _ in 0..pb_testbed::cpu_count() {
                scope.spawn(|| {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1),
                            );
                        }
                    }
                });
            }
            let done = sleep_checked(span);
            stop.store(true, Ordering::Relaxed);
            done
        })
    })?;
    let recording = capture.stop()?;
    drop(progress);
    let link = match net.network().client_link() {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(_) => bail!("the testnet's client link is IPv6"),
    };
    let ports: Vec<Option<u16>> = (0..args.clients)
        .map(|k| {
            let pid = net.process(k)?.child.id();
            let ports = crate::procfs::udp_ports_to(pid, link);
            (ports.len() == 1).then(|| ports[0])
        })
        .collect();
    let fetches = fetched.load(Ordering::Relaxed);
    let mut frames = recording.frames;
    frames.sort_by_key(|f| f.ns);
    let view = View::of(net.network(), link, &ports);
    if let Some(path) = &args.record {
        write_recording(path, &frames, &view, [idle, busy, hog])
            .with_context(|| format!("--record {}", path.display()))?;
    }
    let scale = json!(format!(
        "{} relays, {} pkt/s per link, {} clients ({}), {} KiB fetches, {} s phases",
        RELAYS, args.link_rate, args.clients, args.profile, args.fetch_kib, args.seconds
    ));
    let implementation = if args.insecure_no_cover {
        "no-cover (known bad)"
    } else {
        "phantomband"
    };
    let mut rows = Vec::new();
    for (name, p) in [("idle", idle), ("busy", busy), ("cpu-hog", hog)] {
        rows.push(row(
            "headroom.cpu_idle",
            implementation,
            &[("phase", json!(name)), ("scale", scale.clone())],
            p.cpu_idle.round(),
            "%",
        ));
        rows.push(row(
            "headroom.steal",
            implementation,
            &[("phase", json!(name)), ("scale", scale.clone())],
            p.steal_ms,
            "ms",
        ));
        rows.push(row(
            "headroom.missed_slots",
            implementation,
            &[("phase", json!(name)), ("scale", scale.clone())],
            p.missed as f64,
            "slots",
        ));
    }
    rows.push(row(
        "headroom.capture_dropped",
        implementation,
        &[("frames", json!(frames.len()))],
        recording.dropped as f64,
        "frames",
    ));
    rows.push(row(
        "busy.fetches",
        implementation,
        &[
            ("kib", json!(args.fetch_kib)),
            ("failed", json!(failed.load(Ordering::Relaxed))),
        ],
        fetches as f64,
        "fetches",
    ));
    rows.extend(gpa::rows(
        &view,
        &frames,
        idle,
        busy,
        hog,
        implementation,
        &scale,
    ));
    let (flow_rows, curve) =
        flows::rows(&view, &frames, busy.from, hog.from, implementation, &scale);
    rows.extend(flow_rows);
    rows.extend(entropy_rows(
        &view,
        &frames,
        idle.from,
        hog.from,
        busy.from,
        implementation,
        &scale,
    ));
    if let Some(dir) = &args.svg {
        std::fs::create_dir_all(dir)?;
        let diagonal = vec![(0.0, 0.0), (1.0, 1.0)];
        let svg = crate::plot::line_chart(
            "Flow correlation: ROC (exit connection to client)",
            "false-positive rate",
            "true-positive rate",
            &[
                (implementation.to_owned(), curve),
                ("chance".to_owned(), diagonal),
            ],
        );
        let path = dir.join("anonymity-roc.svg");
        std::fs::write(&path, svg).with_context(|| path.display().to_string())?;
    }
    Ok(rows)
}

/// The longest a busy client's fetch may take before it counts as failed (so that a stuck
/// fetch cannot stretch the busy phase).
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// One fetch of `bytes` from `server` through the SOCKS5 proxy at `proxy`, given up after
/// [`FETCH_TIMEOUT`] without progress.
fn fetch(proxy: SocketAddr, server: SocketAddr, bytes: usize) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let SocketAddr::V4(server) = server else {
        bail!("an IPv4 server");
    };
    let mut stream = pb_testnet::socks_connect(proxy, server)?;
    stream.set_read_timeout(Some(FETCH_TIMEOUT))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: pb-testnet\r\n\r\n")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        let n = stream.read(&mut buf).context("reading the fetch")?;
        if n == 0 {
            break;
        }
        got += n;
    }
    if got < bytes {
        bail!("{got} of {bytes} bytes");
    }
    Ok(())
}

/// The observer's recording as CSV: a header naming the phases' spans and the clients'
/// access links (`# client <k> <port>`), then one line per frame (`ns,src,dst,protocol,
/// ip_len,payload`). For analyses the harness does not make; holds the testbed's addresses
/// only.
fn write_recording(
    path: &std::path::Path,
    frames: &[Frame],
    view: &View,
    phases: [Phase; 3],
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (name, p) in ["idle", "busy", "cpu-hog"].iter().zip(phases) {
        writeln!(out, "# phase {name} {} {}", p.from, p.to)?;
    }
    for (k, c) in view.clients.iter().enumerate() {
        writeln!(out, "# client {k} {}", c.port())?;
    }
    writeln!(out, "ns,src,dst,protocol,ip_len,payload")?;
    for f in frames {
        writeln!(
            out,
            "{},{},{},{},{},{}",
            f.ns, f.src, f.dst, f.protocol, f.len, f.payload
        )?;
    }
    Ok(())
}

fn sleep_checked(span: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + span;
    while Instant::now() < until {
        check_interrupted()?;
        thread::sleep(
            until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200)),
        );
    }
    Ok(())
}

/// Who is who on the recording.
struct View {
    /// Relay `i`'s address.
    relays: Vec<std::net::Ipv4Addr>,
    /// The gateway's client-link endpoint.
    client_link: SocketAddrV4,
    /// The clients' namespace address.
    client_ip: std::net::Ipv4Addr,
    /// The web servers' address.
    web_ip: std::net::Ipv4Addr,
    /// Client `k`'s access-link endpoint (its UDP port; the unspecified address where it
    /// could not be read).
    clients: Vec<SocketAddrV4>,
}

/// Where a frame belongs for the observer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Hop {
    /// Relay `i` to relay `j`.
    Relays(usize, usize),
    /// Client `k` to the gateway.
    Up(usize),
    /// The gateway to client `k`.
    Down(usize),
}

impl Hop {
    fn name(self) -> String {
        match self {
            Self::Relays(i, j) => format!("relay {i} to relay {j}"),
            Self::Up(k) => format!("client {k} up"),
            Self::Down(k) => format!("client {k} down"),
        }
    }
}

impl View {
    fn of(network: &Network, client_link: SocketAddrV4, ports: &[Option<u16>]) -> Self {
        let v4 = |node| network.address(node);
        let client_ip = v4(Node::Client);
        let unknown = ports.iter().filter(|p| p.is_none()).count();
        if unknown > 0 {
            eprintln!(
                "pb-perf anonymity: the access link of {unknown} clients was not found; they are left out"
            );
        }
        Self {
            relays: (0..RELAYS).map(|i| v4(Node::Relay(i))).collect(),
            client_link,
            client_ip,
            web_ip: v4(Node::Web),
            clients: ports
                .iter()
                .map(|p| {
                    p.map_or(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0), |p| {
                        SocketAddrV4::new(client_ip, p)
                    })
                })
                .collect(),
        }
    }

    fn relay(&self, ip: std::net::Ipv4Addr) -> Option<usize> {
        self.relays.iter().position(|r| *r == ip)
    }

    fn client(&self, endpoint: SocketAddrV4) -> Option<usize> {
        self.clients.iter().position(|c| *c == endpoint)
    }

    /// The link direction `frame` travels, if it is one the observer studies.
    fn hop(&self, frame: &Frame) -> Option<Hop> {
        if frame.protocol != 17 {
            return None;
        }
        if frame.src.port() == PACKET_PORT && frame.dst.port() == PACKET_PORT {
            return Some(Hop::Relays(
                self.relay(*frame.src.ip())?,
                self.relay(*frame.dst.ip())?,
            ));
        }
        if frame.dst == self.client_link && frame.src.ip() == &self.client_ip {
            return self.client(frame.src).map(Hop::Up);
        }
        if frame.src == self.client_link && frame.dst.ip() == &self.client_ip {
            return self.client(frame.dst).map(Hop::Down);
        }
        None
    }
}

/// Seconds since `origin` of `ns`.
fn seconds(ns: u64, origin: u64) -> f64 {
    ns.saturating_sub(origin) as f64 / 1e9
}

/// The global passive observer.
mod gpa {
    use super::*;

    /// One link direction in one phase.
    #[derive(Default)]
    struct Sample {
        times: Vec<f64>,
        sizes: Vec<u64>,
    }

    impl Sample {
        fn gaps_ms(&self) -> Vec<f64> {
            self.times.windows(2).map(|w| (w[1] - w[0]) * 1e3).collect()
        }

        fn rates(&self, length: f64) -> Vec<f64> {
            let windows = (length / RATE_WINDOW).floor() as usize;
            let mut counts = vec![0.0; windows];
            for t in &self.times {
                if let Some(c) = counts.get_mut((t / RATE_WINDOW) as usize) {
                    *c += 1.0;
                }
            }
            counts
        }
    }

    fn samples(view: &View, frames: &[Frame], phase: Phase) -> BTreeMap<Hop, Sample> {
        let mut out: BTreeMap<Hop, Sample> = BTreeMap::new();
        for f in frames
            .iter()
            .filter(|f| (phase.from..phase.to).contains(&f.ns))
        {
            if let Some(hop) = view.hop(f) {
                let s = out.entry(hop).or_default();
                s.times.push(seconds(f.ns, phase.from));
                s.sizes.push(u64::from(f.len));
            }
        }
        out
    }

    /// The statistics, each a test of two samples of one link direction.
    const STATISTICS: [&str; 5] = [
        "rate",
        "size",
        "gap_ks",
        "gap_variance",
        "gap_autocorrelation",
    ];

    fn tests(a: &Sample, b: &Sample, la: f64, lb: f64) -> [stats::Outcome; 5] {
        let (ga, gb) = (a.gaps_ms(), b.gaps_ms());
        [
            stats::mann_whitney(&a.rates(la), &b.rates(lb)),
            stats::chi_square_categories(&a.sizes, &b.sizes),
            stats::ks(&ga, &gb),
            stats::gap_spread(&ga, &gb),
            stats::autocorrelation(&ga, &gb, 1),
        ]
    }

    pub(super) fn rows(
        view: &View,
        frames: &[Frame],
        idle: Phase,
        busy: Phase,
        hog: Phase,
        implementation: &str,
        scale: &serde_json::Value,
    ) -> Vec<Measurement> {
        let length = |p: Phase| (p.to - p.from) as f64 / 1e9;
        let base = samples(view, frames, idle);
        let mut rows = Vec::new();
        // The gaps' spread per phase: the signal a variance test reads.
        for (name, phase) in [("idle", idle), ("busy", busy), ("cpu-hog", hog)] {
            let sample = samples(view, frames, phase);
            let sds: Vec<f64> = sample
                .values()
                .map(|s| stats::std_dev(&s.gaps_ms()))
                .collect();
            let means: Vec<f64> = sample.values().map(|s| stats::mean(&s.gaps_ms())).collect();
            rows.push(row(
                "gpa.gap_mean_median",
                implementation,
                &[("phase", json!(name)), ("links", json!(means.len()))],
                (crate::report::median(means) * 1000.0).round() / 1000.0,
                "ms",
            ));
            rows.push(row(
                "gpa.gap_sd_median",
                implementation,
                &[("phase", json!(name)), ("links", json!(sds.len()))],
                (crate::report::median(sds) * 1000.0).round() / 1000.0,
                "ms",
            ));
        }
        for (compare, other) in [("idle_vs_busy", busy), ("idle_vs_cpu_hog", hog)] {
            let sample = samples(view, frames, other);
            let mut outcomes: Vec<(Hop, [stats::Outcome; 5])> = Vec::new();
            for (hop, a) in &base {
                let Some(b) = sample.get(hop) else {
                    continue;
                };
                if a.times.len() < 20 || b.times.len() < 20 {
                    continue;
                }
                outcomes.push((*hop, tests(a, b, length(idle), length(other))));
            }
            for (i, statistic) in STATISTICS.iter().enumerate() {
                let raw: Vec<f64> = outcomes.iter().map(|o| o.1[i].p).collect();
                let corrected = stats::holm(&raw);
                let Some((at, p)) = corrected
                    .iter()
                    .enumerate()
                    .min_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(at, p)| (at, *p))
                else {
                    continue;
                };
                let (hop, outcome) = (outcomes[at].0, outcomes[at].1[i]);
                rows.push(row(
                    &format!("gpa.{statistic}"),
                    implementation,
                    &[
                        ("compare", json!(compare)),
                        ("correction", json!("holm")),
                        ("link_directions", json!(outcomes.len())),
                        ("where", json!(hop.name())),
                        ("effect", json!((outcome.effect * 1e4).round() / 1e4)),
                        ("scale", scale.clone()),
                    ],
                    p,
                    "p",
                ));
            }
        }
        rows
    }
}

/// The flow-correlation attacker.
mod flows {
    use super::*;

    /// What the main rows' matcher does.
    const MATCHER: &str = "windowed volume covariance with lag search: the client's downlink volume beyond its mean right after the exit connection's bytes";

    /// Rows and the ROC curve. Exit connections are the web servers' TCP data towards the
    /// exit between `from` and `to` (the busy phase and its drain); which client made each
    /// is known from its server's port (ground truth the attacker does not get).
    pub(super) fn rows(
        view: &View,
        frames: &[Frame],
        from: u64,
        to: u64,
        implementation: &str,
        scale: &serde_json::Value,
    ) -> (Vec<Measurement>, Vec<(f64, f64)>) {
        let windows = (seconds(to, from) / FLOW_WINDOW).floor() as usize;
        let origin = from as f64 / 1e9;
        let mut exit: HashMap<(u16, SocketAddrV4), Vec<(f64, u32)>> = HashMap::new();
        let mut access: Vec<Vec<(f64, u32)>> = vec![Vec::new(); view.clients.len()];
        for f in frames.iter().filter(|f| (from..to).contains(&f.ns)) {
            let t = f.ns as f64 / 1e9 - origin;
            if f.protocol == 6 && f.src.ip() == &view.web_ip && f.payload > 0 {
                exit.entry((f.src.port(), f.dst))
                    .or_default()
                    .push((t, u32::from(f.payload)));
            } else if let Some(Hop::Down(k)) = view.hop(f) {
                access[k].push((t, u32::from(f.payload)));
            }
        }
        let series: Vec<Vec<f64>> = access
            .iter()
            .map(|events| correlation::volume_series(events, 0.0, FLOW_WINDOW, windows))
            .collect();
        // The ground truth, which the attacker does not get: a connection's server port
        // says which client made it, and each client's access link is its pb-client's UDP
        // socket (read from /proc).
        let mut scored = Vec::new();
        let mut pearson = Vec::new();
        let mut top1 = 0usize;
        let mut connections = 0usize;
        for ((port, _), events) in &exit {
            let Some(truth) = port.checked_sub(SERVER_PORT).map(usize::from) else {
                continue;
            };
            if truth >= series.len() {
                continue;
            }
            let flow = correlation::volume_series(events, 0.0, FLOW_WINDOW, windows);
            connections += 1;
            let scores: Vec<f64> = series
                .iter()
                .map(|s| correlation::lagged_covariance(&flow, s, FLOW_MAX_LAG, FLOW_SPAN))
                .collect();
            for (k, s) in series.iter().enumerate() {
                let r = correlation::best_lagged_correlation(&flow, s, FLOW_MAX_LAG);
                pearson.push((r, k == truth));
            }
            let best = scores
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k);
            // A tie for the best score is no identification.
            let tied = scores
                .iter()
                .filter(|s| Some(**s) == best.map(|b| scores[b]))
                .count();
            if best == Some(truth) && tied == 1 {
                top1 += 1;
            }
            for (k, score) in scores.into_iter().enumerate() {
                scored.push((score, k == truth));
            }
        }
        let curve = correlation::roc(&scored);
        let pearson_curve = correlation::roc(&pearson);
        let params = |extra: (&'static str, serde_json::Value)| {
            vec![
                ("exit_connections", json!(connections)),
                ("clients", json!(series.len())),
                ("window_s", json!(FLOW_WINDOW)),
                ("max_lag_windows", json!(FLOW_MAX_LAG)),
                extra,
                ("scale", scale.clone()),
            ]
        };
        let mut rows = Vec::new();
        for (name, fpr) in [
            ("correlation.tpr_at_fpr_0.01", 0.01),
            ("correlation.tpr_at_fpr_0.10", 0.10),
        ] {
            rows.push(row(
                name,
                implementation,
                &params(("matcher", json!(MATCHER))),
                (correlation::tpr_at_fpr(&curve, fpr) * 1e4).round() / 1e4,
                "rate",
            ));
        }
        rows.push(row(
            "correlation.auc",
            implementation,
            &params(("matcher", json!(MATCHER))),
            (correlation::auc(&curve) * 1e4).round() / 1e4,
            "auc",
        ));
        rows.push(row(
            "correlation.pearson_auc",
            implementation,
            &params((
                "matcher",
                json!("Pearson correlation with lag search (MixMatch's; weaker on sparse series)"),
            )),
            (correlation::auc(&pearson_curve) * 1e4).round() / 1e4,
            "auc",
        ));
        rows.push(row(
            "correlation.top1",
            implementation,
            &params(("chance", json!(1.0 / series.len().max(1) as f64))),
            if connections == 0 {
                0.0
            } else {
                (top1 as f64 / connections as f64 * 1e4).round() / 1e4
            },
            "rate",
        ));
        (rows, curve)
    }
}

/// Loopix's entropy metric over the recording from `from` to `to`, counting packets that
/// reach the exit from `count_from` on.
fn entropy_rows(
    view: &View,
    frames: &[Frame],
    from: u64,
    to: u64,
    count_from: u64,
    implementation: &str,
    scale: &serde_json::Value,
) -> Vec<Measurement> {
    let mut propagator = entropy::Propagator::new(view.clients.len(), RELAYS, MEAN_DELAY);
    let mut marked = false;
    for f in frames.iter().filter(|f| (from..to).contains(&f.ns)) {
        if !marked && f.ns >= count_from {
            propagator.mark(RELAYS - 1);
            marked = true;
        }
        let Some(hop) = view.hop(f) else {
            continue;
        };
        let t = seconds(f.ns, from);
        let (a, b) = match hop {
            Hop::Relays(i, j) => (entropy::Node::Relay(i), entropy::Node::Relay(j)),
            Hop::Up(k) => (entropy::Node::Client(k), entropy::Node::Relay(0)),
            Hop::Down(k) => (entropy::Node::Relay(0), entropy::Node::Client(k)),
        };
        propagator.frame(t, a, b);
    }
    let values = propagator.entropies();
    let max = (view.clients.len().max(1) as f64).log2();
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    let params = |what: &str| {
        vec![
            ("of", json!(what)),
            ("packets", json!(values.len())),
            ("max_bits", json!(round(max))),
            ("mean_delay_ms", json!(MEAN_DELAY * 1e3)),
            ("without_clients", json!(propagator.without_clients())),
            ("late_frames", json!(propagator.late_frames())),
            ("scale", scale.clone()),
        ]
    };
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let p10 = sorted.get(sorted.len() / 10).copied().unwrap_or(0.0);
    let mut rows = vec![
        row(
            "entropy.median_bits",
            implementation,
            &params("packets reaching the exit"),
            round(entropy::median(values)),
            "bits",
        ),
        row(
            "entropy.p10_bits",
            implementation,
            &params("packets reaching the exit"),
            round(p10),
            "bits",
        ),
    ];
    for (i, count) in entropy::histogram(values, 8, max).iter().enumerate() {
        rows.push(row(
            "entropy.histogram",
            implementation,
            &[
                ("bin", json!(i)),
                ("from_bits", json!(round(max * i as f64 / 8.0))),
            ],
            *count as f64,
            "packets",
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::CpuTimes;

    #[test]
    fn cpu_times_read_idle_steal_and_total_from_proc_stat() {
        let text = "cpu  6385921 412887 1120899 3208059 51826 0 85160 7975 0 0\n\
                    cpu0 3137615 203408 551108 1702262 14032 0 41520 3928 0 0\n";
        assert_eq!(
            CpuTimes::parse(text),
            CpuTimes {
                idle: 3_208_059 + 51_826,
                steal: 7_975,
                total: 6_385_921 + 412_887 + 1_120_899 + 3_208_059 + 51_826 + 85_160 + 7_975,
            }
        );
        // A kernel without the steal field (before 2.6.11) or an unreadable file: no steal.
        assert_eq!(CpuTimes::parse("cpu 1 2 3 4 5").steal, 0);
        assert_eq!(CpuTimes::parse(""), CpuTimes::default());
    }
}
