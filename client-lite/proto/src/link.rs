//! The client link's datagrams (docs/spec/client-link.md): what a client and its gateway
//! say besides Sphinx packets. Every datagram is exactly [`PACKET_LEN`] bytes.

use pb_sphinx::{Epoch, MESSAGE_LEN, MailboxId, NodeId, PACKET_LEN, PAYLOAD_LEN, SurbId};

/// Descriptors per directory page: each is a flags byte (bit 0: the relay is live), a u16
/// length and at most 224 bytes.
pub const PER_PAGE: usize = 6;
/// Derivation context of a mailbox id from the client's token.
pub const MAILBOX_CONTEXT: &str = "PhantomBand v1 mailbox";

/// Client to gateway: a directory page.
pub const DIR_REQUEST: u8 = 0x01;
/// Client to gateway: register a mailbox.
pub const HELLO: u8 = 0x02;
/// Client to gateway: the stewards' cosigned checkpoint.
pub const CHECKPOINT_REQUEST: u8 = 0x03;
/// Gateway to client: the stewards' cosigned checkpoint (empty: the gateway holds none).
pub const CHECKPOINT: u8 = 0x86;
/// The longest cosigned checkpoint a datagram carries.
pub const MAX_CHECKPOINT: usize = PACKET_LEN - 11;
/// Gateway to client: a directory page.
pub const DIR_PAGE: u8 = 0x81;
/// Gateway to client: the mailbox is registered (with the gateway's node id).
pub const WELCOME: u8 = 0x82;
/// Gateway to client: a reply.
pub const REPLY: u8 = 0x83;
/// Gateway to client: a packet delivered to its mailbox (its own loop coming back).
pub const LOOP: u8 = 0x84;
/// A return-routability cookie: the gateway's proof, echoed by the client, that the
/// client's address receives what the gateway sends (so a spoofed hello cannot point a
/// constant-rate downlink at a victim).
pub type Cookie = [u8; 16];

/// The mailbox of `token` (as the gateway derives it).
pub fn mailbox_of(token: &[u8; 32]) -> MailboxId {
    let key = blake3::derive_key(MAILBOX_CONTEXT, token);
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    MailboxId(id)
}

/// A directory request for `page`.
pub fn request(nonce: [u8; 8], page: u8) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = DIR_REQUEST;
    out[1..9].copy_from_slice(&nonce);
    out[9] = page;
    out
}

/// A request for the cosigned checkpoint.
pub fn checkpoint_request(nonce: [u8; 8]) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = CHECKPOINT_REQUEST;
    out[1..9].copy_from_slice(&nonce);
    out
}

/// The answer to a checkpoint request: `note` (a signed note), or nothing if it is longer
/// than [`MAX_CHECKPOINT`] or the gateway holds none.
pub fn checkpoint(nonce: [u8; 8], note: Option<&[u8]>) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = CHECKPOINT;
    out[1..9].copy_from_slice(&nonce);
    if let Some(note) = note.filter(|n| n.len() <= MAX_CHECKPOINT) {
        out[9..11].copy_from_slice(&(note.len() as u16).to_be_bytes());
        out[11..11 + note.len()].copy_from_slice(note);
    }
    out
}

/// A mailbox registration, asking for a downlink of `rate` datagrams a second (0: the
/// gateway's default) and echoing the last `cookie` the gateway gave (zeros: none yet).
pub fn hello(token: &[u8; 32], rate: u16, cookie: &Cookie) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = HELLO;
    out[1..33].copy_from_slice(token);
    out[33..35].copy_from_slice(&rate.to_be_bytes());
    out[35..51].copy_from_slice(cookie);
    out
}

/// What the gateway sent.
#[derive(Debug, PartialEq, Eq)]
pub enum FromGateway<'a> {
    /// A directory page.
    Page {
        /// The request's nonce.
        nonce: [u8; 8],
        /// Which page, of how many.
        page: u8,
        /// Pages in all.
        pages: u8,
        /// The epoch.
        epoch: Epoch,
        /// The descriptors' bytes (not yet verified), each with whether its relay is live.
        descriptors: Vec<(bool, &'a [u8])>,
    },
    /// The mailbox is registered at the gateway with this node id.
    Welcome {
        /// The mailbox.
        mailbox: MailboxId,
        /// The gateway's node id.
        gateway: NodeId,
        /// To echo in the next hellos: the downlink runs only while they carry it.
        cookie: Cookie,
        /// The downlink rate the gateway holds for the mailbox (datagrams a second).
        rate: u16,
    },
    /// A reply through one of our SURBs.
    Reply {
        /// Which SURB.
        surb: SurbId,
        /// The wrapped payload.
        payload: &'a [u8],
    },
    /// A packet delivered to our mailbox: one of our loops, back.
    Loop {
        /// Its message area.
        message: &'a [u8],
    },
    /// The stewards' cosigned checkpoint (empty: the gateway holds none).
    Checkpoint {
        /// The request's nonce.
        nonce: [u8; 8],
        /// The signed note, not yet verified.
        note: &'a [u8],
    },
}

