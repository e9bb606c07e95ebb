//! `pb-perf transports`: the same fetch through the mixnet over each transport of the client
//! link (docs/spec/transports.md), side by side with plain UDP in one run. Eight `pb-relay`
//! processes in network namespaces on AF_XDP (a gateway listening on plain UDP, QUIC, WSS,
//! obfs4 and DNS; three mix layers of two; an exit), an HTTP file server in the web node,
//! with doh unbound as the DoH resolver in a node of its own, and, one transport after the
//! other, `pb-client --transport <t>` in the client's namespace. Per
//! transport, `--fetches` fetches of `--size` bytes one after the other through its SOCKS5
//! port, by a name the exit resolves from its hosts file (`/etc/netns/<exit>/hosts`, written
//! for the run and removed afterwards). Rows, `impl` the transport:
//!
//! - `transport.ttfb`: from the SOCKS5 connect to the first byte of the answer (median, ms);
//! - `transport.download`: the body's bytes over the whole fetch (median, KiB/s);
//! - `transport.overhead`: bytes on the access link (the client namespace's interfaces,
//!   received and sent, Ethernet frames) over the fetches' window, per body byte;
//! - `transport.cpu_per_mb`: CPU seconds (user + system) of pb-client (`side: client`) and of
//!   the gateway's relay process (`side: gateway`) over the same window, per MB (10^6 bytes)
//!   of body.
//!
//! With doh, the DNS carrier alone is measured too, at each of `--doh-rates` queries a
//! second (`crate::doh_carrier`: `transport.doh_carrier`, KB/s each way).
//!
//! The client link runs at a constant rate whatever it carries, so the overhead and the CPU
//! per MB are mostly the link's (and the gateway's other links') cost per second times the
//! fetch's duration: a slower fetch costs more per byte. A gateway keeps a gone client's
//! link (and sends its downlink) until the link's idle timeout (`LINK_IDLE`): before each transport
//! the run waits (`--settle`, at most) until the gateway holds no link and the access link
//! is quiet, so that one transport's leftovers do not count against the next.
//!
//! Needs root. Not here: assertions on speed (docs/perf.md holds the figures and the
//! command), the disguises' look on the wire (`client-lite/client/tests/transports.rs`).

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use pb_testbed::Netns;
use pb_testnet::{FileServer, Network, Node, Testnet, binary, interrupted, pattern};
use serde_json::json;

use crate::{
    progress::Progress,
    report::{Measurement, median, row},
};

/// What carries the client link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Plain UDP datagrams, the reference.
    Udp,
    /// QUIC presenting as HTTP/3.
    Quic,
    /// WebSocket over TLS.
    Wss,
    /// obfs4, at the gateway's iat-mode (`--obfs4-iat-mode`).
    Obfs4,
    /// DNS queries through the testnet's DoH resolver (unbound) to the gateway's name server.
    Doh,
}

impl Transport {
    /// The name pb-client takes (`--transport`) and the rows' `impl`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Quic => "quic",
            Transport::Wss => "wss",
            Transport::Obfs4 => "obfs4",
            Transport::Doh => "doh",
        }
    }

    /// The rows' `impl`: the name, and obfs4's iat-mode (`obfs4-iat2`).
    pub fn label(self, obfs4_iat_mode: u8) -> String {
        match self {
            Transport::Obfs4 => format!("obfs4-iat{obfs4_iat_mode}"),
            other => other.name().to_owned(),
        }
    }
}

/// Settings of a run.
pub struct TransportsArgs {
    /// The transports, in the order they are measured.
    pub transports: Vec<Transport>,
    /// Fetches per transport (the medians are reported).
    pub fetches: usize,
    /// Bytes of each fetch's body.
    pub size: usize,
    /// The longest wait, before each transport, for the gateway to close the last client's
    /// link and the access link to go quiet (zero: no wait).
    pub settle: Duration,
    /// Whether stdout carries JSON rows (then the side-by-side summary goes to stderr).
    pub json: bool,
    /// The gateway's obfs4 iat-mode (0, 1 or 2), and so its clients'.
    pub obfs4_iat_mode: u8,
    /// With doh: the DNS carrier alone at each of these query rates (empty: not measured).
    pub doh_rates: Vec<u32>,
    /// How long each of those measurements lasts.
    pub doh_seconds: Duration,
}

