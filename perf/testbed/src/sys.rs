//! The only unsafe code in the crate: thin wrappers over libc calls.

#![expect(
    unsafe_code,
    reason = "wrappers over geteuid, setns, sched_setaffinity, kill and an AF_PACKET socket; each call has a SAFETY comment"
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

/// An `AF_PACKET` socket for every protocol (`ETH_P_ALL`), unbound: it sees every frame on
/// every interface of the calling thread's network namespace, each with the kernel's
/// receive time (`SO_TIMESTAMPNS`), and holds `rcvbuf` bytes of them.
pub(crate) fn packet_socket(rcvbuf: usize) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let protocol = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket reads no memory of ours; a non-negative result is a new descriptor
    // that nothing else owns, which OwnedFd then closes exactly once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol)) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket and is owned by nobody else.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    set_int_option(&owned, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    let size = libc::c_int::try_from(rcvbuf).unwrap_or(libc::c_int::MAX);
    // SO_RCVBUFFORCE needs CAP_NET_ADMIN, which the testbed has; plain SO_RCVBUF otherwise.
    if set_int_option(&owned, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size).is_err() {
        set_int_option(&owned, libc::SOL_SOCKET, libc::SO_RCVBUF, size)?;
    }
    // Wake up at least every 100 ms so that the reader sees its stop flag.
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 100_000,
    };
    // SAFETY: `timeout` is a live timeval of the size passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            owned.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}

fn set_int_option(
    fd: &std::os::fd::OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int of the size passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One frame read from a [`packet_socket`].
pub(crate) struct RawFrame {
    /// Its length on the wire (it may be longer than what was copied).
    pub len: usize,
    /// `sll_pkttype`: `PACKET_OUTGOING` for frames this namespace sent.
    pub pkttype: u8,
    /// The kernel's timestamp, nanoseconds since the Unix epoch (0 if none came).
    pub ns: u64,
}

/// Reads one frame into `buf` (the first `buf.len()` bytes of it); `Ok(None)` when the
/// receive timeout passed first.
pub(crate) fn read_frame(
    fd: &std::os::fd::OwnedFd,
    buf: &mut [u8],
) -> io::Result<Option<RawFrame>> {
    // SAFETY: an all-zero sockaddr_ll is a valid value of that plain C struct.
    let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is a valid value of that plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&raw mut from).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // socklen_t on musl, size_t on glibc.
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: every pointer in `msg` points at a live local (`from`, `iov`, `control`)
    // or at `buf`, of the lengths given, all outliving the call; the kernel writes within
    // them only.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &raw mut msg, libc::MSG_TRUNC) };
    if n < 0 {
        let error = io::Error::last_os_error();
        return match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                Ok(None)
            }
            _ => Err(error),
        };
    }
    let mut ns = 0;
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/CMSG_NXTHDR walk its control
    // buffer (`control`, live) within msg_controllen, and CMSG_DATA of an SCM_TIMESTAMPNS
    // header points at a timespec inside it (read unaligned).
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&raw const msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET
                && (*header).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let time = libc::CMSG_DATA(header)
                    .cast::<libc::timespec>()
                    .read_unaligned();
                ns = u64::try_from(time.tv_sec).unwrap_or(0) * 1_000_000_000
                    + u64::try_from(time.tv_nsec).unwrap_or(0);
            }
            header = libc::CMSG_NXTHDR(&raw const msg, header);
        }
    }
    Ok(Some(RawFrame {
        len: usize::try_from(n).unwrap_or(0),
        pkttype: from.sll_pkttype,
        ns,
    }))
}

/// The frames the kernel dropped on `fd` since the last call (`PACKET_STATISTICS`).
pub(crate) fn packet_drops(fd: &std::os::fd::OwnedFd) -> io::Result<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are live locals of the sizes given; the kernel writes at
    // most `len` bytes into `stats`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(u64::from(stats.tp_drops))
    } else {
        Err(io::Error::last_os_error())
    }
}
