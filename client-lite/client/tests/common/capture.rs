//! Captures of a namespace's traffic with dumpcap, read back with tshark's display filters
//! (Debian's tshark package): what an observer of a link dissects.
#![allow(dead_code, reason = "each test file uses a part")]
#![expect(clippy::unwrap_used, reason = "tests")]

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

/// A capture with tshark of the client namespace's interface, stopped when dropped.
pub struct Capture(Child);

impl Capture {
    pub fn start(ns: &str, file: &Path) -> Option<Self> {
        Self::start_on(ns, "any", file)
    }

    /// A capture of one interface of the namespace (`any` for all of them).
    pub fn start_on(ns: &str, interface: &str, file: &Path) -> Option<Self> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "dumpcap", "-q", "-i", interface, "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        // dumpcap needs a moment before it sees packets.
        std::thread::sleep(Duration::from_secs(2));
        Some(Self(child))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // SIGTERM lets dumpcap finish the file.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Frames of `file` that tshark's display filter `filter` matches.
pub fn tshark_count(file: &Path, filter: &str, decode_as: &[&str]) -> usize {
    let mut command = Command::new("tshark");
    command.arg("-r").arg(file).args(["-Y", filter]);
    for d in decode_as {
        command.args(["-d", d]);
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "tshark {filter}: {out:?}");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The frames of `file` that `filter` matches, as tshark prints them (one line each).
pub fn tshark_lines(file: &Path, filter: &str) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-Y", filter])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark {filter}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Whether tshark and dumpcap are installed.
pub fn have_tshark() -> bool {
    ["tshark", "dumpcap"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
