//! `pb-client`: a SOCKS5 proxy on 127.0.0.1:1080 whose TCP connections cross the
//! PhantomBand mixnet to an exit, with replies coming back through SURBs.
//!
//! Everything it says to its gateway goes over the client link (`pb_link`): a Noise
//! handshake to the gateway's link key (from the network file, or `--gateway-key`), then
//! random-looking records at the profile's constant rate each way, padding when nothing is
//! due, carried by a transport (`pb_transport`). Over it, it fetches the signed directory,
//! verifies every descriptor and computes the topology itself (with a network file, only a
//! view k stewards signed counts), checks that the node the gateway claims to be has the
//! link key its handshake was made to, and registers a mailbox for its replies; then it
//! makes one packet per tick of a Poisson process, a real one when a session has something
//! to send and cover otherwise. Names are
//! resolved by the exit, never here. Keys, session ids and the mailbox are fresh every run,
//! and nothing is written to disk; nothing about destinations or routes is logged.
#![forbid(unsafe_code)]

mod apps;
mod carrier;
mod directory;
mod doh;
mod link_thread;
mod lookups;
mod loops;
mod obfs4;
mod reputation;
mod schedule;
mod session;
mod udp_relay;
mod vpn;

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use clap::Parser;
use mio::{Events, Interest, Poll, Token, net::TcpListener};
use pb_control::{Topology, network::GatewayEntry};
use pb_proto::link::{self, FromGateway};
use pb_sphinx::{MailboxId, NodeId, PACKET_LEN};
use pb_transport::TransportKind;

use crate::{
    apps::App,
    carrier::{TransportSetup, connect, fit_profile, start_link, transports_of},
    directory::Fetch,
    link_thread::{Event, LinkThread},
    loops::Loops,
    schedule::{Due, Schedule},
    session::{FETCH_GAP, Profile, Random, Session, slot_packet},
};

/// Gateways built into this binary (`PB_BOOTSTRAP` at build time: comma-separated
/// entries as a network file's `gateway` lines give them, `ADDR KEY ...`).
const BOOTSTRAP: Option<&str> = option_env!("PB_BOOTSTRAP");
/// The network seed built into this binary (`PB_NETWORK_SEED` at build time, hex).
const NETWORK_SEED: Option<&str> = option_env!("PB_NETWORK_SEED");
/// The network file built into this binary (`PB_NETWORK_FILE=PATH` at build time; empty:
/// none). It is used when no network is given on the command line.
const BUILT_IN_NETWORK: &str = include_str!(concat!(env!("OUT_DIR"), "/network.txt"));

#[derive(Parser, Debug)]
#[command(version, about = "PhantomBand client: SOCKS5 over the mixnet")]
struct Args {
    /// Where applications connect (SOCKS5).
    #[arg(long, default_value = "127.0.0.1:1080")]
    listen: SocketAddr,
    /// A gateway's client-link address (default: the network file's, or the ones built in).
    #[arg(long)]
    gateway: Option<SocketAddr>,
    /// The link key of the gateway `--gateway` names, 64 hex digits (pb-relay logs it at
    /// start); not needed when the network file lists that gateway.
    #[arg(long)]
    gateway_key: Option<String>,
    /// The network file (docs/spec/network-file.md): the network's seed, stewards and
    /// gateways. With it, a gateway's directory is used only if k stewards signed it; a
    /// gateway that serves anything else is left for the next. Default: the one built in,
    /// unless --gateway or --network-seed is given.
    #[arg(long)]
    network: Option<std::path::PathBuf>,
    /// Print the network file built into this binary and exit (exit status 1: none).
    #[arg(long)]
    show_network: bool,
    /// The network's seed, 64 hex digits (default: the one built in).
    #[arg(long)]
    network_seed: Option<String>,
    /// What carries the link to the gateway: `quic` (HTTP/3), `wss` (WebSocket over TLS),
    /// `obfs4`, `doh` (DNS queries through --doh-resolver), `udp`, or `auto`: plain UDP (the
    /// cheapest), then QUIC, WSS, obfs4 and DoH where the gateway offers them (DoH only with
    /// a resolver named), each tried until one answers. Where UDP links are watched
    /// or blocked, ask for a disguise directly.
    #[arg(long, default_value = "auto")]
    transport: String,
    /// Reach the first gateway through this obfs4 bridge rather than its own obfs4 offer,
    /// e.g. an obfs4proxy server in front of it: `obfs4 ADDR:PORT cert=… iat-mode=N` (a
    /// bridge line; implies `--transport obfs4`).
    #[arg(long)]
    bridge: Option<String>,
    /// Speak obfs4 through this obfs4proxy binary (run as a managed client transport, with
    /// a temporary state directory) rather than the built-in implementation.
    #[arg(long, value_name = "PATH")]
    obfs4proxy: Option<std::path::PathBuf>,
    /// Carry the link in DNS queries through this DNS-over-HTTPS resolver
    /// (`https://HOST[:PORT]/PATH`), to gateways that offer DNS (`--transport doh`; `auto`
    /// tries it last). A host name is looked up with the system's resolver: give an address
    /// to avoid that.
    #[arg(long, value_name = "URL")]
    doh_resolver: Option<String>,
    /// The certificates (PEM) that vouch for the DoH resolver (default: the system's).
    #[arg(long, value_name = "FILE")]
    doh_ca: Option<std::path::PathBuf>,
    /// DNS queries a second to the resolver, busy or idle: the DNS link's capacity (each
    /// carries some 130 bytes up and up to about 900 down).
    #[arg(long, default_value_t = pb_doh::DEFAULT_QUERY_RATE)]
    doh_rate: u32,
    /// How much to send: `default` (50 packets a second) or `low-power` (5).
    #[arg(long, default_value = "default")]
    profile: String,
    /// Stop after this many seconds (for tests); default: until interrupted.
    #[arg(long)]
    seconds: Option<f64>,
    /// VPN mode: make the TUN device NAME and send all of this machine's traffic, IPv4 and
    /// IPv6, through it into the mixnet (TCP as streams, DNS answered from the exit's
    /// lookups, other UDP as datagrams through the exit), with a kill switch: a rule and routing table 5042 whose
    /// `unreachable` default outlives pb-client. Needs root or CAP_NET_ADMIN.
    #[arg(long, value_name = "NAME", conflicts_with = "tun_fd")]
    tun: Option<String>,
    /// VPN mode on a TUN device already open as file descriptor N (Android's VpnService,
    /// or a helper that set up the device and its routes; nothing else is touched).
    #[arg(long, value_name = "N")]
    tun_fd: Option<i32>,
    /// The TUN device's MTU.
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1280..=65535))]
    mtu: u32,
    /// INSECURE, for the anonymity harness's known-bad setup only: no cover packets and no
    /// link padding, so the link shows exactly when you are busy.
    #[arg(long, hide = true)]
    insecure_no_cover: bool,
}

