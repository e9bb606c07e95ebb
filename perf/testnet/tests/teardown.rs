//! A testnet leaves nothing behind: when a panic unwinds through it, its relays are gone,
//! then its namespaces, then its scratch directory; and `pb-testnet up`, `status`, `exec`
//! and `down` (what `deploy/testbed.sh` runs) bring a network up in namespaces and take all
//! of it away again. pb-relay and pb-client must be built next to this test's binaries
//! (`cargo test --workspace` builds them); without them the tests say so and pass, except
//! in CI.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{
    net::Ipv4Addr,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use pb_testnet::{Network, Node, Testnet};

/// The directory holding pb-testnet, if pb-relay and pb-client are there too.
fn binaries() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_BIN_EXE_pb-testnet"))
        .parent()?
        .to_owned();
    let missing: Vec<&str> = ["pb-relay", "pb-client"]
        .into_iter()
        .filter(|b| !dir.join(b).exists())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI builds every binary: {missing:?} missing"
    );
    eprintln!("skipping: {missing:?} not built (cargo build -p pb-relay -p pb-client)");
    None
}

/// Whether process `pid` exists (a zombie counts as gone).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn namespaces() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `network`, waits for agreement, asks relay 0's admin endpoint for its health,
/// then panics; checks that the unwinding took everything down.
fn panic_through(network: Network) {
    let mut seen = None;
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let mut net = Testnet::start(network).unwrap();
        let view = net.wait_for_agreement(Duration::from_secs(60)).unwrap();
        assert_eq!(view.nodes, net.network().relays());
        assert_eq!(net.admin_get(0, "/health").unwrap().trim(), "ok");
        let pids: Vec<u32> = net.relays().map(|r| r.child.id()).collect();
        assert!(pids.iter().all(|p| alive(*p)));
        let names: Vec<String> = (0..net.network().relays())
            .filter_map(|i| net.netns(Node::Relay(i)).map(|ns| ns.name().to_owned()))
            .collect();
        seen = Some((pids, names, net.dir().to_owned()));
        panic!("on purpose, with the testnet up");
    }));
    assert!(unwound.is_err());
    let (pids, names, dir) = seen.unwrap();
    thread::sleep(Duration::from_millis(200));
    assert!(pids.iter().all(|p| !alive(*p)), "a relay survived");
    let listed = namespaces();
    for name in &names {
        assert!(!listed.contains(name.as_str()), "{name} survived: {listed}");
    }
    assert!(!dir.exists(), "{} survived", dir.display());
}

#[test]
fn a_loopback_testnet_leaves_nothing_behind_when_a_panic_unwinds() {
    let Some(bin) = binaries() else { return };
    let network = Network::builder()
        .relays(5)
        .loopback(Ipv4Addr::new(127, 74, (std::process::id() % 200) as u8, 1))
        .admin(true)
        .stats_interval(0.0)
        .relay_binary(bin.join("pb-relay"))
        .build()
        .unwrap();
    panic_through(network);
}

#[test]
fn a_netns_testnet_leaves_nothing_behind_when_a_panic_unwinds() {
    if !pb_testbed::require_privileged("a_netns_testnet_leaves_nothing_behind_when_a_panic_unwinds")
    {
        return;
    }
    let Some(bin) = binaries() else { return };
    let network = Network::builder()
        .relays(5)
        .netns("teardown")
        .backend(pb_testnet::Backend::AfXdp)
        .admin(true)
        .stats_interval(0.0)
        .relay_binary(bin.join("pb-relay"))
        .build()
        .unwrap();
    panic_through(network);
}

#[test]
fn the_testbed_binary_goes_up_and_down() {
    if !pb_testbed::require_privileged("the_testbed_binary_goes_up_and_down") {
        return;
    }
    let Some(bin) = binaries() else { return };
    let state = std::env::temp_dir().join(format!("pb-testnet-state-{}", std::process::id()));
    let testnet = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_pb-testnet"))
            .arg("--state")
            .arg(&state)
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let bin = bin.to_str().unwrap();
    let (ok, said) = testnet(&["up", "--bin", bin]);
    if !ok {
        let _ = testnet(&["down"]);
        panic!("up failed: {said}");
    }
    assert!(said.contains("testbed: up: topology "), "{said}");
    let pid = std::fs::read_to_string(state.join("pid")).unwrap();
    let prefix = format!("pbt-{}-pbtb-", pid.trim());
    assert!(namespaces().contains(&prefix), "{}", namespaces());
    // A second one is refused while the first is up.
    let (ok, said) = testnet(&["up", "--bin", bin]);
    assert!(!ok && said.contains("already up"), "{said}");
    let (ok, status) = testnet(&["status"]);
    assert!(ok, "{status}");
    assert_eq!(status.matches(" nodes 8 ").count(), 8, "{status}");
    assert!(status.contains("pb-client: ready"), "{status}");
    // The client's namespace has pb-client's proxy.
    let (ok, said) = testnet(&["exec", "bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/1080"]);
    assert!(ok, "{said}");
    let (ok, said) = testnet(&["down"]);
    assert!(ok && said.contains("testbed: down"), "{said}");
    assert!(!namespaces().contains(&prefix), "{}", namespaces());
    assert!(!state.exists());
    assert!(!alive(pid.trim().parse().unwrap()));
    let (ok, said) = testnet(&["status"]);
    assert!(ok && said.contains("no testbed is up"), "{said}");
}
