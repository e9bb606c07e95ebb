//! veth pairs between two namespaces, and the two-node testbed built from one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::{Netns, TestbedError};

/// Linux interface names are at most 15 bytes (`IFNAMSIZ` - 1).
const MAX_IFNAME_LEN: usize = 15;
/// How long [`wait_link_up`] waits for carrier.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(5);
const LINK_UP_POLL: Duration = Duration::from_millis(20);

static NEXT_PAIR: AtomicU32 = AtomicU32::new(0);

/// Addresses for the two ends of a veth pair made by [`veth_pair`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairSpec {
    /// IPv4 address of the end in namespace `a`.
    pub a_v4: Ipv4Addr,
    /// IPv4 address of the end in namespace `b`.
    pub b_v4: Ipv4Addr,
    /// IPv4 prefix length for both ends (e.g. 24).
    pub prefix_v4: u8,
    /// Optional IPv6 address of the end in `a`, added with `nodad` (usable at once).
    pub a_v6: Option<Ipv6Addr>,
    /// Optional IPv6 address of the end in `b`, added with `nodad`.
    pub b_v6: Option<Ipv6Addr>,
    /// IPv6 prefix length for both ends (e.g. 64).
    pub prefix_v6: u8,
}

impl PairSpec {
    /// The addresses [`two_node`] uses: `198.18.0.1/24`, `198.18.0.2/24` (RFC 2544
    /// benchmarking range) and `fd70:6862::1/64`, `fd70:6862::2/64` (ULA). They exist only
    /// inside the testbed's own namespaces, so every testbed can reuse them.
    pub const TWO_NODE: PairSpec = PairSpec {
        a_v4: Ipv4Addr::new(198, 18, 0, 1),
        b_v4: Ipv4Addr::new(198, 18, 0, 2),
        prefix_v4: 24,
        a_v6: Some(Ipv6Addr::new(0xfd70, 0x6862, 0, 0, 0, 0, 0, 1)),
        b_v6: Some(Ipv6Addr::new(0xfd70, 0x6862, 0, 0, 0, 0, 0, 2)),
        prefix_v6: 64,
    };

    fn check(&self) -> Result<(), TestbedError> {
        let reason = if self.prefix_v4 > 32 {
            format!("IPv4 prefix /{} is longer than 32", self.prefix_v4)
        } else if self.prefix_v6 > 128 {
            format!("IPv6 prefix /{} is longer than 128", self.prefix_v6)
        } else if self.a_v4 == self.b_v4 {
            format!("both ends have IPv4 address {}", self.a_v4)
        } else if self.a_v6.is_some() && self.a_v6 == self.b_v6 {
            "both ends have the same IPv6 address".to_owned()
        } else {
            return Ok(());
        };
        Err(TestbedError::InvalidSpec { reason })
    }
}

/// One veth pair as built by [`veth_pair`]: end `a` in one namespace, end `b` in another.
///
/// This is a plain description; there is nothing to clean up. The kernel deletes both
/// ends when either namespace goes away (see [`Netns`] for when that is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface name of the end in namespace `a` (at most 15 bytes).
    pub a_if: String,
    /// Interface name of the end in namespace `b`.
    pub b_if: String,
    /// IPv4 address of `a_if`.
    pub a_v4: Ipv4Addr,
    /// IPv4 address of `b_if`.
    pub b_v4: Ipv4Addr,
    /// IPv6 address of `a_if`, if one was configured.
    pub a_v6: Option<Ipv6Addr>,
    /// IPv6 address of `b_if`, if one was configured.
    pub b_v6: Option<Ipv6Addr>,
    /// MAC address of `a_if`.
    pub a_mac: [u8; 6],
    /// MAC address of `b_if`.
    pub b_mac: [u8; 6],
}

