//! Types shared by the PhantomBand XDP program (`ebpf/pb-xdp`) and its user-space loader
//! (`pb-io`).
//!
//! What lives here: the names of the program, its maps and its configuration globals, the
//! indices of its per-CPU counters, the default PhantomBand UDP port and datagram size, the
//! on-the-wire header layouts (Ethernet, IPv4, IPv6, UDP) both sides read, and the two small
//! pieces of arithmetic both sides must agree on: the per-source token bucket ([`Bucket`])
//! and the key a source is charged under ([`bucket_key_v4`], [`bucket_key_v6`]).
//!
//! What does not: any other logic. The crate is `no_std` and builds for `bpfel-unknown-none` as
//! well as for the host; with the `user` feature the header layouts also implement zerocopy's
//! traits so user space can view UMEM frames through them without copying.
#![no_std]
#![forbid(unsafe_code)]

/// Name of the XDP entry point in the object file.
pub const PROGRAM_NAME: &str = "pb_xdp";
/// Name of the `XSKMAP` that maps a receive queue index to its AF_XDP socket.
pub const XSK_MAP_NAME: &str = "PB_XSKS";
/// Name of the per-CPU array of [`Counter`]s.
pub const STATS_MAP_NAME: &str = "PB_STATS";
/// Name of the global holding the PhantomBand UDP port (host byte order, `u16`).
pub const PORT_GLOBAL: &str = "PB_PORT";
/// Name of the global holding the exact UDP payload length of a PhantomBand packet (`u16`).
pub const PACKET_LEN_GLOBAL: &str = "PB_PACKET_LEN";

/// Name of the hash map of IPv4 source addresses (`[u8; 4]` → `u8`, value unused) whose
/// PhantomBand datagrams are relay traffic: the relay's links.
pub const ALLOWED_V4_MAP_NAME: &str = "PB_ALLOWED_V4";
/// Name of the hash map of IPv6 source addresses (`[u8; 16]` → `u8`) likewise.
pub const ALLOWED_V6_MAP_NAME: &str = "PB_ALLOWED_V6";
/// Name of the one-entry array (`u32`) holding the [`StrangerPolicy`] in force.
pub const POLICY_MAP_NAME: &str = "PB_POLICY";
/// Name of the LRU hash map of per-source token buckets (`[u8; 16]` → [`Bucket`]).
pub const BUCKETS_MAP_NAME: &str = "PB_BUCKETS";
/// Name of the global holding the gateway's client-link UDP port (`u16`; 0: none).
pub const CLIENT_PORT_GLOBAL: &str = "PB_CLIENT_PORT";
/// Name of the global holding the bucket's nanoseconds per token (`u64`; 1e9 / rate).
pub const NS_PER_TOKEN_GLOBAL: &str = "PB_NS_PER_TOKEN";
/// Name of the global holding the bucket's depth in nanoseconds (`u64`; burst × ns per token).
pub const BURST_NS_GLOBAL: &str = "PB_BURST_NS";

/// Number of entries in the XSKMAP: the most receive queues one interface can steer.
pub const MAX_QUEUES: u32 = 64;

/// The most source addresses each allowed-source map holds (a relay's links, overlap
/// included: two topologies' adjacent layers).
pub const MAX_ALLOWED_SOURCES: u32 = 1024;

/// The most sources with a token bucket at once; past it the least recently used is
/// forgotten (and starts again with a full bucket).
pub const MAX_BUCKETS: u32 = 65_536;

/// Default per-source rate, in datagrams per second, that a source which is not one of the
/// relay's links may send to a gateway (packet port and client link together). A client of
/// the default profile sends about 51 a second on average (Poisson), a low-power one about
/// 5; this leaves room for about twenty clients behind one address (a NAT).
pub const DEFAULT_SOURCE_RATE: u32 = 1000;

/// Default per-source burst, in datagrams: a client asking for a large directory at once
/// (one request per page) and a Poisson burst of its packets fit in it.
pub const DEFAULT_SOURCE_BURST: u32 = 1024;

/// What happens to PhantomBand datagrams from a source that is not in the allowed maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum StrangerPolicy {
    /// No filter: every source is served (before the first link set is installed).
    Pass = 0,
    /// Dropped and counted: mixes and exits take packets from their links only.
    Drop = 1,
    /// Served up to the per-source token bucket: gateways, whose clients send from any
    /// address.
    Limit = 2,
}

