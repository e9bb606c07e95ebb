//! X25519 for many independent (scalar, u-coordinate) pairs at once.
//!
//! A relay unwraps packets in batches; every packet needs its own X25519, and those are
//! independent, so they can share SIMD registers: lane `l` of every vector belongs to job `l`.
//! On x86_64 CPUs with AVX2 (detected at run time) four Montgomery ladders run side by side in
//! radix 2^25.5 ([`Backend::Avx2x4`]); everywhere else (aarch64 included) each job runs on
//! curve25519-dalek ([`Backend::Portable`]). Both give byte-identical results, which the tests
//! check against x25519-dalek.
//!
//! The lanes are constant-time per job: the ladder's swaps are masks, and no branch or memory
//! address depends on a scalar or a point.
//!
//! All `unsafe` code of this crate is in the `avx2` module (intrinsics behind a run-time
//! feature check).
//!
//! Not here: anything else of Sphinx (pb-sphinx calls this for the group operations of a
//! batch), AVX-512 IFMA lanes (a later issue), key generation or clamping policy beyond
//! X25519's own.

#![deny(unsafe_code)]

mod avx2;
mod field;

use curve25519_dalek::montgomery::MontgomeryPoint;

/// Which implementation [`x25519_many`] and [`on_curve_many`] use on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Four ladders per AVX2 register set (x86_64 with AVX2).
    Avx2x4,
    /// One job at a time on curve25519-dalek.
    Portable,
}

impl Backend {
    /// The backend this CPU runs.
    pub fn detect() -> Self {
        if avx2::available() {
            Backend::Avx2x4
        } else {
            Backend::Portable
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Avx2x4 => "avx2x4",
            Backend::Portable => "portable",
        }
    }
}

/// `out[i] = X25519(scalars[i], us[i])` (RFC 7748: the scalar is clamped, the top bit of the
/// u-coordinate ignored). Processes `min` of the three lengths.
pub fn x25519_many(scalars: &[[u8; 32]], us: &[[u8; 32]], out: &mut [[u8; 32]]) {
    x25519_many_with(Backend::detect(), scalars, us, out);
}

/// [`x25519_many`] on a chosen backend (tests and benchmarks compare them). A backend this CPU
/// lacks falls back to [`Backend::Portable`].
pub fn x25519_many_with(
    backend: Backend,
    scalars: &[[u8; 32]],
    us: &[[u8; 32]],
    out: &mut [[u8; 32]],
) {
    let n = scalars.len().min(us.len()).min(out.len());
    let (scalars, us, out) = (&scalars[..n], &us[..n], &mut out[..n]);
    if backend == Backend::Avx2x4 && avx2::x25519_many(scalars, us, out) {
        return;
    }
    for ((k, u), o) in scalars.iter().zip(us).zip(out.iter_mut()) {
        *o = MontgomeryPoint(*u).mul_clamped(*k).to_bytes();
    }
}

/// `out[i]`: whether `us[i]` is the u-coordinate of a point on Curve25519 itself rather than on
/// its quadratic twist, i.e. whether `u^3 + 486662 u^2 + u` is a square (zero counts). The top
/// bit of the encoding is ignored, as by X25519. Processes `min` of the two lengths.
pub fn on_curve_many(us: &[[u8; 32]], out: &mut [bool]) {
    on_curve_many_with(Backend::detect(), us, out);
}

/// [`on_curve_many`] on a chosen backend.
pub fn on_curve_many_with(backend: Backend, us: &[[u8; 32]], out: &mut [bool]) {
    let n = us.len().min(out.len());
    let (us, out) = (&us[..n], &mut out[..n]);
    if backend == Backend::Avx2x4 && avx2::on_curve_many(us, out) {
        return;
    }
    for (u, o) in us.iter().zip(out.iter_mut()) {
        *o = field::on_curve_portable(u);
    }
}
