//! `pb-perf io` end to end, briefly: it creates its namespaces, measures both backends in
//! both modes, prints one JSON line per figure, and removes the namespaces. Checks the
//! harness works, not how fast anything is. Needs root; skips without it (fails with
//! `CI=true`).
#![expect(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

#[test]
fn pb_perf_io_reports_every_backend_and_cleans_up() {
    if !pb_testbed::require_privileged("pb_perf_io_reports_every_backend_and_cleans_up") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
        .args(["--json", "io", "--seconds", "0.3", "--warmup", "0.1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf io failed: {stderr}");
    assert!(stderr.contains("[4/4]"), "progress on stderr: {stderr}");

    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut seen = Vec::new();
    for row in &rows {
        let bench = row["bench"].as_str().unwrap();
        let imp = row["impl"].as_str().unwrap();
        let value = row["value"].as_f64().unwrap();
        assert!(value > 0.0, "{bench} {imp} measured nothing: {row}");
        assert!(row["unit"].as_str().unwrap().starts_with("pkt/"), "{row}");
        assert_eq!(row["params"]["packet_len"], 1452, "{row}");
        seen.push(format!("{bench}/{imp}"));
    }
    for bench in ["io.rx", "io.rx_per_cpu", "io.forward", "io.forward_per_cpu"] {
        for imp in ["af_xdp", "udp"] {
            assert!(
                seen.contains(&format!("{bench}/{imp}")),
                "{bench}/{imp} missing from {stdout}"
            );
        }
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
        !namespaces.contains("-perf-"),
        "pb-perf left namespaces behind: {namespaces}"
    );
}

#[test]
fn pb_perf_rejects_bad_arguments_in_one_line() {
    for args in [
        &["io", "--seconds", "-1"][..],
        &["io", "--backend", "dpdk"],
        &["io", "--packet-len", "9000"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: clap's usage error code"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn pb_perf_sphinx_reports_both_implementations() {
    let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
        .args(["--json", "sphinx", "--seconds", "0.05", "--batch", "1,8"])
        .args(["--cores", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pb-perf sphinx failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |bench: &str, imp: &str, batch: Option<u64>| {
        rows.iter().any(|r| {
            r["bench"] == bench
                && r["impl"] == imp
                && r["value"].as_f64().unwrap() > 0.0
                && batch.is_none_or(|b| r["params"]["batch"] == b)
        })
    };
    for batch in [1, 8] {
        assert!(
            find("sphinx.unwrap", "phantomband", Some(batch)),
            "batch {batch} missing: {stdout}"
        );
    }
    assert!(find("sphinx.unwrap", "nym-sphinx", Some(1)), "{stdout}");
    assert!(find("sphinx.create", "phantomband", None), "{stdout}");
    assert!(find("sphinx.create", "nym-sphinx", None), "{stdout}");
    assert!(
        find("sphinx.unwrap_cores", "phantomband", Some(32)),
        "{stdout}"
    );
    assert!(
        find("sphinx.unwrap_cores", "nym-sphinx", Some(1)),
        "{stdout}"
    );

    // More cores than this process may use: one line, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_pb-perf"))
        .args(["sphinx", "--seconds", "0.05", "--cores", "1000"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--cores 1000: this process may run on"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// `pb-perf plot` redraws charts from saved rows and leaves the rows as they are; without
/// `--svg` or with a file that is not rows it says so in one line and exits 1.
#[test]
fn pb_perf_plot_redraws_charts_from_saved_rows() {
    let dir = std::env::temp_dir().join(format!("pb-perf-plot-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rows = concat!(
        r#"{"bench":"sphinx.unwrap","impl":"phantomband","params":{"batch":8},"value":21812.000000000004,"unit":"pkt/s"}"#,
        "\n",
        r#"{"bench":"sphinx.unwrap","impl":"nym-sphinx","params":{"batch":1},"value":6138,"unit":"pkt/s"}"#,
        "\n"
    );
    let saved = dir.join("sphinx.json");
    std::fs::write(&saved, rows).unwrap();
    let charts = dir.join("charts");
    let pb_perf = || Command::new(env!("CARGO_BIN_EXE_pb-perf"));
    let out = pb_perf()
        .arg("--svg")
        .arg(&charts)
        .arg("plot")
        .arg(&saved)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(charts.join("sphinx.unwrap.svg")).unwrap();
    assert_eq!(svg.matches("<rect x=").count(), 2, "{svg}");
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        rows,
        "rows untouched"
    );
    assert!(!charts.join("sphinx.json").exists(), "plot writes no rows");

    let bad = dir.join("bad.json");
    std::fs::write(&bad, "not json\n").unwrap();
    for args in [
        vec!["plot".into(), saved.clone()],
        vec!["--svg".into(), charts.clone(), "plot".into(), bad],
    ] {
        let out = pb_perf().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("pb-perf: error:"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
