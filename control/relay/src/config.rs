//! The relay's configuration file and the static topology file, parsed into values that
//! cannot be invalid. A bad value is a [`ConfigError`] naming the field and the reason, in
//! one line.
//!
//! ```toml
//! topology = "topology.toml"      # the network (see Topology); relative to this file
//! deliver_to = "127.0.0.1:9000"   # optional: where delivered messages go (UDP)
//! admin = "127.0.0.1:9100"        # optional, loopback only: health, status, metrics (HTTP)
//!
//! [node]
//! id = "0101…01"                  # 16 bytes, hex
//! secret = "…"                    # this epoch's Sphinx secret, 32 bytes hex
//! epoch = 1
//! format = "v2"                   # the network's packet format: v1 | v2
//!
//! [io]
//! backend = "udp"                 # udp | af_xdp
//! bind = "198.18.0.1:47470"       # udp: the address to bind
//! cores = 1                       # udp: pipelines, one SO_REUSEPORT socket each
//! # af_xdp: pb-io's keys (interface, queues, port, packet_len, xdp_mode, bind); one
//! # pipeline core per queue
//! cpus = [2, 3]                   # optional: pin core i's thread to cpus[i]
//!
//! [gossip]                        # optional: find the network by gossip instead of the
//!                                 # topology file (node.id/secret/epoch are then not used)
//! bind = "198.18.0.1:47471"       # the gossip socket
//! seeds = ["198.18.0.2:47471"]    # relays to join through
//! network_seed = "…"              # 32 bytes hex, the same on every relay of the network
//! identity_file = "identity.key"  # from `pb-relay keygen`; relative to this file
//! role = "mix"                    # gateway | mix | exit
//! epoch_seconds = 3600
//! max_layer_width = 4             # the most relays in one layer (sizes the replay filter)
//! advertise = "198.18.0.1:47470"  # where packets reach this relay (default: io.bind);
//!                                 # on gossip.bind's IP
//! admin = "127.0.0.1:9100"        # the same as the top-level `admin` (give one of them);
//!                                 # in gossip mode it also serves /descriptors
//!
//! [mix]                           # all optional, defaults shown
//! link_rate = 100                 # packets per second on every link
//! loop_rate = 2                   # loops per second per link, on a Poisson process
//! loop_delay_ms = 20              # mean per-hop delay of loops: the clients' mean
//! link_queue = 1024
//! max_burst = 8
//! delay_capacity = 65536
//! max_delay_ms = 10000
//! epoch_seconds = 3600            # static mode: seconds between rotations (SIGHUP)
//! client_rate = 500               # gateways: packets per second from all clients together
//! replay_memory_mib = 4096        # the most the replay filter may take; more is refused
//! # replay_capacity = 2000000     # packets per epoch, instead of the computed size
//! loop_timeout_ms = 5000
//! batch = 32
//! ```
//!
//! The replay filter is sized from the rest (see [`crate::replay`]): the packets a relay can
//! receive in an epoch and its overlap, `(in-links × link_rate + client_rate) × (epoch +
//! overlap)`, times two for safety, at 32 bytes a packet. In-links are the previous layer of
//! the topology (static mode), or two layers of `max_layer_width` relays (gossip mode: the
//! previous layer sends forward, the next one sends replies back); `client_rate` counts for
//! gateways only; the overlap is a sixth of an epoch, at most 60 s. A configuration whose
//! filter would take more than `replay_memory_mib`, or whose `replay_capacity` is below
//! what an epoch brings, is refused in one line naming the fields.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use pb_control::Role;
use pb_io::config::IoConfig;
use pb_log::Sensitive;
use pb_sphinx::{DelayMs, Epoch, Format, MAX_HOPS, NodeId};

pub mod file;

use file::{ConfigFile, TopologyFile};

use crate::exit::PortRange;

/// Most pipeline cores one relay runs.
pub const MAX_CORES: usize = 64;

/// `mix.slot_jitter_us` by default: slot offsets up to 2 ms, against the tens of
/// microseconds that load can still move a send (docs/perf.md, `pb-perf anonymity`).
pub const DEFAULT_SLOT_JITTER_US: u64 = 2_000;

/// The longest epoch, in seconds (a week).
pub const MAX_EPOCH_SECONDS: u64 = 7 * 24 * 3600;

/// The largest `gossip.exit_max_connections`: a TCP port's worth. Each connection may hold
/// a few hundred KiB towards its destination (docs/operator.md, "Gateways and exits"), and
/// the open-files limit caps it further at start.
pub const MAX_EXIT_CONNECTIONS: usize = 65_536;

/// The largest `mix.replay_memory_mib`: two tables of [`pb_mix::MAX_SLOTS`] slots.
pub const MAX_REPLAY_MEMORY_MIB: u64 = 64 * 1024;

/// A configuration value that is missing, malformed or out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// The offending field (`section.key`, or the file).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Which packet I/O backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A UDP socket on `bind`.
    Udp {
        /// Address and port.
        bind: SocketAddr,
    },
    /// XDP + AF_XDP on one interface queue.
    AfXdp(IoConfig),
}

/// The mixing settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MixSettings {
    /// Packets per second on every link.
    pub link_rate: u32,
    /// Loops per second per link.
    pub loop_rate: u32,
    /// Mean per-hop delay loops draw (the network's, as clients use for real packets).
    pub loop_delay: DelayMs,
    /// Real packets a link queues.
    pub link_queue: usize,
    /// Late slots caught up at once.
    pub max_burst: u32,
    /// Packets the delay queue holds.
    pub delay_capacity: usize,
    /// Longest per-hop delay.
    pub max_delay: DelayMs,
    /// Packets per epoch the replay filter is sized for, if given instead of the computed
    /// size.
    pub replay_capacity: Option<usize>,
    /// Packets per second from clients (gateways) the replay filter is sized for.
    pub client_rate: u32,
    /// Static mode: seconds between rotations (gossip mode: `gossip.epoch_seconds`).
    pub epoch_seconds: u64,
    /// The most memory the replay filter may take, in MiB.
    pub replay_memory_mib: u64,
    /// When a loop counts as lost.
    pub loop_timeout_ms: u64,
    /// Packets per receive batch.
    pub batch: usize,
    /// The largest secret offset of a link's slots (`mix.slot_jitter_us`).
    pub slot_jitter: std::time::Duration,
    /// Whether idle link slots carry cover and idle client-link slots padding (always, but
    /// in the anonymity harness's known-bad configuration, `mix.insecure_no_cover`).
    pub cover: bool,
}

