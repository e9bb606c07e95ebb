//! The only unsafe code in the crate: four thin wrappers over libc calls.

#![expect(
    unsafe_code,
    reason = "wrappers over geteuid, setns, sched_setaffinity and kill; each call has a SAFETY comment"
)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The effective user id of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory and always succeeds (POSIX).
    unsafe { libc::geteuid() }
}

/// Moves the calling thread (only) into the network namespace `ns`.
pub(crate) fn setns_net(ns: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `ns` is an open descriptor for the whole call (it is borrowed); setns reads
    // no memory of ours and only changes this thread's network namespace, which no Rust
    // invariant depends on.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A CPU bit mask with the layout of `cpu_set_t`: bit `n % BITS` of word `n / BITS`.
pub(crate) type CpuMask =
    [libc::c_ulong; size_of::<libc::cpu_set_t>() / size_of::<libc::c_ulong>()];

/// Restricts the calling thread (only) to the CPUs set in `mask`.
pub(crate) fn set_thread_affinity(mask: &CpuMask) -> io::Result<()> {
    // SAFETY: `mask` is a live, initialised array of exactly size_of::<cpu_set_t>() bytes
    // with cpu_set_t's layout (an array of c_ulong); the kernel only reads that many bytes
    // from it. pid 0 means the calling thread.
    let rc = unsafe {
        libc::sched_setaffinity(
            0,
            size_of::<CpuMask>(),
            mask.as_ptr().cast::<libc::cpu_set_t>(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends SIGTERM to process `pid`, a child of ours that has not been reaped (so the pid
/// cannot have been reused). Errors are ignored: the caller waits for the child anyway.
pub(crate) fn terminate(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill reads no memory of ours; it only sends a signal to `pid`, which is our
    // unreaped child (a zombie at worst), never another process.
    let _ = unsafe { libc::kill(pid, libc::SIGTERM) };
}
