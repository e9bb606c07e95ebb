//! `deploy/install.sh` against a temporary prefix, as an operator would run it (root): it
//! creates a dedicated user, installs pb-relay with file capabilities instead of root, an
//! identity key only that user can read, a starter configuration and a systemd unit that
//! passes `systemd-analyze verify`. The installed relay, started as that user (not root)
//! with the installed configuration, answers on its admin endpoint. Needs root; removes the
//! user, the prefix and its namespace afterwards, also when it fails.
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    net::TcpStream,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use pb_testbed::{Netns, Proc};

/// The user and prefix, removed however the test ends.
struct Installed {
    user: String,
    prefix: PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.user).status();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_install_script_sets_up_a_relay_that_runs_without_root() {
    if !pb_testbed::require_privileged("the_install_script_sets_up_a_relay_that_runs_without_root")
    {
        return;
    }
    let installed = Installed {
        user: format!("pbtest{}", std::process::id() % 100_000),
        prefix: std::env::temp_dir().join(format!("pb-install-{}", std::process::id())),
    };
    let run = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(repo().join("deploy/install.sh"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let args = [
        "--prefix",
        installed.prefix.to_str().unwrap(),
        "--binary",
        env!("CARGO_BIN_EXE_pb-relay"),
        "--user",
        &installed.user,
    ];
    run(&args);
    // A second run keeps the key and configuration (idempotent).
    let etc = installed.prefix.join("etc/phantomband");
    let key_before = std::fs::read(etc.join("identity.key")).unwrap();
    run(&args);
    assert_eq!(std::fs::read(etc.join("identity.key")).unwrap(), key_before);

    // The binary carries capabilities; the key is the relay user's alone.
    let bin = installed.prefix.join("usr/local/bin/pb-relay");
    let caps = Command::new("getcap").arg(&bin).output().unwrap();
    let caps = String::from_utf8_lossy(&caps.stdout).to_string();
    for cap in ["cap_net_admin", "cap_bpf", "cap_net_raw"] {
        assert!(caps.contains(cap), "{cap} missing: {caps}");
    }
    let key = std::fs::metadata(etc.join("identity.key")).unwrap();
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    let uid: u32 = String::from_utf8(
        Command::new("id")
            .args(["-u", &installed.user])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    assert_ne!(uid, 0);
    assert_eq!(key.uid(), uid);

    // The unit verifies.
    let unit = installed.prefix.join("etc/systemd/system/pb-relay.service");
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "systemd-analyze verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains(&format!("User={}", installed.user)));
    assert!(text.contains(&format!("ExecStart={} run", bin.display())));

    // The installed relay, as the relay user, in a namespace of its own.
    let ns = Netns::create("install").unwrap();
    let config = etc.join("relay.toml");
    let relay = Proc::start(ns.exec(
        "setpriv",
        [
            "--reuid",
            installed.user.as_str(),
            "--regid",
            installed.user.as_str(),
            "--init-groups",
            "--",
            bin.to_str().unwrap(),
            "run",
            "--config",
            config.to_str().unwrap(),
            "--stats-interval",
            "0",
        ],
    ))
    .unwrap();
    let start = Instant::now();
    let health = loop {
        if let Ok(Ok(stream)) = ns.in_netns(|| TcpStream::connect("127.0.0.1:9100")) {
            break pb_testnet::http_get(stream, "/health").unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no admin endpoint: {}",
            relay.tail(20)
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health.trim(), "ok");
    let status = std::fs::read_to_string(format!("/proc/{}/status", relay.child.id())).unwrap();
    let running_uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        running_uid,
        uid.to_string(),
        "the relay runs as its user, not root"
    );
}