impl StrangerPolicy {
    /// The policy stored as `value`; an unknown value is [`StrangerPolicy::Drop`] (fail
    /// closed).
    pub const fn from_u32(value: u32) -> Self {
        match value {
            0 => Self::Pass,
            2 => Self::Limit,
            _ => Self::Drop,
        }
    }

    /// The value stored in the policy map.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// Stable snake_case name, for logs and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::Limit => "limit",
        }
    }
}

/// A per-source token bucket kept as credit in nanoseconds: it fills at one nanosecond per
/// nanosecond up to the depth `burst_ns`, and a datagram costs `ns_per_token`. So the rate is
/// `1e9 / ns_per_token` datagrams a second and the burst `burst_ns / ns_per_token`, with no
/// multiplication or division on the packet path (which the BPF verifier and 64-bit
/// overflow would both make awkward).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Credit in nanoseconds, at most the depth.
    pub credit_ns: u64,
    /// When the credit was last brought up to date (`bpf_ktime_get_ns`, monotonic).
    pub last_ns: u64,
}

impl Bucket {
    /// A source seen for the first time at `now`, with its first datagram taken from a full
    /// bucket.
    pub const fn first(now: u64, ns_per_token: u64, burst_ns: u64) -> Self {
        Self {
            credit_ns: burst_ns.saturating_sub(ns_per_token),
            last_ns: now,
        }
    }

    /// Refills for the time since the last datagram and takes one token: whether the datagram
    /// may pass. A clock that went backwards refills nothing.
    pub const fn take(&mut self, now: u64, ns_per_token: u64, burst_ns: u64) -> bool {
        let elapsed = now.saturating_sub(self.last_ns);
        let room = burst_ns.saturating_sub(self.credit_ns);
        let credit = if elapsed >= room {
            burst_ns
        } else {
            self.credit_ns + elapsed
        };
        if now > self.last_ns {
            self.last_ns = now;
        }
        if credit >= ns_per_token {
            self.credit_ns = credit - ns_per_token;
            true
        } else {
            self.credit_ns = credit;
            false
        }
    }
}

/// The bucket parameters for `rate` datagrams a second and bursts of `burst`: nanoseconds
/// per token and depth in nanoseconds. A rate of 0 is taken as 1.
pub const fn bucket_params(rate: u32, burst: u32) -> (u64, u64) {
    let rate = if rate == 0 { 1 } else { rate as u64 };
    let ns_per_token = 1_000_000_000 / rate;
    let burst = if burst == 0 { 1 } else { burst as u64 };
    (ns_per_token, ns_per_token * burst)
}

/// The bucket an IPv4 source is charged under: its IPv4-mapped IPv6 address.
pub const fn bucket_key_v4(src: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, src[0], src[1], src[2], src[3],
    ]
}

/// The bucket an IPv6 source is charged under: its /64 (one subscriber usually holds a
/// whole /64, so counting single addresses would give it 2^64 buckets).
pub const fn bucket_key_v6(src: [u8; 16]) -> [u8; 16] {
    [
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7], 0, 0, 0, 0, 0, 0, 0, 0,
    ]
}

/// Default UDP port of PhantomBand relay links.
pub const DEFAULT_PORT: u16 = 47_470;

/// Default UDP payload size of every PhantomBand packet: the largest UDP payload that fits a
/// 1500-byte MTU over IPv6 without fragmentation (1500 − 40 IPv6 − 8 UDP).
pub const DEFAULT_PACKET_LEN: u16 = 1452;

