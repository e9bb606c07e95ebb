//! pb-client's VPN mode on Linux: the TUN device, and the routing that sends the device's
//! traffic, IPv4 and IPv6, into it.
//!
//! - [`Tun::create`] makes a TUN device (`/dev/net/tun`, `TUNSETIFF`; root or
//!   CAP_NET_ADMIN); [`Tun::from_fd`] takes one already open (Android's VpnService hands its
//!   file descriptor over, as do helpers that set the device up themselves) and touches
//!   nothing but the descriptor's flags. Either way reads and writes are whole IP packets,
//!   without a packet-information header, non-blocking.
//! - [`routing::Routing::install`] brings the device up and routes through it by policy
//!   (a rule and a table of its own, netlink), with the client's own links left out and an
//!   `unreachable` default behind the device's: the kill switch.
//!
//! This crate holds the client's only unsafe code (the ioctl and `fcntl` calls), each block
//! with its reason; pb-client itself forbids unsafe code.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::OpenOptionsExt as _,
    },
};

pub mod routing;

/// Why a TUN device could not be had.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The name is empty, too long (15 bytes at most) or holds a NUL or a slash.
    #[error("{0:?} is not a usable interface name (1-15 bytes, no '/' or NUL)")]
    BadName(String),
    /// Neither `/dev/net/tun` nor `/dev/tun` could be opened.
    #[error("cannot open /dev/net/tun: {0}{hint}", hint = permission_hint(.0))]
    Open(io::Error),
    /// The kernel refused the device (no CAP_NET_ADMIN, or the name is another kind of
    /// device's).
    #[error("cannot create TUN device {name}: {error}{hint}")]
    Create {
        /// The name asked for.
        name: String,
        /// The kernel's answer.
        error: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The descriptor given is not a TUN device of raw IP packets (it is left open).
    #[error("file descriptor {fd} is not a TUN device without packet information: {why}")]
    NotTun {
        /// The descriptor.
        fd: RawFd,
        /// What it is instead.
        why: String,
    },
    /// The descriptor given is not open, or its flags cannot be set.
    #[error("file descriptor {fd}: {error}")]
    Fd {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        error: io::Error,
    },
    /// A netlink request (bringing the device up, an address, a route, a rule) failed.
    #[error("{what}: {error}{hint}")]
    Netlink {
        /// What was asked.
        what: String,
        /// The kernel's answer.
        error: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
}

/// What to do about a refusal for want of permission.
fn permission_hint(error: &io::Error) -> &'static str {
    match error.kind() {
        io::ErrorKind::PermissionDenied => " (run as root, or give the binary CAP_NET_ADMIN)",
        _ => "",
    }
}

/// A TUN device: whole IP packets in and out, non-blocking, closed on drop (a device this
/// process made goes away with it).
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: Option<String>,
}

impl Tun {
    /// Makes (or attaches to) the TUN device `name`, without a packet-information header.
    ///
    /// # Errors
    /// A bad name, no TUN driver, or no permission ([`TunError`]).
    pub fn create(name: &str) -> Result<Self, TunError> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&b'/') {
            return Err(TunError::BadName(name.to_owned()));
        }
        let c_name = CString::new(name).map_err(|_| TunError::BadName(name.to_owned()))?;
        let fd = open_clone_device()?;
        // SAFETY: `ifreq` is plain data, for which all-zero bytes are a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(c_name.as_bytes_with_nul()) {
            *dst = *src as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: `fd` is an open descriptor of the TUN clone device, and `ifr` a valid,
        // initialised `ifreq` that outlives the call; TUNSETIFF reads and writes only it.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) };
        if rc < 0 {
            let source = io::Error::last_os_error();
            let hint = match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => {
                    " (run as root, or give the binary CAP_NET_ADMIN)"
                }
                Some(libc::EINVAL) | Some(libc::EBUSY) => {
                    " (another kind of interface, or a busy one, has that name)"
                }
                _ => "",
            };
            return Err(TunError::Create {
                name: name.to_owned(),
                error: source,
                hint,
            });
        }
        // The kernel's name for it (the same, as no pattern was given).
        Ok(Self {
            fd,
            name: Some(name_of(&ifr)),
        })
    }

    /// Takes over `fd`, an open TUN descriptor set up elsewhere (Android's VpnService, a
    /// helper): made non-blocking and close-on-exec, and closed on drop. Nothing else about
    /// the device or its routes is touched.
    ///
    /// # Errors
    /// `fd` is not open ([`TunError::Fd`]), or not a TUN device without packet information
    /// headers ([`TunError::NotTun`]): then it is left as it was, open, not taken.
    pub fn from_fd(fd: RawFd) -> Result<Self, TunError> {
        if fd < 0 {
            return Err(TunError::Fd {
                fd,
                error: io::Error::from_raw_os_error(libc::EBADF),
            });
        }
        // SAFETY: `ifreq` is plain data, for which all-zero bytes are a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        // SAFETY: TUNGETIFF writes only into `ifr`, valid and initialised for the call; on a
        // descriptor that is not open, or not a TUN device, it fails and changes nothing.
        let rc = unsafe { libc::ioctl(fd, libc::TUNGETIFF, &mut ifr) };
        if rc < 0 {
            let error = io::Error::last_os_error();
            return Err(if error.raw_os_error() == Some(libc::EBADF) {
                TunError::Fd { fd, error }
            } else {
                TunError::NotTun {
                    fd,
                    why: error.to_string(),
                }
            });
        }
        // SAFETY: after TUNGETIFF succeeded, the union holds the device's flags.
        let flags = i32::from(unsafe { ifr.ifr_ifru.ifru_flags });
        if flags & libc::IFF_TUN == 0 || flags & libc::IFF_NO_PI == 0 {
            return Err(TunError::NotTun {
                fd,
                why: "a TAP device, or one with packet information headers (IFF_NO_PI unset)"
                    .into(),
            });
        }
        let fail = |error| TunError::Fd { fd, error };
        // SAFETY: F_GETFL only reads the descriptor's flags (it is open: TUNGETIFF answered).
        let status = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if status < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is an open TUN descriptor the caller hands over: from here on this
        // process's only owner of it is the `OwnedFd`.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: setting the status and descriptor flags of an open descriptor we own.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, status | libc::O_NONBLOCK) } < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
            return Err(fail(io::Error::last_os_error()));
        }
        Ok(Self {
            fd: owned,
            name: Some(name_of(&ifr)),
        })
    }

    /// The device's name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Reads one packet into `buf`: its length (`WouldBlock` when none waits).
    ///
    /// # Errors
    /// The read's.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the call's duration,
        // and the descriptor is open (owned by `self`).
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Writes one packet.
    ///
    /// # Errors
    /// The write's (`WouldBlock` when the device's queue is full).
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: `packet` is valid for reads of its length for the call's duration, and
        // the descriptor is open (owned by `self`).
        let n = unsafe { libc::write(self.fd.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }
}

