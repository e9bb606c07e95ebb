//! Building packets (client side) and single-use reply blocks (SURBs).
//!
//! All randomness comes from a 32-byte seed the caller draws from a CSPRNG, so creation is
//! deterministic for tests and vectors and does no I/O.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{
    crypto::{self, HopKeys, LionessKeys, SeedStream},
    format::{
        ALPHA_AT, BETA_AT, BETA_LEN, BLOCK_LEN, Command, DelayMs, EPOCH_AT, Epoch, GAMMA_AT,
        HEADER_LEN, MAC_LEN, MAX_HOPS, MESSAGE_LEN, MailboxId, NodeId, PACKET_LEN, PAYLOAD_AT,
        PAYLOAD_TAG_LEN, PREFIX_LEN, SurbId, VERSION, VERSION_AT,
    },
};

/// One relay on a route: its id, its Sphinx public key for the packet's epoch, and how long
/// it should hold the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// The relay's id, as routing commands name it.
    pub node: NodeId,
    /// Its X25519 public key for the epoch.
    pub public_key: [u8; 32],
    /// Delay the relay applies before forwarding (or delivering).
    pub delay: DelayMs,
}

/// Why a packet or SURB could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// A route needs between 1 and [`MAX_HOPS`] hops.
    #[error("a route needs 1 to {MAX_HOPS} hops, got {0}")]
    BadRouteLength(usize),
    /// The message is longer than [`MESSAGE_LEN`].
    #[error("message of {0} bytes exceeds the {MESSAGE_LEN}-byte packet capacity")]
    MessageTooLong(usize),
    /// A hop's public key is a low-order point (the shared secret would be zero).
    #[error("hop {0} has an invalid public key")]
    BadPublicKey(usize),
}

/// The header of a packet for `route`, with per-hop keys; shared by packets and SURBs.
struct Built {
    header: [u8; HEADER_LEN],
    hop_payload_keys: [Option<LionessKeys>; MAX_HOPS],
}

fn build_header(
    epoch: Epoch,
    route: &[Hop],
    last: Command,
    rng: &mut SeedStream,
) -> Result<Built, CreateError> {
    let n = route.len();
    if n == 0 || n > MAX_HOPS {
        return Err(CreateError::BadRouteLength(n));
    }
    let mut header = [0u8; HEADER_LEN];
    header[VERSION_AT] = VERSION;
    header[EPOCH_AT..ALPHA_AT].copy_from_slice(&epoch.0.to_be_bytes());

    // Shared secrets s_i = b_{i-1}···b_0·x·P_i; group elements α_0 = x·G, α_{i+1} = b_i·α_i.
    // Every secret intermediate lives in a `Zeroizing` so no copy outlives this function.
    // Points stay in Edwards form between multiplications; only their u-coordinates (what
    // X25519 would output) are hashed or sent.
    let x = Zeroizing::new(rng.key());
    let mut alpha_point = crypto::base_point_mul(&x);
    let mut alphas = [[0u8; 32]; MAX_HOPS];
    alphas[0] = crypto::u_of(&alpha_point);
    let mut keys: [Option<HopKeys>; MAX_HOPS] = Default::default();
    let mut blindings = Zeroizing::new([[0u8; 32]; MAX_HOPS]);
    for (i, hop) in route.iter().enumerate() {
        let public = crypto::decode_point(&hop.public_key).ok_or(CreateError::BadPublicKey(i))?;
        let mut point = crypto::point_mul(&public, &x);
        for b in &blindings[..i] {
            point = crypto::point_mul(&point, b);
        }
        let s = Zeroizing::new(crypto::u_of(&point));
        if *s == [0u8; 32] {
            return Err(CreateError::BadPublicKey(i));
        }
        let k = HopKeys::derive(&s);
        blindings[i] = k.blinding;
        if i + 1 < n {
            alpha_point = crypto::point_mul(&alpha_point, &k.blinding);
            alphas[i + 1] = crypto::u_of(&alpha_point);
        }
        keys[i] = Some(k);
    }
    let keys: [&HopKeys; MAX_HOPS] = {
        let mut out = [None; MAX_HOPS];
        for (slot, k) in out.iter_mut().zip(keys.iter()) {
            *slot = k.as_ref();
        }
        // Unused slots are never read; point them at the first hop's keys.
        let first = out[0].ok_or(CreateError::BadRouteLength(0))?;
        out.map(|k| k.unwrap_or(first))
    };

    // Header streams and the filler (the tail the hops' decryption appends). Keystream and
    // filler are secret: with β_0 they would reveal the route.
    let streams: Zeroizing<[[u8; BETA_LEN + BLOCK_LEN]; MAX_HOPS]> =
        Zeroizing::new(core::array::from_fn(|i| {
            if i < n {
                crypto::header_stream(&keys[i].stream)
            } else {
                [0; BETA_LEN + BLOCK_LEN]
            }
        }));
    let mut filler = Zeroizing::new([0u8; BETA_LEN]);
    for i in 0..n - 1 {
        // φ_{i+1} = (φ_i || 0^R) ⊕ ρ_i[B − i·R .. B + R]
        let len = (i + 1) * BLOCK_LEN;
        let stream = &streams[i][BETA_LEN - i * BLOCK_LEN..BETA_LEN + BLOCK_LEN];
        for (f, s) in filler[..len].iter_mut().zip(stream) {
            *f ^= s;
        }
    }

    // The last hop's β: its command, random padding, then the filler.
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&header[..PREFIX_LEN]);
    let mut beta = Zeroizing::new([0u8; BETA_LEN]);
    let plain_len = BETA_LEN - (n - 1) * BLOCK_LEN;
    beta[..BLOCK_LEN].copy_from_slice(&last.encode());
    rng.fill(&mut beta[BLOCK_LEN..plain_len]);
    for (b, s) in beta[..plain_len]
        .iter_mut()
        .zip(&streams[n - 1][..plain_len])
    {
        *b ^= s;
    }
    beta[plain_len..].copy_from_slice(&filler[..(n - 1) * BLOCK_LEN]);
    let mut gamma = crypto::header_mac(&keys[n - 1].mac, &prefix, &alphas[n - 1], &*beta);

    for i in (0..n - 1).rev() {
        let command = Command::Forward {
            next: route[i + 1].node,
            delay: route[i].delay,
            mac: gamma,
        };
        let mut next = Zeroizing::new([0u8; BETA_LEN]);
        next[..BLOCK_LEN].copy_from_slice(&command.encode());
        next[BLOCK_LEN..].copy_from_slice(&beta[..BETA_LEN - BLOCK_LEN]);
        for (b, s) in next.iter_mut().zip(&streams[i][..BETA_LEN]) {
            *b ^= s;
        }
        beta = next;
        gamma = crypto::header_mac(&keys[i].mac, &prefix, &alphas[i], &*beta);
    }

    header[ALPHA_AT..BETA_AT].copy_from_slice(&alphas[0]);
    header[BETA_AT..GAMMA_AT].copy_from_slice(&*beta);
    header[GAMMA_AT..GAMMA_AT + MAC_LEN].copy_from_slice(&gamma);
    let hop_payload_keys = core::array::from_fn(|i| (i < n).then(|| keys[i].payload.clone()));
    Ok(Built {
        header,
        hop_payload_keys,
    })
}

