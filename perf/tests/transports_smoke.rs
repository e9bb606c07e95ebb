//! `pb-perf transports`, short: one small fetch over each transport (plain UDP, QUIC, WSS,
//! obfs4 at iat-mode 0, DoH through unbound) through the namespace testnet on AF_XDP (root,
//! and always in CI), and the DNS carrier alone at one query rate.
//! Each transport must
//! carry the fetch byte-identical (pb-perf fails otherwise) and yield every row with a
//! positive, finite figure: the test that fails if a transport stops carrying the client
//! link through the network, or if the benchmark stops measuring one of its figures. Speed
//! is not asserted (docs/perf.md holds the figures).
#![expect(clippy::unwrap_used, clippy::panic, reason = "tests")]

mod common;

use std::process::Command;

const TRANSPORTS: [&str; 5] = ["udp", "quic", "wss", "obfs4-iat0", "doh"];

#[test]
fn every_transport_carries_the_fetch_and_yields_every_row() {
    if !pb_testbed::require_privileged("every_transport_carries_the_fetch_and_yields_every_row") {
        return;
    }
    let Some(me) = common::pb_perf_with_binaries() else {
        return;
    };
    let out = Command::new(me)
        .args(["transports", "--json", "--size", "262144", "--fetches", "1"])
        .args(["--settle", "0", "--doh-rates", "400", "--doh-seconds", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf transports failed:\n{stderr}");
    eprintln!("{stderr}");
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = [
        ("transport.ttfb", None, "ms"),
        ("transport.download", None, "KiB/s"),
        ("transport.overhead", None, "bytes/byte"),
        ("transport.cpu_per_mb", Some("client"), "cpu_s/MB"),
        ("transport.cpu_per_mb", Some("gateway"), "cpu_s/MB"),
    ];
    for transport in TRANSPORTS {
        for (bench, side, unit) in expected {
            let found: Vec<&serde_json::Value> = rows
                .iter()
                .filter(|r| {
                    r["bench"] == bench
                        && r["impl"] == transport
                        && side.is_none_or(|s| r["params"]["side"] == s)
                })
                .collect();
            let [row] = found.as_slice() else {
                panic!("{transport}: not exactly one {bench} {side:?} row:\n{rows:#?}");
            };
            let value = row["value"].as_f64().unwrap();
            assert!(
                value.is_finite() && value > 0.0,
                "{transport}: {bench} {side:?} is {value}"
            );
            assert_eq!(row["unit"], unit, "{transport}: {bench}");
            assert_eq!(row["params"]["size"], 262_144, "{transport}: {bench}");
            assert_eq!(row["params"]["fetches"], 1, "{transport}: {bench}");
        }
    }
    for direction in ["up", "down"] {
        let found: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| {
                r["bench"] == "transport.doh_carrier"
                    && r["params"]["direction"] == direction
                    && r["params"]["rate"] == 400
            })
            .collect();
        let [row] = found.as_slice() else {
            panic!("not exactly one doh_carrier {direction} row:\n{rows:#?}");
        };
        let value = row["value"].as_f64().unwrap();
        assert!(
            value.is_finite() && value > 0.0,
            "doh_carrier {direction} is {value}"
        );
        assert_eq!(row["unit"], "KB/s");
    }
    assert_eq!(
        rows.len(),
        TRANSPORTS.len() * expected.len() + 2,
        "{rows:#?}"
    );
}
