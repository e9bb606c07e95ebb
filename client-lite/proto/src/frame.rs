//! Stream frames: what the client and the exit tell each other about their streams, packed
//! into the reliable channel's messages (see [`crate::channel`]). The channel delivers
//! messages in order, exactly once, so frames carry no sequence numbers of their own.
//!
//! ```text
//! 0x00 end              the rest of the message is padding
//! 0x01 open             stream u32, address (type u8: 1 IPv4, 3 name, 4 IPv6; the address;
//!                       for a name a u8 length first), port u16
//! 0x02 opened           stream u32, SOCKS reply code u8 (0: connected)
//! 0x03 data             stream u32, length u16, bytes
//! 0x04 fin              stream u32 (the sender writes no more)
//! 0x05 reset            stream u32, SOCKS reply code u8
//! 0x06 credit           stream u32, bytes u32 (the receiver may be sent that many more)
//!
//! From 0x07 on, a frame's id is followed by the length of its body (u16), and a receiver
//! skips the types it does not know:
//! 0x07 resolve          id u32, length u16, family u8 (4: A, 6: AAAA), name (the rest)
//! 0x08 resolved         id u32, length u16, outcome u8 (0: found, 2: failed, 3: no such
//!                       name), then for each address its type u8 (1 IPv4, 4 IPv6) and bytes
//! 0x09 udp-open         flow u32, length u16, address (as in open), port u16: relay this
//!                       flow's datagrams there; answered by opened, ended by reset
//! 0x0a datagram         flow u32, length u16, more u8 (1: more fragments of this datagram
//!                       follow), bytes (the rest)
//! ```
//!
//! A resolve's id comes from the same numbers as the session's streams. Numbers are
//! big-endian. Parsing is bounds-checked and returns [`FrameError`] on anything malformed;
//! it never panics.

use std::net::IpAddr;

use crate::{dns::Family, socks::Target};

/// Most addresses a [`Frame::Resolved`] carries (the exit keeps the first ones).
pub const MAX_ADDRESSES: usize = 16;

/// What the exit found for a name. `Debug` shows only how many addresses: they are where
/// a user is going.
#[derive(Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The name's addresses of the family asked for (none: the name has none of them).
    Found(Vec<IpAddr>),
    /// The exit could not resolve it (no answer from its servers, or the name refused).
    Failed,
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
}

impl core::fmt::Debug for Resolution {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Resolution::Found(a) => write!(f, "Found({} addresses)", a.len()),
            Resolution::Failed => f.write_str("Failed"),
            Resolution::NoSuchName => f.write_str("NoSuchName"),
        }
    }
}

/// A stream's number within its session (the client picks them, from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

/// One frame. `Debug` shows stream bytes only as their length, and the target as
/// [`Target`]'s `[scrubbed]`.
#[derive(Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Client to exit: connect this stream to `target`.
    Open {
        /// The stream.
        stream: StreamId,
        /// Where to.
        target: Target,
    },
    /// Exit to client: the connection's outcome (a SOCKS reply code, 0 for success).
    Opened {
        /// The stream.
        stream: StreamId,
        /// SOCKS reply code.
        code: u8,
    },
    /// Stream bytes, in order.
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// The sender has finished writing (TCP half-close).
    Fin {
        /// The stream.
        stream: StreamId,
    },
    /// The stream is abandoned (with a SOCKS reply code saying why).
    Reset {
        /// The stream.
        stream: StreamId,
        /// Why.
        code: u8,
    },
    /// The receiver has room for `bytes` more.
    Credit {
        /// The stream.
        stream: StreamId,
        /// How many more bytes.
        bytes: u32,
    },
    /// Client to exit: resolve `name` (printable ASCII, 1-255 bytes), addresses of `family`.
    Resolve {
        /// The lookup's number (from the streams' numbers).
        id: StreamId,
        /// A or AAAA.
        family: Family,
        /// The name.
        name: &'a str,
    },
    /// Exit to client: what a [`Frame::Resolve`] came to.
    Resolved {
        /// The lookup.
        id: StreamId,
        /// The outcome.
        answer: Resolution,
    },
    /// Client to exit: relay the datagrams of flow `id` to `target` (answered by
    /// [`Frame::Opened`], ended by [`Frame::Reset`]).
    UdpOpen {
        /// The flow (from the streams' numbers).
        id: StreamId,
        /// Where to.
        target: Target,
    },
    /// A datagram of a flow, or a fragment of one (the channel keeps fragments in order).
    Datagram {
        /// The flow.
        id: StreamId,
        /// More fragments of this datagram follow.
        more: bool,
        /// The bytes.
        bytes: &'a [u8],
    },
}

