//! CPU counting and pinning for benchmark threads.

use std::io;

use crate::{TestbedError, sys};

/// How many CPUs this process may use (affinity and cgroup quota considered), at least 1.
///
/// CPU numbers are not necessarily `0..cpu_count()`; use [`allowed_cpus`] to pick CPUs
/// for [`pin_to_cpu`].
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The CPU numbers the current thread may run on (`Cpus_allowed_list` in
/// `/proc/thread-self/status`), ascending.
///
/// # Errors
///
/// [`TestbedError::Io`] if the file cannot be read, [`TestbedError::Parse`] if the list
/// is missing or malformed.
pub fn allowed_cpus() -> Result<Vec<usize>, TestbedError> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
        .unwrap_or_default();
    parse_cpu_list(list).ok_or_else(|| TestbedError::Parse {
        what: "Cpus_allowed_list",
        text: list.to_owned(),
    })
}

/// Restricts the **current thread** to CPU `cpu` (`sched_setaffinity(0, ..)`). Other
/// threads, including ones already spawned from this one, keep their affinity; threads
/// spawned from this one afterwards inherit it.
///
/// # Errors
///
/// [`TestbedError::Affinity`] if `cpu` is 1024 or more, offline, or outside the
/// process's allowed set (e.g. a cgroup cpuset).
pub fn pin_to_cpu(cpu: usize) -> Result<(), TestbedError> {
    let mut mask: sys::CpuMask = Default::default();
    let bits = libc::c_ulong::BITS as usize;
    let Some(word) = mask.get_mut(cpu / bits) else {
        return Err(TestbedError::Affinity {
            cpu,
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "CPU number is beyond CPU_SETSIZE (1024)",
            ),
        });
    };
    *word = 1 << (cpu % bits);
    sys::set_thread_affinity(&mask).map_err(|source| TestbedError::Affinity { cpu, source })
}

/// Parses a kernel CPU list such as `0-3,8,10-11`.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',') {
        let (first, last): (usize, usize) = match part.split_once('-') {
            Some((first, last)) => (first.parse().ok()?, last.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if first > last {
            return None;
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("0,x"), None);
    }

    #[test]
    fn pinning_moves_only_this_thread() {
        let cpus = allowed_cpus().unwrap();
        let target = *cpus.last().unwrap();
        std::thread::spawn(move || {
            pin_to_cpu(target).unwrap();
            assert_eq!(allowed_cpus().unwrap(), vec![target]);
        })
        .join()
        .unwrap();
        assert_eq!(allowed_cpus().unwrap(), cpus);
    }

    #[test]
    fn pinning_beyond_cpu_setsize_is_an_error() {
        assert!(matches!(
            pin_to_cpu(1024),
            Err(TestbedError::Affinity { cpu: 1024, .. })
        ));
        assert!(matches!(
            pin_to_cpu(usize::MAX),
            Err(TestbedError::Affinity { .. })
        ));
    }
}
