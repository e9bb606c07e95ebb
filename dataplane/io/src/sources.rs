//! Which sources a relay takes PhantomBand packets from: the addresses of its links (the
//! adjacent layers of the current topology) and what happens to everyone else
//! ([`StrangerPolicy`]: served while no link set is installed, dropped on mixes and exits,
//! held to a per-source token bucket on gateways, whose clients send from anywhere).
//!
//! The same decision is made in two places: by the XDP program for the AF_XDP backend (the
//! control plane fills its maps with [`crate::xdp::XdpProgram::set_sources`]), and by
//! [`SourceGate`] in user space for the UDP backend ([`crate::PacketIo::set_sources`]). The
//! bucket arithmetic is `pb_xdp_common::Bucket`'s in both, so they agree.
//!
//! Only addresses are compared, never ports: a relay's packets leave from its packet
//! socket's port on UDP but from any port the kernel hashes on AF_XDP, and a source port is
//! no harder to forge than the address.

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Instant,
};

pub use pb_xdp_common::StrangerPolicy;
use pb_xdp_common::{
    Bucket, DEFAULT_SOURCE_BURST, DEFAULT_SOURCE_RATE, MAX_BUCKETS, bucket_key_v4, bucket_key_v6,
    bucket_params,
};

/// The sources a relay serves: its links' addresses, and the policy for every other source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFilter {
    /// What happens to datagrams from a source not in `allowed`.
    pub policy: StrangerPolicy,
    /// The links' addresses (IPv4-mapped IPv6 addresses are kept as IPv4).
    allowed: BTreeSet<IpAddr>,
}

impl Default for SourceFilter {
    /// No filter: every source served.
    fn default() -> Self {
        Self::new(StrangerPolicy::Pass, [])
    }
}

impl SourceFilter {
    /// `policy` for sources other than `allowed`.
    pub fn new(policy: StrangerPolicy, allowed: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            policy,
            allowed: allowed.into_iter().map(canonical).collect(),
        }
    }

    /// The allowed addresses, in order.
    pub fn allowed(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.allowed.iter().copied()
    }

    /// How many addresses are allowed.
    pub fn len(&self) -> usize {
        self.allowed.len()
    }

    /// Whether no address is allowed.
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Whether `ip` is one of the allowed addresses.
    pub fn is_allowed(&self, ip: IpAddr) -> bool {
        self.allowed.contains(&canonical(ip))
    }

    /// The allowed addresses as the XDP maps' keys: IPv4 and IPv6 octets.
    pub fn split(&self) -> (BTreeSet<[u8; 4]>, BTreeSet<[u8; 16]>) {
        let mut v4 = BTreeSet::new();
        let mut v6 = BTreeSet::new();
        for ip in &self.allowed {
            match ip {
                IpAddr::V4(a) => {
                    v4.insert(a.octets());
                }
                IpAddr::V6(a) => {
                    v6.insert(a.octets());
                }
            }
        }
        (v4, v6)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (what the wire carries).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A gateway's per-source limits: the token bucket every source that is not a link is held
/// to (packet port and client link together), and the client link's port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLimits {
    /// The client link's UDP port on the same interface, if this relay has one.
    pub client_port: Option<u16>,
    /// Datagrams a second per source.
    pub rate: u32,
    /// Datagrams a source may send at once after being quiet.
    pub burst: u32,
}

impl Default for SourceLimits {
    /// No client link; [`DEFAULT_SOURCE_RATE`] and [`DEFAULT_SOURCE_BURST`].
    fn default() -> Self {
        Self {
            client_port: None,
            rate: DEFAULT_SOURCE_RATE,
            burst: DEFAULT_SOURCE_BURST,
        }
    }
}

/// What [`SourceGate::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Served.
    Pass,
    /// Dropped: a stranger under [`StrangerPolicy::Drop`].
    Stranger,
    /// Dropped: a stranger over its token bucket under [`StrangerPolicy::Limit`].
    OverRate,
}

/// The user-space twin of the XDP program's source check, for backends without XDP: the
/// filter in force and a bounded table of token buckets (at most
/// [`pb_xdp_common::MAX_BUCKETS`] sources; when full, sources idle long enough to have a
/// full bucket again are forgotten, and if none is, the table starts over).
#[derive(Debug)]
pub struct SourceGate {
    filter: SourceFilter,
    ns_per_token: u64,
    burst_ns: u64,
    buckets: HashMap<[u8; 16], Bucket>,
    origin: Instant,
}

impl Default for SourceGate {
    fn default() -> Self {
        Self::new(&SourceLimits::default())
    }
}

