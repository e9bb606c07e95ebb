//! The configuration files as serde sees them: the relay's own file and the static topology
//! file, field for field. [`super::RelayConfig::from_toml`] reads them and checks every value;
//! tools that write configurations (the testnet library, install scripts' tests) build these
//! types and render them with `toml::to_string`, so no one formats relay TOML by hand.
//!
//! Every field is optional here: what is required, and which values are valid, is decided
//! by the checks in [`super`], which name the field in their one-line errors.

use serde::{Deserialize, Serialize};

/// A relay's configuration file. `Io` is [`IoSection`] when writing; the parser reads the
/// section as a table, because its keys depend on the backend.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile<Io = IoSection> {
    /// Static mode: the topology file, relative to this file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
    /// Where delivered messages go (UDP), if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_to: Option<String>,
    /// The local admin endpoint (health, status, metrics), in both modes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeSection>,
    /// The packet I/O backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<Io>,
    /// Mixing settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mix: Option<MixSection>,
    /// Gossip mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip: Option<GossipSection>,
}

/// `[node]`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// Static mode: the node id, 16 bytes hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Static mode: this epoch's Sphinx secret, 32 bytes hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Static mode: the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    /// The network's packet format: `v1` or `v2`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

impl core::fmt::Debug for NodeSection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NodeSection")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| pb_log::SCRUBBED))
            .field("epoch", &self.epoch)
            .field("format", &self.format)
            .finish()
    }
}

/// `[io]` as written: the UDP backend's keys and the AF_XDP backend's (pb-io's), flat.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IoSection {
    /// `udp` or `af_xdp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// UDP: the address to bind; AF_XDP: the bind mode (`auto`, `copy`, `zerocopy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// UDP: pipelines, one `SO_REUSEPORT` socket each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// The CPU each core's thread is pinned to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<u32>>,
    /// AF_XDP: the interface.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// AF_XDP: its receive queues, one pipeline core each.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<u32>>,
    /// AF_XDP: the PhantomBand UDP port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// AF_XDP: the exact UDP payload length.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_len: Option<u16>,
    /// AF_XDP: `native` or `generic`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xdp_mode: Option<String>,
    /// Whether the cores send their slots at real-time priority (default true; where the
    /// system refuses it they fall back to a precise sleep and say so).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub realtime: Option<bool>,
}

impl IoSection {
    /// The UDP backend on `bind`.
    pub fn udp(bind: std::net::SocketAddr) -> Self {
        Self {
            backend: Some("udp".into()),
            bind: Some(bind.to_string()),
            ..Self::default()
        }
    }

    /// The AF_XDP backend on queue 0 of `interface`, in native XDP mode, on `port`; `bind`
    /// is the AF_XDP bind mode (`copy` on veth, which has no zero-copy).
    pub fn af_xdp(interface: &str, port: u16, bind: &str) -> Self {
        Self {
            backend: Some("af_xdp".into()),
            interface: Some(interface.into()),
            queues: Some(vec![0]),
            port: Some(port),
            xdp_mode: Some("native".into()),
            bind: Some(bind.into()),
            ..Self::default()
        }
    }
}

/// `[mix]`: every key optional, defaults in the crate docs of [`super`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MixSection {
    /// Packets per second on every link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_rate: Option<u32>,
    /// Loops per second per link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_rate: Option<u32>,
    /// Mean per-hop delay of loops, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_delay_ms: Option<u32>,
    /// No longer used (a per-turn cover budget made busy and idle links miss different
    /// slots); read only to refuse it with a message saying so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cover_per_turn: Option<usize>,
    /// Real packets a link queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_queue: Option<usize>,
    /// Late slots caught up at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_burst: Option<u32>,
    /// Packets the delay queue holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_capacity: Option<usize>,
    /// Longest per-hop delay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u32>,
    /// Packets per epoch the replay filter is sized for, instead of the size computed from
    /// the rates and the epoch length (refused if below what they bring in an epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_capacity: Option<usize>,
    /// Packets per second from clients a gateway's replay filter is sized for, in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_rate: Option<u32>,
    /// Static mode: seconds between rotations (SIGHUP), which the replay filter is sized
    /// for and the overlap follows (gossip mode: `gossip.epoch_seconds`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_seconds: Option<u64>,
    /// The most memory the replay filter may take, in MiB; a configuration that needs more
    /// is refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_memory_mib: Option<u64>,
    /// When a loop counts as lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_timeout_ms: Option<u64>,
    /// Packets per receive batch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// The largest secret offset of a link's slots from their nominal times, in
    /// microseconds (at most half a slot interval; 0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slot_jitter_us: Option<u64>,
    /// INSECURE, for the anonymity harness's known-bad configuration only: no cover on the
    /// links and no padding on the client links, so that every rate follows the traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure_no_cover: Option<bool>,
}

