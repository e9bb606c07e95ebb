//! The one encoding of a socket address used in descriptors, gossip peers and the topology
//! hash: family (4 or 6), the address (4 or 16 bytes), the port (u16, big-endian).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut};

/// The longest encoding (IPv6).
pub(crate) const MAX_LEN: usize = 1 + 16 + 2;

/// Why bytes are no address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadAddr {
    /// Ran out of bytes.
    Truncated,
    /// The family byte is neither 4 nor 6.
    UnknownFamily,
}

/// Bytes `addr` takes.
pub(crate) fn encoded_len(addr: SocketAddr) -> usize {
    match addr {
        SocketAddr::V4(_) => 1 + 4 + 2,
        SocketAddr::V6(_) => MAX_LEN,
    }
}

/// Writes `addr`; the caller makes sure `buf` has [`encoded_len`] bytes of room.
pub(crate) fn put(buf: &mut impl BufMut, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            buf.put_u8(4);
            buf.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            buf.put_u8(6);
            buf.put_slice(&ip.octets());
        }
    }
    buf.put_u16(addr.port());
}

/// Reads an address off the front of `buf`.
pub(crate) fn get(buf: &mut impl Buf) -> Result<SocketAddr, BadAddr> {
    let ip = match buf.try_get_u8().map_err(|_| BadAddr::Truncated)? {
        4 => {
            let mut o = [0u8; 4];
            buf.try_copy_to_slice(&mut o)
                .map_err(|_| BadAddr::Truncated)?;
            IpAddr::V4(Ipv4Addr::from(o))
        }
        6 => {
            let mut o = [0u8; 16];
            buf.try_copy_to_slice(&mut o)
                .map_err(|_| BadAddr::Truncated)?;
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(BadAddr::UnknownFamily),
    };
    let port = buf.try_get_u16().map_err(|_| BadAddr::Truncated)?;
    Ok(SocketAddr::new(ip, port))
}
