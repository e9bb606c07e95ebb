//! The primitives under PB-Sphinx: per-hop key derivation (blake3), the header stream
//! (ChaCha20), the header MAC (keyed blake3, compared in constant time), the wide-block
//! payload cipher (Lioness over ChaCha20 and keyed blake3) and X25519.
//!
//! Every secret lives in a type that zeroizes itself on drop.

use chacha20::{
    ChaCha20,
    cipher::{KeyIvInit, StreamCipher},
};
use curve25519_dalek::{edwards::EdwardsPoint, montgomery::MontgomeryPoint};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::format::{Format, MAC_LEN, PREFIX_LEN};

/// blake3 derive-key context of the per-hop key schedule (v1).
pub(crate) const CONTEXT_HOP_KEYS: &str = "PhantomBand PB-Sphinx v1 hop keys";
/// blake3 derive-key context of the per-hop key schedule (v2), so that no key is shared
/// between the formats.
pub(crate) const CONTEXT_HOP_KEYS_V2: &str = "PhantomBand PB-Sphinx v2 hop keys";
/// blake3 derive-key context of the randomness a v1 packet is made from.
pub(crate) const CONTEXT_PACKET_RANDOMNESS: &str = "PhantomBand PB-Sphinx v1 packet randomness";
/// The same for v2, so that one seed never gives related packets in the two formats.
pub(crate) const CONTEXT_PACKET_RANDOMNESS_V2: &str = "PhantomBand PB-Sphinx v2 packet randomness";

/// A replay tag: 16 bytes derived from the hop's shared secret, unique per packet and hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplayTag(pub [u8; 16]);

/// Lioness keys: four 32-byte subkeys.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct LionessKeys(pub(crate) [[u8; 32]; 4]);

/// Fills `out` from blake3 in derive-key mode (`context`, `secret`), then clears the hasher's
/// buffer and the reader's block, which both hold `secret`.
fn derive_xof(context: &str, secret: &[u8], out: &mut [u8]) {
    let mut hasher = blake3::Hasher::new_derive_key(context);
    hasher.update(secret);
    let mut reader = hasher.finalize_xof();
    reader.fill(out);
    reader.zeroize();
    hasher.zeroize();
}

/// blake3 derive-key context of a SURB's payload key schedule.
pub(crate) const CONTEXT_SURB_PAYLOAD: &str = "PhantomBand PB-Sphinx v1 SURB payload keys";

impl LionessKeys {
    /// The four subkeys expanded from one 32-byte key.
    pub(crate) fn expand(key: &[u8; 32]) -> Self {
        let mut out = [0u8; 128];
        derive_xof(CONTEXT_SURB_PAYLOAD, key, &mut out);
        let keys = LionessKeys(core::array::from_fn(|i| {
            let mut k = [0u8; 32];
            k.copy_from_slice(&out[i * 32..i * 32 + 32]);
            k
        }));
        out.zeroize();
        keys
    }
}

/// Everything one hop derives from its shared secret.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct HopKeys {
    pub(crate) mac: [u8; 32],
    pub(crate) stream: [u8; 32],
    pub(crate) payload: LionessKeys,
    pub(crate) blinding: [u8; 32],
    #[zeroize(skip)]
    pub(crate) tag: ReplayTag,
}

impl HopKeys {
    /// Derives the keys from the shared secret `s` (one blake3 XOF read of 256 bytes). v2
    /// has no blinding; its `blinding` bytes are derived but unused.
    pub(crate) fn derive(format: Format, shared: &[u8; 32]) -> Self {
        let context = match format {
            Format::V1 => CONTEXT_HOP_KEYS,
            Format::V2 => CONTEXT_HOP_KEYS_V2,
        };
        let mut out = [0u8; 256];
        derive_xof(context, shared, &mut out);
        let take = |at: usize| -> [u8; 32] {
            let mut k = [0u8; 32];
            k.copy_from_slice(&out[at..at + 32]);
            k
        };
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&out[224..240]);
        let keys = HopKeys {
            mac: take(0),
            stream: take(32),
            payload: LionessKeys([take(64), take(96), take(128), take(160)]),
            blinding: take(192),
            tag: ReplayTag(tag),
        };
        out.zeroize();
        keys
    }
}

/// The header MAC over the prefix (version, epoch), α and β, truncated to 16 bytes. Covering
/// α makes every encoding of the group element other than the sender's a MAC failure, so α
/// is not malleable (X25519 maps α and α plus a small-order point to the same secret).
pub(crate) fn header_mac(
    key: &[u8; 32],
    prefix: &[u8],
    alpha: &[u8],
    beta: &[u8],
) -> [u8; MAC_LEN] {
    debug_assert_eq!(prefix.len(), PREFIX_LEN);
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(prefix);
    hasher.update(alpha);
    hasher.update(beta);
    let mut full = *hasher.finalize().as_bytes();
    hasher.zeroize();
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(&full[..MAC_LEN]);
    full.zeroize();
    mac
}