fn check_message(message: &[u8]) -> Result<(), CreateError> {
    if message.len() > MESSAGE_LEN {
        return Err(CreateError::MessageTooLong(message.len()));
    }
    Ok(())
}

/// Writes `header` and the plaintext payload (zero tag, `message`, zero padding) into `out` and
/// returns the payload area, ready for its Lioness layers. `message` fits (checked).
fn lay_out<'a>(
    out: &'a mut [u8; PACKET_LEN],
    header: &[u8; HEADER_LEN],
    message: &[u8],
) -> &'a mut [u8] {
    out.fill(0);
    out[..HEADER_LEN].copy_from_slice(header);
    let payload = &mut out[PAYLOAD_AT..];
    payload[PAYLOAD_TAG_LEN..PAYLOAD_TAG_LEN + message.len()].copy_from_slice(message);
    payload
}

/// Builds a packet that travels `route` and is delivered by its last hop to `mailbox`, carrying
/// `message` (zero-padded to [`MESSAGE_LEN`]). Returns the first hop to send it to.
pub fn create_packet(
    out: &mut [u8; PACKET_LEN],
    epoch: Epoch,
    route: &[Hop],
    mailbox: MailboxId,
    message: &[u8],
    seed: &[u8; 32],
) -> Result<NodeId, CreateError> {
    check_message(message)?;
    let mut rng = SeedStream::new(seed);
    let last_delay = route.last().map(|h| h.delay).unwrap_or_default();
    let built = build_header(
        epoch,
        route,
        Command::Deliver {
            mailbox,
            delay: last_delay,
        },
        &mut rng,
    )?;
    let payload = lay_out(out, &built.header, message);
    for keys in built.hop_payload_keys.iter().rev().flatten() {
        crypto::lioness_encrypt(keys, payload);
    }
    Ok(route[0].node)
}

/// Bytes of a serialized SURB: first hop, header, payload key.
pub const SURB_LEN: usize = 16 + HEADER_LEN + 32;

/// A single-use reply block, handed to an exit or correspondent: a ready header for the route
/// back to its creator and the key to encrypt the reply's payload with.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Surb {
    #[zeroize(skip)]
    first_hop: NodeId,
    header: [u8; HEADER_LEN],
    key: [u8; 32],
}

impl core::fmt::Debug for Surb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print a SURB's contents: it is a route back to a user.
        f.write_str("Surb(..)")
    }
}