impl core::fmt::Debug for FromClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FromClient::DirRequest { nonce, page } => f
                .debug_struct("DirRequest")
                .field("nonce", nonce)
                .field("page", page)
                .finish(),
            FromClient::CheckpointRequest { nonce } => f
                .debug_struct("CheckpointRequest")
                .field("nonce", nonce)
                .finish(),
            FromClient::Hello { rate, .. } => f
                .debug_struct("Hello")
                .field("token", &"[scrubbed]")
                .field("rate", rate)
                .finish_non_exhaustive(),
        }
    }
}

/// A directory page: `descriptors` (at most [`PER_PAGE`]) of `pages`, for `epoch`.
pub fn page(
    nonce: [u8; 8],
    page: u8,
    pages: u8,
    epoch: Epoch,
    descriptors: &[(bool, Vec<u8>)],
) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = DIR_PAGE;
    out[1..9].copy_from_slice(&nonce);
    out[9] = page;
    out[10] = pages;
    out[11..15].copy_from_slice(&epoch.0.to_be_bytes());
    let mut at = 16;
    let mut count = 0u8;
    for (live, d) in descriptors.iter().take(PER_PAGE) {
        if at + 3 + d.len() > PACKET_LEN {
            break;
        }
        out[at] = u8::from(*live);
        out[at + 1..at + 3].copy_from_slice(&(d.len() as u16).to_be_bytes());
        out[at + 3..at + 3 + d.len()].copy_from_slice(d);
        at += 3 + d.len();
        count += 1;
    }
    out[15] = count;
    out
}

/// The answer to a hello: the mailbox, the gateway's id, the cookie to echo and the
/// downlink rate granted.
pub fn welcome(
    mailbox: MailboxId,
    gateway: NodeId,
    cookie: &Cookie,
    rate: u16,
) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = WELCOME;
    out[1..17].copy_from_slice(&mailbox.0);
    out[17..33].copy_from_slice(&gateway.0);
    out[33..49].copy_from_slice(cookie);
    out[49..51].copy_from_slice(&rate.to_be_bytes());
    out
}

/// Padding for a downlink slot with nothing due: a reply datagram whose SURB id and payload
/// are `random` bytes. A wrapped reply payload looks random too, so only the client, which
/// finds no SURB of its own under that id, can tell padding from a reply.
pub fn padding(random: &[u8; PACKET_LEN - 1]) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = REPLY;
    out[1..17 + PAYLOAD_LEN].copy_from_slice(&random[..16 + PAYLOAD_LEN]);
    out
}

/// A reply passed on to its mailbox's client.
pub fn reply(surb: SurbId, payload: &[u8; PAYLOAD_LEN]) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = REPLY;
    out[1..17].copy_from_slice(&surb.0);
    out[17..17 + PAYLOAD_LEN].copy_from_slice(payload);
    out
}

/// A forward packet's message delivered to a client's mailbox (its loop cover).
pub fn looped(message: &[u8]) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = LOOP;
    let n = message.len().min(MESSAGE_LEN);
    out[1..1 + n].copy_from_slice(&message[..n]);
    out
}

/// What a client sent: a directory request (nonce, page) or a hello (token, downlink rate,
/// cookie). `Debug` scrubs the token and the cookie.
#[derive(PartialEq, Eq)]
pub enum FromClient {
    /// A directory page.
    DirRequest {
        /// Echoed in the answer.
        nonce: [u8; 8],
        /// Which page.
        page: u8,
    },
    /// The cosigned checkpoint.
    CheckpointRequest {
        /// Echoed in the answer.
        nonce: [u8; 8],
    },
    /// A mailbox registration.
    Hello {
        /// The client's secret token.
        token: [u8; 32],
        /// The downlink rate asked for (0: the gateway's default).
        rate: u16,
        /// The cookie echoed (zeros: none yet).
        cookie: Cookie,
    },
}

/// Parses a datagram from a client (`None`: not one).
pub fn parse_request(datagram: &[u8]) -> Option<FromClient> {
    if datagram.len() != PACKET_LEN {
        return None;
    }
    match datagram[0] {
        DIR_REQUEST => {
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&datagram[1..9]);
            Some(FromClient::DirRequest {
                nonce,
                page: datagram[9],
            })
        }
        CHECKPOINT_REQUEST => {
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&datagram[1..9]);
            Some(FromClient::CheckpointRequest { nonce })
        }
        HELLO => {
            let mut token = [0u8; 32];
            token.copy_from_slice(&datagram[1..33]);
            let mut cookie = [0u8; 16];
            cookie.copy_from_slice(&datagram[35..51]);
            Some(FromClient::Hello {
                token,
                rate: u16::from_be_bytes([datagram[33], datagram[34]]),
                cookie,
            })
        }
        _ => None,
    }
}

