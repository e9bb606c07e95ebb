//! `pb-perf attack`: the attacks of docs/threat-model.md ("Abuse of the relays themselves")
//! played against a testnet of eight pb-relay processes in network namespaces (root), while
//! an honest pb-client fetches through it (again and again, the whole attack long). Per
//! attack it prints the attacker's bytes, the victim's bytes (what arrived at the address the
//! attack aims the network at) and their ratio, whether every honest fetch came back
//! byte-identical with every relay still a member everywhere, and the largest relay's
//! resident memory. With `--baseline-relay`, the same against another pb-relay binary first.
//!
//! Where the attacker and the victim are: two extra addresses of the web server's namespace
//! on the testbed's bridge (198.18.0.200, the attacker's own, and 198.18.0.201, the
//! victim's). A spoofing attacker sends from the victim's address, as a raw socket on the
//! Internet would let it; whatever the relays send back to that address is counted as the
//! victim's. Traffic goes only to the testbed's own namespaces, for a bounded time, at a
//! bounded rate. For the run, `/etc/netns/<the exit's namespace>/` holds the exit's
//! `resolv.conf` and `hosts` (removed afterwards, and left-overs of gone namespaces too).
//!
//! The attacks (each named as in the rows `attack.<name>.*`):
//! - `link_flood`: a sybil relay whose descriptor names the victim as its packet address
//!   and its own address for gossip; it announces itself and answers probes as a relay
//!   would. If the network took it in, every neighbour would send it a constant-rate link.
//! - `directory_push`: signed SWIM announces from the victim's address (spoofed), by an
//!   identity whose descriptor claims it: each used to win a directory push (up to ~1 MB)
//!   and SWIM membership.
//! - `swim_junk`: junk and badly signed SWIM datagrams at every relay's gossip port, to
//!   crowd out the members' pings and acks.
//! - `hello_flood`: client-link inits (the Noise handshake's first record, made to the
//!   gateway's link key, without a cookie) to the gateway from the victim's address: each
//!   gets one cookie record back, and nothing is kept.
//! - `gateway_flood`: MAC-valid Sphinx packets the attacker made itself, at the gateway's
//!   packet port (each costs an X25519 and a replay-filter entry).
//! - `exit_sessions`, `exit_slow_dns`, `exit_bloat`: an attacking mixnet client of its own
//!   ([`ExitClient`]: the directory any client gets, packets through the gateway and a mix
//!   per layer to the exit, never a SURB) opens fresh sessions faster than they expire, each
//!   holding a connection to the victim; asks for names that only a name server that never
//!   answers could resolve (the exit's namespace has the victim as its name server, and the
//!   honest fetch then goes to a name in the exit's hosts file); or opens streams to a server
//!   of its own that sends as fast as the exit reads, and never reads an answer.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use foca::{Codec as _, Header, Message};
use pb_control::{
    Descriptor, IdentityKeyPair, Role, SignedDescriptor,
    wire::{Peer, SwimCodec, swim_datagram},
};
use pb_sphinx::{Epoch, EpochKey, Hop, MailboxId, PACKET_LEN};
use pb_testnet::{FileServer, GOSSIP_PORT, Network, Node, Testnet, binary, pattern};
use serde_json::json;

use crate::{
    procfs::rss_mib,
    progress::Progress,
    report::{Measurement, row},
};

/// One attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// A sybil whose packet address is the victim's.
    LinkFlood,
    /// Spoofed signed announces that used to win directory pushes.
    DirectoryPush,
    /// Junk at the gossip ports.
    SwimJunk,
    /// Client-link inits at the gateway, from the victim's address.
    HelloFlood,
    /// Self-made Sphinx packets at the gateway's packet port.
    GatewayFlood,
    /// Fresh exit sessions, each holding a connection, faster than they expire.
    ExitSessions,
    /// Names whose name server never answers, from many sessions.
    ExitSlowDns,
    /// Streams from a server that sends as fast as it can, to a client that never reads.
    ExitBloat,
}

impl Attack {
    /// The name in the rows.
    pub fn name(self) -> &'static str {
        match self {
            Attack::LinkFlood => "link_flood",
            Attack::DirectoryPush => "directory_push",
            Attack::SwimJunk => "swim_junk",
            Attack::HelloFlood => "hello_flood",
            Attack::GatewayFlood => "gateway_flood",
            Attack::ExitSessions => "exit_sessions",
            Attack::ExitSlowDns => "exit_slow_dns",
            Attack::ExitBloat => "exit_bloat",
        }
    }
}

/// Settings of a run.
pub struct AttackArgs {
    /// Seconds each attack lasts (at least as long as the honest fetch during it).
    pub seconds: f64,
    /// The attacks, in order.
    pub attacks: Vec<Attack>,
    /// Datagrams per second the attacker sends (flooding attacks).
    pub rate: u32,
    /// Bytes of the honest fetch during each attack.
    pub bytes: usize,
    /// The relays' packet I/O.
    pub backend: pb_testnet::Backend,
    /// Another pb-relay binary (e.g. built from an older commit) to attack first, side by
    /// side.
    pub baseline_relay: Option<std::path::PathBuf>,
    /// Where to keep the relays' and pb-client's logs (`<dir>/pb-relay` and
    /// `<dir>/baseline` for each network).
    pub log_dir: Option<std::path::PathBuf>,
}