/// `[gossip]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GossipSection {
    /// The gossip socket's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<String>,
    /// Relays to join through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Vec<String>>,
    /// The network's shared seed, 32 bytes hex (public: it names the network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_seed: Option<String>,
    /// The identity key file, relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<String>,
    /// `gateway`, `mix` or `exit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Epoch length in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch_seconds: Option<u64>,
    /// The most relays one layer of the network holds, which the replay filter is sized
    /// for (a relay hears from two layers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_layer_width: Option<usize>,
    /// Where packets reach this relay (default: `io.bind`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// The admin endpoint (kept for older files; the top-level `admin` is the same).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// (Gateway) where clients reach the client link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_bind: Option<String>,
    /// (Gateway) where clients reach the client link over QUIC (HTTP/3), on gossip.bind's IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_quic: Option<String>,
    /// (Gateway) where clients reach the client link over WebSocket and TLS (HTTPS), on
    /// gossip.bind's IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_wss: Option<String>,
    /// (Gateway) the TLS key QUIC and WSS present (PKCS#8 DER; made at first start when
    /// missing). Default: the identity file's path with `.tls` added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<String>,
    /// (Gateway) where clients reach the client link over obfs4 (TCP), on gossip.bind's IP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_obfs4: Option<String>,
    /// (Gateway) the iat-mode of the obfs4 listener's own writes, and the one its offer asks
    /// clients to use: 0 (none), 1 (enabled) or 2 (paranoid). Default 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obfs4_iat_mode: Option<u8>,
    /// (Gateway) the obfs4 bridge's keys: node id, identity key and length seed (76 bytes;
    /// made at first start when missing). Default: the identity file's path with `.obfs4`
    /// added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub obfs4_state_file: Option<String>,
    /// (Gateway) the client link's records over plain TCP, for a local obfs4proxy server in
    /// front of the gateway (its `TOR_PT_ORPORT`). Not offered to clients; bind it to
    /// loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tcp: Option<String>,
    /// (Gateway) where its authoritative name server for `gossip.dns_zone` listens (UDP,
    /// usually port 53), on gossip.bind's IP: clients' DNS links reach it through
    /// recursive resolvers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_dns: Option<String>,
    /// (Gateway) the zone delegated to that name server (e.g. `t.example.net`): query names
    /// below it carry clients' DNS links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_zone: Option<String>,
    /// (Exit) networks the exit may open although they are special (a testbed's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_allow: Option<Vec<String>>,
    /// (Exit) ports the exit refuses at every address, like "25" or "135-139", in place of
    /// the default list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_refuse_ports: Option<Vec<String>>,
    /// (Exit) the most TCP connections open or connecting at once, in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_max_connections: Option<usize>,
    /// Networks whose special-purpose addresses descriptors may name anyway, for a network
    /// without a network file (the starter's own loopback): like the file's allow_prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_prefix: Option<Vec<String>>,
    /// The network file (stewards, threshold, gateways), relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_file: Option<String>,
    /// Where to keep the ledger's files (the log operator's log, or a checked mirror of it),
    /// relative to the configuration file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_dir: Option<String>,
    /// Where to serve the ledger's files over HTTP, e.g. "198.18.0.1:8470".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ledger_listen: Option<String>,
}

/// The static topology file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// The nodes (`[[node]]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<Vec<TopologyEntry>>,
}

/// One `[[node]]` of the topology file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TopologyEntry {
    /// Node id, 16 bytes hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `gateway`, `mix` or `exit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Its layer (the gateways' is 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    /// Its UDP endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Its Sphinx public key for the epoch, 32 bytes hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

/// Renders a file as TOML.
///
/// # Errors
/// Only if a value cannot be TOML (none of these types has such a value).
pub fn render<T: Serialize>(file: &T) -> Result<String, toml::ser::Error> {
    toml::to_string(file)
}
