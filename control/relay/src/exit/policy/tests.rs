#![expect(clippy::unwrap_used, reason = "tests")]

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn at(text: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(text), port)
}

/// The first and the last address of every block the policy refuses, written out here
/// rather than computed from the policy's tables, so that a block missing from a table (or
/// a wrong prefix length) fails.
const SPECIAL: &[(&str, &str, &str)] = &[
    ("0.0.0.0", "0.255.255.255", "this network"),
    ("10.0.0.0", "10.255.255.255", "private-use"),
    ("100.64.0.0", "100.127.255.255", "shared address space"),
    ("127.0.0.0", "127.255.255.255", "loopback"),
    ("169.254.0.0", "169.254.255.255", "link local"),
    ("172.16.0.0", "172.31.255.255", "private-use"),
    ("192.0.0.0", "192.0.0.255", "IETF protocol assignments"),
    ("192.0.0.0", "192.0.0.7", "IPv4 service continuity"),
    ("192.0.0.8", "192.0.0.8", "IPv4 dummy address"),
    ("192.0.0.9", "192.0.0.9", "PCP anycast"),
    ("192.0.0.10", "192.0.0.10", "TURN anycast"),
    ("192.0.0.170", "192.0.0.171", "NAT64/DNS64 discovery"),
    ("192.0.2.0", "192.0.2.255", "TEST-NET-1"),
    ("192.31.196.0", "192.31.196.255", "AS112-v4"),
    ("192.52.193.0", "192.52.193.255", "AMT"),
    ("192.88.99.0", "192.88.99.255", "6to4 relay anycast"),
    ("192.88.99.2", "192.88.99.2", "6a44 relay anycast"),
    ("192.168.0.0", "192.168.255.255", "private-use"),
    ("192.175.48.0", "192.175.48.255", "AS112 direct delegation"),
    ("198.18.0.0", "198.19.255.255", "benchmarking"),
    ("198.51.100.0", "198.51.100.255", "TEST-NET-2"),
    ("203.0.113.0", "203.0.113.255", "TEST-NET-3"),
    ("224.0.0.0", "239.255.255.255", "multicast"),
    ("240.0.0.0", "255.255.255.254", "reserved"),
    ("255.255.255.255", "255.255.255.255", "limited broadcast"),
    ("::", "::", "unspecified"),
    ("::1", "::1", "loopback"),
    ("::", "::ffff:ffff", "IPv4-compatible"),
    (
        "64:ff9b:1::",
        "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
        "NAT64 local use",
    ),
    ("100::", "100::ffff:ffff:ffff:ffff", "discard-only"),
    (
        "100:0:0:1::",
        "100:0:0:1:ffff:ffff:ffff:ffff",
        "dummy prefix",
    ),
    (
        "2001::",
        "2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff",
        "IETF protocol assignments",
    ),
    ("2001::", "2001:0:ffff:ffff:ffff:ffff:ffff:ffff", "Teredo"),
    ("2001:1::1", "2001:1::3", "PCP, TURN and DNS-SD SRP anycast"),
    (
        "2001:2::",
        "2001:2:0:ffff:ffff:ffff:ffff:ffff",
        "benchmarking",
    ),
    ("2001:3::", "2001:3:ffff:ffff:ffff:ffff:ffff:ffff", "AMT"),
    (
        "2001:4:112::",
        "2001:4:112:ffff:ffff:ffff:ffff:ffff",
        "AS112-v6",
    ),
    (
        "2001:10::",
        "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff",
        "ORCHID",
    ),
    (
        "2001:20::",
        "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff",
        "ORCHIDv2",
    ),
    (
        "2001:30::",
        "2001:3f:ffff:ffff:ffff:ffff:ffff:ffff",
        "drone remote ID",
    ),
    (
        "2001:db8::",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "documentation",
    ),
    ("2002::", "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "6to4"),
    (
        "2620:4f:8000::",
        "2620:4f:8000:ffff:ffff:ffff:ffff:ffff",
        "AS112 direct delegation",
    ),
    (
        "3fff::",
        "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
        "documentation",
    ),
    (
        "5f00::",
        "5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "SRv6 SIDs",
    ),
    (
        "fc00::",
        "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "unique-local",
    ),
    (
        "fe80::",
        "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "link-local",
    ),
    (
        "fec0::",
        "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "site-local",
    ),
    (
        "ff00::",
        "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "multicast",
    ),
    (
        "::2:0:0",
        "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "below global unicast",
    ),
    (
        "4000::",
        "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        "above global unicast",
    ),
];

/// Addresses just outside special blocks, and sites on the Internet: open on the Web's
/// ports.
const PUBLIC: &[&str] = &[
    "93.184.216.34",
    "1.1.1.1",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.0",
    "192.88.98.255",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:2800:220:1::1",
    "2001:200::1",
    "2001:db7:ffff::1",
    "2001:db9::1",
    "2003::1",
    "2620:4f:7fff::1",
    "3ffe::1",
    "3fff:1000::1",
];

#[test]
fn every_special_block_is_refused_at_its_first_and_last_address() {
    let policy = ExitPolicy::default();
    for (first, last, name) in SPECIAL {
        for text in [first, last] {
            assert!(!policy.allows_ip(ip(text)), "{name}: {text}");
            assert!(!policy.allows(at(text, 443)), "{name}: {text}");
        }
    }
}

#[test]
fn public_addresses_are_open_on_the_web_ports() {
    let policy = ExitPolicy::default();
    for text in PUBLIC {
        for port in [80, 443] {
            assert!(policy.allows(at(text, port)), "{text} port {port}");
        }
    }
}

/// IPv4-mapped addresses and NAT64's well-known prefix are judged as the IPv4 address they
/// carry; the other forms that carry one are refused whatever it is.
#[test]
fn ipv6_forms_that_carry_ipv4_cannot_reach_what_ipv4_cannot() {
    let policy = ExitPolicy::default();
    for text in [
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "64:ff9b::127.0.0.1",
        "64:ff9b::10.0.0.1",
        "64:ff9b::192.168.1.1",
        "64:ff9b::100.64.0.1",
        // Public IPv4 in the forms refused whole.
        "64:ff9b:1::5db8:d822",
        "64:ff9b:1:5db8:d822::",
        "2002:5db8:d822::1",
        "2002:0a00:0001::1",
        "2001:0:5db8:d822::1",
        "::93.184.216.34",
        "::10.0.0.1",
        // IPv4-translated (SIIT, RFC 2765), outside global unicast.
        "::ffff:0:93.184.216.34",
    ] {
        assert!(!policy.allows(at(text, 443)), "{text}");
    }
    for text in ["::ffff:93.184.216.34", "64:ff9b::93.184.216.34"] {
        assert!(policy.allows(at(text, 443)), "{text}");
    }
}

#[test]
fn the_hosts_own_addresses_are_refused_in_every_form() {
    let mut policy = ExitPolicy::default();
    policy.set_own(vec![ip("93.184.216.34"), ip("2606:2800:220:1::1")]);
    for text in [
        "93.184.216.34",
        "2606:2800:220:1::1",
        "::ffff:93.184.216.34",
        "64:ff9b::93.184.216.34",
    ] {
        assert!(!policy.allows(at(text, 443)), "{text}");
    }
    // Their neighbours are not the host.
    for text in ["93.184.216.35", "2606:2800:220:1::2"] {
        assert!(policy.allows(at(text, 443)), "{text}");
    }
    // A new list replaces the old one.
    policy.set_own(vec![ip("93.184.216.35")]);
    assert!(policy.allows(at("93.184.216.34", 443)));
    assert!(!policy.allows(at("93.184.216.35", 443)));
}

#[test]
fn the_default_ports_are_refused_and_others_open() {
    let policy = ExitPolicy::default();
    for port in [25, 135, 136, 137, 138, 139, 445] {
        assert!(!policy.allows_port(port), "{port}");
        assert!(!policy.allows(at("93.184.216.34", port)), "{port}");
        assert!(!policy.allows(at("2606:2800:220:1::1", port)), "{port}");
    }
    for port in [
        1, 22, 24, 26, 53, 80, 134, 140, 443, 444, 446, 465, 587, 993, 65535,
    ] {
        assert!(policy.allows(at("93.184.216.34", port)), "{port}");
    }
}

#[test]
fn a_configured_port_list_replaces_the_default() {
    let ports = vec![
        PortRange::new(119, 119).unwrap(),
        PortRange::new(6881, 6999).unwrap(),
    ];
    let policy = ExitPolicy::new(Vec::new(), Some(ports));
    for port in [119, 6881, 6900, 6999] {
        assert!(!policy.allows(at("93.184.216.34", port)), "{port}");
    }
    for port in [25, 118, 120, 445, 6880, 7000] {
        assert!(policy.allows(at("93.184.216.34", port)), "{port}");
    }
    let none = ExitPolicy::new(Vec::new(), Some(Vec::new()));
    assert!(none.allows(at("93.184.216.34", 25)));
    // Ports do not open addresses.
    assert!(!none.allows(at("10.0.0.1", 80)));
}

/// `exit_allow` opens special networks (a testbed's), but not the ports refused, and not
/// the host's own address unless it names that address alone.
#[test]
fn exit_allow_opens_special_networks_but_not_the_host_itself() {
    let testbed = (ip("198.18.0.0"), 24);
    let mut policy = ExitPolicy::new(vec![testbed, (ip("fd00::"), 8)], None);
    policy.set_own(vec![ip("198.18.0.4"), ip("127.0.0.1"), ip("fd00::4")]);
    for text in [
        "198.18.0.0",
        "198.18.0.9",
        "198.18.0.255",
        "::ffff:198.18.0.9",
        "fd00::9",
    ] {
        assert!(policy.allows(at(text, 80)), "{text}");
    }
    for text in [
        "198.18.1.0",
        "198.19.255.255",
        "127.0.0.1",
        "::ffff:127.0.0.1",
        "198.18.0.4",
        "::ffff:198.18.0.4",
        "64:ff9b::198.18.0.4",
        "fd00::4",
        "fe80::1",
    ] {
        assert!(!policy.allows(at(text, 80)), "{text}");
    }
    assert!(!policy.allows(at("198.18.0.9", 25)));

    // Named alone, the host's address opens.
    let mut alone = ExitPolicy::new(vec![testbed, (ip("198.18.0.4"), 32)], None);
    alone.set_own(vec![ip("198.18.0.4"), ip("127.0.0.1")]);
    assert!(alone.allows(at("198.18.0.4", 80)));
    assert!(!alone.allows(at("127.0.0.1", 80)));
}

#[test]
fn port_ranges_are_never_empty_and_print_as_configured() {
    assert_eq!(PortRange::new(0, 25), None);
    assert_eq!(PortRange::new(139, 135), None);
    let r = PortRange::new(135, 139).unwrap();
    assert_eq!((r.first(), r.last()), (135, 139));
    assert!(r.contains(135) && r.contains(139) && !r.contains(134) && !r.contains(140));
    assert_eq!(r.to_string(), "135-139");
    assert_eq!(PortRange::new(25, 25).unwrap().to_string(), "25");
    for range in DEFAULT_REFUSED_PORTS {
        assert_eq!(PortRange::new(range.first(), range.last()), Some(range));
    }
}
