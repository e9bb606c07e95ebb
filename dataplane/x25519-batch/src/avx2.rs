//! Four X25519 Montgomery ladders side by side in AVX2 registers.
//!
//! A field element is ten limbs in radix 2^25.5 (26, 25, 26, ... bits); limb `i` of four
//! elements shares one 256-bit register, one 64-bit lane each, so `vpmuludq` does four
//! 32x32->64 products at once. Every function here works lane-wise: nothing moves between
//! lanes, so the four jobs are independent.
//!
//! Bounds (what keeps every product below 2^64 and every multiplier input below 2^32):
//! a *reduced* element, as [`mul`], [`sq`] and [`mul_small`] return it, has even limbs below
//! 2^26 and odd limbs below 2^25 + 2^18. [`add`] of two reduced elements and [`sub`] of two
//! reduced elements (which adds 2p first) stay below 3 * 2^26 (even) and 3 * 2^25 + 2^19
//! (odd). Multiplication inputs are only ever those (and, in `curve_chi4`, a reduced element
//! plus a reduced one plus 1, below 2^27): 19 times a limb stays below 2^32 and the sum of ten
//! products below 2^63. The headroom under 2^32 is about 12%, so an add or sub result must
//! never be fed into another add or sub before a multiplication reduces it.
//!
//! This is the only module of the crate with `unsafe`: calling `#[target_feature]` functions
//! from code that was not compiled for AVX2, after checking at run time that the CPU has it.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
mod imp {
    use core::arch::x86_64::{
        __m256i, _mm256_add_epi64, _mm256_and_si256, _mm256_extract_epi64, _mm256_mul_epu32,
        _mm256_set_epi64x, _mm256_set1_epi64x, _mm256_setzero_si256, _mm256_slli_epi64,
        _mm256_srli_epi64, _mm256_sub_epi64, _mm256_xor_si256,
    };
    use zeroize::Zeroize;

    use crate::field::{limbs_from_bytes, limbs_to_bytes};

    /// Four field elements, limb-major.
    #[derive(Clone, Copy)]
    struct Fe([__m256i; 10]);

    /// 2p in limbs: what [`sub`] adds so that no lane goes negative.
    const TWO_P: [u64; 10] = [
        0x7ff_ffda, 0x3ff_fffe, 0x7ff_fffe, 0x3ff_fffe, 0x7ff_fffe, 0x3ff_fffe, 0x7ff_fffe,
        0x3ff_fffe, 0x7ff_fffe, 0x3ff_fffe,
    ];

    /// (A - 2) / 4 for Curve25519, the ladder's doubling constant (RFC 7748 uses 121665 with
    /// z2 = E * (AA + a24 * E)).
    const A24: u64 = 121_665;
    /// The Montgomery coefficient A.
    const A: u64 = 486_662;

