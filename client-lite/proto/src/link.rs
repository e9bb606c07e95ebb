//! The client link's datagrams (docs/spec/client-link.md): what a client and its gateway
//! say besides Sphinx packets. Every datagram is exactly [`PACKET_LEN`] bytes.

use pb_sphinx::{Epoch, EpochKey, MESSAGE_LEN, MailboxId, NodeId, PACKET_LEN, PAYLOAD_LEN, SurbId};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use zeroize::{Zeroize, ZeroizeOnDrop};

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
/// Gateway to client: the mailbox is registered (sealed to the hello, signed by the gateway).
pub const WELCOME: u8 = 0x82;
/// Derivation context of the keys a hello and its welcomes are sealed with.
pub const HELLO_CONTEXT: &str = "PhantomBand v1 client hello";
/// Signature context of a welcome (the gateway's Ed25519 identity key signs it).
pub const WELCOME_CONTEXT: &[u8] = b"PhantomBand v1 welcome\0";
/// An AEAD tag (ChaCha20-Poly1305).
const TAG_LEN: usize = 16;
/// A hello's sealed part: token (32), downlink rate (u16), cookie (16), tag.
pub const SEALED_HELLO_LEN: usize = 32 + 2 + 16 + TAG_LEN;
/// A welcome's sealed part: cookie (16), downlink rate (u16), tag.
pub const SEALED_WELCOME_LEN: usize = 16 + 2 + TAG_LEN;
/// An Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// What a welcome's signature covers, after its context: the gateway's node id (16), the
/// epoch (u32), the hello's ephemeral key (32), the mailbox (16), the cookie (16) and the
/// rate (u16).
pub const WELCOME_SIGNED_LEN: usize = 16 + 4 + 32 + 16 + 16 + 2;
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

/// The keys of one hello and the welcomes that answer it: both sides derive them from
/// X25519 of the client's fresh ephemeral key and the gateway's Sphinx key for the epoch
/// (from the directory the client verified), so only that gateway reads the hello and only
/// it can answer. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct HelloKeys {
    #[zeroize(skip)]
    epoch: Epoch,
    #[zeroize(skip)]
    ephemeral: [u8; 32],
    up: [u8; 32],
    down: [u8; 32],
}

impl core::fmt::Debug for HelloKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HelloKeys")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl HelloKeys {
    fn derive(epoch: Epoch, ephemeral: [u8; 32], gateway: &[u8; 32], shared: &[u8; 32]) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(HELLO_CONTEXT);
        hasher.update(shared);
        hasher.update(&ephemeral);
        hasher.update(gateway);
        hasher.update(&epoch.0.to_be_bytes());
        let mut keys = [0u8; 64];
        hasher.finalize_xof().fill(&mut keys);
        let mut out = Self {
            epoch,
            ephemeral,
            up: [0; 32],
            down: [0; 32],
        };
        out.up.copy_from_slice(&keys[..32]);
        out.down.copy_from_slice(&keys[32..]);
        keys.zeroize();
        out
    }

    /// The hello's ephemeral public key (a welcome echoes it).
    pub fn ephemeral(&self) -> &[u8; 32] {
        &self.ephemeral
    }

    /// The epoch whose gateway key the hello was sealed to.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }
}

fn aead(key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always the right length for ChaCha20-Poly1305.
    #[expect(clippy::expect_used, reason = "the key length is fixed by the type")]
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

/// Seals `plain` in place under `key` and `nonce`; the tag goes into the last 16 bytes.
fn seal(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], out: &mut [u8]) {
    let (plain, tag_at) = out.split_at_mut(out.len() - TAG_LEN);
    // Sealing fails only for inputs longer than ChaCha20's 256 GiB.
    if let Ok(tag) = aead(key).seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        plain,
    ) {
        tag_at.copy_from_slice(tag.as_ref());
    }
}

/// Opens what [`seal`] sealed; `None` when the tag does not match.
fn open<'a>(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], sealed: &'a mut [u8]) -> Option<&'a [u8]> {
    aead(key)
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), sealed)
        .ok()
        .map(|plain| &*plain)
}

