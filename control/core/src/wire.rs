//! The gossip wire format: a one-byte kind, then either a signed SWIM packet (foca's, with
//! our codec for its headers and membership updates, behind the sender's descriptor and
//! signature) or a descriptor sync (signed descriptors pushed directly to a peer). Every read is bounds-checked; bad input is an error, never a
//! panic. The layout is in docs/spec/descriptor.md.

use std::net::SocketAddr;

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, Message, State};

use crate::{
    IdentityKeyPair, addr,
    descriptor::{MAX_DESCRIPTOR_LEN, SIGNATURE_LEN},
};

/// The largest gossip datagram sent or accepted.
pub const MAX_DATAGRAM: usize = 1400;
/// Kind byte of a SWIM packet.
pub const KIND_SWIM: u8 = 1;
/// Kind byte of a descriptor sync.
pub const KIND_SYNC: u8 = 2;
/// Signing context of SWIM packets.
pub const SWIM_CONTEXT: &[u8] = b"PhantomBand v1 swim\0";
/// What a SWIM datagram carries besides foca's packet, at most: the kind, the descriptor's
/// length and bytes, the signature.
pub const SWIM_OVERHEAD: usize = 1 + 2 + MAX_DESCRIPTOR_LEN + SIGNATURE_LEN;

/// A SWIM datagram taken apart (nothing verified yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwimDatagram<'a> {
    /// The sender's signed descriptor: who signs, and the gossip address it may speak for.
    pub descriptor: &'a [u8],
    /// The sender's Ed25519 signature over [`SWIM_CONTEXT`] and `packet`.
    pub signature: &'a [u8; SIGNATURE_LEN],
    /// foca's packet.
    pub packet: &'a [u8],
}

/// A SWIM datagram: `KIND_SWIM`, a u16 length and the sender's descriptor, the sender's
/// signature over [`SWIM_CONTEXT`] and `packet`, then `packet`.
pub fn swim_datagram(identity: &IdentityKeyPair, descriptor: &[u8], packet: &[u8]) -> Vec<u8> {
    let signature = identity.sign_message(SWIM_CONTEXT, packet);
    let mut out = Vec::with_capacity(3 + descriptor.len() + SIGNATURE_LEN + packet.len());
    out.push(KIND_SWIM);
    out.extend_from_slice(&(descriptor.len() as u16).to_be_bytes());
    out.extend_from_slice(descriptor);
    out.extend_from_slice(&signature);
    out.extend_from_slice(packet);
    out
}

/// Splits a SWIM datagram's body (after the kind byte).
pub fn parse_swim(body: &[u8]) -> Result<SwimDatagram<'_>, WireError> {
    if body.len() + 1 > MAX_DATAGRAM {
        return Err(WireError::TooLong);
    }
    let (len, rest) = body.split_first_chunk::<2>().ok_or(WireError::Truncated)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len > MAX_DESCRIPTOR_LEN {
        return Err(WireError::TooLong);
    }
    let (descriptor, rest) = rest.split_at_checked(len).ok_or(WireError::Truncated)?;
    let (signature, packet) = rest
        .split_first_chunk::<SIGNATURE_LEN>()
        .ok_or(WireError::Truncated)?;
    Ok(SwimDatagram {
        descriptor,
        signature,
        packet,
    })
}

/// A gossip member: its gossip address and a bump that grows with every restart (and every
/// time it has to rejoin), so that its newest incarnation wins over a stale one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// Gossip address.
    pub addr: SocketAddr,
    /// Restart counter.
    pub bump: u32,
}

impl foca::Identity for Peer {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        self.bump.checked_add(1).map(|bump| Peer { bump, ..*self })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

/// Why gossip bytes were refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Ran out of bytes.
    #[error("truncated")]
    Truncated,
    /// No room left in the packet being built.
    #[error("no room in the packet")]
    NoRoom,
    /// An unknown kind, message, state or address family.
    #[error("unknown {0} code")]
    UnknownCode(&'static str),
    /// Longer than a datagram or a descriptor may be.
    #[error("too long")]
    TooLong,
}

fn peer_len(peer: &Peer) -> usize {
    addr::encoded_len(peer.addr) + 4
}

fn put_peer(buf: &mut impl BufMut, peer: &Peer) {
    addr::put(buf, peer.addr);
    buf.put_u32(peer.bump);
}

fn get_peer(buf: &mut impl Buf) -> Result<Peer, WireError> {
    let addr = addr::get(buf).map_err(|e| match e {
        addr::BadAddr::Truncated => WireError::Truncated,
        addr::BadAddr::UnknownFamily => WireError::UnknownCode("address family"),
    })?;
    let bump = buf.try_get_u32().map_err(|_| WireError::Truncated)?;
    Ok(Peer { addr, bump })
}

/// foca's codec: headers and membership updates in a fixed big-endian layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct SwimCodec;

/// A message's code, the peer it names (2-5) and its probe number (0-5), written in that
/// order.
fn message_parts(message: &Message<Peer>) -> (u8, Option<&Peer>, Option<u8>) {
    match message {
        Message::Ping(n) => (0, None, Some(*n)),
        Message::Ack(n) => (1, None, Some(*n)),
        Message::PingReq {
            target,
            probe_number,
        } => (2, Some(target), Some(*probe_number)),
        Message::IndirectPing {
            origin,
            probe_number,
        } => (3, Some(origin), Some(*probe_number)),
        Message::IndirectAck {
            target,
            probe_number,
        } => (4, Some(target), Some(*probe_number)),
        Message::ForwardedAck {
            origin,
            probe_number,
        } => (5, Some(origin), Some(*probe_number)),
        Message::Announce => (6, None, None),
        Message::Feed => (7, None, None),
        Message::Gossip => (8, None, None),
        Message::Broadcast => (9, None, None),
        Message::TurnUndead => (10, None, None),
    }
}

impl Codec<Peer> for SwimCodec {
    type Error = WireError;

