//! Linear layers: `out[n, m] = x[n, k] · w[m, k]ᵀ`, the shape of every projection in a
//! transformer with weights stored `[out, in]`.
//!
//! The fast path is the `gemm` crate (AVX-512 micro-kernels selected at run time, with a
//! portable fallback); [`matmul_naive`] is the reference the tests hold it to.

use crate::Precision;
use crate::cpu;

/// out: [n, m], x: [n, k], w: [m, k]. Overwrites `out`.
pub fn matmul(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize) {
    gemm_f32(out, x, w, n, k, m, threads_for(n * m * k));
}

/// [`matmul`] in the given precision: f32, or bf16 operands with f32 sums
/// ([`crate::gemm_bf16::matmul_bf16`]).
pub fn matmul_in(
    precision: Precision,
    out: &mut [f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    k: usize,
    m: usize,
) {
    match precision {
        Precision::F32 => matmul(out, x, w, n, k, m),
        Precision::Bf16 => crate::gemm_bf16::matmul_bf16(out, x, w, n, k, m),
    }
}

/// Threads for a product of `multiply_adds`: small products lose more to thread hand-off
/// than they gain, so they stay on the calling thread.
pub(crate) fn threads_for(multiply_adds: usize) -> usize {
    if multiply_adds < 1 << 16 {
        1
    } else {
        cpu::threads()
    }
}

/// [`matmul`] on the calling thread only, for callers that parallelize at a coarser grain.
pub fn matmul_single_thread(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize) {
    gemm_f32(out, x, w, n, k, m, 1);
}

fn gemm_f32(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize, threads: usize) {
    assert_eq!(out.len(), n * m, "matmul: out is not [n, m]");
    assert_eq!(x.len(), n * k, "matmul: x is not [n, k]");
    assert_eq!(w.len(), m * k, "matmul: w is not [m, k]");
    // x is read row-major; wᵀ's element (i, j) is w[j * k + i]: row stride 1, column stride k.
    gemm_strided((out, m), n, m, k, (x, k, 1), (w, 1, k), false, threads);
}

/// dx: [n, k] (+=), dw: [m, k] (+=), dy: [n, m], x: [n, k], w: [m, k]. Gradient of
/// `out = x · wᵀ`: `dx += dy · w` and `dw += dyᵀ · x`. Either output may be `None` when the
/// caller does not need it (a frozen weight needs no `dw`; the first layer needs no `dx`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    k: usize,
    m: usize,
) {
    assert_eq!(dy.len(), n * m, "matmul_backward: dy is not [n, m]");
    assert_eq!(x.len(), n * k, "matmul_backward: x is not [n, k]");
    assert_eq!(w.len(), m * k, "matmul_backward: w is not [m, k]");
    // Both products have n * m * k multiply-adds, as the forward.
    let threads = threads_for(n * m * k);
    if let Some(dx) = dx {
        assert_eq!(dx.len(), n * k, "matmul_backward: dx is not [n, k]");
        // dx[n, k] += dy[n, m] · w[m, k]; both operands are plain row-major.
        gemm_accumulate(dx, n, k, m, (dy, m, 1), (w, k, 1), threads);
    }
    if let Some(dw) = dw {
        assert_eq!(dw.len(), m * k, "matmul_backward: dw is not [m, k]");
        // dw[m, k] += dyᵀ[m, n] · x[n, k]. Element (i, j) of dyᵀ is dy[j * m + i], so dyᵀ is
        // read with row stride 1 and column stride m: no transposed copy is made.
        gemm_accumulate(dw, m, k, n, (dy, 1, m), (x, k, 1), threads);
    }
}

/// [`matmul_backward`] in the given precision.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_in(
    precision: Precision,
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    k: usize,
    m: usize,
) {
    match precision {
        Precision::F32 => matmul_backward(dx, dw, dy, x, w, n, k, m),
        Precision::Bf16 => crate::gemm_bf16::matmul_backward_bf16(dx, dw, dy, x, w, n, k, m),
    }
}

/// Reference for [`matmul_backward`]: the two textbook triple loops, in f64, accumulating.
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_naive(
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    k: usize,
    m: usize,
) {
    if let Some(dx) = dx {
        for i in 0..n {
            for p in 0..k {
                let acc: f64 = (0..m)
                    .map(|j| dy[i * m + j] as f64 * w[j * k + p] as f64)
                    .sum();
                dx[i * k + p] = (dx[i * k + p] as f64 + acc) as f32;
            }
        }
    }
    if let Some(dw) = dw {
        for j in 0..m {
            for p in 0..k {
                let acc: f64 = (0..n)
                    .map(|i| dy[i * m + j] as f64 * x[i * k + p] as f64)
                    .sum();
                dw[j * k + p] = (dw[j * k + p] as f64 + acc) as f32;
            }
        }
    }
}

/// A matrix operand for [`gemm_accumulate`]: the data, its row stride and its column stride.
pub(crate) type Operand<'a> = (&'a [f32], usize, usize);

/// dst: [rows, cols] row-major (+=). Computes `dst += lhs · rhs` with lhs `[rows, depth]` and
/// rhs `[depth, cols]`, each read through its own strides, so transposed operands cost
/// nothing. The gemm crate's `read_dst` with alpha = 1 makes the accumulation free.
pub(crate) fn gemm_accumulate(
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    depth: usize,
    lhs: Operand,
    rhs: Operand,
    threads: usize,
) {
    assert_eq!(
        dst.len(),
        rows * cols,
        "gemm_accumulate: dst is not [rows, cols]"
    );
    gemm_strided((dst, cols), rows, cols, depth, lhs, rhs, true, threads);
}

