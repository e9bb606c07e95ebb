//! What a client and its gateway say over the client link (docs/spec/client-link.md): the
//! messages inside the link's Noise-encrypted records (`pb_link`). A message is a kind and
//! its bytes; every parser takes any bytes and returns `None` for what is not a message of
//! its kind, never panicking.

use pb_link::Message;
use pb_sphinx::{Epoch, MESSAGE_LEN, MailboxId, NodeId, PACKET_LEN, PAYLOAD_LEN, SurbId};

/// Descriptors per directory page: each is a flags byte (bit 0: the relay is live), a u16
/// length and its bytes.
pub const PER_PAGE: usize = 16;
/// Derivation context of a mailbox id from the client's token.
pub const MAILBOX_CONTEXT: &str = "PhantomBand v1 mailbox";

/// Client to gateway: a directory page.
pub const DIR_REQUEST: u8 = 0x01;
/// Client to gateway: register its mailbox with this link.
pub const REGISTER: u8 = 0x02;
/// Client to gateway: the stewards' cosigned checkpoint.
pub const CHECKPOINT_REQUEST: u8 = 0x03;
/// Client to gateway: a page of the reputation table the cosigned checkpoint commits to.
pub const REPUTATION_REQUEST: u8 = 0x04;
/// Client to gateway: a Sphinx packet whose first hop is the gateway.
pub const PACKET: u8 = 0x10;
/// Gateway to client: a directory page.
pub const DIR_PAGE: u8 = 0x81;
/// Gateway to client: the mailbox is registered with this link.
pub const REGISTERED: u8 = 0x82;
/// Gateway to client: a reply.
pub const REPLY: u8 = 0x83;
/// Gateway to client: a packet delivered to its mailbox (its own loop coming back).
pub const LOOP: u8 = 0x84;
/// Gateway to client: the stewards' cosigned checkpoint (empty: the gateway holds none).
pub const CHECKPOINT: u8 = 0x86;
/// The longest cosigned checkpoint a message carries.
pub const MAX_CHECKPOINT: usize = 16 * 1024;
/// Gateway to client: a page of the reputation table (none: the gateway holds none).
pub const REPUTATION: u8 = 0x87;
/// Bytes of the reputation table's text per page (a table of 40,000 relays fits 255 pages).
pub const REPUTATION_PAGE: usize = 8 * 1024;

/// The mailbox of `token` (as the gateway derives it).
pub fn mailbox_of(token: &[u8; 32]) -> MailboxId {
    let key = blake3::derive_key(MAILBOX_CONTEXT, token);
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[..16]);
    MailboxId(id)
}

fn message(kind: u8, body: Vec<u8>) -> Message {
    Message { kind, body }
}

/// A directory request for `page`.
pub fn request(nonce: [u8; 8], page: u8) -> Message {
    let mut body = nonce.to_vec();
    body.push(page);
    message(DIR_REQUEST, body)
}

/// A request for the cosigned checkpoint.
pub fn checkpoint_request(nonce: [u8; 8]) -> Message {
    message(CHECKPOINT_REQUEST, nonce.to_vec())
}

/// A request for page `page` of the reputation table.
pub fn reputation_request(nonce: [u8; 8], page: u8) -> Message {
    let mut body = nonce.to_vec();
    body.push(page);
    message(REPUTATION_REQUEST, body)
}

/// Page `page` of `table` (the reputation table's text, cut in [`REPUTATION_PAGE`] bytes):
/// the page's number, how many there are (0: the gateway holds no table, or one longer
/// than 255 pages), its bytes. A page past the last is empty.
pub fn reputation_page(nonce: [u8; 8], page: u8, table: Option<&[u8]>) -> Message {
    let table = table.unwrap_or(&[]);
    let pages = table.len().div_ceil(REPUTATION_PAGE);
    let (pages, chunk) = match u8::try_from(pages) {
        Ok(p) => {
            let start = (usize::from(page) * REPUTATION_PAGE).min(table.len());
            let end = (start + REPUTATION_PAGE).min(table.len());
            (p, &table[start..end])
        }
        Err(_) => (0, &[][..]),
    };
    let mut body = nonce.to_vec();
    body.extend_from_slice(&[page, pages]);
    body.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
    body.extend_from_slice(chunk);
    message(REPUTATION, body)
}

