//! Building packets (client side) and single-use reply blocks (SURBs).
//!
//! All randomness comes from a 32-byte seed the caller draws from a CSPRNG, so creation is
//! deterministic for tests and vectors and does no I/O.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{
    crypto::{self, HopKeys, LionessKeys, SeedStream},
    format::{
        ALPHA_AT, ALPHA_LEN, BETA_AT, BETA_MAX, BLOCK_MAX, COMMAND_LEN, Command, DelayMs, EPOCH_AT,
        Epoch, Format, HEADER_MAX, MAX_HOPS, MailboxId, NodeId, PACKET_LEN, PAYLOAD_TAG_LEN,
        PREFIX_LEN, SurbId, VERSION_AT,
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
    /// The message is longer than the format's capacity ([`Format::message_len`]).
    #[error("message of {0} bytes exceeds the {1}-byte packet capacity")]
    MessageTooLong(usize, usize),
    /// A hop's public key is a low-order point (the shared secret would be zero).
    #[error("hop {0} has an invalid public key")]
    BadPublicKey(usize),
}

/// The header of a packet for `route`, with per-hop keys; shared by packets and SURBs.
struct Built {
    format: Format,
    header: [u8; HEADER_MAX],
    hop_payload_keys: [Option<LionessKeys>; MAX_HOPS],
}

/// Each hop's α (as the hop sees it) and keys.
type HopSecrets = ([[u8; 32]; MAX_HOPS], [Option<HopKeys>; MAX_HOPS]);

/// The per-hop group elements and keys of a route. v1: α_0 = x·G, α_{i+1} = b_i·α_i and
/// s_i = b_{i-1}···b_0·x·P_i. v2: α_i = e_i·G and s_i = e_i·P_i for fresh e_i.
fn hop_secrets(
    format: Format,
    route: &[Hop],
    rng: &mut SeedStream,
) -> Result<HopSecrets, CreateError> {
    let mut alphas = [[0u8; 32]; MAX_HOPS];
    let mut keys: [Option<HopKeys>; MAX_HOPS] = Default::default();
    // Every secret intermediate lives in a `Zeroizing` so no copy outlives this function.
    // Points stay in Edwards form between multiplications; only their u-coordinates (what
    // X25519 would output) are hashed or sent.
    match format {
        Format::V1 => {
            let x = Zeroizing::new(rng.key());
            let mut alpha_point = crypto::base_point_mul(&x);
            alphas[0] = crypto::u_of(&alpha_point);
            let mut blindings = Zeroizing::new([[0u8; 32]; MAX_HOPS]);
            for (i, hop) in route.iter().enumerate() {
                let public =
                    crypto::decode_point(&hop.public_key).ok_or(CreateError::BadPublicKey(i))?;
                let mut point = crypto::point_mul(&public, &x);
                for b in &blindings[..i] {
                    point = crypto::point_mul(&point, b);
                }
                let k = hop_keys(format, i, &crypto::u_of(&point))?;
                blindings[i] = k.blinding;
                if i + 1 < route.len() {
                    alpha_point = crypto::point_mul(&alpha_point, &k.blinding);
                    alphas[i + 1] = crypto::u_of(&alpha_point);
                }
                keys[i] = Some(k);
            }
        }
        Format::V2 => {
            for (i, hop) in route.iter().enumerate() {
                let public =
                    crypto::decode_point(&hop.public_key).ok_or(CreateError::BadPublicKey(i))?;
                let e = Zeroizing::new(rng.key());
                alphas[i] = crypto::x25519_base(&e);
                keys[i] = Some(hop_keys(format, i, &crypto::mul(&public, &e))?);
            }
        }
    }
    Ok((alphas, keys))
}

