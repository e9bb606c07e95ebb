//! Bad configuration gets one line on stderr naming the field and the reason, and exit 1;
//! never a panic. Needs no privileges (the relay stops before touching the network).
#![expect(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

const SECRET: &str = "2020202020202020202020202020202020202020202020202020202020202020";

fn public_key() -> String {
    let key = pb_sphinx::EpochKey::from_secret(pb_sphinx::Epoch(1), [0x20; 32]).public_key();
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn topology() -> String {
    let mut t = String::new();
    for layer in 0..3 {
        t += &format!(
            "[[node]]\nid = \"{:032x}\"\nrole = \"mix\"\nlayer = {layer}\naddr = \"127.0.0.1:{}\"\npublic_key = \"{}\"\n\n",
            layer + 1,
            47470 + layer,
            public_key()
        );
    }
    t
}

fn config(node: &str, io: &str, mix: &str) -> String {
    format!("topology = \"topology.toml\"\n\n[node]\n{node}\n\n[io]\n{io}\n\n[mix]\n{mix}\n")
}

const NODE: &str =
    "id = \"00000000000000000000000000000001\"\nsecret = \"SECRET\"\nepoch = 1\nformat = \"v2\"";
const IO: &str = "backend = \"udp\"\nbind = \"127.0.0.1:0\"";

/// Runs `pb-relay run` on `config_text` (with the good topology) and returns (exit code,
/// stderr).
fn run(name: &str, config_text: &str, topology_text: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("pb-relay-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("relay.toml"),
        config_text.replace("SECRET", SECRET),
    )
    .unwrap();
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

#[test]
fn a_good_config_runs_and_reports() {
    let (code, stderr) = run("good", &config(NODE, IO, ""), &topology());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.starts_with("pb-relay: node 00000000"), "{stderr}");
}

#[test]
fn several_cores_share_the_address() {
    let io = format!("{IO}\ncores = 2");
    let (code, stderr) = run("cores", &config(NODE, &io, ""), &topology());
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(", 2 cores"), "{stderr}");
}

