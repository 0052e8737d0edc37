//! Linear layers: `out[n, m] = x[n, k] · w[m, k]ᵀ`, the shape of every projection in a
//! transformer with weights stored `[out, in]`.
//!
//! The fast path is the `gemm` crate (AVX-512 micro-kernels selected at run time, with a
//! portable fallback); [`matmul_naive`] is the reference the tests hold it to.

use crate::cpu;

/// out: [n, m], x: [n, k], w: [m, k]. Overwrites `out`.
pub fn matmul(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize) {
    // Small products lose more to thread hand-off than they gain.
    let threads = if n * m * k < 1 << 16 {
        1
    } else {
        cpu::threads()
    };
    gemm_f32(out, x, w, n, k, m, threads);
}

/// [`matmul`] on the calling thread only, for callers that parallelize at a coarser grain.
pub fn matmul_single_thread(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize) {
    gemm_f32(out, x, w, n, k, m, 1);
}

fn gemm_f32(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize, threads: usize) {
    assert_eq!(out.len(), n * m, "matmul: out is not [n, m]");
    assert_eq!(x.len(), n * k, "matmul: x is not [n, k]");
    assert_eq!(w.len(), m * k, "matmul: w is not [m, k]");
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // gemm computes dst[m×n] = lhs[m×k] · rhs[k×n] with arbitrary strides. Our lhs is x
    // (row stride k), our rhs is wᵀ: element (i, j) of wᵀ is w[j * k + i], so its row
    // stride is 1 and its column stride is k.
    // SAFETY: the asserts above guarantee every index gemm computes from these strides and
    // sizes stays inside the three slices, and `out` does not alias the inputs (&mut).
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            out.as_mut_ptr(),
            1,
            m as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Reference for [`matmul`]: the textbook triple loop, accumulating in f64 so it is a
/// trustworthy oracle.
pub fn matmul_naive(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize) {
    assert_eq!(out.len(), n * m);
    for i in 0..n {
        for j in 0..m {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += x[i * k + p] as f64 * w[j * k + p] as f64;
            }
            out[i * m + j] = acc as f32;
        }
    }
}

/// Adds a bias row to every token: out[n, m] += bias[m].
pub fn add_bias(out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        for (o, b) in row.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close};

    #[test]
    fn matmul_matches_naive_on_many_shapes() {
        let mut rng = Rng::new(1);
        for &(n, k, m) in &[
            (1, 1, 1),
            (1, 64, 64),
            (3, 17, 5),
            (7, 64, 172),
            (33, 96, 130),
            (128, 256, 64),
            (1, 576, 1536),
        ] {
            let x = rng.vec(n * k);
            let w = rng.vec(m * k);
            let mut fast = vec![0.0; n * m];
            let mut slow = vec![0.0; n * m];
            matmul(&mut fast, &x, &w, n, k, m);
            matmul_naive(&mut slow, &x, &w, n, k, m);
            assert_close(&fast, &slow, 1e-5 * (k as f32).sqrt());
        }
    }

    #[test]
    fn matmul_overwrites_stale_output() {
        let mut out = vec![f32::NAN; 4];
        matmul(
            &mut out,
            &[1.0, 2.0],
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 2.0],
            1,
            2,
            4,
        );
        assert_eq!(out, vec![1.0, 2.0, 3.0, 6.0]);
    }

    #[test]
    fn add_bias_adds_to_every_row() {
        let mut out = vec![0.0, 1.0, 2.0, 3.0];
        add_bias(&mut out, &[10.0, 20.0]);
        assert_eq!(out, vec![10.0, 21.0, 12.0, 23.0]);
    }
}
