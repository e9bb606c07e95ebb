//! `pb-perf e2e`: the whole path on one machine, without root. Eight `pb-relay` processes in
//! gossip mode on loopback addresses (a gateway, three mix layers of two, an exit), a file
//! server, and `pb-client`; per client profile, the time to the first byte of a fetch and
//! the download rate through the mixnet, against the same fetch made directly; then the
//! client's CPU and memory while it sits idle with its cover running.
//!
//! The relays and the client are the release binaries next to `pb-perf` (build them with
//! `cargo build --release -p pb-relay -p pb-client -p pb-perf`).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::json;

use pb_testbed::{Proc, Star};

use crate::{
    progress::Progress,
    report::{Measurement, row},
};

/// Settings of a run.
pub struct E2eArgs {
    /// Bytes per fetch.
    pub bytes: usize,
    /// Fetches per profile (the median is reported).
    pub fetches: usize,
    /// Seconds the idle client is watched.
    pub idle_seconds: f64,
    /// Client profiles to measure.
    pub profiles: Vec<String>,
    /// Packets per second on every relay link.
    pub link_rate: u32,
}

pub(crate) const RELAYS: usize = 8;
pub(crate) const SEED: &str = "5151515151515151515151515151515151515151515151515151515151515151";

pub(crate) fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 79, 0, i as u8 + 1)
}

fn role(i: usize) -> &'static str {
    match i {
        0 => "gateway",
        _ if i == RELAYS - 1 => "exit",
        _ => "mix",
    }
}

/// The scratch directory, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating pb-perf")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build it next to pb-perf (cargo build --release -p pb-relay -p pb-client -p pb-perf)",
            path.display()
        );
    }
    Ok(path)
}

/// Where a testnet runs: relays on loopback addresses over UDP (no root), or each relay in
/// a network namespace of its own on a bridge, on AF_XDP with the XDP program attached to its
/// veth (root).
pub(crate) enum Site {
    /// 127.79.0.1-8, the UDP backend.
    Loopback,
    /// A star of namespaces (relays 0-7, then the web server, then the client), AF_XDP.
    Netns(Star),
}

/// The star's node that holds the web server.
const WEB_NODE: usize = RELAYS;
/// The star's node that holds pb-client.
const CLIENT_NODE: usize = RELAYS + 1;

impl Site {
    /// A star of namespaces with AF_XDP relays, for a run as root.
    pub(crate) fn netns() -> anyhow::Result<Self> {
        pb_testbed::privileged()
            .map_err(|reason| anyhow!("network namespaces and XDP need root: {reason}"))?;
        Ok(Self::Netns(
            pb_testbed::star("pbdemo", CLIENT_NODE + 1).context("building the namespaces")?,
        ))
    }

    /// Relay `i`'s address.
    pub(crate) fn ip(&self, i: usize) -> Ipv4Addr {
        match self {
            Self::Loopback => ip(i),
            Self::Netns(star) => star.nodes[i].v4,
        }
    }

    /// The addresses of the relays, for messages: `127.79.0.1-8`.
    pub(crate) fn range(&self) -> String {
        format!("{}-{RELAYS}", self.ip(0))
    }

