//! Processing a packet at a relay, in place on the receive buffer: check, unwrap one layer,
//! and say what to do with it. No allocation, no panic on any input.

use curve25519_dalek::edwards::EdwardsPoint;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::{
    crypto::{self, HopKeys, ReplayTag},
    format::{
        ALPHA_AT, ALPHA_LEN, BETA_AT, BETA_MAX, BLOCK_MAX, COMMAND_LEN, COVER_MAILBOX, Command,
        DelayMs, EPOCH_AT, Epoch, Format, MAC_LEN, MailboxId, NodeId, PACKET_LEN, PAYLOAD_TAG_LEN,
        PREFIX_LEN, SurbId, VERSION_AT,
    },
};

/// A relay's Sphinx secret key for one epoch.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochKey {
    #[zeroize(skip)]
    epoch: Epoch,
    secret: [u8; 32],
}

impl core::fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("EpochKey")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl EpochKey {
    /// A key for `epoch` from 32 secret bytes (drawn from a CSPRNG by the caller).
    pub fn from_secret(epoch: Epoch, secret: [u8; 32]) -> Self {
        Self { epoch, secret }
    }

    /// The epoch it is for.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The X25519 public key clients route with.
    pub fn public_key(&self) -> [u8; 32] {
        crypto::x25519_base(&self.secret)
    }

    /// X25519 of this key with `public`, for what is not a packet (a client link's hello is
    /// sealed to its gateway's key for the epoch; the caller derives its keys under a context
    /// of its own). `None` when `public` is not a canonical encoding, not on the curve, or of
    /// small order (the result would be the same for every secret).
    pub fn agree(&self, public: &[u8; 32]) -> Option<[u8; 32]> {
        use curve25519_dalek::traits::IsIdentity as _;
        let shared = crypto::point_mul(&crypto::decode_point(public)?, &self.secret);
        (!shared.is_identity()).then(|| crypto::u_of(&shared))
    }
}

/// The keys a relay processes with: the current epoch's, and during the overlap after a
/// rotation the previous epoch's. The caller drops `previous` when the overlap ends.
#[derive(Clone, Debug)]
pub struct NodeKeys {
    /// The current epoch's key.
    pub current: EpochKey,
    /// The previous epoch's key, while packets made under it are still accepted.
    pub previous: Option<EpochKey>,
    /// The network's format. A relay sets it: a network runs one format, and packets of the
    /// other are dropped as [`DropReason::UnknownVersion`] (a minority format would stand out
    /// on every link). `None` accepts both (tests, tools).
    pub format: Option<Format>,
}

impl NodeKeys {
    fn for_epoch(&self, epoch: Epoch) -> Result<&EpochKey, DropReason> {
        if epoch == self.current.epoch {
            return Ok(&self.current);
        }
        if let Some(previous) = &self.previous
            && previous.epoch == epoch
        {
            return Ok(previous);
        }
        if epoch < self.current.epoch {
            Err(DropReason::PastEpoch)
        } else {
            Err(DropReason::FutureEpoch)
        }
    }
}

/// Why a packet was dropped. `Copy`, so hot paths can count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// The buffer is not exactly one packet long.
    #[error("wrong packet length")]
    WrongLength,
    /// The version byte is not one this relay speaks.
    #[error("unknown version")]
    UnknownVersion,
    /// Made under an epoch whose key is gone (older than the overlap).
    #[error("past epoch")]
    PastEpoch,
    /// Made under an epoch this relay has no key for yet.
    #[error("future epoch")]
    FutureEpoch,
    /// α is not a point on Curve25519, or a low-order one (the shared secret would be zero).
    #[error("invalid group element")]
    InvalidElement,
    /// The header MAC does not verify: tampered, or not for this relay.
    #[error("header MAC mismatch")]
    BadMac,
    /// This packet (its shared secret) was seen before in this epoch.
    #[error("replay")]
    Replay,
    /// The decrypted routing command is not a valid one.
    #[error("malformed routing command")]
    BadCommand,
    /// The final hop found the payload's zero tag broken: it was modified on the way.
    #[error("payload tampered")]
    PayloadTampered,
}

impl DropReason {
    /// Every reason, for counters.
    pub const ALL: [DropReason; 9] = [
        DropReason::WrongLength,
        DropReason::UnknownVersion,
        DropReason::PastEpoch,
        DropReason::FutureEpoch,
        DropReason::InvalidElement,
        DropReason::BadMac,
        DropReason::Replay,
        DropReason::BadCommand,
        DropReason::PayloadTampered,
    ];
}