/// Hop `i`'s keys from its shared secret (zeroized here); a zero secret means a low-order key.
fn hop_keys(format: Format, i: usize, shared: &[u8; 32]) -> Result<HopKeys, CreateError> {
    let s = Zeroizing::new(*shared);
    if *s == [0u8; 32] {
        return Err(CreateError::BadPublicKey(i));
    }
    Ok(HopKeys::derive(format, &s))
}

fn build_header(
    format: Format,
    epoch: Epoch,
    route: &[Hop],
    last: Command,
    rng: &mut SeedStream,
) -> Result<Built, CreateError> {
    let n = route.len();
    if n == 0 || n > MAX_HOPS {
        return Err(CreateError::BadRouteLength(n));
    }
    let (block_len, beta_len) = (format.block_len(), format.beta_len());
    let mut header = [0u8; HEADER_MAX];
    header[VERSION_AT] = format.version();
    header[EPOCH_AT..ALPHA_AT].copy_from_slice(&epoch.0.to_be_bytes());

    let (alphas, keys) = hop_secrets(format, route, rng)?;
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
    let stream_len = beta_len + block_len;
    let streams: Zeroizing<[[u8; BETA_MAX + BLOCK_MAX]; MAX_HOPS]> =
        Zeroizing::new(core::array::from_fn(|i| {
            let mut s = [0u8; BETA_MAX + BLOCK_MAX];
            if i < n {
                crypto::header_stream(&keys[i].stream, &mut s[..stream_len]);
            }
            s
        }));
    let mut filler = Zeroizing::new([0u8; BETA_MAX]);
    for i in 0..n - 1 {
        // φ_{i+1} = (φ_i || 0^R) ⊕ ρ_i[B − i·R .. B + R]
        let len = (i + 1) * block_len;
        let stream = &streams[i][beta_len - i * block_len..stream_len];
        for (f, s) in filler[..len].iter_mut().zip(stream) {
            *f ^= s;
        }
    }

    // The last hop's β: its command (and in v2 a zero α), random padding, then the filler.
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&header[..PREFIX_LEN]);
    let mut beta = Zeroizing::new([0u8; BETA_MAX]);
    let plain_len = beta_len - (n - 1) * block_len;
    beta[..COMMAND_LEN].copy_from_slice(&last.encode());
    rng.fill(&mut beta[block_len..plain_len]);
    for (b, s) in beta[..plain_len]
        .iter_mut()
        .zip(&streams[n - 1][..plain_len])
    {
        *b ^= s;
    }
    beta[plain_len..beta_len].copy_from_slice(&filler[..(n - 1) * block_len]);
    let mut gamma =
        crypto::header_mac(&keys[n - 1].mac, &prefix, &alphas[n - 1], &beta[..beta_len]);

    for i in (0..n - 1).rev() {
        let command = Command::Forward {
            next: route[i + 1].node,
            delay: route[i].delay,
            mac: gamma,
        };
        let mut next = Zeroizing::new([0u8; BETA_MAX]);
        next[..COMMAND_LEN].copy_from_slice(&command.encode());
        if format == Format::V2 {
            next[COMMAND_LEN..COMMAND_LEN + ALPHA_LEN].copy_from_slice(&alphas[i + 1]);
        }
        next[block_len..beta_len].copy_from_slice(&beta[..beta_len - block_len]);
        for (b, s) in next[..beta_len].iter_mut().zip(&streams[i][..beta_len]) {
            *b ^= s;
        }
        beta = next;
        gamma = crypto::header_mac(&keys[i].mac, &prefix, &alphas[i], &beta[..beta_len]);
    }

    header[ALPHA_AT..BETA_AT].copy_from_slice(&alphas[0]);
    header[BETA_AT..format.gamma_at()].copy_from_slice(&beta[..beta_len]);
    header[format.gamma_at()..format.header_len()].copy_from_slice(&gamma);
    let hop_payload_keys = core::array::from_fn(|i| (i < n).then(|| keys[i].payload.clone()));
    Ok(Built {
        format,
        header,
        hop_payload_keys,
    })
}