/// The OS's randomness.
struct OsRandom;

impl Random for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) {
        // The OS generator does not fail on Linux once booted; a failure leaves zeros,
        // which would only make packets and ids predictable, so stop instead.
        if getrandom::fill(buf).is_err() {
            tracing::error!("the OS random generator failed");
            std::process::exit(1);
        }
    }
}

fn main() {
    pb_log::init("pb-client");
    let args = Args::parse();
    if args.show_network {
        if BUILT_IN_NETWORK.is_empty() {
            eprintln!("pb-client: this build has no network file built in (PB_NETWORK_FILE)");
            std::process::exit(1);
        }
        print!("{BUILT_IN_NETWORK}");
        return;
    }
    if let Err(e) = run(args) {
        let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
        eprintln!("pb-client: {}", chain.join(": "));
        std::process::exit(1);
    }
}

const LISTENER: Token = Token(0);
const CARRIER: Token = Token(1);
/// Sessions at once (one per SOCKS username/password, plus the default one).
const MAX_SESSIONS: usize = 16;
type Isolation = Option<(Vec<u8>, Vec<u8>)>;

struct Client {
    poll: Poll,
    listener: TcpListener,
    /// The link to the gateway in use (on a thread of its own, with its carrier).
    link: LinkThread,
    /// Wakes the poll when the link thread has an event.
    waker: Arc<mio::Waker>,
    /// When the link died with no other gateway reachable: try again a second later.
    dead_since: Option<Duration>,
    /// Every gateway to try, in order, and which one is in use.
    gateways: Vec<GatewayEntry>,
    gateway_index: usize,
    /// The transport asked for (`None`: auto), and which of the gateway's is in use.
    transport: Option<TransportKind>,
    /// How obfs4 is spoken, the bridge line given, the DoH resolver.
    setup: TransportSetup,
    transport_index: usize,
    /// The network file, when given: views are checked against its stewards.
    network: Option<pb_control::network::NetworkFile>,
    /// The gateway's cosigned checkpoint for the fetch in progress.
    checkpoint: Option<Vec<u8>>,
    network_seed: [u8; 32],
    profile: Profile,
    random: OsRandom,
    token: [u8; 32],
    mailbox: MailboxId,
    /// The node the gateway's directory pages say it is, once that node is a gateway of
    /// the verified view whose link key is the one our handshake was made to.
    claimed: Option<NodeId>,
    /// Whether the gateway registered our mailbox with this link.
    registered: bool,
    /// The gateway, once the claim holds and our mailbox is registered.
    gateway: Option<NodeId>,
    topology: Option<Topology>,
    /// The route weights of the reputation table the stewards last committed to (its
    /// hash), once fetched and checked; the fetch of a newer one.
    weights: Option<([u8; 32], reputation::Weights)>,
    reputation: Option<reputation::ReputationFetch>,
    fetch: Fetch,
    sessions: Vec<(Isolation, Session)>,
    apps: HashMap<Token, App>,
    /// SOCKS UDP relays, by their sockets' tokens.
    associations: HashMap<Token, udp_relay::Association>,
    udp: udp_relay::UdpCounters,
    /// VPN mode, when asked for.
    vpn: Option<vpn::Vpn>,
    next_token: usize,
    origin: Instant,
    schedule: Schedule,
    loops: Loops,
    next_fetch: Duration,
    next_register: Duration,
    buf: Vec<u8>,
    turn: usize,
    cover: u64,
}

