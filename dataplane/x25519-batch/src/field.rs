//! Scalar helpers around the lane arithmetic: radix-2^25.5 limbs in and out of bytes, and the
//! portable on-curve test.
#![cfg_attr(
    not(target_arch = "x86_64"),
    allow(
        dead_code,
        reason = "the limb helpers serve the x86_64 lanes and the unit tests"
    )
)]

use curve25519_dalek::montgomery::MontgomeryPoint;

/// Bit offset of limb `i`: limbs alternate 26 and 25 bits (ceil(25.5 i)).
pub(crate) const OFFSETS: [u32; 10] = [0, 26, 51, 77, 102, 128, 153, 179, 204, 230];

/// Width in bits of limb `i`.
pub(crate) const fn width(i: usize) -> u32 {
    if i.is_multiple_of(2) { 26 } else { 25 }
}

/// The ten limbs of a little-endian u-coordinate, top bit ignored (RFC 7748 decoding).
/// Values in [p, 2^255) are kept as they are; the arithmetic works modulo p anyway.
pub(crate) fn limbs_from_bytes(bytes: &[u8; 32]) -> [u64; 10] {
    let mut w = [0u64; 4];
    for (i, word) in w.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[8 * i..8 * i + 8]);
        *word = u64::from_le_bytes(b);
    }
    w[3] &= 0x7fff_ffff_ffff_ffff;
    let mut out = [0u64; 10];
    for (i, limb) in out.iter_mut().enumerate() {
        let (off, width) = (OFFSETS[i], width(i));
        let (word, shift) = ((off / 64) as usize, off % 64);
        let mut v = w[word] >> shift;
        if shift + width > 64 {
            v |= w[word + 1] << (64 - shift);
        }
        *limb = v & ((1u64 << width) - 1);
    }
    out
}

/// The canonical little-endian encoding (value reduced below p = 2^255 - 19) of limbs as the
/// lane multiplication leaves them (each at most a little over its width). Constant-time.
pub(crate) fn limbs_to_bytes(limbs: &[u64; 10]) -> [u8; 32] {
    use zeroize::Zeroize;
    // Carry each limb down to its width, the top one around (2^255 = 19 mod p), twice, then
    // once more without wrapping: every limb is then within its width except that the top one
    // may reach bit 255, so the value is below 2^255 + 2^230 < 2p.
    let mut h = *limbs;
    for _ in 0..2 {
        for i in 0..9 {
            h[i + 1] += h[i] >> width(i);
            h[i] &= (1u64 << width(i)) - 1;
        }
        h[0] += 19 * (h[9] >> 25);
        h[9] &= (1u64 << 25) - 1;
    }
    for i in 0..9 {
        h[i + 1] += h[i] >> width(i);
        h[i] &= (1u64 << width(i)) - 1;
    }
    // Pack into 256 bits.
    let mut w = [0u64; 4];
    for (i, &limb) in h.iter().enumerate() {
        let off = OFFSETS[i];
        let (word, shift) = ((off / 64) as usize, off % 64);
        w[word] |= limb << shift;
        if shift + width(i) > 64 {
            w[word + 1] |= limb >> (64 - shift);
        }
    }
    // Subtract p once if the value is at least p: t = value + 19; if t has bit 255 set, the
    // answer is t - 2^255, else the value itself.
    let mut t = [0u64; 4];
    let mut carry = 19u128;
    for i in 0..4 {
        let s = w[i] as u128 + carry;
        t[i] = s as u64;
        carry = s >> 64;
    }
    let take_t = 0u64.wrapping_sub(t[3] >> 63);
    t[3] &= 0x7fff_ffff_ffff_ffff;
    let mut out = [0u8; 32];
    for i in 0..4 {
        let v = (t[i] & take_t) | (w[i] & !take_t);
        out[8 * i..8 * i + 8].copy_from_slice(&v.to_le_bytes());
    }
    // The value may be a shared secret.
    h.zeroize();
    w.zeroize();
    t.zeroize();
    out
}

/// Whether `u` is on Curve25519 (not its twist), one at a time on curve25519-dalek.
pub(crate) fn on_curve_portable(u: &[u8; 32]) -> bool {
    MontgomeryPoint(*u).to_edwards(0).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limbs_round_trip_canonical_values() {
        let mut u = [0u8; 32];
        for (i, b) in u.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        u[31] &= 0x7f;
        assert_eq!(limbs_to_bytes(&limbs_from_bytes(&u)), u);
        let zero = [0u8; 32];
        assert_eq!(limbs_to_bytes(&limbs_from_bytes(&zero)), zero);
    }

    #[test]
    fn non_canonical_values_reduce() {
        // p itself encodes zero; p + 1 encodes one; 2^255 - 1 = p + 18 encodes 18.
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        assert_eq!(limbs_to_bytes(&limbs_from_bytes(&p)), [0u8; 32]);
        let mut p1 = p;
        p1[0] = 0xee;
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(limbs_to_bytes(&limbs_from_bytes(&p1)), one);
        let all = [0xffu8; 32];
        let mut eighteen = [0u8; 32];
        eighteen[0] = 18;
        assert_eq!(limbs_to_bytes(&limbs_from_bytes(&all)), eighteen);
    }
}
