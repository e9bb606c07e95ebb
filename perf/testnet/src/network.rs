//! The description of a network: how many relays and their roles, where they run, on what,
//! and with which settings. Nothing here starts anything; see [`crate::Testnet`].

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{bail, ensure};
use pb_sphinx::{Format, MAX_HOPS, NodeId};

/// Every relay's packet port.
pub const PACKET_PORT: u16 = 47470;
/// Every relay's gossip port.
pub const GOSSIP_PORT: u16 = 47471;
/// The gateway's client-link port (where pb-client connects).
pub const CLIENT_LINK_PORT: u16 = 47480;
/// The gateway's QUIC (HTTP/3) port, in gossip mode.
pub const QUIC_PORT: u16 = 4433;
/// The gateway's WebSocket-over-TLS port, in gossip mode.
pub const WSS_PORT: u16 = 8443;
/// The gateway's obfs4 port, in gossip mode.
pub const OBFS4_PORT: u16 = 9443;
/// The gateway's plain TCP port (records as they are, for an obfs4proxy server in front of
/// it), in gossip mode. Not offered to clients.
pub const TCP_PORT: u16 = 9080;
/// The gateway's authoritative name server for [`DNS_ZONE`] (UDP), in gossip mode on
/// namespaces.
pub const DNS_PORT: u16 = 53;
/// The zone whose names carry DNS links to the gateway.
pub const DNS_ZONE: &str = "t.pb.test";
/// A second zone the testnet's resolver forwards to the gateway's address, at
/// [`DNS_BENCH_PORT`]: for a benchmark's own name server beside the relay's.
pub const DNS_BENCH_ZONE: &str = "b.pb.test";
/// Where that name server listens, on the gateway's address.
pub const DNS_BENCH_PORT: u16 = 5353;
/// Where the testnet's DoH resolver ([`crate::Testnet::start_doh_resolver`]) listens.
pub const DOH_PORT: u16 = 443;
/// The admin endpoint's port, where a relay has one.
pub const ADMIN_PORT: u16 = 9100;
/// The port each relay serves its copy of the ledger on, with [`NetworkBuilder::ledger`]
/// (relay 0, the first steward, is the log operator: the network file names its URL).
pub const LEDGER_PORT: u16 = 8470;

/// A relay's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Where clients enter (layer 0).
    Gateway,
    /// A mix.
    Mix,
    /// Where streams leave the network.
    Exit,
}

impl Role {
    /// The role of relay `i` of `relays`: the first is the gateway, the last the exit, those
    /// between mixes (one relay alone is a gateway). The one place roles are decided.
    pub fn of(i: usize, relays: usize) -> Self {
        match i {
            0 => Self::Gateway,
            _ if i + 1 == relays => Self::Exit,
            _ => Self::Mix,
        }
    }

    /// As the configuration files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Mix => "mix",
            Self::Exit => "exit",
        }
    }
}

/// Where the relays run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Site {
    /// In this network namespace on loopback addresses: node `k` (see [`Node`]) on
    /// `first + k`. No root needed; UDP backend only.
    Loopback {
        /// The first relay's address (in 127.0.0.0/8).
        first: Ipv4Addr,
    },
    /// Each node in a network namespace of its own on a bridge ([`pb_testbed::star`]),
    /// node `k` on [`pb_testbed::star_address`]`(k)`. Needs root.
    Netns {
        /// Names the namespaces (`pbt-<pid>-<tag>-<k>`).
        tag: String,
    },
}

/// The relays' packet I/O.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// UDP sockets.
    Udp,
    /// AF_XDP with the XDP program on the node's veth, native mode, copy bind (veth has no
    /// zero-copy). Namespaces only.
    AfXdp,
}

/// A node of the network: the relays, then the web server's, then the client's. On a
/// [`Site::Netns`] each is a namespace; on loopback an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// Relay `i`.
    Relay(usize),
    /// Where the web server (or any destination) listens.
    Web,
    /// Where pb-client (or any test's client socket) runs.
    Client,
    /// A recursive resolver serving DoH, between the client and the gateway's name server
    /// (only in a network built with [`NetworkBuilder::resolver`]).
    Resolver,
}

/// How the relays know the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Gossip: signed descriptors, the topology computed every epoch.
    Gossip {
        /// Epoch length.
        epoch_seconds: u64,
    },
    /// A static topology file: relay `i` alone in layer `i`, then `outside` nodes; each
    /// relay's Sphinx secret for the epoch is derived from its identity seed.
    Static {
        /// The epoch the files are written for.
        epoch: u32,
        /// Nodes of the topology that are not relays of this network (a test's sockets).
        outside: Vec<OutsideNode>,
    },
}

