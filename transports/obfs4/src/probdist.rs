//! The length and inter-arrival distributions obfs4 draws its padding and delays from.
//!
//! The same tables as obfs4proxy's (`common/probdist`, `common/drbg`): a 24-byte seed keys a
//! SipHash-2-4 generator in output-feedback mode (the one that masks frame lengths,
//! [`LengthMask`]), which drives Go's
//! `math/rand` (reproduced in [`GoRand`]) to pick a random subset of the allowed values (1
//! to 100 of them, from a permutation) and a weight for each; samples are then drawn from
//! that table with the connection's secure random source. The server's seed is fixed per
//! bridge (its `drbg-seed`) and sent to clients in the handshake's seed frame, so every
//! connection to one bridge has the same shape, obfs4proxy's or ours, and different bridges
//! differ.
//!
//! One hazard comes with the tables: obfs4proxy 0.0.14 in iat-mode 2 panics (and exits) when
//! it draws a length of 0, which a table holds for about one seed in 15. A bridge's seed is
//! therefore chosen so that its length table does not hold 0 ([`PrngSeed::generate`]).

use crate::{Entropy, PrngSeed, mask::LengthMask};

/// Go 1.19's `math/rand` methods that obfs4proxy's tables use, over its hash DRBG (the
/// one that also masks frame lengths, [`LengthMask`]).
pub(crate) struct GoRand(LengthMask);

impl GoRand {
    pub(crate) fn new(seed: &[u8; 24]) -> Self {
        Self(LengthMask::new(seed))
    }

    /// Go's `Int63` of the DRBG: the block read big-endian, top bit cleared.
    fn int63(&mut self) -> u64 {
        u64::from_be_bytes(self.0.next_block()) & (u64::MAX >> 1)
    }

    fn int31(&mut self) -> u32 {
        (self.int63() >> 32) as u32
    }

    /// `Int31n(n)`, `0 < n < 2^31`.
    fn int31n(&mut self, n: u32) -> u32 {
        if n & (n - 1) == 0 {
            return self.int31() & (n - 1);
        }
        let max = (1u32 << 31) - 1 - (1u32 << 31) % n;
        let mut v = self.int31();
        while v > max {
            v = self.int31();
        }
        v % n
    }

    /// `Intn(n)` for the small `n` here (Go takes `Int31n` below 2^31).
    pub(crate) fn intn(&mut self, n: usize) -> usize {
        self.int31n(u32::try_from(n.max(1)).unwrap_or(u32::MAX >> 1)) as usize
    }

    /// `Perm(n)`.
    fn perm(&mut self, n: usize) -> Vec<usize> {
        let mut m = vec![0; n];
        for i in 0..n {
            let j = self.intn(i + 1);
            m[i] = m[j];
            m[j] = i;
        }
        m
    }

    /// `Float64()`: in [0, 1).
    fn float64(&mut self) -> f64 {
        loop {
            let f = self.int63() as f64 / (1u64 << 63) as f64;
            if f < 1.0 {
                return f;
            }
        }
    }
}

/// A weighted distribution over a seeded subset of `min..=max`, obfs4proxy's.
#[derive(Clone, Debug)]
pub struct WeightedDist {
    values: Vec<u16>,
    /// Running sums of the weights, for a binary search.
    cumulative: Vec<f64>,
}

impl WeightedDist {
    /// The distribution `seed` makes over `min..=max` (`min` ≤ `max`), as obfs4proxy's
    /// `probdist.New(seed, min, max, false)`.
    pub fn new(seed: &[u8; 24], min: u16, max: u16) -> Self {
        let (min, max) = (min.min(max), max.max(min));
        let mut rng = GoRand::new(seed);
        let count = usize::from(max - min) + 1;
        let mut values = rng.perm(count);
        let n = rng.intn(count.clamp(1, 100)) + 1;
        values.truncate(n);
        let mut total = 0.0;
        let cumulative = values
            .iter()
            .map(|_| {
                total += rng.float64();
                total
            })
            .collect();
        let values = values
            .into_iter()
            .map(|v| min + u16::try_from(v).unwrap_or(0))
            .collect();
        Self { values, cumulative }
    }

    /// One draw, with `rng`'s randomness.
    pub fn sample(&self, rng: &mut dyn Entropy) -> u16 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let mut bytes = [0u8; 8];
        rng.fill_bytes(&mut bytes);
        // 53 random bits: a uniform point in [0, total).
        let point = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64 * total;
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

    /// Their weights, in the same order.
    pub fn weights(&self) -> Vec<f64> {
        let mut prev = 0.0;
        self.cumulative
            .iter()
            .map(|c| {
                let w = c - prev;
                prev = *c;
                w
            })
            .collect()
    }
}

impl PrngSeed {
    /// A bridge's seed: random, but one whose length table does not hold 0 (obfs4proxy
    /// clients in iat-mode 2 would exit on drawing it; see the module docs).
    pub fn generate(rng: &mut dyn Entropy) -> Self {
        loop {
            let mut seed = [0u8; 24];
            rng.fill_bytes(&mut seed);
            let seed = Self(seed);
            if seed.is_safe() {
                return seed;
            }
        }
    }

    /// Whether its length table leaves 0 out.
    pub fn is_safe(&self) -> bool {
        !WeightedDist::new(&self.0, 0, crate::MAX_SEGMENT_LENGTH as u16)
            .support()
            .contains(&0)
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

    /// The tables of Go 1.19's `math/rand` over obfs4proxy's DRBG, as
    /// `tests/probdist-go/main.go` printed them (`tests/probdist_go.rs` compares many more
    /// where Go is installed).
    #[test]
    fn the_tables_are_obfs4proxys() {
        let d = WeightedDist::new(&[9; 24], 0, 1448);
        assert_eq!(d.support(), [935, 304, 796, 1067, 1139, 842, 1373]);
        let weights = d.weights();
        assert!((weights[0] - 0.777_423_923_427_290_7).abs() < 1e-12);
        assert!((weights[6] - 0.618_762_787_551_001_6).abs() < 1e-12);
        let d = WeightedDist::new(&[0x5a; 24], 0, 1448);
        assert_eq!(d.support().len(), 93);
        assert_eq!(&d.support()[..5], [531, 1388, 232, 1303, 512]);
        assert_eq!(d.support()[92], 858);
    }

    #[test]
    fn a_generated_seed_keeps_zero_out_of_its_length_table() {
        let mut rng = SeededEntropy::new(5);
        let mut unsafe_seeds = 0;
        for _ in 0..300 {
            let mut seed = [0u8; 24];
            rng.fill_bytes(&mut seed);
            unsafe_seeds += usize::from(!PrngSeed(seed).is_safe());
            assert!(PrngSeed::generate(&mut rng).is_safe());
        }
        // About one seed in 15 would hold 0.
        assert!((5..=60).contains(&unsafe_seeds), "{unsafe_seeds}");
    }

    #[test]
    fn a_one_value_range_always_gives_it() {
        let d = WeightedDist::new(&[1; 24], 5, 5);
        let mut rng = SeededEntropy::new(1);
        assert!((0..100).all(|_| d.sample(&mut rng) == 5));
    }
}