/// A validated relay configuration.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// This relay's node id.
    pub node: NodeId,
    /// Its Sphinx secret for `epoch` (scrubbed in `Debug`).
    pub secret: Sensitive<[u8; 32]>,
    /// The epoch.
    pub epoch: Epoch,
    /// The network's packet format.
    pub format: Format,
    /// The I/O backend.
    pub backend: Backend,
    /// Pipeline cores: UDP sockets sharing the address, or AF_XDP queues.
    pub cores: usize,
    /// The CPU each core's thread is pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    /// Whether the cores wait for and send their slots at real-time priority (`io.realtime`).
    pub realtime: bool,
    /// Mixing settings.
    pub mix: MixSettings,
    /// Where delivered messages go.
    pub deliver_to: Option<SocketAddr>,
    /// The topology file (static mode).
    pub topology: PathBuf,
    /// Gossip mode's settings (then `node`, `secret`, `epoch` and `topology` are unused).
    pub gossip: Option<GossipSettings>,
    /// The local admin endpoint (loopback), in either mode.
    pub admin: Option<SocketAddr>,
}

/// How a relay finds the network by gossip.
#[derive(Clone, Debug)]
pub struct GossipSettings {
    /// The gossip socket's address.
    pub bind: SocketAddr,
    /// Relays to join through.
    pub seeds: Vec<SocketAddr>,
    /// The network's shared seed.
    pub network_seed: [u8; 32],
    /// The identity key file.
    pub identity_file: PathBuf,
    /// This relay's role.
    pub role: Role,
    /// Epoch length.
    pub epoch_seconds: u64,
    /// The most relays one layer holds (sizes the replay filter).
    pub max_layer_width: usize,
    /// Where packets reach this relay, as published in its descriptor.
    pub advertise: SocketAddr,
    /// (Gateway) where clients reach the client link.
    pub client_bind: Option<SocketAddr>,
    /// (Gateway) where clients reach it over QUIC (HTTP/3).
    pub client_quic: Option<SocketAddr>,
    /// (Gateway) where clients reach it over WebSocket and TLS.
    pub client_wss: Option<SocketAddr>,
    /// (Gateway) the TLS key of QUIC and WSS.
    pub tls_key_file: PathBuf,
    /// (Gateway) where clients reach it over obfs4.
    pub client_obfs4: Option<SocketAddr>,
    /// (Gateway) the obfs4 listener's iat-mode.
    pub obfs4_iat_mode: pb_obfs4::IatMode,
    /// (Gateway) the obfs4 bridge's keys.
    pub obfs4_state_file: PathBuf,
    /// (Gateway) plain TCP records, for a local obfs4proxy server.
    pub client_tcp: Option<SocketAddr>,
    /// (Gateway) its authoritative name server (UDP) and the zone it carries DNS links in.
    pub client_dns: Option<(SocketAddr, pb_doh::Zone)>,
    /// (Exit) networks the exit policy allows although they are special (a testbed's own).
    pub exit_allow: Vec<(std::net::IpAddr, u8)>,
    /// (Exit) ports refused at every address, in place of
    /// [`crate::exit::DEFAULT_REFUSED_PORTS`] (`None`: those).
    pub exit_refuse_ports: Option<Vec<PortRange>>,
    /// (Exit) the most connections open or connecting at once
    /// ([`crate::exit::limits::DEFAULT_MAX_CONNECTIONS`] unless set).
    pub exit_max_connections: usize,
    /// Networks whose special-purpose addresses descriptors may name anyway: this file's
    /// `gossip.allow_prefix` and the network file's `allow_prefix`.
    pub allow_prefixes: Vec<(std::net::IpAddr, u8)>,
    /// The network file (docs/spec/network-file.md): its stewards' checkpoints are followed,
    /// and signed if this relay's identity is a steward's.
    pub network: Option<pb_control::network::NetworkFile>,
    /// Where this relay keeps the ledger's files (docs/spec/ledger.md): the log operator (the
    /// network file's first steward) writes its log there, every other relay mirrors the
    /// operator's there after checking it. `None`: it keeps no copy.
    pub ledger_dir: Option<PathBuf>,
    /// Where it serves `ledger_dir` over HTTP.
    pub ledger_listen: Option<SocketAddr>,
}

/// Reads the network file at `path`, which must name this configuration's seed and epoch
/// length.
fn network_file(
    path: &std::path::Path,
    seed: [u8; 32],
    epoch_seconds: u64,
) -> Result<pb_control::network::NetworkFile, ConfigError> {
    const FIELD: &str = "gossip.network_file";
    let bytes = std::fs::read(path)
        .map_err(|e| bad(FIELD, format!("cannot read {}: {e}", path.display())))?;
    let file = pb_control::network::NetworkFile::parse(&bytes)
        .map_err(|e| bad(FIELD, format!("{}: {e}", path.display())))?;
    if file.seed != seed {
        return Err(bad(
            FIELD,
            "names another network seed than gossip.network_seed",
        ));
    }
    if file.epoch_seconds != epoch_seconds {
        return Err(bad(
            FIELD,
            format!(
                "says epoch_seconds = {}, gossip.epoch_seconds is {epoch_seconds}",
                file.epoch_seconds
            ),
        ));
    }
    Ok(file)
}

fn address(field: &str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.parse()
        .map_err(|_| bad(field, "expected an address like \"198.18.0.1:47471\""))
}

/// A network like "198.18.0.0/15" or "fd00::/8" (a bare address is a /32 or /128).
fn network(field: &str, text: &str) -> Result<(std::net::IpAddr, u8), ConfigError> {
    let wrong = || {
        bad(
            field,
            format!("{text:?} is not a network like \"198.18.0.0/15\""),
        )
    };
    let (ip, prefix) = match text.split_once('/') {
        Some((ip, prefix)) => (ip, Some(prefix)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = ip.parse().map_err(|_| wrong())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(wrong)?,
        None => max,
    };
    Ok((ip, prefix))
}

/// A port like "25" or a range like "135-139".
fn port_range(field: &str, text: &str) -> Result<PortRange, ConfigError> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
    let (Some(first), Some(last)) = (port(first), port(last)) else {
        return Err(bad(
            field,
            format!("{text:?} is not a port (1 to 65535) like \"25\" or a range like \"135-139\""),
        ));
    };
    PortRange::new(first, last).ok_or_else(|| bad(field, format!("{text:?} ends before it starts")))
}

fn role(field: &str, text: &str) -> Result<Role, ConfigError> {
    match text {
        "gateway" => Ok(Role::Gateway),
        "mix" => Ok(Role::Mix),
        "exit" => Ok(Role::Exit),
        other => Err(bad(field, format!("{other:?} is not gateway, mix or exit"))),
    }
}

/// Parses `len` bytes of hex.
pub(crate) fn hex<const N: usize>(field: &str, text: &str) -> Result<[u8; N], ConfigError> {
    let text = text.trim();
    if text.len() != 2 * N || !text.is_ascii() {
        return Err(bad(
            field,
            format!("expected {N} bytes as {} hex digits", 2 * N),
        ));
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| bad(field, format!("expected {N} bytes as {} hex digits", 2 * N)))?;
    }
    Ok(out)
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| bad(field, "missing"))
}

fn in_range<T: PartialOrd + core::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(bad(field, format!("{v} is out of range ({min} to {max})")));
    }
    Ok(v)
}