fn check_message(format: Format, message: &[u8]) -> Result<(), CreateError> {
    if message.len() > format.message_len() {
        return Err(CreateError::MessageTooLong(
            message.len(),
            format.message_len(),
        ));
    }
    Ok(())
}

/// Writes the `format` header and the plaintext payload (zero tag, `message`, zero padding)
/// into `out` and returns the payload area, ready for its Lioness layers. `message` fits
/// (checked).
fn lay_out<'a>(
    out: &'a mut [u8; PACKET_LEN],
    format: Format,
    header: &[u8; HEADER_MAX],
    message: &[u8],
) -> &'a mut [u8] {
    out.fill(0);
    out[..format.header_len()].copy_from_slice(&header[..format.header_len()]);
    let payload = &mut out[format.payload_at()..];
    payload[PAYLOAD_TAG_LEN..PAYLOAD_TAG_LEN + message.len()].copy_from_slice(message);
    payload
}

/// Builds a v1 packet that travels `route` and is delivered by its last hop to `mailbox`,
/// carrying `message` (zero-padded to [`MESSAGE_LEN`](crate::MESSAGE_LEN)). Returns the first
/// hop to send it to. [`create_packet_with`] builds either format.
pub fn create_packet(
    out: &mut [u8; PACKET_LEN],
    epoch: Epoch,
    route: &[Hop],
    mailbox: MailboxId,
    message: &[u8],
    seed: &[u8; 32],
) -> Result<NodeId, CreateError> {
    create_packet_with(Format::V1, out, epoch, route, mailbox, message, seed)
}

/// [`create_packet`] in the given format (`message` up to [`Format::message_len`] bytes).
pub fn create_packet_with(
    format: Format,
    out: &mut [u8; PACKET_LEN],
    epoch: Epoch,
    route: &[Hop],
    mailbox: MailboxId,
    message: &[u8],
    seed: &[u8; 32],
) -> Result<NodeId, CreateError> {
    check_message(format, message)?;
    let mut rng = SeedStream::new(format, seed);
    let last_delay = route.last().map(|h| h.delay).unwrap_or_default();
    let built = build_header(
        format,
        epoch,
        route,
        Command::Deliver {
            mailbox,
            delay: last_delay,
        },
        &mut rng,
    )?;
    let payload = lay_out(out, format, &built.header, message);
    for keys in built.hop_payload_keys.iter().rev().flatten() {
        crypto::lioness_encrypt(keys, payload);
    }
    Ok(route[0].node)
}

/// Bytes of a serialized v1 SURB: first hop, header, payload key.
pub const SURB_LEN: usize = Format::V1.surb_len();
/// Bytes of the largest serialized SURB (v2).
pub const SURB_MAX: usize = Format::V2.surb_len();

/// A single-use reply block, handed to an exit or correspondent: a ready header for the route
/// back to its creator and the key to encrypt the reply's payload with.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Surb {
    #[zeroize(skip)]
    format: Format,
    #[zeroize(skip)]
    first_hop: NodeId,
    header: [u8; HEADER_MAX],
    key: [u8; 32],
}

impl core::fmt::Debug for Surb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Never print a SURB's contents: it is a route back to a user.
        f.write_str("Surb(..)")
    }
}

/// A serialized SURB ([`Surb::to_bytes`]): dereferences to its [`Format::surb_len`] bytes and
/// zeroizes them when dropped (they hold the reply key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SurbBytes {
    buf: [u8; SURB_MAX],
    #[zeroize(skip)]
    len: usize,
}

impl core::ops::Deref for SurbBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl AsRef<[u8]> for SurbBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl core::fmt::Debug for SurbBytes {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SurbBytes(..)")
    }
}