/// A mailbox registration sealed to the gateway whose Sphinx key for `epoch` is
/// `gateway_key` (from the verified directory): the secret `token`, the downlink `rate`
/// asked for (0: the gateway's default) and the last `cookie` the gateway gave (zeros: none
/// yet). `secret` is 32 fresh random bytes, used for this hello only. Returns the datagram and
/// the keys its welcome is sealed with; `None` when `gateway_key` is not a usable X25519 key.
pub fn hello(
    gateway_key: &[u8; 32],
    epoch: Epoch,
    secret: [u8; 32],
    token: &[u8; 32],
    rate: u16,
    cookie: &Cookie,
) -> Option<([u8; PACKET_LEN], HelloKeys)> {
    let ephemeral = EpochKey::from_secret(epoch, secret);
    let mut shared = ephemeral.agree(gateway_key)?;
    let keys = HelloKeys::derive(epoch, ephemeral.public_key(), gateway_key, &shared);
    shared.zeroize();
    let mut out = [0u8; PACKET_LEN];
    out[0] = HELLO;
    out[1..5].copy_from_slice(&epoch.0.to_be_bytes());
    out[5..37].copy_from_slice(&keys.ephemeral);
    let aad: [u8; 5] = out[..5].try_into().ok()?;
    let sealed = &mut out[37..37 + SEALED_HELLO_LEN];
    sealed[..32].copy_from_slice(token);
    sealed[32..34].copy_from_slice(&rate.to_be_bytes());
    sealed[34..50].copy_from_slice(cookie);
    seal(&keys.up, [0; 12], &aad, sealed);
    Some((out, keys))
}

/// A hello the gateway opened.
pub struct OpenedHello {
    /// The client's secret token (zeroized on drop).
    pub token: zeroize::Zeroizing<[u8; 32]>,
    /// The downlink rate asked for.
    pub rate: u16,
    /// The cookie echoed.
    pub cookie: Cookie,
    /// The keys to seal the welcome with.
    pub keys: HelloKeys,
}

impl core::fmt::Debug for OpenedHello {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenedHello")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

/// The gateway opens a hello with its Sphinx key for the hello's epoch (`key`, whose public
/// half is `public`); `None` when the ephemeral key is unusable or the seal does not open
/// (sealed to another key, or altered).
pub fn open_hello(
    key: &EpochKey,
    public: &[u8; 32],
    ephemeral: &[u8; 32],
    sealed: &[u8; SEALED_HELLO_LEN],
) -> Option<OpenedHello> {
    let mut shared = key.agree(ephemeral)?;
    let keys = HelloKeys::derive(key.epoch(), *ephemeral, public, &shared);
    shared.zeroize();
    let mut aad = [HELLO, 0, 0, 0, 0];
    aad[1..].copy_from_slice(&key.epoch().0.to_be_bytes());
    let mut buf = zeroize::Zeroizing::new(*sealed);
    let plain = open(&keys.up, [0; 12], &aad, &mut buf[..])?;
    let mut token = zeroize::Zeroizing::new([0u8; 32]);
    token.copy_from_slice(&plain[..32]);
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&plain[34..50]);
    Some(OpenedHello {
        token,
        rate: u16::from_be_bytes([plain[32], plain[33]]),
        cookie,
        keys,
    })
}

/// What a welcome's signature covers (after [`WELCOME_CONTEXT`]).
pub fn welcome_signed(
    gateway: NodeId,
    keys: &HelloKeys,
    mailbox: MailboxId,
    cookie: &Cookie,
    rate: u16,
) -> [u8; WELCOME_SIGNED_LEN] {
    let mut out = [0u8; WELCOME_SIGNED_LEN];
    out[..16].copy_from_slice(&gateway.0);
    out[16..20].copy_from_slice(&keys.epoch.0.to_be_bytes());
    out[20..52].copy_from_slice(&keys.ephemeral);
    out[52..68].copy_from_slice(&mailbox.0);
    out[68..84].copy_from_slice(cookie);
    out[84..86].copy_from_slice(&rate.to_be_bytes());
    out
}

