//! Questions to the kernel over rtnetlink, asked in the calling thread's network namespace:
//! an interface's MAC and addresses, and the neighbour table (the next hop's MAC).
//!
//! Queries are dumps filtered here; they run at setup and on neighbour-cache misses, never
//! per packet.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage},
};
use netlink_sys::{Socket, SocketAddr as NlAddr, protocols::NETLINK_ROUTE};

use crate::IoError;

fn nl_err(what: &'static str, detail: impl ToString) -> IoError {
    IoError::Netlink {
        what,
        detail: detail.to_string(),
    }
}

/// Sends one dump request and collects every reply message.
fn dump(
    what: &'static str,
    request: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, IoError> {
    query(what, request, true)
}

/// Sends one request and collects the replies: up to the end-of-dump marker for a dump, the
/// first reply datagram otherwise.
fn query(
    what: &'static str,
    request: RouteNetlinkMessage,
    is_dump: bool,
) -> Result<Vec<RouteNetlinkMessage>, IoError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err(what, e))?;
    socket.bind_auto().map_err(|e| nl_err(what, e))?;
    socket
        .connect(&NlAddr::new(0, 0))
        .map_err(|e| nl_err(what, e))?;

    let mut header = NetlinkHeader::default();
    header.flags = if is_dump {
        NLM_F_DUMP | NLM_F_REQUEST
    } else {
        NLM_F_REQUEST
    };
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(request));
    msg.finalize();
    let mut buf = vec![0u8; msg.header.length as usize];
    msg.serialize(&mut buf);
    socket.send(&buf, 0).map_err(|e| nl_err(what, e))?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let size = socket
            .recv(&mut &mut rx[..], 0)
            .map_err(|e| nl_err(what, e))?;
        let mut offset = 0;
        while offset + 4 <= size {
            // The length is the header's first field; it lets us step over a message that
            // does not parse instead of abandoning the whole dump.
            let len =
                u32::from_ne_bytes([rx[offset], rx[offset + 1], rx[offset + 2], rx[offset + 3]])
                    as usize;
            if len < 16 || offset + len > size {
                return Err(nl_err(what, "malformed netlink message length"));
            }
            if let Ok(reply) =
                NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[offset..offset + len])
            {
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => return Err(nl_err(what, format!("{e:?}"))),
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
            }
            // Messages are 4-byte aligned (NLMSG_ALIGN).
            offset += (len + 3) & !3;
        }
        if !is_dump {
            return Ok(out);
        }
    }
}

/// Where the kernel would send a packet for `dst`: the interface and, for a peer that is not
/// on a connected subnet, the gateway whose MAC the frame must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// Outgoing interface index.
    pub ifindex: u32,
    /// The gateway, or `None` when `dst` is on-link.
    pub gateway: Option<IpAddr>,
}

/// Asks the kernel's routing table (RTM_GETROUTE) how `dst` is reached.
pub fn route(dst: IpAddr) -> Result<NextHop, IoError> {
    const WHAT: &str = "route lookup";
    let mut request = RouteMessage::default();
    let (family, prefix, address) = match dst {
        IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
        IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
    };
    request.header.address_family = family;
    request.header.destination_prefix_length = prefix;
    request
        .attributes
        .push(RouteAttribute::Destination(address));
    for msg in query(WHAT, RouteNetlinkMessage::GetRoute(request), false)? {
        let RouteNetlinkMessage::NewRoute(route) = msg else {
            continue;
        };
        let mut hop = NextHop {
            ifindex: 0,
            gateway: None,
        };
        for attr in route.attributes {
            match attr {
                RouteAttribute::Oif(index) => hop.ifindex = index,
                RouteAttribute::Gateway(RouteAddress::Inet(a)) => hop.gateway = Some(IpAddr::V4(a)),
                RouteAttribute::Gateway(RouteAddress::Inet6(a)) => {
                    hop.gateway = Some(IpAddr::V6(a))
                }
                _ => {}
            }
        }
        return Ok(hop);
    }
    Err(nl_err(WHAT, "no route in the reply"))
}

/// The address whose MAC a frame to `peer` leaving `ifindex` must carry: the gateway of the
/// route to `peer`, or `peer` itself when it is on-link. `None` when the kernel routes `peer`
/// out of another interface.
pub fn next_hop_ip(ifindex: u32, peer: IpAddr) -> Result<Option<IpAddr>, IoError> {
    let hop = route(peer)?;
    if hop.ifindex != ifindex {
        return Ok(None);
    }
    Ok(Some(hop.gateway.unwrap_or(peer)))
}