    fn encode_header(
        &mut self,
        header: &Header<Peer>,
        mut buf: impl BufMut,
    ) -> Result<(), WireError> {
        let (code, peer, probe) = message_parts(&header.message);
        let len = peer_len(&header.src)
            + peer_len(&header.dst)
            + 2
            + 1
            + peer.map_or(0, peer_len)
            + probe.map_or(0, |_| 1);
        // Check first, write after: a BufMut panics when it runs out of room.
        if buf.remaining_mut() < len {
            return Err(WireError::NoRoom);
        }
        put_peer(&mut buf, &header.src);
        put_peer(&mut buf, &header.dst);
        buf.put_u16(header.src_incarnation);
        buf.put_u8(code);
        if let Some(peer) = peer {
            put_peer(&mut buf, peer);
        }
        if let Some(n) = probe {
            buf.put_u8(n);
        }
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<Peer>, WireError> {
        let src = get_peer(&mut buf)?;
        let dst = get_peer(&mut buf)?;
        let src_incarnation = buf.try_get_u16().map_err(|_| WireError::Truncated)?;
        let code = buf.try_get_u8().map_err(|_| WireError::Truncated)?;
        let probe = |buf: &mut dyn Buf| buf.try_get_u8().map_err(|_| WireError::Truncated);
        let message = match code {
            0 => Message::Ping(probe(&mut buf)?),
            1 => Message::Ack(probe(&mut buf)?),
            2..=5 => {
                let peer = get_peer(&mut buf)?;
                let probe_number = probe(&mut buf)?;
                match code {
                    2 => Message::PingReq {
                        target: peer,
                        probe_number,
                    },
                    3 => Message::IndirectPing {
                        origin: peer,
                        probe_number,
                    },
                    4 => Message::IndirectAck {
                        target: peer,
                        probe_number,
                    },
                    _ => Message::ForwardedAck {
                        origin: peer,
                        probe_number,
                    },
                }
            }
            6 => Message::Announce,
            7 => Message::Feed,
            8 => Message::Gossip,
            9 => Message::Broadcast,
            10 => Message::TurnUndead,
            _ => return Err(WireError::UnknownCode("message")),
        };
        Ok(Header {
            src,
            src_incarnation,
            dst,
            message,
        })
    }

    fn encode_member(
        &mut self,
        member: &Member<Peer>,
        mut buf: impl BufMut,
    ) -> Result<(), WireError> {
        // Nothing written unless all of it fits.
        if buf.remaining_mut() < peer_len(member.id()) + 3 {
            return Err(WireError::NoRoom);
        }
        put_peer(&mut buf, member.id());
        buf.put_u16(member.incarnation());
        buf.put_u8(match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<Peer>, WireError> {
        let peer = get_peer(&mut buf)?;
        let incarnation = buf.try_get_u16().map_err(|_| WireError::Truncated)?;
        let state = match buf.try_get_u8().map_err(|_| WireError::Truncated)? {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            _ => return Err(WireError::UnknownCode("member state")),
        };
        Ok(Member::new(peer, incarnation, state))
    }
}

/// Splits descriptors into sync datagrams: `KIND_SYNC`, then per descriptor a u16 length and
/// its bytes, each datagram at most [`MAX_DATAGRAM`] bytes.
pub fn sync_datagrams<'a>(descriptors: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current = vec![KIND_SYNC];
    for d in descriptors {
        if d.len() > MAX_DESCRIPTOR_LEN {
            continue;
        }
        if current.len() + 2 + d.len() > MAX_DATAGRAM {
            out.push(std::mem::replace(&mut current, vec![KIND_SYNC]));
        }
        current.extend_from_slice(&(d.len() as u16).to_be_bytes());
        current.extend_from_slice(d);
    }
    if current.len() > 1 {
        out.push(current);
    }
    out
}

/// The descriptors in a sync datagram's body (after the kind byte).
pub fn parse_sync(mut body: &[u8]) -> Result<Vec<&[u8]>, WireError> {
    if body.len() + 1 > MAX_DATAGRAM {
        return Err(WireError::TooLong);
    }
    let mut items = Vec::new();
    while !body.is_empty() {
        let Some((len, rest)) = body.split_first_chunk::<2>() else {
            return Err(WireError::Truncated);
        };
        let len = usize::from(u16::from_be_bytes(*len));
        if len > MAX_DESCRIPTOR_LEN {
            return Err(WireError::TooLong);
        }
        if rest.len() < len {
            return Err(WireError::Truncated);
        }
        items.push(&rest[..len]);
        body = &rest[len..];
    }
    Ok(items)
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn peers() -> [Peer; 2] {
        [
            Peer {
                addr: "198.18.0.1:47471".parse().unwrap(),
                bump: 7,
            },
            Peer {
                addr: "[fd00::2]:1".parse().unwrap(),
                bump: u32::MAX,
            },
        ]
    }

    #[test]
    fn every_message_round_trips_and_truncations_are_errors() {
        let [a, b] = peers();
        let messages = [
            Message::Ping(3),
            Message::Ack(4),
            Message::PingReq {
                target: b,
                probe_number: 5,
            },
            Message::IndirectPing {
                origin: a,
                probe_number: 6,
            },
            Message::IndirectAck {
                target: b,
                probe_number: 7,
            },
            Message::ForwardedAck {
                origin: a,
                probe_number: 8,
            },
            Message::Announce,
            Message::Feed,
            Message::Gossip,
            Message::Broadcast,
            Message::TurnUndead,
        ];
        for message in messages {
            let header = Header {
                src: a,
                src_incarnation: 9,
                dst: b,
                message,
            };
            let mut bytes = Vec::new();
            SwimCodec.encode_header(&header, &mut bytes).unwrap();
            assert_eq!(SwimCodec.decode_header(&bytes[..]).unwrap(), header);
            for cut in 0..bytes.len() {
                assert!(SwimCodec.decode_header(&bytes[..cut]).is_err());
            }
            // No room: nothing written.
            let mut small = bytes::BufMut::limit(Vec::new(), bytes.len() - 1);
            assert_eq!(
                SwimCodec.encode_header(&header, &mut small),
                Err(WireError::NoRoom)
            );
            assert!(small.get_ref().is_empty());
        }
        for state in [State::Alive, State::Suspect, State::Down] {
            let member = Member::new(b, 11, state);
            let mut bytes = Vec::new();
            SwimCodec.encode_member(&member, &mut bytes).unwrap();
            assert_eq!(SwimCodec.decode_member(&bytes[..]).unwrap(), member);
        }
    }

    #[test]
    fn swim_datagrams_parse_back_and_truncations_are_errors() {
        let pair = IdentityKeyPair::from_seed(&[3; 32]);
        let descriptor = [7u8; 200];
        let bytes = swim_datagram(&pair, &descriptor, b"packet");
        let d = parse_swim(&bytes[1..]).unwrap();
        assert_eq!(d.descriptor, &descriptor[..]);
        assert_eq!(d.packet, b"packet");
        assert!(pair.public().verify(SWIM_CONTEXT, d.packet, d.signature));
        assert!(!pair.public().verify(SWIM_CONTEXT, b"pocket", d.signature));
        for cut in 1..3 + 200 + SIGNATURE_LEN {
            assert_eq!(
                parse_swim(&bytes[1..cut]),
                Err(WireError::Truncated),
                "{cut}"
            );
        }
        assert_eq!(parse_swim(&[0xff, 0xff]), Err(WireError::TooLong));
    }

    #[test]
    fn sync_datagrams_are_bounded_and_parse_back() {
        let items: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 224]).collect();
        let datagrams = sync_datagrams(items.iter().map(Vec::as_slice));
        assert!(datagrams.len() > 1);
        let mut back = Vec::new();
        for d in &datagrams {
            assert!(d.len() <= MAX_DATAGRAM && d[0] == KIND_SYNC);
            back.extend(parse_sync(&d[1..]).unwrap().into_iter().map(<[u8]>::to_vec));
        }
        assert_eq!(back, items);
        assert_eq!(parse_sync(&[0, 5, 1]), Err(WireError::Truncated));
        assert_eq!(parse_sync(&[0xff, 0xff]), Err(WireError::TooLong));
        assert_eq!(parse_sync(&[1]), Err(WireError::Truncated));
    }
}
