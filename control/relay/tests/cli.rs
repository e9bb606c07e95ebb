//! Bad configuration gets one line on stderr naming the field and the reason, and exit 1;
//! never a panic. Needs no privileges (the relay stops before touching the network).
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{net::Ipv4Addr, process::Command};

use pb_relay::config::file::{ConfigFile, IoSection, TopologyFile, render};
use pb_testnet::Network;

/// A static network of three relays on loopback addresses of this test run's own, from
/// 127.78.<pid>.`first`: the tests run relay 0.
fn network(first: u8) -> Network {
    Network::builder()
        .relays(3)
        .loopback(Ipv4Addr::new(
            127,
            78,
            (std::process::id() % 200) as u8,
            first,
        ))
        .format(pb_sphinx::Format::V2)
        .static_topology(1, Vec::new())
        .build()
        .unwrap()
}

fn text(file: &impl serde::Serialize) -> String {
    render(file).unwrap()
}

fn topology(net: &Network) -> TopologyFile {
    net.topology_file().unwrap()
}

/// Relay 0's configuration, changed by `change`, rendered.
fn config(net: &Network, change: impl FnOnce(&mut ConfigFile)) -> String {
    let mut file = net.relay_config(0);
    change(&mut file);
    text(&file)
}

/// The topology, changed by `change`, rendered.
fn topology_with(net: &Network, change: impl FnOnce(&mut TopologyFile)) -> String {
    let mut file = topology(net);
    change(&mut file);
    text(&file)
}

/// `text` with `from` replaced by `to`, which must be there: for values of the wrong type,
/// which the typed file cannot hold.
fn replaced(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in {text}");
    text.replace(from, to)
}