/// What to do with a processed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Processed {
    /// Send the rewritten buffer (same length) to `next` after `delay`.
    Forward {
        /// Next relay.
        next: NodeId,
        /// How long to hold it.
        delay: DelayMs,
        /// The packet's replay tag at this hop.
        tag: ReplayTag,
    },
    /// Deliver the payload's message area (bytes [`PAYLOAD_AT`]+16 ..) to `mailbox`.
    Deliver {
        /// Destination mailbox or exit service.
        mailbox: MailboxId,
        /// How long to hold it.
        delay: DelayMs,
        /// The packet's replay tag at this hop.
        tag: ReplayTag,
    },
    /// Deliver a SURB reply: the payload is opaque here, its owner opens it.
    DeliverReply {
        /// The SURB creator's mailbox.
        mailbox: MailboxId,
        /// Which SURB it answers.
        surb: SurbId,
        /// How long to hold it.
        delay: DelayMs,
        /// The packet's replay tag at this hop.
        tag: ReplayTag,
    },
}

/// Remembers the replay tags of one relay's packets, per epoch. The relay dataplane provides
/// a lock-free, bounded one; [`MemoryReplayFilter`] serves tests and clients.
pub trait ReplayFilter {
    /// Records `tag` for `epoch`; returns `true` if it was already there (a replay).
    fn check_and_insert(&mut self, epoch: Epoch, tag: &ReplayTag) -> bool;

    /// Called instead of [`check_and_insert`](Self::check_and_insert) for a packet of
    /// `epoch` that needs no entry (one-hop link cover, see [`process`]). A filter that
    /// reports how full it is counts it there too, so that its fill does not tell how much
    /// of the traffic was cover. Does nothing by default.
    fn count_unrecorded(&mut self, _epoch: Epoch) {}
}

/// An unbounded in-memory replay filter (a hash set per epoch). For tests and clients, not for
/// relays, whose filter must be bounded.
#[derive(Debug, Default)]
pub struct MemoryReplayFilter {
    seen: std::collections::HashSet<(Epoch, [u8; 16])>,
}

impl ReplayFilter for MemoryReplayFilter {
    fn check_and_insert(&mut self, epoch: Epoch, tag: &ReplayTag) -> bool {
        !self.seen.insert((epoch, tag.0))
    }
}

/// What the header says before any cryptography: format, epoch, the key for it, and α.
type Precheck<'k> = (Format, Epoch, &'k EpochKey, [u8; 32]);

/// The header fields read before any cryptography: checks length, version and epoch.
fn precheck<'k>(packet: &[u8], keys: &'k NodeKeys) -> Result<Precheck<'k>, DropReason> {
    if packet.len() != PACKET_LEN {
        return Err(DropReason::WrongLength);
    }
    let format = Format::from_version(packet[VERSION_AT])
        .filter(|f| keys.format.is_none_or(|only| only == *f))
        .ok_or(DropReason::UnknownVersion)?;
    let epoch = Epoch(u32::from_be_bytes([
        packet[EPOCH_AT],
        packet[EPOCH_AT + 1],
        packet[EPOCH_AT + 2],
        packet[EPOCH_AT + 3],
    ]));
    let key = keys.for_epoch(epoch)?;
    let mut alpha = [0u8; 32];
    alpha.copy_from_slice(&packet[ALPHA_AT..BETA_AT]);
    Ok((format, epoch, key, alpha))
}

/// Processes one packet in place with this relay's `keys`, consulting and updating `replay`
/// (except for one-hop link cover, delivered to [`COVER_MAILBOX`]: it is dropped on arrival,
/// so it needs no replay tag, and a full filter must not stop it).
///
/// On `Forward` the buffer holds the packet for the next hop (same length); on the deliver
/// variants its payload area holds the plaintext (for `Deliver`) or the still-wrapped reply
/// (for `DeliverReply`). On a drop the buffer's contents are unspecified.
pub fn process(
    packet: &mut [u8],
    keys: &NodeKeys,
    replay: &mut impl ReplayFilter,
) -> Result<Processed, DropReason> {
    let (format, epoch, key, alpha) = precheck(packet, keys)?;
    let point = crypto::decode_point(&alpha).ok_or(DropReason::InvalidElement)?;
    let mut shared = crypto::mul(&point, &key.secret);
    let mut blinding = Blinding::default();
    let result = finish(format, packet, epoch, &shared, replay, &mut blinding);
    shared.zeroize();
    if blinding.needed {
        packet[ALPHA_AT..BETA_AT].copy_from_slice(&crypto::mul(&point, &blinding.scalar));
    }
    result
}

