//! `pb-perf probe` in `make test` (root, and always in CI): a censor's active probes at every
//! listener of a gateway, each beside the real service it imitates (nginx, obfs4proxy, NSD,
//! ngtcp2's HTTP/3 server, an ignoring UDP port). The test fails if a probe tells a listener
//! from its cover (but for those listed in `KNOWN`, each with its reason in
//! docs/threat-model.md: none today), and if a transport goes unprobed.
#![expect(clippy::unwrap_used, reason = "tests")]

mod common;

use std::process::Command;

/// Probes that tell a listener from its cover by design, with the reason in the threat
/// model: (transport, probe). None: a long base32 name below the DNS zone used to open a
/// session for anyone; session ids are now tagged under a key from the descriptor.
const KNOWN: [(&str, &str); 0] = [];

#[test]
fn no_probe_tells_a_listener_from_its_cover() {
    if !pb_testbed::require_privileged("no_probe_tells_a_listener_from_its_cover") {
        return;
    }
    let Some(me) = common::pb_perf_with_binaries() else {
        return;
    };
    let out = Command::new(me)
        .args(["probe", "--json", "--wait", "100"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf probe failed:\n{stderr}");
    eprintln!("{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for transport in ["wss", "obfs4", "dns", "quic", "udp"] {
        let n = rows.iter().filter(|r| r["impl"] == transport).count();
        assert!(n >= 4, "{transport}: only {n} probes");
    }
    let told: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r["bench"] == "probe.distinguishes" && r["value"].as_f64() != Some(0.0))
        .map(|r| {
            (
                r["impl"].as_str().unwrap().to_owned(),
                r["params"]["probe"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let unknown: Vec<&(String, String)> = told
        .iter()
        .filter(|(t, p)| !KNOWN.iter().any(|(kt, kp)| kt == t && kp == p))
        .collect();
    assert!(
        unknown.is_empty(),
        "probes that tell a listener from its cover: {unknown:?}\n{stderr}"
    );
}