/// Registers the mailbox of `token` with the link this goes over (moving it from any other
/// link): only the token's holder can, and the token never leaves the encrypted link.
pub fn register(token: &[u8; 32]) -> Message {
    message(REGISTER, token.to_vec())
}

/// A Sphinx packet for the gateway to process as its first hop.
pub fn packet(packet: &[u8; PACKET_LEN]) -> Message {
    message(PACKET, packet.to_vec())
}

/// The answer to a checkpoint request: `note` (a signed note), or nothing if it is longer
/// than [`MAX_CHECKPOINT`] or the gateway holds none.
pub fn checkpoint(nonce: [u8; 8], note: Option<&[u8]>) -> Message {
    let mut body = nonce.to_vec();
    let note = note.filter(|n| n.len() <= MAX_CHECKPOINT).unwrap_or(&[]);
    body.extend_from_slice(&(note.len() as u16).to_be_bytes());
    body.extend_from_slice(note);
    message(CHECKPOINT, body)
}

/// The mailbox `mailbox` is registered with this link.
pub fn registered(mailbox: MailboxId) -> Message {
    message(REGISTERED, mailbox.0.to_vec())
}

/// A directory page: `descriptors` (at most [`PER_PAGE`]) of `pages`, for `epoch`, served by
/// the gateway `gateway`.
pub fn page(
    nonce: [u8; 8],
    page: u8,
    pages: u8,
    epoch: Epoch,
    gateway: NodeId,
    descriptors: &[(bool, Vec<u8>)],
) -> Message {
    let mut body = nonce.to_vec();
    body.extend_from_slice(&[page, pages]);
    body.extend_from_slice(&epoch.0.to_be_bytes());
    body.extend_from_slice(&gateway.0);
    let items: Vec<_> = descriptors
        .iter()
        .take(PER_PAGE)
        .filter(|(_, d)| d.len() <= usize::from(u16::MAX))
        .collect();
    body.push(items.len() as u8);
    for (live, d) in items {
        body.push(u8::from(*live));
        body.extend_from_slice(&(d.len() as u16).to_be_bytes());
        body.extend_from_slice(d);
    }
    message(DIR_PAGE, body)
}

/// A reply passed on to its mailbox's client.
pub fn reply(surb: SurbId, payload: &[u8; PAYLOAD_LEN]) -> Message {
    let mut body = surb.0.to_vec();
    body.extend_from_slice(payload);
    message(REPLY, body)
}

/// A forward packet's message delivered to a client's mailbox (its loop cover).
pub fn looped(area: &[u8]) -> Message {
    let mut body = vec![0u8; MESSAGE_LEN];
    let n = area.len().min(MESSAGE_LEN);
    body[..n].copy_from_slice(&area[..n]);
    message(LOOP, body)
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
        /// The node the gateway says it is (a claim: the client checks that node's link
        /// key is the one its handshake was made to).
        gateway: NodeId,
        /// The descriptors' bytes (not yet verified), each with whether its relay is live.
        descriptors: Vec<(bool, &'a [u8])>,
    },
    /// A mailbox is registered with this link.
    Registered {
        /// Which.
        mailbox: MailboxId,
    },
    /// A reply through one of our SURBs.
    Reply {
        /// Which SURB.
        surb: SurbId,
        /// The wrapped payload.
        payload: &'a [u8; PAYLOAD_LEN],
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
    /// A page of the reputation table (not yet checked against the checkpoint).
    Reputation {
        /// The request's nonce.
        nonce: [u8; 8],
        /// Which page, of how many (0: the gateway holds no table).
        page: u8,
        /// Pages in all.
        pages: u8,
        /// The page's bytes of the table's text.
        chunk: &'a [u8],
    },
}

/// What a client sent. `Debug` shows no token and no packet.
#[derive(PartialEq, Eq)]
pub enum FromClient<'a> {
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
    /// A page of the reputation table.
    ReputationRequest {
        /// Echoed in the answer.
        nonce: [u8; 8],
        /// Which page.
        page: u8,
    },
    /// Register the mailbox of this token.
    Register {
        /// The client's secret token.
        token: &'a [u8; 32],
    },
    /// A Sphinx packet.
    Packet(&'a [u8; PACKET_LEN]),
}

impl core::fmt::Debug for FromClient<'_> {
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
            FromClient::ReputationRequest { nonce, page } => f
                .debug_struct("ReputationRequest")
                .field("nonce", nonce)
                .field("page", page)
                .finish(),
            FromClient::Register { .. } => f.debug_struct("Register").finish_non_exhaustive(),
            FromClient::Packet(_) => f.debug_struct("Packet").finish_non_exhaustive(),
        }
    }
}