const RELAYS: usize = 8;
const EXIT: Node = Node::Relay(RELAYS - 1);
/// The name the exit resolves to the web node (from its hosts file).
const SERVER_NAME: &str = "web.pb.test";
/// pb-client's SOCKS5 port in its namespace for the first transport (the next ones count up).
const FIRST_SOCKS_PORT: u16 = 21180;
/// How long each client is watched idle, after it is ready and before its fetches.
const IDLE: Duration = Duration::from_secs(3);
/// The access link is quiet when it carries less than this many bytes a second (ARP and
/// the like; one record a second each way would be more).
const QUIET_BYTES_PER_SECOND: u64 = 2_000;
/// MB in the `cpu_s/MB` rows.
const MB: f64 = 1e6;

/// Runs the benchmark; see the module docs.
pub fn run(args: &TransportsArgs) -> anyhow::Result<Vec<Measurement>> {
    pb_testbed::privileged().map_err(|reason| {
        anyhow!("pb-perf transports runs a testnet in network namespaces and needs root: {reason}")
    })?;
    if args.transports.is_empty() {
        bail!("--transports: name at least one of udp, quic, wss, obfs4, doh");
    }
    let client_bin = binary("pb-client")?;
    let clock_ticks = clock_ticks()?;
    pb_testnet::stop_on_signals()?;
    let network = Network::builder()
        .relays(RELAYS)
        .netns("pbtra")
        .backend(pb_testnet::Backend::AfXdp)
        .loop_rate(1)
        .admin(true)
        .obfs4_iat_mode(args.obfs4_iat_mode)
        .resolver(args.transports.contains(&Transport::Doh))
        .build()?;
    let progress = Progress::new(
        "pb-perf transports",
        1 + args.transports.len() * (1 + args.fetches),
    );
    progress.step(&format!(
        "building namespaces, starting {RELAYS} relays ({})",
        network.describe()
    ));
    let mut net = Testnet::create(network)?;
    // Before the exit starts: `ip netns exec` mounts these files over its /etc.
    let _hosts = ExitHosts::write(&net)?;
    net.start_relays()?;
    net.wait_for_agreement(Duration::from_secs(90))?;
    check_interrupted()?;
    let body = Arc::new(pattern(args.size));
    let server = FileServer::start(net.listen(Node::Web, 0)?, body.clone())?;
    // What the gateway costs with no client at all: its links to the mixes, cover, loops.
    let gateway = net
        .relay(0)
        .ok_or_else(|| anyhow!("the gateway is not running"))?
        .child
        .id();
    let (before, at) = (cpu_ticks(gateway)?, Instant::now());
    thread::sleep(IDLE);
    let busy = cpu_ticks(gateway)?.saturating_sub(before) as f64 / clock_ticks;
    progress.note(&format!(
        "no client yet: the gateway uses {:.1} % of a core",
        busy / at.elapsed().as_secs_f64() * 100.0
    ));
    let doh = if args.transports.contains(&Transport::Doh) {
        progress.note("doh: starting unbound as the DoH resolver in its namespace");
        Some(net.start_doh_resolver()?)
    } else {
        None
    };
    let mut results = Vec::new();
    for (k, transport) in args.transports.iter().enumerate() {
        let socks = SocketAddr::from(([127, 0, 0, 1], FIRST_SOCKS_PORT + k as u16));
        let watch = Watch {
            client_bin: &client_bin,
            transport: *transport,
            socks,
            server_port: server.addr().port(),
            body: &body,
            fetches: args.fetches,
            settle: args.settle,
            clock_ticks,
            progress: &progress,
            doh: doh.as_ref(),
        };
        results.push(watch.measure(&mut net)?);
    }
    let mut carrier = Vec::new();
    if let Some((url, ca)) = &doh {
        for &rate in &args.doh_rates {
            progress.note(&format!(
                "doh: the DNS carrier alone at {rate} queries a second, {:.0} s",
                args.doh_seconds.as_secs_f64()
            ));
            let m = crate::doh_carrier::measure(&net, url, ca, rate, args.doh_seconds)?;
            progress.note(&format!("doh: {m}"));
            carrier.push(m);
        }
    }
    drop(progress);
    let mut summary = side_by_side(&results, args.obfs4_iat_mode);
    summary.push_str(&crate::doh_carrier::summary(&carrier));
    if args.json {
        eprint!("{summary}");
    } else {
        print!("{summary}");
        println!();
    }
    let mut rows = rows(&results, args);
    rows.extend(carrier.iter().flat_map(crate::doh_carrier::Carried::rows));
    Ok(rows)
}