/// dst: `[rows, cols]` with row stride `dst.1` (columns contiguous). `dst = lhs · rhs`, or
/// `dst += lhs · rhs` when `accumulate`, lhs `[rows, depth]` and rhs `[depth, cols]` read
/// through their strides. Elements of dst between rows (past `cols`) are left alone, so a
/// caller can write one head's columns of a wider row.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
    dst: (&mut [f32], usize),
    rows: usize,
    cols: usize,
    depth: usize,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
    threads: usize,
) {
    let (dst, dst_rs) = dst;
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        cols <= dst_rs && (rows - 1) * dst_rs + cols <= dst.len(),
        "gemm_strided: dst is not [rows, cols] with its row stride"
    );
    if depth == 0 {
        // An empty sum adds nothing, or sets nothing but zeros.
        if !accumulate {
            for row in dst.chunks_mut(dst_rs).take(rows) {
                row[..cols].fill(0.0);
            }
        }
        return;
    }
    // The largest index each operand is read at must lie inside it; with the checks above
    // this is what makes the unsafe call below sound.
    let last = |(v, rs, cs): Operand, r: usize, c: usize| {
        assert!(
            (r - 1) * rs + (c - 1) * cs < v.len(),
            "gemm_strided: operand too short"
        );
    };
    last(lhs, rows, depth);
    last(rhs, depth, cols);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index gemm forms from these sizes and strides is at most the last one
    // checked above, and `dst` cannot alias the inputs (it is a unique borrow).
    unsafe {
        gemm::gemm(
            rows,
            cols,
            depth,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.0.as_ptr(),
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0.as_ptr(),
            rhs.2 as isize,
            rhs.1 as isize,
            if accumulate { 1.0 } else { 0.0 },
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

/// The best f32 GEMM rate of `reps` square `n × n × n` products on this machine, in
/// GFLOP/s, after one warm-up product: the reference for training utilization.
pub fn sgemm_peak_gflops(n: usize, reps: usize) -> f64 {
    peak_gflops_of(matmul, n, reps)
}

/// A function with [`matmul`]'s signature: `out[n, m] = x[n, k] · w[m, k]ᵀ`.
pub(crate) type Product = fn(&mut [f32], &[f32], &[f32], usize, usize, usize);

/// The best rate of `reps` square `n × n × n` products by `product`, in GFLOP/s, after one
/// warm-up product.
pub(crate) fn peak_gflops_of(product: Product, n: usize, reps: usize) -> f64 {
    let n = n.max(16);
    let x: Vec<f32> = (0..n * n)
        .map(|i| ((i * 31 % 97) as f32 - 48.0) / 97.0)
        .collect();
    let mut y = vec![0.0; n * n];
    product(&mut y, &x, &x, n, n, n);
    (0..reps.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            product(&mut y, &x, &x, n, n, n);
            2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
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
    use crate::testutil::{Rng, assert_close, assert_grad_close, finite_diff, to_f64};

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
    fn matmul_backward_matches_naive_and_accumulates() {
        let mut rng = Rng::new(11);
        for &(n, k, m) in &[
            (1, 1, 1),
            (1, 64, 64),
            (3, 17, 5),
            (7, 64, 172),
            (33, 96, 130),
            (128, 256, 64),
        ] {
            let (dy, x, w) = (rng.vec(n * m), rng.vec(n * k), rng.vec(m * k));
            // Start from non-zero gradients: the kernel must add to them, not overwrite.
            let (dx0, dw0) = (rng.vec(n * k), rng.vec(m * k));
            let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
            let (mut dx_ref, mut dw_ref) = (dx0.clone(), dw0.clone());
            matmul_backward(Some(&mut dx), Some(&mut dw), &dy, &x, &w, n, k, m);
            matmul_backward_naive(Some(&mut dx_ref), Some(&mut dw_ref), &dy, &x, &w, n, k, m);
            assert_close(&dx, &dx_ref, 1e-5 * (m as f32).sqrt());
            assert_close(&dw, &dw_ref, 1e-5 * (n as f32).sqrt());
            // Each output alone gives the same result as both together.
            let mut dx_only = dx0.clone();
            matmul_backward(Some(&mut dx_only), None, &dy, &x, &w, n, k, m);
            assert_eq!(dx_only, dx);
            let mut dw_only = dw0.clone();
            matmul_backward(None, Some(&mut dw_only), &dy, &x, &w, n, k, m);
            assert_eq!(dw_only, dw);
        }
    }

    #[test]
    fn matmul_backward_matches_finite_differences() {
        let (n, k, m) = (4, 6, 5);
        let mut rng = Rng::new(12);
        let (x, w, r) = (rng.vec(n * k), rng.vec(m * k), rng.vec(n * m));
        // L = Σ out ⊙ r, so dL/dout = r.
        let loss = |x: &[f64], w: &[f64]| -> f64 {
            let mut l = 0.0;
            for i in 0..n {
                for j in 0..m {
                    let o: f64 = (0..k).map(|p| x[i * k + p] * w[j * k + p]).sum();
                    l += o * r[i * m + j] as f64;
                }
            }
            l
        };
        let (mut dx, mut dw) = (vec![0.0; n * k], vec![0.0; m * k]);
        matmul_backward(Some(&mut dx), Some(&mut dw), &r, &x, &w, n, k, m);
        let w64 = to_f64(&w);
        let x64 = to_f64(&x);
        assert_grad_close(&dx, &finite_diff(|x| loss(x, &w64), &x), 1e-5);
        assert_grad_close(&dw, &finite_diff(|w| loss(&x64, w), &w), 1e-5);
    }

    #[test]
    fn add_bias_adds_to_every_row() {
        let mut out = vec![0.0, 1.0, 2.0, 3.0];
        add_bias(&mut out, &[10.0, 20.0]);
        assert_eq!(out, vec![10.0, 21.0, 12.0, 23.0]);
    }
}
