//! The main job, run the way a script would. As root (and always in CI) that is literally
//! `make demo PB_DEMO_EXIT=1`: it builds (with `DEMO_PROFILE=dev`: only pb-client again, with
//! the demo's network file built in), starts the network in namespaces on AF_XDP, starts
//! pb-client with no network argument, fetches through it, prints the summary and stops,
//! leaving no process, namespace, socket or file behind. Without root it runs
//! `pb-perf testnet --exit-after-summary` (what `make demo` runs after `deploy/setup.sh` and
//! the build, both of which need root) on loopback.
//!
//! Then, on loopback: run interactively it stays up until SIGTERM, and a second run
//! meanwhile says in one line that one is already up.
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
    let root = pb_testbed::privileged().is_ok();

    // 1. Non-interactive: fetch, summary, stop.
    let out = if root {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        Command::new("make")
            .arg("-C")
            .arg(&workspace)
            .args(["--no-print-directory", "demo", "DEMO_PROFILE=dev"])
            .arg(format!("DEMO_ARGS=--listen {listen} --bytes 262144"))
            .env("PB_DEMO_EXIT", "1")
            .output()
            .unwrap()
    } else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs this as root"
        );
        eprintln!(
            "not root: running pb-perf testnet on loopback instead of `make demo` (its setup step installs packages)"
        );
        pb_perf()
            .args(["testnet", "--exit-after-summary", "--listen", listen])
            .args(["--bytes", "262144"])
            .output()
            .unwrap()
    };
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
    if root {
        assert!(
            stdout.contains("8 relays each in a network namespace, AF_XDP"),
            "{stdout}"
        );
        // `make demo` builds the demo's network file into pb-client, which then needs no
        // network argument (and checks every view against the stewards).
        assert!(
            stderr.contains("pb-client runs with its built-in network file"),
            "{stderr}"
        );
        // Every namespace gone, and with them the veths and their XDP programs.
        let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let namespaces = String::from_utf8_lossy(&namespaces.stdout);
        assert!(!namespaces.contains("-pbdemo-"), "{namespaces}");
    } else {
        assert!(stdout.contains("on loopback, UDP backend"), "{stdout}");
    }
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
    first
        .args(["testnet", "--listen", listen, "--bytes", "65536"])
        .args(["--backend", "udp"]);
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