/// A static topology's node that no relay of the network plays: all public values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutsideNode {
    /// Its node id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its layer.
    pub layer: u32,
    /// Where packets for it go.
    pub addr: SocketAddr,
    /// Its Sphinx public key.
    pub public_key: [u8; 32],
}

/// A network, as described; see the crate docs. Built with [`Network::builder`].
#[derive(Clone)]
pub struct Network {
    pub(crate) relays: usize,
    pub(crate) site: Site,
    pub(crate) backend: Backend,
    pub(crate) format: Format,
    pub(crate) mode: Mode,
    pub(crate) link_rate: u32,
    pub(crate) loop_rate: Option<u32>,
    pub(crate) no_cover: bool,
    pub(crate) network_seed: [u8; 32],
    /// Relay `i`'s identity seed is 32 bytes of `identity_base + i`.
    pub(crate) identity_base: u8,
    pub(crate) gossip_seeds: usize,
    pub(crate) exit_allow: bool,
    pub(crate) deliver_to: Vec<(usize, SocketAddr)>,
    pub(crate) admin: bool,
    pub(crate) gateway_cores: u32,
    pub(crate) stats_interval: f64,
    pub(crate) obfs4_iat_mode: u8,
    pub(crate) resolver: bool,
    pub(crate) relay_env: Vec<(String, String)>,
    pub(crate) relay_binary: Option<PathBuf>,
    pub(crate) log_dir: Option<PathBuf>,
    pub(crate) scratch: Option<PathBuf>,
    /// Relays 0 to n - 1 are stewards (gossip mode; 0: no network file), k must sign;
    /// `None` until `build`: three (at most the relays) and two of them (one of one).
    pub(crate) stewards: Option<(usize, usize)>,
    /// Whether the network keeps a ledger (every relay a copy in `ledger<i>/`).
    pub(crate) ledger: bool,
}