/// Parses a `parse_error` from toml into a one-line error naming the field when possible.
fn toml_error(file: &str, error: &toml::de::Error) -> ConfigError {
    let message = error
        .message()
        .lines()
        .next()
        .unwrap_or("malformed")
        .to_owned();
    bad(file, message)
}

impl RelayConfig {
    /// Parses the configuration file text; `dir` resolves a relative topology path.
    pub fn from_toml(text: &str, dir: &Path) -> Result<Self, ConfigError> {
        let raw: ConfigFile<toml::Table> =
            toml::from_str(text).map_err(|e| toml_error("config", &e))?;
        let node = required("node", raw.node)?;
        let gossip_mode = raw.gossip.is_some();
        let (id, secret, epoch) = if gossip_mode {
            for (field, present) in [
                ("node.id", node.id.is_some()),
                ("node.secret", node.secret.is_some()),
                ("node.epoch", node.epoch.is_some()),
                ("topology", raw.topology.is_some()),
            ] {
                if present {
                    return Err(bad(
                        field,
                        "not used with [gossip] (the identity key names the node; Sphinx keys are made every epoch)",
                    ));
                }
            }
            ([0; 16], [0; 32], Epoch(0))
        } else {
            (
                hex::<16>("node.id", &required("node.id", node.id)?)?,
                hex::<32>("node.secret", &required("node.secret", node.secret)?)?,
                Epoch(required("node.epoch", node.epoch)?),
            )
        };
        let format = match required("node.format", node.format)?.as_str() {
            "v1" => Format::V1,
            "v2" => Format::V2,
            other => return Err(bad("node.format", format!("{other:?} is not v1 or v2"))),
        };
        let mut io = required("io", raw.io)?;
        let realtime = match io.remove("realtime") {
            None => true,
            Some(value) => value
                .as_bool()
                .ok_or_else(|| bad("io.realtime", "true or false"))?,
        };
        let cpus = match io.remove("cpus") {
            None => Vec::new(),
            Some(value) => value
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|c| c.as_integer().and_then(|c| usize::try_from(c).ok()))
                        .collect::<Option<Vec<usize>>>()
                })
                .filter(|c| c.iter().all(|c| *c < 1024))
                .ok_or_else(|| bad("io.cpus", "expected a list of CPU numbers below 1024"))?,
        };
        let mut cores = 1;
        let backend = match io.remove("backend").as_ref().and_then(toml::Value::as_str) {
            Some("udp") => {
                let bind = required("io.bind", io.remove("bind"))?;
                if let Some(value) = io.remove("cores") {
                    cores = value
                        .as_integer()
                        .and_then(|c| usize::try_from(c).ok())
                        .filter(|c| (1..=MAX_CORES).contains(c))
                        .ok_or_else(|| {
                            bad(
                                "io.cores",
                                format!("expected a number from 1 to {MAX_CORES}"),
                            )
                        })?;
                }
                if let Some(extra) = io.keys().next() {
                    return Err(bad(
                        format!("io.{extra}"),
                        "unknown field for the udp backend",
                    ));
                }
                let bind = bind.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    bad("io.bind", "expected an address like \"198.18.0.1:47470\"")
                })?;
                Backend::Udp { bind }
            }
            Some("af_xdp") => {
                let text = toml::to_string(&io).map_err(|e| bad("io", e.to_string()))?;
                let config = IoConfig::from_toml(&text).map_err(|e| bad("io", e.to_string()))?;
                cores = config.queues.len();
                if cores > MAX_CORES {
                    return Err(bad(
                        "io.queues",
                        format!("at most {MAX_CORES} queues (one pipeline core each)"),
                    ));
                }
                Backend::AfXdp(config)
            }
            Some(other) => {
                return Err(bad("io.backend", format!("{other:?} is not udp or af_xdp")));
            }
            None => return Err(bad("io.backend", "missing (udp or af_xdp)")),
        };
        if !cpus.is_empty() && cpus.len() != cores {
            return Err(bad(
                "io.cpus",
                format!(
                    "{} CPUs listed for {cores} cores: give one per core",
                    cpus.len()
                ),
            ));
        }
        let mix = raw.mix.unwrap_or_default();
        if mix.cover_per_turn.is_some() {
            return Err(bad(
                "mix.cover_per_turn",
                "no longer used (cover is built ahead for every slot): remove it",
            ));
        }
        if gossip_mode && mix.epoch_seconds.is_some() {
            return Err(bad(
                "mix.epoch_seconds",
                "not used with [gossip] (gossip.epoch_seconds sets the epoch length)",
            ));
        }
        let mix = MixSettings {
            link_rate: in_range("mix.link_rate", mix.link_rate, 100, 1, 1_000_000)?,
            loop_rate: in_range("mix.loop_rate", mix.loop_rate, 2, 0, 1_000_000)?,
            loop_delay: DelayMs(in_range(
                "mix.loop_delay_ms",
                mix.loop_delay_ms,
                pb_pipeline::DEFAULT_LOOP_DELAY.0,
                0,
                60_000,
            )?),
            link_queue: in_range("mix.link_queue", mix.link_queue, 1024, 1, 1 << 20)?,
            max_burst: in_range("mix.max_burst", mix.max_burst, 8, 1, 1 << 16)?,
            delay_capacity: in_range("mix.delay_capacity", mix.delay_capacity, 65_536, 1, 1 << 24)?,
            max_delay: DelayMs(in_range(
                "mix.max_delay_ms",
                mix.max_delay_ms,
                10_000,
                0,
                600_000,
            )?),
            replay_capacity: mix
                .replay_capacity
                .map(|c| in_range("mix.replay_capacity", Some(c), c, 1, pb_mix::MAX_SLOTS / 2))
                .transpose()?,
            client_rate: in_range("mix.client_rate", mix.client_rate, 500, 0, 1_000_000)?,
            epoch_seconds: in_range(
                "mix.epoch_seconds",
                mix.epoch_seconds,
                3600,
                5,
                MAX_EPOCH_SECONDS,
            )?,
            replay_memory_mib: in_range(
                "mix.replay_memory_mib",
                mix.replay_memory_mib,
                4096,
                1,
                MAX_REPLAY_MEMORY_MIB,
            )?,
            loop_timeout_ms: in_range(
                "mix.loop_timeout_ms",
                mix.loop_timeout_ms,
                5_000,
                1,
                3_600_000,
            )?,
            batch: in_range("mix.batch", mix.batch, 32, 1, pb_io::MAX_BATCH)?,
            slot_jitter: std::time::Duration::from_micros(in_range(
                "mix.slot_jitter_us",
                mix.slot_jitter_us,
                DEFAULT_SLOT_JITTER_US,
                0,
                1_000_000,
            )?),
            cover: !mix.insecure_no_cover.unwrap_or(false),
        };
        let deliver_to = raw
            .deliver_to
            .map(|s| {
                s.parse()
                    .map_err(|_| bad("deliver_to", "expected an address like \"127.0.0.1:9000\""))
            })
            .transpose()?;
        let topology = if gossip_mode {
            PathBuf::new()
        } else {
            dir.join(required("topology", raw.topology)?)
        };
        let gossip_admin = raw.gossip.as_ref().and_then(|g| g.admin.clone());
        let gossip = match raw.gossip {
            None => None,
            Some(g) => {
                let bind = address("gossip.bind", &required("gossip.bind", g.bind)?)?;
                if bind.port() == 0 || bind.ip().is_unspecified() {
                    return Err(bad(
                        "gossip.bind",
                        "needs an address and a port (both are published in the descriptor)",
                    ));
                }
                let seeds = g
                    .seeds
                    .unwrap_or_default()
                    .iter()
                    .map(|s| address("gossip.seeds", s))
                    .collect::<Result<Vec<_>, _>>()?;
                let network_seed = hex::<32>(
                    "gossip.network_seed",
                    &required("gossip.network_seed", g.network_seed)?,
                )?;
                let identity_file = dir.join(required("gossip.identity_file", g.identity_file)?);
                let role = role("gossip.role", &required("gossip.role", g.role)?)?;
                let epoch_seconds = in_range(
                    "gossip.epoch_seconds",
                    g.epoch_seconds,
                    3600,
                    5,
                    MAX_EPOCH_SECONDS,
                )?;
                let max_layer_width = in_range(
                    "gossip.max_layer_width",
                    g.max_layer_width,
                    4,
                    1,
                    crate::serve::MAX_LINKS / 2,
                )?;
                let advertise = match (g.advertise, &backend) {
                    (Some(a), _) => address("gossip.advertise", &a)?,
                    (None, Backend::Udp { bind }) if !bind.ip().is_unspecified() => *bind,
                    _ => {
                        return Err(bad(
                            "gossip.advertise",
                            "missing: where packets reach this relay (needed unless io.bind names an address)",
                        ));
                    }
                };
                if advertise.port() == 0 || advertise.ip().is_unspecified() {
                    return Err(bad("gossip.advertise", "needs an address and a port"));
                }
                if advertise.ip() != bind.ip() {
                    return Err(bad(
                        "gossip.advertise",
                        "must be on gossip.bind's IP address: relays prove a relay's packet address by probing its gossip address",
                    ));
                }
                let client_bind = g
                    .client_bind
                    .map(|a| address("gossip.client_bind", &a))
                    .transpose()?;
                if client_bind.is_some() && role != Role::Gateway {
                    return Err(bad(
                        "gossip.client_bind",
                        "only a gateway serves clients (gossip.role = \"gateway\")",
                    ));
                }
                let mut disguised = [None, None, None, None];
                for (slot, (key, value)) in disguised.iter_mut().zip([
                    ("gossip.client_quic", &g.client_quic),
                    ("gossip.client_wss", &g.client_wss),
                    ("gossip.client_obfs4", &g.client_obfs4),
                    ("gossip.client_dns", &g.client_dns),
                ]) {
                    let Some(value) = value else { continue };
                    let addr = address(key, value)?;
                    if role != Role::Gateway {
                        return Err(bad(
                            key,
                            "only a gateway serves clients (gossip.role = \"gateway\")",
                        ));
                    }
                    if client_bind.is_none() {
                        return Err(bad(
                            key,
                            "needs gossip.client_bind (the plain UDP link) too",
                        ));
                    }
                    if addr.port() == 0 || addr.ip() != bind.ip() {
                        return Err(bad(
                            key,
                            "needs a port, on gossip.bind's IP address: descriptors offer transports as ports of that address",
                        ));
                    }
                    *slot = Some(addr);
                }
                let [client_quic, client_wss, client_obfs4, client_dns] = disguised;
                let client_dns = match (client_dns, &g.dns_zone) {
                    (None, None) => None,
                    (Some(_), None) => {
                        return Err(bad(
                            "gossip.dns_zone",
                            "missing: the zone gossip.client_dns answers for",
                        ));
                    }
                    (None, Some(_)) => {
                        return Err(bad(
                            "gossip.dns_zone",
                            "needs gossip.client_dns (the name server)",
                        ));
                    }
                    (Some(_), Some(zone))
                        if zone.trim_end_matches('.').len()
                            > pb_control::descriptor::MAX_PARAMS =>
                    {
                        return Err(bad(
                            "gossip.dns_zone",
                            format!(
                                "longer than a descriptor's offer holds ({} characters)",
                                pb_control::descriptor::MAX_PARAMS
                            ),
                        ));
                    }
                    (Some(addr), Some(zone)) => Some((
                        addr,
                        pb_doh::Zone::parse(zone)
                            .map_err(|e| bad("gossip.dns_zone", e.to_string()))?,
                    )),
                };
                let client_tcp = g
                    .client_tcp
                    .map(|a| address("gossip.client_tcp", &a))
                    .transpose()?;
                if client_tcp.is_some() && client_bind.is_none() {
                    return Err(bad(
                        "gossip.client_tcp",
                        "needs gossip.client_bind (the plain UDP link) too, and a gateway",
                    ));
                }
                if client_tcp.is_some_and(|a| a.port() == 0) {
                    return Err(bad("gossip.client_tcp", "needs a port"));
                }
                if g.obfs4_iat_mode.is_some() && client_obfs4.is_none() {
                    return Err(bad(
                        "gossip.obfs4_iat_mode",
                        "needs gossip.client_obfs4 (the obfs4 listener)",
                    ));
                }
                let obfs4_iat_mode = pb_obfs4::IatMode::from_number(g.obfs4_iat_mode.unwrap_or(0))
                    .ok_or_else(|| bad("gossip.obfs4_iat_mode", "0, 1 or 2"))?;
                if g.exit_allow.is_some() && role != Role::Exit {
                    return Err(bad(
                        "gossip.exit_allow",
                        "only an exit has an exit policy (gossip.role = \"exit\")",
                    ));
                }
                let exit_allow = g
                    .exit_allow
                    .unwrap_or_default()
                    .iter()
                    .map(|n| network("gossip.exit_allow", n))
                    .collect::<Result<Vec<_>, _>>()?;
                let allow_prefixes = g
                    .allow_prefix
                    .unwrap_or_default()
                    .iter()
                    .map(|n| network("gossip.allow_prefix", n))
                    .collect::<Result<Vec<_>, _>>()?;
                if g.exit_refuse_ports.is_some() && role != Role::Exit {
                    return Err(bad(
                        "gossip.exit_refuse_ports",
                        "only an exit has an exit policy (gossip.role = \"exit\")",
                    ));
                }
                let exit_refuse_ports = g
                    .exit_refuse_ports
                    .map(|ports| {
                        ports
                            .iter()
                            .map(|p| port_range("gossip.exit_refuse_ports", p))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
                if g.exit_max_connections.is_some() && role != Role::Exit {
                    return Err(bad(
                        "gossip.exit_max_connections",
                        "only an exit opens connections (gossip.role = \"exit\")",
                    ));
                }
                let exit_max_connections = in_range(
                    "gossip.exit_max_connections",
                    g.exit_max_connections,
                    crate::exit::limits::DEFAULT_MAX_CONNECTIONS,
                    1,
                    MAX_EXIT_CONNECTIONS,
                )?;
                let network = g
                    .network_file
                    .map(|f| network_file(&dir.join(f), network_seed, epoch_seconds))
                    .transpose()?;
                let ledger_dir = g.ledger_dir.as_ref().map(|d| dir.join(d));
                let ledger_listen = g
                    .ledger_listen
                    .map(|a| address("gossip.ledger_listen", &a))
                    .transpose()?;
                if ledger_dir.is_none() && ledger_listen.is_some() {
                    return Err(bad(
                        "gossip.ledger_listen",
                        "needs gossip.ledger_dir (the files to serve)",
                    ));
                }
                if ledger_dir.is_some() && network.as_ref().is_none_or(|n| n.ledger.is_none()) {
                    return Err(bad(
                        "gossip.ledger_dir",
                        "needs a network file (gossip.network_file) that names the ledger's URL",
                    ));
                }
                let tls_key_file = g.tls_key_file.as_ref().map_or_else(
                    || {
                        let mut p = identity_file.clone().into_os_string();
                        p.push(".tls");
                        PathBuf::from(p)
                    },
                    |f| dir.join(f),
                );
                let obfs4_state_file = g.obfs4_state_file.as_ref().map_or_else(
                    || {
                        let mut p = identity_file.clone().into_os_string();
                        p.push(".obfs4");
                        PathBuf::from(p)
                    },
                    |f| dir.join(f),
                );
                Some(GossipSettings {
                    bind,
                    seeds,
                    network_seed,
                    identity_file,
                    role,
                    epoch_seconds,
                    max_layer_width,
                    advertise,
                    client_bind,
                    client_quic,
                    client_wss,
                    tls_key_file,
                    client_obfs4,
                    obfs4_iat_mode,
                    obfs4_state_file,
                    client_tcp,
                    client_dns,
                    exit_allow,
                    exit_refuse_ports,
                    exit_max_connections,
                    allow_prefixes,
                    network,
                    ledger_dir,
                    ledger_listen,
                })
            }
        };
        let admin = match (raw.admin, gossip_admin) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "admin",
                    "given twice (here and as gossip.admin): keep one",
                ));
            }
            (Some(a), None) => Some(("admin", a)),
            (None, Some(a)) => Some(("gossip.admin", a)),
            (None, None) => None,
        };
        let admin = match admin {
            None => None,
            Some((field, text)) => {
                let a = address(field, &text)?;
                if !a.ip().is_loopback() {
                    return Err(bad(
                        field,
                        "must be a loopback address: the endpoint has no authentication",
                    ));
                }
                Some(a)
            }
        };
        let config = Self {
            node: NodeId(id),
            secret: Sensitive::new(secret),
            admin,
            epoch,
            format,
            backend,
            cores,
            cpus,
            realtime,
            mix,
            deliver_to,
            topology,
            gossip,
        };
        // Gossip mode knows all the replay filter's size depends on now; static mode once
        // the topology is read (`static_mode::load`).
        if let Some(g) = &config.gossip {
            crate::replay::plan(&config, crate::replay::Ingress::gossip(g))?;
        }
        Ok(config)
    }

    /// The epoch length and the field that sets it: `gossip.epoch_seconds` in gossip mode,
    /// `mix.epoch_seconds` (the time between rotations) in static mode.
    pub fn epoch_seconds(&self) -> (u64, &'static str) {
        match &self.gossip {
            Some(g) => (g.epoch_seconds, "gossip.epoch_seconds"),
            None => (self.mix.epoch_seconds, "mix.epoch_seconds"),
        }
    }
}