/// Parses a datagram from the gateway's client link (`None`: not one).
pub fn parse(datagram: &[u8]) -> Option<FromGateway<'_>> {
    if datagram.len() != PACKET_LEN {
        return None;
    }
    let id16 = |at: usize| -> [u8; 16] {
        let mut id = [0u8; 16];
        id.copy_from_slice(&datagram[at..at + 16]);
        id
    };
    match datagram[0] {
        DIR_PAGE => {
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&datagram[1..9]);
            let epoch = Epoch(u32::from_be_bytes([
                datagram[11],
                datagram[12],
                datagram[13],
                datagram[14],
            ]));
            let count = usize::from(datagram[15]);
            let mut descriptors = Vec::with_capacity(count);
            let mut rest = &datagram[16..];
            for _ in 0..count {
                let (head, tail) = rest.split_first_chunk::<3>()?;
                let len = usize::from(u16::from_be_bytes([head[1], head[2]]));
                let (d, tail) = tail.split_at_checked(len)?;
                descriptors.push((head[0] & 1 == 1, d));
                rest = tail;
            }
            Some(FromGateway::Page {
                nonce,
                page: datagram[9],
                pages: datagram[10],
                epoch,
                descriptors,
            })
        }
        CHECKPOINT => {
            let mut nonce = [0u8; 8];
            nonce.copy_from_slice(&datagram[1..9]);
            let len = usize::from(u16::from_be_bytes([datagram[9], datagram[10]]));
            Some(FromGateway::Checkpoint {
                nonce,
                note: datagram.get(11..11 + len)?,
            })
        }
        WELCOME => Some(FromGateway::Welcome {
            mailbox: MailboxId(id16(1)),
            gateway: NodeId(id16(17)),
            cookie: id16(33),
            rate: u16::from_be_bytes([datagram[49], datagram[50]]),
        }),
        LOOP => Some(FromGateway::Loop {
            message: &datagram[1..1 + MESSAGE_LEN],
        }),
        REPLY => Some(FromGateway::Reply {
            surb: SurbId(id16(1)),
            payload: &datagram[17..17 + PAYLOAD_LEN],
        }),
        _ => None,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_datagram_round_trips_and_other_sizes_are_refused() {
        let nonce = [7u8; 8];
        assert_eq!(
            parse_request(&request(nonce, 3)),
            Some(FromClient::DirRequest { nonce, page: 3 })
        );
        let token = [9u8; 32];
        assert_eq!(
            parse_request(&hello(&token, 100, &[5; 16])),
            Some(FromClient::Hello {
                token,
                rate: 100,
                cookie: [5; 16]
            })
        );
        assert_eq!(parse_request(&request(nonce, 3)[..100]), None);
        assert_eq!(
            parse_request(&checkpoint_request(nonce)),
            Some(FromClient::CheckpointRequest { nonce })
        );
        let note = b"pb.test/n\n0\nAAAA\n\n- x y\n";
        assert_eq!(
            parse(&checkpoint(nonce, Some(note))),
            Some(FromGateway::Checkpoint {
                nonce,
                note: &note[..]
            })
        );
        assert_eq!(
            parse(&checkpoint(nonce, None)),
            Some(FromGateway::Checkpoint { nonce, note: &[] })
        );
        let mut long = checkpoint(nonce, Some(note));
        long[9..11].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(parse(&long), None);
        let descriptors: Vec<(bool, Vec<u8>)> =
            (0..8u8).map(|i| (i % 2 == 0, vec![i; 224])).collect();
        let p = page(nonce, 1, 2, Epoch(5), &descriptors);
        match parse(&p).unwrap() {
            FromGateway::Page {
                nonce: n,
                page,
                pages,
                epoch,
                descriptors: got,
            } => {
                assert_eq!((n, page, pages, epoch), (nonce, 1, 2, Epoch(5)));
                assert_eq!(got.len(), PER_PAGE);
                assert_eq!(got[5], (false, &descriptors[5].1[..]));
                assert_eq!(got[4], (true, &descriptors[4].1[..]));
            }
            other => panic!("{other:?}"),
        }
        let mailbox = mailbox_of(&token);
        assert_eq!(
            parse(&welcome(mailbox, NodeId([3; 16]), &[6; 16], 40)),
            Some(FromGateway::Welcome {
                mailbox,
                gateway: NodeId([3; 16]),
                cookie: [6; 16],
                rate: 40,
            })
        );
        assert_eq!(
            parse(&padding(&[0x5a; PACKET_LEN - 1])),
            Some(FromGateway::Reply {
                surb: SurbId([0x5a; 16]),
                payload: &[0x5a; PAYLOAD_LEN][..]
            })
        );
        assert_eq!(
            parse(&looped(&[8u8; MESSAGE_LEN])),
            Some(FromGateway::Loop {
                message: &[8u8; MESSAGE_LEN][..]
            })
        );
        let payload = [4u8; PAYLOAD_LEN];
        assert_eq!(
            parse(&reply(SurbId([1; 16]), &payload)),
            Some(FromGateway::Reply {
                surb: SurbId([1; 16]),
                payload: &payload[..]
            })
        );
        // A descriptor length running past the datagram.
        let mut bad = page(nonce, 0, 1, Epoch(5), &descriptors[..1]);
        bad[17..19].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(parse(&bad), None);
    }
}