#[test]
fn bad_values_name_their_field_in_one_line() {
    let cases: Vec<(&str, String, String, &str)> = vec![
        (
            "format",
            config(&NODE.replace("v2", "v9"), IO, ""),
            topology(),
            "node.format",
        ),
        (
            "id",
            config(
                &NODE.replace("00000000000000000000000000000001", "xyz"),
                IO,
                "",
            ),
            topology(),
            "node.id",
        ),
        (
            "secret",
            config(&NODE.replace("SECRET", "00"), IO, ""),
            topology(),
            "node.secret",
        ),
        (
            "backend",
            config(NODE, "backend = \"dpdk\"", ""),
            topology(),
            "io.backend",
        ),
        (
            "bind",
            config(NODE, "backend = \"udp\"\nbind = \"nowhere\"", ""),
            topology(),
            "io.bind",
        ),
        (
            "rate",
            config(NODE, IO, "link_rate = 0"),
            topology(),
            "mix.link_rate",
        ),
        (
            "batch",
            config(NODE, IO, "batch = 1000"),
            topology(),
            "mix.batch",
        ),
        (
            "unknown",
            config(NODE, IO, "speed = 3"),
            topology(),
            "unknown field",
        ),
        (
            "not-in-topology",
            config(&NODE.replace("01\"", "09\""), IO, ""),
            topology(),
            "node.id: not in the topology",
        ),
        (
            "wrong-secret",
            config(&NODE.replace("SECRET", &"21".repeat(32)), IO, ""),
            topology(),
            "node.secret: does not match",
        ),
        (
            "layers",
            config(NODE, IO, ""),
            topology().replace("layer = 2", "layer = 7"),
            "topology.node",
        ),
        (
            "topology-addr",
            config(NODE, IO, ""),
            topology().replace("127.0.0.1:47471", "x"),
            "topology.node[1].addr",
        ),
        (
            "cores",
            config(NODE, &format!("{IO}\ncores = 0"), ""),
            topology(),
            "io.cores",
        ),
        (
            "cores-text",
            config(NODE, &format!("{IO}\ncores = \"two\""), ""),
            topology(),
            "io.cores",
        ),
        (
            "cpus-text",
            config(NODE, &format!("{IO}\ncpus = [\"a\"]"), ""),
            topology(),
            "io.cpus",
        ),
        (
            "cpus-count",
            config(NODE, &format!("{IO}\ncores = 2\ncpus = [0]"), ""),
            topology(),
            "io.cpus: 1 CPUs listed for 2 cores",
        ),
        (
            "cpus-range",
            config(NODE, &format!("{IO}\ncpus = [5000]"), ""),
            topology(),
            "io.cpus",
        ),
        (
            "cpus-offline",
            config(NODE, &format!("{IO}\ncpus = [1000]"), ""),
            topology(),
            "io.cpus: CPU 1000",
        ),
        (
            "xdp-lo",
            config(
                NODE,
                "backend = \"af_xdp\"\ninterface = \"no-such-if0\"\nqueues = [0]",
                "",
            ),
            topology(),
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
    let io = format!(
        "backend = \"af_xdp\"\ninterface = \"{}\"\nqueues = [0]\nbind = \"copy\"",
        node.ifname
    );
    std::fs::write(
        dir.join("relay.toml"),
        config(NODE, &io, "").replace("SECRET", SECRET),
    )
    .unwrap();
    std::fs::write(dir.join("topology.toml"), topology()).unwrap();
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
    let seed = "42".repeat(32);
    let gossip = |extra: &str, file: &str, bind: &str| {
        format!(
            "[node]\nformat = \"v2\"\n{extra}\n[io]\n{IO}\n\n[gossip]\nbind = \"{bind}\"\nnetwork_seed = \"{seed}\"\nidentity_file = \"{file}\"\nrole = \"mix\"\nadvertise = \"127.0.0.1:47470\"\n"
        )
    };
    let cases = [
        (
            gossip("secret = \"00\"\n", "identity.key", "127.0.0.1:0"),
            "node.secret: not used with [gossip]",
        ),
        (
            gossip("", "identity.key", "0.0.0.0:47471"),
            "gossip.bind: needs an address and a port",
        ),
        (
            gossip("", "identity.key", "127.0.0.1:47999")
                .replace("[gossip]\n", "[gossip]\nadmin = \"198.18.0.1:9100\"\n"),
            "gossip.admin: must be a loopback address",
        ),
        (
            gossip("", "identity.key", "127.0.0.1:47999")
                .replace("role = \"mix\"", "role = \"boss\""),
            "gossip.role",
        ),
        (
            gossip("", "identity.key", "127.0.0.1:47999").replace(&seed, "12"),
            "gossip.network_seed",
        ),
        (
            gossip("", "missing.key", "127.0.0.1:47999"),
            "cannot read identity file",
        ),
        (
            gossip("", "bad.key", "127.0.0.1:47999"),
            "expected 64 hex digits",
        ),
        (
            gossip("", "identity.key", &format!("127.0.0.1:{taken_port}")),
            "gossip.bind: cannot bind",
        ),
        (
            gossip("", "identity.key", "127.0.0.1:47999").replace(
                "[gossip]\n",
                "[gossip]\nclient_bind = \"127.0.0.1:47480\"\n",
            ),
            "gossip.client_bind: only a gateway serves clients",
        ),
        (
            gossip("", "identity.key", "127.0.0.1:47999")
                .replace("[gossip]\n", "[gossip]\nexit_allow = [\"10.0.0.0/8\"]\n"),
            "gossip.exit_allow: only an exit has an exit policy",
        ),
        (
            gossip("", "identity.key", "127.0.0.1:47999")
                .replace("role = \"mix\"", "role = \"exit\"")
                .replace("[gossip]\n", "[gossip]\nexit_allow = [\"10.0.0.0/33\"]\n"),
            "gossip.exit_allow: \"10.0.0.0/33\" is not a network",
        ),
        (
            gossip("", "identity.key", "127.0.0.1:47999")
                .replace("role = \"mix\"", "role = \"gateway\"")
                .replace(
                    "[gossip]\n",
                    &format!("[gossip]\nclient_bind = \"127.0.0.1:{taken_port}\"\n"),
                ),
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
    let free = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    std::fs::write(
        dir.join("relay.toml"),
        gossip("", "identity.key", &free.to_string()),
    )
    .unwrap();
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