impl Drop for Client {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut profile = match args.profile.as_str() {
        "default" => Profile::DEFAULT,
        "low-power" => Profile::LOW_POWER,
        other => return Err(anyhow!("--profile: {other:?} is not default or low-power")),
    };
    if args.insecure_no_cover {
        eprintln!(
            "pb-client: --insecure-no-cover: no cover, no padding: your link shows when you are busy (a test setup, never for use)"
        );
        profile.cover = false;
    }
    let network = match &args.network {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("--network: {}", path.display()))?;
            Some(
                pb_control::network::NetworkFile::parse(&bytes)
                    .map_err(|e| anyhow!("--network: {}: {e}", path.display()))?,
            )
        }
        // The built-in file, unless the command line names a network the old way.
        None if !BUILT_IN_NETWORK.is_empty()
            && args.gateway.is_none()
            && args.network_seed.is_none() =>
        {
            let file = pb_control::network::NetworkFile::parse(BUILT_IN_NETWORK.as_bytes())
                .map_err(|e| anyhow!("the network file built into this binary: {e}"))?;
            tracing::info!("network {} (built in)", file.stewards.network());
            Some(file)
        }
        None => None,
    };
    let mut gateways: Vec<GatewayEntry> = Vec::new();
    if let Some(addr) = args.gateway {
        let listed = network
            .as_ref()
            .and_then(|n| n.gateways.iter().find(|g| g.addr == addr));
        let link_key = match (&args.gateway_key, listed) {
            (Some(hex), _) => pb_control::network::hex32(hex)
                .ok_or_else(|| anyhow!("--gateway-key: expected 64 hex digits"))?,
            (None, Some(g)) => g.link_key,
            (None, None) => {
                return Err(anyhow!(
                    "--gateway {addr}: its link key is needed too: pass --gateway-key HEX \
                     (pb-relay logs it when it starts)"
                ));
            }
        };
        gateways.push(GatewayEntry {
            addr,
            link_key,
            offers: listed.map(|g| g.offers.clone()).unwrap_or_default(),
        });
    } else if args.gateway_key.is_some() {
        return Err(anyhow!("--gateway-key: it goes with --gateway ADDR:PORT"));
    }
    if let Some(n) = &network {
        gateways.extend(
            n.gateways
                .iter()
                .filter(|g| Some(g.addr) != args.gateway)
                .cloned(),
        );
    }
    if gateways.is_empty() {
        gateways.extend(
            BOOTSTRAP
                .unwrap_or("")
                .split(',')
                .filter_map(|g| GatewayEntry::parse(g.trim()).ok()),
        );
    }
    let first = gateways.first().cloned().ok_or_else(|| {
        anyhow!(
            "no gateway: this build has none built in; pass --network FILE or --gateway ADDR:PORT --gateway-key HEX"
        )
    })?;
    let network_seed = match (&network, args.network_seed.as_deref().or(NETWORK_SEED)) {
        (Some(n), Some(hex))
            if pb_control::network::hex32(hex) != Some(n.seed) && args.network_seed.is_some() =>
        {
            return Err(anyhow!(
                "--network-seed: the network file names another seed"
            ));
        }
        (Some(n), _) => n.seed,
        (None, Some(hex)) => pb_control::network::hex32(hex)
            .ok_or_else(|| anyhow!("--network-seed: expected 64 hex digits"))?,
        (None, None) => {
            return Err(anyhow!(
                "no network: this build has none built in; pass --network FILE (or --network-seed HEX)"
            ));
        }
    };
    if network.is_none() {
        tracing::warn!(
            "no network file: the gateway's directory is used as served, unchecked (pass --network FILE)"
        );
    }
    let limit = args
        .seconds
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .map_err(|_| anyhow!("--seconds: expected a number of seconds"))
        })
        .transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }

    let poll = Poll::new().context("mio poll")?;
    let mut listener = TcpListener::bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut random = OsRandom;
    let transport = match args.transport.as_str() {
        "auto" if args.bridge.is_some() => Some(TransportKind::Obfs4),
        "auto" => None,
        name => Some(
            TransportKind::from_name(name)
                .filter(|k| {
                    matches!(
                        k,
                        TransportKind::Udp
                            | TransportKind::Quic
                            | TransportKind::Wss
                            | TransportKind::Obfs4
                            | TransportKind::Doh
                    )
                })
                .ok_or_else(|| {
                    anyhow!("--transport: {name:?} is not quic, wss, obfs4, doh, udp or auto")
                })?,
        ),
    };
    if args.bridge.is_some() && transport != Some(TransportKind::Obfs4) {
        return Err(anyhow!(
            "--bridge: it is an obfs4 bridge; drop --transport {}",
            args.transport
        ));
    }
    let setup = TransportSetup {
        bridge: args
            .bridge
            .as_deref()
            .map(obfs4::Bridge::parse)
            .transpose()?
            .map(|b| (first.addr, b)),
        obfs4proxy: args
            .obfs4proxy
            .as_deref()
            .map(obfs4::ManagedClient::start)
            .transpose()?,
        doh: args
            .doh_resolver
            .as_deref()
            .map(|url| doh::Resolver::new(url, args.doh_ca.as_deref(), args.doh_rate))
            .transpose()?,
    };
    if transport == Some(TransportKind::Doh) && setup.doh.is_none() {
        return Err(anyhow!(
            "--transport doh: name the DoH resolver with --doh-resolver URL"
        ));
    }
    let kinds = transports_of(&first, transport, &setup);
    let kind = *kinds.first().ok_or_else(|| {
        anyhow!(
            "gateway {}: it offers no {} transport",
            first.addr,
            args.transport
        )
    })?;
    // VPN mode's device and routes, before the link: its route to the gateway must already
    // go around the device.
    let device = match (&args.tun, args.tun_fd) {
        (Some(name), _) => {
            let addrs: Vec<SocketAddr> = gateways.iter().map(|g| g.addr).collect();
            let bridge = setup.bridge.as_ref().map(|(_, b)| b.addr);
            Some(vpn::Device::Make {
                name: name.clone(),
                mtu: args.mtu,
                bypass: vpn::bypass(&addrs, bridge, args.doh_resolver.as_deref())?,
            })
        }
        (None, Some(fd)) => Some(vpn::Device::Fd { fd, mtu: args.mtu }),
        (None, None) => None,
    };
    let vpn = device
        .map(|d| {
            let seed = random.seed();
            vpn::Vpn::start(
                d,
                poll.registry(),
                u64::from_le_bytes([
                    seed[0], seed[1], seed[2], seed[3], seed[4], seed[5], seed[6], seed[7],
                ]),
            )
        })
        .transpose()?;
    let carrier = connect(&first, kind, &setup)?;
    let profile = fit_profile(profile, carrier.as_ref());
    let waker = Arc::new(mio::Waker::new(poll.registry(), CARRIER).context("mio waker")?);
    let link = start_link(carrier, &first, &profile, &mut random, &waker)?;
    let token = random.seed();
    let loops = Loops::new();
    let schedule = Schedule::new(&random.seed(), &profile, Duration::ZERO);
    let mut nonce = [0u8; 8];
    random.fill(&mut nonce);
    let mut client = Client {
        poll,
        listener,
        link,
        waker,
        dead_since: None,
        gateways,
        gateway_index: 0,
        transport,
        setup,
        transport_index: 0,
        network,
        checkpoint: None,
        network_seed,
        profile,
        random,
        mailbox: link::mailbox_of(&token),
        token,
        claimed: None,
        registered: false,
        gateway: None,
        topology: None,
        weights: None,
        reputation: None,
        fetch: Fetch::new(nonce),
        sessions: Vec::new(),
        apps: HashMap::new(),
        associations: HashMap::new(),
        udp: udp_relay::UdpCounters::default(),
        vpn,
        next_token: 2,
        origin: Instant::now(),
        schedule,
        loops,
        next_fetch: Duration::ZERO,
        next_register: Duration::ZERO,
        buf: vec![0; 64 * 1024],
        turn: 0,
        cover: 0,
    };
    // The gateway's address is public (it is in the directory); the user's is never logged.
    tracing::info!(
        "SOCKS5 on {}, gateway {} over {}, profile {}",
        args.listen,
        first.addr,
        client.link.kind(),
        args.profile
    );
    match (&args.tun, args.tun_fd) {
        (Some(name), _) => tracing::info!(
            "VPN mode on {name}: all traffic into the mixnet (rule {} → table {}; kill switch: an unreachable default there)",
            pb_tun::routing::RULE_PRIORITY,
            pb_tun::routing::TABLE
        ),
        (None, Some(fd)) => tracing::info!("VPN mode on file descriptor {fd}"),
        _ => {}
    }
    let started = Instant::now();
    let mut events = Events::with_capacity(256);
    let mut announced = false;
    while !stop.load(std::sync::atomic::Ordering::Relaxed)
        && limit.is_none_or(|l| started.elapsed() < l)
    {
        let now = client.origin.elapsed();
        let mut wait = client
            .schedule
            .next()
            .0
            .saturating_sub(now)
            .min(Duration::from_millis(50));
        if let Some(stack) = client.vpn.as_mut().and_then(vpn::Vpn::wait) {
            wait = wait.min(stack);
        }

        if let Err(e) = client.poll.poll(&mut events, Some(wait))
            && e.kind() != ErrorKind::Interrupted
        {
            return Err(e).context("poll");
        }

        for event in events.iter() {
            match event.token() {
                LISTENER => client.accept(),
                CARRIER => {}
                token if client.associations.contains_key(&token) => client.udp_ready(token),
                token => {
                    if let Some(app) = client.apps.get_mut(&token) {
                        app.may_read = true;
                    }
                    client.app_ready(token);
                }
            }
        }
        client.pump();
        client.vpn_turn();
        client.timers();
        client.send_due();
        client.serve_apps();
        client.vpn_turn();
        if !announced && client.topology.is_some() && client.gateway.is_some() {
            announced = true;
            if let Some(t) = &client.topology {
                let relays = t.nodes().count();
                tracing::info!(
                    "ready: {relays} relays verified, topology {}, epoch {}; the link carries \
                     {} records/s up and {} down, idle or busy (about {:.1} GB a day)",
                    hex(&t.hash()[..8]),
                    t.epoch().0,
                    client.profile.uplink_rate,
                    client.profile.downlink_rate,
                    client.profile.bytes_per_day() / 1e9
                );
            }
        }
    }
    // A stop the user asked for: VPN mode's routes go (a crash or an error keeps them).
    if let Some(vpn) = client.vpn.as_mut() {
        vpn.release();
    }
    // Counters only: how much was sent and came back, nothing about where.
    for (_, session) in &client.sessions {
        let s = session.stats();
        tracing::info!(
            "session: {} packets, {} SURBs handed out, {} replies, {} unreadable",
            s.packets,
            s.surbs_sent,
            s.replies,
            s.bad_replies
        );
    }
    let loops = client.loops.stats();
    tracing::info!(
        "{} cover packets; {} uplink slots missed (the event loop fell behind: sent late); loops: {} sent, {} back, {} lost",
        client.cover,
        client.link.missed(),
        loops.sent,
        loops.returned,
        loops.lost
    );
    if let Some(v) = &client.vpn {
        let (c, s) = (&v.counters, v.stack_counters());
        tracing::info!(
            "VPN: {} packets in, {} out, {} TCP flows ({} refused), {} DNS queries answered ({} SERVFAIL, {} malformed), {} UDP flows ({} refused), {} datagrams from applications ({} to the exit, {} dropped), {} back; dropped: {} multicast, {} other protocols, {} malformed, {} over the flow limit, {} over the MTU, {} unwritten",
            s.packets_in,
            s.packets_out,
            s.flows,
            c.flows_refused,
            c.dns_answered,
            c.dns_failed,
            c.dns_malformed,
            c.udp_flows,
            c.udp_refused,
            s.udp,
            c.datagrams_out,
            c.datagrams_dropped,
            c.datagrams_in,
            s.multicast,
            s.other,
            s.malformed,
            s.full,
            s.too_big,
            c.write_failed
        );
    }
    let u = &client.udp;
    if *u != udp_relay::UdpCounters::default() {
        tracing::info!(
            "SOCKS UDP: {} DNS queries answered ({} SERVFAIL), {} datagrams relayed, {} back, {} dropped, {} malformed, {} from strangers, {} to names, {} answers unsent",
            u.answered,
            u.failed,
            u.relayed,
            u.back,
            u.dropped,
            u.malformed,
            u.strangers,
            u.names,
            u.send_failed
        );
    }
    Ok(())
}