/// The per-CPU counters the XDP program keeps, by index into [`STATS_MAP_NAME`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum Counter {
    /// PhantomBand datagrams of the right size redirected to an AF_XDP socket.
    Redirected = 0,
    /// PhantomBand datagrams whose UDP payload is not exactly the packet length: dropped.
    DropWrongSize = 1,
    /// PhantomBand datagrams whose UDP length claims more bytes than the frame holds: dropped.
    DropTruncated = 2,
    /// Right-size datagrams on a receive queue with no AF_XDP socket registered: dropped.
    DropNoSocket = 3,
    /// Right-size datagrams from a source that is not one of the relay's links, under
    /// [`StrangerPolicy::Drop`] (mixes, exits): dropped before user space sees them.
    DropStranger = 4,
    /// Right-size datagrams from a source that is not one of the relay's links, over that
    /// source's token bucket, under [`StrangerPolicy::Limit`] (gateways): dropped.
    DropSourceRate = 5,
    /// Datagrams to the gateway's client-link port over their source's token bucket: dropped.
    DropClientLinkRate = 6,
    /// Datagrams to the gateway's client-link port within their source's bucket: passed to
    /// the kernel (and the client link's socket).
    ClientLinkPassed = 7,
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 8] = [
        Counter::Redirected,
        Counter::DropWrongSize,
        Counter::DropTruncated,
        Counter::DropNoSocket,
        Counter::DropStranger,
        Counter::DropSourceRate,
        Counter::DropClientLinkRate,
        Counter::ClientLinkPassed,
    ];
    /// Number of counters (entries in the stats map).
    pub const COUNT: u32 = Self::ALL.len() as u32;

    /// Index of this counter in the stats map.
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// Stable snake_case name, used in metrics and tables.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Redirected => "redirected",
            Counter::DropWrongSize => "drop_wrong_size",
            Counter::DropTruncated => "drop_truncated",
            Counter::DropNoSocket => "drop_no_socket",
            Counter::DropStranger => "drop_stranger",
            Counter::DropSourceRate => "drop_source_rate",
            Counter::DropClientLinkRate => "drop_client_link_rate",
            Counter::ClientLinkPassed => "client_link_passed",
        }
    }
}

/// EtherType of IPv4.
pub const ETH_P_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86DD;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Ethernet II header. All fields are byte arrays so the struct has alignment 1 and can be
/// read at any offset.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable,
        zerocopy::Unaligned
    )
)]
pub struct EthHdr {
    /// Destination MAC address.
    pub dst: [u8; 6],
    /// Source MAC address.
    pub src: [u8; 6],
    /// EtherType, big endian.
    pub ether_type: [u8; 2],
}

impl EthHdr {
    /// Size on the wire.
    pub const LEN: usize = 14;
    /// EtherType in host order.
    pub const fn ether_type(&self) -> u16 {
        u16::from_be_bytes(self.ether_type)
    }
}

/// IPv4 header without options.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable,
        zerocopy::Unaligned
    )
)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in 32-bit words (low nibble).
    pub version_ihl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Total length of header and payload, big endian.
    pub total_len: [u8; 2],
    /// Identification, big endian.
    pub id: [u8; 2],
    /// Flags (3 bits) and fragment offset (13 bits), big endian.
    pub frag_off: [u8; 2],
    /// Time to live.
    pub ttl: u8,
    /// Payload protocol.
    pub protocol: u8,
    /// Header checksum, big endian.
    pub checksum: [u8; 2],
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    /// Size of the header without options.
    pub const LEN: usize = 20;
    /// "More fragments" flag within `frag_off`.
    pub const MORE_FRAGMENTS: u16 = 0x2000;
    /// Fragment offset mask within `frag_off`.
    pub const OFFSET_MASK: u16 = 0x1fff;

    /// IP version field (4 for a valid header).
    pub const fn version(&self) -> u8 {
        self.version_ihl >> 4
    }
    /// Header length in bytes, options included.
    pub const fn header_len(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }
    /// Whether this datagram is a fragment (first, middle or last).
    pub const fn is_fragment(&self) -> bool {
        let f = u16::from_be_bytes(self.frag_off);
        f & (Self::MORE_FRAGMENTS | Self::OFFSET_MASK) != 0
    }
}

/// IPv6 fixed header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable,
        zerocopy::Unaligned
    )
)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8 bits), flow label (20 bits), big endian.
    pub version_tc_flow: [u8; 4],
    /// Length of everything after this fixed header, big endian.
    pub payload_len: [u8; 2],
    /// Next header (17 for UDP with no extension headers).
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    /// Size on the wire.
    pub const LEN: usize = 40;
    /// IP version field (6 for a valid header).
    pub const fn version(&self) -> u8 {
        self.version_tc_flow[0] >> 4
    }
}

/// UDP header.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "user",
    derive(
        zerocopy::FromBytes,
        zerocopy::IntoBytes,
        zerocopy::KnownLayout,
        zerocopy::Immutable,
        zerocopy::Unaligned
    )
)]
pub struct UdpHdr {
    /// Source port, big endian.
    pub src_port: [u8; 2],
    /// Destination port, big endian.
    pub dst_port: [u8; 2],
    /// Length of header and payload, big endian.
    pub len: [u8; 2],
    /// Checksum, big endian (may be unfinished on veth: do not reject for it).
    pub checksum: [u8; 2],
}

