//! Named network namespaces with RAII cleanup, and entering them from a thread.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, PoisonError};

use crate::cmd::{run_checked, run_ip};
use crate::error::display_chain;
use crate::{TestbedError, sys};

/// Every namespace this crate creates is named `pbt-<pid>-<tag>-<counter>`.
const NAME_PREFIX: &str = "pbt-";
/// Where `ip netns` keeps its bind-mounted namespace handles.
const NETNS_DIR: &str = "/run/netns";
/// Longest accepted tag; keeps names readable in `ip netns list`.
const MAX_TAG_LEN: usize = 32;

static NEXT_NAMESPACE: AtomicU64 = AtomicU64::new(0);
static STALE_CLEANUP: Once = Once::new();
/// Serialises `ip netns add`: the first one in a fresh system sets up the `/run/netns`
/// mount, and concurrent first calls can stack mounts.
static NETNS_ADD: Mutex<()> = Mutex::new(());

/// A network namespace created by this process, deleted (`ip netns del`) on drop.
///
/// Dropping removes the name from `/run/netns`. The kernel frees the namespace, and the
/// veth interfaces inside it, once nothing else refers to it: a process started with
/// [`Netns::exec`] that is still running, a thread still inside it, or a socket created
/// inside it keeps it alive (anonymously) until they are gone.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `pbt-<pid>-<tag>-<counter>` and brings its `lo` up.
    ///
    /// The first call in a process also runs [`remove_stale_namespaces`] to delete
    /// namespaces left behind by earlier processes that were killed before cleanup.
    ///
    /// # Errors
    ///
    /// [`TestbedError::InvalidName`] if `tag` is empty, longer than 32 bytes or has
    /// characters other than ASCII letters, digits, `-` and `_`; otherwise whatever
    /// `ip netns add` or `ip link set lo up` reports (usually: not root).
    pub fn create(tag: &str) -> Result<Self, TestbedError> {
        validate_tag(tag)?;
        STALE_CLEANUP.call_once(|| {
            if let Err(error) = remove_stale_namespaces() {
                eprintln!(
                    "pb-testbed: stale namespace cleanup failed: {}",
                    display_chain(&error)
                );
            }
        });
        let counter = NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{}-{tag}-{counter}", std::process::id());
        {
            let _serial = NETNS_ADD.lock().unwrap_or_else(PoisonError::into_inner);
            run_ip(&["netns", "add", &name])?;
        }
        // From here on Drop deletes the namespace, also if bringing `lo` up fails.
        let netns = Netns { name };
        netns.run(&["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's handle, `/run/netns/<name>` (for `setns(2)` or other tools).
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `program args..` inside this namespace, via
    /// `ip netns exec <name>`. Nothing is started until the caller runs it.
    pub fn exec<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        cmd
    }

    /// Runs `ip -n <name> <args..>` and returns its standard output.
    ///
    /// # Errors
    ///
    /// [`TestbedError::Command`] with `ip`'s standard error if it exits unsuccessfully.
    pub fn run(&self, args: &[&str]) -> Result<String, TestbedError> {
        run_checked(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Moves the **current thread** into this namespace until the returned guard is
    /// dropped (or [`NetnsGuard::leave`] is called), which moves it back.
    ///
    /// Only this thread moves: other threads, and threads spawned later from other
    /// threads, stay where they are. Sockets created while inside belong to this
    /// namespace for their whole life, also after leaving, and keep the namespace alive
    /// while they exist. Filesystem views such as `/sys/class/net` do not change.
    /// Guards of nested `enter` calls must be dropped in reverse order.
    ///
    /// # Errors
    ///
    /// [`TestbedError::Setns`] if the current or target namespace cannot be opened or
    /// `setns(2)` fails; the thread is then still in its original namespace.
    pub fn enter(&self) -> Result<NetnsGuard<'_>, TestbedError> {
        let setns_error = |source| TestbedError::Setns {
            ns: self.name.clone(),
            source,
        };
        let original = File::open("/proc/thread-self/ns/net").map_err(setns_error)?;
        let target = File::open(self.path()).map_err(setns_error)?;
        sys::setns_net(target.as_fd()).map_err(setns_error)?;
        Ok(NetnsGuard {
            netns: self,
            original,
            restored: false,
            _not_send: PhantomData,
        })
    }

    /// Runs `f` on the current thread inside this namespace, then moves the thread back
    /// (also if `f` panics). See [`Netns::enter`] for what does and does not move.
    ///
    /// # Errors
    ///
    /// [`TestbedError::Setns`] if entering or leaving fails.
    pub fn in_netns<T>(&self, f: impl FnOnce() -> T) -> Result<T, TestbedError> {
        let guard = self.enter()?;
        let output = f();
        guard.leave()?;
        Ok(output)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = run_ip(&["netns", "del", &self.name]) {
            eprintln!(
                "pb-testbed: could not delete network namespace {}: {}",
                self.name,
                display_chain(&error)
            );
        }
    }
}

/// Proof that the current thread is inside a [`Netns`]; moves it back when dropped.
///
/// Not `Send`: the namespace switch belongs to the thread that made it.
#[derive(Debug)]
#[must_use = "dropping the guard immediately leaves the namespace again"]
pub struct NetnsGuard<'ns> {
    netns: &'ns Netns,
    /// This thread's namespace before `enter`.
    original: File,
    restored: bool,
    _not_send: PhantomData<*const ()>,
}

impl NetnsGuard<'_> {
    /// Moves the thread back to the namespace it was in before `enter`, reporting
    /// failure (dropping the guard does the same but can only print the error).
    ///
    /// # Errors
    ///
    /// [`TestbedError::Setns`] if `setns(2)` fails; the thread is then still inside.
    pub fn leave(mut self) -> Result<(), TestbedError> {
        self.restore()
    }

    fn restore(&mut self) -> Result<(), TestbedError> {
        if self.restored {
            return Ok(());
        }
        sys::setns_net(self.original.as_fd()).map_err(|source| TestbedError::Setns {
            ns: self.netns.name.clone(),
            source,
        })?;
        self.restored = true;
        Ok(())
    }
}

