//! The exit policy: which destinations an exit opens a TCP connection to. It refuses
//!
//! - every block of the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 as
//!   updated by RFC 8190 and the RFCs that added entries since), multicast, the deprecated
//!   IPv6 forms (IPv4-compatible, site-local) and all of IPv6 outside global unicast
//!   ([`pb_control::special`], which also keeps such addresses out of relays' descriptors);
//! - IPv6 addresses that carry an IPv4 address ([`pb_control::special::embedded_v4`] tells
//!   which are judged as that IPv4 address and which are refused whole);
//! - every address configured on the exit host's interfaces ([`ExitPolicy::refresh_own`]);
//! - the ports of [`DEFAULT_REFUSED_PORTS`], or the operator's list instead.
//!
//! `gossip.exit_allow` opens networks that are special (a testbed's own namespaces), but an
//! address of the exit host itself only when it is listed alone (a /32 or /128): a testbed's
//! exit has to reach servers in other namespaces, never itself, and a network that happens
//! to hold the exit's address must not open its local services (which listen on every
//! address and trust connections from the host). It opens no refused port.
//!
//! Deciding is pure: the host's addresses are handed in, so the tests do not depend on the
//! machine; only [`ExitPolicy::refresh_own`] asks the kernel (over rtnetlink).

use std::net::{IpAddr, SocketAddr};

use pb_control::special::{embedded_v4, in_net, special};

/// A range of TCP ports, `first..=last`: never empty and never port 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    /// `first..=last`; `None` if it is empty or starts at port 0.
    pub const fn new(first: u16, last: u16) -> Option<Self> {
        if first == 0 || first > last {
            return None;
        }
        Some(Self { first, last })
    }

    /// The first port.
    pub const fn first(self) -> u16 {
        self.first
    }

    /// The last port.
    pub const fn last(self) -> u16 {
        self.last
    }

    /// Whether `port` is in the range.
    pub const fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }
}

/// `25` or `135-139`, as the configuration writes it.
impl core::fmt::Display for PortRange {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// `first..=last`, for the constants below (which are never empty nor start at 0).
const fn ports(first: u16, last: u16) -> PortRange {
    PortRange { first, last }
}

/// The ports an exit refuses unless `gossip.exit_refuse_ports` lists others. Short on
/// purpose: each is a port where a connection from an anonymous exit is abuse far more often
/// than use, and where that abuse comes back to the exit's operator as complaints and
/// blocklists. Everything else is open, as the Web and most services need.
pub const DEFAULT_REFUSED_PORTS: [PortRange; 3] = [
    // SMTP between mail servers: through an exit it is spam, and one spammer puts the exit's
    // address on every blocklist. Submission (465, 587) needs the user's login: it stays open.
    ports(25, 25),
    // MS RPC endpoint mapper (135) and NetBIOS name, datagram and session services (137-139):
    // LAN protocols that on the Internet carry worms and scans, and that ISPs filter.
    ports(135, 139),
    // SMB: the same, and the way worms spread (WannaCry).
    ports(445, 445),
];

/// Which destinations the exit refuses.
#[derive(Clone, Debug)]
pub struct ExitPolicy {
    /// Networks allowed although special (a testbed's own namespaces): address and prefix.
    allow: Vec<(IpAddr, u8)>,
    /// Ports refused at every address.
    refuse_ports: Vec<PortRange>,
    /// The addresses of the exit host's interfaces.
    own: Vec<IpAddr>,
    /// The last read of the host's addresses failed (warned once until one succeeds).
    own_unread: bool,
}

/// No network allowed, the default ports refused, and no address of the host known yet.
impl Default for ExitPolicy {
    fn default() -> Self {
        Self::new(Vec::new(), None)
    }
}

impl ExitPolicy {
    /// A policy that allows the networks `allow` although they are special, and refuses the
    /// ports `refuse_ports` (`None`: [`DEFAULT_REFUSED_PORTS`]). It knows no address of the
    /// host until [`Self::refresh_own`] or [`Self::set_own`].
    pub fn new(allow: Vec<(IpAddr, u8)>, refuse_ports: Option<Vec<PortRange>>) -> Self {
        Self {
            allow,
            refuse_ports: refuse_ports.unwrap_or_else(|| DEFAULT_REFUSED_PORTS.to_vec()),
            own: Vec::new(),
            own_unread: false,
        }
    }

    /// Refuses `own`, the host's addresses, from now on (in place of the last list).
    pub fn set_own(&mut self, own: Vec<IpAddr>) {
        self.own = own;
    }

    /// Reads the addresses of the host's interfaces from the kernel (rtnetlink, in the
    /// calling thread's network namespace) and refuses them from now on.
    ///
    /// # Errors
    /// The kernel could not be asked; the last list is kept, so a failed read opens no
    /// address that was refused.
    pub fn refresh_own(&mut self) -> Result<(), pb_io::IoError> {
        match pb_io::netlink::host_addrs() {
            Ok(own) => {
                self.set_own(own);
                self.own_unread = false;
                Ok(())
            }
            Err(e) => {
                if !self.own_unread {
                    tracing::warn!(
                        error = %e,
                        "cannot read this host's addresses; the exit policy keeps the last list"
                    );
                }
                self.own_unread = true;
                Err(e)
            }
        }
    }

    /// Whether the exit may connect to `dest`.
    pub fn allows(&self, dest: SocketAddr) -> bool {
        self.allows_port(dest.port()) && self.allows_ip(dest.ip())
    }

    /// Whether the exit may connect to `port` (at an address it allows).
    pub fn allows_port(&self, port: u16) -> bool {
        !self.refuse_ports.iter().any(|range| range.contains(port))
    }

    /// Whether the exit may connect to `ip` (on a port it allows).
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        if self.own.contains(&ip) {
            let host = if ip.is_ipv4() { 32 } else { 128 };
            return self.allow.contains(&(ip, host));
        }
        if self.allow.iter().any(|net| in_net(ip, *net)) {
            return true;
        }
        if let IpAddr::V6(v6) = ip
            && let Some(v4) = embedded_v4(v6)
        {
            return self.allows_ip(IpAddr::V4(v4));
        }
        !special(ip)
    }
}

#[cfg(test)]
mod tests;