const RELAYS: usize = 8;
/// The attacker's own address and the victim's, on the testbed's bridge.
const ATTACKER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 200);
const VICTIM: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 201);
/// Packets a second the attacker's client sends at most: the testbed's links carry 100 a
/// second each, two to a layer, and honest clients need room too (more would flood the
/// network's capacity, which no exit defence is about).
const EXIT_RATE: u32 = 100;
/// The name the honest fetch of `exit_slow_dns` asks the exit for (in its hosts file).
const HONEST_NAME: &str = "web.pb.test";
/// Where the victim listens for the exit's connections, and the attacker's server for them.
const VICTIM_TCP: u16 = 9;
const BLOAT_PORT: u16 = 8080;
/// How often the relays' membership and memory are looked at during an attack.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// Runs the attacks; see the module docs. With a baseline relay binary, first against a
/// network of those (rows `baseline`), then against the one next to pb-perf (`pb-relay`).
pub fn run(args: &AttackArgs) -> anyhow::Result<Vec<Measurement>> {
    pb_testbed::privileged().map_err(|reason| {
        anyhow!("pb-perf attack runs a testnet in network namespaces and needs root: {reason}")
    })?;
    let mut rows = Vec::new();
    if let Some(baseline) = &args.baseline_relay {
        if !baseline.is_file() {
            anyhow::bail!("--baseline-relay {}: no such file", baseline.display());
        }
        rows.extend(run_against(args, Some(baseline))?);
    }
    rows.extend(run_against(args, None)?);
    Ok(rows)
}