/// An error if the user asked the run to stop, so that it ends and tears down.
fn check_interrupted() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted: everything started is stopped again");
    }
    Ok(())
}

/// What one transport came to.
struct Measured {
    transport: Transport,
    /// Per fetch: ms to the first byte of the answer.
    ttfb_ms: Vec<f64>,
    /// Per fetch: KiB/s of body over the whole fetch.
    download: Vec<f64>,
    /// Over the fetches' window: bytes on the access link, CPU seconds of each side.
    link_bytes: u64,
    client_cpu: f64,
    gateway_cpu: f64,
    /// Body bytes fetched.
    useful: u64,
}

impl Measured {
    fn ttfb(&self) -> f64 {
        median(self.ttfb_ms.clone())
    }

    fn download(&self) -> f64 {
        median(self.download.clone())
    }

    fn overhead(&self) -> f64 {
        self.link_bytes as f64 / self.useful.max(1) as f64
    }

    fn cpu_per_mb(&self, cpu: f64) -> f64 {
        cpu / (self.useful as f64 / MB)
    }
}

/// One transport's run: its client, its idle look and its fetches.
struct Watch<'a> {
    client_bin: &'a Path,
    transport: Transport,
    socks: SocketAddr,
    server_port: u16,
    body: &'a [u8],
    fetches: usize,
    settle: Duration,
    clock_ticks: f64,
    progress: &'a Progress,
    /// The DoH resolver's URL and certificate, if it runs.
    doh: Option<&'a (String, PathBuf)>,
}