impl core::fmt::Debug for Network {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Network")
            .field("relays", &self.relays)
            .field("site", &self.site)
            .field("backend", &self.backend)
            .field("format", &self.format)
            .field("mode", &self.mode)
            .field("link_rate", &self.link_rate)
            .field("loop_rate", &self.loop_rate)
            .field("no_cover", &self.no_cover)
            .field("identity_seeds", &pb_log::SCRUBBED)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Network`]; every setting has a default (see [`Network::builder`]).
#[derive(Debug)]
pub struct NetworkBuilder(Network);

impl Network {
    /// A builder with the defaults: eight relays (a gateway, three mix layers of two, an
    /// exit) on loopback from 127.79.0.1, UDP, format v1, gossip with epochs of half an hour
    /// or a little more that begin about now ([`fresh_epoch_seconds`]: no epoch ends during
    /// a test),
    /// 100 packets per second per link, the relay's default loop rate, network seed 0x42…,
    /// identity seeds 0x30…, two gossip seeds, the exit allowed into the site's own range,
    /// no admin endpoints, one pipeline core each, stats every second, the binaries next to
    /// the running one.
    pub fn builder() -> NetworkBuilder {
        NetworkBuilder(Self {
            relays: 8,
            site: Site::Loopback {
                first: Ipv4Addr::new(127, 79, 0, 1),
            },
            backend: Backend::Udp,
            format: Format::V1,
            mode: Mode::Gossip {
                epoch_seconds: fresh_epoch_seconds(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                ),
            },
            link_rate: 100,
            loop_rate: None,
            no_cover: false,
            network_seed: [0x42; 32],
            identity_base: 0x30,
            // Resolved by `build`: two, or one for a network of one relay.
            gossip_seeds: 0,
            exit_allow: true,
            deliver_to: Vec::new(),
            admin: false,
            gateway_cores: 1,
            stats_interval: 1.0,
            obfs4_iat_mode: 0,
            resolver: false,
            relay_env: Vec::new(),
            relay_binary: None,
            log_dir: None,
            scratch: None,
            stewards: None,
            ledger: false,
        })
    }

    /// The network file (docs/spec/network-file.md) in gossip mode with stewards: its name
    /// `pb.test/<tag>`, relays 0 to n - 1 as stewards (their identity keys), the threshold,
    /// the gateway's client link, and room for every relay in the site's one /24.
    pub fn network_file(&self) -> Option<pb_control::network::NetworkFile> {
        let Mode::Gossip { epoch_seconds } = self.mode else {
            return None;
        };
        let (n, k) = self.stewards.unwrap_or((0, 0));
        if n == 0 {
            return None;
        }
        let name = format!("pb.test/{}", self.tag());
        let keys = (0..n)
            .map(|i| {
                let public =
                    pb_control::IdentityKeyPair::from_seed(&self.identity_seed(i)).public();
                pb_control::note::NoteKey::new(&format!("{name}/steward-{i}"), public)
                    .map_err(|e| anyhow::anyhow!("steward {i}: {e}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .ok()?;
        Some(pb_control::network::NetworkFile {
            stewards: pb_control::checkpoint::Stewards::new(&name, keys, k).ok()?,
            seed: self.network_seed,
            gateways: vec![pb_control::network::GatewayEntry {
                addr: self.client_link(),
                link_key: self.gateway_link_key(),
                offers: self.gateway_offers(),
            }],
            epoch_seconds,
            policy: pb_control::admission::Policy {
                per_ipv4_24: 256,
                per_ipv6_48: 4,
            },
            // The testbed's own range (benchmarking or loopback addresses).
            allow_prefixes: vec![self.own_prefix()],
            ledger: self.ledger.then(|| self.ledger_url()),
        })
    }

    /// The ledger's URL (the log operator's, relay 0's, server).
    pub fn ledger_url(&self) -> String {
        format!("http://{}:{LEDGER_PORT}", self.address(Node::Relay(0)))
    }

    /// Whether the network keeps a ledger.
    pub fn has_ledger(&self) -> bool {
        self.ledger
    }

    /// How many relays.
    pub fn relays(&self) -> usize {
        self.relays
    }

    /// Relay `i`'s role.
    pub fn role(&self, i: usize) -> Role {
        Role::of(i, self.relays)
    }

    /// The most relays one layer of the gossip topology holds: the mixes dealt over the mix
    /// layers (one gateway, one exit). What the relays size their replay filters for.
    pub fn layer_width(&self) -> usize {
        self.relays
            .saturating_sub(2)
            .div_ceil(pb_control::MIX_LAYERS)
            .max(1)
    }

    /// Where the relays run.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// Their backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Gossip or static.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Packets per second on every link.
    pub fn link_rate(&self) -> u32 {
        self.link_rate
    }

    /// The network's seed (public: it names the network).
    pub fn network_seed(&self) -> [u8; 32] {
        self.network_seed
    }

    /// The network seed as pb-client's `--network-seed` takes it.
    pub fn network_seed_hex(&self) -> String {
        hex(&self.network_seed)
    }

    /// Relay `i`'s identity seed (its identity key file holds it in hex).
    pub fn identity_seed(&self, i: usize) -> [u8; 32] {
        [self.identity_base.wrapping_add(i as u8); 32]
    }

    /// Relay `i`'s node id: that of its identity key, in both modes.
    pub fn node_id(&self, i: usize) -> NodeId {
        pb_control::IdentityKeyPair::from_seed(&self.identity_seed(i))
            .public()
            .node_id()
    }

    /// Static mode: relay `i`'s Sphinx secret for `epoch`, derived from its identity seed.
    pub fn sphinx_secret(&self, i: usize, epoch: u32) -> [u8; 32] {
        let mut input = self.identity_seed(i).to_vec();
        input.extend_from_slice(&epoch.to_le_bytes());
        blake3::derive_key("PhantomBand pb-testnet static Sphinx secret v1", &input)
    }

    /// Static mode: relay `i`'s Sphinx public key for `epoch`.
    pub fn public_key(&self, i: usize, epoch: u32) -> [u8; 32] {
        pb_sphinx::EpochKey::from_secret(pb_sphinx::Epoch(epoch), self.sphinx_secret(i, epoch))
            .public_key()
    }

    /// The address of `node`.
    pub fn address(&self, node: Node) -> Ipv4Addr {
        let k = self.node_index(node);
        match &self.site {
            Site::Loopback { first } => {
                let [a, b, c, d] = first.octets();
                Ipv4Addr::new(a, b, c, d.wrapping_add(k as u8))
            }
            Site::Netns { .. } => pb_testbed::star_address(k),
        }
    }

    /// Node `node`'s index in the star (relays first, then the web server, the client and
    /// the resolver).
    pub(crate) fn node_index(&self, node: Node) -> usize {
        match node {
            Node::Relay(i) => i,
            Node::Web => self.relays,
            Node::Client => self.relays + 1,
            Node::Resolver => self.relays + 2,
        }
    }

    /// Nodes of the site: the relays, the web server's, the client's and the resolver's (if
    /// it has one).
    pub(crate) fn nodes(&self) -> usize {
        self.relays + 2 + usize::from(self.resolver)
    }

    /// Whether the gateway runs a name server for DNS links: in gossip mode on namespaces
    /// (port 53 of a loopback address may be the host's own resolver's).
    pub fn has_dns(&self) -> bool {
        matches!(self.mode, Mode::Gossip { .. }) && matches!(self.site, Site::Netns { .. })
    }

    /// Whether the site has a resolver node.
    pub fn has_resolver(&self) -> bool {
        self.resolver && matches!(self.site, Site::Netns { .. })
    }

    /// Where relay `i` takes packets.
    pub fn packet_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.address(Node::Relay(i)), PACKET_PORT))
    }

    /// Where relay `i` gossips.
    pub fn gossip_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.address(Node::Relay(i)), GOSSIP_PORT))
    }

    /// Where pb-client reaches the gateway.
    pub fn client_link(&self) -> SocketAddr {
        SocketAddr::from((self.address(Node::Relay(0)), CLIENT_LINK_PORT))
    }

    /// The gateway's (relay 0's) link key: what a client's Noise handshake is made to.
    pub fn gateway_link_key(&self) -> [u8; 32] {
        pb_control::IdentityKeyPair::from_seed(&self.identity_seed(0)).link_public()
    }

    /// The gateway's TLS key (PKCS#8 DER): a P-256 key derived from its identity seed, so
    /// the same network gives the same pin every time it is described (`make demo` builds
    /// the network file into pb-client before it starts the network).
    pub fn gateway_tls_key(&self) -> Vec<u8> {
        use p256::pkcs8::EncodePrivateKey as _;
        let mut counter = 0u32;
        loop {
            let mut scalar = blake3::Hasher::new_derive_key("PhantomBand testnet gateway TLS key")
                .update(&self.identity_seed(0))
                .update(&counter.to_be_bytes())
                .finalize();
            let key = p256::SecretKey::from_slice(scalar.as_bytes());
            zeroize::Zeroize::zeroize(&mut scalar);
            // A 32-byte hash is a valid scalar but for a chance of 2^-32; then the next.
            if let Ok(der) = key
                .map_err(|_| ())
                .and_then(|k| k.to_pkcs8_der().map_err(|_| ()))
            {
                return der.as_bytes().to_vec();
            }
            counter += 1;
        }
    }

    /// The gateway's TLS key's pin (what clients check QUIC and WSS by).
    pub fn gateway_pin(&self) -> [u8; 32] {
        pb_transport::tls::TlsIdentity::with_key(&self.gateway_tls_key(), "gateway")
            .map(|t| t.pin())
            .unwrap_or([0; 32])
    }

    /// The gateway's obfs4 bridge keys (node id, identity key, length seed: the file
    /// `gossip.obfs4_state_file` holds), derived from its identity seed like its TLS key.
    /// Its length seed is the first of the derived ones that obfs4proxy clients can use
    /// (`pb_obfs4::PrngSeed::is_safe`).
    pub fn gateway_obfs4_state(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut state = zeroize::Zeroizing::new(vec![0u8; 76]);
        let mut xof = blake3::Hasher::new_derive_key("PhantomBand testnet gateway obfs4 state")
            .update(&self.identity_seed(0))
            .finalize_xof();
        xof.fill(&mut state[..52]);
        loop {
            let mut seed = [0u8; 24];
            xof.fill(&mut seed);
            if pb_obfs4::PrngSeed(seed).is_safe() {
                state[52..].copy_from_slice(&seed);
                return state;
            }
        }
    }

    /// The gateway's obfs4 bridge line arguments as an offer's parameters: node id,
    /// identity key, iat-mode.
    pub fn gateway_obfs4_params(&self) -> Vec<u8> {
        let state = self.gateway_obfs4_state();
        let mut node_id = [0u8; 20];
        node_id.copy_from_slice(&state[..20]);
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&state[20..52]);
        let cert = pb_obfs4::ServerIdentity::from_secret(pb_obfs4::NodeId(node_id), secret).cert();
        let mut params = cert.node_id.0.to_vec();
        params.extend_from_slice(&cert.public_key.0);
        params.push(self.obfs4_iat_mode);
        params
    }

    /// The gateway's disguised transports (gossip mode): QUIC at [`QUIC_PORT`] and WSS at
    /// [`WSS_PORT`], both with its pin, obfs4 at [`OBFS4_PORT`], and on namespaces its name
    /// server for [`DNS_ZONE`] at [`DNS_PORT`].
    pub fn gateway_offers(&self) -> Vec<pb_control::TransportOffer> {
        if !matches!(self.mode, Mode::Gossip { .. }) {
            return Vec::new();
        }
        let pin = self.gateway_pin().to_vec();
        vec![
            pb_control::TransportOffer {
                transport: pb_control::Transport::Quic,
                port: QUIC_PORT,
                params: pin.clone(),
            },
            pb_control::TransportOffer {
                transport: pb_control::Transport::WebSocket,
                port: WSS_PORT,
                params: pin,
            },
            pb_control::TransportOffer {
                transport: pb_control::Transport::Obfs4,
                port: OBFS4_PORT,
                params: self.gateway_obfs4_params(),
            },
        ]
        .into_iter()
        .chain(self.has_dns().then(|| pb_control::TransportOffer {
            transport: pb_control::Transport::DoH,
            port: DNS_PORT,
            params: DNS_ZONE.as_bytes().to_vec(),
        }))
        .collect()
    }

    /// The gateway's link key as pb-client's `--gateway-key` takes it.
    pub fn gateway_link_key_hex(&self) -> String {
        self.gateway_link_key()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Relay `i`'s admin endpoint, if the relays have one: its loopback address on a
    /// loopback site, 127.0.0.1 in its namespace otherwise.
    pub fn admin_addr(&self, i: usize) -> Option<SocketAddr> {
        self.admin.then(|| match self.site {
            Site::Loopback { .. } => SocketAddr::from((self.address(Node::Relay(i)), ADMIN_PORT)),
            Site::Netns { .. } => SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT)),
        })
    }

    /// Where relay `i` delivers messages, if anywhere.
    pub fn deliver_to(&self, i: usize) -> Option<SocketAddr> {
        self.deliver_to
            .iter()
            .find(|(relay, _)| *relay == i)
            .map(|(_, to)| *to)
    }

    /// The range the testbed's nodes take their addresses from, as a network (the loopback
    /// site's /16 or the star's /24).
    pub fn own_prefix(&self) -> (std::net::IpAddr, u8) {
        match &self.site {
            Site::Loopback { first } => {
                let [a, b, ..] = first.octets();
                (std::net::Ipv4Addr::new(a, b, 0, 0).into(), 16)
            }
            Site::Netns { .. } => {
                let [a, b, c, _] = pb_testbed::star_address(0).octets();
                (std::net::Ipv4Addr::new(a, b, c, 0).into(), 24)
            }
        }
    }

    /// The site's own range, which the exit may open (nothing else special): the loopback
    /// site's /16 or the star's /24.
    pub fn own_range(&self) -> String {
        match &self.site {
            Site::Loopback { first } => {
                let [a, b, ..] = first.octets();
                format!("{a}.{b}.0.0/16")
            }
            Site::Netns { .. } => {
                let [a, b, c, _] = pb_testbed::star_address(0).octets();
                format!("{a}.{b}.{c}.0/24")
            }
        }
    }

    /// The relays' addresses, for messages: `127.79.0.1-8`.
    pub fn relay_range(&self) -> String {
        let last = self.address(Node::Relay(self.relays - 1)).octets()[3];
        format!("{}-{last}", self.address(Node::Relay(0)))
    }

    /// Where and on what the relays run, for messages.
    pub fn describe(&self) -> &'static str {
        match (&self.site, self.backend) {
            (Site::Loopback { .. }, _) => "on loopback, UDP backend",
            (Site::Netns { .. }, Backend::Udp) => "each in a network namespace, UDP backend",
            (Site::Netns { .. }, Backend::AfXdp) => {
                "each in a network namespace, AF_XDP with the XDP program on its veth (native)"
            }
        }
    }

    /// The same in one word, for benchmark rows: `loopback-udp`, `netns-udp`,
    /// `netns-af_xdp`.
    pub fn tag(&self) -> &'static str {
        match (&self.site, self.backend) {
            (Site::Loopback { .. }, _) => "loopback-udp",
            (Site::Netns { .. }, Backend::Udp) => "netns-udp",
            (Site::Netns { .. }, Backend::AfXdp) => "netns-af_xdp",
        }
    }

    /// The `pb-relay` binary: as set, or next to the running binary.
    ///
    /// # Errors
    /// As [`crate::binary`].
    pub fn relay_binary(&self) -> anyhow::Result<PathBuf> {
        match &self.relay_binary {
            Some(path) => Ok(path.clone()),
            None => crate::binary("pb-relay"),
        }
    }

    /// The arguments of `pb-relay run` for relay `i`'s configuration in `dir`.
    pub(crate) fn relay_args(&self, dir: &Path, i: usize) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> =
            ["run", "--stats-interval"].iter().map(Into::into).collect();
        args.push(self.stats_interval.to_string().into());
        args.push("--config".into());
        args.push(dir.join(format!("relay{i}.toml")).into());
        args
    }
}

impl NetworkBuilder {
    /// How many relays (roles by [`Role::of`]).
    pub fn relays(mut self, n: usize) -> Self {
        self.0.relays = n;
        self
    }

    /// On loopback, node `k` at `first + k`.
    pub fn loopback(mut self, first: Ipv4Addr) -> Self {
        self.0.site = Site::Loopback { first };
        self
    }

    /// In a star of network namespaces named after `tag`.
    pub fn netns(mut self, tag: &str) -> Self {
        self.0.site = Site::Netns { tag: tag.into() };
        self
    }

    /// The relays' backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.0.backend = backend;
        self
    }

    /// The packet format.
    pub fn format(mut self, format: Format) -> Self {
        self.0.format = format;
        self
    }

    /// Gossip mode with epochs of `epoch_seconds`.
    pub fn gossip(mut self, epoch_seconds: u64) -> Self {
        self.0.mode = Mode::Gossip { epoch_seconds };
        self
    }

    /// Static mode in `epoch`, with `outside` nodes in the topology besides the relays.
    pub fn static_topology(mut self, epoch: u32, outside: Vec<OutsideNode>) -> Self {
        self.0.mode = Mode::Static { epoch, outside };
        self
    }

    /// Packets per second on every link.
    pub fn link_rate(mut self, rate: u32) -> Self {
        self.0.link_rate = rate;
        self
    }

    /// INSECURE, the anonymity harness's known-bad configuration: relays without cover on
    /// their links or padding on client links (`mix.insecure_no_cover`).
    pub fn insecure_no_cover(mut self, on: bool) -> Self {
        self.0.no_cover = on;
        self
    }

    /// Loops per second per link.
    pub fn loop_rate(mut self, rate: u32) -> Self {
        self.0.loop_rate = Some(rate);
        self
    }

    /// The network seed.
    pub fn network_seed(mut self, seed: [u8; 32]) -> Self {
        self.0.network_seed = seed;
        self
    }

    /// Relay `i`'s identity seed is 32 bytes of `base + i`.
    pub fn identity_seeds(mut self, base: u8) -> Self {
        self.0.identity_base = base;
        self
    }

    /// The first `n` relays are every relay's gossip seeds (default two).
    pub fn gossip_seeds(mut self, n: usize) -> Self {
        self.0.gossip_seeds = n;
        self
    }

    /// Whether the exit may open the site's own range ([`Network::own_range`]).
    pub fn exit_allow_own_range(mut self, allow: bool) -> Self {
        self.0.exit_allow = allow;
        self
    }

    /// Relay `i` delivers messages to `to` (UDP).
    pub fn deliver_to(mut self, i: usize, to: SocketAddr) -> Self {
        self.0.deliver_to.retain(|(relay, _)| *relay != i);
        self.0.deliver_to.push((i, to));
        self
    }

    /// Every relay serves its admin endpoint ([`Network::admin_addr`]).
    pub fn admin(mut self, on: bool) -> Self {
        self.0.admin = on;
        self
    }

    /// The gateway runs `cores` pipeline cores (UDP sockets, or AF_XDP queues on a veth
    /// with that many queues); the other relays one.
    pub fn gateway_cores(mut self, cores: u32) -> Self {
        self.0.gateway_cores = cores;
        self
    }

    /// The iat-mode of the gateway's obfs4 listener (0, 1 or 2; default 0), and so of its
    /// clients.
    pub fn obfs4_iat_mode(mut self, mode: u8) -> Self {
        self.0.obfs4_iat_mode = mode.min(2);
        self
    }

    /// A resolver node ([`Node::Resolver`], on namespaces) for
    /// [`crate::Testnet::start_doh_resolver`].
    pub fn resolver(mut self, on: bool) -> Self {
        self.0.resolver = on;
        self
    }

    /// `pb-relay run --stats-interval` (0: no per-link lines).
    pub fn stats_interval(mut self, seconds: f64) -> Self {
        self.0.stats_interval = seconds;
        self
    }

    /// An environment variable for every relay (`PB_LOG=debug`, say).
    pub fn relay_env(mut self, key: &str, value: &str) -> Self {
        self.0.relay_env.push((key.into(), value.into()));
        self
    }

    /// The `pb-relay` binary to run.
    pub fn relay_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.0.relay_binary = Some(path.into());
        self
    }

    /// Every process's output also goes to `<dir>/<name>.log` (`relay0.log`, …).
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.0.log_dir = Some(dir.into());
        self
    }

    /// The scratch directory (created, and removed with the testnet); default a fresh one
    /// in the temporary directory.
    pub fn scratch(mut self, dir: impl Into<PathBuf>) -> Self {
        self.0.scratch = Some(dir.into());
        self
    }

    /// Relays 0 to `n - 1` act as stewards, `k` of whom must sign each epoch's checkpoint
    /// (gossip mode; default 3 and 2; `n` = 0: no network file, clients trust the gateway).
    pub fn stewards(mut self, n: usize, k: usize) -> Self {
        self.0.stewards = Some((n, k));
        self
    }

    /// The network keeps a ledger (docs/spec/ledger.md; gossip mode with stewards): relay 0
    /// is its operator, every relay keeps a copy in `ledger<i>/` of the scratch directory and
    /// serves it on [`LEDGER_PORT`].
    pub fn ledger(mut self, on: bool) -> Self {
        self.0.ledger = on;
        self
    }

    /// The network, if the settings fit together.
    ///
    /// # Errors
    /// A setting out of range or at odds with another, in one line.
    pub fn build(self) -> anyhow::Result<Network> {
        let mut n = self.0;
        if n.gossip_seeds == 0 {
            n.gossip_seeds = n.relays.min(2);
        }
        ensure!(
            (1..=200).contains(&n.relays),
            "1 to 200 relays, not {}",
            n.relays
        );
        if let Site::Loopback { first } = &n.site {
            ensure!(
                first.is_loopback(),
                "{first} is not a loopback address (127.0.0.0/8)"
            );
            ensure!(
                usize::from(first.octets()[3]) + n.nodes() <= 255,
                "{} relays from {first} do not fit in its /24",
                n.relays
            );
            ensure!(
                n.backend == Backend::Udp,
                "AF_XDP needs network namespaces (a veth per relay)"
            );
        }
        ensure!(
            n.link_rate >= 1,
            "a link rate of at least 1 packet per second"
        );
        ensure!(
            (1..=n.relays).contains(&n.gossip_seeds),
            "1 to {} gossip seeds, not {}",
            n.relays,
            n.gossip_seeds
        );
        ensure!(
            (1..=16).contains(&n.gateway_cores),
            "1 to 16 gateway cores, not {}",
            n.gateway_cores
        );
        let stewards = n.relays.min(3);
        let (count, k) = *n.stewards.get_or_insert((stewards, stewards.min(2)));
        if count > 0 {
            ensure!(
                count <= n.relays && (1..=count).contains(&k),
                "{k} of {count} stewards among {} relays",
                n.relays
            );
        }
        ensure!(
            !n.ledger || (matches!(n.mode, Mode::Gossip { .. }) && count > 0),
            "a ledger needs gossip mode and stewards"
        );
        if let Some((i, _)) = n.deliver_to.iter().find(|(i, _)| *i >= n.relays) {
            bail!("deliver_to for relay {i} of {}", n.relays);
        }
        if let Mode::Static { outside, .. } = &n.mode {
            let layers = outside
                .iter()
                .map(|o| o.layer as usize + 1)
                .chain([n.relays])
                .max()
                .unwrap_or(n.relays);
            ensure!(
                layers <= MAX_HOPS,
                "a static topology of {layers} layers (one per relay, then the outside nodes'); at most {MAX_HOPS}"
            );
        }
        Ok(n)
    }
}

/// An epoch length from 1800 to 2700 s under which the epoch in progress at `now` (Unix
/// seconds) began at most moments ago, so that a network started now meets no epoch
/// boundary for half an hour. Gossip epochs are numbered by the clock (`now / length`), so a
/// fixed length would end an epoch in the middle of some test runs; a week-long one would
/// need a replay filter of tens of GiB per relay.
pub fn fresh_epoch_seconds(now: u64) -> u64 {
    (1800..=2700)
        .min_by_key(|length| now % length)
        .unwrap_or(1800)
}

/// Bytes in lowercase hex, as the configuration files write them.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// The network file a network is described by (its gateway's pin included) comes out
    /// the same every time: `make demo` builds it into pb-client before the network starts.
    #[test]
    fn the_same_network_gives_the_same_network_file_and_pin() {
        let build = |base: u8| {
            Network::builder()
                .stewards(1, 1)
                .identity_seeds(base)
                .build()
                .unwrap()
        };
        let (a, b) = (build(0x30), build(0x30));
        assert_eq!(
            a.network_file().unwrap().render(),
            b.network_file().unwrap().render()
        );
        assert_eq!(a.gateway_pin(), b.gateway_pin());
        assert_ne!(a.gateway_pin(), [0; 32]);
        assert_ne!(a.gateway_pin(), build(0x31).gateway_pin());
        assert_eq!(a.gateway_offers().len(), 3);
        // The obfs4 offer: the same bridge every time, with a length seed obfs4proxy
        // clients survive.
        assert_eq!(a.gateway_obfs4_params(), b.gateway_obfs4_params());
        assert_eq!(a.gateway_obfs4_params().len(), 53);
        let mut seed = [0u8; 24];
        seed.copy_from_slice(&a.gateway_obfs4_state()[52..]);
        assert!(pb_obfs4::PrngSeed(seed).is_safe());
        let file = a.network_file().unwrap().render();
        assert!(file.contains(" obfs4=9443/cert="), "{file}");
    }

    #[test]
    fn roles_are_a_gateway_then_mixes_then_an_exit() {
        let roles: Vec<Role> = (0..5).map(|i| Role::of(i, 5)).collect();
        assert_eq!(
            roles,
            [Role::Gateway, Role::Mix, Role::Mix, Role::Mix, Role::Exit]
        );
        assert_eq!(Role::of(0, 1), Role::Gateway);
        assert_eq!(
            [Role::of(0, 2), Role::of(1, 2)],
            [Role::Gateway, Role::Exit]
        );
    }

    /// The default epoch length puts a network at the start of an epoch: the next boundary
    /// is at least 29 minutes away, whenever it is built.
    #[test]
    fn default_epochs_begin_about_now() {
        for now in [
            0,
            1,
            1_777_777_777,
            1_800_000_123,
            2_000_000_000,
            u64::from(u32::MAX),
        ] {
            let length = fresh_epoch_seconds(now);
            assert!((1800..=2700).contains(&length), "{now}: {length}");
            assert!(length - now % length >= 29 * 60, "{now}: {length}");
        }
        let net = Network::builder().build().unwrap();
        assert!(matches!(net.mode(), Mode::Gossip { epoch_seconds } if *epoch_seconds <= 2700));
        assert_eq!(net.layer_width(), 2);
        assert_eq!(
            Network::builder().relays(1).build().unwrap().layer_width(),
            1
        );
    }

    #[test]
    fn nodes_have_distinct_addresses_in_the_site() {
        for builder in [Network::builder(), Network::builder().netns("t")] {
            let net = builder.build().unwrap();
            let mut all: Vec<Ipv4Addr> = (0..net.relays())
                .map(|i| net.address(Node::Relay(i)))
                .collect();
            all.extend([net.address(Node::Web), net.address(Node::Client)]);
            let count = all.len();
            all.sort();
            all.dedup();
            assert_eq!(all.len(), count, "{all:?}");
        }
        let net = Network::builder().build().unwrap();
        assert_eq!(net.relay_range(), "127.79.0.1-8");
        assert_eq!(net.own_range(), "127.79.0.0/16");
        assert_eq!(net.address(Node::Web), Ipv4Addr::new(127, 79, 0, 9));
        let net = Network::builder().netns("t").build().unwrap();
        assert_eq!(net.own_range(), "198.18.0.0/24");
        assert_eq!(net.relay_range(), "198.18.0.1-8");
    }

    #[test]
    fn settings_that_do_not_fit_are_refused() {
        for builder in [
            Network::builder().relays(0),
            Network::builder().backend(Backend::AfXdp),
            Network::builder().loopback(Ipv4Addr::new(10, 0, 0, 1)),
            Network::builder().loopback(Ipv4Addr::new(127, 0, 0, 250)),
            Network::builder().gossip_seeds(9),
            Network::builder().deliver_to(8, "127.0.0.1:9000".parse().unwrap()),
            Network::builder().relays(6).static_topology(1, Vec::new()),
            Network::builder().gateway_cores(0),
        ] {
            assert!(builder.build().is_err());
        }
    }

    #[test]
    fn static_secrets_differ_per_relay_and_epoch_and_debug_hides_the_seeds() {
        // A fixed epoch length: a clock-picked one (1950 to 1959) would print "195" itself.
        let net = Network::builder()
            .identity_seeds(0xc3)
            .gossip(1800)
            .build()
            .unwrap();
        assert_ne!(net.sphinx_secret(0, 1), net.sphinx_secret(0, 2));
        assert_ne!(net.sphinx_secret(0, 1), net.sphinx_secret(1, 1));
        assert_ne!(net.node_id(0), net.node_id(1));
        let printed = format!("{net:?}");
        assert!(
            !printed.contains("195") && !printed.contains("c3"),
            "{printed}"
        );
    }
}