/// Creates a veth pair with one end in `a` and the other in `b`, assigns the addresses in
/// `spec`, brings both ends up and waits until both report carrier.
///
/// The pair is created directly inside the namespaces (`ip -n A link add .. peer name ..
/// netns B`), so it never appears in the caller's namespace. Interface names are
/// `pb<pid % 100000>a<n>` and `pb<pid % 100000>b<n>` with a per-process counter `n`.
/// If a later step fails the pair is deleted again (best effort).
///
/// # Errors
///
/// [`TestbedError::InvalidSpec`] for an unusable `spec` or `a` and `b` being the same
/// namespace; [`TestbedError::Command`] if an `ip` step fails; [`TestbedError::Timeout`]
/// if carrier does not come up within 5 s.
pub fn veth_pair(a: &Netns, b: &Netns, spec: &PairSpec) -> Result<Link, TestbedError> {
    spec.check()?;
    if a.name() == b.name() {
        return Err(TestbedError::InvalidSpec {
            reason: format!("both ends are in namespace {}", a.name()),
        });
    }
    let (a_if, b_if) = interface_names(
        std::process::id(),
        NEXT_PAIR.fetch_add(1, Ordering::Relaxed),
    );
    a.run(&[
        "link",
        "add",
        &a_if,
        "type",
        "veth",
        "peer",
        "name",
        &b_if,
        "netns",
        b.name(),
    ])?;
    configure_pair(a, b, spec, a_if.clone(), b_if).inspect_err(|_| {
        // Deleting one end deletes both; the error being returned matters more than this.
        let _ = a.run(&["link", "del", &a_if]);
    })
}

fn configure_pair(
    a: &Netns,
    b: &Netns,
    spec: &PairSpec,
    a_if: String,
    b_if: String,
) -> Result<Link, TestbedError> {
    for (ns, ifname, v4, v6) in [
        (a, &a_if, spec.a_v4, spec.a_v6),
        (b, &b_if, spec.b_v4, spec.b_v6),
    ] {
        let v4 = format!("{v4}/{}", spec.prefix_v4);
        ns.run(&["addr", "add", &v4, "dev", ifname])?;
        if let Some(v6) = v6 {
            let v6 = format!("{v6}/{}", spec.prefix_v6);
            ns.run(&["-6", "addr", "add", &v6, "dev", ifname, "nodad"])?;
        }
        ns.run(&["link", "set", "dev", ifname, "up"])?;
    }
    wait_link_up(a, &a_if)?;
    wait_link_up(b, &b_if)?;
    Ok(Link {
        a_mac: interface_mac(a, &a_if)?,
        b_mac: interface_mac(b, &b_if)?,
        a_if,
        b_if,
        a_v4: spec.a_v4,
        b_v4: spec.b_v4,
        a_v6: spec.a_v6,
        b_v6: spec.b_v6,
    })
}

/// Waits up to 5 s until interface `ifname` in `ns` is up with carrier (`LOWER_UP`; for
/// a veth that needs both ends up).
///
/// # Errors
///
/// [`TestbedError::Timeout`] if it is not up in time; [`TestbedError::Command`] if the
/// interface does not exist.
pub fn wait_link_up(ns: &Netns, ifname: &str) -> Result<(), TestbedError> {
    let deadline = Instant::now() + LINK_UP_TIMEOUT;
    loop {
        let shown = ns.run(&["link", "show", "dev", ifname])?;
        if link_is_up(&shown) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(TestbedError::Timeout {
                what: format!(
                    "carrier on {ifname} in namespace {} (last state: {})",
                    ns.name(),
                    shown.trim()
                ),
            });
        }
        thread::sleep(LINK_UP_POLL);
    }
}

/// The MAC address of interface `ifname` in `ns`, from `ip -j link show`.
///
/// # Errors
///
/// [`TestbedError::Command`] if the interface does not exist, [`TestbedError::Parse`] if
/// the output has no MAC address.
pub fn interface_mac(ns: &Netns, ifname: &str) -> Result<[u8; 6], TestbedError> {
    let json = ns.run(&["-j", "link", "show", "dev", ifname])?;
    parse_json_mac(&json).ok_or_else(|| TestbedError::Parse {
        what: "MAC address",
        text: json.trim().to_owned(),
    })
}

/// Two namespaces joined by one veth pair with the [`PairSpec::TWO_NODE`] addresses.
///
/// Dropping it deletes both namespaces (and with them the veth pair), also when a test
/// panics. Fields drop in declaration order: `link` (plain data), then `a`, then `b`.
#[derive(Debug)]
pub struct TwoNode {
    /// The veth pair: `a_if`/`198.18.0.1` in `a`, `b_if`/`198.18.0.2` in `b`.
    pub link: Link,
    /// The first node's namespace.
    pub a: Netns,
    /// The second node's namespace.
    pub b: Netns,
}

