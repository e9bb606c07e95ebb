//! The main job, `pb-perf testnet` (what `make demo` runs after building), run the way a
//! script would: with `--exit-after-summary` it starts the loopback network and pb-client,
//! fetches through it, prints the summary and stops, leaving no process, socket or file
//! behind. Run interactively it stays up until SIGTERM; a second run meanwhile says that
//! one is already up. No root needed.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use pb_testbed::Proc;

fn pb_perf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pb-perf"))
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn the_main_job_fetches_through_the_mixnet_and_tears_everything_down() {
    let me = Path::new(env!("CARGO_BIN_EXE_pb-perf"));
    let missing: Vec<_> = ["pb-relay", "pb-client"]
        .iter()
        .filter(|b| !me.with_file_name(b).exists())
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI builds every binary: {missing:?} missing"
        );
        eprintln!("skipping: {missing:?} not built next to pb-perf");
        return;
    }
    let listen = "127.0.0.1:21180";

    // 1. Non-interactive: fetch, summary, stop.
    let out = pb_perf()
        .args(["testnet", "--exit-after-summary", "--listen", listen])
        .args(["--bytes", "262144"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("[6/6]"), "progress: {stderr}");
    assert!(
        stdout.contains("delivered 262144 bytes through pb-client"),
        "{stdout}"
    );
    assert!(
        stdout.contains("time to first byte over 20 fetches: p50"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(" links, ").count(),
        8,
        "a line per relay: {stdout}"
    );
    // Torn down: no relay or client left, the proxy port free, the scratch directory gone.
    thread::sleep(Duration::from_millis(300));
    assert!(
        processes_naming("pb-testnet-").is_empty(),
        "{:?}",
        processes_naming("pb-testnet-")
    );
    assert!(processes_naming(listen).is_empty());
    assert!(TcpListener::bind(listen).is_ok());

    // 2. Interactive: up until SIGTERM; a second run meanwhile refuses.
    let mut first = pb_perf();
    first.args(["testnet", "--listen", listen, "--bytes", "65536"]);
    let mut first = Proc::start(first).unwrap();
    let start = Instant::now();
    while first.last("Ctrl-C stops everything").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{}",
            first.tail(20)
        );
        thread::sleep(Duration::from_millis(200));
    }
    let second = pb_perf()
        .args(["testnet", "--exit-after-summary", "--listen", listen])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(said.contains("already running"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");
    let pid = first.child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = first.child.wait().unwrap();
    assert!(status.success(), "{status}: {}", first.tail(10));
    thread::sleep(Duration::from_millis(300));
    assert!(processes_naming("pb-testnet-").is_empty());
    assert!(TcpListener::bind(listen).is_ok());
}
