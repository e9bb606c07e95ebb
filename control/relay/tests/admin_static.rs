//! Static mode serves the admin endpoint too: `/health`, `/status` and `/metrics` with every
//! dataplane counter of `pb_relay::metrics`, under the same names the exit summary's `stat`
//! lines use; and neither `/metrics` nor stdout says how many packets were real or cover.
//! Loopback only, no privileges. The configuration is pb-testnet's, rendered from the serde
//! schema (`pb_relay::config::file`).
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use pb_relay::{
    config::file::render,
    metrics::{COUNTERS, LINK_COUNTERS},
};
use pb_testnet::Network;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn get(admin: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    assert!(response.starts_with("HTTP/1.0 200"), "{path}: {response}");
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_static_relay_serves_health_status_and_every_counter() {
    let dir = std::env::temp_dir().join(format!("pb-relay-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Three layers of one node each, on loopback addresses of this test run's own; only the
    // first runs (its link's packets go to an address nobody listens on, which is all the
    // counters need).
    let network = Network::builder()
        .relays(3)
        .loopback(Ipv4Addr::new(127, 75, (std::process::id() % 200) as u8, 1))
        .format(pb_sphinx::Format::V2)
        .static_topology(1, Vec::new())
        .link_rate(50)
        .admin(true)
        .build()
        .unwrap();
    let topology = network.topology_file().unwrap();
    std::fs::write(dir.join("topology.toml"), render(&topology).unwrap()).unwrap();
    let admin: SocketAddr = network.admin_addr(0).unwrap();
    let config = network.relay_config(0);
    std::fs::write(dir.join("relay.toml"), render(&config).unwrap()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_pb-relay"))
        .args(["run", "--seconds", "4", "--stats-interval", "1", "--config"])
        .arg(dir.join("relay.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let metrics = loop {
        // The cores refresh their counters every second: wait for a snapshot with slots.
        if let Some(m) = get(admin, "/metrics")
            && metric(&m, "pb_link_sent_total{link=\"0\"}").is_some_and(|v| v > 0)
        {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "no /metrics");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(get(admin, "/health").as_deref(), Some("ok\n"));
    let status = get(admin, "/status").unwrap();
    assert!(status.contains("mode static"), "{status}");
    assert!(
        status.contains(&format!("node {}", hex(&network.node_id(0).0))),
        "{status}"
    );
    assert_eq!(metric(&metrics, "pb_epoch"), Some(1), "{metrics}");
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One list names each counter: the summary and /metrics both carry every entry.
    for c in COUNTERS {
        assert!(
            metric(&metrics, c.metric).is_some(),
            "{} missing from /metrics",
            c.metric
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("stat {} ", c.stat))),
            "stat {} missing from the summary",
            c.stat
        );
    }
    for c in LINK_COUNTERS {
        let name = format!("{}{{link=\"0\"}}", c.metric);
        assert!(metric(&metrics, &name).is_some(), "{name} missing");
    }
    // The replay filter's gauges: its tables are sized (a gateway: one in-link at 50
    // packets a second and its clients, for an hour and a minute, twice over, two slots
    // each), and the current one is in use.
    assert_eq!(
        metric(&metrics, "pb_replay_filter_slots"),
        Some((50 + 500) * 3660 * 2 * 2),
        "{metrics}"
    );
    assert!(metric(&metrics, "pb_replay_filter_packets").is_some());
    assert!(metric(&metrics, "pb_replay_filter_fill_percent").is_some_and(|p| p < 50));
    // No real/cover split anywhere an operator (or whoever reads their dashboards) looks:
    // that series is exactly what cover traffic hides.
    // (`cover_failures` counts idle slots the cover builder could not fill, which then go
    // missed: a health count that stays zero on a healthy relay, not a split.)
    let split = |word: &str| {
        word.contains("real") || (word.contains("cover") && !word.contains("cover_failures"))
    };
    for line in metrics.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        assert!(!split(name), "/metrics splits real and cover: {line}");
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("window ")),
        "no window lines: {stdout}"
    );
    for line in stdout.lines() {
        assert!(
            !line.split_whitespace().any(split),
            "stdout splits real and cover: {line}"
        );
    }
    let link = stdout.lines().find(|l| l.starts_with("link 0 ")).unwrap();
    assert!(
        link.contains(" sent ") && link.contains(" loops_sent "),
        "{link}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
