//! Network-namespace testbeds for PhantomBand tests and benchmarks.
//!
//! What it does:
//!
//! - [`Netns`]: a named network namespace (`ip netns add`) that is deleted on drop, so
//!   a panicking test still cleans up. [`Netns::enter`] / [`Netns::in_netns`] move the
//!   *current thread* into it with `setns(2)`; [`Netns::exec`] builds a command that runs
//!   inside it.
//! - [`veth_pair`]: a veth pair between two namespaces with IPv4/IPv6 addresses, brought
//!   up and waited for; [`two_node`] builds the common two-namespace [`TwoNode`] testbed.
//! - [`remove_stale_namespaces`]: deletes namespaces left by killed test processes (run
//!   automatically once per process).
//! - [`privileged`] / [`require_privileged`]: whether the tests can run here; skip
//!   politely on a developer machine, fail loudly in CI (`CI=true`).
//! - [`pin_to_cpu`], [`cpu_count`], [`allowed_cpus`]: CPU placement for benchmarks.
//! - [`Proc`]: a child process whose output is collected as it comes (and optionally
//!   logged to a file), stopped with SIGTERM on request, killed on drop.
//! - [`Capture`]: a global passive observer's recording of a namespace's frames
//!   (`AF_PACKET`), with kernel timestamps.
//! - [`star`]: node namespaces around a bridge, with [`star_address`] and [`star_ifname`]
//!   saying in advance what node `i` gets.
//!
//! What it does not do: it needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the `ip`
//! command from iproute2, which it runs for all setup; it speaks no netlink itself. It
//! does not load XDP programs, change offloads, routes beyond the connected subnets, or
//! sysctls, and it never touches interfaces outside the namespaces it creates. It
//! generates no traffic itself. Namespaces of a process killed with `SIGKILL` survive
//! until the next process using this crate starts.
//!
//! All unsafe code (`geteuid`, `setns`, `sched_setaffinity`, `kill`, the capture's
//! `AF_PACKET` socket) is in one private module.

#![deny(unsafe_code)]
#![cfg_attr(
    test,
    expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")
)]

mod capture;
mod cmd;
mod cpu;
mod error;
mod netns;
mod process;
mod star;
mod sys;
mod veth;

use std::sync::OnceLock;

pub use capture::{Capture, Frame, Recording};
pub use cmd::run_checked;
pub use cpu::{allowed_cpus, cpu_count, pin_to_cpu};
pub use error::TestbedError;
pub use netns::{Netns, NetnsGuard, remove_stale_namespaces};
pub use process::Proc;
pub use star::{Star, StarNode, star, star_address, star_ifname, star_with_queues};
pub use veth::{Link, PairSpec, TwoNode, interface_mac, two_node, veth_pair, wait_link_up};

/// Capability numbers from `linux/capability.h`.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// `Ok` if this process can build testbeds: it runs as root with CAP_SYS_ADMIN and
/// CAP_NET_ADMIN and `ip netns` works. Otherwise the reason, for a skip message.
///
/// The answer is computed once per process.
pub fn privileged() -> Result<(), String> {
    static ANSWER: OnceLock<Result<(), String>> = OnceLock::new();
    ANSWER.get_or_init(probe_privileges).clone()
}

/// Decides whether a privileged test runs. Use as the first line of such a test:
///
/// ```no_run
/// if !pb_testbed::require_privileged("two_nodes_ping") {
///     return;
/// }
/// ```
///
/// Returns `true` if [`privileged`] is `Ok`. Otherwise prints
/// `skipping <test_name>: <reason> ...` and returns `false`, except in CI (environment
/// variable `CI` is `true`), where a silently skipped test would hide breakage, so it
/// panics instead.
///
/// # Panics
///
/// If not privileged and `CI=true`.
pub fn require_privileged(test_name: &str) -> bool {
    match privileged() {
        Ok(()) => true,
        Err(reason) => {
            let in_ci = std::env::var("CI").is_ok_and(|ci| ci == "true");
            skip_or_fail(test_name, &reason, in_ci, &mut std::io::stderr().lock())
        }
    }
}

/// The unprivileged half of [`require_privileged`]: returns `false`, or panics in CI.
#[expect(
    clippy::panic,
    reason = "in CI a privileged test that cannot run must fail, not pass silently"
)]
fn skip_or_fail(test_name: &str, reason: &str, in_ci: bool, out: &mut dyn std::io::Write) -> bool {
    if in_ci {
        panic!(
            "{test_name}: CI requires root for this test (network namespaces and XDP), \
             but it is not available here: {reason}"
        );
    }
    // `out` is the stderr handle rather than `eprintln!`, which the test harness captures
    // and hides for passing tests: a skip must be visible in a plain `cargo test` (and
    // `make test` counts these lines as skipped tests).
    let _ = writeln!(
        out,
        "skipping {test_name}: {reason} (needs root for network namespaces and XDP)"
    );
    false
}

fn probe_privileges() -> Result<(), String> {
    let euid = sys::effective_uid();
    if euid != 0 {
        return Err(format!("not running as root (effective uid {euid})"));
    }
    // Root in a container may lack the capabilities; if /proc is unreadable, let the
    // `ip` probe below decide.
    if let Some(caps) = effective_capabilities() {
        for (bit, name) in [
            (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
            (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        ] {
            if caps & (1 << bit) == 0 {
                return Err(format!("running as root but without {name}"));
            }
        }
    }
    cmd::run_ip(&["netns", "list"]).map(drop).map_err(|error| {
        format!(
            "`ip netns list` does not work: {}",
            error::display_chain(&error)
        )
    })
}

/// The `CapEff` mask from `/proc/self/status`.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unprivileged_tests_skip_locally_and_fail_in_ci() {
        // Into a buffer: on stderr the line would count as a skipped test in `make test`.
        let mut said = Vec::new();
        assert!(!skip_or_fail("t", "not running as root", false, &mut said));
        let said = String::from_utf8(said).unwrap();
        assert!(
            said.starts_with("skipping t: not running as root"),
            "{said}"
        );
        let in_ci = std::panic::catch_unwind(|| {
            skip_or_fail("t", "not running as root", true, &mut Vec::new())
        });
        let message = in_ci.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("CI requires root"), "{message}");
        assert!(message.contains("not running as root"), "{message}");
    }
}
