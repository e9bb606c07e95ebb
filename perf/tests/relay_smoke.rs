//! `pb-perf relay` end to end, briefly: it builds its packets, measures the unwrap baseline
//! and one relay over each backend, prints one JSON line per figure and removes its
//! namespaces. Checks the harness works, not how fast anything is. Needs root; skips without
//! it (fails with `CI=true`).
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::process::Command;

#[test]
fn pb_perf_relay_reports_both_backends_and_cleans_up() {
    if !pb_testbed::require_privileged("pb_perf_relay_reports_both_backends_and_cleans_up") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
        .args([
            "--json",
            "relay",
            "--seconds",
            "0.5",
            "--packets",
            "12000",
            "--link-rate",
            "2000",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf relay failed: {stderr}");
    assert!(
        stderr.contains("udp: 1 in flight"),
        "progress on stderr: {stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let value = |bench: &str, imp: &str| {
        rows.iter()
            .find(|r| r["bench"] == bench && r["impl"] == imp)
            .and_then(|r| r["value"].as_f64())
            .unwrap_or_else(|| panic!("{bench}/{imp} missing from {stdout}"))
    };
    assert!(value("relay.unwrap_baseline", "pb-sphinx") > 0.0);
    for imp in ["af_xdp", "udp"] {
        assert!(
            value("relay.forward", imp) > 0.0,
            "{imp} forwarded nothing: {stdout}"
        );
        assert!(
            value("relay.latency_p50", imp) > 0.0,
            "{imp}: no latency sample: {stdout}"
        );
        assert_eq!(
            value("relay.drops", imp),
            0.0,
            "{imp} dropped packets: {stdout}"
        );
    }
    let namespaces = String::from_utf8(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(
        !namespaces.contains("relay-bench"),
        "pb-perf left namespaces behind: {namespaces}"
    );
}
