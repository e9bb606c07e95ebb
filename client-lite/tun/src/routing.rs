//! The routing of VPN mode, by policy (rtnetlink, in the calling thread's namespace):
//!
//! ```text
//! ip rule:  pref 5000 lookup 5042                      (IPv4 and IPv6)
//! table 5042:
//!   default dev TUN                                    (IPv4 and IPv6)
//!   throw ADDRESS/32 (/128)                            for each bypass address: the client's
//!                                                      own links (gateways, bridge, DoH)
//!   unreachable default metric 4294967295              (IPv4 and IPv6): the kill switch
//! ```
//!
//! Every destination but the bypass addresses and the local table's (loopback, the host's
//! own addresses: rule 0 comes first) goes into the device, on-link networks too (a LAN's
//! DNS server included). A thrown lookup goes on to the main table, so the client's own
//! links leave as before. The `unreachable` routes outlive the device: if pb-client dies,
//! its routes through the device go with the device, and what is left refuses every
//! packet instead of sending it in clear. A clean stop removes the rules and the table;
//! a start removes what a crashed run left.
//!
//! qemu-user (7.2) does not translate RTM_NEWRULE for foreign-architecture binaries: there
//! the rule fails with [`super::TunError::Netlink`] and a hint to use `--tun-fd`.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage},
    link::{LinkAttribute, LinkFlags, LinkMessage},
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    rule::{RuleAction, RuleAttribute, RuleMessage},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_ROUTE};

use crate::TunError;

/// The routing table of VPN mode.
pub const TABLE: u32 = 5042;
/// The priority of the rule that sends lookups to [`TABLE`] (before the main table's 32766).
pub const RULE_PRIORITY: u32 = 5000;
/// The device's own addresses (the source of what the host sends into it): private, and
/// outside the ranges testbeds and carrier NAT use.
pub const DEVICE_V4: Ipv4Addr = Ipv4Addr::new(10, 255, 255, 1);
/// See [`DEVICE_V4`] (a unique local address).
pub const DEVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd7b, 0x5042, 0, 0, 0, 0, 0, 1);

/// What to set up.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The TUN device's name.
    pub device: String,
    /// Its MTU.
    pub mtu: u32,
    /// Destinations that must not go into the device: the client's own links.
    pub bypass: Vec<IpAddr>,
}

/// The routing in place. Dropping it leaves everything as it is: that is the kill switch
/// (a process that panics or fails keeps it); [`Routing::release`] removes it, on a stop
/// the user asked for.
#[derive(Debug)]
#[must_use = "dropping it keeps the routes (the kill switch); release() removes them"]
pub struct Routing {
    _installed: (),
}

impl Routing {
    /// Removes what an earlier run left (rules and table), then brings `plan.device` up with
    /// its addresses and MTU and routes through it (IPv4, and IPv6 where it is enabled).
    ///
    /// # Errors
    /// A request the kernel refused ([`TunError::Netlink`]); what was set up before it is
    /// removed again.
    pub fn install(plan: &Plan) -> Result<Self, TunError> {
        remove_all()?;
        match install_all(plan) {
            Ok(()) => Ok(Self { _installed: () }),
            Err(e) => {
                let _ = remove_all();
                Err(e)
            }
        }
    }

    /// Removes the rules and the table: a clean stop.
    ///
    /// # Errors
    /// The kernel refused a removal.
    pub fn release(self) -> Result<(), TunError> {
        remove_all()
    }
}

