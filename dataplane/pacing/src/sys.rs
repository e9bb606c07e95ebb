//! The crate's only unsafe code: the scheduler calls.

#![expect(
    unsafe_code,
    reason = "wrappers over sched_setscheduler and sched_getscheduler; each call has a SAFETY comment"
)]

use std::io;

/// Makes the calling thread `SCHED_FIFO` at `priority`.
pub(crate) fn set_fifo(priority: i32) -> io::Result<()> {
    set(libc::SCHED_FIFO, priority)
}

/// Locks every page of the process, present and future, into memory (`mlockall`).
pub(crate) fn lock_all_memory() -> io::Result<()> {
    // SAFETY: mlockall reads no memory of ours; it only changes how the kernel keeps this
    // process's pages.
    let rc = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set(policy: i32, priority: i32) -> io::Result<()> {
    // SAFETY: an all-zero sched_param is a valid value of that plain C struct (musl's has
    // more fields than glibc's, all zero when unused).
    let mut param: libc::sched_param = unsafe { std::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: `param` is a live sched_param the kernel only reads; pid 0 is the calling
    // thread, whose scheduling no Rust invariant depends on.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &raw const param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The calling thread's policy and priority.
#[cfg(test)]
pub(crate) fn priority() -> (i32, i32) {
    // SAFETY: an all-zero sched_param is a valid value; sched_getscheduler and
    // sched_getparam read no memory of ours but `param`, a live sched_param the kernel
    // writes; pid 0 is the calling thread.
    unsafe {
        let mut param: libc::sched_param = std::mem::zeroed();
        let policy = libc::sched_getscheduler(0);
        libc::sched_getparam(0, &raw mut param);
        (policy, param.sched_priority)
    }
}