/// What the creator of a SURB keeps to open the reply: its id and the payload keys.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SurbSecrets {
    #[zeroize(skip)]
    id: SurbId,
    key: [u8; 32],
    hop_keys: [[[u8; 32]; 4]; MAX_HOPS],
    hops: usize,
}

impl core::fmt::Debug for SurbSecrets {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SurbSecrets")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl SurbSecrets {
    /// The id the reply's final command carries.
    pub fn id(&self) -> SurbId {
        self.id
    }
}

/// Why a SURB could not be parsed or a reply opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SurbError {
    /// Not [`SURB_LEN`] bytes.
    #[error("a SURB is {SURB_LEN} bytes, got {0}")]
    WrongLength(usize),
    /// The header's version byte is unknown.
    #[error("unknown SURB version")]
    UnknownVersion,
    /// The reply payload was modified on the way (or is not for these secrets).
    #[error("reply payload does not authenticate")]
    Tampered,
    /// The reply is not a whole payload.
    #[error("reply payload has the wrong length")]
    BadPayloadLength,
}

/// Creates a SURB for the route `route` back to `mailbox` (its last hop is the gateway that
/// holds the mailbox), named `id`.
pub fn create_surb(
    epoch: Epoch,
    route: &[Hop],
    mailbox: MailboxId,
    id: SurbId,
    seed: &[u8; 32],
) -> Result<(Surb, SurbSecrets), CreateError> {
    let mut rng = SeedStream::new(seed);
    let last_delay = route.last().map(|h| h.delay).unwrap_or_default();
    let built = build_header(
        epoch,
        route,
        Command::DeliverReply {
            mailbox,
            surb: id,
            delay: last_delay,
        },
        &mut rng,
    )?;
    let key = Zeroizing::new(rng.key());
    let mut hop_keys = Zeroizing::new([[[0u8; 32]; 4]; MAX_HOPS]);
    for (slot, keys) in hop_keys.iter_mut().zip(&built.hop_payload_keys) {
        if let Some(keys) = keys {
            *slot = keys.0;
        }
    }
    let surb = Surb {
        first_hop: route[0].node,
        header: built.header,
        key: *key,
    };
    let secrets = SurbSecrets {
        id,
        key: *key,
        hop_keys: *hop_keys,
        hops: route.len(),
    };
    Ok((surb, secrets))
}

impl Surb {
    /// Serializes the SURB: first hop (16), header, key (32). The bytes hold the reply key, so
    /// they are zeroized when dropped.
    pub fn to_bytes(&self) -> Zeroizing<[u8; SURB_LEN]> {
        let mut out = Zeroizing::new([0u8; SURB_LEN]);
        out[..16].copy_from_slice(&self.first_hop.0);
        out[16..16 + HEADER_LEN].copy_from_slice(&self.header);
        out[16 + HEADER_LEN..].copy_from_slice(&self.key);
        out
    }

    /// Parses a serialized SURB. Any bytes of the right length with a known version parse;
    /// a forged SURB simply produces a packet the network drops.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SurbError> {
        if bytes.len() != SURB_LEN {
            return Err(SurbError::WrongLength(bytes.len()));
        }
        if bytes[16 + VERSION_AT] != VERSION {
            return Err(SurbError::UnknownVersion);
        }
        let mut first_hop = [0u8; 16];
        first_hop.copy_from_slice(&bytes[..16]);
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&bytes[16..16 + HEADER_LEN]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[16 + HEADER_LEN..]);
        Ok(Self {
            first_hop: NodeId(first_hop),
            header,
            key,
        })
    }

    /// Builds the reply packet carrying `message`; consumes the SURB (single use). Returns the
    /// first hop to send it to.
    pub fn into_reply(
        self,
        out: &mut [u8; PACKET_LEN],
        message: &[u8],
    ) -> Result<NodeId, CreateError> {
        check_message(message)?;
        let payload = lay_out(out, &self.header, message);
        crypto::lioness_encrypt(&LionessKeys::expand(&self.key), payload);
        Ok(self.first_hop)
    }
}

impl SurbSecrets {
    /// Opens a reply delivered to the SURB's mailbox: undoes every hop's payload layer and the
    /// SURB key, checks the zero tag, and returns the message area ([`MESSAGE_LEN`] bytes).
    pub fn open_reply<'a>(&self, payload: &'a mut [u8]) -> Result<&'a [u8], SurbError> {
        if payload.len() != crate::format::PAYLOAD_LEN {
            return Err(SurbError::BadPayloadLength);
        }
        for keys in self.hop_keys[..self.hops].iter().rev() {
            crypto::lioness_encrypt(&LionessKeys(*keys), payload);
        }
        crypto::lioness_decrypt(&LionessKeys::expand(&self.key), payload);
        if !crypto::mac_eq(&payload[..PAYLOAD_TAG_LEN], &[0u8; PAYLOAD_TAG_LEN]) {
            return Err(SurbError::Tampered);
        }
        Ok(&payload[PAYLOAD_TAG_LEN..])
    }
}
