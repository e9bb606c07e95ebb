//! `pb-perf attack`, short: every attack against the namespace testnet on AF_XDP (root, and
//! always in CI). Each must leave the victim no more bytes than the attacker sent, the honest
//! fetch byte-identical and every relay a member everywhere; the rows are all there. This is
//! the test that fails if one of the defences of docs/threat-model.md ("Abuse of the relays
//! themselves") goes away: without the probe before membership, `directory_push` amplifies;
//! without the split-address rule, `link_flood` floods the victim; without the members'
//! own budgets, `swim_junk` knocks relays out; without lookup places taken back from the
//! largest holder, `exit_slow_dns` refuses the honest lookup; without connections taken back
//! from quiet sessions, `exit_bloat` locks the honest fetch out.
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::{collections::BTreeMap, process::Command};

const ATTACKS: [&str; 8] = [
    "link_flood",
    "directory_push",
    "swim_junk",
    "hello_flood",
    "gateway_flood",
    "exit_sessions",
    "exit_slow_dns",
    "exit_bloat",
];

#[test]
fn every_attack_is_absorbed_without_amplification_or_harm_to_honest_users() {
    if !pb_testbed::require_privileged("every_attack_is_absorbed") {
        return;
    }
    let Some(me) = common::pb_perf_with_binaries() else {
        return;
    };
    let out = Command::new(me)
        .args(["attack", "--json", "--seconds", "3", "--rate", "2000"])
        .args(["--bytes", "32768"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf attack failed:\n{stderr}");
    let rows: BTreeMap<String, f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["bench"].as_str().unwrap().to_owned(),
                v["value"].as_f64().unwrap(),
            )
        })
        .collect();
    eprintln!("{stderr}");
    for attack in ATTACKS {
        let get = |what: &str| {
            *rows
                .get(&format!("attack.{attack}.{what}"))
                .unwrap_or_else(|| panic!("no attack.{attack}.{what} row:\n{rows:?}"))
        };
        assert!(
            get("attacker_bytes") > 0.0,
            "{attack}: the attacker sent nothing"
        );
        assert!(
            get("amplification") <= 1.0,
            "{attack}: amplification {}",
            get("amplification")
        );
        assert_eq!(
            get("honest_ok"),
            1.0,
            "{attack}: honest users hurt:\n{stderr}"
        );
        assert!(get("max_rss") > 0.0);
    }
    // The defences keep what reaches a victim well below what an attacker spends.
    for attack in [
        "link_flood",
        "directory_push",
        "swim_junk",
        "gateway_flood",
        "exit_sessions",
        "exit_bloat",
    ] {
        let ratio = rows[&format!("attack.{attack}.amplification")];
        assert!(ratio < 0.05, "{attack}: amplification {ratio}");
    }
}