impl core::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Frame::Open { stream, target } => f
                .debug_struct("Open")
                .field("stream", stream)
                .field("target", target)
                .finish(),
            Frame::Opened { stream, code } => f
                .debug_struct("Opened")
                .field("stream", stream)
                .field("code", code)
                .finish(),
            Frame::Data { stream, bytes } => f
                .debug_struct("Data")
                .field("stream", stream)
                .field("len", &bytes.len())
                .finish_non_exhaustive(),
            Frame::Fin { stream } => f.debug_struct("Fin").field("stream", stream).finish(),
            Frame::Reset { stream, code } => f
                .debug_struct("Reset")
                .field("stream", stream)
                .field("code", code)
                .finish(),
            Frame::Credit { stream, bytes } => f
                .debug_struct("Credit")
                .field("stream", stream)
                .field("bytes", bytes)
                .finish(),
            Frame::Resolve { id, family, .. } => f
                .debug_struct("Resolve")
                .field("id", id)
                .field("family", family)
                .finish_non_exhaustive(),
            Frame::Resolved { id, answer } => f
                .debug_struct("Resolved")
                .field("id", id)
                .field("answer", answer)
                .finish(),
            Frame::UdpOpen { id, target } => f
                .debug_struct("UdpOpen")
                .field("id", id)
                .field("target", target)
                .finish(),
            Frame::Datagram { id, more, bytes } => f
                .debug_struct("Datagram")
                .field("id", id)
                .field("more", more)
                .field("len", &bytes.len())
                .finish_non_exhaustive(),
        }
    }
}

/// Why frames did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame runs past the end of the message.
    #[error("truncated frame")]
    Truncated,
    /// An unknown frame type or address type.
    #[error("unknown {0}")]
    Unknown(&'static str),
    /// A name that is empty or not printable ASCII.
    #[error("bad name")]
    BadName,
}

/// The end frame: the rest of the message is padding (alone, a message that carries nothing).
pub const END: u8 = 0;
const OPEN: u8 = 1;
const OPENED: u8 = 2;
const DATA: u8 = 3;
const FIN: u8 = 4;
const RESET: u8 = 5;
const CREDIT: u8 = 6;
const RESOLVE: u8 = 7;
const RESOLVED: u8 = 8;
const UDP_OPEN: u8 = 9;
const DATAGRAM: u8 = 10;
/// The first type whose frames carry their body's length (and may be skipped).
const SKIPPABLE: u8 = 7;

/// Bytes a data frame adds to its payload.
pub const DATA_OVERHEAD: usize = 1 + 4 + 2;
/// Bytes a datagram frame adds to its payload (type, flow, length, more).
pub const DATAGRAM_OVERHEAD: usize = 1 + 4 + 2 + 1;

/// The encoded length of `target`: address type, address (a name with its length), port.
fn target_len(target: &Target) -> usize {
    1 + 2
        + match target {
            Target::V4(..) => 4,
            Target::V6(..) => 16,
            Target::Name(n, _) => 1 + n.len().min(255),
        }
}

