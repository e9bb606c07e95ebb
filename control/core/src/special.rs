//! Special-purpose addresses: the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! (RFC 6890 and its updates), multicast, the deprecated IPv6 forms and all of IPv6 outside
//! global unicast. An exit refuses to connect to them (its policy), and a relay whose
//! descriptor names one is refused (`special_address`) unless the network file allows its
//! prefix (a testbed's own range): gossip must not be steered at loopback, private or
//! link-local services.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The IANA IPv4 Special-Purpose Address Registry, every entry (entries inside another one
/// are listed too, so that the table reads like the registry), then multicast, which has a
/// registry of its own. Blocks the registry calls globally reachable are refused too: they
/// are anycast and AS112 infrastructure that nobody needs to reach through a mixnet, and
/// the anycast ones (PCP, TURN) answer from the exit's own network.
pub const SPECIAL_V4: [(Ipv4Addr, u8); 27] = [
    // "This network" (RFC 791)
    (Ipv4Addr::new(0, 0, 0, 0), 8),
    // "This host on this network" (RFC 1122): Linux connects it to this host
    (Ipv4Addr::new(0, 0, 0, 0), 32),
    // Private-Use (RFC 1918)
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    // Shared Address Space, behind carrier-grade NAT (RFC 6598)
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    // Loopback (RFC 1122)
    (Ipv4Addr::new(127, 0, 0, 0), 8),
    // Link Local (RFC 3927), where cloud metadata services live (169.254.169.254)
    (Ipv4Addr::new(169, 254, 0, 0), 16),
    // Private-Use (RFC 1918)
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    // IETF Protocol Assignments (RFC 6890)
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    // IPv4 Service Continuity Prefix, DS-Lite (RFC 7335)
    (Ipv4Addr::new(192, 0, 0, 0), 29),
    // IPv4 dummy address (RFC 7600)
    (Ipv4Addr::new(192, 0, 0, 8), 32),
    // Port Control Protocol Anycast (RFC 7723)
    (Ipv4Addr::new(192, 0, 0, 9), 32),
    // Traversal Using Relays around NAT Anycast (RFC 8155)
    (Ipv4Addr::new(192, 0, 0, 10), 32),
    // NAT64/DNS64 Discovery (RFC 8880)
    (Ipv4Addr::new(192, 0, 0, 170), 32),
    // NAT64/DNS64 Discovery (RFC 8880)
    (Ipv4Addr::new(192, 0, 0, 171), 32),
    // Documentation, TEST-NET-1 (RFC 5737)
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    // AS112-v4 (RFC 7535)
    (Ipv4Addr::new(192, 31, 196, 0), 24),
    // Automatic Multicast Tunneling (RFC 7450)
    (Ipv4Addr::new(192, 52, 193, 0), 24),
    // Deprecated 6to4 Relay Anycast (RFC 7526)
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    // 6a44-relay anycast address (RFC 6751)
    (Ipv4Addr::new(192, 88, 99, 2), 32),
    // Private-Use (RFC 1918)
    (Ipv4Addr::new(192, 168, 0, 0), 16),
    // Direct Delegation AS112 Service (RFC 7534)
    (Ipv4Addr::new(192, 175, 48, 0), 24),
    // Benchmarking (RFC 2544)
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    // Documentation, TEST-NET-2 (RFC 5737)
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    // Documentation, TEST-NET-3 (RFC 5737)
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    // Reserved, the former class E (RFC 1112)
    (Ipv4Addr::new(240, 0, 0, 0), 4),
    // Limited Broadcast (RFC 919, RFC 8190)
    (Ipv4Addr::new(255, 255, 255, 255), 32),
    // Multicast (RFC 5771; the IPv4 Multicast Address Space Registry)
    (Ipv4Addr::new(224, 0, 0, 0), 4),
];

/// The IANA IPv6 Special-Purpose Address Registry, every entry (entries inside another one
/// are listed too), then the deprecated forms and multicast, which are not in it. Globally
/// reachable entries are refused too, as in [`SPECIAL_V4`].
pub const SPECIAL_V6: [(Ipv6Addr, u8); 28] = [
    // Loopback Address (RFC 4291)
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 1), 128),
    // Unspecified Address (RFC 4291): Linux connects it to this host
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 128),
    // IPv4-mapped Address (RFC 4291); judged as its IPv4 address before this table
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96),
    // IPv4-IPv6 Translation, NAT64's well-known prefix (RFC 6052); judged as its IPv4
    // address before this table
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96),
    // IPv4-IPv6 Translation, local use (RFC 8215): refused whole, see `embedded_v4`
    (Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48),
    // Discard-Only Address Block (RFC 6666)
    (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64),
    // Dummy IPv6 Prefix (RFC 9780)
    (Ipv6Addr::new(0x100, 0, 0, 1, 0, 0, 0, 0), 64),
    // IETF Protocol Assignments (RFC 2928)
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    // TEREDO (RFC 4380, RFC 8190): refused whole, see `embedded_v4`
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),
    // Port Control Protocol Anycast (RFC 7723)
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 1), 128),
    // Traversal Using Relays around NAT Anycast (RFC 8155)
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 2), 128),
    // DNS-SD Service Registration Protocol Anycast (RFC 9665)
    (Ipv6Addr::new(0x2001, 1, 0, 0, 0, 0, 0, 3), 128),
    // Benchmarking (RFC 5180)
    (Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0), 48),
    // Automatic Multicast Tunneling (RFC 7450)
    (Ipv6Addr::new(0x2001, 3, 0, 0, 0, 0, 0, 0), 32),
    // AS112-v6 (RFC 7535)
    (Ipv6Addr::new(0x2001, 4, 0x112, 0, 0, 0, 0, 0), 48),
    // Deprecated, previously ORCHID (RFC 4843)
    (Ipv6Addr::new(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28),
    // ORCHIDv2 (RFC 7343)
    (Ipv6Addr::new(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28),
    // Drone Remote ID Protocol Entity Tags (RFC 9374)
    (Ipv6Addr::new(0x2001, 0x30, 0, 0, 0, 0, 0, 0), 28),
    // Documentation (RFC 3849)
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32),
    // 6to4 (RFC 3056): refused whole, see `embedded_v4`
    (Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16),
    // Direct Delegation AS112 Service (RFC 7534)
    (Ipv6Addr::new(0x2620, 0x4f, 0x8000, 0, 0, 0, 0, 0), 48),
    // Documentation (RFC 9637)
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),
    // Segment Routing (SRv6) SIDs (RFC 9602)
    (Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16),
    // Unique-Local (RFC 4193)
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
    // Link-Local Unicast (RFC 4291)
    (Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
    // IPv4-compatible, deprecated (RFC 4291 section 2.5.5.1): refused whole, see
    // `embedded_v4`
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0), 96),
    // Site-local, deprecated (RFC 3879)
    (Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),
    // Multicast (RFC 4291)
    (Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),
];