fn nonce(body: &[u8]) -> Option<[u8; 8]> {
    body.get(..8)?.try_into().ok()
}

/// Parses a message from a client (`None`: not one).
pub fn parse_request(m: &Message) -> Option<FromClient<'_>> {
    let b = &m.body[..];
    match (m.kind, b.len()) {
        (DIR_REQUEST, 9) => Some(FromClient::DirRequest {
            nonce: nonce(b)?,
            page: b[8],
        }),
        (CHECKPOINT_REQUEST, 8) => Some(FromClient::CheckpointRequest { nonce: nonce(b)? }),
        (REPUTATION_REQUEST, 9) => Some(FromClient::ReputationRequest {
            nonce: nonce(b)?,
            page: b[8],
        }),
        (REGISTER, 32) => Some(FromClient::Register {
            token: b.try_into().ok()?,
        }),
        (PACKET, PACKET_LEN) => Some(FromClient::Packet(b.try_into().ok()?)),
        _ => None,
    }
}

/// Parses a message from the gateway (`None`: not one).
pub fn parse(m: &Message) -> Option<FromGateway<'_>> {
    let b = &m.body[..];
    let id16 = |at: usize| -> Option<[u8; 16]> { b.get(at..at + 16)?.try_into().ok() };
    match m.kind {
        DIR_PAGE => {
            let head = b.get(..31)?;
            let epoch = Epoch(u32::from_be_bytes(head[10..14].try_into().ok()?));
            let count = usize::from(head[30]);
            if count > PER_PAGE {
                return None;
            }
            let mut descriptors = Vec::with_capacity(count);
            let mut rest = &b[31..];
            for _ in 0..count {
                let (h, tail) = rest.split_first_chunk::<3>()?;
                let len = usize::from(u16::from_be_bytes([h[1], h[2]]));
                let (d, tail) = tail.split_at_checked(len)?;
                descriptors.push((h[0] & 1 == 1, d));
                rest = tail;
            }
            if !rest.is_empty() {
                return None;
            }
            Some(FromGateway::Page {
                nonce: nonce(b)?,
                page: head[8],
                pages: head[9],
                epoch,
                gateway: NodeId(id16(14)?),
                descriptors,
            })
        }
        CHECKPOINT => {
            let len = usize::from(u16::from_be_bytes(b.get(8..10)?.try_into().ok()?));
            if b.len() != 10 + len {
                return None;
            }
            Some(FromGateway::Checkpoint {
                nonce: nonce(b)?,
                note: &b[10..],
            })
        }
        REPUTATION => {
            let len = usize::from(u16::from_be_bytes(b.get(10..12)?.try_into().ok()?));
            if b.len() != 12 + len || len > REPUTATION_PAGE {
                return None;
            }
            Some(FromGateway::Reputation {
                nonce: nonce(b)?,
                page: b[8],
                pages: b[9],
                chunk: &b[12..],
            })
        }
        REGISTERED if b.len() == 16 => Some(FromGateway::Registered {
            mailbox: MailboxId(id16(0)?),
        }),
        LOOP if b.len() == MESSAGE_LEN => Some(FromGateway::Loop { message: b }),
        REPLY if b.len() == 16 + PAYLOAD_LEN => Some(FromGateway::Reply {
            surb: SurbId(id16(0)?),
            payload: b[16..].try_into().ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_message_round_trips_and_malformed_ones_are_refused() {
        let n = [7u8; 8];
        assert_eq!(
            parse_request(&request(n, 3)),
            Some(FromClient::DirRequest { nonce: n, page: 3 })
        );
        assert_eq!(
            parse_request(&checkpoint_request(n)),
            Some(FromClient::CheckpointRequest { nonce: n })
        );
        assert_eq!(
            parse_request(&register(&[5; 32])),
            Some(FromClient::Register { token: &[5; 32] })
        );
        let p = [9u8; PACKET_LEN];
        assert_eq!(parse_request(&packet(&p)), Some(FromClient::Packet(&p)));
        let descriptors = vec![(true, vec![1u8; 300]), (false, vec![2u8; 392])];
        let g = NodeId([4; 16]);
        match parse(&page(n, 1, 2, Epoch(9), g, &descriptors)).unwrap() {
            FromGateway::Page {
                nonce,
                page,
                pages,
                epoch,
                gateway,
                descriptors: got,
            } => {
                assert_eq!((nonce, page, pages, epoch, gateway), (n, 1, 2, Epoch(9), g));
                assert_eq!(got, vec![(true, &[1u8; 300][..]), (false, &[2u8; 392][..])]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(&checkpoint(n, Some(b"note"))),
            Some(FromGateway::Checkpoint {
                nonce: n,
                note: b"note"
            })
        );
        assert_eq!(
            parse(&checkpoint(n, None)),
            Some(FromGateway::Checkpoint {
                nonce: n,
                note: b""
            })
        );
        let m = MailboxId([3; 16]);
        assert_eq!(
            parse(&registered(m)),
            Some(FromGateway::Registered { mailbox: m })
        );
        let payload = [6u8; PAYLOAD_LEN];
        assert_eq!(
            parse(&reply(SurbId([8; 16]), &payload)),
            Some(FromGateway::Reply {
                surb: SurbId([8; 16]),
                payload: &payload
            })
        );
        assert!(matches!(
            parse(&looped(&[1; MESSAGE_LEN])),
            Some(FromGateway::Loop { .. })
        ));
        // One byte more or less, or another kind: refused.
        for m in [request(n, 3), register(&[5; 32]), packet(&p)] {
            let mut longer = m.clone();
            longer.body.push(0);
            assert_eq!(parse_request(&longer), None);
            let mut shorter = m.clone();
            shorter.body.pop();
            assert_eq!(parse_request(&shorter), None);
            assert_eq!(parse(&m), None, "a client's message is no gateway's");
        }
        let mut bad_page = page(n, 1, 2, Epoch(9), g, &descriptors);
        bad_page.body.push(0);
        assert_eq!(parse(&bad_page), None, "trailing bytes");
        bad_page.body.truncate(100);
        assert_eq!(parse(&bad_page), None, "a descriptor cut short");
    }

    #[test]
    fn the_reputation_table_travels_in_pages() {
        let n = [7u8; 8];
        assert_eq!(
            parse_request(&reputation_request(n, 2)),
            Some(FromClient::ReputationRequest { nonce: n, page: 2 })
        );
        let table: Vec<u8> = (0..REPUTATION_PAGE * 2 + 100).map(|i| i as u8).collect();
        let mut got = Vec::new();
        for p in 0..3u8 {
            match parse(&reputation_page(n, p, Some(&table))).unwrap() {
                FromGateway::Reputation {
                    nonce,
                    page,
                    pages,
                    chunk,
                } => {
                    assert_eq!((nonce, page, pages), (n, p, 3));
                    got.extend_from_slice(chunk);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, table);
        // Past the last page, and no table: empty.
        for m in [
            reputation_page(n, 9, Some(&table)),
            reputation_page(n, 0, None),
        ] {
            assert!(matches!(
                parse(&m),
                Some(FromGateway::Reputation { chunk: b"", .. })
            ));
        }
        let huge = vec![b'x'; REPUTATION_PAGE * 256];
        assert!(matches!(
            parse(&reputation_page(n, 0, Some(&huge))),
            Some(FromGateway::Reputation {
                pages: 0,
                chunk: b"",
                ..
            })
        ));
        let mut bad = reputation_page(n, 0, Some(&table));
        bad.body.push(0);
        assert_eq!(parse(&bad), None, "a length that is not the page's");
        bad.body.truncate(11);
        assert_eq!(parse(&bad), None, "cut short");
        let mut long = reputation_request(n, 2);
        long.body.push(0);
        assert_eq!(parse_request(&long), None);
    }

    #[test]
    fn a_register_and_a_packet_print_nothing_of_theirs() {
        let token = [0xa7u8; 32];
        let m = register(&token);
        let printed = format!("{:?} {:?}", parse_request(&m).unwrap(), m);
        assert!(
            !printed.contains("a7") && !printed.contains("167"),
            "{printed}"
        );
    }
}