/// Appends `target`'s encoding (see [`target_len`]).
fn encode_target(target: &Target, out: &mut Vec<u8>) {
    match target {
        Target::V4(a, _) => {
            out.push(1);
            out.extend_from_slice(&a.octets());
        }
        Target::Name(n, _) => {
            out.push(3);
            // Names come from SOCKS (at most 255 bytes) or from parsing.
            out.push(n.len().min(255) as u8);
            out.extend_from_slice(&n.as_bytes()[..n.len().min(255)]);
        }
        Target::V6(a, _) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
}

/// A target off the front of `r` (see [`target_len`]).
fn parse_target(r: &mut Reader<'_>) -> Result<Target, FrameError> {
    let atyp = r.u8()?;
    let len = match atyp {
        1 => 4,
        4 => 16,
        3 => usize::from(r.u8()?),
        _ => return Err(FrameError::Unknown("address type")),
    };
    let address = r.take(len)?;
    let port = r.u16()?;
    // The lengths are right by construction: only a name can be refused.
    Target::from_wire(atyp, address, port).ok_or(FrameError::BadName)
}

impl Frame<'_> {
    /// Encoded length.
    pub fn len(&self) -> usize {
        1 + 4
            + match self {
                Frame::Open { target, .. } => target_len(target),
                Frame::Opened { .. } | Frame::Reset { .. } => 1,
                Frame::Data { bytes, .. } => 2 + bytes.len(),
                Frame::Fin { .. } => 0,
                Frame::Credit { .. } => 4,
                Frame::Resolve { .. }
                | Frame::Resolved { .. }
                | Frame::UdpOpen { .. }
                | Frame::Datagram { .. } => 2 + self.body_len(),
            }
    }

    /// The body's length of a frame from [`SKIPPABLE`] on.
    fn body_len(&self) -> usize {
        match self {
            Frame::Resolve { name, .. } => 1 + name.len().min(255),
            Frame::Resolved { answer, .. } => {
                1 + match answer {
                    Resolution::Found(a) => a
                        .iter()
                        .take(MAX_ADDRESSES)
                        .map(|ip| if ip.is_ipv4() { 5 } else { 17 })
                        .sum(),
                    _ => 0,
                }
            }
            Frame::UdpOpen { target, .. } => target_len(target),
            Frame::Datagram { bytes, .. } => 1 + bytes.len(),
            _ => 0,
        }
    }

    /// Never empty (for clippy's `len` rule): a frame has at least a type and a stream.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (kind, stream) = match self {
            Frame::Open { stream, .. } => (OPEN, stream),
            Frame::Opened { stream, .. } => (OPENED, stream),
            Frame::Data { stream, .. } => (DATA, stream),
            Frame::Fin { stream } => (FIN, stream),
            Frame::Reset { stream, .. } => (RESET, stream),
            Frame::Credit { stream, .. } => (CREDIT, stream),
            Frame::Resolve { id, .. } => (RESOLVE, id),
            Frame::Resolved { id, .. } => (RESOLVED, id),
            Frame::UdpOpen { id, .. } => (UDP_OPEN, id),
            Frame::Datagram { id, .. } => (DATAGRAM, id),
        };
        out.push(kind);
        out.extend_from_slice(&stream.0.to_be_bytes());
        match self {
            Frame::Open { target, .. } => encode_target(target, out),
            Frame::UdpOpen { target, .. } => {
                // At most 1 + 1 + 255 + 2 bytes: the length fits.
                out.extend_from_slice(&(self.body_len() as u16).to_be_bytes());
                encode_target(target, out);
            }
            Frame::Datagram { more, bytes, .. } => {
                // Callers split datagrams to fit a message (under 1,200 bytes).
                let n = bytes.len().min(usize::from(u16::MAX) - 1);
                out.extend_from_slice(&((1 + n) as u16).to_be_bytes());
                out.push(u8::from(*more));
                out.extend_from_slice(&bytes[..n]);
            }
            Frame::Opened { code, .. } | Frame::Reset { code, .. } => out.push(*code),
            Frame::Data { bytes, .. } => {
                // Callers split data to fit a message (under 1,200 bytes).
                out.extend_from_slice(&(bytes.len().min(u16::MAX as usize) as u16).to_be_bytes());
                out.extend_from_slice(&bytes[..bytes.len().min(u16::MAX as usize)]);
            }
            Frame::Fin { .. } => {}
            Frame::Credit { bytes, .. } => out.extend_from_slice(&bytes.to_be_bytes()),
            Frame::Resolve { family, name, .. } => {
                // At most 1 + 255 + 17 * 16 bytes: the length fits.
                out.extend_from_slice(&(self.body_len() as u16).to_be_bytes());
                out.push(match family {
                    Family::V4 => 4,
                    Family::V6 => 6,
                });
                // Names come from DNS questions (at most 255 bytes).
                out.extend_from_slice(&name.as_bytes()[..name.len().min(255)]);
            }
            Frame::Resolved { answer, .. } => {
                out.extend_from_slice(&(self.body_len() as u16).to_be_bytes());
                match answer {
                    Resolution::Found(addresses) => {
                        out.push(0);
                        for ip in addresses.iter().take(MAX_ADDRESSES) {
                            match ip {
                                IpAddr::V4(a) => {
                                    out.push(1);
                                    out.extend_from_slice(&a.octets());
                                }
                                IpAddr::V6(a) => {
                                    out.push(4);
                                    out.extend_from_slice(&a.octets());
                                }
                            }
                        }
                    }
                    Resolution::Failed => out.push(2),
                    Resolution::NoSuchName => out.push(3),
                }
            }
        }
    }
}

