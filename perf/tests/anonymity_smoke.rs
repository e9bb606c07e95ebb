//! `pb-perf anonymity` against the known-bad configuration (`--insecure-no-cover`: relays
//! and clients without cover or padding) on the namespace testnet (root, and always in
//! CI). There every adversary must win: the global observer tells busy from idle
//! (corrected p near 0 for the links' rate) and the flow matcher links exit connections to
//! their clients (a high true-positive rate). The test that fails if the harness silently
//! stops seeing (a capture that records nothing, a matcher that always ties, a statistic
//! that always says p = 1), so that its figures for the real configuration mean something.
//! The real configuration's figures are benchmarks (docs/perf.md), not asserted here.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::process::Command;

/// The rows every run yields (the `gpa.*` ones for both comparisons).
const GPA: [&str; 5] = [
    "gpa.rate",
    "gpa.size",
    "gpa.gap_ks",
    "gpa.gap_variance",
    "gpa.gap_autocorrelation",
];

fn value(rows: &[serde_json::Value], bench: &str, compare: Option<&str>) -> f64 {
    let found: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["bench"] == bench && compare.is_none_or(|c| r["params"]["compare"] == c))
        .collect();
    let [row] = found.as_slice() else {
        panic!("not exactly one {bench} {compare:?} row:\n{rows:#?}");
    };
    let value = row["value"].as_f64().unwrap();
    assert!(value.is_finite(), "{bench} {compare:?} is {value}");
    value
}

#[test]
fn without_cover_every_adversary_wins() {
    if !pb_testbed::require_privileged("without_cover_every_adversary_wins") {
        return;
    }
    let Some(me) = common::pb_perf_with_binaries() else {
        return;
    };
    let out = Command::new(me)
        .args(["anonymity", "--json", "--insecure-no-cover"])
        .args(["--seconds", "15", "--clients", "10", "--fetch-kib", "16"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf anonymity failed:\n{stderr}");
    eprintln!("{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    for compare in ["idle_vs_busy", "idle_vs_cpu_hog"] {
        for bench in GPA {
            let p = value(&rows, bench, Some(compare));
            assert!((0.0..=1.0).contains(&p), "{bench} {compare}: p = {p}");
        }
    }
    assert!(
        value(&rows, "busy.fetches", None) >= 3.0,
        "too few fetches to correlate"
    );
    // The observer sees the busy phase: in the links' rate, and overwhelmingly in their gaps.
    let p = value(&rows, "gpa.rate", Some("idle_vs_busy"));
    assert!(
        p < 0.01,
        "without cover the rate must give busy away: p = {p}"
    );
    let p = value(&rows, "gpa.gap_ks", Some("idle_vs_busy")).min(value(
        &rows,
        "gpa.gap_variance",
        Some("idle_vs_busy"),
    ));
    assert!(
        p < 1e-4,
        "without cover the gaps must give busy away: p = {p}"
    );
    // The matcher links exit connections to their clients.
    let tpr = value(&rows, "correlation.tpr_at_fpr_0.10", None);
    assert!(
        tpr >= 0.5,
        "without cover the matcher must win: TPR at 10% FPR = {tpr}"
    );
    let tpr = value(&rows, "correlation.tpr_at_fpr_0.01", None);
    assert!((0.0..=1.0).contains(&tpr));
    let entropy = value(&rows, "entropy.median_bits", None);
    assert!((0.0..=10f64.log2() + 1e-9).contains(&entropy), "{entropy}");
}
