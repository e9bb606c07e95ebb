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
    RouteNetlinkMessage,
    address::{AddressAttribute, AddressMessage, AddressScope},
    link::{LinkAttribute, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
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
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err(what, e))?;
    socket.bind_auto().map_err(|e| nl_err(what, e))?;
    socket
        .connect(&NlAddr::new(0, 0))
        .map_err(|e| nl_err(what, e))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_DUMP | NLM_F_REQUEST;
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
        while offset < size {
            let reply: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[offset..size]).map_err(|e| nl_err(what, e))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(nl_err(what, format!("{e:?}"))),
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                _ => {}
            }
            if len == 0 {
                return Err(nl_err(what, "zero-length netlink message"));
            }
            offset += len;
        }
    }
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

/// Addresses of interface `ifindex` usable as a source (global or site scope, not link-local).
pub fn link_addrs(ifindex: u32) -> Result<Vec<IpAddr>, IoError> {
    let mut out = Vec::new();
    for msg in dump(
        "address dump",
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
    )? {
        let RouteNetlinkMessage::NewAddress(addr) = msg else {
            continue;
        };
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

/// Resolves `peer`'s MAC on `ifindex`, triggering resolution and waiting up to `timeout`.
pub fn resolve(
    interface: &str,
    ifindex: u32,
    local: IpAddr,
    peer: IpAddr,
    timeout: Duration,
) -> Result<[u8; 6], IoError> {
    let start = Instant::now();
    let mut next_probe = start;
    loop {
        if let Some(mac) = neighbour(ifindex, peer)? {
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