/// What the creator of a SURB keeps to open the reply: its id and the payload keys.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SurbSecrets {
    #[zeroize(skip)]
    format: Format,
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
    /// Too short to hold the version byte.
    #[error("a SURB of {0} bytes is too short to name its format")]
    TooShort(usize),
    /// Not the length its format's SURB has ([`Format::surb_len`]).
    #[error("a SURB of this format is {1} bytes, got {0}")]
    WrongLength(usize, usize),
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

/// Creates a v1 SURB for the route `route` back to `mailbox` (its last hop is the gateway
/// that holds the mailbox), named `id`. [`create_surb_with`] builds either format.
pub fn create_surb(
    epoch: Epoch,
    route: &[Hop],
    mailbox: MailboxId,
    id: SurbId,
    seed: &[u8; 32],
) -> Result<(Surb, SurbSecrets), CreateError> {
    create_surb_with(Format::V1, epoch, route, mailbox, id, seed)
}

/// [`create_surb`] in the given format.
pub fn create_surb_with(
    format: Format,
    epoch: Epoch,
    route: &[Hop],
    mailbox: MailboxId,
    id: SurbId,
    seed: &[u8; 32],
) -> Result<(Surb, SurbSecrets), CreateError> {
    let mut rng = SeedStream::new(format, seed);
    let last_delay = route.last().map(|h| h.delay).unwrap_or_default();
    let built = build_header(
        format,
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
        format: built.format,
        first_hop: route[0].node,
        header: built.header,
        key: *key,
    };
    let secrets = SurbSecrets {
        format: built.format,
        id,
        key: *key,
        hop_keys: *hop_keys,
        hops: route.len(),
    };
    Ok((surb, secrets))
}

impl Surb {
    /// The format of the reply this SURB makes.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The epoch whose keys the reply's route was built with.
    pub fn epoch(&self) -> Epoch {
        let mut epoch = [0u8; 4];
        epoch.copy_from_slice(&self.header[EPOCH_AT..ALPHA_AT]);
        Epoch(u32::from_be_bytes(epoch))
    }

    /// Serializes the SURB: first hop (16), header, key (32).
    pub fn to_bytes(&self) -> SurbBytes {
        let header_len = self.format.header_len();
        let mut out = SurbBytes {
            buf: [0u8; SURB_MAX],
            len: self.format.surb_len(),
        };
        out.buf[..16].copy_from_slice(&self.first_hop.0);
        out.buf[16..16 + header_len].copy_from_slice(&self.header[..header_len]);
        out.buf[16 + header_len..out.len].copy_from_slice(&self.key);
        out
    }

    /// Parses a serialized SURB. Any bytes of the right length with a known version parse;
    /// a forged SURB simply produces a packet the network drops.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SurbError> {
        let version = *bytes
            .get(16 + VERSION_AT)
            .ok_or(SurbError::TooShort(bytes.len()))?;
        let format = Format::from_version(version).ok_or(SurbError::UnknownVersion)?;
        let header_len = format.header_len();
        if bytes.len() != format.surb_len() {
            return Err(SurbError::WrongLength(bytes.len(), format.surb_len()));
        }
        let mut first_hop = [0u8; 16];
        first_hop.copy_from_slice(&bytes[..16]);
        let mut header = [0u8; HEADER_MAX];
        header[..header_len].copy_from_slice(&bytes[16..16 + header_len]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[16 + header_len..]);
        Ok(Self {
            format,
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
        check_message(self.format, message)?;
        let payload = lay_out(out, self.format, &self.header, message);
        crypto::lioness_encrypt(&LionessKeys::expand(&self.key), payload);
        Ok(self.first_hop)
    }
}

impl SurbSecrets {
    /// Opens a reply delivered to the SURB's mailbox: undoes every hop's payload layer and the
    /// SURB key, checks the zero tag, and returns the message area
    /// ([`Format::message_len`] bytes).
    pub fn open_reply<'a>(&self, payload: &'a mut [u8]) -> Result<&'a [u8], SurbError> {
        if payload.len() != self.format.payload_len() {
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