impl Watch<'_> {
    fn measure(&self, net: &mut Testnet) -> anyhow::Result<Measured> {
        let name = self.transport.name();
        let ns = net
            .netns(Node::Client)
            .ok_or_else(|| anyhow!("the testnet has no client namespace"))?;
        if self.settle > Duration::ZERO {
            self.progress.step(&format!(
                "{name}: waiting for the gateway to let the last client go, starting pb-client --transport {name}"
            ));
            match settle(net, ns, self.settle)? {
                Some(waited) if waited > Duration::from_secs(3) => self.progress.note(&format!(
                    "{name}: the gateway closed the last client's link and the access link went quiet after {:.0} s",
                    waited.as_secs_f64()
                )),
                Some(_) => {}
                None => self.progress.note(&format!(
                    "{name}: the gateway still holds a client's link, or the access link is busy, after {:.0} s: this transport's figures include it",
                    self.settle.as_secs_f64()
                )),
            }
        } else {
            self.progress
                .step(&format!("{name}: starting pb-client --transport {name}"));
        }
        let mut command = net.client_command(self.client_bin);
        command.args(["--listen", &self.socks.to_string(), "--transport", name]);
        if self.transport == Transport::Doh {
            let (url, ca) = self
                .doh
                .ok_or_else(|| anyhow!("doh: the resolver is not running"))?;
            command
                .args(["--doh-resolver", url])
                .arg("--doh-ca")
                .arg(ca);
        }
        let k = net.start_client(
            &format!("pb-client {name}"),
            command,
            Duration::from_secs(90),
        )?;
        let result = self.fetch_all(net, k);
        // The next transport's client must have the access link to itself.
        let proc = net
            .process_mut(k)
            .ok_or_else(|| anyhow!("pb-client {name} is gone"))?;
        let status = proc.terminate().context("stopping pb-client")?;
        let measured = result.with_context(|| format!("over {name}: {}", proc.tail(10)))?;
        if !status.success() {
            self.progress
                .note(&format!("{name}: pb-client exited with {status}"));
        }
        // Its own counters, printed as it stops: records sent late, loops lost.
        if let Some(line) = proc
            .last("pb-client: ")
            .filter(|l| l.contains("cover packets"))
        {
            self.progress.note(&format!("{name}: {line}"));
        }
        Ok(measured)
    }

    /// With pb-client `k` ready: the idle look, then the fetches.
    fn fetch_all(&self, net: &Testnet, k: usize) -> anyhow::Result<Measured> {
        let name = self.transport.name();
        let client = net
            .process(k)
            .ok_or_else(|| anyhow!("pb-client {name} is gone"))?;
        let over = format!("over {name}");
        if !client
            .lines_with("pb-client: ")
            .iter()
            .any(|l| l.contains(&over))
        {
            bail!("pb-client does not say it runs {over}");
        }
        let ns = net
            .netns(Node::Client)
            .ok_or_else(|| anyhow!("the testnet has no client namespace"))?;
        let gateway = net
            .relay(0)
            .ok_or_else(|| anyhow!("the gateway is not running"))?;
        let pids = Pids {
            client: client.child.id(),
            gateway: gateway.child.id(),
        };
        // Idle: what the link and both sides cost with nothing to carry.
        thread::sleep(Duration::from_secs(1));
        let idle_from = Sample::take(ns, &pids)?;
        thread::sleep(IDLE);
        let idle = Sample::take(ns, &pids)?.since(&idle_from, self.clock_ticks);
        let seconds = idle.seconds.max(1e-9);
        self.progress.note(&format!(
            "{name}: idle, the access link carries {:.1} KB/s; pb-client uses {:.1} % of a core, the gateway {:.1} %",
            idle.link_bytes as f64 / seconds / 1e3,
            idle.client_cpu / seconds * 100.0,
            idle.gateway_cpu / seconds * 100.0
        ));
        check_interrupted()?;
        let mut ttfb_ms = Vec::new();
        let mut download = Vec::new();
        let from = Sample::take(ns, &pids)?;
        let counters_from = gateway_counters(net)?;
        for n in 0..self.fetches {
            self.progress.step(&format!(
                "{name}: fetch {}/{} of {} KiB",
                n + 1,
                self.fetches,
                self.body.len() / 1024
            ));
            let (first, all) = ns
                .in_netns(|| fetch_by_name(self.socks, self.server_port, self.body))
                .context("entering the client's namespace")?
                .with_context(|| format!("fetch {} over {name}", n + 1))?;
            let rate = self.body.len() as f64 / 1024.0 / all.as_secs_f64();
            self.progress.note(&format!(
                "{name}: fetch {}: first byte after {:.0} ms, {:.1} KiB/s over {:.2} s",
                n + 1,
                first.as_secs_f64() * 1e3,
                rate,
                all.as_secs_f64()
            ));
            ttfb_ms.push(first.as_secs_f64() * 1e3);
            download.push(rate);
            check_interrupted()?;
        }
        let window = Sample::take(ns, &pids)?.since(&from, self.clock_ticks);
        let moved: Vec<String> = gateway_counters(net)?
            .iter()
            .filter_map(|(counter, v)| {
                let d = v.saturating_sub(counters_from.get(counter).copied().unwrap_or(0));
                let short = counter
                    .trim_start_matches("pb_client_link_")
                    .trim_end_matches("_total");
                (d > 0).then(|| format!("{short} +{d}"))
            })
            .collect();
        self.progress.note(&format!(
            "{name}: the gateway's client-link counters over the fetches: {}",
            moved.join(", ")
        ));
        Ok(Measured {
            transport: self.transport,
            ttfb_ms,
            download,
            link_bytes: window.link_bytes,
            client_cpu: window.client_cpu,
            gateway_cpu: window.gateway_cpu,
            useful: (self.body.len() * self.fetches) as u64,
        })
    }
}