/// Processes a batch, with results identical to calling [`process`] on each packet in order.
/// `results[i]` receives packet `i`'s result; only the first `min(packets.len(),
/// results.len())` packets are processed, so pass slices of equal length.
///
/// The X25519 work of a chunk of packets is done together: on x86_64 CPUs with AVX2
/// (detected at run time) four packets at a time share SIMD lanes (the `pb-x25519-batch` crate);
/// elsewhere each packet runs the same curve25519-dalek path as [`process`].
pub fn process_batch(
    packets: &mut [&mut [u8]],
    keys: &NodeKeys,
    replay: &mut impl ReplayFilter,
    results: &mut [Result<Processed, DropReason>],
) {
    let count = packets.len().min(results.len());
    let lanes = pb_x25519_batch::Backend::detect();
    let mut start = 0;
    while start < count {
        let end = (start + CHUNK).min(count);
        if lanes == pb_x25519_batch::Backend::Portable {
            chunk_portable(
                &mut packets[start..end],
                keys,
                replay,
                &mut results[start..end],
            );
        } else {
            chunk_lanes(
                lanes,
                &mut packets[start..end],
                keys,
                replay,
                &mut results[start..end],
            );
        }
        start = end;
    }
}

/// How many packets [`process_batch`] handles at once (stack space for their secrets).
const CHUNK: usize = 32;

/// One chunk on curve25519-dalek: the shared secrets first, then the rest in packet order.
fn chunk_portable(
    packets: &mut [&mut [u8]],
    keys: &NodeKeys,
    replay: &mut impl ReplayFilter,
    results: &mut [Result<Processed, DropReason>],
) {
    let mut shared = Zeroizing::new([[0u8; 32]; CHUNK]);
    let mut pre: [Option<(Format, Epoch, EdwardsPoint)>; CHUNK] = [None; CHUNK];
    for (i, packet) in packets.iter().enumerate() {
        match precheck(packet, keys) {
            Ok((format, epoch, key, alpha)) => match crypto::decode_point(&alpha) {
                Some(point) => {
                    shared[i] = crypto::mul(&point, &key.secret);
                    pre[i] = Some((format, epoch, point));
                }
                None => results[i] = Err(DropReason::InvalidElement),
            },
            Err(reason) => results[i] = Err(reason),
        }
    }
    let mut blinding = Blinding::default();
    for (i, packet) in packets.iter_mut().enumerate() {
        if let Some((format, epoch, point)) = pre[i] {
            results[i] = finish(format, packet, epoch, &shared[i], replay, &mut blinding);
            if blinding.needed {
                packet[ALPHA_AT..BETA_AT].copy_from_slice(&crypto::mul(&point, &blinding.scalar));
            }
        }
    }
}

