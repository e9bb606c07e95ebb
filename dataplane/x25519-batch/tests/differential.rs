//! Every backend against x25519-dalek, on random and on edge-case inputs.
#![expect(clippy::unwrap_used, reason = "tests")]

use curve25519_dalek::montgomery::MontgomeryPoint;
use pb_x25519_batch::{Backend, on_curve_many_with, x25519_many_with};
use proptest::prelude::*;

fn reference(k: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    x25519_dalek::x25519(*k, *u)
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::Portable];
    if Backend::detect() != Backend::Portable {
        b.push(Backend::detect());
    }
    b
}

/// u-coordinates that stress the arithmetic: zero, one, small-order points, p - 1, p, p + 1,
/// 2^255 - 1 (non-canonical), all-ones bytes, limbs at their maximum.
fn edge_us() -> Vec<[u8; 32]> {
    let mut v = Vec::new();
    let mut p = [0xffu8; 32];
    p[0] = 0xed;
    p[31] = 0x7f;
    v.push([0u8; 32]);
    let mut one = [0u8; 32];
    one[0] = 1;
    v.push(one);
    for small in [
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    ] {
        let mut b = [0u8; 32];
        for i in 0..32 {
            b[i] = u8::from_str_radix(&small[2 * i..2 * i + 2], 16).unwrap();
        }
        v.push(b);
    }
    let mut pm1 = p;
    pm1[0] = 0xec;
    v.push(pm1);
    v.push(p);
    let mut pp1 = p;
    pp1[0] = 0xee;
    v.push(pp1);
    v.push([0xff; 32]);
    let mut top = [0u8; 32];
    top[31] = 0x80;
    v.push(top);
    let mut nine = [0u8; 32];
    nine[0] = 9;
    v.push(nine);
    v
}

#[test]
fn edge_cases_match_x25519_dalek() {
    let scalars = [[0u8; 32], [0xff; 32], [0x55; 32], {
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    }];
    for backend in backends() {
        for u in edge_us() {
            // Odd batch sizes exercise the padding of the last group of four.
            for n in [1usize, 3, 4, 5] {
                let ks: Vec<[u8; 32]> = (0..n).map(|i| scalars[i % scalars.len()]).collect();
                let us = vec![u; n];
                let mut out = vec![[0u8; 32]; n];
                x25519_many_with(backend, &ks, &us, &mut out);
                for i in 0..n {
                    assert_eq!(out[i], reference(&ks[i], &u), "{backend:?} u={u:02x?}");
                }
            }
            let mut on = [false; 1];
            on_curve_many_with(backend, &[u], &mut on);
            assert_eq!(
                on[0],
                MontgomeryPoint(u).to_edwards(0).is_some(),
                "{backend:?} on-curve u={u:02x?}"
            );
        }
    }
}

#[test]
fn rfc7748_vector() {
    // RFC 7748 section 5.2, first vector.
    let hex = |s: &str| {
        let mut b = [0u8; 32];
        for i in 0..32 {
            b[i] = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        b
    };
    let k = hex("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
    let u = hex("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
    let want = hex("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
    for backend in backends() {
        let mut out = [[0u8; 32]];
        x25519_many_with(backend, &[k], &[u], &mut out);
        assert_eq!(out[0], want, "{backend:?}");
    }
}

#[test]
fn iterated_rfc7748_1000() {
    // RFC 7748 section 5.2: k = u = 9, then k, u = X25519(k, u), k, 1000 times.
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for _ in 0..1000 {
        let mut out = [[0u8; 32]];
        x25519_many_with(Backend::detect(), &[k], &[u], &mut out);
        u = k;
        k = out[0];
    }
    let want = "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51";
    let got: String = k.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(got, want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_batches_match(
        jobs in proptest::collection::vec((any::<[u8; 32]>(), any::<[u8; 32]>()), 1..13)
    ) {
        let ks: Vec<[u8; 32]> = jobs.iter().map(|j| j.0).collect();
        let us: Vec<[u8; 32]> = jobs.iter().map(|j| j.1).collect();
        for backend in backends() {
            let mut out = vec![[0u8; 32]; jobs.len()];
            x25519_many_with(backend, &ks, &us, &mut out);
            let mut on = vec![false; jobs.len()];
            on_curve_many_with(backend, &us, &mut on);
            for i in 0..jobs.len() {
                prop_assert_eq!(out[i], reference(&ks[i], &us[i]));
                prop_assert_eq!(on[i], MontgomeryPoint(us[i]).to_edwards(0).is_some());
            }
        }
    }
}