/// The gateway's client-link counters (`/metrics`, `pb_client_link_*`).
fn gateway_counters(net: &Testnet) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    Ok(net
        .admin_get(0, "/metrics")?
        .lines()
        .filter(|l| l.starts_with("pb_client_link_"))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

/// The processes whose CPU is counted.
struct Pids {
    client: u32,
    gateway: u32,
}

/// Counters at one moment.
struct Sample {
    at: Instant,
    link_bytes: u64,
    client_ticks: u64,
    gateway_ticks: u64,
}

/// What moved between two samples.
struct Delta {
    seconds: f64,
    link_bytes: u64,
    client_cpu: f64,
    gateway_cpu: f64,
}

impl Sample {
    fn take(ns: &Netns, pids: &Pids) -> anyhow::Result<Self> {
        Ok(Self {
            at: Instant::now(),
            link_bytes: link_bytes(ns)?,
            client_ticks: cpu_ticks(pids.client)?,
            gateway_ticks: cpu_ticks(pids.gateway)?,
        })
    }

    fn since(&self, earlier: &Sample, clock_ticks: f64) -> Delta {
        Delta {
            seconds: self.at.duration_since(earlier.at).as_secs_f64(),
            link_bytes: self.link_bytes.saturating_sub(earlier.link_bytes),
            client_cpu: self.client_ticks.saturating_sub(earlier.client_ticks) as f64 / clock_ticks,
            gateway_cpu: self.gateway_ticks.saturating_sub(earlier.gateway_ticks) as f64
                / clock_ticks,
        }
    }
}

/// Bytes received and sent so far on every interface of `ns` but loopback (`ip -s -j link`:
/// Ethernet frames, as the veth counts them).
fn link_bytes(ns: &Netns) -> anyhow::Result<u64> {
    let out = ns
        .run(&["-s", "-j", "link", "show"])
        .with_context(|| format!("reading the interface counters of {}", ns.name()))?;
    let links: serde_json::Value =
        serde_json::from_str(&out).context("`ip -s -j link show` is not JSON")?;
    let links = links
        .as_array()
        .ok_or_else(|| anyhow!("`ip -s -j link show` is not a list"))?;
    let mut total = 0u64;
    for link in links.iter().filter(|l| l["ifname"] != "lo") {
        for way in ["rx", "tx"] {
            total += link["stats64"][way]["bytes"]
                .as_u64()
                .ok_or_else(|| anyhow!("`ip -s -j link show` has no stats64.{way}.bytes"))?;
        }
    }
    Ok(total)
}

/// Waits until the gateway holds no client's link (every link it opened is closed) and the
/// access link carries less than [`QUIET_BYTES_PER_SECOND`], for at most `limit`: how long
/// it took, or `None` if it was not so within `limit`.
fn settle(net: &Testnet, ns: &Netns, limit: Duration) -> anyhow::Result<Option<Duration>> {
    let start = Instant::now();
    let mut last = link_bytes(ns)?;
    loop {
        thread::sleep(Duration::from_secs(1));
        check_interrupted()?;
        let now = link_bytes(ns)?;
        let counters = gateway_counters(net)?;
        let count = |name: &str| {
            counters
                .get(&format!("pb_client_link_{name}_total"))
                .copied()
                .unwrap_or(0)
        };
        let open = count("handshakes").saturating_sub(count("links_closed"));
        if open == 0 && now.saturating_sub(last) < QUIET_BYTES_PER_SECOND {
            return Ok(Some(start.elapsed()));
        }
        if start.elapsed() >= limit {
            return Ok(None);
        }
        last = now;
    }
}

/// Clock ticks a second of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`).
fn clock_ticks() -> anyhow::Result<f64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    let ticks: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK is not a number")?;
    if !(out.status.success() && ticks > 0.0) {
        bail!("getconf CLK_TCK failed");
    }
    Ok(ticks)
}

/// User and system CPU time of process `pid` so far, in clock ticks (`/proc/<pid>/stat`,
/// fields 14 and 15).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("{path} has no command name"))?;
    let times: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{path}: utime and stime"))?;
    if times.len() != 2 {
        bail!("{path} is too short");
    }
    Ok(times.iter().sum())
}