/// Whether `node` is a gateway (layer 0) of `topology`.
fn is_gateway(topology: &Topology, node: NodeId) -> bool {
    topology.layer(0).iter().any(|p| p.node == node)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Client {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Queues a request for the gateway, ahead of the packets.
    fn request(&mut self, message: pb_link::Message) {
        // A full queue drops it; what matters is asked again.
        self.link.send(message, true);
    }

    /// Takes what the link thread reports: the gateway's messages, or the link's end.
    fn pump(&mut self) {
        let now = self.now();
        while let Some(event) = self.link.poll_event() {
            match event {
                Event::Message(message) => self.message(now, &message),
                Event::Failed(why) => return self.link_failed(&why),
            }
        }
    }

    /// Registration and directory fetches.
    fn timers(&mut self) {
        let now = self.now();
        if self
            .dead_since
            .is_some_and(|t| now.saturating_sub(t) >= Duration::from_secs(1))
        {
            self.link_failed("no gateway was reachable");
        }
        if self.link.is_open() && !self.registered && now >= self.next_register {
            // Once per link: the mailbox stays with this link until another registers it.
            self.request(link::register(&self.token));
            self.next_register = now + Duration::from_secs(1);
        }
        if now >= self.next_fetch {
            if self.fetch.is_complete() {
                let mut nonce = [0u8; 8];
                self.random.fill(&mut nonce);
                self.fetch = Fetch::new(nonce);
                self.checkpoint = None;
            }
            for page in self.fetch.missing() {
                self.request(link::request(self.fetch.nonce, page));
            }
            if self.network.is_some() && self.checkpoint.is_none() {
                self.request(link::checkpoint_request(self.fetch.nonce));
            }
            if let Some(fetch) = &self.reputation {
                let (nonce, missing) = (fetch.nonce, fetch.missing());
                for page in missing {
                    self.request(link::reputation_request(nonce, page));
                }
            }
            self.next_fetch = now
                + if self.topology.is_some() {
                    FETCH_GAP
                } else {
                    Duration::from_secs(1)
                };
        }
    }

    /// Every send and loop due: each packet made at its time and queued on the link, whose
    /// records leave at the link's own constant rate.
    fn send_due(&mut self) {
        let now = self.now();
        while let Some((_, due)) = self.schedule.take(now) {
            let packet = match due {
                Due::Send => self.slot_packet(),
                Due::Loop => self.loop_packet(),
            };
            if let Some(packet) = packet {
                // A full link drops it, like a lost packet (the channel sends it again).
                self.link.send(link::packet(&packet), false);
            }
        }
    }

    /// One send slot: a real packet of the next session that has something, else cover
    /// (none before the directory and the gateway are known).
    fn slot_packet(&mut self) -> Option<[u8; PACKET_LEN]> {
        let (Some(topology), Some(gateway)) = (&self.topology, self.gateway) else {
            return None;
        };
        let (packet, carried) = slot_packet(
            self.sessions.iter_mut().map(|(_, s)| s),
            &mut self.turn,
            self.origin.elapsed(),
            topology,
            gateway,
            &self.profile,
            &mut self.random,
        )
        .ok()?;
        if carried == session::Carried::Cover {
            if !self.profile.cover {
                return None;
            }
            self.cover += 1;
        }
        Some(packet)
    }

    /// One loop packet, out and back to our own mailbox.
    fn loop_packet(&mut self) -> Option<[u8; PACKET_LEN]> {
        let (Some(topology), Some(gateway)) = (&self.topology, self.gateway) else {
            return None;
        };
        self.loops
            .packet(
                self.origin.elapsed(),
                topology,
                gateway,
                self.mailbox,
                &self.profile,
                &mut self.random,
            )
            .ok()
    }

    /// A message from the gateway.
    fn message(&mut self, now: Duration, message: &pb_link::Message) {
        match link::parse(message) {
            Some(FromGateway::Registered { mailbox }) if mailbox == self.mailbox => {
                self.registered = true;
                self.prove();
            }
            Some(FromGateway::Page {
                nonce,
                page,
                pages,
                epoch,
                gateway,
                descriptors,
            }) => {
                // Each page counts once: a duplicate answer neither asks again nor
                // verifies the directory again.
                if !self
                    .fetch
                    .take(nonce, page, pages, (epoch, gateway), &descriptors)
                {
                    return;
                }
                if self.fetch.is_complete() {
                    self.try_directory();
                } else if page == 0 {
                    // Page 0 says how many there are: ask for the rest once; the fetch
                    // timer asks again for what is still missing.
                    for page in self.fetch.missing() {
                        self.request(link::request(self.fetch.nonce, page));
                    }
                }
            }
            Some(FromGateway::Checkpoint { nonce, note })
                if nonce == self.fetch.nonce && self.network.is_some() && !note.is_empty() =>
            {
                self.checkpoint = Some(note.to_vec());
                self.try_directory();
            }
            Some(FromGateway::Reputation {
                nonce,
                page,
                pages,
                chunk,
            }) => self.reputation_page(nonce, page, pages, chunk),
            Some(FromGateway::Reply { surb, payload }) => {
                let mut payload = payload.to_vec();
                if let Some((_, session)) = self.sessions.iter_mut().find(|(_, s)| s.owns(&surb)) {
                    session.reply(now, surb, &mut payload);
                } else if self.loops.owns(&surb) {
                    self.loops.reply(now, surb, &mut payload);
                }
                // Otherwise a reply through a SURB given up: dropped.
            }
            _ => {}
        }
    }

    /// A complete fetch: with a network file, once the checkpoint is here too, the view is
    /// checked against the stewards and a hostile gateway is left for the next one.
    fn try_directory(&mut self) {
        let Some((epoch, claimed, all)) = self.fetch.complete() else {
            return;
        };
        let Some(network) = &self.network else {
            return self.new_directory(epoch, claimed, &all);
        };
        let Some(note) = &self.checkpoint else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match pb_control::trust::verify_view(network, note, &all, now) {
            Ok(verified) if !is_gateway(&verified.topology, claimed) => {
                self.leave_gateway(&format!(
                    "it says it is node {}, which is not a gateway of the network",
                    hex(&claimed.0[..8])
                ));
            }
            Ok(verified) => {
                let changed = self
                    .topology
                    .as_ref()
                    .is_none_or(|t| t.hash() != verified.topology.hash());
                let mut topology = verified.topology;
                if let Some((_, (weights, unlisted))) = &self.weights {
                    topology.weigh(weights.clone(), *unlisted);
                }
                self.topology = Some(topology);
                self.want_reputation(verified.checkpoint.reputation);
                self.claim(claimed);
                if changed {
                    self.retire_sessions();
                }
            }
            Err(hostile) => self.leave_gateway(&hostile.to_string()),
        }
    }

    /// Fetches the reputation table `want` commits to, unless it is held or being fetched
    /// (all zero: the ledger is empty, routes weigh all alike).
    fn want_reputation(&mut self, want: [u8; 32]) {
        if want == [0; 32]
            || self.weights.as_ref().is_some_and(|(w, _)| *w == want)
            || self.reputation.as_ref().is_some_and(|f| f.want == want)
        {
            return;
        }
        let mut nonce = [0u8; 8];
        self.random.fill(&mut nonce);
        self.reputation = Some(reputation::ReputationFetch::new(nonce, want));
        self.request(link::reputation_request(nonce, 0));
    }

    /// A page of the reputation table: once all are here and the table is the one the
    /// stewards committed to, routes weigh relays by it.
    fn reputation_page(&mut self, nonce: [u8; 8], page: u8, pages: u8, chunk: &[u8]) {
        let (Some(fetch), Some(network)) = (&mut self.reputation, &self.network) else {
            return;
        };
        let name = network.stewards.network().to_owned();
        match fetch.take(nonce, page, pages, chunk, &name) {
            reputation::Taken::Incomplete => {
                if page == 0 {
                    let missing = fetch.missing();
                    for p in missing {
                        self.request(link::reputation_request(nonce, p));
                    }
                }
            }
            reputation::Taken::Weights(weights) => {
                let want = fetch.want;
                if let Some(topology) = &mut self.topology {
                    topology.weigh(weights.0.clone(), weights.1);
                }
                tracing::info!(
                    "routes weigh {} relays by the reputation table the stewards signed",
                    weights.0.len()
                );
                self.weights = Some((want, weights));
                self.reputation = None;
            }
            reputation::Taken::NoTable => {
                pb_log::info_limited!(
                    "the gateway serves no reputation table: routes weigh relays alike"
                );
                self.reputation = None;
            }
            reputation::Taken::Refused(why) => {
                // Weights the stewards did not sign get no say: routes keep what they had.
                tracing::warn!("the gateway's reputation table refused: {why}");
                self.reputation = None;
            }
        }
    }

    /// The gateway served a view that failed a check: say so in one line, forget what came
    /// from it, and start again with the next gateway.
    fn leave_gateway(&mut self, why: &str) {
        self.move_on(why, false);
    }

    /// The link failed (no answer, or its carrier closed): the gateway's next transport,
    /// or the next gateway when it has none left.
    fn link_failed(&mut self, why: &str) {
        self.move_on(why, true);
    }

    /// Moves to the next transport of this gateway (`next_transport`) or to the next
    /// gateway, and starts a new link there; forgets what came from the old one.
    fn move_on(&mut self, why: &str, next_transport: bool) {
        let failed = self.gateways[self.gateway_index].addr;
        let failed_kind = self.link.kind();
        let mut candidates = Vec::new();
        let kinds = transports_of(
            &self.gateways[self.gateway_index],
            self.transport,
            &self.setup,
        );
        if next_transport {
            for t in self.transport_index + 1..kinds.len() {
                candidates.push((self.gateway_index, t));
            }
        }
        for step in 1..=self.gateways.len() {
            let g = (self.gateway_index + step) % self.gateways.len();
            let n = transports_of(&self.gateways[g], self.transport, &self.setup).len();
            candidates.extend((0..n).map(|t| (g, t)));
        }
        let mut chosen = None;
        for (g, t) in candidates {
            let kind = transports_of(&self.gateways[g], self.transport, &self.setup)[t];
            match connect(&self.gateways[g], kind, &self.setup) {
                Ok(c) => {
                    chosen = Some((g, t, c));
                    break;
                }
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
        let Some((next, t, carrier)) = chosen else {
            // Nothing reachable: the same again, a second later.
            tracing::warn!(
                "gateway {failed} over {failed_kind} refused: {why}; no gateway reachable"
            );
            self.dead_since = Some(self.now());
            return;
        };
        // The gateway's address is public; nothing of the user's is in the line.
        tracing::warn!(
            "gateway {failed} over {failed_kind} refused: {why}; trying {} over {}",
            self.gateways[next].addr,
            carrier.kind()
        );

        let kind = carrier.kind();
        match start_link(
            carrier,
            &self.gateways[next],
            &self.profile,
            &mut self.random,
            &self.waker,
        ) {
            Ok(link) => {
                self.link = link;
                self.dead_since = None;
            }
            Err(e) => {
                tracing::warn!("gateway {} over {kind}: {e:#}", self.gateways[next].addr);
                self.dead_since = Some(self.now());
            }
        }
        self.gateway_index = next;
        self.transport_index = t;
        self.gateway = None;
        self.claimed = None;
        self.registered = false;
        self.topology = None;
        self.checkpoint = None;
        self.reputation = None;
        let mut nonce = [0u8; 8];
        self.random.fill(&mut nonce);
        self.fetch = Fetch::new(nonce);
        let now = self.now();
        self.next_register = now;
        self.next_fetch = now;
        // Sessions' replies come through the old gateway: they end.
        let closed = self.apps.values().filter(|a| a.stream.is_some()).count();
        for app in self.apps.values_mut() {
            if app.stream.take().is_some() {
                app.closing = true;
            }
        }
        if closed > 0 {
            tracing::warn!("{closed} connections closed with the gateway's sessions");
        }
        self.sessions.clear();
        self.loops.restart();
    }

    /// The gateway's claim, from a view that holds it: the node it names must have the
    /// link key our handshake was made to (only that key's holder could answer it), or the
    /// gateway is left.
    fn claim(&mut self, claimed: NodeId) {
        let key = self
            .topology
            .as_ref()
            .and_then(|t| t.find(claimed))
            .map(|p| p.link_key);
        if key != Some(self.gateways[self.gateway_index].link_key) {
            return self.leave_gateway(&format!(
                "it says it is node {}, whose link key is not the one it answered our handshake with",
                hex(&claimed.0[..8])
            ));
        }
        self.claimed = Some(claimed);
        self.prove();
    }

    /// The gateway is proven once its claim holds and it registered our mailbox.
    fn prove(&mut self) {
        if self.registered && self.claimed.is_some() {
            self.gateway = self.claimed;
        }
    }

    fn new_directory(
        &mut self,
        epoch: pb_sphinx::Epoch,
        claimed: NodeId,
        descriptors: &[(bool, Vec<u8>)],
    ) {
        match directory::topology(&self.network_seed, epoch, descriptors) {
            Ok((topology, refused)) => {
                if refused > 0 {
                    pb_log::warn_limited!(
                        "{refused} descriptors from the gateway did not verify and were ignored"
                    );
                }
                let changed = self
                    .topology
                    .as_ref()
                    .is_none_or(|t| t.hash() != topology.hash());
                let known = topology.find(claimed).is_some();
                self.topology = Some(topology);
                if known {
                    self.claim(claimed);
                } else {
                    pb_log::warn_limited!(
                        "the gateway says it is node {}, which is not in its own directory",
                        hex(&claimed.0[..8])
                    );
                }
                if changed {
                    self.retire_sessions();
                }
            }
            Err(e) => pb_log::warn_limited!("no topology from the gateway's directory: {e}"),
        }
    }

    /// Sessions whose exit left the topology, or whose channel gave up, end: their
    /// connections are closed.
    fn retire_sessions(&mut self) {
        let Some(topology) = &self.topology else {
            return;
        };
        let dead: Vec<usize> = self
            .sessions
            .iter()
            .enumerate()
            .filter(|(_, (_, s))| s.is_broken() || topology.find(s.exit()).is_none())
            .map(|(i, _)| i)
            .collect();
        for &i in dead.iter().rev() {
            let why = if self.sessions[i].1.is_broken() {
                "the exit stopped answering"
            } else {
                "its exit left the network"
            };
            let closed = self
                .apps
                .values()
                .filter(|a| a.stream.is_some_and(|(s, _)| s == i))
                .count();
            tracing::warn!("a session ended ({why}); {closed} connections closed");
            for app in self.apps.values_mut() {
                if app.stream.is_some_and(|(s, _)| s == i) {
                    app.stream = None;
                    app.closing = true;
                }
            }
            self.sessions.remove(i);
            for app in self.apps.values_mut() {
                if let Some((s, id)) = app.stream
                    && s > i
                {
                    app.stream = Some((s - 1, id));
                }
            }
        }
    }
}