/// One node of the static topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopologyNode {
    /// Node id.
    pub id: NodeId,
    /// Role.
    pub role: Role,
    /// Layer: the gateway layer is 0, then the mix layers, then the exits.
    pub layer: u32,
    /// UDP endpoint.
    pub addr: SocketAddr,
    /// Sphinx public key for the epoch.
    pub public_key: [u8; 32],
}

/// The static topology: layers in a cycle (gateways, mix layers, exits, back to gateways).
/// Every node links to every node of the next layer; a loop from a node goes once around
/// the cycle, so the cycle has at most [`MAX_HOPS`] layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// The nodes, in file order.
    pub nodes: Vec<TopologyNode>,
    /// Number of layers.
    pub layers: u32,
}

impl Topology {
    /// Parses a topology file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: TopologyFile = toml::from_str(text).map_err(|e| toml_error("topology", &e))?;
        let raw = required("topology.node", raw.node)?;
        let mut nodes: Vec<TopologyNode> = Vec::new();
        for (i, n) in raw.into_iter().enumerate() {
            let field = |k: &str| format!("topology.node[{i}].{k}");
            let id = NodeId(hex::<16>(&field("id"), &required(&field("id"), n.id)?)?);
            if nodes.iter().any(|m| m.id == id) {
                return Err(bad(field("id"), "listed twice"));
            }
            let role = match required(&field("role"), n.role)?.as_str() {
                "gateway" => Role::Gateway,
                "mix" => Role::Mix,
                "exit" => Role::Exit,
                other => {
                    return Err(bad(
                        field("role"),
                        format!("{other:?} is not gateway, mix or exit"),
                    ));
                }
            };
            let layer = required(&field("layer"), n.layer)?;
            let addr = required(&field("addr"), n.addr)?.parse().map_err(|_| {
                bad(
                    field("addr"),
                    "expected an address like \"198.18.0.1:47470\"",
                )
            })?;
            let public_key = hex::<32>(
                &field("public_key"),
                &required(&field("public_key"), n.public_key)?,
            )?;
            nodes.push(TopologyNode {
                id,
                role,
                layer,
                addr,
                public_key,
            });
        }
        let layers = nodes.iter().map(|n| n.layer).max().map_or(0, |l| l + 1);
        if layers < 2 || layers as usize > MAX_HOPS {
            return Err(bad(
                "topology.node",
                format!("{layers} layers; a cycle needs 2 to {MAX_HOPS}"),
            ));
        }
        for l in 0..layers {
            if !nodes.iter().any(|n| n.layer == l) {
                return Err(bad("topology.node", format!("layer {l} has no node")));
            }
        }
        Ok(Self { nodes, layers })
    }

    /// The node with id `id`.
    pub fn node(&self, id: NodeId) -> Option<&TopologyNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// How many nodes link to `id`: every node of the previous layer (cyclically); 0 for a
    /// node not in the topology.
    pub fn in_links(&self, id: NodeId) -> usize {
        let Some(me) = self.node(id) else {
            return 0;
        };
        let previous = (me.layer + self.layers - 1) % self.layers;
        self.nodes.iter().filter(|n| n.layer == previous).count()
    }

    /// The nodes `id` links to: every node of the next layer (cyclically).
    pub fn neighbours(&self, id: NodeId) -> Vec<&TopologyNode> {
        let Some(me) = self.node(id) else {
            return Vec::new();
        };
        let next = (me.layer + 1) % self.layers;
        self.nodes.iter().filter(|n| n.layer == next).collect()
    }

    /// The layers a loop on the link from `id` to `first` passes between them, each as its
    /// candidate nodes (a loop draws one per layer, as a real packet's route does).
    pub fn loop_layers(&self, id: NodeId, first: &TopologyNode) -> Vec<Vec<&TopologyNode>> {
        let Some(me) = self.node(id) else {
            return Vec::new();
        };
        let mut via = Vec::new();
        let mut layer = (first.layer + 1) % self.layers;
        while layer != me.layer {
            via.push(self.nodes.iter().filter(|n| n.layer == layer).collect());
            layer = (layer + 1) % self.layers;
        }
        via
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use super::{
        file::{ConfigFile, GossipSection, IoSection, MixSection, NodeSection, render},
        *,
    };

    const SECRET: &str = "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

    fn static_file() -> ConfigFile {
        ConfigFile {
            topology: Some("topology.toml".into()),
            admin: Some("127.0.0.1:9100".into()),
            node: Some(NodeSection {
                id: Some("01".repeat(16)),
                secret: Some(SECRET.into()),
                epoch: Some(7),
                format: Some("v2".into()),
            }),
            io: Some(IoSection::udp("127.0.0.1:47470".parse().unwrap())),
            mix: Some(MixSection {
                link_rate: Some(250),
                ..MixSection::default()
            }),
            ..ConfigFile::default()
        }
    }

    #[test]
    fn a_rendered_file_parses_to_what_it_says() {
        let text = render(&static_file()).unwrap();
        let c = RelayConfig::from_toml(&text, Path::new("/etc/pb")).unwrap();
        assert_eq!(c.epoch, Epoch(7));
        assert_eq!(c.format, Format::V2);
        assert_eq!(c.mix.link_rate, 250);
        assert_eq!(c.secret.expose(), &[0xc3; 32]);
        assert_eq!(c.topology, Path::new("/etc/pb/topology.toml"));
        assert_eq!(c.admin, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(
            c.backend,
            Backend::Udp {
                bind: "127.0.0.1:47470".parse().unwrap()
            }
        );
        let gossip = ConfigFile {
            topology: None,
            node: Some(NodeSection {
                format: Some("v1".into()),
                ..NodeSection::default()
            }),
            io: Some(IoSection::af_xdp("eth0", 47470, "copy")),
            gossip: Some(GossipSection {
                bind: Some("198.18.0.1:47471".into()),
                advertise: Some("198.18.0.1:47470".into()),
                network_seed: Some("42".repeat(32)),
                identity_file: Some("identity.key".into()),
                role: Some("exit".into()),
                exit_allow: Some(vec!["198.18.0.0/24".into()]),
                allow_prefix: Some(vec!["198.18.0.0/24".into()]),
                ..GossipSection::default()
            }),
            ..static_file()
        };
        let c = RelayConfig::from_toml(&render(&gossip).unwrap(), Path::new("")).unwrap();
        let Backend::AfXdp(io) = &c.backend else {
            panic!("not AF_XDP: {:?}", c.backend)
        };
        assert_eq!(
            (io.interface.as_str(), io.queues.as_slice()),
            ("eth0", &[0][..])
        );
        let g = c.gossip.unwrap();
        assert_eq!(g.role, Role::Exit);
        assert_eq!(g.exit_allow, vec![("198.18.0.0".parse().unwrap(), 24)]);
        assert_eq!(g.allow_prefixes, vec![("198.18.0.0".parse().unwrap(), 24)]);
    }

    /// `gossip.exit_refuse_ports` replaces the default list (an empty list refuses no
    /// port); a bad port or range, or the key on a relay that is not an exit, is refused in
    /// one line naming the key and the value.
    #[test]
    fn exit_refuse_ports_replace_the_default_and_bad_ones_are_named() {
        let exit = |ports: Option<Vec<&str>>, role: &str| {
            let mut file = gossip_file();
            if let Some(g) = file.gossip.as_mut() {
                g.role = Some(role.into());
                g.exit_refuse_ports = ports.map(|p| p.into_iter().map(String::from).collect());
            }
            RelayConfig::from_toml(&render(&file).unwrap(), Path::new(""))
                .map(|c| c.gossip.unwrap().exit_refuse_ports)
        };
        assert_eq!(exit(None, "exit").unwrap(), None);
        assert_eq!(
            exit(Some(vec!["25", "135-139", "65535"]), "exit").unwrap(),
            Some(vec![
                PortRange::new(25, 25).unwrap(),
                PortRange::new(135, 139).unwrap(),
                PortRange::new(65535, 65535).unwrap(),
            ])
        );
        assert_eq!(exit(Some(vec![]), "exit").unwrap(), Some(vec![]));
        for (value, reason) in [
            ("0", "\"0\" is not a port (1 to 65535)"),
            ("65536", "\"65536\" is not a port"),
            ("smtp", "\"smtp\" is not a port"),
            ("", "\"\" is not a port"),
            ("25-", "\"25-\" is not a port"),
            ("-25", "\"-25\" is not a port"),
            ("1-2-3", "\"1-2-3\" is not a port"),
            (" 25", "\" 25\" is not a port"),
            ("139-135", "\"139-135\" ends before it starts"),
        ] {
            let e = exit(Some(vec!["443", value]), "exit").unwrap_err();
            assert_eq!(e.field, "gossip.exit_refuse_ports", "{value:?}");
            assert!(e.reason.starts_with(reason), "{value:?}: {e}");
            assert_eq!(e.to_string().lines().count(), 1, "{e}");
        }
        let e = exit(Some(vec!["25"]), "mix").unwrap_err();
        assert_eq!(
            e.to_string(),
            "gossip.exit_refuse_ports: only an exit has an exit policy (gossip.role = \"exit\")"
        );
    }

    /// `gossip.exit_max_connections` caps an exit's connections (4096 unless set); zero,
    /// more than a port's worth, or the key on a relay that is not an exit, is refused in
    /// one line naming the key.
    #[test]
    fn exit_max_connections_is_an_exits_and_in_range() {
        let exit = |max: Option<usize>, role: &str| {
            let mut file = gossip_file();
            if let Some(g) = file.gossip.as_mut() {
                g.role = Some(role.into());
                g.exit_max_connections = max;
            }
            RelayConfig::from_toml(&render(&file).unwrap(), Path::new(""))
                .map(|c| c.gossip.unwrap().exit_max_connections)
        };
        assert_eq!(
            exit(None, "exit").unwrap(),
            crate::exit::limits::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(exit(Some(100), "exit").unwrap(), 100);
        for max in [0, MAX_EXIT_CONNECTIONS + 1] {
            let e = exit(Some(max), "exit").unwrap_err();
            assert_eq!(e.field, "gossip.exit_max_connections");
            assert_eq!(
                e.to_string(),
                format!(
                    "gossip.exit_max_connections: {max} is out of range (1 to {MAX_EXIT_CONNECTIONS})"
                )
            );
        }
        let e = exit(Some(100), "mix").unwrap_err();
        assert_eq!(
            e.to_string(),
            "gossip.exit_max_connections: only an exit opens connections (gossip.role = \"exit\")"
        );
    }

    /// A gossip-mode mix at every `[mix]` default.
    fn gossip_file() -> ConfigFile {
        ConfigFile {
            topology: None,
            node: Some(NodeSection {
                format: Some("v2".into()),
                ..NodeSection::default()
            }),
            mix: None,
            gossip: Some(GossipSection {
                bind: Some("127.0.0.1:47471".into()),
                network_seed: Some("42".repeat(32)),
                identity_file: Some("identity.key".into()),
                role: Some("mix".into()),
                ..GossipSection::default()
            }),
            ..static_file()
        }
    }

    /// The packet address a relay advertises must be on its gossip address's IP (only that
    /// is proven by probes); anywhere else is refused in one line naming the key.
    #[test]
    fn an_advertised_packet_address_off_the_gossip_ip_is_refused() {
        let mut file = gossip_file();
        if let Some(g) = file.gossip.as_mut() {
            g.advertise = Some("127.0.0.2:47470".into());
        }
        let e = RelayConfig::from_toml(&render(&file).unwrap(), Path::new("")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("gossip.advertise: must be on gossip.bind's IP"),
            "{e}"
        );
        if let Some(g) = file.gossip.as_mut() {
            g.advertise = Some("127.0.0.1:40000".into());
        }
        assert!(RelayConfig::from_toml(&render(&file).unwrap(), Path::new("")).is_ok());
    }

    /// A gateway's QUIC and WSS listeners: on the gossip IP, beside the plain UDP one, at
    /// a gateway only; the TLS key defaults to the identity file's path with `.tls`.
    #[test]
    fn disguised_listeners_are_a_gateways_on_its_gossip_ip() {
        let parse = |file: &ConfigFile| {
            RelayConfig::from_toml(&render(file).unwrap(), Path::new("/etc/pb"))
        };
        let with = |role: &str, udp: Option<&str>, quic: &str| {
            let mut file = gossip_file();
            if let Some(g) = file.gossip.as_mut() {
                g.role = Some(role.into());
                g.client_bind = udp.map(Into::into);
                g.client_quic = Some(quic.into());
                g.client_wss = Some("127.0.0.1:8443".into());
            }
            file
        };
        let c = parse(&with("gateway", Some("127.0.0.1:47480"), "127.0.0.1:443")).unwrap();
        let g = c.gossip.unwrap();
        assert_eq!(g.client_quic, Some("127.0.0.1:443".parse().unwrap()));
        assert_eq!(g.client_wss, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(g.tls_key_file, Path::new("/etc/pb/identity.key.tls"));
        for (file, field, reason) in [
            (
                with("gateway", Some("127.0.0.1:47480"), "127.0.0.2:443"),
                "gossip.client_quic",
                "needs a port, on gossip.bind's IP",
            ),
            (
                with("gateway", None, "127.0.0.1:443"),
                "gossip.client_quic",
                "needs gossip.client_bind",
            ),
            (
                with("mix", None, "127.0.0.1:443"),
                "gossip.client_quic",
                "only a gateway serves clients",
            ),
        ] {
            let e = parse(&file).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.starts_with(reason), "{e}");
        }
    }

    /// A gateway's obfs4 listener: like QUIC's and WSS's; its iat-mode 0-2 and only with
    /// it; its keys next to the identity; the plain TCP listener only beside the UDP one.
    #[test]
    fn the_obfs4_listener_and_its_plain_tcp_backend() {
        let parse = |file: &ConfigFile| {
            RelayConfig::from_toml(&render(file).unwrap(), Path::new("/etc/pb"))
        };
        let with = |obfs4: Option<&str>, iat: Option<u8>, tcp: Option<&str>, udp: bool| {
            let mut file = gossip_file();
            if let Some(g) = file.gossip.as_mut() {
                g.role = Some("gateway".into());
                g.client_bind = udp.then(|| "127.0.0.1:47480".into());
                g.client_obfs4 = obfs4.map(Into::into);
                g.obfs4_iat_mode = iat;
                g.client_tcp = tcp.map(Into::into);
            }
            file
        };
        let g = parse(&with(
            Some("127.0.0.1:9443"),
            Some(2),
            Some("127.0.0.1:9080"),
            true,
        ))
        .unwrap()
        .gossip
        .unwrap();
        assert_eq!(g.client_obfs4, Some("127.0.0.1:9443".parse().unwrap()));
        assert_eq!(g.obfs4_iat_mode, pb_obfs4::IatMode::Paranoid);
        assert_eq!(g.client_tcp, Some("127.0.0.1:9080".parse().unwrap()));
        assert_eq!(g.obfs4_state_file, Path::new("/etc/pb/identity.key.obfs4"));
        let plain = parse(&with(Some("127.0.0.1:9443"), None, None, true))
            .unwrap()
            .gossip
            .unwrap();
        assert_eq!(plain.obfs4_iat_mode, pb_obfs4::IatMode::None);
        for (file, field, reason) in [
            (
                with(Some("127.0.0.1:9443"), Some(3), None, true),
                "gossip.obfs4_iat_mode",
                "0, 1 or 2",
            ),
            (
                with(None, Some(1), None, true),
                "gossip.obfs4_iat_mode",
                "needs gossip.client_obfs4",
            ),
            (
                with(Some("127.0.0.2:9443"), None, None, true),
                "gossip.client_obfs4",
                "needs a port, on gossip.bind's IP",
            ),
            (
                with(Some("127.0.0.1:9443"), None, None, false),
                "gossip.client_obfs4",
                "needs gossip.client_bind",
            ),
            (
                with(None, None, Some("127.0.0.1:9080"), false),
                "gossip.client_tcp",
                "needs gossip.client_bind",
            ),
        ] {
            let e = parse(&file).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.starts_with(reason), "{e}");
        }
    }

    /// A gateway's name server for DNS links: on gossip.bind's IP, with its zone (a domain
    /// name that fits an offer), neither without the other.
    #[test]
    fn the_dns_listener_and_its_zone() {
        let parse = |file: &ConfigFile| {
            RelayConfig::from_toml(&render(file).unwrap(), Path::new("/etc/pb"))
        };
        let with = |dns: Option<&str>, zone: Option<&str>| {
            let mut file = gossip_file();
            if let Some(g) = file.gossip.as_mut() {
                g.role = Some("gateway".into());
                g.client_bind = Some("127.0.0.1:47480".into());
                g.client_dns = dns.map(Into::into);
                g.dns_zone = zone.map(Into::into);
            }
            file
        };
        let g = parse(&with(Some("127.0.0.1:53"), Some("T.Example.NET.")))
            .unwrap()
            .gossip
            .unwrap();
        let (addr, zone) = g.client_dns.unwrap();
        assert_eq!(addr, "127.0.0.1:53".parse().unwrap());
        assert_eq!(zone, pb_doh::Zone::parse("t.example.net").unwrap());
        let long = format!("{}.net", "a".repeat(62));
        for (file, field, reason) in [
            (
                with(Some("127.0.0.1:53"), None),
                "gossip.dns_zone",
                "missing",
            ),
            (
                with(None, Some("t.example.net")),
                "gossip.dns_zone",
                "needs gossip.client_dns",
            ),
            (
                with(Some("127.0.0.1:53"), Some("a..b")),
                "gossip.dns_zone",
                "\"a..b\" is not",
            ),
            (
                with(Some("127.0.0.1:53"), Some(&long)),
                "gossip.dns_zone",
                "longer than",
            ),
            (
                with(Some("127.0.0.2:53"), Some("t.example.net")),
                "gossip.client_dns",
                "needs a port, on gossip.bind's IP",
            ),
        ] {
            let e = parse(&file).unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.reason.starts_with(reason), "{e}");
        }
    }

    /// The replay filter is sized from the rates and the epoch length: a configuration
    /// whose filter would not fit in `mix.replay_memory_mib` is refused in one line naming
    /// the fields it is sized from; the same epoch at lower rates fits.
    #[test]
    fn a_replay_filter_that_cannot_hold_an_epoch_is_refused_in_one_line() {
        let parse =
            |file: &ConfigFile| RelayConfig::from_toml(&render(file).unwrap(), Path::new(""));
        let c = parse(&gossip_file()).unwrap();
        assert_eq!(
            (
                c.mix.replay_capacity,
                c.mix.client_rate,
                c.mix.replay_memory_mib
            ),
            (None, 500, 4096)
        );
        assert_eq!(c.gossip.as_ref().unwrap().max_layer_width, 4);
        assert_eq!(c.epoch_seconds(), (3600, "gossip.epoch_seconds"));

        let mut week = gossip_file();
        if let Some(g) = week.gossip.as_mut() {
            g.epoch_seconds = Some(7 * 24 * 3600);
        }
        let e = parse(&week).unwrap_err();
        assert_eq!(
            e.field,
            "mix.link_rate, gossip.epoch_seconds, gossip.max_layer_width"
        );
        assert!(
            e.reason
                .starts_with("the replay filter would need 28.8 GiB"),
            "{e}"
        );
        assert_eq!(e.to_string().lines().count(), 1, "{e}");

        if let Some(g) = week.gossip.as_mut() {
            g.max_layer_width = Some(1);
        }
        week.mix = Some(MixSection {
            link_rate: Some(10),
            ..MixSection::default()
        });
        assert!(parse(&week).is_ok());

        let mut both = gossip_file();
        both.mix = Some(MixSection {
            epoch_seconds: Some(3600),
            ..MixSection::default()
        });
        assert_eq!(parse(&both).unwrap_err().field, "mix.epoch_seconds");
        let c = parse(&static_file()).unwrap();
        assert_eq!(c.epoch_seconds(), (3600, "mix.epoch_seconds"));
    }

    #[test]
    fn a_ledger_needs_its_directory_and_a_network_file_naming_its_url() {
        let parse =
            |file: &ConfigFile| RelayConfig::from_toml(&render(file).unwrap(), Path::new(""));
        let mut listen_only = gossip_file();
        if let Some(g) = listen_only.gossip.as_mut() {
            g.ledger_listen = Some("127.0.0.1:8470".into());
        }
        assert_eq!(
            parse(&listen_only).unwrap_err().field,
            "gossip.ledger_listen"
        );
        let mut no_url = gossip_file();
        if let Some(g) = no_url.gossip.as_mut() {
            g.ledger_dir = Some("ledger".into());
        }
        let e = parse(&no_url).unwrap_err();
        assert_eq!(e.field, "gossip.ledger_dir");
        assert!(e.reason.contains("names the ledger's URL"), "{e}");
        // With a network file naming the URL: taken, relative to the configuration.
        let dir =
            std::env::temp_dir().join(format!("pb-relay-ledger-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pair = pb_control::IdentityKeyPair::from_seed(&[1; 32]);
        let key = pb_control::note::NoteKey::new("pb.test/steward-1", pair.public()).unwrap();
        let network = pb_control::network::NetworkFile {
            stewards: pb_control::checkpoint::Stewards::new("pb.test/network", vec![key], 1)
                .unwrap(),
            seed: [0x42; 32],
            gateways: vec![pb_control::network::GatewayEntry {
                addr: "198.18.0.1:47480".parse().unwrap(),
                link_key: [0x11; 32],
                offers: Vec::new(),
            }],
            epoch_seconds: 3600,
            policy: pb_control::admission::Policy::default(),
            allow_prefixes: Vec::new(),
            ledger: Some("http://198.18.0.1:8470".into()),
        };
        std::fs::write(dir.join("network.txt"), network.render()).unwrap();
        let mut with = gossip_file();
        if let Some(g) = with.gossip.as_mut() {
            g.network_seed = Some("42".repeat(32));
            g.network_file = Some("network.txt".into());
            g.ledger_dir = Some("ledger".into());
            g.ledger_listen = Some("198.18.0.1:8470".into());
        }
        let c = RelayConfig::from_toml(&render(&with).unwrap(), &dir).unwrap();
        let g = c.gossip.unwrap();
        assert_eq!(g.ledger_dir, Some(dir.join("ledger")));
        assert_eq!(g.ledger_listen, Some("198.18.0.1:8470".parse().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_of_the_configuration_prints_no_secret() {
        let file = static_file();
        let text = render(&file).unwrap();
        let c = RelayConfig::from_toml(&text, Path::new("")).unwrap();
        let printed = format!("{c:?} {c:#?} {file:?} {:?}", file.node);
        assert!(!printed.contains("c3c3"), "{printed}");
        assert!(
            !printed.contains("195"),
            "the secret's bytes in decimal: {printed}"
        );
        assert!(printed.contains("[scrubbed]"), "{printed}");
    }

    #[test]
    fn the_old_cover_budget_is_refused_by_name() {
        let mut file = static_file();
        file.mix = Some(MixSection {
            cover_per_turn: Some(8),
            ..MixSection::default()
        });
        let e = RelayConfig::from_toml(&render(&file).unwrap(), Path::new("")).unwrap_err();
        assert_eq!(e.field, "mix.cover_per_turn");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[test]
    fn admin_must_be_loopback_and_given_once() {
        let mut file = static_file();
        file.admin = Some("198.18.0.1:9100".into());
        let e = RelayConfig::from_toml(&render(&file).unwrap(), Path::new("")).unwrap_err();
        assert_eq!(e.field, "admin");
        let mut file = static_file();
        file.gossip = Some(GossipSection {
            admin: Some("127.0.0.1:9101".into()),
            ..GossipSection::default()
        });
        file.topology = None;
        file.node = Some(NodeSection {
            format: Some("v1".into()),
            ..NodeSection::default()
        });
        let e = RelayConfig::from_toml(&render(&file).unwrap(), Path::new("")).unwrap_err();
        assert!(
            e.to_string().contains("given twice") || e.field.starts_with("gossip"),
            "{e}"
        );
    }
}
