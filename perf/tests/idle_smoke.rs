//! `pb-perf idle` end to end, briefly: both loops and (with `--baseline-relay`, here the
//! same pb-relay twice) both processes report their rows, and under both loops every link
//! fills its slots. Checks the harness works, not how fast anything is. No root.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::process::Command;

#[test]
fn pb_perf_idle_reports_both_loops_and_both_processes() {
    let relay = std::path::Path::new(env!("CARGO_BIN_EXE_pb-perf")).with_file_name("pb-relay");
    if !relay.exists() {
        eprintln!("skipping: pb-relay not built next to pb-perf (cargo build -p pb-relay)");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
        .args(["--json", "idle", "--seconds", "1", "--rounds", "1"])
        .arg("--baseline-relay")
        .arg(&relay)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf idle failed: {stderr}");
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
    for imp in ["sleep-until-deadline", "poll-1ms"] {
        assert!(value("relay.idle_cpu", imp) > 0.0, "{stdout}");
        assert!(value("relay.idle_turns", imp) > 0.0, "{stdout}");
        // 100 slots a second per link, cover in every one (a generous margin: a debug
        // build on a loaded machine).
        let rate = value("relay.idle_link_rate", imp);
        assert!(
            (50.0..=150.0).contains(&rate),
            "{imp}: {rate} pkt/s: {stdout}"
        );
    }
    for imp in ["pb-relay", "pb-relay-baseline"] {
        assert!(value("relay.idle_process_cpu", imp) >= 0.0, "{stdout}");
        assert!(value("relay.idle_core_thread_cpu", imp) >= 0.0, "{stdout}");
    }
}