impl Drop for NetnsGuard<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.restore() {
            eprintln!(
                "pb-testbed: THREAD LEFT INSIDE NAMESPACE {}: {}",
                self.netns.name,
                display_chain(&error)
            );
        }
    }
}

/// Deletes namespaces named `pbt-<pid>-...` whose process `<pid>` no longer exists,
/// left behind by test runs that were killed (`SIGKILL`, abort) before `Drop` ran.
/// Returns how many were deleted.
///
/// The check is `/proc/<pid>`, so a namespace whose creator's pid has been reused
/// survives until that pid is free again, and namespaces made by processes in another
/// pid namespace sharing `/run/netns` may be misjudged.
///
/// # Errors
///
/// [`TestbedError::Io`] if `/run/netns` exists but cannot be read. Failure to delete a
/// single namespace (e.g. another process deleted it first) is printed, not returned.
pub fn remove_stale_namespaces() -> Result<usize, TestbedError> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(error.into()),
    };
    let own_pid = std::process::id();
    let mut removed = 0;
    for entry in entries {
        let file_name = entry?.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        let Some(pid) = creator_pid(name) else {
            continue;
        };
        if pid == own_pid || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match run_ip(&["netns", "del", name]) {
            Ok(_) => removed += 1,
            Err(error) => eprintln!(
                "pb-testbed: could not delete stale namespace {name}: {}",
                display_chain(&error)
            ),
        }
    }
    Ok(removed)
}

/// The `<pid>` in a `pbt-<pid>-<tag>-<counter>` name, or `None` for other names.
fn creator_pid(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    if rest.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn validate_tag(tag: &str) -> Result<(), TestbedError> {
    let reason = if tag.is_empty() {
        "empty"
    } else if tag.len() > MAX_TAG_LEN {
        "longer than 32 bytes"
    } else if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        "only ASCII letters, digits, '-' and '_' are allowed"
    } else {
        return Ok(());
    };
    Err(TestbedError::InvalidName {
        what: "namespace tag",
        value: tag.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creator_pid_accepts_only_our_names() {
        assert_eq!(creator_pid("pbt-1234-two-a-0"), Some(1234));
        assert_eq!(creator_pid("pbt-1234-x"), Some(1234));
        assert_eq!(creator_pid("pbt-1234-"), None);
        assert_eq!(creator_pid("pbt-12a4-x-0"), None);
        assert_eq!(creator_pid("pbt--x-0"), None);
        assert_eq!(creator_pid("pbt-+12-x-0"), None);
        assert_eq!(creator_pid("other-1234-x-0"), None);
        assert_eq!(creator_pid("pbt-99999999999-x-0"), None);
    }

    #[test]
    fn tags_are_validated() {
        assert!(validate_tag("two-node_1").is_ok());
        for bad in ["", "a/b", "a b", "ä", &"x".repeat(33)] {
            assert!(
                matches!(validate_tag(bad), Err(TestbedError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
    }
}