    #[inline]
    #[target_feature(enable = "avx2")]
    fn splat(x: u64) -> __m256i {
        _mm256_set1_epi64x(x as i64)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn lanes(v: [u64; 4]) -> __m256i {
        _mm256_set_epi64x(v[3] as i64, v[2] as i64, v[1] as i64, v[0] as i64)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn unlanes(v: __m256i) -> [u64; 4] {
        [
            _mm256_extract_epi64::<0>(v) as u64,
            _mm256_extract_epi64::<1>(v) as u64,
            _mm256_extract_epi64::<2>(v) as u64,
            _mm256_extract_epi64::<3>(v) as u64,
        ]
    }

    #[target_feature(enable = "avx2")]
    fn load(values: &[[u8; 32]; 4]) -> Fe {
        let l = [
            limbs_from_bytes(&values[0]),
            limbs_from_bytes(&values[1]),
            limbs_from_bytes(&values[2]),
            limbs_from_bytes(&values[3]),
        ];
        let mut fe = Fe([_mm256_setzero_si256(); 10]);
        for (i, limb) in fe.0.iter_mut().enumerate() {
            *limb = lanes([l[0][i], l[1][i], l[2][i], l[3][i]]);
        }
        fe
    }

    #[target_feature(enable = "avx2")]
    fn store(fe: &Fe) -> [[u8; 32]; 4] {
        let mut l = [[0u64; 10]; 4];
        for (i, limb) in fe.0.iter().enumerate() {
            let v = unlanes(*limb);
            for lane in 0..4 {
                l[lane][i] = v[lane];
            }
        }
        let out = [
            limbs_to_bytes(&l[0]),
            limbs_to_bytes(&l[1]),
            limbs_to_bytes(&l[2]),
            limbs_to_bytes(&l[3]),
        ];
        l.zeroize();
        out
    }

    #[target_feature(enable = "avx2")]
    fn constant(c: u64) -> Fe {
        let mut fe = Fe([_mm256_setzero_si256(); 10]);
        fe.0[0] = splat(c);
        fe
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn add(a: &Fe, b: &Fe) -> Fe {
        let mut r = *a;
        for i in 0..10 {
            r.0[i] = _mm256_add_epi64(a.0[i], b.0[i]);
        }
        r
    }

    /// a - b + 2p.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn sub(a: &Fe, b: &Fe) -> Fe {
        let mut r = *a;
        for (i, limb) in r.0.iter_mut().enumerate() {
            *limb = _mm256_sub_epi64(_mm256_add_epi64(a.0[i], splat(TWO_P[i])), b.0[i]);
        }
        r
    }

    /// 19 x without a multiplier (x may exceed 32 bits here).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn times19(x: __m256i) -> __m256i {
        _mm256_add_epi64(
            _mm256_add_epi64(x, _mm256_slli_epi64::<1>(x)),
            _mm256_slli_epi64::<4>(x),
        )
    }

    /// Carries ten 64-bit column sums (each below 2^63) down to a reduced element, in the
    /// interleaved order of ref10 (two chains, 0->5 and 4->9, then the wrap 9->0 and 0->1).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn carry(mut h: [__m256i; 10]) -> Fe {
        let m26 = splat((1 << 26) - 1);
        let m25 = splat((1 << 25) - 1);
        macro_rules! step26 {
            ($i:expr) => {{
                h[$i + 1] = _mm256_add_epi64(h[$i + 1], _mm256_srli_epi64::<26>(h[$i]));
                h[$i] = _mm256_and_si256(h[$i], m26);
            }};
        }
        macro_rules! step25 {
            ($i:expr) => {{
                h[$i + 1] = _mm256_add_epi64(h[$i + 1], _mm256_srli_epi64::<25>(h[$i]));
                h[$i] = _mm256_and_si256(h[$i], m25);
            }};
        }
        step26!(0);
        step26!(4);
        step25!(1);
        step25!(5);
        step26!(2);
        step26!(6);
        step25!(3);
        step25!(7);
        step26!(4);
        step26!(8);
        h[0] = _mm256_add_epi64(h[0], times19(_mm256_srli_epi64::<25>(h[9])));
        h[9] = _mm256_and_si256(h[9], m25);
        step26!(0);
        Fe(h)
    }