/// The attacks against eight relays of `relay_binary` (default: next to pb-perf).
fn run_against(
    args: &AttackArgs,
    relay_binary: Option<&std::path::Path>,
) -> anyhow::Result<Vec<Measurement>> {
    let client_bin = binary("pb-client")?;
    let imp = if relay_binary.is_some() {
        "baseline"
    } else {
        "pb-relay"
    };
    let builder = Network::builder()
        .relays(RELAYS)
        .netns("pbatk")
        .backend(args.backend)
        .loop_rate(1)
        .admin(true);
    let builder = match &args.log_dir {
        Some(dir) => builder.log_dir(dir.join(imp)),
        None => builder,
    };
    let network = match relay_binary {
        Some(path) => builder.relay_binary(path),
        None => builder,
    }
    .build()?;
    let progress = Progress::new(&format!("pb-perf attack ({imp})"), 2 + args.attacks.len());
    progress.step(&format!(
        "building namespaces, starting {RELAYS} relays ({})",
        network.describe()
    ));
    let mut net = Testnet::create(network)?;
    // The exit's name server is the victim's address, and the honest name is in its hosts
    // file (`ip netns exec` puts /etc/netns/<namespace>/ over /etc).
    let _etc = ExitEtc::write(&net)?;
    net.start_relays()?;
    net.wait_for_agreement(Duration::from_secs(90))?;
    let web = net
        .netns(Node::Web)
        .ok_or_else(|| anyhow!("the testnet has no web namespace"))?;
    let ifname = pb_testbed::star_ifname(net.network().relays());
    for addr in [ATTACKER, VICTIM] {
        web.run(&["addr", "add", &format!("{addr}/24"), "dev", &ifname])
            .with_context(|| format!("adding {addr} to the web namespace"))?;
    }
    let server = FileServer::start(net.listen(Node::Web, 0)?, Arc::new(pattern(args.bytes)))?;
    progress.step("starting pb-client");
    let socks = SocketAddr::from(([127, 0, 0, 1], 1080));
    let mut command = net.client_command(&client_bin);
    command.args(["--listen", &socks.to_string()]);
    net.start_client("pb-client", command, Duration::from_secs(60))?;
    let epoch = net
        .view(0)
        .map(|v| Epoch(v.epoch))
        .ok_or_else(|| anyhow!("the gateway reports no topology"))?;
    let mut rows = Vec::new();
    // The baseline: the relays' memory before any attack.
    let before = sample(&net)?;
    rows.push(row(
        "attack.none.max_rss",
        imp,
        &[("relays", json!(RELAYS))],
        round1(before.max_rss),
        "MiB",
    ));
    for attack in &args.attacks {
        // What any client gets from the gateway now (an earlier attack may have moved it).
        let context = Context {
            network_seed: net.network().network_seed(),
            epoch,
            relays: (0..RELAYS).map(|i| net.network().gossip_addr(i)).collect(),
            gateway_packet: net.network().packet_addr(0),
            client_link: net.network().client_link(),
            descriptors: descriptors(&net)?,
            gateway_identity: IdentityKeyPair::from_seed(&net.network().identity_seed(0)).public(),
            rate: args.rate,
        };
        progress.step(&format!(
            "{}: {} s at up to {} datagrams/s, fetching {} KiB through pb-client",
            attack.name(),
            args.seconds,
            args.rate,
            args.bytes / 1024
        ));
        let exit_before = counters(&net, RELAYS - 1, "pb_exit_")?;
        let gossip_before = counters(&net, 1, "pb_gossip_")?;
        let outcome = play(&net, *attack, &context, args, socks, server.addr(), &before)?;
        let exit_after = counters(&net, RELAYS - 1, "pb_exit_")?;
        let gossip_after = counters(&net, 1, "pb_gossip_")?;
        progress.note(&format!(
            "{}: attacker sent {} B, victim got {} B (x{:.3}); honest fetches {} ({} byte-identical), membership {}; relays' RSS at most {:.1} MiB",
            attack.name(),
            outcome.sent,
            outcome.received,
            outcome.amplification(),
            if outcome.fetched { "ok" } else { "FAILED" },
            outcome.fetches,
            if outcome.membership_kept { "kept" } else { "LOST" },
            outcome.max_rss
        ));
        let moved = |before: &Counters, after: &Counters, prefix: &str| {
            after
                .iter()
                .filter_map(|(name, v)| {
                    let d = v.saturating_sub(before.get(name).copied().unwrap_or(0));
                    let short = name.trim_start_matches(prefix).trim_end_matches("_total");
                    (d > 0 && !short.starts_with("datagrams")).then(|| format!("{short} +{d}"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        if matches!(
            attack,
            Attack::ExitSessions | Attack::ExitSlowDns | Attack::ExitBloat
        ) {
            progress.note(&format!(
                "{}: the exit's counters: {}",
                attack.name(),
                moved(&exit_before, &exit_after, "pb_exit_")
            ));
        } else {
            progress.note(&format!(
                "{}: a mix's gossip counters: {}",
                attack.name(),
                moved(&gossip_before, &gossip_after, "pb_gossip_")
            ));
        }
        if let Some(why) = &outcome.why {
            progress.note(&format!("{}: {why}", attack.name()));
        }
        rows.extend(outcome.rows(*attack, args, imp));
    }
    Ok(rows)
}

/// What every attack needs to know about the network (all of it public, or the attacker's).
struct Context {
    network_seed: [u8; 32],
    epoch: Epoch,
    /// The relays' gossip addresses.
    relays: Vec<SocketAddr>,
    gateway_packet: SocketAddr,
    client_link: SocketAddr,
    /// The descriptors the gateway serves (as any client gets them).
    descriptors: Vec<SignedDescriptor>,
    gateway_identity: pb_control::IdentityKey,
    rate: u32,
}

/// What one attack came to.
struct Outcome {
    sent: u64,
    received: u64,
    fetched: bool,
    /// Honest fetches that came back byte-identical.
    fetches: usize,
    membership_kept: bool,
    max_rss: f64,
    /// Why the honest side failed, if it did.
    why: Option<String>,
}

impl Outcome {
    fn amplification(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            self.received as f64 / self.sent as f64
        }
    }

    fn rows(&self, attack: Attack, args: &AttackArgs, imp: &str) -> Vec<Measurement> {
        let name = attack.name();
        let params = [
            ("seconds", json!(args.seconds)),
            ("rate", json!(args.rate)),
            ("relays", json!(RELAYS)),
        ];
        vec![
            row(
                &format!("attack.{name}.attacker_bytes"),
                imp,
                &params,
                self.sent as f64,
                "B",
            ),
            row(
                &format!("attack.{name}.victim_bytes"),
                imp,
                &params,
                self.received as f64,
                "B",
            ),
            row(
                &format!("attack.{name}.amplification"),
                imp,
                &params,
                (self.amplification() * 1e4).round() / 1e4,
                "ratio",
            ),
            row(
                &format!("attack.{name}.honest_ok"),
                imp,
                &params,
                if self.fetched && self.membership_kept {
                    1.0
                } else {
                    0.0
                },
                "bool",
            ),
            row(
                &format!("attack.{name}.honest_fetches"),
                imp,
                &params,
                self.fetches as f64,
                "fetches",
            ),
            row(
                &format!("attack.{name}.max_rss"),
                imp,
                &params,
                round1(self.max_rss),
                "MiB",
            ),
        ]
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// The relays at one moment: the fewest live members any relay sees, the fewest nodes in
/// any relay's topology, the largest resident memory.
struct Sample {
    min_members: u64,
    min_nodes: usize,
    max_rss: f64,
}

fn sample(net: &Testnet) -> anyhow::Result<Sample> {
    let mut s = Sample {
        min_members: u64::MAX,
        min_nodes: usize::MAX,
        max_rss: 0.0,
    };
    for i in 0..RELAYS {
        let proc = net
            .relay(i)
            .ok_or_else(|| anyhow!("relay {i} is not running"))?;
        s.max_rss = s.max_rss.max(rss_mib(proc.child.id())?);
        let metrics = net.admin_get(i, "/metrics")?;
        let members = metrics
            .lines()
            .find_map(|l| l.strip_prefix("pb_gossip_members "))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| anyhow!("relay {i}'s /metrics has no pb_gossip_members"))?;
        s.min_members = s.min_members.min(members);
        s.min_nodes = s.min_nodes.min(net.view(i).map_or(0, |v| v.nodes));
    }
    Ok(s)
}

/// Metric names and values.
type Counters = std::collections::BTreeMap<String, u64>;

/// Relay `i`'s `/metrics` counters whose names start with `prefix`.
fn counters(net: &Testnet, i: usize, prefix: &str) -> anyhow::Result<Counters> {
    Ok(net
        .admin_get(i, "/metrics")?
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

/// The descriptors the gateway serves, verified.
fn descriptors(net: &Testnet) -> anyhow::Result<Vec<SignedDescriptor>> {
    net.admin_get(0, "/descriptors")?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|h| {
            let bytes = (0..h.len() / 2)
                .map(|k| u8::from_str_radix(h.get(2 * k..2 * k + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .context("a descriptor that is not hex")?;
            SignedDescriptor::parse(&bytes).map_err(|e| anyhow!("a descriptor: {e}"))
        })
        .collect()
}

/// Plays `attack` for `args.seconds` (and as long as the honest fetch takes) while watching
/// the relays.
fn play(
    net: &Testnet,
    attack: Attack,
    context: &Context,
    args: &AttackArgs,
    socks: SocketAddr,
    server: SocketAddr,
    before: &Sample,
) -> anyhow::Result<Outcome> {
    let web = net
        .netns(Node::Web)
        .ok_or_else(|| anyhow!("the testnet has no web namespace"))?;
    let client = net
        .netns(Node::Client)
        .ok_or_else(|| anyhow!("the testnet has no client namespace"))?;
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let received = AtomicU64::new(0);
    let seconds = Duration::from_secs_f64(args.seconds);
    let start = Instant::now();
    let mut min_members = u64::MAX;
    let mut min_nodes = usize::MAX;
    let mut max_rss = 0.0f64;
    let (fetched, attacked) = thread::scope(|scope| -> anyhow::Result<_> {
        let attacker = scope.spawn(|| {
            let result = attack_loop(attack, context, web, &stop, &sent, &received);
            stop.store(true, Ordering::Relaxed);
            result
        });
        // Honest fetches one after the other, the first once the attack is under way, the
        // last begun before its time is up: how many went through, or the first failure.
        let mut fetching = Some(scope.spawn(|| -> anyhow::Result<usize> {
            thread::sleep(Duration::from_secs(1));
            let name = (attack == Attack::ExitSlowDns).then_some(HONEST_NAME);
            let mut done = 0;
            loop {
                client
                    .in_netns(|| honest_fetch(socks, server, name, args.bytes))
                    .context("entering the client's namespace")?
                    .with_context(|| format!("honest fetch {}", done + 1))?;
                done += 1;
                if start.elapsed() >= seconds || stop.load(Ordering::Relaxed) {
                    return Ok(done);
                }
            }
        }));
        let mut fetched = None;
        let mut sampling_error = None;
        // Until the attack's time is up and the fetches are done (or the attacker failed).
        loop {
            match sample(net) {
                Ok(s) => {
                    min_members = min_members.min(s.min_members);
                    min_nodes = min_nodes.min(s.min_nodes);
                    max_rss = max_rss.max(s.max_rss);
                }
                Err(e) => sampling_error = Some(e),
            }
            if let Some(done) = fetching.take_if(|h| h.is_finished()) {
                fetched = Some(done.join());
            }
            if stop.load(Ordering::Relaxed) || (fetched.is_some() && start.elapsed() >= seconds) {
                break;
            }
            thread::sleep(SAMPLE_EVERY);
        }
        stop.store(true, Ordering::Relaxed);
        let fetched = match (fetched, fetching) {
            (Some(f), _) => f,
            (None, Some(h)) => h.join(),
            (None, None) => Err(Box::new("no fetch") as Box<dyn std::any::Any + Send>),
        };
        let attacked = attacker
            .join()
            .map_err(|_| anyhow!("the attacker's thread panicked"))?;
        if let Some(e) = sampling_error {
            return Err(e.context("watching the relays"));
        }
        Ok((fetched, attacked))
    })?;
    attacked.with_context(|| format!("the {} attack", attack.name()))?;
    // The last look, after the attack: nobody declared down since.
    thread::sleep(Duration::from_secs(1));
    let after = sample(net)?;
    min_members = min_members.min(after.min_members);
    min_nodes = min_nodes.min(after.min_nodes);
    max_rss = max_rss.max(after.max_rss);
    let (fetches, fetch_error) = match fetched {
        Ok(Ok(n)) => (n, None),
        Ok(Err(e)) => (0, Some(format!("{e:#}"))),
        Err(_) => (0, Some("the fetching thread panicked".to_owned())),
    };
    let membership_kept = min_members >= before.min_members && min_nodes >= before.min_nodes;
    let why = fetch_error.clone().or_else(|| {
        (!membership_kept).then(|| {
            format!(
                "membership fell: before, every relay saw {} members and {} nodes; during, as few as {min_members} and {min_nodes}",
                before.min_members, before.min_nodes
            )
        })
    });
    Ok(Outcome {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        fetched: fetch_error.is_none(),
        fetches,
        membership_kept,
        max_rss,
        why,
    })
}

/// One honest fetch through pb-client's SOCKS5 port at `socks` (in the client's namespace)
/// of `server`, by `name` if given (the exit resolves it) or by its address; `Ok` only if
/// the body is exactly the file server's `bytes` bytes.
fn honest_fetch(
    socks: SocketAddr,
    server: SocketAddr,
    name: Option<&str>,
    bytes: usize,
) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut s = match (name, server) {
        (Some(name), _) => pb_testnet::socks_connect_name(socks, name, server.port()),
        (None, SocketAddr::V4(v4)) => pb_testnet::socks_connect(socks, v4),
        (None, SocketAddr::V6(_)) => anyhow::bail!("an IPv4 server"),
    }
    .context("pb-client")?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: pb-testnet\r\n\r\n")?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).context("reading the fetch")?;
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| &response[end + 4..])
        .ok_or_else(|| anyhow!("no HTTP answer ({} bytes)", response.len()))?;
    if body != pattern(bytes).as_slice() {
        anyhow::bail!(
            "the body is not the file: {} bytes, {} expected",
            body.len(),
            bytes
        );
    }
    Ok(())
}

/// `/etc/netns/<the exit's namespace>/`: `resolv.conf` naming the victim as the only name
/// server, and `hosts` with the honest name. Removed when dropped (and stale ones of
/// namespaces that are gone, when written).
struct ExitEtc(std::path::PathBuf);

impl ExitEtc {
    fn write(net: &Testnet) -> anyhow::Result<Self> {
        let etc = std::path::Path::new("/etc/netns");
        if let Ok(entries) = std::fs::read_dir(etc) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = name.to_string_lossy().starts_with("pbt-")
                    && !std::path::Path::new("/var/run/netns").join(&name).exists();
                if stale {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let ns = net
            .netns(Node::Relay(RELAYS - 1))
            .ok_or_else(|| anyhow!("the exit has no namespace"))?;
        let dir = etc.join(ns.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let guard = Self(dir);
        std::fs::write(
            guard.0.join("resolv.conf"),
            format!(
                "# pb-perf attack: the victim is the exit's name server\nnameserver {VICTIM}\n"
            ),
        )?;
        std::fs::write(
            guard.0.join("hosts"),
            format!(
                "127.0.0.1 localhost\n{} {HONEST_NAME}\n",
                net.network().address(Node::Web)
            ),
        )?;
        Ok(guard)
    }
}

impl Drop for ExitEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The attacker's own mixnet client: the directory the gateway serves any client, the
/// topology every client computes from it, and packets to the exit through the gateway and
/// one mix per layer, carrying frames of the attacker's choosing, never a SURB (it never
/// reads an answer).
struct ExitClient {
    topology: pb_control::Topology,
    noise: Noise,
}

impl ExitClient {
    fn new(context: &Context, label: &str) -> anyhow::Result<Self> {
        let topology = pb_control::Topology::compute(
            &context.network_seed,
            context.epoch,
            context.descriptors.iter().map(SignedDescriptor::descriptor),
        )
        .map_err(|e| anyhow!("the topology of the gateway's directory: {e}"))?;
        Ok(Self {
            topology,
            noise: Noise::new(label),
        })
    }

    /// A packet for the exit: `frames` as the first message of `session`'s channel.
    fn packet(
        &mut self,
        session: pb_proto::SessionId,
        frames: &[u8],
    ) -> anyhow::Result<[u8; PACKET_LEN]> {
        let mut route = Vec::with_capacity(pb_control::LAYERS);
        for layer in 0..pb_control::LAYERS {
            let nodes = self.topology.layer(layer);
            let node = nodes
                .get(self.noise.below(nodes.len() as u64) as usize)
                .ok_or_else(|| anyhow!("layer {layer} of the topology is empty"))?;
            route.push(Hop {
                node: node.node,
                public_key: node.sphinx_key,
                delay: pb_sphinx::DelayMs(0),
            });
        }
        let mut channel = pb_proto::Channel::new(pb_proto::ChannelConfig::default());
        let message = channel
            .transmit(
                Duration::ZERO,
                pb_proto::message::CLIENT_CHANNEL_ROOM,
                |out, _| out.extend_from_slice(frames),
            )
            .ok_or_else(|| anyhow!("the channel sent nothing"))?;
        let message = pb_proto::ClientMessage {
            session,
            surbs: Vec::new(),
            channel: &message,
        }
        .encode()
        .map_err(|e| anyhow!("encoding a client message: {e}"))?;
        let mut packet = [0u8; PACKET_LEN];
        pb_sphinx::create_packet(
            &mut packet,
            self.topology.epoch(),
            &route,
            pb_proto::message::EXIT_MAILBOX,
            &message,
            &self.noise.bytes32(),
        )
        .map_err(|e| anyhow!("making a packet: {e}"))?;
        Ok(packet)
    }

    /// A fresh session id.
    fn session(&mut self) -> pb_proto::SessionId {
        let mut id = [0u8; 16];
        self.noise.fill(&mut id);
        pb_proto::SessionId(id)
    }
}

/// Frames opening streams 1..=`count` to `target`.
fn opens(count: u32, target: &pb_proto::Target) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 1..=count {
        pb_proto::Frame::Open {
            stream: pb_proto::StreamId(k),
            target: target.clone(),
        }
        .encode(&mut out);
    }
    out
}

/// A stream of pseudo-random bytes (the attacker's; nothing here needs to be secret).
struct Noise {
    key: [u8; 32],
    counter: u64,
}

impl Noise {
    fn new(label: &str) -> Self {
        Self {
            key: blake3::derive_key("PhantomBand pb-perf attack noise", label.as_bytes()),
            counter: 0,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        self.counter += 1;
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        hasher.update(&self.counter.to_le_bytes());
        hasher.finalize_xof().fill(out);
    }

    fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0; 32];
        self.fill(&mut out);
        out
    }

    fn below(&mut self, n: u64) -> u64 {
        let mut b = [0; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b) % n.max(1)
    }
}

/// Keeps a sender at `rate` datagrams a second: sleeps as needed after each send.
struct Pacer {
    rate: f64,
    start: Instant,
    sent: u64,
}

impl Pacer {
    fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            start: Instant::now(),
            sent: 0,
        }
    }

    fn wait(&mut self) {
        self.sent += 1;
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            thread::sleep(ahead);
        }
    }
}

/// A UDP socket bound to `addr` in the web namespace (where the attacker's and the victim's
/// addresses are), reading with a short timeout.
fn socket(web: &pb_testbed::Netns, addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = web
        .in_netns(|| UdpSocket::bind(addr))?
        .with_context(|| format!("binding {addr}"))?;
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(socket)
}

/// Counts what arrives at `socket` into `received` until `stop`; answers each datagram
/// with what `answer` makes of it (counted into `sent`).
fn sink(
    socket: &UdpSocket,
    stop: &AtomicBool,
    received: &AtomicU64,
    sent: &AtomicU64,
    mut answer: impl FnMut(&[u8], SocketAddr) -> Option<Vec<u8>>,
) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        received.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(reply) = answer(&buf[..n], from)
            && socket.send_to(&reply, from).is_ok()
        {
            sent.fetch_add(reply.len() as u64, Ordering::Relaxed);
        }
    }
}

/// A signed descriptor for an attacker's identity (from `seed`) with these addresses and
/// usable Sphinx keys for `epoch` and the next.
fn sybil(
    seed: u8,
    epoch: Epoch,
    packet_addr: SocketAddr,
    gossip_addr: SocketAddr,
) -> anyhow::Result<(IdentityKeyPair, SignedDescriptor)> {
    let identity = IdentityKeyPair::from_seed(&[seed; 32]);
    let key = |e: Epoch| EpochKey::from_secret(e, [seed ^ 0x5a; 32]).public_key();
    let signed = identity
        .sign(&Descriptor {
            identity: identity.public(),
            version: 1,
            role: Role::Mix,
            epoch,
            sphinx_current: key(epoch),
            sphinx_next: key(Epoch(epoch.0 + 1)),
            packet_addr,
            gossip_addr,
            link_key: identity.link_public(),
            transports: vec![],
        })
        .map_err(|e| anyhow!("the sybil's descriptor: {e}"))?;
    Ok((identity, signed))
}

/// A signed SWIM announce from `from` to the relay at `to`.
fn announce(
    identity: &IdentityKeyPair,
    descriptor: &SignedDescriptor,
    from: SocketAddr,
    to: SocketAddr,
) -> anyhow::Result<Vec<u8>> {
    let mut packet = Vec::new();
    let header = Header {
        src: Peer {
            addr: from,
            bump: 1,
        },
        src_incarnation: 0,
        dst: Peer { addr: to, bump: 0 },
        message: Message::Announce,
    };
    SwimCodec
        .encode_header(&header, &mut packet)
        .map_err(|e| anyhow!("encoding an announce: {e:?}"))?;
    // An announce carries nothing after its header (foca refuses one that does).
    Ok(swim_datagram(identity, descriptor.bytes(), &packet))
}

/// Runs `attack` until `stop`, counting the attacker's bytes into `sent` and the victim's
/// into `received`.
fn attack_loop(
    attack: Attack,
    context: &Context,
    web: &pb_testbed::Netns,
    stop: &AtomicBool,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> anyhow::Result<()> {
    let count = |n: usize| {
        sent.fetch_add(n as u64, Ordering::Relaxed);
    };
    match attack {
        Attack::LinkFlood => {
            // The sybil gossips from its own address and answers probes there; the victim
            // is where its descriptor says packets go.
            let own = SocketAddr::from((ATTACKER, GOSSIP_PORT));
            let victim = SocketAddr::from((VICTIM, pb_testnet::PACKET_PORT));
            let (identity, descriptor) = sybil(0xa1, context.epoch, victim, own)?;
            let gossip = socket(web, own)?;
            let at_victim = socket(web, victim)?;
            let ignored = AtomicU64::new(0);
            let ignored = &ignored;
            thread::scope(|scope| -> anyhow::Result<()> {
                let at_victim = &at_victim;
                scope.spawn(move || sink(at_victim, stop, received, ignored, |_, _| None));
                let replies = gossip.try_clone()?;
                let identity = &identity;
                scope.spawn(move || {
                    sink(&replies, stop, ignored, sent, |datagram, from| {
                        let (&kind, body) = datagram.split_first()?;
                        (kind == pb_control::probe::KIND_PROBE)
                            .then(|| pb_control::probe::parse_probe(body))
                            .flatten()
                            .map(|cookie| pb_control::probe::echo(identity, &cookie, from))
                    });
                });
                let result = (|| {
                    while !stop.load(Ordering::Relaxed) {
                        for relay in &context.relays {
                            let datagram = announce(identity, &descriptor, own, *relay)?;
                            if gossip.send_to(&datagram, relay).is_ok() {
                                count(datagram.len());
                            }
                        }
                        thread::sleep(Duration::from_millis(200));
                    }
                    Ok(())
                })();
                // The listeners end with it, also after a failure.
                stop.store(true, Ordering::Relaxed);
                result
            })
        }
        Attack::DirectoryPush => {
            let victim = SocketAddr::from((VICTIM, GOSSIP_PORT));
            // Not link_flood's packet address: the first claim of an address stands.
            let packet = SocketAddr::from((VICTIM, pb_testnet::PACKET_PORT + 2));
            let (identity, descriptor) = sybil(0xa2, context.epoch, packet, victim)?;
            let datagrams = context
                .relays
                .iter()
                .map(|relay| Ok((*relay, announce(&identity, &descriptor, victim, *relay)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut next = datagrams.iter().cycle();
            let flood = Flood::new(web, victim, context.rate.min(2000), stop, sent, received)?;
            flood.run(|| {
                next.next()
                    .map(|(to, d)| (*to, d.clone()))
                    .ok_or_else(|| anyhow!("no relays"))
            })
        }
        Attack::SwimJunk => {
            let victim = SocketAddr::from((VICTIM, 40_000));
            // Half plain junk, half SWIM datagrams with a valid descriptor and a bad
            // signature (each costs the relay a signature check).
            let (identity, descriptor) = sybil(0xa3, context.epoch, victim, victim)?;
            let mut noise = Noise::new("swim_junk");
            let mut k = 0usize;
            let flood = Flood::new(web, victim, context.rate, stop, sent, received)?;
            flood.run(|| {
                let relay = context.relays[k % context.relays.len()];
                k += 1;
                let datagram = if k.is_multiple_of(2) {
                    let mut d = announce(&identity, &descriptor, victim, relay)?;
                    let last = d.len() - 1;
                    d[last] ^= 1;
                    d
                } else {
                    let mut d = vec![0u8; 64 + noise.below(1_300) as usize];
                    noise.fill(&mut d);
                    d[0] = 1 + (noise.below(5) as u8);
                    d
                };
                Ok((relay, datagram))
            })
        }
        Attack::HelloFlood => {
            let victim = SocketAddr::from((VICTIM, 40_001));
            let link_key = gateway(context)?.descriptor().link_key;
            let mut noise = Noise::new("hello_flood");
            let flood = Flood::new(web, victim, context.rate, stop, sent, received)?;
            flood.run(|| {
                let mut nonce = [0u8; pb_link::handshake::NONCE];
                noise.fill(&mut nonce);
                let (_, init) = pb_link::handshake::Initiator::new(
                    &link_key,
                    pb_link::Rates { down: 0, up: 64 },
                    nonce,
                )
                .map_err(|e| anyhow!("the gateway's link key: {e}"))?;
                Ok((context.client_link, init.to_vec()))
            })
        }
        Attack::GatewayFlood => {
            let victim = SocketAddr::from((VICTIM, 40_002));
            let gateway = gateway(context)?.descriptor();
            let route = [Hop {
                node: gateway.node_id(),
                public_key: gateway
                    .sphinx_key(context.epoch)
                    .ok_or_else(|| anyhow!("the gateway has no key for this epoch"))?,
                delay: pb_sphinx::DelayMs(0),
            }];
            let mut noise = Noise::new("gateway_flood");
            let flood = Flood::new(web, victim, context.rate, stop, sent, received)?;
            flood.run(|| {
                let mut packet = [0u8; PACKET_LEN];
                let mut mailbox = [0u8; 16];
                noise.fill(&mut mailbox);
                pb_sphinx::create_packet(
                    &mut packet,
                    context.epoch,
                    &route,
                    MailboxId(mailbox),
                    &[],
                    &noise.bytes32(),
                )
                .map_err(|e| anyhow!("making a packet: {e}"))?;
                Ok((context.gateway_packet, packet.to_vec()))
            })
        }
        Attack::ExitSessions | Attack::ExitSlowDns | Attack::ExitBloat => {
            exit_attack(attack, context, web, stop, sent, received)
        }
    }
}

/// The gateway's descriptor in the directory it serves.
fn gateway(context: &Context) -> anyhow::Result<&SignedDescriptor> {
    context
        .descriptors
        .iter()
        .find(|d| d.descriptor().identity == context.gateway_identity)
        .ok_or_else(|| anyhow!("the gateway's descriptor is not in its directory"))
}

/// A flood from the victim's address (spoofed): what the attacker sends is counted as its,
/// what comes back to that address as the victim's.
struct Flood<'a> {
    socket: UdpSocket,
    rate: u32,
    stop: &'a AtomicBool,
    sent: &'a AtomicU64,
    received: &'a AtomicU64,
}

impl<'a> Flood<'a> {
    fn new(
        web: &pb_testbed::Netns,
        victim: SocketAddr,
        rate: u32,
        stop: &'a AtomicBool,
        sent: &'a AtomicU64,
        received: &'a AtomicU64,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            socket: socket(web, victim)?,
            rate,
            stop,
            sent,
            received,
        })
    }

    /// Sends each datagram `make` makes to where it says, at the flood's rate, until stopped.
    fn run(
        self,
        mut make: impl FnMut() -> anyhow::Result<(SocketAddr, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let listener = self.socket.try_clone()?;
        let ignored = AtomicU64::new(0);
        let (stop, received) = (self.stop, self.received);
        thread::scope(|scope| {
            scope.spawn(|| sink(&listener, stop, received, &ignored, |_, _| None));
            let mut pacer = Pacer::new(self.rate);
            let result = (|| {
                while !stop.load(Ordering::Relaxed) {
                    let (to, datagram) = make()?;
                    if self.socket.send_to(&datagram, to).is_ok() {
                        self.sent
                            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
                    }
                    pacer.wait();
                }
                Ok(())
            })();
            // The listener ends with it, also after a failure.
            stop.store(true, Ordering::Relaxed);
            result
        })
    }
}

/// The exit attacks: the attacker's client sends from its own address (the gateway takes
/// any client's packets there) at up to `context.rate` packets a second.
fn exit_attack(
    attack: Attack,
    context: &Context,
    web: &pb_testbed::Netns,
    stop: &AtomicBool,
    sent: &AtomicU64,
    received: &AtomicU64,
) -> anyhow::Result<()> {
    let mut client = ExitClient::new(context, attack.name())?;
    let own = socket(web, SocketAddr::from((ATTACKER, 40_003)))?;
    let victim_tcp = web.in_netns(|| std::net::TcpListener::bind((VICTIM, VICTIM_TCP)))??;
    victim_tcp.set_nonblocking(true)?;
    let dns = socket(web, SocketAddr::from((VICTIM, 53)))?;
    let bloat = web.in_netns(|| std::net::TcpListener::bind((ATTACKER, BLOAT_PORT)))??;
    bloat.set_nonblocking(true)?;
    let ignored = AtomicU64::new(0);
    let ignored = &ignored;
    // What each packet asks of the exit, and how fast: one connection per fresh session;
    // 8 names per fresh session; 32 streams per session to the attacker's server.
    let (rate, per_packet) = match attack {
        Attack::ExitSessions => (context.rate.min(EXIT_RATE), 1),
        Attack::ExitSlowDns => (context.rate.min(EXIT_RATE), 8),
        _ => (context.rate.min(20), 32),
    };
    thread::scope(|scope| -> anyhow::Result<()> {
        // The victim: a name server that never answers, and a TCP server that takes every
        // connection, keeps it and counts what comes.
        scope.spawn(|| sink(&dns, stop, received, ignored, |_, _| None));
        scope.spawn(|| hold_connections(&victim_tcp, stop, received, None));
        // The attacker's server: sends to every connection as fast as it is read.
        scope.spawn(|| hold_connections(&bloat, stop, ignored, Some(sent)));
        let mut pacer = Pacer::new(rate);
        let mut k = 0u64;
        let mut send_all = || -> anyhow::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                let frames = match attack {
                    Attack::ExitSessions => {
                        opens(per_packet, &pb_proto::Target::V4(VICTIM, VICTIM_TCP))
                    }
                    Attack::ExitSlowDns => {
                        let mut out = Vec::new();
                        for n in 0..per_packet {
                            k += 1;
                            pb_proto::Frame::Open {
                                stream: pb_proto::StreamId(n + 1),
                                target: pb_proto::Target::Name(format!("slow{k}.attack.test"), 80),
                            }
                            .encode(&mut out);
                        }
                        out
                    }
                    _ => opens(per_packet, &pb_proto::Target::V4(ATTACKER, BLOAT_PORT)),
                };
                let session = client.session();
                let packet = client.packet(session, &frames)?;
                if own.send_to(&packet, context.gateway_packet).is_ok() {
                    sent.fetch_add(packet.len() as u64, Ordering::Relaxed);
                }
                pacer.wait();
            }
            Ok(())
        };
        let result = send_all();
        // The victim's and the attacker's servers end with it, also after a failure.
        stop.store(true, Ordering::Relaxed);
        result
    })
}

/// Accepts every connection on `listener` and keeps it until `stop`, counting what arrives
/// into `received`; with `push`, also writes to each as fast as it takes bytes, counted
/// there.
fn hold_connections(
    listener: &std::net::TcpListener,
    stop: &AtomicBool,
    received: &AtomicU64,
    push: Option<&AtomicU64>,
) {
    use std::io::{ErrorKind, Read as _, Write as _};
    let mut held: Vec<std::net::TcpStream> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let chunk = vec![0x5au8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let mut idle = true;
        while let Ok((stream, _)) = listener.accept() {
            if stream.set_nonblocking(true).is_ok() {
                held.push(stream);
                idle = false;
            }
        }
        held.retain_mut(|stream| {
            match stream.read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                    idle = false;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
            if let Some(pushed) = push {
                match stream.write(&chunk) {
                    Ok(n) => {
                        pushed.fetch_add(n as u64, Ordering::Relaxed);
                        idle = idle && n == 0;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(_) => return false,
                }
            }
            true
        });
        if idle {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// The announce an attacker sends is what a relay's codec reads: its header names the
    /// claimed source.
    #[test]
    fn an_announce_decodes_with_the_claimed_source() {
        let from = SocketAddr::from((VICTIM, GOSSIP_PORT));
        let to = SocketAddr::from(([198, 18, 0, 1], GOSSIP_PORT));
        let (identity, descriptor) =
            sybil(0xa2, Epoch(5), SocketAddr::from((VICTIM, 1)), from).unwrap();
        let datagram = announce(&identity, &descriptor, from, to).unwrap();
        let parsed = pb_control::wire::parse_swim(&datagram[1..]).unwrap();
        let header = SwimCodec.decode_header(parsed.packet).unwrap();
        assert_eq!(header.src.addr, from);
        assert_eq!(header.dst.addr, to);
        assert!(matches!(header.message, Message::Announce));
    }

    #[test]
    fn the_noise_differs_and_stays_in_range() {
        let mut noise = Noise::new("test");
        let (a, b) = (noise.bytes32(), noise.bytes32());
        assert_ne!(a, b);
        assert!((0..1000).all(|_| noise.below(7) < 7));
    }
}
