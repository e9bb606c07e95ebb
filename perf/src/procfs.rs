//! What the benchmarks read of a process or thread from `/proc`: CPU time and resident
//! memory. Linux only, like the harness. Nothing here writes or signals anything.

use std::{
    io::{Read as _, Seek as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow};

/// This thread's CPU time so far, from a schedstat file opened by this thread.
pub(crate) struct CpuClock(std::fs::File);

impl CpuClock {
    pub(crate) fn for_this_thread() -> anyhow::Result<Self> {
        Ok(Self(
            std::fs::File::open("/proc/thread-self/schedstat")
                .context("opening /proc/thread-self/schedstat")?,
        ))
    }

    pub(crate) fn now_ns(&mut self) -> u64 {
        let mut text = String::new();
        if self.0.rewind().is_err() || self.0.read_to_string(&mut text).is_err() {
            return 0;
        }
        text.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// The `stat` file of process `pid`.
pub(crate) fn process_stat(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/stat"))
}

/// The `stat` file of the thread named `name` of process `pid`.
pub(crate) fn thread_stat(pid: u32, name: &str) -> anyhow::Result<PathBuf> {
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        if std::fs::read_to_string(dir.join("comm"))?.trim() == name {
            return Ok(dir.join("stat"));
        }
    }
    anyhow::bail!("process {pid} has no thread {name}")
}

/// CPU seconds (user + system) so far of the process or thread whose `stat` file is `stat`.
pub(crate) fn cpu_seconds(stat: &Path) -> anyhow::Result<f64> {
    let text = std::fs::read_to_string(stat).with_context(|| stat.display().to_string())?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    // /proc times are in USER_HZ, which is 100 on Linux.
    Ok(ticks / 100.0)
}

/// Resident memory of `pid`, in MiB.
pub(crate) fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for {pid}"))?;
    Ok(kib / 1024.0)
}

/// The local ports of process `pid`'s UDP sockets connected to `peer` (from its open
/// descriptors and its namespace's `/proc/<pid>/net/udp`): how the observer's recording
/// is told which access link belongs to which client, for the ground truth.
pub(crate) fn udp_ports_to(pid: u32, peer: std::net::SocketAddrV4) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).unwrap_or_default();
    // The kernel prints an IPv4 address as the hex of its in-memory (network order) u32
    // read on a little-endian machine, then the port in hex.
    let remote = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(peer.ip().octets()),
        peer.port()
    );
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, rem, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
            if *rem != remote || !inodes.iter().any(|i| i == inode) {
                return None;
            }
            u16::from_str_radix(local.split(':').nth(1)?, 16).ok()
        })
        .collect()
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_of_this_process_and_thread_are_read() {
        let pid = std::process::id();
        assert!(cpu_seconds(&process_stat(pid)).is_ok_and(|s| s >= 0.0));
        assert!(rss_mib(pid).is_ok_and(|m| m > 0.0));
        let mut clock = CpuClock::for_this_thread().expect("schedstat");
        let before = clock.now_ns();
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(20) {}
        assert!(clock.now_ns() > before);
        assert!(thread_stat(pid, "no-such-thread-name").is_err());
    }
}