    /// a * b, reduced.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mul(a: &Fe, b: &Fe) -> Fe {
        // Written out in full so that every product stays in registers. Limb i sits at
        // ceil(25.5 i) bits, so two odd
        // limbs multiply to one bit above limb i + j (the factor 2), and 2^255 = 19 (mod p)
        // folds the columns past the top (the factor 19).
        let f = &a.0;
        let g = &b.0;
        let g19_1 = times19(g[1]);
        let g19_2 = times19(g[2]);
        let g19_3 = times19(g[3]);
        let g19_4 = times19(g[4]);
        let g19_5 = times19(g[5]);
        let g19_6 = times19(g[6]);
        let g19_7 = times19(g[7]);
        let g19_8 = times19(g[8]);
        let g19_9 = times19(g[9]);
        let f2_1 = _mm256_add_epi64(f[1], f[1]);
        let f2_3 = _mm256_add_epi64(f[3], f[3]);
        let f2_5 = _mm256_add_epi64(f[5], f[5]);
        let f2_7 = _mm256_add_epi64(f[7], f[7]);
        let f2_9 = _mm256_add_epi64(f[9], f[9]);
        let h0 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[0]),
                                            _mm256_mul_epu32(f2_1, g19_9),
                                        ),
                                        _mm256_mul_epu32(f[2], g19_8),
                                    ),
                                    _mm256_mul_epu32(f2_3, g19_7),
                                ),
                                _mm256_mul_epu32(f[4], g19_6),
                            ),
                            _mm256_mul_epu32(f2_5, g19_5),
                        ),
                        _mm256_mul_epu32(f[6], g19_4),
                    ),
                    _mm256_mul_epu32(f2_7, g19_3),
                ),
                _mm256_mul_epu32(f[8], g19_2),
            ),
            _mm256_mul_epu32(f2_9, g19_1),
        );
        let h1 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[1]),
                                            _mm256_mul_epu32(f[1], g[0]),
                                        ),
                                        _mm256_mul_epu32(f[2], g19_9),
                                    ),
                                    _mm256_mul_epu32(f[3], g19_8),
                                ),
                                _mm256_mul_epu32(f[4], g19_7),
                            ),
                            _mm256_mul_epu32(f[5], g19_6),
                        ),
                        _mm256_mul_epu32(f[6], g19_5),
                    ),
                    _mm256_mul_epu32(f[7], g19_4),
                ),
                _mm256_mul_epu32(f[8], g19_3),
            ),
            _mm256_mul_epu32(f[9], g19_2),
        );
        let h2 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[2]),
                                            _mm256_mul_epu32(f2_1, g[1]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[0]),
                                    ),
                                    _mm256_mul_epu32(f2_3, g19_9),
                                ),
                                _mm256_mul_epu32(f[4], g19_8),
                            ),
                            _mm256_mul_epu32(f2_5, g19_7),
                        ),
                        _mm256_mul_epu32(f[6], g19_6),
                    ),
                    _mm256_mul_epu32(f2_7, g19_5),
                ),
                _mm256_mul_epu32(f[8], g19_4),
            ),
            _mm256_mul_epu32(f2_9, g19_3),
        );
        let h3 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[3]),
                                            _mm256_mul_epu32(f[1], g[2]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[1]),
                                    ),
                                    _mm256_mul_epu32(f[3], g[0]),
                                ),
                                _mm256_mul_epu32(f[4], g19_9),
                            ),
                            _mm256_mul_epu32(f[5], g19_8),
                        ),
                        _mm256_mul_epu32(f[6], g19_7),
                    ),
                    _mm256_mul_epu32(f[7], g19_6),
                ),
                _mm256_mul_epu32(f[8], g19_5),
            ),
            _mm256_mul_epu32(f[9], g19_4),
        );
        let h4 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[4]),
                                            _mm256_mul_epu32(f2_1, g[3]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[2]),
                                    ),
                                    _mm256_mul_epu32(f2_3, g[1]),
                                ),
                                _mm256_mul_epu32(f[4], g[0]),
                            ),
                            _mm256_mul_epu32(f2_5, g19_9),
                        ),
                        _mm256_mul_epu32(f[6], g19_8),
                    ),
                    _mm256_mul_epu32(f2_7, g19_7),
                ),
                _mm256_mul_epu32(f[8], g19_6),
            ),
            _mm256_mul_epu32(f2_9, g19_5),
        );
        let h5 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[5]),
                                            _mm256_mul_epu32(f[1], g[4]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[3]),
                                    ),
                                    _mm256_mul_epu32(f[3], g[2]),
                                ),
                                _mm256_mul_epu32(f[4], g[1]),
                            ),
                            _mm256_mul_epu32(f[5], g[0]),
                        ),
                        _mm256_mul_epu32(f[6], g19_9),
                    ),
                    _mm256_mul_epu32(f[7], g19_8),
                ),
                _mm256_mul_epu32(f[8], g19_7),
            ),
            _mm256_mul_epu32(f[9], g19_6),
        );
        let h6 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[6]),
                                            _mm256_mul_epu32(f2_1, g[5]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[4]),
                                    ),
                                    _mm256_mul_epu32(f2_3, g[3]),
                                ),
                                _mm256_mul_epu32(f[4], g[2]),
                            ),
                            _mm256_mul_epu32(f2_5, g[1]),
                        ),
                        _mm256_mul_epu32(f[6], g[0]),
                    ),
                    _mm256_mul_epu32(f2_7, g19_9),
                ),
                _mm256_mul_epu32(f[8], g19_8),
            ),
            _mm256_mul_epu32(f2_9, g19_7),
        );
        let h7 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[7]),
                                            _mm256_mul_epu32(f[1], g[6]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[5]),
                                    ),
                                    _mm256_mul_epu32(f[3], g[4]),
                                ),
                                _mm256_mul_epu32(f[4], g[3]),
                            ),
                            _mm256_mul_epu32(f[5], g[2]),
                        ),
                        _mm256_mul_epu32(f[6], g[1]),
                    ),
                    _mm256_mul_epu32(f[7], g[0]),
                ),
                _mm256_mul_epu32(f[8], g19_9),
            ),
            _mm256_mul_epu32(f[9], g19_8),
        );
        let h8 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[8]),
                                            _mm256_mul_epu32(f2_1, g[7]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[6]),
                                    ),
                                    _mm256_mul_epu32(f2_3, g[5]),
                                ),
                                _mm256_mul_epu32(f[4], g[4]),
                            ),
                            _mm256_mul_epu32(f2_5, g[3]),
                        ),
                        _mm256_mul_epu32(f[6], g[2]),
                    ),
                    _mm256_mul_epu32(f2_7, g[1]),
                ),
                _mm256_mul_epu32(f[8], g[0]),
            ),
            _mm256_mul_epu32(f2_9, g19_9),
        );
        let h9 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_add_epi64(
                                _mm256_add_epi64(
                                    _mm256_add_epi64(
                                        _mm256_add_epi64(
                                            _mm256_mul_epu32(f[0], g[9]),
                                            _mm256_mul_epu32(f[1], g[8]),
                                        ),
                                        _mm256_mul_epu32(f[2], g[7]),
                                    ),
                                    _mm256_mul_epu32(f[3], g[6]),
                                ),
                                _mm256_mul_epu32(f[4], g[5]),
                            ),
                            _mm256_mul_epu32(f[5], g[4]),
                        ),
                        _mm256_mul_epu32(f[6], g[3]),
                    ),
                    _mm256_mul_epu32(f[7], g[2]),
                ),
                _mm256_mul_epu32(f[8], g[1]),
            ),
            _mm256_mul_epu32(f[9], g[0]),
        );
        carry([h0, h1, h2, h3, h4, h5, h6, h7, h8, h9])
    }

    /// a^2, reduced (the symmetric products once, doubled).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn sq(a: &Fe) -> Fe {
        // As `mul`, with each product f_i f_j (i < j) taken once and doubled.
        let f = &a.0;
        let f19_5 = times19(f[5]);
        let f19_6 = times19(f[6]);
        let f19_7 = times19(f[7]);
        let f19_8 = times19(f[8]);
        let f19_9 = times19(f[9]);
        let f2_0 = _mm256_add_epi64(f[0], f[0]);
        let f2_1 = _mm256_add_epi64(f[1], f[1]);
        let f2_2 = _mm256_add_epi64(f[2], f[2]);
        let f2_3 = _mm256_add_epi64(f[3], f[3]);
        let f2_4 = _mm256_add_epi64(f[4], f[4]);
        let f2_5 = _mm256_add_epi64(f[5], f[5]);
        let f2_6 = _mm256_add_epi64(f[6], f[6]);
        let f2_7 = _mm256_add_epi64(f[7], f[7]);
        let f2_8 = _mm256_add_epi64(f[8], f[8]);
        let f2_9 = _mm256_add_epi64(f[9], f[9]);
        let f4_1 = _mm256_add_epi64(f2_1, f2_1);
        let f4_3 = _mm256_add_epi64(f2_3, f2_3);
        let f4_5 = _mm256_add_epi64(f2_5, f2_5);
        let f4_7 = _mm256_add_epi64(f2_7, f2_7);
        let h0 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_mul_epu32(f[0], f[0]),
                            _mm256_mul_epu32(f4_1, f19_9),
                        ),
                        _mm256_mul_epu32(f2_2, f19_8),
                    ),
                    _mm256_mul_epu32(f4_3, f19_7),
                ),
                _mm256_mul_epu32(f2_4, f19_6),
            ),
            _mm256_mul_epu32(f2_5, f19_5),
        );
        let h1 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(_mm256_mul_epu32(f2_0, f[1]), _mm256_mul_epu32(f2_2, f19_9)),
                    _mm256_mul_epu32(f2_3, f19_8),
                ),
                _mm256_mul_epu32(f2_4, f19_7),
            ),
            _mm256_mul_epu32(f2_5, f19_6),
        );
        let h2 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_mul_epu32(f2_0, f[2]),
                            _mm256_mul_epu32(f2_1, f[1]),
                        ),
                        _mm256_mul_epu32(f4_3, f19_9),
                    ),
                    _mm256_mul_epu32(f2_4, f19_8),
                ),
                _mm256_mul_epu32(f4_5, f19_7),
            ),
            _mm256_mul_epu32(f[6], f19_6),
        );
        let h3 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(_mm256_mul_epu32(f2_0, f[3]), _mm256_mul_epu32(f2_1, f[2])),
                    _mm256_mul_epu32(f2_4, f19_9),
                ),
                _mm256_mul_epu32(f2_5, f19_8),
            ),
            _mm256_mul_epu32(f2_6, f19_7),
        );
        let h4 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_mul_epu32(f2_0, f[4]),
                            _mm256_mul_epu32(f4_1, f[3]),
                        ),
                        _mm256_mul_epu32(f[2], f[2]),
                    ),
                    _mm256_mul_epu32(f4_5, f19_9),
                ),
                _mm256_mul_epu32(f2_6, f19_8),
            ),
            _mm256_mul_epu32(f2_7, f19_7),
        );
        let h5 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(_mm256_mul_epu32(f2_0, f[5]), _mm256_mul_epu32(f2_1, f[4])),
                    _mm256_mul_epu32(f2_2, f[3]),
                ),
                _mm256_mul_epu32(f2_6, f19_9),
            ),
            _mm256_mul_epu32(f2_7, f19_8),
        );
        let h6 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_mul_epu32(f2_0, f[6]),
                            _mm256_mul_epu32(f4_1, f[5]),
                        ),
                        _mm256_mul_epu32(f2_2, f[4]),
                    ),
                    _mm256_mul_epu32(f2_3, f[3]),
                ),
                _mm256_mul_epu32(f4_7, f19_9),
            ),
            _mm256_mul_epu32(f[8], f19_8),
        );
        let h7 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(_mm256_mul_epu32(f2_0, f[7]), _mm256_mul_epu32(f2_1, f[6])),
                    _mm256_mul_epu32(f2_2, f[5]),
                ),
                _mm256_mul_epu32(f2_3, f[4]),
            ),
            _mm256_mul_epu32(f2_8, f19_9),
        );
        let h8 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(
                        _mm256_add_epi64(
                            _mm256_mul_epu32(f2_0, f[8]),
                            _mm256_mul_epu32(f4_1, f[7]),
                        ),
                        _mm256_mul_epu32(f2_2, f[6]),
                    ),
                    _mm256_mul_epu32(f4_3, f[5]),
                ),
                _mm256_mul_epu32(f[4], f[4]),
            ),
            _mm256_mul_epu32(f2_9, f19_9),
        );
        let h9 = _mm256_add_epi64(
            _mm256_add_epi64(
                _mm256_add_epi64(
                    _mm256_add_epi64(_mm256_mul_epu32(f2_0, f[9]), _mm256_mul_epu32(f2_1, f[8])),
                    _mm256_mul_epu32(f2_2, f[7]),
                ),
                _mm256_mul_epu32(f2_3, f[6]),
            ),
            _mm256_mul_epu32(f2_4, f[5]),
        );
        carry([h0, h1, h2, h3, h4, h5, h6, h7, h8, h9])
    }

    /// a^(2^n), reduced.
    #[target_feature(enable = "avx2")]
    fn sq_n(a: &Fe, n: u32) -> Fe {
        let mut r = sq(a);
        for _ in 1..n {
            r = sq(&r);
        }
        r
    }

    /// a * c for a small constant c (below 2^20), reduced.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mul_small(a: &Fe, c: u64) -> Fe {
        let c = splat(c);
        let mut h = a.0;
        for limb in h.iter_mut() {
            *limb = _mm256_mul_epu32(*limb, c);
        }
        carry(h)
    }

    /// Swaps a and b in the lanes where `mask` is all ones.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn cswap(mask: __m256i, a: &mut Fe, b: &mut Fe) {
        for i in 0..10 {
            let d = _mm256_and_si256(_mm256_xor_si256(a.0[i], b.0[i]), mask);
            a.0[i] = _mm256_xor_si256(a.0[i], d);
            b.0[i] = _mm256_xor_si256(b.0[i], d);
        }
    }

    /// (z^(2^250 - 1), z^11), the common prefix of inversion and the Legendre symbol.
    #[target_feature(enable = "avx2")]
    fn pow_2_250_1(z: &Fe) -> (Fe, Fe, Fe) {
        let z2 = sq(z);
        let z8 = sq_n(&z2, 2);
        let z9 = mul(&z8, z);
        let z11 = mul(&z9, &z2);
        let z22 = sq(&z11);
        let z_5_0 = mul(&z22, &z9);
        let z_10_0 = mul(&sq_n(&z_5_0, 5), &z_5_0);
        let z_20_0 = mul(&sq_n(&z_10_0, 10), &z_10_0);
        let z_40_0 = mul(&sq_n(&z_20_0, 20), &z_20_0);
        let z_50_0 = mul(&sq_n(&z_40_0, 10), &z_10_0);
        let z_100_0 = mul(&sq_n(&z_50_0, 50), &z_50_0);
        let z_200_0 = mul(&sq_n(&z_100_0, 100), &z_100_0);
        let z_250_0 = mul(&sq_n(&z_200_0, 50), &z_50_0);
        (z_250_0, z11, z2)
    }

    /// z^(p - 2) = 1/z (0 for 0).
    #[target_feature(enable = "avx2")]
    fn invert(z: &Fe) -> Fe {
        let (z_250_0, z11, _) = pow_2_250_1(z);
        mul(&sq_n(&z_250_0, 5), &z11)
    }

    /// The per-lane swap masks for bit `t` of four clamped scalars.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn bit_mask(k: &[[u8; 32]; 4], t: usize) -> __m256i {
        let bit = |s: &[u8; 32]| ((s[t / 8] >> (t % 8)) & 1) as u64;
        lanes([
            0u64.wrapping_sub(bit(&k[0])),
            0u64.wrapping_sub(bit(&k[1])),
            0u64.wrapping_sub(bit(&k[2])),
            0u64.wrapping_sub(bit(&k[3])),
        ])
    }

    /// RFC 7748's ladder for four jobs.
    #[target_feature(enable = "avx2")]
    fn ladder4(scalars: &[[u8; 32]; 4], us: &[[u8; 32]; 4]) -> [[u8; 32]; 4] {
        let mut k = *scalars;
        for s in k.iter_mut() {
            s[0] &= 248;
            s[31] &= 127;
            s[31] |= 64;
        }
        let x1 = load(us);
        let mut x2 = constant(1);
        let mut z2 = constant(0);
        let mut x3 = x1;
        let mut z3 = constant(1);
        let mut swap = _mm256_setzero_si256();
        for t in (0..255).rev() {
            let bit = bit_mask(&k, t);
            swap = _mm256_xor_si256(swap, bit);
            cswap(swap, &mut x2, &mut x3);
            cswap(swap, &mut z2, &mut z3);
            swap = bit;

            let a = add(&x2, &z2);
            let aa = sq(&a);
            let b = sub(&x2, &z2);
            let bb = sq(&b);
            let e = sub(&aa, &bb);
            let c = add(&x3, &z3);
            let d = sub(&x3, &z3);
            let da = mul(&d, &a);
            let cb = mul(&c, &b);
            x3 = sq(&add(&da, &cb));
            z3 = mul(&x1, &sq(&sub(&da, &cb)));
            x2 = mul(&aa, &bb);
            z2 = mul(&e, &add(&aa, &mul_small(&e, A24)));
        }
        cswap(swap, &mut x2, &mut x3);
        cswap(swap, &mut z2, &mut z3);
        k.zeroize();
        let mut result = mul(&x2, &invert(&z2));
        let out = store(&result);
        for fe in [&mut x2, &mut z2, &mut x3, &mut z3, &mut result] {
            wipe(fe);
        }
        out
    }

    /// Overwrites a field element that held secret-dependent values. Best effort: copies the
    /// compiler made in registers or spill slots are out of reach (as in curve25519-dalek).
    #[target_feature(enable = "avx2")]
    fn wipe(fe: &mut Fe) {
        let zero = Fe([_mm256_setzero_si256(); 10]);
        // SAFETY: `fe` is a live, aligned, exclusive reference, so writing one `Fe` through
        // it is valid; the volatile write keeps the compiler from dropping a dead store.
        unsafe { core::ptr::write_volatile(fe, zero) };
    }

    /// The Legendre symbol of u^3 + A u^2 + u for four u: 1, 0 or p - 1, canonical.
    #[target_feature(enable = "avx2")]
    fn curve_chi4(us: &[[u8; 32]; 4]) -> [[u8; 32]; 4] {
        let u = load(us);
        let inner = add(&add(&sq(&u), &mul_small(&u, A)), &constant(1));
        let v = mul(&u, &inner);
        // (p - 1) / 2 = 2^254 - 10 = (2^250 - 1) * 2^4 + 6.
        let (v_250_0, _, v2) = pow_2_250_1(&v);
        let v6 = mul(&v2, &sq(&v2));
        store(&mul(&sq_n(&v_250_0, 4), &v6))
    }

    /// Runs `each` over `n` jobs in groups of four, padding the last group with copies of
    /// job 0 whose results are discarded.
    fn in_fours<const M: usize, T: Copy + Zeroize>(
        n: usize,
        inputs: impl Fn(usize) -> [[u8; 32]; M],
        mut each: impl FnMut(&[[[u8; 32]; M]; 4]) -> [T; 4],
        mut output: impl FnMut(usize, T),
    ) {
        let mut start = 0;
        while start < n {
            let mut group = [inputs(start); 4];
            for (lane, slot) in group.iter_mut().enumerate() {
                if start + lane < n {
                    *slot = inputs(start + lane);
                }
            }
            let mut results = each(&group);
            for (lane, r) in results.iter().enumerate() {
                if start + lane < n {
                    output(start + lane, *r);
                }
            }
            results.zeroize();
            for slot in group.iter_mut() {
                for part in slot.iter_mut() {
                    part.zeroize();
                }
            }
            start += 4;
        }
    }

    pub(crate) fn available() -> bool {
        std::is_x86_feature_detected!("avx2")
    }

    pub(crate) fn x25519_many(scalars: &[[u8; 32]], us: &[[u8; 32]], out: &mut [[u8; 32]]) -> bool {
        if !available() {
            return false;
        }
        in_fours(
            out.len(),
            |i| [scalars[i], us[i]],
            |group| {
                let mut k = [group[0][0], group[1][0], group[2][0], group[3][0]];
                let u = [group[0][1], group[1][1], group[2][1], group[3][1]];
                // SAFETY: `available()` above checked that this CPU has AVX2, the only
                // feature `ladder4` is compiled for.
                let r = unsafe { ladder4(&k, &u) };
                k.zeroize();
                r
            },
            |i, r| out[i] = r,
        );
        true
    }

    pub(crate) fn on_curve_many(us: &[[u8; 32]], out: &mut [bool]) -> bool {
        if !available() {
            return false;
        }
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        in_fours(
            out.len(),
            |i| [us[i]],
            |group| {
                let u = [group[0][0], group[1][0], group[2][0], group[3][0]];
                // SAFETY: `available()` above checked that this CPU has AVX2, the only
                // feature `curve_chi4` is compiled for.
                let chi = unsafe { curve_chi4(&u) };
                chi.map(|c| c != minus_one)
            },
            |i, r| out[i] = r,
        );
        true
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    pub(crate) fn available() -> bool {
        false
    }

    pub(crate) fn x25519_many(_: &[[u8; 32]], _: &[[u8; 32]], _: &mut [[u8; 32]]) -> bool {
        false
    }

    pub(crate) fn on_curve_many(_: &[[u8; 32]], _: &mut [bool]) -> bool {
        false
    }
}

pub(crate) use imp::{available, on_curve_many, x25519_many};
