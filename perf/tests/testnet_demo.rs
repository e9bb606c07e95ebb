//! The main job, run the way a user would. As root (and always in CI) that is literally
//! `make demo`: it builds (with `DEMO_PROFILE=dev`: only pb-client again, with the demo's
//! network file built in), starts the network in namespaces on AF_XDP, starts pb-client with
//! no network argument, fetches through it and prints the summary. Then it stays up: curl
//! through its SOCKS5 port fetches the page the summary names, and a second run meanwhile
//! says in one line that one is already up. Ctrl-C (SIGINT) stops it, leaving no process,
//! namespace, socket or file behind. Without root it runs `pb-perf testnet` (what `make
//! demo` runs after `deploy/setup.sh` and the build, both of which need root) on loopback.
//!
//! (One run for all of it: a second testnet only to test the interactive part took 40 s of
//! every CI run. `--exit-after-summary`, `PB_DEMO_EXIT=1`, returns where the interactive
//! run prints how to use the network.)
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

/// Processes whose command line names `needle`: (pid, command line).
fn processes_naming(needle: &str) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push((pid, cmdline));
            }
        }
    }
    found
}

/// The interactive `pb-perf testnet` on `listen` (under `make demo`, or started directly).
fn testnet_process(listen: &str) -> Option<u32> {
    processes_naming(&format!("testnet --listen {listen} "))
        .into_iter()
        .find(|(_, cmdline)| {
            cmdline
                .split(' ')
                .next()
                .is_some_and(|a| a.ends_with("pb-perf"))
                && !cmdline.contains("--write-network-file")
        })
        .map(|(pid, _)| pid)
}

fn signal(pid: u32, name: &str) {
    Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
}

/// Stops the testnet on `listen` when dropped, so that a failing test leaves nothing up
/// (dropping the `make` process would not reach its child).
struct StopTestnet<'a>(&'a str);

impl Drop for StopTestnet<'_> {
    fn drop(&mut self) {
        let start = Instant::now();
        while let Some(pid) = testnet_process(self.0) {
            signal(
                pid,
                if start.elapsed() < Duration::from_secs(30) {
                    "INT"
                } else {
                    "KILL"
                },
            );
            thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn the_main_job_fetches_through_the_mixnet_stays_up_and_tears_everything_down() {
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

    // 1. Up: build, network, fetch, summary; then it says how to use it and stays up.
    let demo = if root {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut make = Command::new("make");
        make.arg("-C")
            .arg(&workspace)
            .args(["--no-print-directory", "demo", "DEMO_PROFILE=dev"])
            .arg(format!("DEMO_ARGS=--listen {listen} --bytes 262144"))
            .env_remove("PB_DEMO_EXIT");
        make
    } else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs this as root"
        );
        eprintln!(
            "not root: running pb-perf testnet on loopback instead of `make demo` (its setup step installs packages)"
        );
        let mut testnet = pb_perf();
        testnet.args(["testnet", "--listen", listen, "--bytes", "262144"]);
        testnet
    };
    let stop = StopTestnet(listen);
    let mut demo = Proc::start(demo).unwrap();
    let start = Instant::now();
    while demo.last("Ctrl-C stops everything").is_none() {
        assert!(
            demo.child.try_wait().unwrap().is_none(),
            "it stopped before it was up:\n{}",
            demo.tail(40)
        );
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not up after 10 minutes:\n{}",
            demo.tail(40)
        );
        thread::sleep(Duration::from_millis(200));
    }
    let output = demo.output();
    assert!(output.contains("[6/6]"), "progress: {output}");
    assert!(
        output.contains("delivered 262144 bytes through pb-client"),
        "{output}"
    );
    assert!(
        output.contains("time to first byte over 20 fetches: p50"),
        "{output}"
    );
    assert_eq!(
        output.matches(" links, ").count(),
        8,
        "a line per relay: {output}"
    );
    if root {
        assert!(
            output.contains("8 relays each in a network namespace, AF_XDP"),
            "{output}"
        );
        // `make demo` builds the demo's network file into pb-client, which then needs no
        // network argument (and checks every view against the stewards).
        assert!(
            output.contains("pb-client runs with its built-in network file"),
            "{output}"
        );
    } else {
        assert!(output.contains("on loopback, UDP backend"), "{output}");
    }

    // 2. While it is up: curl fetches the page the summary names through the proxy.
    let hint = demo.last("  curl --socks5-hostname").unwrap();
    let url = hint
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    let fetched = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "120"])
        .args(["--socks5-hostname", listen, &url, "--output", "-"])
        .output()
        .unwrap();
    assert!(
        fetched.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    assert_eq!(fetched.stdout.len(), 262_144, "the page the summary names");

    // 3. A second run meanwhile refuses, in one line.
    let second = pb_perf()
        .args(["testnet", "--exit-after-summary", "--listen", listen])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(said.contains("already running"), "{said}");
    assert_eq!(said.trim().lines().count(), 1, "one line: {said}");

    // 4. Ctrl-C: everything stops, cleanly.
    assert!(demo.child.try_wait().unwrap().is_none(), "it stayed up");
    signal(testnet_process(listen).unwrap(), "INT");
    let status = demo.wait_output().unwrap();
    assert!(status.success(), "{status}: {}", demo.tail(10));
    drop(stop);
    if root {
        // Every namespace gone, and with them the veths and their XDP programs.
        let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let namespaces = String::from_utf8_lossy(&namespaces.stdout);
        assert!(!namespaces.contains("-pbdemo-"), "{namespaces}");
    }
    // Torn down: no relay or client left, the proxy port free.
    thread::sleep(Duration::from_millis(300));
    assert!(
        processes_naming("pb-testnet-").is_empty(),
        "{:?}",
        processes_naming("pb-testnet-")
    );
    assert!(processes_naming(listen).is_empty());
    assert!(TcpListener::bind(listen).is_ok());
}