/// Constant-time equality of two MACs.
pub(crate) fn mac_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The header stream ρ: ChaCha20 keystream under `key`, nonce zero, filling `out` (β plus one
/// block of the packet's format).
pub(crate) fn header_stream(key: &[u8; 32], out: &mut [u8]) {
    out.fill(0);
    xor_stream(key, out);
}

/// XORs the ChaCha20 keystream (nonce zero) under `key` into `data`.
pub(crate) fn xor_stream(key: &[u8; 32], data: &mut [u8]) {
    let mut cipher = ChaCha20::new(key.into(), &[0u8; 12].into());
    cipher.apply_keystream(data);
}

/// Lioness split: the left part is one key long.
const LEFT: usize = 32;

fn xor_key(a: &[u8], b: &[u8; 32]) -> [u8; 32] {
    let mut k = [0u8; 32];
    for i in 0..32 {
        k[i] = a[i] ^ b[i];
    }
    k
}

fn keyed_hash_into(key: &[u8; 32], data: &[u8], left: &mut [u8]) {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(data);
    let mut h = *hasher.finalize().as_bytes();
    hasher.zeroize();
    for (l, h) in left.iter_mut().zip(&h) {
        *l ^= h;
    }
    h.zeroize();
}

/// Lioness encryption in place: any change to the ciphertext turns the whole decryption into
/// noise, so a tagged payload cannot be recognised downstream.
pub(crate) fn lioness_encrypt(keys: &LionessKeys, block: &mut [u8]) {
    let (left, right) = block.split_at_mut(LEFT);
    let mut k = xor_key(left, &keys.0[0]);
    xor_stream(&k, right);
    keyed_hash_into(&keys.0[1], right, left);
    k = xor_key(left, &keys.0[2]);
    xor_stream(&k, right);
    keyed_hash_into(&keys.0[3], right, left);
    k.zeroize();
}

/// Lioness decryption in place (the inverse of [`lioness_encrypt`]).
pub(crate) fn lioness_decrypt(keys: &LionessKeys, block: &mut [u8]) {
    let (left, right) = block.split_at_mut(LEFT);
    keyed_hash_into(&keys.0[3], right, left);
    let mut k = xor_key(left, &keys.0[2]);
    xor_stream(&k, right);
    keyed_hash_into(&keys.0[1], right, left);
    k = xor_key(left, &keys.0[0]);
    xor_stream(&k, right);
    k.zeroize();
}

/// A group element α as received: decoded to Edwards coordinates once, multiplied by several
/// scalars. `None` for a u-coordinate that is not on Curve25519 (a twist point, which no
/// honest sender produces).
///
/// Only the canonical encoding is accepted (top bit clear, value below 2^255 − 19): X25519
/// itself ignores the top bit and reduces mod p, which would let anyone change α's bytes
/// without changing the point — a malleable header field.
pub(crate) fn decode_point(u: &[u8; 32]) -> Option<EdwardsPoint> {
    if !is_canonical(u) {
        return None;
    }
    MontgomeryPoint(*u).to_edwards(0)
}

/// Whether `u` is the canonical little-endian encoding of a field element (< 2^255 − 19).
pub(crate) fn is_canonical(u: &[u8; 32]) -> bool {
    if u[31] & 0x80 != 0 {
        return false;
    }
    // p = 2^255 − 19 is 0xed, then 30 bytes of 0xff, then 0x7f (little-endian).
    let at_least_p = u[31] == 0x7f && u[1..31].iter().all(|&b| b == 0xff) && u[0] >= 0xed;
    !at_least_p
}

/// X25519 of a decoded point: `u([clamp(scalar)]·P)`, equal to RFC 7748's function for points on
/// the curve. The multiplication runs on curve25519-dalek's Edwards arithmetic, whose vector
/// backend (AVX2, or AVX-512 IFMA where built for it) is chosen at run time with a serial
/// fallback; it is about twice as fast as the serial Montgomery ladder and constant-time
/// either way.
pub(crate) fn mul(point: &EdwardsPoint, scalar: &[u8; 32]) -> [u8; 32] {
    u_of(&point_mul(point, scalar))
}

/// `[clamp(scalar)]·P`, kept in Edwards form for further multiplications.
pub(crate) fn point_mul(point: &EdwardsPoint, scalar: &[u8; 32]) -> EdwardsPoint {
    point.mul_clamped(*scalar)
}

/// `[clamp(scalar)]·G` in Edwards form (precomputed tables).
pub(crate) fn base_point_mul(scalar: &[u8; 32]) -> EdwardsPoint {
    EdwardsPoint::mul_base_clamped(*scalar)
}

/// The u-coordinate (X25519 encoding) of a point.
pub(crate) fn u_of(point: &EdwardsPoint) -> [u8; 32] {
    point.to_montgomery().to_bytes()
}

/// X25519 for a u-coordinate; `None` when it is not on the curve. (Tests compare it with
/// RFC 7748; the packet code works on decoded points.)
#[cfg(test)]
pub(crate) fn x25519(scalar: &[u8; 32], u: &[u8; 32]) -> Option<[u8; 32]> {
    decode_point(u).map(|p| mul(&p, scalar))
}

/// X25519 with the base point (precomputed tables).
pub(crate) fn x25519_base(scalar: &[u8; 32]) -> [u8; 32] {
    u_of(&base_point_mul(scalar))
}

/// Deterministic randomness for building one packet, expanded from a caller's 32-byte seed.
/// The caller draws the seed from a CSPRNG; tests use fixed seeds for vectors. The reader's
/// state determines everything drawn from it, so it is zeroized on drop.
pub(crate) struct SeedStream {
    reader: blake3::OutputReader,
}

impl Drop for SeedStream {
    fn drop(&mut self) {
        self.reader.zeroize();
    }
}

impl SeedStream {
    pub(crate) fn new(format: Format, seed: &[u8; 32]) -> Self {
        let context = match format {
            Format::V1 => CONTEXT_PACKET_RANDOMNESS,
            Format::V2 => CONTEXT_PACKET_RANDOMNESS_V2,
        };
        let mut hasher = blake3::Hasher::new_derive_key(context);
        hasher.update(seed);
        let reader = hasher.finalize_xof();
        hasher.zeroize();
        Self { reader }
    }

    pub(crate) fn fill(&mut self, out: &mut [u8]) {
        self.reader.fill(out);
    }

    pub(crate) fn key(&mut self) -> [u8; 32] {
        let mut k = [0u8; 32];
        self.fill(&mut k);
        k
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// The X25519 base point's u-coordinate.
    const BASEPOINT: [u8; 32] = {
        let mut b = [0u8; 32];
        b[0] = 9;
        b
    };

    #[test]
    fn lioness_round_trips_and_diffuses() {
        let keys = LionessKeys([[1; 32], [2; 32], [3; 32], [4; 32]]);
        let plain: Vec<u8> = (0..1199).map(|i| i as u8).collect();
        let mut block = plain.clone();
        lioness_encrypt(&keys, &mut block);
        assert_ne!(block, plain);
        let mut flipped = block.clone();
        lioness_decrypt(&keys, &mut block);
        assert_eq!(block, plain);
        // One flipped ciphertext bit changes about half of every part of the plaintext.
        flipped[700] ^= 1;
        lioness_decrypt(&keys, &mut flipped);
        let differing = flipped.iter().zip(&plain).filter(|(a, b)| a != b).count();
        assert!(differing > 1100, "only {differing} bytes changed");
        assert_ne!(flipped[..16], plain[..16]);
    }

    #[test]
    fn hop_keys_are_distinct() {
        let k = HopKeys::derive(Format::V1, &[5; 32]);
        let all = [
            k.mac,
            k.stream,
            k.payload.0[0],
            k.payload.0[1],
            k.payload.0[2],
            k.payload.0[3],
            k.blinding,
        ];
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                assert_ne!(all[i], all[j]);
            }
        }
        assert_ne!(HopKeys::derive(Format::V1, &[6; 32]).tag, k.tag);
        // The formats never share a key.
        let v2 = HopKeys::derive(Format::V2, &[5; 32]);
        assert_ne!(v2.mac, k.mac);
        assert_ne!(v2.tag, k.tag);
    }

    #[test]
    fn x25519_blinding_commutes() {
        // Client side: b·(x·P); relay side: x·(b·P). Sphinx relies on this.
        let (x, b) = ([0x11; 32], [0x22; 32]);
        let p = x25519_base(&[0x33; 32]);
        let bx = x25519(&b, &x25519(&x, &p).unwrap()).unwrap();
        let xb = x25519(&x, &x25519(&b, &p).unwrap()).unwrap();
        assert_eq!(bx, xb);
    }

    #[test]
    fn edwards_path_equals_rfc7748_x25519() {
        // RFC 7748 section 5.2, first vector.
        let k = hex32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = hex32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let out = hex32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        assert_eq!(x25519(&k, &u), Some(out));
        assert_eq!(x25519_dalek::x25519(k, u), out);
        // The base point path agrees with the generic one.
        assert_eq!(x25519_base(&k), x25519(&k, &BASEPOINT).unwrap());
        // Low-order u = 0 gives the all-zero secret, as X25519 does.
        assert_eq!(x25519(&k, &[0; 32]), Some([0; 32]));
        // Non-canonical encodings of the same point are refused.
        let mut high = u;
        high[31] |= 0x80;
        assert_eq!(
            x25519_dalek::x25519(k, high),
            out,
            "X25519 itself ignores the top bit"
        );
        assert_eq!(x25519(&k, &high), None);
        let mut p_plus_9 = [0xff; 32];
        p_plus_9[0] = 0xed + 9;
        p_plus_9[31] = 0x7f;
        assert_eq!(x25519(&k, &p_plus_9), None, "p + 9 encodes the base point");
        assert!(is_canonical(&BASEPOINT));
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        out
    }
}
