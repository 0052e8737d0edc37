//! Run-time dispatch of small hot loops to the widest vector unit the CPU has.
//!
//! The loops are written once in plain Rust with independent accumulators, then compiled
//! three times: for AVX-512F, for AVX2+FMA, and for the baseline target. The compiler
//! vectorizes each copy for its instruction set; [`dot`] picks one by [`cpu::isa`].

#[cfg(any(test, doc))]
use crate::cpu::Isa;
use crate::cpu::{self, multiversion};

/// Dot product of two equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    dot_with(cpu::isa(), a, b)
}

multiversion!(
    /// [`dot`] compiled for `isa`, which must be one this CPU runs ([`Isa::available`]).
    pub dot_with => dot_generic(a: &[f32], b: &[f32]) -> f32
);

/// 32 independent partial sums: enough to fill two 16-lane registers and hide FMA latency.
/// `mul_add` lets the vectorized copies use fused multiply-add.
#[inline(always)]
pub(crate) fn dot_generic(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    const L: usize = 32;
    let mut acc = [0.0f32; L];
    let (ca, cb) = (a.chunks_exact(L), b.chunks_exact(L));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..L {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let mut tail = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        tail = x.mul_add(*y, tail);
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    #[test]
    fn dot_matches_f64_reference() {
        let mut rng = Rng::new(8);
        for n in [0, 1, 7, 31, 32, 33, 576, 1000] {
            let a = rng.vec(n);
            let b = rng.vec(n);
            let reference: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            for isa in Isa::available() {
                assert!(
                    (dot_with(isa, &a, &b) as f64 - reference).abs()
                        < 1e-5 * (n as f64).sqrt().max(1.0),
                    "n = {n}, {isa}"
                );
            }
            assert_eq!(dot(&a, &b), dot_with(cpu::isa(), &a, &b));
            assert!(
                (dot_generic(&a, &b) as f64 - reference).abs() < 1e-5 * (n as f64).sqrt().max(1.0)
            );
        }
    }
}