/// Reads fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let (head, rest) = self.0.split_at_checked(n).ok_or(FrameError::Truncated)?;
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Every frame in `bytes`, up to an end frame or the end of the bytes.
pub fn parse(bytes: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
    let mut r = Reader(bytes);
    let mut frames = Vec::new();
    while let Some(&kind) = r.0.first() {
        r.take(1)?;
        if kind == END {
            break;
        }
        let stream = StreamId(r.u32()?);
        frames.push(match kind {
            OPEN => Frame::Open {
                stream,
                target: parse_target(&mut r)?,
            },
            OPENED => Frame::Opened {
                stream,
                code: r.u8()?,
            },
            DATA => {
                let n = r.u16()?;
                Frame::Data {
                    stream,
                    bytes: r.take(usize::from(n))?,
                }
            }
            FIN => Frame::Fin { stream },
            RESET => Frame::Reset {
                stream,
                code: r.u8()?,
            },
            CREDIT => Frame::Credit {
                stream,
                bytes: r.u32()?,
            },
            SKIPPABLE.. => {
                let n = r.u16()?;
                let body = Reader(r.take(usize::from(n))?);
                match skippable(kind, stream, body)? {
                    Some(frame) => frame,
                    // A later version's frame: not for this receiver.
                    None => continue,
                }
            }
            _ => return Err(FrameError::Unknown("frame type")),
        });
    }
    Ok(frames)
}

