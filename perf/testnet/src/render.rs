//! Each relay's configuration file and the static topology file, as the relay's own serde
//! types ([`pb_relay::config::file`]); [`pb_relay::config::file::render`] makes the TOML.

use std::path::Path;

use anyhow::Context as _;
use pb_relay::config::file::{
    ConfigFile, GossipSection, IoSection, MixSection, NodeSection, TopologyEntry, TopologyFile,
    render,
};
use pb_sphinx::Format;

use crate::network::{Backend, GOSSIP_PORT, Mode, Network, Node, PACKET_PORT, Role, hex};

/// The network file's name in the scratch directory (gossip mode with stewards).
pub const NETWORK_FILE: &str = "network.txt";

impl Network {
    /// Relay `i`'s configuration file: packets on [`PACKET_PORT`], gossip on
    /// [`GOSSIP_PORT`], the gateway's client link on
    /// [`CLIENT_LINK_PORT`](crate::CLIENT_LINK_PORT), the admin endpoint, `deliver_to`, the
    /// exit's allowance for the site's own range; in static mode its node id, Sphinx secret
    /// and epoch and `topology.toml`. File names are relative to the scratch directory
    /// (`identity<i>.key`, `topology.toml`).
    pub fn relay_config(&self, i: usize) -> ConfigFile {
        let me = self.address(Node::Relay(i));
        let role = self.role(i);
        let cores = if i == 0 { self.gateway_cores } else { 1 };
        let io = match self.backend {
            Backend::Udp => IoSection {
                cores: (cores > 1).then_some(cores),
                ..IoSection::udp(self.packet_addr(i))
            },
            Backend::AfXdp => IoSection {
                queues: Some((0..cores).collect()),
                ..IoSection::af_xdp(&self.ifname(i), PACKET_PORT, "copy")
            },
        };
        let format = match self.format {
            Format::V1 => "v1",
            Format::V2 => "v2",
        };
        let (node, gossip, topology) = match &self.mode {
            Mode::Gossip { epoch_seconds } => (
                NodeSection {
                    format: Some(format.into()),
                    ..NodeSection::default()
                },
                Some(GossipSection {
                    bind: Some(format!("{me}:{GOSSIP_PORT}")),
                    seeds: Some(
                        (0..self.gossip_seeds)
                            .map(|s| self.gossip_addr(s).to_string())
                            .collect(),
                    ),
                    network_seed: Some(hex(&self.network_seed)),
                    identity_file: Some(format!("identity{i}.key")),
                    role: Some(role.as_str().into()),
                    epoch_seconds: Some(*epoch_seconds),
                    max_layer_width: Some(self.layer_width()),
                    // With AF_XDP, io.bind is the bind mode, not an address.
                    advertise: (self.backend == Backend::AfXdp)
                        .then(|| self.packet_addr(i).to_string()),
                    client_bind: (role == Role::Gateway).then(|| self.client_link().to_string()),
                    client_quic: (role == Role::Gateway)
                        .then(|| format!("{me}:{}", crate::network::QUIC_PORT)),
                    client_wss: (role == Role::Gateway)
                        .then(|| format!("{me}:{}", crate::network::WSS_PORT)),
                    client_obfs4: (role == Role::Gateway)
                        .then(|| format!("{me}:{}", crate::network::OBFS4_PORT)),
                    obfs4_iat_mode: (role == Role::Gateway).then_some(self.obfs4_iat_mode),
                    client_tcp: (role == Role::Gateway)
                        .then(|| format!("{me}:{}", crate::network::TCP_PORT)),
                    client_dns: (role == Role::Gateway && self.has_dns())
                        .then(|| format!("{me}:{}", crate::network::DNS_PORT)),
                    dns_zone: (role == Role::Gateway && self.has_dns())
                        .then(|| crate::network::DNS_ZONE.to_owned()),
                    exit_allow: (role == Role::Exit && self.exit_allow)
                        .then(|| vec![self.own_range()]),
                    network_file: self.network_file().map(|_| NETWORK_FILE.into()),
                    ledger_dir: self.ledger.then(|| format!("ledger{i}")),
                    ledger_listen: self
                        .ledger
                        .then(|| format!("{me}:{}", crate::network::LEDGER_PORT)),
                    ..GossipSection::default()
                }),
                None,
            ),
            Mode::Static { epoch, .. } => (
                NodeSection {
                    id: Some(hex(&self.node_id(i).0)),
                    secret: Some(hex(&self.sphinx_secret(i, *epoch))),
                    epoch: Some(*epoch),
                    format: Some(format.into()),
                },
                None,
                Some("topology.toml".into()),
            ),
        };
        ConfigFile {
            topology,
            deliver_to: self.deliver_to(i).map(|to| to.to_string()),
            admin: self.admin_addr(i).map(|a| a.to_string()),
            node: Some(node),
            io: Some(io),
            mix: Some(MixSection {
                link_rate: Some(self.link_rate),
                loop_rate: self.loop_rate,
                insecure_no_cover: self.no_cover.then_some(true),
                ..MixSection::default()
            }),
            gossip,
        }
    }

