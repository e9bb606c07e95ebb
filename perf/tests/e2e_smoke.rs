//! `pb-perf e2e` end to end, briefly: it starts its loopback testnet (eight pb-relay
//! processes, a file server, pb-client), fetches once per side, watches the idle client for
//! a second, prints one JSON line per figure and stops everything. Checks the harness works,
//! not how fast anything is. No root needed; pb-relay and pb-client must have been built
//! next to pb-perf (`cargo test --workspace` builds them).
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::{path::Path, process::Command};

#[test]
fn pb_perf_e2e_measures_a_fetch_through_the_mixnet_and_the_idle_client() {
    let me = Path::new(env!("CARGO_BIN_EXE_pb-perf"));
    if !binaries_built(me) {
        return;
    }
    let out = Command::new(me)
        .args([
            "--json",
            "e2e",
            "--bytes",
            "65536",
            "--fetches",
            "1",
            "--idle-seconds",
            "1",
            "--profile",
            "default",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf e2e failed: {stderr}");
    assert!(stderr.contains("fetch 1/1"), "progress on stderr: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |bench: &str, imp: &str| {
        rows.iter()
            .find(|r| r["bench"] == bench && r["impl"] == imp)
            .and_then(|r| r["value"].as_f64())
            .unwrap_or_else(|| panic!("{bench}/{imp} missing from {stdout}"))
    };
    for (bench, imp) in [
        ("e2e.ttfb", "direct"),
        ("e2e.throughput", "direct"),
        ("e2e.ttfb", "pb-client"),
        ("e2e.throughput", "pb-client"),
        ("e2e.idle_rss", "pb-client"),
    ] {
        assert!(find(bench, imp) > 0.0, "{bench}/{imp}: {stdout}");
    }
    assert!(find("e2e.idle_cpu", "pb-client") >= 0.0);
    // Through the mixnet is slower than straight to the server.
    assert!(find("e2e.ttfb", "pb-client") > find("e2e.ttfb", "direct"));
}

#[test]
fn pb_perf_e2e_tun_measures_vpn_mode_beside_socks() {
    if !pb_testbed::require_privileged("pb_perf_e2e_tun_measures_vpn_mode_beside_socks") {
        return;
    }
    let me = Path::new(env!("CARGO_BIN_EXE_pb-perf"));
    if !binaries_built(me) {
        return;
    }
    let out = Command::new(me)
        .args([
            "--json",
            "e2e",
            "--tun",
            "--bytes",
            "65536",
            "--fetches",
            "1",
            "--idle-seconds",
            "1",
            "--profile",
            "default",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf e2e --tun failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for mode in ["socks", "tun"] {
        for bench in ["e2e.ttfb", "e2e.throughput", "e2e.busy_cpu", "e2e.idle_rss"] {
            let value = rows
                .iter()
                .find(|r| r["bench"] == bench && r["params"]["mode"] == mode)
                .and_then(|r| r["value"].as_f64())
                .unwrap_or_else(|| panic!("{bench} ({mode}) missing from {stdout}"));
            assert!(value > 0.0, "{bench} ({mode}): {stdout}");
        }
    }
}

/// Whether pb-relay and pb-client are built next to `me` (CI builds them; elsewhere the test
/// says it skips).
fn binaries_built(me: &Path) -> bool {
    let missing: Vec<String> = ["pb-relay", "pb-client"]
        .iter()
        .map(|b| me.with_file_name(b))
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI builds every binary: {missing:?} missing"
        );
        eprintln!("skipping: {missing:?} not built (cargo build -p pb-relay -p pb-client)");
    }
    missing.is_empty()
}
