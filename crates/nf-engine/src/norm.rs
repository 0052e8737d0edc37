//! RMSNorm: `out = x / sqrt(mean(x²) + eps) * weight`, per row.

use rayon::prelude::*;

use crate::cpu::{self, Isa, multiversion};

/// Rows per task when a norm runs in parallel. Fixed, so the weight gradient's partial sums
/// (one per task) and their order do not depend on the thread count.
const TASK_ROWS: usize = 32;

/// out: [n, d], x: [n, d], weight: [d].
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    rmsnorm_with(cpu::isa(), out, x, weight, eps);
}

/// [`rmsnorm`] on a given instruction-set tier. Every tier gives the same bits: the
/// arithmetic order is fixed and nothing is contracted into FMAs.
pub fn rmsnorm_with(isa: Isa, out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    assert_eq!(out.len(), x.len());
    assert_eq!(x.len() % d.max(1), 0, "rmsnorm: x rows are not of length d");
    if d == 0 {
        return;
    }
    if !cpu::split_pass(x.len()) {
        return rmsnorm_rows(isa, out, x, weight, eps);
    }
    out.par_chunks_mut(TASK_ROWS * d)
        .zip(x.par_chunks(TASK_ROWS * d))
        .for_each(|(o, x)| rmsnorm_rows(isa, o, x, weight, eps));
}

multiversion!(rmsnorm_rows => rmsnorm_rows_generic(
    out: &mut [f32],
    x: &[f32],
    weight: &[f32],
    eps: f32,
));