    /// Static mode: the topology file (relay `i` in layer `i`, then the outside nodes);
    /// `None` in gossip mode.
    pub fn topology_file(&self) -> Option<TopologyFile> {
        let Mode::Static { epoch, outside } = &self.mode else {
            return None;
        };
        let mut nodes: Vec<TopologyEntry> = (0..self.relays)
            .map(|i| TopologyEntry {
                id: Some(hex(&self.node_id(i).0)),
                role: Some(self.role(i).as_str().into()),
                layer: Some(i as u32),
                addr: Some(self.packet_addr(i).to_string()),
                public_key: Some(hex(&self.public_key(i, *epoch))),
            })
            .collect();
        nodes.extend(outside.iter().map(|o| TopologyEntry {
            id: Some(hex(&o.id.0)),
            role: Some(o.role.as_str().into()),
            layer: Some(o.layer),
            addr: Some(o.addr.to_string()),
            public_key: Some(hex(&o.public_key)),
        }));
        Some(TopologyFile { node: Some(nodes) })
    }

    /// Relay `i`'s interface: its veth in the star.
    pub(crate) fn ifname(&self, i: usize) -> String {
        pb_testbed::star_ifname(self.node_index(Node::Relay(i)))
    }

    /// Writes every relay's identity key and configuration, and the topology file, into
    /// `dir`.
    pub(crate) fn write_files(&self, dir: &Path) -> anyhow::Result<()> {
        let write = |name: String, text: String| {
            std::fs::write(dir.join(&name), text)
                .with_context(|| format!("writing {}", dir.join(name).display()))
        };
        for i in 0..self.relays {
            write(
                format!("identity{i}.key"),
                hex(&self.identity_seed(i)) + "\n",
            )?;
            write(format!("relay{i}.toml"), render(&self.relay_config(i))?)?;
        }
        // The gateway's TLS key, where it looks for it (next to its identity).
        if matches!(self.mode, Mode::Gossip { .. }) {
            let path = dir.join("identity0.key.tls");
            std::fs::write(
                &path,
                zeroize::Zeroizing::new(self.gateway_tls_key()).as_slice(),
            )
            .with_context(|| format!("writing {}", path.display()))?;
            let path = dir.join("identity0.key.obfs4");
            std::fs::write(&path, self.gateway_obfs4_state().as_slice())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(topology) = self.topology_file() {
            write("topology.toml".into(), render(&topology)?)?;
        }
        if let Some(file) = self.network_file() {
            write(NETWORK_FILE.into(), file.render())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

    use pb_relay::config::{Backend as IoBackend, RelayConfig, Topology};

    use super::*;
    use crate::network::{ADMIN_PORT, CLIENT_LINK_PORT, OutsideNode};

    fn parse(net: &Network, i: usize) -> RelayConfig {
        let text = render(&net.relay_config(i)).unwrap();
        // The network file the configuration names is read as it is parsed.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pb-render-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(file) = net.network_file() {
            std::fs::write(dir.join(NETWORK_FILE), file.render()).unwrap();
        }
        let parsed = RelayConfig::from_toml(&text, &dir);
        let _ = std::fs::remove_dir_all(&dir);
        parsed.unwrap_or_else(|e| panic!("relay {i}: {e}\n{text}"))
    }

    #[test]
    fn gossip_configs_parse_back_with_each_role_once() {
        for builder in [
            Network::builder(),
            Network::builder().netns("t").backend(Backend::AfXdp),
            Network::builder().netns("t").admin(true).relays(5),
        ] {
            let net = builder
                .deliver_to(0, "127.0.0.1:9000".parse().unwrap())
                .build()
                .unwrap();
            let configs: Vec<RelayConfig> = (0..net.relays()).map(|i| parse(&net, i)).collect();
            let gossip: Vec<_> = configs.iter().map(|c| c.gossip.clone().unwrap()).collect();
            for role in [pb_control::Role::Gateway, pb_control::Role::Exit] {
                assert_eq!(gossip.iter().filter(|g| g.role == role).count(), 1);
            }
            assert_eq!(gossip[0].role, pb_control::Role::Gateway);
            assert_eq!(gossip[net.relays() - 1].role, pb_control::Role::Exit);
            for (i, (c, g)) in configs.iter().zip(&gossip).enumerate() {
                assert_eq!(g.advertise, net.packet_addr(i), "relay {i}");
                assert_eq!(g.bind, net.gossip_addr(i));
                assert_eq!(g.network_seed, net.network_seed());
                assert!(g.identity_file.ends_with(format!("identity{i}.key")));
                // Every relay follows the network file's three stewards, two to sign.
                let file = g.network.as_ref().unwrap();
                assert_eq!(
                    (file.stewards.keys().len(), file.stewards.threshold()),
                    (3, 2)
                );
                assert_eq!(g.seeds, vec![net.gossip_addr(0), net.gossip_addr(1)]);
                // Only the gateway serves clients, only the exit opens the site's range.
                assert_eq!(g.client_bind.is_some(), i == 0, "relay {i}");
                assert_eq!(g.exit_allow.is_empty(), i + 1 != net.relays(), "relay {i}");
                assert_eq!(c.deliver_to.is_some(), i == 0);
                assert_eq!(c.mix.link_rate, 100);
                assert_eq!(c.format, pb_sphinx::Format::V1);
                match (&c.backend, net.backend()) {
                    (IoBackend::Udp { bind }, Backend::Udp) => {
                        assert_eq!(*bind, net.packet_addr(i));
                    }
                    (IoBackend::AfXdp(io), Backend::AfXdp) => {
                        assert_eq!(io.interface, pb_testbed::star_ifname(i));
                        assert_eq!(io.queues, [0]);
                    }
                    (b, _) => panic!("relay {i}: {b:?}"),
                }
                match c.admin {
                    Some(admin) => {
                        assert!(admin.ip().is_loopback());
                        assert_eq!(admin.port(), ADMIN_PORT);
                    }
                    None => assert!(net.admin_addr(i).is_none()),
                }
            }
            let gateway = gossip[0].client_bind.unwrap();
            assert_eq!(gateway, net.client_link());
            assert_eq!(gateway.port(), CLIENT_LINK_PORT);
            let (ip, prefix) = net
                .own_range()
                .split_once('/')
                .map(|(ip, p)| (ip.parse().unwrap(), p.parse().unwrap()))
                .unwrap();
            assert_eq!(gossip[net.relays() - 1].exit_allow, vec![(ip, prefix)]);
        }
    }

    #[test]
    fn the_gateway_runs_the_cores_it_is_given() {
        let net = Network::builder().gateway_cores(2).build().unwrap();
        assert_eq!(parse(&net, 0).cores, 2);
        assert_eq!(parse(&net, 1).cores, 1);
        let net = Network::builder()
            .netns("t")
            .backend(Backend::AfXdp)
            .gateway_cores(2)
            .build()
            .unwrap();
        assert_eq!(parse(&net, 0).cores, 2);
        assert_eq!(parse(&net, 3).cores, 1);
    }

    #[test]
    fn static_configs_and_topology_parse_back() {
        let outside = OutsideNode {
            id: pb_sphinx::NodeId([0x61; 16]),
            role: Role::Mix,
            layer: 3,
            addr: "127.0.0.1:5000".parse().unwrap(),
            public_key: [9; 32],
        };
        let net = Network::builder()
            .relays(3)
            .format(Format::V2)
            .static_topology(7, vec![outside])
            .admin(true)
            .build()
            .unwrap();
        let topology =
            Topology::from_toml(&render(&net.topology_file().unwrap()).unwrap()).unwrap();
        assert_eq!(topology.layers, 4);
        for i in 0..3 {
            let c = parse(&net, i);
            assert!(c.gossip.is_none());
            assert_eq!(c.node, net.node_id(i));
            assert_eq!(c.epoch.0, 7);
            assert_eq!(c.secret.expose(), &net.sphinx_secret(i, 7));
            assert!(c.topology.ends_with("topology.toml"), "{:?}", c.topology);
            let entry = topology.node(net.node_id(i)).unwrap();
            assert_eq!(entry.layer, i as u32);
            assert_eq!(entry.addr, net.packet_addr(i));
            assert_eq!(entry.public_key, net.public_key(i, 7));
            assert_eq!(format!("{:?}", entry.role), format!("{:?}", net.role(i)));
            assert_eq!(c.admin, net.admin_addr(i));
        }
        assert!(
            Network::builder()
                .build()
                .unwrap()
                .topology_file()
                .is_none()
        );
    }
}