/// Global unicast (RFC 4291), the only IPv6 space IANA allocates from (the IPv6 Address
/// Space registry): the rest is reserved by the IETF or is one of the blocks above, so an
/// address outside it is refused even if no registry entry names it.
const GLOBAL_UNICAST_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3);

/// NAT64's well-known prefix (RFC 6052).
const NAT64_WELL_KNOWN: (Ipv6Addr, u8) = (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);

fn in_v4(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, (net, prefix): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

/// Whether `ip` is in the network `net` (of the same family).
pub fn in_net(ip: IpAddr, net: (IpAddr, u8)) -> bool {
    match (ip, net.0) {
        (IpAddr::V4(a), IpAddr::V4(n)) => in_v4(a, (n, net.1)),
        (IpAddr::V6(a), IpAddr::V6(n)) => in_v6(a, (n, net.1)),
        _ => false,
    }
}

/// The IPv4 address an IPv6 destination stands for, where it can be read and is what the
/// connection reaches; the policy then judges that IPv4 address instead:
///
/// - IPv4-mapped (`::ffff:0:0/96`): the kernel connects to the IPv4 address itself.
/// - NAT64's well-known prefix (`64:ff9b::/96`, RFC 6052): a translator connects to the IPv4
///   address in the last 32 bits. Judging it keeps an IPv6-only exit behind DNS64 able to
///   reach IPv4 sites, while a private or own IPv4 address is refused as it would be bare
///   (RFC 6052 forbids the prefix for non-global IPv4, but a translator need not check).
///
/// The other forms that carry an IPv4 address are refused whole by [`special`]:
///
/// - NAT64's local-use prefix (`64:ff9b:1::/48`, RFC 8215): the operator picks the prefix
///   length inside it (/48 to /96), so where the IPv4 address sits cannot be known here.
/// - 6to4 (`2002::/16`): deprecated (RFC 7526), and a host with a 6to4 tunnel sends the
///   packet to the IPv4 address in bits 16 to 48, which may be private.
/// - Teredo (`2001::/32`): the client's IPv4 address is obfuscated and sits behind a NAT the
///   exit cannot see; the relays are mostly gone.
/// - IPv4-compatible (`::/96`): deprecated (RFC 4291), and a tunnel interface may still
///   carry it to the IPv4 address.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if in_v6(ip, NAT64_WELL_KNOWN) {
        let [.., a, b, c, d] = ip.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// Whether `ip` is special-purpose (see [`SPECIAL_V4`], [`SPECIAL_V6`] and
/// [`GLOBAL_UNICAST_V6`]). An IPv6 address is judged as itself: [`embedded_v4`] is the
/// caller's.
pub fn special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => SPECIAL_V4.iter().any(|net| in_v4(v4, *net)),
        IpAddr::V6(v6) => {
            !in_v6(v6, GLOBAL_UNICAST_V6) || SPECIAL_V6.iter().any(|net| in_v6(v6, *net))
        }
    }
}

/// Whether a relay may name `ip` in its descriptor: not special-purpose (an IPv6 address that
/// carries an IPv4 address judged as that address, as [`embedded_v4`] says), unless one of
/// the networks `allowed` (a testbed's own, from the network file) holds it.
pub fn relay_may_use(ip: IpAddr, allowed: &[(IpAddr, u8)]) -> bool {
    if allowed.iter().any(|net| in_net(ip, *net)) {
        return true;
    }
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = embedded_v4(v6)
    {
        return relay_may_use(IpAddr::V4(v4), allowed);
    }
    !special(ip)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn relays_may_use_public_addresses_and_allowed_testbeds_only() {
        let testbed: (IpAddr, u8) = ("198.18.0.0".parse().unwrap(), 24);
        for public in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "::ffff:93.184.216.34",
        ] {
            assert!(relay_may_use(public.parse().unwrap(), &[]), "{public}");
        }
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a01:203",
            "2002:a01:203::1",
            "198.18.0.5",
        ] {
            assert!(!relay_may_use(refused.parse().unwrap(), &[]), "{refused}");
        }
        assert!(relay_may_use("198.18.0.5".parse().unwrap(), &[testbed]));
        assert!(!relay_may_use("198.18.1.5".parse().unwrap(), &[testbed]));
        assert!(!relay_may_use("127.0.0.1".parse().unwrap(), &[testbed]));
    }
}