impl SourceGate {
    /// A gate serving everyone until [`set_filter`](Self::set_filter), with `limits`'
    /// bucket.
    pub fn new(limits: &SourceLimits) -> Self {
        let (ns_per_token, burst_ns) = bucket_params(limits.rate, limits.burst);
        Self {
            filter: SourceFilter::default(),
            ns_per_token,
            burst_ns,
            buckets: HashMap::new(),
            origin: Instant::now(),
        }
    }

    /// Replaces the filter.
    pub fn set_filter(&mut self, filter: &SourceFilter) {
        self.filter = filter.clone();
    }

    /// The filter in force.
    pub fn filter(&self) -> &SourceFilter {
        &self.filter
    }

    /// Whether a datagram from `ip` is served now.
    pub fn admit(&mut self, ip: IpAddr) -> Admission {
        let now = self.origin.elapsed().as_nanos() as u64;
        self.admit_at(ip, now)
    }

    /// Whether a datagram from `ip` is served at `now` (nanoseconds on any monotonic clock).
    pub fn admit_at(&mut self, ip: IpAddr, now: u64) -> Admission {
        match self.filter.policy {
            StrangerPolicy::Pass => Admission::Pass,
            _ if self.filter.is_allowed(ip) => Admission::Pass,
            StrangerPolicy::Drop => Admission::Stranger,
            StrangerPolicy::Limit => {
                let key = match canonical(ip) {
                    IpAddr::V4(a) => bucket_key_v4(a.octets()),
                    IpAddr::V6(a) => bucket_key_v6(a.octets()),
                };
                let (per, depth) = (self.ns_per_token, self.burst_ns);
                let within = match self.buckets.get_mut(&key) {
                    Some(bucket) => bucket.take(now, per, depth),
                    None => {
                        if self.buckets.len() >= MAX_BUCKETS as usize {
                            self.buckets
                                .retain(|_, b| now.saturating_sub(b.last_ns) < depth);
                            if self.buckets.len() >= MAX_BUCKETS as usize {
                                self.buckets.clear();
                            }
                        }
                        self.buckets.insert(key, Bucket::first(now, per, depth));
                        true
                    }
                };
                if within {
                    Admission::Pass
                } else {
                    Admission::OverRate
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests")]

    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn mapped_addresses_are_their_ipv4() {
        let f = SourceFilter::new(StrangerPolicy::Drop, [ip("::ffff:10.0.0.1"), ip("fd00::1")]);
        assert!(f.is_allowed(ip("10.0.0.1")));
        assert!(f.is_allowed(ip("::ffff:10.0.0.1")));
        let (v4, v6) = f.split();
        assert_eq!(v4.into_iter().collect::<Vec<_>>(), vec![[10, 0, 0, 1]]);
        assert_eq!(
            v6.into_iter().collect::<Vec<_>>(),
            vec!["fd00::1".parse::<Ipv6Addr>().unwrap().octets()]
        );
    }

    #[test]
    fn strangers_are_refused_only_under_drop() {
        let link = ip("10.0.0.1");
        let stranger = ip("10.0.0.9");
        let mut gate = SourceGate::default();
        assert_eq!(gate.admit_at(stranger, 0), Admission::Pass, "no filter yet");
        gate.set_filter(&SourceFilter::new(StrangerPolicy::Drop, [link]));
        assert_eq!(gate.admit_at(link, 0), Admission::Pass);
        assert_eq!(gate.admit_at(stranger, 0), Admission::Stranger);
    }

    #[test]
    fn under_limit_each_stranger_has_its_own_bucket_and_links_none() {
        let limits = SourceLimits {
            client_port: None,
            rate: 10,
            burst: 5,
        };
        let mut gate = SourceGate::new(&limits);
        let link = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        gate.set_filter(&SourceFilter::new(StrangerPolicy::Limit, [link]));
        let count = |gate: &mut SourceGate, ip: IpAddr, n: usize, at: u64| {
            (0..n)
                .filter(|_| gate.admit_at(ip, at) == Admission::Pass)
                .count()
        };
        assert_eq!(count(&mut gate, ip("10.0.0.7"), 100, 0), 5);
        assert_eq!(count(&mut gate, ip("10.0.0.8"), 3, 0), 3, "another source");
        assert_eq!(count(&mut gate, link, 100, 0), 100, "links are not limited");
        // A second later: ten tokens' worth of time, but the bucket holds five.
        assert_eq!(count(&mut gate, ip("10.0.0.7"), 100, 1_000_000_000), 5);
        // One IPv6 /64 is one source.
        assert_eq!(count(&mut gate, ip("2001:db8::1"), 3, 0), 3);
        assert_eq!(count(&mut gate, ip("2001:db8::2"), 3, 0), 2);
    }
}
