//! Types shared by the PhantomBand XDP program (`ebpf/pb-xdp`) and its user-space loader
//! (`pb-io`).
//!
//! What lives here: the names of the program, its maps and its configuration globals, the
//! indices of its per-CPU counters, the default PhantomBand UDP port and datagram size, and
//! the on-the-wire header layouts (Ethernet, IPv4, IPv6, UDP) both sides read.
//!
//! What does not: any logic. The crate is `no_std` and builds for `bpfel-unknown-none` as
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

/// Number of entries in the XSKMAP: the most receive queues one interface can steer.
pub const MAX_QUEUES: u32 = 64;

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
}

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; 4] = [
        Counter::Redirected,
        Counter::DropWrongSize,
        Counter::DropTruncated,
        Counter::DropNoSocket,
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