/// One chunk in SIMD lanes: the on-curve checks and shared secrets of the chunk together, then
/// MAC, replay and unwrap in packet order, then the blinded α of every forwarded packet
/// together.
fn chunk_lanes(
    lanes: pb_x25519_batch::Backend,
    packets: &mut [&mut [u8]],
    keys: &NodeKeys,
    replay: &mut impl ReplayFilter,
    results: &mut [Result<Processed, DropReason>],
) {
    // Jobs are compacted: job j belongs to packet index[j].
    let mut scalars = Zeroizing::new([[0u8; 32]; CHUNK]);
    let mut alphas = [[0u8; 32]; CHUNK];
    let mut epochs = [(Format::V1, Epoch(0)); CHUNK];
    let mut index = [0usize; CHUNK];
    let mut jobs = 0;
    for (i, packet) in packets.iter().enumerate() {
        match precheck(packet, keys) {
            Ok((format, epoch, key, alpha)) if crypto::is_canonical(&alpha) => {
                scalars[jobs] = key.secret;
                alphas[jobs] = alpha;
                epochs[jobs] = (format, epoch);
                index[jobs] = i;
                jobs += 1;
            }
            Ok(_) => results[i] = Err(DropReason::InvalidElement),
            Err(reason) => results[i] = Err(reason),
        }
    }
    let mut on_curve = [false; CHUNK];
    let mut shared = Zeroizing::new([[0u8; 32]; CHUNK]);
    let in_lanes = full_groups(jobs);
    pb_x25519_batch::on_curve_many_with(lanes, &alphas[..in_lanes], &mut on_curve[..in_lanes]);
    pb_x25519_batch::x25519_many_with(
        lanes,
        &scalars[..in_lanes],
        &alphas[..in_lanes],
        &mut shared[..in_lanes],
    );
    // The one or two jobs left over would waste most of a group of four: one at a time.
    for j in in_lanes..jobs {
        if let Some(point) = crypto::decode_point(&alphas[j]) {
            on_curve[j] = true;
            shared[j] = crypto::mul(&point, &scalars[j]);
        }
    }

    // Blinding jobs (v1 only) reuse the scalar slots: job f blinds packet forward[f].
    let mut forward = [0usize; CHUNK];
    let mut forwards = 0;
    let mut blinding = Blinding::default();
    for j in 0..jobs {
        let i = index[j];
        if !on_curve[j] {
            results[i] = Err(DropReason::InvalidElement);
            continue;
        }
        let (format, epoch) = epochs[j];
        results[i] = finish(format, packets[i], epoch, &shared[j], replay, &mut blinding);
        if blinding.needed {
            scalars[forwards] = blinding.scalar;
            alphas[forwards] = alphas[j];
            forward[forwards] = i;
            forwards += 1;
        }
    }
    let mut blinded = [[0u8; 32]; CHUNK];
    let in_lanes = full_groups(forwards);
    pb_x25519_batch::x25519_many_with(
        lanes,
        &scalars[..in_lanes],
        &alphas[..in_lanes],
        &mut blinded[..in_lanes],
    );
    for f in in_lanes..forwards {
        // On the curve: checked above for every job that reached `finish`.
        if let Some(point) = crypto::decode_point(&alphas[f]) {
            blinded[f] = crypto::mul(&point, &scalars[f]);
        }
    }
    for f in 0..forwards {
        packets[forward[f]][ALPHA_AT..BETA_AT].copy_from_slice(&blinded[f]);
    }
}

/// How many of `jobs` go to the SIMD lanes: all of them, except one or two left over after
/// the groups of four (a group of four costs about as much as two operations one at a time,
/// so a lone job or a pair is cheaper outside the lanes; three still fill a group well).
fn full_groups(jobs: usize) -> usize {
    match jobs % 4 {
        1 | 2 => jobs - jobs % 4,
        _ => jobs,
    }
}

/// The v1 blinding a forwarded packet still needs: α times `scalar` becomes the next α.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct Blinding {
    #[zeroize(skip)]
    needed: bool,
    scalar: [u8; 32],
}