impl AsRawFd for Tun {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The interface name in `ifr`.
fn name_of(ifr: &libc::ifreq) -> String {
    let name: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&name).into_owned()
}

/// Opens the TUN clone device: `/dev/net/tun`, or `/dev/tun` where that is its name
/// (Android's).
fn open_clone_device() -> Result<OwnedFd, TunError> {
    let mut last = None;
    for path in ["/dev/net/tun", "/dev/tun"] {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => return Ok(file.into()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => last = Some(e),
            Err(e) => return Err(TunError::Open(e)),
        }
    }
    Err(TunError::Open(last.unwrap_or_else(|| {
        io::Error::from(io::ErrorKind::NotFound)
    })))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn bad_names_and_descriptors_are_refused_with_a_reason() {
        for name in ["", "a/b", "sixteen-bytes-xx"] {
            assert!(
                matches!(Tun::create(name), Err(TunError::BadName(_))),
                "{name:?}"
            );
        }
        let e = Tun::from_fd(-1).unwrap_err();
        assert!(matches!(e, TunError::Fd { fd: -1, .. }));
        // A descriptor number far above any open one.
        let e = Tun::from_fd(1 << 20).unwrap_err();
        assert!(e.to_string().contains("Bad file descriptor"), "{e}");
        // The message says it all: no source for a chain to print again.
        assert!(std::error::Error::source(&e).is_none());
        let denied = TunError::Open(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(
            denied
                .to_string()
                .ends_with("(run as root, or give the binary CAP_NET_ADMIN)")
        );
    }

    #[test]
    fn a_descriptor_that_is_no_tun_device_is_refused_and_left_open() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let e = Tun::from_fd(fds[0]).unwrap_err();
        assert!(matches!(e, TunError::NotTun { .. }), "{e}");
        for fd in fds {
            // SAFETY: F_GETFD reads flags; the pipe's descriptors are ours, and still open.
            let open = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0;
            assert!(open, "taken and closed");
            // SAFETY: closing the descriptors this test opened, once.
            unsafe { libc::close(fd) };
        }
    }

    #[test]
    fn a_device_is_made_where_the_process_may() {
        if !pb_testbed::require_privileged("a_device_is_made_where_the_process_may") {
            return;
        }
        let ns = pb_testbed::Netns::create("tunmake").unwrap();
        ns.in_netns(|| {
            let tun = Tun::create("pbtuntest0").unwrap();
            assert_eq!(tun.name(), Some("pbtuntest0"));
            assert!(ns.run(&["link", "show", "pbtuntest0"]).is_ok());
            let mut buf = [0u8; 1500];
            // Down, so nothing comes.
            assert_eq!(
                tun.recv(&mut buf).unwrap_err().kind(),
                io::ErrorKind::WouldBlock
            );
            // Handed over: a copy of its descriptor, taken, non-blocking, close-on-exec.
            // SAFETY: dup of a descriptor `tun` owns; the copy is handed to from_fd.
            let copy = unsafe { libc::dup(tun.as_raw_fd()) };
            let handed = Tun::from_fd(copy).unwrap();
            assert_eq!(handed.name(), Some("pbtuntest0"));
            // SAFETY: F_GETFL and F_GETFD read the flags of a descriptor `handed` owns.
            let (status, fd_flags) = unsafe {
                (
                    libc::fcntl(handed.as_raw_fd(), libc::F_GETFL),
                    libc::fcntl(handed.as_raw_fd(), libc::F_GETFD),
                )
            };
            assert_eq!(status & libc::O_NONBLOCK, libc::O_NONBLOCK);
            assert_eq!(fd_flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
            drop((tun, handed));
            // Gone with its descriptors.
            assert!(ns.run(&["link", "show", "pbtuntest0"]).is_err());
        })
        .unwrap();
    }
}