/// Builds a [`TwoNode`] testbed; `tag` (see [`Netns::create`]) appears in both
/// namespace names, followed by `-a` and `-b`.
///
/// # Errors
///
/// As [`Netns::create`] and [`veth_pair`]. Anything created before the failure is
/// deleted again.
pub fn two_node(tag: &str) -> Result<TwoNode, TestbedError> {
    let a = Netns::create(&format!("{tag}-a"))?;
    let b = Netns::create(&format!("{tag}-b"))?;
    let link = veth_pair(&a, &b, &PairSpec::TWO_NODE)?;
    Ok(TwoNode { link, a, b })
}

/// Interface names for pair number `pair` of process `pid`, both at most 15 bytes.
fn interface_names(pid: u32, pair: u32) -> (String, String) {
    let (pid, pair) = (pid % 100_000, pair % 10_000_000);
    let names = (format!("pb{pid}a{pair}"), format!("pb{pid}b{pair}"));
    debug_assert!(names.0.len() <= MAX_IFNAME_LEN && names.1.len() <= MAX_IFNAME_LEN);
    names
}

/// Whether `ip link show` output says the link is up with carrier.
fn link_is_up(shown: &str) -> bool {
    let flags = shown
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or("", |(flags, _)| flags);
    flags.split(',').any(|flag| flag == "LOWER_UP") || shown.contains(" state UP ")
}

/// The first `"address":"xx:xx:xx:xx:xx:xx"` in `ip -j link show` output.
fn parse_json_mac(json: &str) -> Option<[u8; 6]> {
    const KEY: &str = "\"address\":\"";
    let start = json.find(KEY)? + KEY.len();
    let (text, _) = json[start..].split_once('"')?;
    let mut mac = [0_u8; 6];
    let mut octets = text.split(':');
    for byte in &mut mac {
        let octet = octets.next()?;
        if octet.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(octet, 16).ok()?;
    }
    octets.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_fit_ifnamsiz_in_the_worst_case() {
        let (a, b) = interface_names(4_194_303, u32::MAX);
        assert!(a.len() <= MAX_IFNAME_LEN, "{a}");
        assert!(b.len() <= MAX_IFNAME_LEN, "{b}");
        assert_ne!(a, b);
        assert_eq!(
            interface_names(123, 7),
            ("pb123a7".into(), "pb123b7".into())
        );
    }

    #[test]
    fn mac_is_parsed_from_ip_json() {
        let json = r#"[{"ifindex":2,"ifname":"pb1a0","flags":["UP"],"link_type":"ether","address":"42:a5:5a:52:85:8f","broadcast":"ff:ff:ff:ff:ff:ff"}]"#;
        assert_eq!(
            parse_json_mac(json),
            Some([0x42, 0xa5, 0x5a, 0x52, 0x85, 0x8f])
        );
        assert_eq!(parse_json_mac(r#"{"address":"42:a5:5a:52:85"}"#), None);
        assert_eq!(
            parse_json_mac(r#"{"address":"42:a5:5a:52:85:8f:00"}"#),
            None
        );
        assert_eq!(parse_json_mac(r#"{"address":"42:a5:5a:52:85:zz"}"#), None);
        assert_eq!(parse_json_mac(r#"{"ifname":"x"}"#), None);
    }

    #[test]
    fn link_state_needs_carrier() {
        let up = "6: pb1a0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT";
        let no_carrier = "6: pb1a0@if5: <NO-CARRIER,BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue state LOWERLAYERDOWN mode DEFAULT";
        let down =
            "6: pb1a0@if5: <BROADCAST,MULTICAST> mtu 1500 qdisc noop state DOWN mode DEFAULT";
        assert!(link_is_up(up));
        assert!(!link_is_up(no_carrier));
        assert!(!link_is_up(down));
    }

    #[test]
    fn bad_specs_are_rejected() {
        let mut spec = PairSpec::TWO_NODE;
        assert!(spec.check().is_ok());
        spec.prefix_v4 = 33;
        assert!(spec.check().is_err());
        spec = PairSpec {
            prefix_v6: 129,
            ..PairSpec::TWO_NODE
        };
        assert!(spec.check().is_err());
        spec = PairSpec {
            b_v4: PairSpec::TWO_NODE.a_v4,
            ..PairSpec::TWO_NODE
        };
        assert!(spec.check().is_err());
        spec = PairSpec {
            b_v6: PairSpec::TWO_NODE.a_v6,
            ..PairSpec::TWO_NODE
        };
        assert!(spec.check().is_err());
    }
}