/// The families routed: IPv4, and IPv6 unless it is disabled here (then nothing of IPv6
/// can leave anyway).
fn families() -> Vec<Family> {
    let v6 = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|s| s.trim() == "0");
    if v6 {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

fn install_all(plan: &Plan) -> Result<(), TunError> {
    let families = families();
    let index = if_index(&plan.device)?;
    request(
        "bringing the device up",
        RouteNetlinkMessage::NewLink(link_up(index, plan.mtu)),
        0,
    )?;
    let addresses = [(IpAddr::V4(DEVICE_V4), 32), (IpAddr::V6(DEVICE_V6), 128)];
    for (ip, prefix) in addresses {
        if !families.contains(&Family::of(ip)) {
            continue;
        }
        // (The device may have it already.)
        existing_is_fine(request(
            "the device's address",
            RouteNetlinkMessage::NewAddress(address(index, ip, prefix)),
            NLM_F_CREATE | NLM_F_EXCL,
        ))?;
    }
    let new = NLM_F_CREATE | NLM_F_EXCL;
    for &family in &families {
        request(
            "the default route through the device",
            RouteNetlinkMessage::NewRoute(route(family, None, RouteType::Unicast, Some(index))),
            new,
        )?;
        request(
            "the kill switch (an unreachable default)",
            RouteNetlinkMessage::NewRoute(route(family, None, RouteType::Unreachable, None)),
            new,
        )?;
    }
    for ip in &plan.bypass {
        let family = Family::of(*ip);
        if !families.contains(&family) {
            continue;
        }
        // (The same address may be in the list twice.)
        existing_is_fine(request(
            "a route around the device for the client's own link",
            RouteNetlinkMessage::NewRoute(route(family, Some(*ip), RouteType::Throw, None)),
            new,
        ))?;
    }
    for &family in &families {
        request(
            "the policy rule",
            RouteNetlinkMessage::NewRule(rule(family)),
            new,
        )?;
    }
    Ok(())
}

/// Removes VPN mode's rules and every route of its table, IPv4 and IPv6 (nothing if there
/// are none).
///
/// # Errors
/// The kernel refused a dump or a removal.
pub fn remove_all() -> Result<(), TunError> {
    for family in [Family::V4, Family::V6] {
        // A rule at a time, until there is none.
        loop {
            match request(
                "removing the policy rule",
                RouteNetlinkMessage::DelRule(rule(family)),
                0,
            ) {
                Ok(()) => {}
                Err(TunError::Netlink { error: source, .. })
                    if matches!(
                        source.raw_os_error(),
                        Some(libc::ENOENT) | Some(libc::EAFNOSUPPORT)
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let mut dump_request = RouteMessage::default();
        dump_request.header.address_family = family.address_family();
        let routes = dump(
            "listing routes",
            RouteNetlinkMessage::GetRoute(dump_request),
        )?;
        for message in routes {
            let RouteNetlinkMessage::NewRoute(r) = message else {
                continue;
            };
            let table = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(r.header.table));
            if table == TABLE {
                match request("removing a route", RouteNetlinkMessage::DelRoute(r), 0) {
                    Ok(()) => {}
                    // Gone with its device meanwhile.
                    Err(TunError::Netlink { error: source, .. })
                        if source.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// `result`, with "it exists already" taken as done.
fn existing_is_fine(result: Result<(), TunError>) -> Result<(), TunError> {
    match result {
        Err(TunError::Netlink { error, .. }) if error.raw_os_error() == Some(libc::EEXIST) => {
            Ok(())
        }
        other => other,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() { Self::V4 } else { Self::V6 }
    }

    fn address_family(self) -> AddressFamily {
        match self {
            Self::V4 => AddressFamily::Inet,
            Self::V6 => AddressFamily::Inet6,
        }
    }
}

fn if_index(name: &str) -> Result<u32, TunError> {
    let c = std::ffi::CString::new(name).map_err(|_| TunError::BadName(name.to_owned()))?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call, which only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(TunError::Netlink {
            what: format!("finding device {name}"),
            error: io::Error::last_os_error(),
            hint: "",
        });
    }
    Ok(index)
}

fn link_up(index: u32, mtu: u32) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = LinkFlags::Up;
    m.header.change_mask = LinkFlags::Up;
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m
}

fn address(index: u32, ip: IpAddr, prefix: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = Family::of(ip).address_family();
    m.header.prefix_len = prefix;
    m.header.index = index;
    // IPv6: usable at once, without duplicate address detection on a point-to-point device.
    m.header.flags = AddressHeaderFlags::Nodad;
    m.attributes.push(AddressAttribute::Local(ip));
    m.attributes.push(AddressAttribute::Address(ip));
    m
}

/// A route of [`TABLE`]: the default (`to` `None`) or a host route, of `kind`, through the
/// device `oif` for a unicast one.
fn route(family: Family, to: Option<IpAddr>, kind: RouteType, oif: Option<u32>) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family.address_family();
    m.header.table = RouteHeader::RT_TABLE_UNSPEC;
    m.header.protocol = RouteProtocol::Static;
    m.header.kind = kind;
    m.header.scope = if kind == RouteType::Unicast && family == Family::V4 {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    m.attributes.push(RouteAttribute::Table(TABLE));
    if let Some(ip) = to {
        m.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
        m.attributes.push(RouteAttribute::Destination(match ip {
            IpAddr::V4(a) => RouteAddress::Inet(a),
            IpAddr::V6(a) => RouteAddress::Inet6(a),
        }));
    }
    if let Some(index) = oif {
        m.attributes.push(RouteAttribute::Oif(index));
    }
    if kind == RouteType::Unreachable {
        // Behind every other default of the table.
        m.attributes.push(RouteAttribute::Priority(u32::MAX));
    }
    m
}

fn rule(family: Family) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family.address_family();
    m.header.action = RuleAction::ToTable;
    m.attributes.push(RuleAttribute::Priority(RULE_PRIORITY));
    m.attributes.push(RuleAttribute::Table(TABLE));
    m
}

fn socket(what: &str) -> Result<Socket, TunError> {
    let fail = |source| TunError::Netlink {
        what: what.to_owned(),
        error: source,
        hint: "",
    };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(fail)?;
    socket.bind_auto().map_err(fail)?;
    socket.connect(&NlAddr::new(0, 0)).map_err(fail)?;
    Ok(socket)
}

fn send(
    socket: &Socket,
    what: &str,
    message: RouteNetlinkMessage,
    flags: u16,
) -> Result<(), TunError> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(message));
    msg.finalize();
    let mut buf = vec![0u8; msg.header.length as usize];
    msg.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map(|_| ())
        .map_err(|source| TunError::Netlink {
            what: what.to_owned(),
            error: source,
            hint: "",
        })
}

/// Sends one request and waits for its acknowledgement.
fn request(what: &str, message: RouteNetlinkMessage, flags: u16) -> Result<(), TunError> {
    let is_rule = matches!(
        message,
        RouteNetlinkMessage::NewRule(_) | RouteNetlinkMessage::DelRule(_)
    );
    // What to do about a refusal, whether the send (qemu-user refuses to translate a rule
    // message there) or the kernel's answer says it.
    let with_hint = |error: io::Error| {
        let hint = match error.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                " (run as root, or give the binary CAP_NET_ADMIN)"
            }
            Some(libc::EOPNOTSUPP) if is_rule => {
                " (routing rules cannot be set here, e.g. under qemu-user: set the routes up outside and use --tun-fd)"
            }
            _ => "",
        };
        TunError::Netlink {
            what: what.to_owned(),
            error,
            hint,
        }
    };
    let socket = socket(what)?;
    send(&socket, what, message, NLM_F_ACK | flags).map_err(|e| match e {
        TunError::Netlink { error, .. } => with_hint(error),
        other => other,
    })?;
    let replies = receive(&socket, what, false)?;
    for reply in replies {
        if let NetlinkPayload::Error(e) = reply
            && let Some(code) = e.code
        {
            return Err(with_hint(io::Error::from_raw_os_error(-code.get())));
        }
    }
    Ok(())
}

/// Sends one dump request: every message of the answer.
fn dump(what: &str, message: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, TunError> {
    let socket = socket(what)?;
    send(&socket, what, message, NLM_F_DUMP)?;
    Ok(receive(&socket, what, true)?
        .into_iter()
        .filter_map(|p| match p {
            NetlinkPayload::InnerMessage(m) => Some(m),
            _ => None,
        })
        .collect())
}

/// The payloads of the answer: up to the end of a dump, or the first datagram.
fn receive(
    socket: &Socket,
    what: &str,
    is_dump: bool,
) -> Result<Vec<NetlinkPayload<RouteNetlinkMessage>>, TunError> {
    let fail = |detail: &str| TunError::Netlink {
        what: what.to_owned(),
        error: io::Error::new(io::ErrorKind::InvalidData, detail.to_owned()),
        hint: "",
    };
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(|source| TunError::Netlink {
                what: what.to_owned(),
                error: source,
                hint: "",
            })?;
        let mut offset = 0;
        while offset + 4 <= size {
            let len =
                u32::from_ne_bytes([rx[offset], rx[offset + 1], rx[offset + 2], rx[offset + 3]])
                    as usize;
            if len < 16 || offset + len > size {
                return Err(fail("malformed netlink message length"));
            }
            if let Ok(reply) =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..offset + len])
            {
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if is_dump && e.code.is_some() => {
                        out.push(NetlinkPayload::Error(e));
                        return Ok(out);
                    }
                    payload => out.push(payload),
                }
            }
            offset += (len + 3) & !3;
        }
        if !is_dump {
            return Ok(out);
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::Tun;

    /// `ip ARGS` in `ns`: its output.
    fn ip(ns: &pb_testbed::Netns, args: &str) -> String {
        ns.run(&args.split(' ').collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn routes_go_through_the_device_and_the_kill_switch_outlives_it() {
        if !pb_testbed::require_privileged(
            "routes_go_through_the_device_and_the_kill_switch_outlives_it",
        ) {
            return;
        }
        let ns = pb_testbed::Netns::create("tunroute").unwrap();
        let plan = Plan {
            device: "pbtun0".into(),
            mtu: 1400,
            bypass: vec!["198.18.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
        };
        ns.in_netns(|| {
            let tun = Tun::create("pbtun0").unwrap();
            let routing = Routing::install(&plan).unwrap();
            let rules = ip(&ns, "rule show");
            assert!(rules.contains("5000:\tfrom all lookup 5042"), "{rules}");
            assert!(ip(&ns, "-6 rule show").contains("5000:\tfrom all lookup 5042"));
            let table = ip(&ns, "route show table 5042");
            for want in [
                "default dev pbtun0",
                "throw 198.18.0.1",
                "unreachable default",
            ] {
                assert!(table.contains(want), "{want:?} not in {table}");
            }
            let table6 = ip(&ns, "-6 route show table 5042");
            for want in ["default dev pbtun0", "throw fd00::1", "unreachable default"] {
                assert!(table6.contains(want), "{want:?} not in {table6}");
            }
            assert!(ip(&ns, "link show pbtun0").contains("mtu 1400"));
            // Where things go: into the device, except the bypass address.
            assert!(ip(&ns, "route get 203.0.113.7").contains("dev pbtun0"));
            assert!(ip(&ns, "-6 route get 2001:db8::7").contains("dev pbtun0"));
            // A thrown lookup finds no route in the (empty) main table.
            assert!(ns.run(&["route", "get", "198.18.0.1"]).is_err());
            // The device goes (pb-client died): the unreachable default is left.
            drop(tun);
            assert!(ns.run(&["route", "get", "203.0.113.7"]).is_err());
            let table = ip(&ns, "route show table 5042");
            assert!(
                table.contains("unreachable default") && !table.contains("pbtun0"),
                "{table}"
            );
            // A clean stop removes it all.
            routing.release().unwrap();
            assert!(!ip(&ns, "rule show").contains("5042"));
            assert!(ip(&ns, "route show table 5042").trim().is_empty());
            assert!(ip(&ns, "-6 route show table 5042").trim().is_empty());
            // And a start removes what a crashed run left.
            let tun = Tun::create("pbtun0").unwrap();
            // Dropped without release: what a crash leaves.
            drop(Routing::install(&plan).unwrap());
            assert!(ip(&ns, "rule show").contains("5042"));
            let again = Routing::install(&plan).unwrap();
            assert_eq!(
                ip(&ns, "rule show").matches("lookup 5042").count(),
                1,
                "one rule, not two"
            );
            again.release().unwrap();
            drop(tun);
        })
        .unwrap();
    }
}