    /// What the relays run on, for messages.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Self::Loopback => "on loopback, UDP backend",
            Self::Netns(_) => {
                "each in a network namespace, AF_XDP with the XDP program on its veth (native)"
            }
        }
    }

    /// Where and on what the relays run, for the rows: `loopback-udp` or `netns-af_xdp`.
    pub(crate) fn tag(&self) -> &'static str {
        match self {
            Self::Loopback => "loopback-udp",
            Self::Netns(_) => "netns-af_xdp",
        }
    }

    /// The range the testnet's exit may open: the testnet's own addresses, nothing else.
    pub(crate) fn exit_allow(&self) -> &'static str {
        match self {
            Self::Loopback => "127.79.0.0/16",
            Self::Netns(_) => "198.18.0.0/24",
        }
    }

    /// Relay `i`'s configuration: packets on :47470, gossip on :47471, the client link on
    /// the gateway's :47480, admin on :9100 (of its loopback address, or of its namespace's
    /// 127.0.0.1).
    fn relay_config(&self, i: usize, link_rate: u32) -> String {
        let me = self.ip(i);
        let (io, advertise, admin) = match self {
            Self::Loopback => (
                format!("backend = \"udp\"\nbind = \"{me}:47470\"\n"),
                String::new(),
                format!("{me}:9100"),
            ),
            Self::Netns(star) => (
                format!(
                    "backend = \"af_xdp\"\ninterface = \"{}\"\nqueues = [0]\nport = 47470\nxdp_mode = \"native\"\nbind = \"copy\"\n",
                    star.nodes[i].ifname
                ),
                format!("advertise = \"{me}:47470\"\n"),
                "127.0.0.1:9100".to_owned(),
            ),
        };
        let role_line = match role(i) {
            "gateway" => format!("client_bind = \"{me}:47480\"\n"),
            "exit" => format!("exit_allow = [\"{}\"]\n", self.exit_allow()),
            _ => String::new(),
        };
        format!(
            "[node]\nformat = \"v1\"\n\n[io]\n{io}\n[gossip]\nbind = \"{me}:47471\"\n{advertise}seeds = [\"{}:47471\", \"{}:47471\"]\nnetwork_seed = \"{SEED}\"\nidentity_file = \"identity{i}.key\"\nrole = \"{}\"\nepoch_seconds = 604800\nadmin = \"{admin}\"\n{role_line}\n[mix]\nlink_rate = {link_rate}\nloop_rate = 1\n",
            self.ip(0),
            self.ip(1),
            role(i)
        )
    }

    /// A command that runs `program` where relay (or node) `i` lives.
    fn command(&self, i: usize, program: &Path) -> Command {
        match self {
            Self::Loopback => Command::new(program),
            Self::Netns(star) => star.nodes[i].ns.exec(program, std::iter::empty::<&str>()),
        }
    }

    /// A listener for the web server: on 127.79.0.20, or in the web server's namespace.
    pub(crate) fn web_listener(&self) -> anyhow::Result<TcpListener> {
        match self {
            Self::Loopback => {
                TcpListener::bind((Ipv4Addr::new(127, 79, 0, 20), 0)).context("file server")
            }
            Self::Netns(star) => {
                let node = &star.nodes[WEB_NODE];
                node.ns
                    .in_netns(|| TcpListener::bind((node.v4, 0)))?
                    .context("file server")
            }
        }
    }

    /// A command that runs pb-client: here, or in the client's namespace.
    pub(crate) fn client_command(&self, program: &Path) -> Command {
        self.command(CLIENT_NODE, program)
    }

    /// The client's namespace, if it has one.
    pub(crate) fn client_netns(&self) -> Option<&pb_testbed::Netns> {
        match self {
            Self::Loopback => None,
            Self::Netns(star) => Some(&star.nodes[CLIENT_NODE].ns),
        }
    }
}

/// An HTTP/1.0 server on `listener` answering every request with `bytes` bytes, then
/// closing.
pub(crate) fn file_server(listener: TcpListener, bytes: usize) -> anyhow::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    let body: Arc<Vec<u8>> = Arc::new((0..bytes).map(|i| (i * 7 + 3) as u8).collect());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let body = body.clone();
            thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && request.len() < 8192 {
                    match stream.read(&mut byte) {
                        Ok(1) => request.push(byte[0]),
                        _ => return,
                    }
                }
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            });
        }
    });
    Ok(addr)
}