impl UdpHdr {
    /// Size on the wire.
    pub const LEN: usize = 8;
    /// Destination port in host order.
    pub const fn dst_port(&self) -> u16 {
        u16::from_be_bytes(self.dst_port)
    }
    /// Source port in host order.
    pub const fn src_port(&self) -> u16 {
        u16::from_be_bytes(self.src_port)
    }
    /// The UDP length field (header plus payload) in host order.
    pub const fn length(&self) -> u16 {
        u16::from_be_bytes(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_sizes_match_the_wire() {
        assert_eq!(core::mem::size_of::<EthHdr>(), EthHdr::LEN);
        assert_eq!(core::mem::size_of::<Ipv4Hdr>(), Ipv4Hdr::LEN);
        assert_eq!(core::mem::size_of::<Ipv6Hdr>(), Ipv6Hdr::LEN);
        assert_eq!(core::mem::size_of::<UdpHdr>(), UdpHdr::LEN);
        assert_eq!(core::mem::align_of::<Ipv6Hdr>(), 1);
    }

    #[test]
    fn counters_are_dense_and_named_uniquely() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i);
            for other in &Counter::ALL[i + 1..] {
                assert_ne!(c.name(), other.name());
            }
        }
    }

    #[test]
    fn a_bucket_passes_its_burst_then_its_rate() {
        // 10 a second, bursts of 4.
        let (per, depth) = bucket_params(10, 4);
        assert_eq!((per, depth), (100_000_000, 400_000_000));
        let mut b = Bucket::first(1_000, per, depth);
        let mut passed = 1;
        for _ in 0..10 {
            passed += u32::from(b.take(1_000, per, depth));
        }
        assert_eq!(passed, 4, "the burst, and no more at the same instant");
        // Half a second later: five more tokens, but at most the depth.
        let mut later = 0;
        for _ in 0..10 {
            later += u32::from(b.take(500_001_000, per, depth));
        }
        assert_eq!(later, 4);
        // A clock going backwards refills nothing and does not wrap.
        assert!(!b.take(0, per, depth));
        // A long idle time fills it to the depth only.
        let mut idle = 0;
        for _ in 0..10 {
            idle += u32::from(b.take(u64::MAX, per, depth));
        }
        assert_eq!(idle, 4);
    }

    #[test]
    fn a_bucket_never_panics_on_extreme_parameters() {
        for (rate, burst) in [(0, 0), (u32::MAX, u32::MAX), (1, u32::MAX), (u32::MAX, 1)] {
            let (per, depth) = bucket_params(rate, burst);
            let mut b = Bucket::first(u64::MAX, per, depth);
            let _ = b.take(0, per, depth);
            let _ = b.take(u64::MAX, per, depth);
        }
    }

    #[test]
    fn bucket_keys_map_v4_and_group_v6_by_64() {
        assert_eq!(
            bucket_key_v4([10, 0, 0, 1]),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]
        );
        let a = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8];
        let mut b = a;
        b[15] = 9;
        assert_eq!(bucket_key_v6(a), bucket_key_v6(b));
        b[7] = 2;
        assert_ne!(bucket_key_v6(a), bucket_key_v6(b));
    }

    #[test]
    fn unknown_policies_fail_closed() {
        for p in [
            StrangerPolicy::Pass,
            StrangerPolicy::Drop,
            StrangerPolicy::Limit,
        ] {
            assert_eq!(StrangerPolicy::from_u32(p.as_u32()), p);
        }
        assert_eq!(StrangerPolicy::from_u32(7), StrangerPolicy::Drop);
    }

    #[test]
    fn default_packet_fits_ipv6_mtu_1500() {
        assert_eq!(
            usize::from(DEFAULT_PACKET_LEN) + Ipv6Hdr::LEN + UdpHdr::LEN,
            1500
        );
    }

    #[test]
    fn ipv4_fragment_detection() {
        let mut h = Ipv4Hdr {
            version_ihl: 0x45,
            tos: 0,
            total_len: [0; 2],
            id: [0; 2],
            frag_off: [0x40, 0], // don't fragment
            ttl: 64,
            protocol: IPPROTO_UDP,
            checksum: [0; 2],
            src: [0; 4],
            dst: [0; 4],
        };
        assert!(!h.is_fragment());
        h.frag_off = [0x20, 0];
        assert!(h.is_fragment());
        h.frag_off = [0x00, 0x10];
        assert!(h.is_fragment());
        assert_eq!(h.header_len(), 20);
        assert_eq!(h.version(), 4);
    }
}
