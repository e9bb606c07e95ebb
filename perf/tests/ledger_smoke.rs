//! `pb-perf ledger` end to end, small: it publishes a synthetic ledger, verifies all of it
//! and reports its growth and times. Checks the harness works, not how fast anything is.
//! No root.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::process::Command;

#[test]
fn pb_perf_ledger_publishes_verifies_and_reports() {
    let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
        .args([
            "--json", "ledger", "--relays", "20", "--epochs", "3", "--links", "4",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf ledger failed: {stderr}");
    assert!(
        stderr.contains("[4/4] verifying every file, record and reputation"),
        "{stderr}"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let value = |bench: &str, imp: &str, unit: &str| {
        rows.iter()
            .find(|r| r["bench"] == bench && r["impl"] == imp && r["unit"] == unit)
            .and_then(|r| r["value"].as_f64())
            .unwrap_or_else(|| panic!("{bench}/{imp} in {unit} missing from {stdout}"))
    };
    // A record of four links is some 600 bytes; the tiles add to it (in a log this small,
    // mostly partial tiles, which stay until their full tile comes).
    let records = value("ledger.growth", "records", "B/relay/epoch");
    let files = value("ledger.growth", "all_files", "B/relay/epoch");
    assert!((400.0..1000.0).contains(&records), "{stdout}");
    assert!(files > records, "{stdout}");
    assert!(
        value("ledger.verify", "phantomband", "records/s") > 0.0,
        "{stdout}"
    );
    // Bad settings: a clear error.
    let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
        .args(["ledger", "--relays", "3", "--links", "5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--links: 1 to 2"));
}
