//! Measures whether the CPU's bf16 dot products outpace its f32 FMAs.
//!
//! AVX512_BF16 is not equally fast everywhere: on AMD Zen 4 one `vdpbf16ps` (64 flops)
//! issues as often as one `vfmadd231ps` (32 flops), so bf16 doubles the peak; on the Intel
//! cores seen so far that expose AVX512_BF16 without AMX (a KVM guest of a 5th-generation
//! Xeon) it issues at a quarter of the FMA rate, half the f32 peak. No CPUID bit says which,
//! so the two rates are timed once, on register-only loops that take about a millisecond.

use std::sync::OnceLock;
use std::time::Instant;

/// Whether `vdpbf16ps` does at least as many flops per second as `vfmadd231ps` on this CPU
/// (false without AVX512_BF16). Measured once per process.
pub fn bf16_dot_fast() -> bool {
    static FAST: OnceLock<bool> = OnceLock::new();
    *FAST.get_or_init(|| {
        let (dot, fma) = rates();
        dot >= fma
    })
}

/// The flop rates (per second) of `vdpbf16ps` and `vfmadd231ps` on 12 independent
/// accumulators, best of several short runs each; (0, 1) where AVX512_BF16 is missing.
pub fn rates() -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if super::features().avx512bf16 && super::features().avx512 {
        const ITERS: usize = 2048;
        let best = |f: &dyn Fn() -> f32, flops: f64| {
            (0..9)
                .map(|_| {
                    let t = Instant::now();
                    std::hint::black_box(f());
                    flops / t.elapsed().as_secs_f64().max(1e-9)
                })
                .fold(0.0, f64::max)
        };
        // SAFETY: both loops need AVX-512F and AVX512_BF16, checked above.
        let dot = best(&|| unsafe { dot_loop(ITERS) }, (ITERS * 12 * 64) as f64);
        let fma = best(&|| unsafe { fma_loop(ITERS) }, (ITERS * 12 * 32) as f64);
        return (dot, fma);
    }
    (0.0, 1.0)
}

/// `iters` rounds of 12 independent `vdpbf16ps` (16 lanes × 2 products each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn dot_loop(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 12];
    // bf16 1.0 in every half.
    let mut x = _mm512_set1_epi16(0x3f80);
    for _ in 0..iters {
        // SAFETY: a bit cast between two 512-bit vector types.
        let xb: __m512bh = unsafe { std::mem::transmute(x) };
        for a in acc.iter_mut() {
            *a = _mm512_dpbf16_ps(*a, xb, xb);
        }
        // Opaque to the compiler, so the loop cannot be folded.
        // SAFETY: an empty instruction string; it only claims to change x.
        unsafe { std::arch::asm!("/* {0} */", inout(zmm_reg) x, options(nomem, nostack, pure)) };
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

/// `iters` rounds of 12 independent `vfmadd231ps` (16 lanes each).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_ps(); 12];
    let mut x = _mm512_set1_ps(1e-3);
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(x, x, *a);
        }
        // SAFETY: an empty instruction string; it only claims to change x.
        unsafe { std::arch::asm!("/* {0} */", inout(zmm_reg) x, options(nomem, nostack, pure)) };
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_are_measured_where_the_dot_product_exists() {
        let (dot, fma) = super::rates();
        if !super::super::features().avx512bf16 {
            eprintln!("skipped: no AVX512_BF16 on this CPU");
            return;
        }
        eprintln!(
            "vdpbf16ps {:.0} GFLOP/s, vfmadd231ps {:.0} GFLOP/s",
            dot / 1e9,
            fma / 1e9
        );
        // Any real CPU does between 1 and 10,000 GFLOP/s per core on each.
        for r in [dot, fma] {
            assert!((1e9..1e13).contains(&r), "rate {r}");
        }
    }
}
