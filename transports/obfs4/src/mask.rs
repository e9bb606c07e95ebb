//! The frame-length mask: obfs4proxy's SipHash-2-4 "OFB" DRBG, which is cumulative.
//!
//! One SipHash-2-4 state keyed with `seed[0..16]` is never reset; each block writes the previous
//! block into it and takes the running digest, so block n = SipHash(K, IV0 | IV1 | … | IVn-1),
//! not SipHash(K, IVn-1) as the spec says.

use std::fmt;
use std::hash::Hasher as _;

use siphasher::sip::SipHasher24;

/// The per-direction length mask stream.
pub(crate) struct LengthMask {
    hasher: SipHasher24,
    block: [u8; 8],
}

impl fmt::Debug for LengthMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LengthMask([scrubbed])")
    }
}

impl LengthMask {
    /// From the 24-byte seed: SipHash key, then the initial 8-byte block.
    pub(crate) fn new(seed: &[u8; 24]) -> Self {
        let mut key = [0u8; 16];
        key.copy_from_slice(&seed[..16]);
        let mut block = [0u8; 8];
        block.copy_from_slice(&seed[16..]);
        Self {
            hasher: SipHasher24::new_with_key(&key),
            block,
        }
    }

    /// The next 8-byte block (Go's `HashDrbg.NextBlock`).
    pub(crate) fn next_block(&mut self) -> [u8; 8] {
        self.hasher.write(&self.block);
        self.block = self.hasher.finish().to_le_bytes();
        self.block
    }

    /// The next frame's 16-bit mask: the block's first two bytes, big-endian.
    pub(crate) fn next_mask(&mut self) -> u16 {
        let block = self.next_block();
        u16::from_be_bytes([block[0], block[1]])
    }
}

#[cfg(test)]
#[expect(clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;
    use crate::testutil::hex;

    /// Int63 as Go's `math/rand` reads it from the DRBG: big-endian, top bit cleared.
    fn int63(block: [u8; 8]) -> u64 {
        u64::from_be_bytes(block) & ((1 << 63) - 1)
    }

    /// Go HashDrbg outputs (from `jmwample/ptrs`' `sample_compat_compare`); they match only the
    /// cumulative reading.
    #[test]
    fn blocks_match_go_hash_drbg() {
        let mut zeros = LengthMask::new(&[0u8; 24]);
        let outputs: Vec<u64> = (0..3).map(|_| int63(zeros.next_block())).collect();
        assert_eq!(
            outputs,
            [
                7432626515892259304,
                5773523046280711756,
                4537542203639783680
            ]
        );

        let seed: [u8; 24] = hex("0c10867722204c856e78315d669449dcb6e66f2fe5247a80")
            .try_into()
            .expect("24 bytes");
        let mut seeded = LengthMask::new(&seed);
        let outputs: Vec<u64> = (0..3).map(|_| int63(seeded.next_block())).collect();
        assert_eq!(
            outputs,
            [
                9059004827137905928,
                6853924365612632173,
                1485252377529977150
            ]
        );
    }

    #[test]
    fn masks_match_known_answers() {
        let mut zeros = LengthMask::new(&[0u8; 24]);
        let masks: Vec<u16> = (0..4).map(|_| zeros.next_mask()).collect();
        assert_eq!(masks, [0x6725, 0xd01f, 0x3ef8, 0x5e8f]);

        let mut counting = [0u8; 24];
        for (i, byte) in counting.iter_mut().enumerate() {
            *byte = i as u8;
        }
        let mut seeded = LengthMask::new(&counting);
        let masks: Vec<u16> = (0..4).map(|_| seeded.next_mask()).collect();
        assert_eq!(masks, [0x28b5, 0xa8de, 0x4d3a, 0x9c06]);
    }
}