/// One HTTP fetch through the SOCKS5 proxy at `socks` (on this thread's namespace) of the
/// web node by [`SERVER_NAME`], which the exit resolves: (time to the first byte of the
/// answer, time to the last). `Ok` only if the body is exactly `body`.
fn fetch_by_name(
    socks: SocketAddr,
    port: u16,
    body: &[u8],
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut s = pb_testnet::socks_connect_name(socks, SERVER_NAME, port).context("pb-client")?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {SERVER_NAME}\r\n\r\n").as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    // The head is kept until its end is seen; the body is compared as it comes.
    let mut head: Vec<u8> = Vec::new();
    let mut got: Option<usize> = None;
    let mut first = None;
    // The body's next `chunk`, at byte `at`: where the body now ends.
    let check = |at: usize, chunk: &[u8]| -> anyhow::Result<usize> {
        if body.get(at..at + chunk.len()) != Some(chunk) {
            bail!("the body differs from the file at or after byte {at}");
        }
        Ok(at + chunk.len())
    };
    loop {
        let n = s.read(&mut buf).context("reading the fetch")?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| start.elapsed());
        match got {
            Some(at) => got = Some(check(at, &buf[..n])?),
            None => {
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    let rest = head.split_off(end + 4);
                    got = Some(check(0, &rest)?);
                }
            }
        }
    }
    let all = start.elapsed();
    match got {
        Some(n) if n == body.len() => Ok((first.unwrap_or_default(), all)),
        Some(n) => bail!("the fetch ended after {n} of {} bytes", body.len()),
        None => bail!("no HTTP answer ({} bytes)", head.len()),
    }
}

/// The rows of every transport, in the order measured.
fn rows(results: &[Measured], args: &TransportsArgs) -> Vec<Measurement> {
    let params = [("size", json!(args.size)), ("fetches", json!(args.fetches))];
    let with_side = |side: &str| {
        let mut p = params.to_vec();
        p.push(("side", json!(side)));
        p
    };
    let mut rows = Vec::new();
    for m in results {
        let imp = &m.transport.label(args.obfs4_iat_mode);
        rows.push(row(
            "transport.ttfb",
            imp,
            &params,
            round(m.ttfb(), 1),
            "ms",
        ));
        rows.push(row(
            "transport.download",
            imp,
            &params,
            round(m.download(), 1),
            "KiB/s",
        ));
        rows.push(row(
            "transport.overhead",
            imp,
            &params,
            round(m.overhead(), 4),
            "bytes/byte",
        ));
        for (side, cpu) in [("client", m.client_cpu), ("gateway", m.gateway_cpu)] {
            rows.push(row(
                "transport.cpu_per_mb",
                imp,
                &with_side(side),
                round(m.cpu_per_mb(cpu), 4),
                "cpu_s/MB",
            ));
        }
    }
    rows
}

fn round(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (v * scale).round() / scale
}

/// The figures side by side, a column per transport, with each download rate as a share of
/// plain UDP's (when UDP ran).
fn side_by_side(results: &[Measured], obfs4_iat_mode: u8) -> String {
    let udp = results
        .iter()
        .find(|m| m.transport == Transport::Udp)
        .map(Measured::download);
    let mut lines: Vec<(String, Vec<String>)> = vec![(
        "transport".into(),
        results
            .iter()
            .map(|m| m.transport.label(obfs4_iat_mode))
            .collect(),
    )];
    let mut line = |label: &str, f: &dyn Fn(&Measured) -> String| {
        lines.push((label.into(), results.iter().map(f).collect()));
    };
    line("time to first byte (ms)", &|m| format!("{:.0}", m.ttfb()));
    line("download (KiB/s)", &|m| format!("{:.1}", m.download()));
    if let Some(udp) = udp {
        line("download / UDP's", &|m| {
            format!("{:.1} %", m.download() / udp * 100.0)
        });
    }
    line("access link bytes per byte", &|m| {
        format!("{:.3}", m.overhead())
    });
    line("pb-client CPU (s/MB)", &|m| {
        format!("{:.3}", m.cpu_per_mb(m.client_cpu))
    });
    line("gateway CPU (s/MB)", &|m| {
        format!("{:.3}", m.cpu_per_mb(m.gateway_cpu))
    });
    let label_width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (label, cells) in &lines {
        out.push_str(&format!("{label:<label_width$}"));
        for cell in cells {
            out.push_str(&format!("  {cell:>10}"));
        }
        out.push('\n');
    }
    out
}