/// The MAC address of interface `ifindex`.
pub fn link_mac(ifindex: u32) -> Result<[u8; 6], IoError> {
    const WHAT: &str = "link dump";
    for msg in dump(WHAT, RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        let RouteNetlinkMessage::NewLink(link) = msg else {
            continue;
        };
        if link.header.index != ifindex {
            continue;
        }
        for attr in link.attributes {
            if let LinkAttribute::Address(bytes) = attr {
                return <[u8; 6]>::try_from(bytes.as_slice())
                    .map_err(|_| nl_err(WHAT, "interface has no 6-byte MAC address"));
            }
        }
    }
    Err(nl_err(WHAT, format!("no link with index {ifindex}")))
}

/// Every address entry the kernel holds, of every interface.
fn address_dump() -> Result<Vec<AddressMessage>, IoError> {
    Ok(dump(
        "address dump",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )?
    .into_iter()
    .filter_map(|msg| match msg {
        RouteNetlinkMessage::NewAddress(addr) => Some(addr),
        _ => None,
    })
    .collect())
}

/// Addresses of interface `ifindex` usable as a source (global or site scope, not link-local).
pub fn link_addrs(ifindex: u32) -> Result<Vec<IpAddr>, IoError> {
    let mut out = Vec::new();
    for addr in address_dump()? {
        if addr.header.index != ifindex
            || matches!(addr.header.scope, AddressScope::Link | AddressScope::Host)
        {
            continue;
        }
        for attr in addr.attributes {
            if let AddressAttribute::Address(ip) = attr {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// Every address configured on any interface, of every scope (loopback and link-local
/// too), with a point-to-point link's peer address: the addresses that reach this host, or
/// that it treats as its own link's other end.
pub fn host_addrs() -> Result<Vec<IpAddr>, IoError> {
    let mut out = Vec::new();
    for addr in address_dump()? {
        for attr in addr.attributes {
            if let AddressAttribute::Address(ip) | AddressAttribute::Local(ip) = attr
                && !out.contains(&ip)
            {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// The MAC the neighbour table holds for `ip` on `ifindex`, if the entry is usable.
pub fn neighbour(ifindex: u32, ip: IpAddr) -> Result<Option<[u8; 6]>, IoError> {
    for msg in dump(
        "neighbour dump",
        RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
    )? {
        let RouteNetlinkMessage::NewNeighbour(n) = msg else {
            continue;
        };
        if n.header.ifindex != ifindex
            || !matches!(
                n.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            )
        {
            continue;
        }
        let mut dst = None;
        let mut mac = None;
        for attr in n.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    dst = Some(IpAddr::V4(a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    dst = Some(IpAddr::V6(a))
                }
                NeighbourAttribute::LinkLocalAddress(bytes) => {
                    mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
                }
                _ => {}
            }
        }
        if dst == Some(ip) && mac.is_some() {
            return Ok(mac);
        }
    }
    Ok(None)
}

/// Asks the kernel to resolve `peer`'s MAC by sending one empty datagram from `local` to the
/// peer's discard port (9) through the ordinary stack. Only ever aimed at a configured peer.
pub fn trigger_resolution(local: IpAddr, peer: IpAddr) -> Result<(), IoError> {
    let sys = |source| IoError::Sys {
        call: "neighbour probe",
        source,
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).map_err(sys)?;
    // An unreachable or refused peer is fine: the ARP/ND exchange is what we want.
    let _ = socket.send_to(&[], SocketAddr::new(peer, 9));
    Ok(())
}

/// Resolves the next-hop MAC for `peer` on `ifindex` (the gateway's when `peer` is routed),
/// triggering resolution and waiting up to `timeout`.
pub fn resolve(
    interface: &str,
    ifindex: u32,
    local: IpAddr,
    peer: IpAddr,
    timeout: Duration,
) -> Result<[u8; 6], IoError> {
    let start = Instant::now();
    let mut next_probe = start;
    let hop = next_hop_ip(ifindex, peer)?.ok_or_else(|| {
        nl_err(
            "route lookup",
            format!("the kernel routes the peer out of another interface than {interface:?}"),
        )
    })?;
    loop {
        if let Some(mac) = neighbour(ifindex, hop)? {
            return Ok(mac);
        }
        let now = Instant::now();
        if now.duration_since(start) >= timeout {
            return Err(IoError::NeighbourUnresolved {
                interface: interface.to_owned(),
                waited: timeout,
            });
        }
        if now >= next_probe {
            trigger_resolution(local, peer)?;
            next_probe = now + Duration::from_millis(500);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