/// One HTTP fetch of `bytes` body bytes from `server`, through the SOCKS5 proxy at `socks`
/// or directly: (time to the first byte of the answer, time to the last).
pub(crate) fn fetch(
    socks: Option<SocketAddr>,
    server: SocketAddr,
    bytes: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    let mut s = match socks {
        Some(proxy) => {
            let mut s = TcpStream::connect(proxy).context("connecting to pb-client")?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            s.write_all(&[5, 1, 0])?;
            let mut method = [0u8; 2];
            s.read_exact(&mut method)?;
            let SocketAddr::V4(v4) = server else {
                bail!("an IPv4 server");
            };
            let mut request = vec![5, 1, 0, 1];
            request.extend_from_slice(&v4.ip().octets());
            request.extend_from_slice(&v4.port().to_be_bytes());
            s.write_all(&request)?;
            let mut reply = [0u8; 10];
            s.read_exact(&mut reply)?;
            if reply[1] != 0 {
                bail!(
                    "pb-client answered the CONNECT with SOCKS reply {:#04x}",
                    reply[1]
                );
            }
            s
        }
        None => TcpStream::connect(server)?,
    };
    s.write_all(b"GET / HTTP/1.0\r\nHost: pb-testnet\r\n\r\n")?;
    let mut buf = vec![0u8; 64 * 1024];
    // The header is kept until its end is seen; of the body only the count.
    let mut head: Vec<u8> = Vec::new();
    let mut body = None;
    let mut first = None;
    while body.is_none_or(|got| got < bytes) {
        let n = s.read(&mut buf).context("reading the fetch")?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(|| start.elapsed());
        match body.as_mut() {
            Some(got) => *got += n,
            None => {
                head.extend_from_slice(&buf[..n]);
                if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                    body = Some(head.len() - end - 4);
                }
            }
        }
    }
    let got = body.unwrap_or(0);
    if got < bytes {
        bail!("the fetch ended after {got} of {bytes} bytes");
    }
    Ok((first.unwrap_or_default(), start.elapsed()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// CPU seconds (user + system) of `pid` so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    // /proc times are in USER_HZ, which is 100 on Linux.
    Ok(ticks / 100.0)
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok(kib / 1024.0)
}

pub(crate) fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if crate::testnet::interrupted() {
            bail!("interrupted while waiting for {what}");
        }
        if start.elapsed() > limit {
            bail!("{what} did not happen within {limit:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Eight relays that agree on one topology, on a [`Site`]; stopped and removed when
/// dropped (the relays first, then the namespaces, then the scratch directory).
pub(crate) struct Testnet {
    /// The relays (killed when the testnet is dropped).
    pub(crate) relays: Vec<Proc>,
    /// The topology hash they agree on.
    pub(crate) hash: String,
    /// Where they run.
    pub(crate) site: Site,
    _dir: Scratch,
}

impl Testnet {
    /// Starts the relays on `site` and waits until they agree.
    pub(crate) fn start(site: Site, link_rate: u32) -> anyhow::Result<Self> {
        let relay = binary("pb-relay")?;
        let dir = Scratch(std::env::temp_dir().join(format!("pb-testnet-{}", std::process::id())));
        std::fs::create_dir_all(&dir.0)?;
        let mut relays = Vec::new();
        for i in 0..RELAYS {
            let seed = format!("{:02x}", 0x30 + i).repeat(32);
            std::fs::write(dir.0.join(format!("identity{i}.key")), seed + "\n")?;
            let path = dir.0.join(format!("relay{i}.toml"));
            std::fs::write(&path, site.relay_config(i, link_rate))?;
            relays.push(
                Proc::start({
                    let mut c = site.command(i, &relay);
                    // One `window` line per link per second: the links' exact rates.
                    c.args(["run", "--stats-interval", "1", "--config"])
                        .arg(&path);
                    c
                })
                .context("starting pb-relay")?,
            );
        }
        let view = |r: &Proc| {
            r.last("topology ")
                .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        };
        let agreed = || {
            let views: Vec<Option<String>> = relays.iter().map(view).collect();
            views[0]
                .as_deref()
                .is_some_and(|v| v.ends_with(&format!(" nodes {RELAYS}")))
                && views.iter().all(|v| *v == views[0])
        };
        if let Err(e) = wait_for("agreement on one topology", Duration::from_secs(60), agreed) {
            let tails: Vec<String> = relays.iter().map(|r| r.tail(5)).collect();
            bail!("{e}: {}", tails.join("\n---\n"));
        }
        let hash = view(&relays[0])
            .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
            .unwrap_or_default();
        Ok(Self {
            relays,
            hash,
            site,
            _dir: dir,
        })
    }
}

/// Runs the testnet and measures; see the module docs.
pub fn run(args: &E2eArgs) -> anyhow::Result<Vec<Measurement>> {
    let client = binary("pb-client")?;
    let progress = Progress::new("pb-perf e2e", 1 + args.profiles.len() * (args.fetches + 1));
    progress.step(&format!("starting {RELAYS} relays on 127.79.0.1-{RELAYS}"));
    let net = Testnet::start(Site::Loopback, args.link_rate)?;
    let server = file_server(net.site.web_listener()?, args.bytes)?;
    let mut rows = Vec::new();
    // The baseline: the same fetch, straight to the server.
    let mut direct_first = Vec::new();
    let mut direct_rate = Vec::new();
    for _ in 0..args.fetches {
        let (first, all) = fetch(None, server, args.bytes)?;
        direct_first.push(first.as_secs_f64() * 1e3);
        direct_rate.push(args.bytes as f64 / 1024.0 / all.as_secs_f64());
    }
    let params = |profile: &str| {
        vec![
            ("profile", json!(profile)),
            ("bytes", json!(args.bytes)),
            ("link_rate", json!(args.link_rate)),
        ]
    };
    rows.push(row(
        "e2e.ttfb",
        "direct",
        &params("-"),
        median(direct_first),
        "ms",
    ));
    rows.push(row(
        "e2e.throughput",
        "direct",
        &params("-"),
        median(direct_rate),
        "KiB/s",
    ));
    for (k, profile) in args.profiles.iter().enumerate() {
        let listen = SocketAddr::from(([127, 0, 0, 1], 21080 + k as u16));
        let proc = Proc::start({
            let mut c = Command::new(&client);
            c.args([
                "--listen",
                &listen.to_string(),
                "--gateway",
                &format!("{}:47480", ip(0)),
            ])
            .args(["--network-seed", SEED, "--profile", profile]);
            c
        })?;
        wait_for("pb-client ready", Duration::from_secs(30), || {
            proc.last("pb-client: ready").is_some()
        })
        .with_context(|| proc.tail(5))?;
        let mut firsts = Vec::new();
        let mut rates = Vec::new();
        for n in 0..args.fetches {
            progress.step(&format!(
                "profile {profile}: fetch {}/{} of {} KiB",
                n + 1,
                args.fetches,
                args.bytes / 1024
            ));
            let (first, all) = fetch(Some(listen), server, args.bytes)
                .with_context(|| format!("profile {profile}"))?;
            firsts.push(first.as_secs_f64() * 1e3);
            rates.push(args.bytes as f64 / 1024.0 / all.as_secs_f64());
        }
        rows.push(row(
            "e2e.ttfb",
            "pb-client",
            &params(profile),
            median(firsts),
            "ms",
        ));
        rows.push(row(
            "e2e.throughput",
            "pb-client",
            &params(profile),
            median(rates),
            "KiB/s",
        ));
        // Idle: no stream open, cover (and SURB top-ups) running.
        thread::sleep(Duration::from_secs(3));
        progress.step(&format!(
            "profile {profile}: watching the idle client for {} s",
            args.idle_seconds
        ));
        let pid = proc.child.id();
        let (cpu0, t0) = (cpu_seconds(pid)?, Instant::now());
        thread::sleep(Duration::from_secs_f64(args.idle_seconds));
        let cpu = (cpu_seconds(pid)? - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
        rows.push(row(
            "e2e.idle_cpu",
            "pb-client",
            &params(profile),
            (cpu * 100.0).round() / 100.0,
            "% of a core",
        ));
        rows.push(row(
            "e2e.idle_rss",
            "pb-client",
            &params(profile),
            (rss_mib(pid)? * 10.0).round() / 10.0,
            "MiB",
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_configs_name_each_role_once() {
        let configs: Vec<String> = (0..RELAYS)
            .map(|i| Site::Loopback.relay_config(i, 100))
            .collect();
        assert_eq!(
            configs
                .iter()
                .filter(|c| c.contains("role = \"gateway\""))
                .count(),
            1
        );
        assert_eq!(
            configs
                .iter()
                .filter(|c| c.contains("role = \"exit\""))
                .count(),
            1
        );
        assert!(configs[0].contains("client_bind = \"127.79.0.1:47480\""));
        assert!(configs[RELAYS - 1].contains("exit_allow"));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }

    #[test]
    fn cpu_and_memory_of_this_process_are_read() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_ok());
        assert!(rss_mib(pid).is_ok_and(|m| m > 0.0));
    }
}