/// `/etc/netns/<the exit's namespace>/`: `hosts` with [`SERVER_NAME`] as the web node, and
/// `resolv.conf` naming the exit's own loopback (where nothing answers), so that only that
/// name resolves. Removed when dropped (and stale ones of namespaces that are gone, when
/// written).
struct ExitHosts(PathBuf);

impl ExitHosts {
    fn write(net: &Testnet) -> anyhow::Result<Self> {
        let etc = Path::new("/etc/netns");
        if let Ok(entries) = std::fs::read_dir(etc) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = name.to_string_lossy().starts_with("pbt-")
                    && !Path::new("/var/run/netns").join(&name).exists();
                if stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let ns = net
            .netns(EXIT)
            .ok_or_else(|| anyhow!("the exit has no namespace"))?;
        let dir = etc.join(ns.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = Self(dir);
        std::fs::write(
            guard.0.join("hosts"),
            format!(
                "127.0.0.1 localhost\n{} {SERVER_NAME}\n",
                net.network().address(Node::Web)
            ),
        )?;
        std::fs::write(
            guard.0.join("resolv.conf"),
            "# pb-perf transports: only the hosts file resolves\nnameserver 127.0.0.1\n",
        )?;
        Ok(guard)
    }
}

impl Drop for ExitHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn measured(transport: Transport, download: f64) -> Measured {
        Measured {
            transport,
            ttfb_ms: vec![500.0, 400.0, 600.0],
            download: vec![download, download / 2.0, download * 2.0],
            link_bytes: 3_000_000,
            client_cpu: 1.0,
            gateway_cpu: 2.0,
            useful: 2_000_000,
        }
    }

    #[test]
    fn rows_name_every_figure_per_transport_with_medians() {
        let results = [
            measured(Transport::Udp, 100.0),
            measured(Transport::Wss, 95.0),
        ];
        let args = TransportsArgs {
            transports: vec![Transport::Udp, Transport::Wss],
            fetches: 3,
            size: 2_000_000 / 3,
            settle: Duration::ZERO,
            json: true,
            obfs4_iat_mode: 0,
            doh_rates: Vec::new(),
            doh_seconds: Duration::ZERO,
        };
        let rows = rows(&results, &args);
        assert_eq!(rows.len(), 2 * 5);
        let get = |bench: &str, imp: &str, side: Option<&str>| {
            rows.iter()
                .find(|r| {
                    r.bench == bench
                        && r.implementation == imp
                        && side.is_none_or(|s| r.params["side"] == s)
                })
                .unwrap()
                .value
        };
        assert_eq!(get("transport.ttfb", "udp", None), 500.0);
        assert_eq!(get("transport.download", "wss", None), 95.0);
        assert_eq!(get("transport.overhead", "udp", None), 1.5);
        assert_eq!(get("transport.cpu_per_mb", "udp", Some("client")), 0.5);
        assert_eq!(get("transport.cpu_per_mb", "wss", Some("gateway")), 1.0);
        assert!(rows.iter().all(|r| r.params["fetches"] == 3));
        let summary = side_by_side(&results, 0);
        assert!(summary.contains("95.0 %"), "{summary}");
    }

    #[test]
    fn cpu_ticks_of_this_process_grow() {
        let before = cpu_ticks(std::process::id()).unwrap();
        // Spin until a tick is counted (a bound only so that a broken reader ends).
        let spin = Instant::now();
        while cpu_ticks(std::process::id()).unwrap() == before
            && spin.elapsed() < Duration::from_secs(30)
        {}
        assert!(cpu_ticks(std::process::id()).unwrap() > before);
        assert!(clock_ticks().unwrap() > 0.0);
        assert!(cpu_ticks(u32::MAX).is_err());
    }
}