/// The answer to a hello: its ephemeral key echoed, the cookie and the rate sealed under the
/// hello's keys with `nonce` (12 fresh random bytes), and the gateway's `signature` over
/// [`welcome_signed`].
pub fn welcome(
    keys: &HelloKeys,
    nonce: [u8; 12],
    cookie: &Cookie,
    rate: u16,
    signature: &[u8; SIGNATURE_LEN],
) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = WELCOME;
    out[1..33].copy_from_slice(&keys.ephemeral);
    out[33..45].copy_from_slice(&nonce);
    let (head, rest) = out.split_at_mut(45);
    let sealed = &mut rest[..SEALED_WELCOME_LEN];
    sealed[..16].copy_from_slice(cookie);
    sealed[16..18].copy_from_slice(&rate.to_be_bytes());
    seal(&keys.down, nonce, &head[..1], sealed);
    out[45 + SEALED_WELCOME_LEN..45 + SEALED_WELCOME_LEN + SIGNATURE_LEN]
        .copy_from_slice(signature);
    out
}

/// The client opens a welcome's sealed part with its hello's keys: the cookie and the rate;
/// `None` when it was not sealed under them (the signature is checked by the caller, who
/// knows the gateway's identity key).
pub fn open_welcome(
    keys: &HelloKeys,
    nonce: &[u8; 12],
    sealed: &[u8; SEALED_WELCOME_LEN],
) -> Option<(Cookie, u16)> {
    let mut buf = *sealed;
    let plain = open(&keys.down, *nonce, &[WELCOME], &mut buf)?;
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&plain[..16]);
    Some((cookie, u16::from_be_bytes([plain[16], plain[17]])))
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
        /// The node the gateway says it is (a claim: the client seals its hello to that
        /// node's key, so only that node can answer it).
        gateway: NodeId,
        /// The descriptors' bytes (not yet verified), each with whether its relay is live.
        descriptors: Vec<(bool, &'a [u8])>,
    },
    /// The mailbox is registered: the answer to the hello with this ephemeral key, its
    /// sealed part ([`open_welcome`]) and the gateway's signature ([`welcome_signed`]).
    Welcome {
        /// The hello's ephemeral key, echoed.
        ephemeral: [u8; 32],
        /// The seal's nonce.
        nonce: [u8; 12],
        /// The cookie and the downlink rate, sealed.
        sealed: [u8; SEALED_WELCOME_LEN],
        /// The gateway's signature.
        signature: [u8; SIGNATURE_LEN],
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
            FromClient::Hello { epoch, .. } => f
                .debug_struct("Hello")
                .field("epoch", epoch)
                .finish_non_exhaustive(),
        }
    }
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
) -> [u8; PACKET_LEN] {
    let mut out = [0u8; PACKET_LEN];
    out[0] = DIR_PAGE;
    out[1..9].copy_from_slice(&nonce);
    out[9] = page;
    out[10] = pages;
    out[11..15].copy_from_slice(&epoch.0.to_be_bytes());
    out[15..31].copy_from_slice(&gateway.0);
    let mut at = 32;
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
    out[31] = count;
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

/// What a client sent: a directory request (nonce, page), a checkpoint request, or a sealed
/// hello. `Debug` shows no key material.
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
    /// A mailbox registration, sealed ([`open_hello`]).
    Hello {
        /// The epoch whose gateway key it is sealed to.
        epoch: Epoch,
        /// The client's ephemeral key for this hello.
        ephemeral: [u8; 32],
        /// The token, the downlink rate asked for and the cookie echoed, sealed.
        sealed: [u8; SEALED_HELLO_LEN],
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
        HELLO => Some(FromClient::Hello {
            epoch: Epoch(u32::from_be_bytes(datagram[1..5].try_into().ok()?)),
            ephemeral: datagram[5..37].try_into().ok()?,
            sealed: datagram[37..37 + SEALED_HELLO_LEN].try_into().ok()?,
        }),
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
            let count = usize::from(datagram[31]);
            let mut descriptors = Vec::with_capacity(count);
            let mut rest = &datagram[32..];
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
                gateway: NodeId(id16(15)),
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
            ephemeral: datagram[1..33].try_into().ok()?,
            nonce: datagram[33..45].try_into().ok()?,
            sealed: datagram[45..45 + SEALED_WELCOME_LEN].try_into().ok()?,
            signature: datagram[45 + SEALED_WELCOME_LEN..45 + SEALED_WELCOME_LEN + SIGNATURE_LEN]
                .try_into()
                .ok()?,
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
        let p = page(nonce, 1, 2, Epoch(5), NodeId([3; 16]), &descriptors);
        match parse(&p).unwrap() {
            FromGateway::Page {
                nonce: n,
                page,
                pages,
                epoch,
                gateway,
                descriptors: got,
            } => {
                assert_eq!((n, page, pages, epoch), (nonce, 1, 2, Epoch(5)));
                assert_eq!(gateway, NodeId([3; 16]));
                assert_eq!(got.len(), PER_PAGE);
                assert_eq!(got[5], (false, &descriptors[5].1[..]));
                assert_eq!(got[4], (true, &descriptors[4].1[..]));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(mailbox_of(&token), mailbox_of(&token));
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
        let mut bad = page(nonce, 0, 1, Epoch(5), NodeId([3; 16]), &descriptors[..1]);
        bad[33..35].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(parse(&bad), None);
    }

    /// A hello opens only with the gateway key it was sealed to, and its welcome only with
    /// that hello's keys; a flipped bit anywhere in either seal is refused.
    #[test]
    fn hellos_and_welcomes_open_only_for_their_keys() {
        let epoch = Epoch(9);
        let gateway = EpochKey::from_secret(epoch, [0x31; 32]);
        let public = gateway.public_key();
        let token = [0x42u8; 32];
        let (datagram, client_keys) =
            hello(&public, epoch, [0x77; 32], &token, 100, &[5; 16]).unwrap();
        assert!(
            !datagram.windows(32).any(|w| w == token),
            "the token is never in clear"
        );
        let Some(FromClient::Hello {
            epoch: e,
            ephemeral,
            sealed,
        }) = parse_request(&datagram)
        else {
            panic!("not a hello");
        };
        assert_eq!((e, &ephemeral), (epoch, client_keys.ephemeral()));
        let opened = open_hello(&gateway, &public, &ephemeral, &sealed).unwrap();
        assert_eq!(
            (*opened.token, opened.rate, opened.cookie),
            (token, 100, [5; 16])
        );
        // Another gateway's key, another epoch's, or one flipped bit: nothing opens.
        let other = EpochKey::from_secret(epoch, [0x32; 32]);
        assert!(open_hello(&other, &other.public_key(), &ephemeral, &sealed).is_none());
        let later = EpochKey::from_secret(Epoch(10), [0x31; 32]);
        assert!(open_hello(&later, &public, &ephemeral, &sealed).is_none());
        for bit in [0, 8 * 40, 8 * SEALED_HELLO_LEN - 1] {
            let mut altered = sealed;
            altered[bit / 8] ^= 1 << (bit % 8);
            assert!(open_hello(&gateway, &public, &ephemeral, &altered).is_none());
        }
        assert!(hello(&[0; 32], epoch, [1; 32], &token, 0, &[0; 16]).is_none());

        let signature = [0xab; SIGNATURE_LEN];
        let answer = welcome(&opened.keys, [3; 12], &[6; 16], 40, &signature);
        let Some(FromGateway::Welcome {
            ephemeral: echoed,
            nonce,
            sealed,
            signature: s,
        }) = parse(&answer)
        else {
            panic!("not a welcome");
        };
        assert_eq!((&echoed, s), (client_keys.ephemeral(), signature));
        assert_eq!(
            open_welcome(&client_keys, &nonce, &sealed),
            Some(([6; 16], 40))
        );
        let mut altered = sealed;
        altered[0] ^= 1;
        assert_eq!(open_welcome(&client_keys, &nonce, &altered), None);
        let (_, stranger) = hello(&public, epoch, [0x78; 32], &token, 100, &[5; 16]).unwrap();
        assert_eq!(open_welcome(&stranger, &nonce, &sealed), None);
        // Both sides sign and check the same bytes.
        let mailbox = mailbox_of(&token);
        assert_eq!(
            welcome_signed(NodeId([1; 16]), &opened.keys, mailbox, &[6; 16], 40),
            welcome_signed(NodeId([1; 16]), &client_keys, mailbox, &[6; 16], 40)
        );
    }
}