/// A frame of type [`SKIPPABLE`] or later from its body (`None` for a type not known
/// here, which the caller skips).
fn skippable(
    kind: u8,
    id: StreamId,
    mut body: Reader<'_>,
) -> Result<Option<Frame<'_>>, FrameError> {
    Ok(Some(match kind {
        RESOLVE => {
            let family = match body.u8()? {
                4 => Family::V4,
                6 => Family::V6,
                _ => return Err(FrameError::Unknown("address family")),
            };
            let name = body.0;
            if name.is_empty() || name.len() > 255 || !name.iter().all(u8::is_ascii_graphic) {
                return Err(FrameError::BadName);
            }
            Frame::Resolve {
                id,
                family,
                // Printable ASCII: valid UTF-8.
                name: core::str::from_utf8(name).map_err(|_| FrameError::BadName)?,
            }
        }
        RESOLVED => {
            let answer = match body.u8()? {
                0 => {
                    let mut addresses = Vec::new();
                    while !body.0.is_empty() && addresses.len() < MAX_ADDRESSES {
                        addresses.push(match body.u8()? {
                            1 => IpAddr::from(
                                <[u8; 4]>::try_from(body.take(4)?)
                                    .map_err(|_| FrameError::Truncated)?,
                            ),
                            4 => IpAddr::from(
                                <[u8; 16]>::try_from(body.take(16)?)
                                    .map_err(|_| FrameError::Truncated)?,
                            ),
                            _ => return Err(FrameError::Unknown("address type")),
                        });
                    }
                    Resolution::Found(addresses)
                }
                2 => Resolution::Failed,
                3 => Resolution::NoSuchName,
                _ => return Err(FrameError::Unknown("resolve outcome")),
            };
            Frame::Resolved { id, answer }
        }
        UDP_OPEN => Frame::UdpOpen {
            id,
            target: parse_target(&mut body)?,
        },
        DATAGRAM => Frame::Datagram {
            id,
            more: match body.u8()? {
                0 => false,
                1 => true,
                _ => return Err(FrameError::Unknown("fragment flag")),
            },
            bytes: body.0,
        },
        _ => return Ok(None),
    }))
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn every_frame_round_trips_and_every_truncation_fails() {
        let s = StreamId(0x0102_0304);
        let frames = [
            Frame::Open {
                stream: s,
                target: Target::V4(Ipv4Addr::new(198, 18, 0, 1), 80),
            },
            Frame::Open {
                stream: s,
                target: Target::V6("fd00::7".parse().unwrap(), 443),
            },
            Frame::Open {
                stream: s,
                target: Target::Name("example.org".into(), 8080),
            },
            Frame::Opened { stream: s, code: 2 },
            Frame::Data {
                stream: s,
                bytes: b"hello",
            },
            Frame::Fin { stream: s },
            Frame::Reset { stream: s, code: 5 },
            Frame::Credit {
                stream: s,
                bytes: 65536,
            },
            Frame::Resolve {
                id: s,
                family: Family::V6,
                name: "example.org",
            },
            Frame::Resolved {
                id: s,
                answer: Resolution::Found(vec![
                    Ipv4Addr::new(198, 19, 0, 1).into(),
                    "fd00::7".parse().unwrap(),
                ]),
            },
            Frame::Resolved {
                id: s,
                answer: Resolution::Found(Vec::new()),
            },
            Frame::Resolved {
                id: s,
                answer: Resolution::NoSuchName,
            },
            Frame::Resolved {
                id: s,
                answer: Resolution::Failed,
            },
            Frame::UdpOpen {
                id: s,
                target: Target::V6("fd00::7".parse().unwrap(), 443),
            },
            Frame::Datagram {
                id: s,
                more: true,
                bytes: b"part",
            },
            Frame::Datagram {
                id: s,
                more: false,
                bytes: b"",
            },
        ];
        let mut all = Vec::new();
        for f in &frames {
            let mut one = Vec::new();
            f.encode(&mut one);
            assert_eq!(one.len(), f.len());
            assert_eq!(parse(&one).unwrap(), vec![f.clone()]);
            for cut in 1..one.len() {
                assert!(parse(&one[..cut]).is_err(), "{f:?} cut at {cut}");
            }
            all.extend_from_slice(&one);
        }
        // Padding ends the list.
        all.extend_from_slice(&[0, 9, 9, 9]);
        assert_eq!(parse(&all).unwrap(), frames.to_vec());
        // A later type is skipped by its length; one without a length is truncated.
        let mut later = vec![0x2a, 0, 0, 0, 1, 0, 3, 7, 7, 7];
        Frame::Fin { stream: s }.encode(&mut later);
        assert_eq!(parse(&later).unwrap(), vec![Frame::Fin { stream: s }]);
        assert_eq!(parse(&[9, 0, 0, 0, 1]), Err(FrameError::Truncated));
        // Bad resolve bodies.
        assert_eq!(
            parse(&[7, 0, 0, 0, 1, 0, 2, 5, b'a']),
            Err(FrameError::Unknown("address family"))
        );
        assert_eq!(parse(&[7, 0, 0, 0, 1, 0, 1, 4]), Err(FrameError::BadName));
        assert_eq!(
            parse(&[8, 0, 0, 0, 1, 0, 2, 0, 9]),
            Err(FrameError::Unknown("address type"))
        );
        assert_eq!(
            parse(&[8, 0, 0, 0, 1, 0, 3, 0, 1, 1]),
            Err(FrameError::Truncated)
        );
        assert_eq!(
            parse(&[1, 0, 0, 0, 1, 3, 1, b' ', 0, 80]),
            Err(FrameError::BadName)
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(frames) = parse(&bytes) {
                // What parses re-encodes to what parses the same.
                let mut out = Vec::new();
                for f in &frames {
                    f.encode(&mut out);
                }
                proptest::prop_assert_eq!(parse(&out), Ok(frames));
            }
        }
    }
}
