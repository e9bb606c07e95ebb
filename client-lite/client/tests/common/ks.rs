//! The two-sample Kolmogorov-Smirnov test: could two samples come from one distribution?
//!
//! The statistic D is the largest distance between the samples' empirical distribution
//! functions; the p-value is the asymptotic one of Numerical Recipes (`kstwo`/`probks`):
//! `Q_KS(λ)` with `λ = (√ne + 0.12 + 0.11/√ne)·D`, `ne = n1·n2/(n1+n2)`. Equal values are
//! stepped over together in both samples, so ties (counts per second are integers) do not
//! inflate D. For discrete data the p-value is conservative (larger than the exact one).
//!
//! Not here: exact small-sample p-values, or any meaning for NaN (inputs must be finite).

/// The outcome of [`two_sample`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ks {
    /// The largest distance between the two empirical distribution functions, in [0, 1].
    pub d: f64,
    /// The asymptotic probability of a D at least this large if both samples came from one
    /// continuous distribution.
    pub p: f64,
}

/// Compares samples `a` and `b`. With either empty there is nothing to compare: D = 0 and
/// p = 1 (a caller decides what an empty sample means).
pub fn two_sample(a: &[f64], b: &[f64]) -> Ks {
    if a.is_empty() || b.is_empty() {
        return Ks { d: 0.0, p: 1.0 };
    }
    let sorted = |s: &[f64]| {
        let mut v = s.to_vec();
        v.sort_by(f64::total_cmp);
        v
    };
    let (a, b) = (sorted(a), sorted(b));
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0, 0);
    let mut d: f64 = 0.0;
    while i < a.len() && j < b.len() {
        // The next value in either sample; every copy of it in both moves the ECDFs at once.
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        d = d.max((i as f64 / n1 - j as f64 / n2).abs());
    }
    // Once one sample is used up the other's remaining steps only close the gap: D is found.
    let ne = n1 * n2 / (n1 + n2);
    let root = ne.sqrt();
    Ks {
        d,
        p: q_ks((root + 0.12 + 0.11 / root) * d),
    }
}

/// The Kolmogorov distribution's tail, `Q_KS(λ) = 2 Σ_{k≥1} (-1)^{k-1} e^{-2k²λ²}`: 1 where
/// the series does not converge (λ near 0, where Q is 1).
pub fn q_ks(lambda: f64) -> f64 {
    const TERM_TO_LAST: f64 = 1e-3;
    const TERM_TO_SUM: f64 = 1e-8;
    let a2 = -2.0 * lambda * lambda;
    let mut sign = 2.0;
    let mut sum = 0.0;
    let mut last = 0.0;
    for k in 1..=100 {
        let k = f64::from(k);
        let term = sign * (a2 * k * k).exp();
        sum += term;
        if term.abs() <= TERM_TO_LAST * last || term.abs() <= TERM_TO_SUM * sum {
            return sum.clamp(0.0, 1.0);
        }
        sign = -sign;
        last = term.abs();
    }
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-seed generator of uniform draws in [0, 1) (splitmix64).
    struct Draws(u64);

    impl Draws {
        fn next(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }

        fn sample(&mut self, n: usize, shift: f64) -> Vec<f64> {
            (0..n).map(|_| self.next() + shift).collect()
        }
    }

    #[test]
    fn identical_samples_give_p_one() {
        let a = Draws(1).sample(200, 0.0);
        assert_eq!(two_sample(&a, &a), Ks { d: 0.0, p: 1.0 });
        let zeros = [0.0; 20];
        assert_eq!(two_sample(&zeros, &zeros), Ks { d: 0.0, p: 1.0 });
        assert_eq!(two_sample(&[], &[]), Ks { d: 0.0, p: 1.0 });
    }

    #[test]
    fn shifted_uniforms_are_told_apart() {
        let a = Draws(7).sample(500, 0.0);
        let b = Draws(8).sample(500, 0.3);
        let ks = two_sample(&a, &b);
        assert!(ks.p < 1e-6, "{ks:?}");
        assert!((ks.d - 0.3).abs() < 0.06, "{ks:?}");
    }

    #[test]
    fn samples_of_one_distribution_pass() {
        let a = Draws(11).sample(500, 0.0);
        let b = Draws(12).sample(500, 0.0);
        let ks = two_sample(&a, &b);
        assert!(ks.p > 0.05, "{ks:?}");
    }

    #[test]
    fn ties_move_both_distribution_functions_at_once() {
        // F_a: 2/3 at 1, 1 at 2; F_b: 1/3 at 1, 1 at 2. D = 1/3, not the 2/3 that stepping
        // through a's two 1s before b's would give.
        let ks = two_sample(&[1.0, 1.0, 2.0], &[2.0, 1.0, 2.0]);
        assert!((ks.d - 1.0 / 3.0).abs() < 1e-12, "{ks:?}");
        // Integer counts that differ only in order.
        let a = [3.0, 0.0, 1.0, 1.0, 2.0, 0.0];
        let b = [0.0, 0.0, 1.0, 2.0, 1.0, 3.0];
        assert_eq!(two_sample(&a, &b).d, 0.0);
    }

    #[test]
    fn the_kolmogorov_tail_matches_known_values() {
        // Q_KS(1) = 0.2699996..., Q_KS(1.3581) = 0.05, Q_KS(0.5) = 0.9639...
        assert!((q_ks(1.0) - 0.269_999_7).abs() < 1e-6, "{}", q_ks(1.0));
        assert!((q_ks(1.3581) - 0.05).abs() < 1e-4, "{}", q_ks(1.3581));
        assert!((q_ks(0.5) - 0.963_945).abs() < 1e-5, "{}", q_ks(0.5));
        assert_eq!(q_ks(0.0), 1.0);
        assert!(q_ks(5.0) < 1e-20);
    }
}