/// Runs `pb-relay run` on `config_text` with `topology_text` and returns (exit code,
/// stderr).
fn run(name: &str, config_text: &str, topology_text: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("pb-relay-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("relay.toml"), config_text).unwrap();
    std::fs::write(dir.join("topology.toml"), topology_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pb-relay"))
        .args(["run", "--config"])
        .arg(dir.join("relay.toml"))
        .args(["--seconds", "0.2", "--stats-interval", "0"])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn node(file: &mut ConfigFile) -> &mut pb_relay::config::file::NodeSection {
    file.node.as_mut().unwrap()
}

fn io(file: &mut ConfigFile) -> &mut IoSection {
    file.io.as_mut().unwrap()
}

fn mix(file: &mut ConfigFile) -> &mut pb_relay::config::file::MixSection {
    file.mix.as_mut().unwrap()
}

fn id_prefix(net: &Network) -> String {
    net.node_id(0).0[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_good_config_runs_and_reports() {
    let net = network(1);
    let (code, stderr) = run("good", &config(&net, |_| {}), &text(&topology(&net)));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.starts_with(&format!("pb-relay: node {}", id_prefix(&net))),
        "{stderr}"
    );
}

#[test]
fn several_cores_share_the_address() {
    let net = network(11);
    let config = config(&net, |c| io(c).cores = Some(2));
    let (code, stderr) = run("cores", &config, &text(&topology(&net)));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(", 2 cores"), "{stderr}");
}

#[test]
fn bad_values_name_their_field_in_one_line() {
    let net = network(21);
    let good_topology = text(&topology(&net));
    let t = || good_topology.clone();
    let c = |change: fn(&mut ConfigFile)| config(&net, change);
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "format",
            c(|c| node(c).format = Some("v9".into())),
            t(),
            "node.format",
        ),
        ("id", c(|c| node(c).id = Some("xyz".into())), t(), "node.id"),
        (
            "secret",
            c(|c| node(c).secret = Some("00".into())),
            t(),
            "node.secret",
        ),
        (
            "backend",
            c(|c| {
                c.io = Some(IoSection {
                    backend: Some("dpdk".into()),
                    ..IoSection::default()
                });
            }),
            t(),
            "io.backend",
        ),
        (
            "bind",
            c(|c| io(c).bind = Some("nowhere".into())),
            t(),
            "io.bind",
        ),
        (
            "rate",
            c(|c| mix(c).link_rate = Some(0)),
            t(),
            "mix.link_rate",
        ),
        ("batch", c(|c| mix(c).batch = Some(1000)), t(), "mix.batch"),
        (
            // Relay 0 is a gateway: a week of its link and its clients does not fit.
            "replay-memory",
            c(|c| mix(c).epoch_seconds = Some(604_800)),
            t(),
            "mix.link_rate, mix.epoch_seconds, topology, mix.client_rate: the replay filter would need",
        ),
        (
            "replay-capacity",
            c(|c| mix(c).replay_capacity = Some(1000)),
            t(),
            "mix.replay_capacity: 1000 packets is less than an epoch brings",
        ),
        (
            "unknown",
            replaced(&c(|_| {}), "[mix]\n", "[mix]\nspeed = 3\n"),
            t(),
            "unknown field",
        ),
        (
            "not-in-topology",
            c(|c| node(c).id = Some("09".repeat(16))),
            t(),
            "node.id: not in the topology",
        ),
        (
            "wrong-secret",
            c(|c| node(c).secret = Some("21".repeat(32))),
            t(),
            "node.secret: does not match",
        ),
        (
            "layers",
            c(|_| {}),
            topology_with(&net, |t| t.node.as_mut().unwrap()[2].layer = Some(7)),
            "topology.node",
        ),
        (
            "topology-addr",
            c(|_| {}),
            topology_with(&net, |t| {
                t.node.as_mut().unwrap()[1].addr = Some("x".into());
            }),
            "topology.node[1].addr",
        ),
        ("cores", c(|c| io(c).cores = Some(0)), t(), "io.cores"),
        (
            "cores-text",
            replaced(
                &c(|c| io(c).cores = Some(1)),
                "cores = 1",
                "cores = \"two\"",
            ),
            t(),
            "io.cores",
        ),
        (
            "cpus-text",
            replaced(
                &c(|c| io(c).cpus = Some(vec![0])),
                "cpus = [0]",
                "cpus = [\"a\"]",
            ),
            t(),
            "io.cpus",
        ),
        (
            "cpus-count",
            c(|c| {
                io(c).cores = Some(2);
                io(c).cpus = Some(vec![0]);
            }),
            t(),
            "io.cpus: 1 CPUs listed for 2 cores",
        ),
        (
            "cpus-range",
            c(|c| io(c).cpus = Some(vec![5000])),
            t(),
            "io.cpus",
        ),
        (
            "cpus-offline",
            c(|c| io(c).cpus = Some(vec![1000])),
            t(),
            "io.cpus: CPU 1000",
        ),
        (
            "xdp-lo",
            c(|c| c.io = Some(IoSection::af_xdp("no-such-if0", 47470, "auto"))),
            t(),
            "no-such-if0",
        ),
    ];
    for (name, config_text, topology_text, expected) in cases {
        let (code, stderr) = run(name, &config_text, &topology_text);
        assert_eq!(code, Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: not one line: {stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: {stderr:?} does not mention {expected:?}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

/// An AF_XDP relay that leaves some of its interface's receive queues without a socket says
/// so at start (packets hashed to them would be lost) and runs on.
#[test]
fn unbound_receive_queues_are_warned_about() {
    if !pb_testbed::require_privileged("unbound_receive_queues_are_warned_about") {
        return;
    }
    let bed = pb_testbed::star_with_queues("relay-cli", &[2]).unwrap();
    let node = &bed.nodes[0];
    let dir = std::env::temp_dir().join(format!("pb-relay-cli-{}-queues", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let net = network(31);
    // One socket, on queue 0 of the two.
    let config = config(&net, |c| {
        c.io = Some(IoSection::af_xdp(&node.ifname, 47470, "copy"))
    });
    std::fs::write(dir.join("relay.toml"), config).unwrap();
    std::fs::write(dir.join("topology.toml"), text(&topology(&net))).unwrap();
    let out = node
        .ns
        .exec(
            env!("CARGO_BIN_EXE_pb-relay"),
            [
                "run",
                "--config",
                dir.join("relay.toml").to_str().unwrap(),
                "--seconds",
                "0.3",
                "--stats-interval",
                "0",
            ],
        )
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: io.queues binds 1 of the 2 receive queues of {}",
            node.ifname
        )),
        "{stderr}"
    );
}

/// Gossip mode's own mistakes: each one line naming the field or file, exit 1. Also
/// `keygen` (never over an existing file) and `status` without a relay.
#[test]
fn gossip_mode_mistakes_are_one_line_each() {
    let dir = std::env::temp_dir().join(format!("pb-relay-cli-{}-gossip", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_pb-relay");
    let key = dir.join("identity.key");
    let out = Command::new(bin)
        .args(["keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with("identity ") && printed.contains("\nnode "),
        "{printed}"
    );
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(dir.join("bad.key"), "not hex\n").unwrap();
    // A gossip port already taken.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    // Relay 1 (a mix) of a gossip network on loopback, with the identity made above and
    // the gossip socket on `bind`; each case changes one thing.
    let net = Network::builder()
        .relays(3)
        .loopback(Ipv4Addr::new(127, 78, (std::process::id() % 200) as u8, 41))
        .format(pb_sphinx::Format::V2)
        .build()
        .unwrap();
    let gossip = |bind: &str, change: &dyn Fn(&mut ConfigFile)| {
        let mut file = net.relay_config(1);
        let g = file.gossip.as_mut().unwrap();
        g.bind = Some(bind.into());
        g.identity_file = Some("identity.key".into());
        // Packets on the gossip address's IP (a relay advertises no other).
        let ip = bind.rsplit_once(':').map_or(bind, |(ip, _)| ip);
        io(&mut file).bind = Some(format!("{ip}:{}", pb_testnet::PACKET_PORT));
        change(&mut file);
        text(&file)
    };
    let set = |change: fn(&mut pb_relay::config::file::GossipSection)| {
        move |file: &mut ConfigFile| change(file.gossip.as_mut().unwrap())
    };
    // Inside the site's range, which its network file allows in descriptors.
    let site = format!("127.78.{}", std::process::id() % 200);
    let free = &format!("{site}.51:47999");
    // The network file the configurations name, and one of another network.
    let file = net.network_file().unwrap();
    std::fs::write(dir.join("network.txt"), file.render()).unwrap();
    let other = pb_control::network::NetworkFile {
        seed: [0x99; 32],
        ..file
    };
    std::fs::write(dir.join("other-network.txt"), other.render()).unwrap();
    let cases = [
        (
            gossip(free, &set(|g| g.network_file = Some("missing.txt".into()))),
            "gossip.network_file: cannot read",
        ),
        (
            gossip(
                free,
                &set(|g| g.network_file = Some("other-network.txt".into())),
            ),
            "gossip.network_file: names another network seed",
        ),
        (
            gossip("127.0.0.1:0", &|c| node(c).secret = Some("00".into())),
            "node.secret: not used with [gossip]",
        ),
        (
            gossip("0.0.0.0:47471", &|_| {}),
            "gossip.bind: needs an address and a port",
        ),
        (
            gossip(free, &set(|g| g.admin = Some("198.18.0.1:9100".into()))),
            "gossip.admin: must be a loopback address",
        ),
        (
            gossip(free, &set(|g| g.role = Some("boss".into()))),
            "gossip.role",
        ),
        (
            gossip(
                free,
                &set(|g| {
                    g.epoch_seconds = Some(604_800);
                    g.network_file = None;
                }),
            ),
            "mix.link_rate, gossip.epoch_seconds, gossip.max_layer_width: the replay filter would need",
        ),
        (
            gossip(free, &|c| mix(c).epoch_seconds = Some(3600)),
            "mix.epoch_seconds: not used with [gossip]",
        ),
        (
            gossip(free, &set(|g| g.network_seed = Some("12".into()))),
            "gossip.network_seed",
        ),
        (
            gossip(free, &set(|g| g.identity_file = Some("missing.key".into()))),
            "cannot read identity file",
        ),
        (
            gossip(free, &set(|g| g.identity_file = Some("bad.key".into()))),
            "expected 64 hex digits",
        ),
        (
            gossip(&format!("127.0.0.1:{taken_port}"), &|_| {}),
            "gossip.bind: cannot bind",
        ),
        (
            gossip(
                free,
                &set(|g| g.client_bind = Some("127.0.0.1:47480".into())),
            ),
            "gossip.client_bind: only a gateway serves clients",
        ),
        (
            gossip(
                free,
                &set(|g| g.exit_allow = Some(vec!["10.0.0.0/8".into()])),
            ),
            "gossip.exit_allow: only an exit has an exit policy",
        ),
        (
            gossip(
                free,
                &set(|g| {
                    g.role = Some("exit".into());
                    g.exit_allow = Some(vec!["10.0.0.0/33".into()]);
                }),
            ),
            "gossip.exit_allow: \"10.0.0.0/33\" is not a network",
        ),
        (
            gossip(
                free,
                &set(|g| g.exit_refuse_ports = Some(vec!["25".into()])),
            ),
            "gossip.exit_refuse_ports: only an exit has an exit policy",
        ),
        (
            gossip(
                free,
                &set(|g| {
                    g.role = Some("exit".into());
                    g.exit_refuse_ports = Some(vec!["139-135".into()]);
                }),
            ),
            "gossip.exit_refuse_ports: \"139-135\" ends before it starts",
        ),
        (
            gossip(free, &|c| {
                let g = c.gossip.as_mut().unwrap();
                g.role = Some("gateway".into());
                g.client_bind = Some(format!("127.0.0.1:{taken_port}"));
            }),
            "gossip.client_bind: cannot bind",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(dir.join("relay.toml"), &text).unwrap();
        let out = Command::new(bin)
            .args([
                "run",
                "--seconds",
                "0.2",
                "--stats-interval",
                "0",
                "--config",
            ])
            .arg(dir.join("relay.toml"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{expected}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{expected}: {stderr}");
        assert!(stderr.contains(expected), "{stderr:?} lacks {expected:?}");
    }
    // A good gossip config runs (alone: no seeds, no topology) and stops cleanly.
    let free = std::net::UdpSocket::bind(format!("{site}.52:0"))
        .unwrap()
        .local_addr()
        .unwrap();
    let alone = gossip(&free.to_string(), &set(|g| g.seeds = None));
    std::fs::write(dir.join("relay.toml"), alone).unwrap();
    let out = Command::new(bin)
        .args([
            "run",
            "--seconds",
            "0.3",
            "--stats-interval",
            "0",
            "--config",
        ])
        .arg(dir.join("relay.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // keygen never overwrites; status without a relay is one line.
    for args in [
        vec!["keygen", "--out", key.to_str().unwrap()],
        vec!["status", "--admin", "127.0.0.1:1"],
    ] {
        let out = Command::new(bin).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    drop(taken);
    std::fs::remove_dir_all(&dir).unwrap();
}
