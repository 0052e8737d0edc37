//! The two row-wise loops of training attention, compiled per instruction set: the masked
//! softmax of a block of scores (forward, and its recomputation in backward) and the
//! gradient of the scores. Everything else in training attention is matrix products.

use super::train::first_key;
use crate::cpu::multiversion;
use crate::fastmath;

multiversion!(pub(super) softmax_rows => softmax_rows_generic(
    p: &mut [f32],
    lse: &mut [f32],
    starts: &[u32],
    r0: usize,
    k0: usize,
    scale: f32,
));

/// p: [rows, kc] unscaled scores in, probabilities out; lse: [rows] (overwrites). Row r is
/// query `t = r0 + r` against keys `k0..k0 + kc`; the keys it may not see get exactly 0.
#[inline(always)]
fn softmax_rows_generic(
    p: &mut [f32],
    lse: &mut [f32],
    starts: &[u32],
    r0: usize,
    k0: usize,
    scale: f32,
) {
    let kc = p.len() / lse.len();
    for (r, (row, lse_r)) in p.chunks_exact_mut(kc).zip(lse.iter_mut()).enumerate() {
        let t = r0 + r;
        let (lo, hi) = (first_key(starts, t) - k0, t + 1 - k0);
        // Rounding is monotone, so the largest scaled score is the largest score, scaled.
        let max = row[lo..hi].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
        let live = &mut row[lo..hi];
        for x in live.iter_mut() {
            *x = fastmath::exp(x.mul_add(scale, -max));
        }
        let sum = lane_sum(live);
        let inv = 1.0 / sum;
        for x in live.iter_mut() {
            *x *= inv;
        }
        row[..lo].fill(0.0);
        row[hi..].fill(0.0);
        *lse_r = max + sum.ln();
    }
}

multiversion!(pub(super) score_grads => score_grads_generic(
    p: &mut [f32],
    ds: &mut [f32],
    lse: &[f32],
    d: &[f32],
    starts: &[u32],
    r0: usize,
    k0: usize,
    scale: f32,
));

/// p: [rows, kc] unscaled scores in, probabilities out (exactly the forward's);
/// ds: [rows, kc] `dP` in, `scale · P ⊙ (dP - D)` out, the gradient of the unscaled scores;
/// lse, d: [rows]. Masking as in [`softmax_rows_generic`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn score_grads_generic(
    p: &mut [f32],
    ds: &mut [f32],
    lse: &[f32],
    d: &[f32],
    starts: &[u32],
    r0: usize,
    k0: usize,
    scale: f32,
) {
    let kc = p.len() / lse.len();
    let rows = p.chunks_exact_mut(kc).zip(ds.chunks_exact_mut(kc));
    for (r, (p_row, ds_row)) in rows.enumerate() {
        let t = r0 + r;
        let (lo, hi) = (first_key(starts, t) - k0, t + 1 - k0);
        let (lse_r, d_r) = (lse[r], d[r]);
        for (x, g) in p_row[lo..hi].iter_mut().zip(&mut ds_row[lo..hi]) {
            *x = fastmath::exp(x.mul_add(scale, -lse_r));
            *g = *x * (*g - d_r) * scale;
        }
        for row in [p_row, ds_row] {
            row[..lo].fill(0.0);
            row[hi..].fill(0.0);
        }
    }
}

/// The sum of a slice in 16 lanes, then the lanes as a fixed tree of halvings: vectorizable,
/// and the same order every time.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    const L: usize = 16;
    let mut v = [0.0f32; L];
    let chunks = x.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for l in 0..L {
            v[l] += c[l];
        }
    }
    for (l, &t) in tail.iter().enumerate() {
        v[l] += t;
    }
    let mut w = L / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}
