//! Pinning a relay core's thread to one CPU, so that its pipeline, caches and NIC queue stay
//! together.
#![expect(
    unsafe_code,
    reason = "sched_setaffinity has no safe wrapper in std or libc"
)]

use std::{io, mem};

use crate::IoError;

/// Restricts the calling thread to CPU `cpu` (`sched_setaffinity(0, ..)`); threads it
/// spawns afterwards inherit the restriction.
///
/// # Errors
///
/// [`IoError::Sys`] if `cpu` is beyond `CPU_SETSIZE`, offline, or outside the CPUs this
/// process may use (a cgroup cpuset, `taskset`).
pub fn pin_current_thread(cpu: usize) -> Result<(), IoError> {
    let sys = |source| IoError::Sys {
        call: "sched_setaffinity",
        source,
    };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(sys(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond CPU_SETSIZE"),
        )));
    }
    // SAFETY: an all-zero cpu_set_t is the empty set.
    let mut set: libc::cpu_set_t = unsafe { mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit lies inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t and its size is passed; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 {
        return Err(sys(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// The CPUs the calling thread may run on, from /proc.
    fn allowed() -> String {
        std::fs::read_to_string("/proc/thread-self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned()
    }

    #[test]
    fn pins_only_the_calling_thread() {
        let before = allowed();
        let first: usize = before.split([',', '-']).next().unwrap().parse().unwrap();
        let pinned = std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            allowed()
        })
        .join()
        .unwrap();
        assert_eq!(pinned, first.to_string());
        assert_eq!(allowed(), before, "other threads keep their affinity");
    }

    #[test]
    fn out_of_range_cpus_are_errors() {
        assert!(pin_current_thread(1 << 20).is_err());
        assert!(pin_current_thread(libc::CPU_SETSIZE as usize - 1).is_err());
    }
}
