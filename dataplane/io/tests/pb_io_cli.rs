//! Bad input to `pb-io check`: each mistake gives one line naming what is wrong, a non-zero
//! exit, no panic, and nothing left attached to the interface.
//!
//! The config tests need no privileges; those that touch interfaces need root and skip
//! without it (fail with `CI=true`).
#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::{path::Path, process::Output};

use pb_io::{
    afxdp::{AfXdpConfig, AfXdpIo, BindMode},
    xdp::{AttachMode, XdpProgram},
};
use pb_testbed::{Netns, TwoNode};

const BIN: &str = env!("CARGO_BIN_EXE_pb-io");

/// Writes `text` to a fresh config file and returns its path.
fn config_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pb-io-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run_check(ns: Option<&Netns>, config: &Path) -> Output {
    let args = [
        "check",
        "--config",
        config.to_str().unwrap(),
        "--seconds",
        "0.2",
    ];
    match ns {
        Some(ns) => ns.exec(BIN, args).output().unwrap(),
        None => std::process::Command::new(BIN).args(args).output().unwrap(),
    }
}

/// Asserts a failed run with exactly one stderr line containing every one of `needles`.
fn assert_one_line_error(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert_ne!(
        out.status.code(),
        Some(101),
        "exit code 101 means a panic: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got: {stderr:?}");
    for needle in needles {
        assert!(
            lines[0].contains(needle),
            "{needle:?} missing from {:?}",
            lines[0]
        );
    }
    lines[0].to_owned()
}

fn xdp_attached(bed: &TwoNode) -> bool {
    bed.a
        .run(&["link", "show", "dev", &bed.link.a_if])
        .unwrap()
        .contains("xdp")
}

#[test]
fn malformed_configs_are_one_line_errors() {
    let cases = [
        (
            "missing.toml",
            None,
            vec!["cannot read config", "missing.toml"],
        ),
        (
            "bad-port.toml",
            Some("interface = \"eth0\"\nport = 0\n"),
            vec!["bad-port.toml", "field `port`"],
        ),
        (
            "bad-queue.toml",
            Some("interface = \"eth0\"\nqueues = [64]\n"),
            vec!["field `queues`", "64"],
        ),
        (
            "bad-len.toml",
            Some("interface = \"eth0\"\npacket_len = 9000\n"),
            vec!["field `packet_len`"],
        ),
        (
            "garbage.toml",
            Some("interface = [\n"),
            vec!["garbage.toml", "line"],
        ),
        (
            "unknown.toml",
            Some("interface = \"eth0\"\nspeed = 10\n"),
            vec!["unknown field `speed`"],
        ),
    ];
    for (name, text, needles) in cases {
        let path = match text {
            Some(text) => config_file(name, text),
            None => std::env::temp_dir().join("pb-io-cli-none").join(name),
        };
        let out = run_check(None, &path);
        assert_one_line_error(&out, &needles);
    }
}

#[test]
fn missing_interface_is_named() {
    if !pb_testbed::require_privileged("missing_interface_is_named") {
        return;
    }
    let ns = Netns::create("cli").unwrap();
    let path = config_file("nosuch.toml", "interface = \"pbnosuch0\"\n");
    let line = assert_one_line_error(
        &run_check(Some(&ns), &path),
        &["pbnosuch0", "does not exist"],
    );
    assert!(line.starts_with("pb-io: error:"), "{line}");
}

#[test]
fn kernel_refusal_is_one_line() {
    if !pb_testbed::require_privileged("kernel_refusal_is_one_line") {
        return;
    }
    // Loopback has no native (driver) XDP: the kernel refuses the attachment.
    let ns = Netns::create("clil").unwrap();
    let path = config_file("lo.toml", "interface = \"lo\"\nxdp_mode = \"native\"\n");
    assert_one_line_error(
        &run_check(Some(&ns), &path),
        &["refused", "\"lo\"", "no native XDP"],
    );
    assert!(
        !ns.run(&["link", "show", "dev", "lo"])
            .unwrap()
            .contains("xdp")
    );
}

#[test]
fn busy_queue_and_busy_interface_are_named_and_nothing_stays_attached() {
    if !pb_testbed::require_privileged("busy_queue_and_busy_interface_are_named") {
        return;
    }
    let bed = pb_testbed::two_node("clib").unwrap();
    let a_if = bed.link.a_if.clone();
    let path = config_file(
        &format!("{a_if}.toml"),
        &format!("interface = \"{a_if}\"\nqueues = [0]\n"),
    );

    // The healthy case first, so the failures below are about what they claim.
    let ok = run_check(Some(&bed.a), &path);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("queue 0: received"));
    assert!(!xdp_attached(&bed), "a clean exit detaches");

    // Another AF_XDP socket holds queue 0.
    let holder = bed
        .a
        .in_netns(|| {
            let mut config = AfXdpConfig::new(a_if.clone(), 0);
            config.bind = BindMode::Copy;
            AfXdpIo::open(&config)
        })
        .unwrap()
        .expect("the holder binds queue 0");
    let out = run_check(Some(&bed.a), &path);
    assert_one_line_error(&out, &["queue 0", &a_if, "busy"]);
    assert!(
        !xdp_attached(&bed),
        "the failed run left its program attached"
    );
    drop(holder);

    // A queue veth does not have.
    let path5 = config_file(
        &format!("{a_if}-q5.toml"),
        &format!("interface = \"{a_if}\"\nqueues = [5]\n"),
    );
    assert_one_line_error(&run_check(Some(&bed.a), &path5), &["queue 5", &a_if]);
    assert!(!xdp_attached(&bed));

    // Another XDP program is attached to the interface.
    let other = bed
        .a
        .in_netns(|| XdpProgram::attach_new(&a_if, AttachMode::Native, 1, 64))
        .unwrap()
        .expect("the other program attaches");
    assert_one_line_error(
        &run_check(Some(&bed.a), &path),
        &[&a_if, "another XDP program"],
    );
    assert!(xdp_attached(&bed), "the other program is untouched");
    drop(other);
    assert!(!xdp_attached(&bed));
}