#[inline(always)]
fn rmsnorm_rows_generic(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let scale = inv_rms(xr, eps);
        for ((o, &v), &w) in o.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// `1 / sqrt(mean(x²) + eps)` of one row. Shared by the forward and the backward so the
/// backward recomputes exactly the value the forward used.
#[inline(always)]
fn inv_rms(xr: &[f32], eps: f32) -> f32 {
    // Sum of squares in f32 with four lanes so the compiler vectorizes it; the error is
    // far below the 1e-5 tolerance the reference comparisons use.
    let mut acc = [0.0f32; 4];
    let mut chunks = xr.chunks_exact(4);
    for c in &mut chunks {
        for l in 0..4 {
            acc[l] += c[l] * c[l];
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    let ss = acc.iter().sum::<f32>() + tail;
    1.0 / (ss / xr.len() as f32 + eps).sqrt()
}

/// dx: [n, d] (+=), dweight: [d] (+=) or None, dy: [n, d], x: [n, d] (the forward input),
/// weight: [d]. Recomputes rstd from x (cheap; saves storing it).
///
/// With `r = inv_rms(x)` and `y_i = x_i · r · w_i`, `∂r/∂x_j = -r³ x_j / d`, so
/// `dx_j = r · w_j · dy_j - (r³ / d) · x_j · Σ_i dy_i · w_i · x_i` and `dw_i = Σ_rows dy_i · x_i · r`.
pub fn rmsnorm_backward(
    dx: &mut [f32],
    dweight: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    eps: f32,
) {
    rmsnorm_backward_with(cpu::isa(), dx, dweight, dy, x, weight, eps);
}

/// [`rmsnorm_backward`] on a given instruction-set tier (same bits on every tier). `dweight`
/// receives one partial sum per block of [`TASK_ROWS`] rows, added in block order, so its
/// bits do not depend on the thread count either.
pub fn rmsnorm_backward_with(
    isa: Isa,
    dx: &mut [f32],
    dweight: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    eps: f32,
) {
    let d = weight.len();
    assert_eq!(
        x.len() % d.max(1),
        0,
        "rmsnorm_backward: x rows are not of length d"
    );
    assert_eq!(dx.len(), x.len(), "rmsnorm_backward: dx is not [n, d]");
    assert_eq!(dy.len(), x.len(), "rmsnorm_backward: dy is not [n, d]");
    if let Some(dw) = dweight.as_deref() {
        assert_eq!(dw.len(), d, "rmsnorm_backward: dweight is not [d]");
    }
    if d == 0 {
        return;
    }
    let blocks = (x.len() / d).div_ceil(TASK_ROWS);
    let mut partial = vec![0.0f32; if dweight.is_some() { blocks * d } else { 0 }];
    let task =
        |((dx, dy), (x, dw)): BackwardTask| rmsnorm_backward_rows(isa, dx, dw, dy, x, weight, eps);
    let n = TASK_ROWS * d;
    // Without a weight gradient each task gets an empty partial it never touches.
    let partials = partial
        .chunks_mut(d)
        .map(Some)
        .chain(std::iter::repeat_with(|| None));
    if !cpu::split_pass(x.len()) {
        dx.chunks_mut(n)
            .zip(dy.chunks(n))
            .zip(x.chunks(n).zip(partials))
            .for_each(task);
    } else {
        let partials: Vec<Option<&mut [f32]>> = partials.take(blocks).collect();
        dx.par_chunks_mut(n)
            .zip(dy.par_chunks(n))
            .zip(x.par_chunks(n).zip(partials))
            .for_each(task);
    }
    if let Some(dw) = dweight {
        for p in partial.chunks_exact(d) {
            dw.iter_mut().zip(p).for_each(|(g, v)| *g += v);
        }
    }
}

/// One task of [`rmsnorm_backward_with`]: its rows of dx and dy, of x, and its partial of
/// the weight gradient.
type BackwardTask<'a> = (
    (&'a mut [f32], &'a [f32]),
    (&'a [f32], Option<&'a mut [f32]>),
);

multiversion!(rmsnorm_backward_rows => rmsnorm_backward_rows_generic(
    dx: &mut [f32],
    dweight: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    eps: f32,
));

#[inline(always)]
fn rmsnorm_backward_rows_generic(
    dx: &mut [f32],
    mut dweight: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    eps: f32,
) {
    let d = weight.len();
    for ((dxr, dyr), xr) in dx
        .chunks_exact_mut(d)
        .zip(dy.chunks_exact(d))
        .zip(x.chunks_exact(d))
    {
        let r = inv_rms(xr, eps);
        // The one reduction of the row, in four lanes like the forward's sum of squares.
        let mut acc = [0.0f32; 4];
        let n4 = d / 4 * 4;
        for i in (0..n4).step_by(4) {
            for l in 0..4 {
                acc[l] += dyr[i + l] * weight[i + l] * xr[i + l];
            }
        }
        let tail: f32 = (n4..d).map(|i| dyr[i] * weight[i] * xr[i]).sum();
        let dot = acc.iter().sum::<f32>() + tail;
        let c = r * r * r / d as f32 * dot;
        for i in 0..d {
            dxr[i] += r * weight[i] * dyr[i] - c * xr[i];
        }
        if let Some(dw) = dweight.as_deref_mut() {
            for i in 0..d {
                dw[i] += dyr[i] * xr[i] * r;
            }
        }
    }
}

/// Reference for [`rmsnorm`], in f64.
pub fn rmsnorm_naive(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let scale = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..d {
            o[i] = (xr[i] as f64 * scale * weight[i] as f64) as f32;
        }
    }
}

/// Reference for [`rmsnorm_backward`], in f64, accumulating.
pub fn rmsnorm_backward_naive(
    dx: &mut [f32],
    mut dweight: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    eps: f32,
) {
    let d = weight.len();
    for row in 0..x.len() / d {
        let xr = &x[row * d..(row + 1) * d];
        let dyr = &dy[row * d..(row + 1) * d];
        let ms = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        let dot: f64 = (0..d)
            .map(|i| dyr[i] as f64 * weight[i] as f64 * xr[i] as f64)
            .sum();
        for i in 0..d {
            let g =
                r * weight[i] as f64 * dyr[i] as f64 - r * r * r / d as f64 * xr[i] as f64 * dot;
            dx[row * d + i] = (dx[row * d + i] as f64 + g) as f32;
            if let Some(dw) = dweight.as_deref_mut() {
                dw[i] = (dw[i] as f64 + dyr[i] as f64 * xr[i] as f64 * r) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, assert_grad_close, finite_diff, to_f64};

    #[test]
    fn rmsnorm_matches_naive() {
        let mut rng = Rng::new(2);
        for &(n, d) in &[(1, 1), (3, 7), (5, 64), (2, 576)] {
            let x = rng.vec(n * d);
            let w = rng.vec(d);
            let mut fast = vec![0.0; n * d];
            let mut slow = vec![0.0; n * d];
            rmsnorm(&mut fast, &x, &w, 1e-5);
            rmsnorm_naive(&mut slow, &x, &w, 1e-5);
            assert_close(&fast, &slow, 1e-5);
        }
    }

    #[test]
    fn rmsnorm_of_constant_row_is_weight() {
        let mut out = vec![0.0; 3];
        rmsnorm(&mut out, &[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0], 0.0);
        assert_close(&out, &[1.0, 2.0, 3.0], 1e-6);
    }

    #[test]
    fn rmsnorm_backward_matches_naive_and_accumulates() {
        let mut rng = Rng::new(21);
        for &(n, d) in &[(1, 1), (3, 7), (5, 64), (2, 576)] {
            let (x, w, dy) = (rng.vec(n * d), rng.vec(d), rng.vec(n * d));
            let (dx0, dw0) = (rng.vec(n * d), rng.vec(d));
            let (mut dx, mut dw) = (dx0.clone(), dw0.clone());
            let (mut dx_ref, mut dw_ref) = (dx0.clone(), dw0.clone());
            rmsnorm_backward(&mut dx, Some(&mut dw), &dy, &x, &w, 1e-5);
            rmsnorm_backward_naive(&mut dx_ref, Some(&mut dw_ref), &dy, &x, &w, 1e-5);
            assert_close(&dx, &dx_ref, 1e-5);
            assert_close(&dw, &dw_ref, 1e-5);
            let mut dx_only = dx0.clone();
            rmsnorm_backward(&mut dx_only, None, &dy, &x, &w, 1e-5);
            assert_eq!(dx_only, dx);
        }
    }

    /// f64 forward for the finite differences: L = Σ rmsnorm(x, w) ⊙ r.
    fn rmsnorm_loss(x: &[f64], w: &[f64], r: &[f32], eps: f64) -> f64 {
        let d = w.len();
        let mut l = 0.0;
        for (row, xr) in x.chunks_exact(d).enumerate() {
            let s = 1.0 / (xr.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
            for i in 0..d {
                l += xr[i] * s * w[i] * r[row * d + i] as f64;
            }
        }
        l
    }

    /// Many rows (the parallel path, several weight-gradient partials) on every tier: the
    /// same bits everywhere, and the reference's values.
    #[test]
    fn every_tier_gives_the_same_bits_on_many_rows() {
        let mut rng = Rng::new(4);
        let (n, d) = (257, 96);
        let (x, w, dy) = (rng.vec(n * d), rng.vec(d), rng.vec(n * d));
        let mut results = Vec::new();
        for isa in Isa::available() {
            let mut out = vec![0.0; n * d];
            rmsnorm_with(isa, &mut out, &x, &w, 1e-5);
            let (mut dx, mut dw) = (vec![0.5; n * d], vec![0.25; d]);
            rmsnorm_backward_with(isa, &mut dx, Some(&mut dw), &dy, &x, &w, 1e-5);
            results.push((out, dx, dw));
        }
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        let (out, dx, dw) = &results[0];
        let mut slow = vec![0.0; n * d];
        rmsnorm_naive(&mut slow, &x, &w, 1e-5);
        assert_close(out, &slow, 1e-5);
        let (mut dx_ref, mut dw_ref) = (vec![0.5; n * d], vec![0.25; d]);
        rmsnorm_backward_naive(&mut dx_ref, Some(&mut dw_ref), &dy, &x, &w, 1e-5);
        assert_close(dx, &dx_ref, 1e-4);
        assert_close(dw, &dw_ref, 1e-4);
    }

    #[test]
    fn rmsnorm_backward_matches_finite_differences() {
        let (n, d, eps) = (3, 16, 1e-5);
        let mut rng = Rng::new(22);
        let (x, w, r) = (rng.vec(n * d), rng.vec(d), rng.vec(n * d));
        let (mut dx, mut dw) = (vec![0.0; n * d], vec![0.0; d]);
        rmsnorm_backward(&mut dx, Some(&mut dw), &r, &x, &w, eps);
        let (x64, w64) = (to_f64(&x), to_f64(&w));
        let eps = eps as f64;
        assert_grad_close(
            &dx,
            &finite_diff(|x| rmsnorm_loss(x, &w64, &r, eps), &x),
            1e-4,
        );
        assert_grad_close(
            &dw,
            &finite_diff(|w| rmsnorm_loss(&x64, w, &r, eps), &w),
            1e-4,
        );
    }
}
