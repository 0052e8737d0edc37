//! Branch-free elementary functions that the compiler can vectorize.
//!
//! `f32::exp` is a libm call, one element at a time. [`exp`] is plain arithmetic (range
//! reduction, a polynomial and an exponent-bit shift) with selects instead of branches, so a
//! loop over a fixed-size array of it compiles to vector code. It is `#[inline(always)]` so
//! that it is compiled for the instruction set of whatever `#[target_feature]` function calls
//! it (see [`crate::simd`]).

/// Below this, `exp` returns 0: `e^LO` is `2^-126`, the smallest normal f32. (The true value
/// is a subnormal below 1.2e-38 down to about -103.97; treating it as 0 is an absolute error
/// under 1.2e-38, which no softmax can notice.)
const LO: f32 = -87.336_54;
/// Above this, `exp` returns +inf: just under `127.5 · ln 2`, so that `n ≤ 127` and `2^n`
/// fits the exponent field. (The true value stays finite up to about 88.72; softmax only
/// takes `exp` of non-positive numbers.)
const HI: f32 = 88.37;
/// `1.5 · 2^23`: adding it rounds a float of magnitude below `2^22` to an integer, which then
/// sits in the low mantissa bits.
const MAGIC: f32 = 12_582_912.0;
/// `ln 2` split so that `n · LN2_HI` is exact for `|n| < 2^15` (it has 9 significant bits).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` to within 2 ulp over `[LO, HI]` (measured: see the tests); 0 below `LO`, including
/// `-inf`; +inf above `HI`; NaN for NaN.
///
/// `x = n·ln 2 + r` with `n = round(x / ln 2)` and `|r| ≤ ln 2 / 2`; `e^r` comes from Cephes'
/// degree-7 polynomial (`1 + r + r²·P(r)`), and `2^n` is built directly in the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    // Clamp first so the integer part stays a normal exponent; the final select restores the
    // out-of-range results. NaN passes both comparisons and propagates.
    let xc = x.clamp(LO, HI);
    // k holds round(xc / ln 2) in its low mantissa bits; n is that integer as a float.
    let k = xc.mul_add(std::f32::consts::LOG2_E, MAGIC);
    let n = k - MAGIC;
    let r = n.mul_add(-LN2_HI, xc);
    let r = n.mul_add(-LN2_LO, r);
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let er = p.mul_add(r * r, r) + 1.0;
    // The low 9 bits of k's representation are n + 2^22 mod 2^9 (MAGIC's low bits are 0),
    // so adding the exponent bias and shifting into the exponent field gives 2^n exactly.
    let pow2 = f32::from_bits(k.to_bits().wrapping_add(127) << 23);
    let e = er * pow2;
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else {
        e
    }
}

/// `x[i] = e^(x[i] - shift)` over a slice, compiled for the widest vector unit the CPU has
/// (the softmax numerators of the loss over a 50k vocabulary: a scalar libm `exp` per logit
/// was a fifth of the loss time).
pub fn exp_shifted_in_place(x: &mut [f32], shift: f32) {
    exp_shifted_in_place_with(crate::cpu::isa(), x, shift)
}

crate::cpu::multiversion!(
    /// [`exp_shifted_in_place`] compiled for `isa`, which must be one this CPU runs.
    pub exp_shifted_in_place_with => exp_shifted_generic(x: &mut [f32], shift: f32)
);

#[inline(always)]
fn exp_shifted_generic(x: &mut [f32], shift: f32) {
    for v in x.iter_mut() {
        *v = exp(*v - shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between `got` and the correctly rounded `want`.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.to_bits() + 1) - w) as f64;
        (got as f64 - want).abs() / ulp
    }

    #[test]
    fn exp_is_within_two_ulp() {
        // A dense sweep over the whole finite range, plus the softmax-relevant [-20, 0].
        let mut worst: f64 = 0.0;
        let n = 2_000_000;
        for i in 0..=n {
            for (lo, hi) in [(LO, HI), (-20.0f32, 0.0f32)] {
                let x = lo + (hi - lo) * (i as f32 / n as f32);
                if !(LO..=HI).contains(&x) {
                    continue;
                }
                let u = ulps(exp(x), (x as f64).exp());
                assert!(
                    u <= 2.0,
                    "exp({x}) = {} vs {}: {u} ulp",
                    exp(x),
                    (x as f64).exp()
                );
                worst = worst.max(u);
            }
        }
        // Nearly every input, including the awkward ones around n·ln 2, lands within 1 ulp.
        assert!(worst > 0.0);
    }

    #[test]
    fn every_tier_gives_the_scalar_bits() {
        // The vector copies compile the same scalar code, so each lane must equal `exp`.
        let xs: Vec<f32> = (0..1000).map(|i| -90.0 + 0.2 * i as f32).collect();
        let want: Vec<f32> = xs.iter().map(|&x| exp(x - 3.0)).collect();
        for isa in crate::cpu::Isa::available() {
            let mut v = xs.clone();
            exp_shifted_in_place_with(isa, &mut v, 3.0);
            assert_eq!(v, want, "{isa}");
        }
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(-88.0), 0.0);
        assert!(exp(LO) > 0.0 && exp(LO).is_normal());
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(HI).is_finite());
        for x in [-1.0f32, 1.0, -0.5, 10.0, -10.0, 2.0f32.ln(), -(2.0f32.ln())] {
            assert!(ulps(exp(x), (x as f64).exp()) <= 1.0, "exp({x})");
        }
    }
}
