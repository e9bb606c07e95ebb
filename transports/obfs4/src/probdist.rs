//! The length and inter-arrival distributions obfs4 draws its padding and delays from.
//!
//! As in obfs4proxy (`common/probdist`, `common/drbg`): a 24-byte seed drives a SipHash-2-4
//! generator in output-feedback mode ([`HashDrbg`]), which picks a random subset of the
//! allowed values (1 to 100 of them) and a weight for each; samples are then drawn from that
//! table with the connection's secure random source. The server's seed is fixed per bridge
//! (its `drbg-seed`) and sent to clients in the handshake's seed frame, so every connection
//! to one bridge has the same shape, and different bridges differ. The tables are not
//! bit-identical to obfs4proxy's (that would need Go's `math/rand`); nothing on the wire
//! depends on them being so.

use siphasher::sip::SipHasher24;

use crate::{Entropy, uniform_inclusive};

/// obfs4proxy's hash DRBG: SipHash-2-4 keyed by the seed's first 16 bytes, over an 8-byte
/// block that each output replaces.
pub(crate) struct HashDrbg {
    hasher: SipHasher24,
    block: [u8; 8],
}

impl HashDrbg {
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

    pub(crate) fn next_u64(&mut self) -> u64 {
        let value = self.hasher.hash(&self.block);
        self.block = value.to_le_bytes();
        value
    }

    /// A uniform value in `0..n` (rejection sampling; `n` ≥ 1).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }
}

/// A weighted distribution over a seeded subset of `min..=max`.
#[derive(Clone, Debug)]
pub struct WeightedDist {
    values: Vec<u16>,
    /// Running sums of the weights, for a binary search.
    cumulative: Vec<u64>,
}

impl WeightedDist {
    /// The distribution `seed` makes over `min..=max` (`min` ≤ `max`).
    pub fn new(seed: &[u8; 24], min: u16, max: u16) -> Self {
        let (min, max) = (min.min(max), max.max(min));
        let mut drbg = HashDrbg::new(seed);
        let mut values: Vec<u16> = (min..=max).collect();
        // Fisher-Yates: a seeded permutation, of which the first n values are kept.
        for i in (1..values.len()).rev() {
            let j = drbg.below(i as u64 + 1) as usize;
            values.swap(i, j);
        }
        let n = drbg.below(values.len().clamp(1, 100) as u64) as usize + 1;
        values.truncate(n);
        let mut total = 0u64;
        let cumulative = values
            .iter()
            .map(|_| {
                // 16-bit weights, at least 1: no value of the subset is impossible, and the
                // total (at most 100 × 2^16) fits any usize.
                total += (drbg.next_u64() >> 48) + 1;
                total
            })
            .collect();
        Self { values, cumulative }
    }

    /// One draw, with `rng`'s randomness.
    pub fn sample(&self, rng: &mut dyn Entropy) -> u16 {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let point = uniform_inclusive(rng, 0, (total - 1) as usize) as u64;
        let at = self.cumulative.partition_point(|&c| c <= point);
        self.values
            .get(at)
            .or(self.values.last())
            .copied()
            .unwrap_or(0)
    }

    /// The values it can give.
    pub fn support(&self) -> &[u16] {
        &self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::SeededEntropy;

    #[test]
    fn one_seed_one_table_and_samples_stay_in_it() {
        let a = WeightedDist::new(&[7; 24], 0, 1448);
        let b = WeightedDist::new(&[7; 24], 0, 1448);
        let c = WeightedDist::new(&[8; 24], 0, 1448);
        assert_eq!(a.support(), b.support());
        assert_ne!(a.support(), c.support(), "another bridge, another shape");
        assert!((1..=100).contains(&a.support().len()));
        assert!(a.support().iter().all(|v| *v <= 1448));
        let mut rng = SeededEntropy::new(3);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20_000 {
            let v = a.sample(&mut rng);
            assert!(a.support().contains(&v));
            seen.insert(v);
        }
        // Every value of a small table comes up in 20,000 draws unless its weight is tiny;
        // most do.
        assert!(seen.len() * 2 >= a.support().len(), "{seen:?}");
    }

    #[test]
    fn a_one_value_range_always_gives_it() {
        let d = WeightedDist::new(&[1; 24], 5, 5);
        let mut rng = SeededEntropy::new(1);
        assert!((0..100).all(|_| d.sample(&mut rng) == 5));
    }
}