/// Everything after the shared secret, except the v1 blinding of α: `blinding` says whether
/// the caller must blind α and with what.
fn finish(
    format: Format,
    packet: &mut [u8],
    epoch: Epoch,
    shared: &[u8; 32],
    replay: &mut impl ReplayFilter,
    blinding: &mut Blinding,
) -> Result<Processed, DropReason> {
    blinding.needed = false;
    if shared == &[0u8; 32] {
        return Err(DropReason::InvalidElement);
    }
    let (block_len, beta_len, gamma_at) =
        (format.block_len(), format.beta_len(), format.gamma_at());
    let keys = HopKeys::derive(format, shared);
    let expected = crypto::header_mac(
        &keys.mac,
        &packet[..PREFIX_LEN],
        &packet[ALPHA_AT..BETA_AT],
        &packet[BETA_AT..gamma_at],
    );
    if !crypto::mac_eq(&expected, &packet[gamma_at..gamma_at + MAC_LEN]) {
        return Err(DropReason::BadMac);
    }

    // β ⊕ ρ, with one zero block appended: this hop's block, then the next β.
    // The keystream links this packet's input and output β: it must not outlive the call.
    let mut stream = Zeroizing::new([0u8; BETA_MAX + BLOCK_MAX]);
    let stream = &mut stream[..beta_len + block_len];
    crypto::header_stream(&keys.stream, stream);
    let mut block = Zeroizing::new([0u8; BLOCK_MAX]);
    for (i, b) in block[..block_len].iter_mut().enumerate() {
        *b = packet[BETA_AT + i] ^ stream[i];
    }
    let mut command = [0u8; COMMAND_LEN];
    command.copy_from_slice(&block[..COMMAND_LEN]);
    let command = Command::decode(&command);

    // The replay check, after this hop's routing command is read (the packet is not yet
    // changed) and before anything is done with it. One-hop link cover is not recorded, so
    // that a full replay filter, which refuses what it cannot record, never stops cover
    // (docs/threat-model.md, "Replay"). This is safe because:
    // - whether a packet is link cover comes from its own routing command, which the header
    //   MAC just verified: no one can turn a real packet or a loop into "cover" without
    //   breaking the MAC, and a replayed copy of one decodes to the same command as the
    //   original, so it is recorded and caught as before;
    // - a packet for COVER_MAILBOX is counted and dropped by the relay: it goes to no one and
    //   leaves nothing on any link, so a replayed one changes nothing but a counter. Anyone
    //   can make fresh one-hop packets for it with this relay's public key anyway, so
    //   replaying them gives an attacker nothing new;
    // - the mailbox is compared in constant time, so the time taken does not say how much of
    //   a real mailbox id matched. The only difference in time, one table probe fewer, is
    //   between packets this relay drops and packets it keeps, inside the relay: what leaves
    //   it leaves on the links' constant-rate slots;
    // - the filter still counts the packet (`count_unrecorded`), so that its fill, which an
    //   operator sees, does not say how much of the traffic was cover.
    let link_cover = matches!(
        command,
        Some(Command::Deliver { mailbox, .. }) if crypto::mac_eq(&mailbox.0, &COVER_MAILBOX.0)
    );
    if link_cover {
        replay.count_unrecorded(epoch);
    } else if replay.check_and_insert(epoch, &keys.tag) {
        return Err(DropReason::Replay);
    }

    let beta = &mut packet[BETA_AT..gamma_at];
    for i in 0..beta_len - block_len {
        beta[i] = beta[i + block_len] ^ stream[i + block_len];
    }
    beta[beta_len - block_len..].copy_from_slice(&stream[beta_len..]);
    crypto::lioness_decrypt(&keys.payload, &mut packet[format.payload_at()..]);

    let tag = keys.tag;
    // v2 blocks carry the next hop's α after the command; a delivering block's must be zero.
    let next_alpha = &block[COMMAND_LEN..block_len];
    match command.ok_or(DropReason::BadCommand)? {
        Command::Forward { next, delay, mac } => {
            match format {
                Format::V1 => {
                    blinding.scalar.copy_from_slice(&keys.blinding);
                    blinding.needed = true;
                }
                Format::V2 => packet[ALPHA_AT..ALPHA_AT + ALPHA_LEN].copy_from_slice(next_alpha),
            }
            packet[gamma_at..gamma_at + MAC_LEN].copy_from_slice(&mac);
            Ok(Processed::Forward { next, delay, tag })
        }
        _ if next_alpha.iter().any(|&b| b != 0) => Err(DropReason::BadCommand),
        Command::Deliver { mailbox, delay } => {
            let payload_at = format.payload_at();
            if !crypto::mac_eq(
                &packet[payload_at..payload_at + PAYLOAD_TAG_LEN],
                &[0u8; PAYLOAD_TAG_LEN],
            ) {
                return Err(DropReason::PayloadTampered);
            }
            Ok(Processed::Deliver {
                mailbox,
                delay,
                tag,
            })
        }
        Command::DeliverReply {
            mailbox,
            surb,
            delay,
        } => Ok(Processed::DeliverReply {
            mailbox,
            surb,
            delay,
            tag,
        }),
    }
}

/// The message area of a delivered packet's payload (empty for an unknown version).
pub fn message(packet: &[u8]) -> &[u8] {
    match payload_at(packet) {
        Some(at) => packet.get(at + PAYLOAD_TAG_LEN..).unwrap_or(&[]),
        None => &[],
    }
}

/// The payload area of a packet, what a SURB's owner opens (empty for an unknown version).
pub fn payload_mut(packet: &mut [u8]) -> &mut [u8] {
    match payload_at(packet).and_then(|at| packet.get_mut(at..)) {
        Some(p) => p,
        None => &mut [],
    }
}

/// Where the payload starts, by the packet's version byte.
fn payload_at(packet: &[u8]) -> Option<usize> {
    let format = Format::from_version(*packet.get(VERSION_AT)?)?;
    Some(format.payload_at())
}
