//! The pieces a layer's forward and backward are made of: linear layers with their LoRA
//! terms and precision, norms, biases and dropout, each backward below its forward.

use nf_engine::Precision;
use nf_engine::gemm_bf16::{
    LowRank, linear_backward_dx_packed, linear_lora_bf16, linear_packed, linears_backward_dx_bf16,
};
use nf_engine::linear::{Weight, linear_backward_dx_in, linear_in};
use nf_engine::lowrank::{
    Strided as S, narrow_t_times_wide, wide_t_times_narrow, wide_times_narrow,
};
use nf_engine::matmul::{add_bias, matmul_backward_in, matmul_in};
use nf_engine::norm::{rmsnorm, rmsnorm_backward};

use crate::train::{Adapter, Lin, Mat, ParamStore, Vector, splitmix64};

use super::{Ctx, timed};

/// out = dropout(x) (or `out += dropout(x)` when `accumulate`), with the mask drawn from
/// `key`: the same key gives the same mask, so the backward pass regenerates it instead of
/// storing it. Kept elements are scaled by `1 / (1 - p)` as `torch.nn.Dropout` does.
pub(super) fn dropout(out: &mut [f32], x: &[f32], p: f32, key: u64, accumulate: bool) {
    let keep = 1.0 / (1.0 - p);
    let threshold = (p as f64 * (1u64 << 53) as f64) as u64;
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        let mut s = key ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93);
        let kept = (splitmix64(&mut s) >> 11) >= threshold;
        let y = if kept { v * keep } else { 0.0 };
        if accumulate {
            *o += y;
        } else {
            *o = y;
        }
    }
}

/// db: [m] (+=), dy: [n, m]. Gradient of a bias added to every row.
pub(super) fn bias_backward(db: &mut [f32], dy: &[f32]) {
    for row in dy.chunks_exact(db.len()) {
        db.iter_mut().zip(row).for_each(|(d, g)| *d += g);
    }
}

pub(super) fn add_into(acc: &mut [f32], x: &[f32]) {
    acc.iter_mut().zip(x).for_each(|(a, b)| *a += b);
}

/// out: [n, rows] = x: [n, cols] · Wᵀ for a trainable or frozen matrix.
#[allow(clippy::too_many_arguments)]
pub(super) fn mat_forward(
    prec: Precision,
    out: &mut [f32],
    x: &[f32],
    m: &Mat,
    p: &ParamStore,
    rows: usize,
    cols: usize,
) {
    match m {
        Mat::Param(id) => match p.packed(*id) {
            Some(pw) => linear_packed(out, x, pw),
            None => matmul_in(prec, out, x, p.value(*id), x.len() / cols, cols, rows),
        },
        Mat::Frozen(w) => linear_in(prec, out, x, w),
    }
}

/// dx: [n, cols] (+=) and, for a trainable matrix, its gradient (+=), from dy: [n, rows].
#[allow(clippy::too_many_arguments)]
pub(super) fn mat_backward(
    prec: Precision,
    dx: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    m: &Mat,
    p: &mut ParamStore,
    rows: usize,
    cols: usize,
) {
    match m {
        Mat::Param(id) => {
            // dx through the packed copy when there is one; dW from the activations.
            let dx = match (p.packed(*id), dx) {
                (Some(pw), Some(dx)) => {
                    linear_backward_dx_packed(dx, dy, pw);
                    None
                }
                (_, dx) => dx,
            };
            let (w, gw) = p.value_and_grad(*id);
            matmul_backward_in(prec, dx, Some(gw), dy, x, w, dy.len() / rows, cols, rows);
        }
        Mat::Frozen(w) => {
            if let Some(dx) = dx {
                linear_backward_dx_in(prec, dx, dy, w);
            }
        }
    }
}

/// The LoRA hidden buffer of `lin`'s adapter, if it has one.
pub(super) fn h_of<'a>(lora_h: &'a mut [Vec<f32>], lin: &Lin) -> Option<&'a mut [f32]> {
    lin.adapter.map(|ad| lora_h[ad.slot].as_mut_slice())
}

/// The frozen weight of `lin` when its adapter's products can be packed beside the base
/// product (bf16 GEMM): one pass over the output instead of two.
pub(super) fn fused_base<'a>(cx: &Ctx, lin: &'a Lin) -> Option<&'a Weight> {
    match (&lin.base, cx.precision) {
        (Mat::Frozen(w), Precision::Bf16) => Some(w),
        _ => None,
    }
}

/// out: [n, rows] = x · Wᵀ + scale · (dropout(x) · Aᵀ) · Bᵀ; saves `h = scale · dropout(x)·Aᵀ`.
#[allow(clippy::too_many_arguments)]
pub(super) fn lin_forward(
    cx: &Ctx,
    lin: &Lin,
    l: usize,
    out: &mut [f32],
    x: &[f32],
    h: Option<&mut [f32]>,
    xd: &mut [f32],
    tmp: &mut [f32],
    p: &ParamStore,
) {
    let (Some(ad), Some(h)) = (lin.adapter, h) else {
        timed(&cx.times.matmul, || {
            mat_forward(cx.precision, out, x, &lin.base, p, lin.rows, lin.cols)
        });
        return;
    };
    let n = x.len() / lin.cols;
    let r = h.len() / n;
    let xin: &[f32] = if cx.dropout > 0.0 {
        let xd = &mut xd[..x.len()];
        timed(&cx.times.other, || {
            dropout(xd, x, cx.dropout, cx.dropout_key(l, ad.slot), false)
        });
        xd
    } else {
        x
    };
    timed(&cx.times.matmul, || {
        let a = S::transposed(p.value(ad.a), lin.cols);
        wide_times_narrow(h, S::rows(xin, lin.cols), a, n, lin.cols, r, false);
        h.iter_mut().for_each(|v| *v *= cx.lora_scale);
        let b = p.value(ad.b);
        if let Some(w) = fused_base(cx, lin) {
            linear_lora_bf16(out, x, w, Some(LowRank { h, m: b, r }));
            return;
        }
        mat_forward(cx.precision, out, x, &lin.base, p, lin.rows, lin.cols);
        let tmp = &mut tmp[..n * lin.rows];
        matmul_in(cx.precision, tmp, h, b, n, r, lin.rows);
        add_into(out, tmp);
    });
}

/// Backward of [`lin_forward`]: dx (+=) from dy, and gradients of whatever trains.
#[allow(clippy::too_many_arguments)]
pub(super) fn lin_backward(
    cx: &Ctx,
    lin: &Lin,
    l: usize,
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    h: Option<&[f32]>,
    xd: &mut [f32],
    dh: &mut [f32],
    p: &mut ParamStore,
) {
    lins_backward(cx, l, &[(lin, dy, h)], dx, x, xd, dh, p);
}

/// One projection of a [`lins_backward`] group: the projection, its output's gradient dy,
/// and its adapter's saved h.
pub(super) type Part<'a> = (&'a Lin, &'a [f32], Option<&'a [f32]>);

/// Backward of projections that read the same input `x` (q, k and v; gate and up): dx (+=)
/// from each one's dy, and the gradients of whatever trains. With frozen bases in bf16 and
/// no dropout, every input-gradient product of the group (bases and adapters' A) is one
/// sum over one pass of dx; otherwise the projections go one by one. `dh` holds an
/// adapter's hidden gradient per projection.
#[allow(clippy::too_many_arguments)]
pub(super) fn lins_backward(
    cx: &Ctx,
    l: usize,
    group: &[Part],
    dx: &mut [f32],
    x: &[f32],
    xd: &mut [f32],
    dh: &mut [f32],
    p: &mut ParamStore,
) {
    let fused: Option<Vec<&Weight>> = if cx.dropout > 0.0 {
        None
    } else {
        group.iter().map(|(lin, ..)| fused_base(cx, lin)).collect()
    };
    let Some(weights) = fused else {
        for &(lin, dy, h) in group {
            lin_backward_alone(cx, lin, l, dx, dy, x, h, xd, dh, p);
        }
        return;
    };
    let n = x.len() / group[0].0.cols;
    // The adapters' gradients first, each into its own slice of dh.
    let mut lows = Vec::new();
    let mut at = 0;
    for &(lin, dy, h) in group {
        if let (Some(ad), Some(h)) = (lin.adapter, h) {
            let r = h.len() / n;
            let dh = &mut dh[at..at + n * r];
            adapter_grads(cx, lin, ad, dy, x, h, dh, p);
            lows.push((ad.a, at, r));
            at += n * r;
        }
    }
    timed(&cx.times.matmul, || {
        let parts: Vec<(&[f32], &Weight)> = group.iter().map(|g| g.1).zip(weights).collect();
        let lows: Vec<LowRank> = lows
            .iter()
            .map(|&(a, at, r)| LowRank {
                h: &dh[at..at + n * r],
                m: p.value(a),
                r,
            })
            .collect();
        linears_backward_dx_bf16(dx, &parts, &lows);
    });
}

/// An adapter's gradients through `out += scale · (xa · Aᵀ) · Bᵀ`, xa being x or its
/// dropout: dB += dyᵀ · h, dh = scale · dy · B (overwrites), dA += dhᵀ · xa.
#[allow(clippy::too_many_arguments)]
pub(super) fn adapter_grads(
    cx: &Ctx,
    lin: &Lin,
    ad: Adapter,
    dy: &[f32],
    xa: &[f32],
    h: &[f32],
    dh: &mut [f32],
    p: &mut ParamStore,
) {
    let n = xa.len() / lin.cols;
    let r = h.len() / n;
    timed(&cx.times.matmul, || {
        let (b, gb) = p.value_and_grad(ad.b);
        let dy_rows = S::rows(dy, lin.rows);
        wide_t_times_narrow(gb, dy_rows, S::rows(h, r), n, lin.rows, r);
        wide_times_narrow(dh, dy_rows, S::rows(b, r), n, lin.rows, r, false);
        dh.iter_mut().for_each(|v| *v *= cx.lora_scale);
        let (_, ga) = p.value_and_grad(ad.a);
        narrow_t_times_wide(ga, S::rows(dh, r), S::rows(xa, lin.cols), n, r, lin.cols);
    });
}

/// [`lin_backward`] for one projection on its own: the base's dx, then the adapter's.
#[allow(clippy::too_many_arguments)]
pub(super) fn lin_backward_alone(
    cx: &Ctx,
    lin: &Lin,
    l: usize,
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    h: Option<&[f32]>,
    xd: &mut [f32],
    dh: &mut [f32],
    p: &mut ParamStore,
) {
    timed(&cx.times.matmul, || {
        mat_backward(
            cx.precision,
            Some(&mut *dx),
            dy,
            x,
            &lin.base,
            p,
            lin.rows,
            lin.cols,
        )
    });
    let (Some(ad), Some(h)) = (lin.adapter, h) else {
        return;
    };
    let n = x.len() / lin.cols;
    let r = h.len() / n;
    let dh = &mut dh[..n * r];
    if cx.dropout > 0.0 {
        let xd = &mut xd[..x.len()];
        let key = cx.dropout_key(l, ad.slot);
        timed(&cx.times.other, || dropout(xd, x, cx.dropout, key, false));
        adapter_grads(cx, lin, ad, dy, xd, h, dh, p);
        timed(&cx.times.matmul, || {
            // Reuse the dropout scratch for d(dropout(x)), then push it through the mask.
            xd.fill(0.0);
            let a = p.value(ad.a);
            matmul_backward_in(cx.precision, Some(&mut *xd), None, dh, x, a, n, lin.cols, r);
        });
        timed(&cx.times.other, || dropout(dx, xd, cx.dropout, key, true));
    } else {
        adapter_grads(cx, lin, ad, dy, x, h, dh, p);
        timed(&cx.times.matmul, || {
            let a = p.value(ad.a);
            matmul_backward_in(cx.precision, Some(dx), None, dh, x, a, n, lin.cols, r);
        });
    }
}

pub(super) fn norm_forward(cx: &Ctx, out: &mut [f32], x: &[f32], w: &Vector, p: &ParamStore) {
    timed(&cx.times.norms, || rmsnorm(out, x, w.get(p), cx.c.norm_eps));
}

pub(super) fn norm_backward(
    cx: &Ctx,
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    w: &Vector,
    p: &mut ParamStore,
) {
    timed(&cx.times.norms, || match w {
        Vector::Param(id) => {
            let (w, gw) = p.value_and_grad(*id);
            rmsnorm_backward(dx, Some(gw), dy, x, w, cx.c.norm_eps);
        }
        Vector::Frozen(w) => rmsnorm_backward(dx, None, dy, x, w, cx.c.norm_eps),
    });
}

pub(super) fn bias_forward(out: &mut [f32], b: &Option<Vector>, p: &ParamStore) {
    if let Some(b) = b {
        add_bias(out, b.get(p));
    }
}

pub(super) fn bias_grad(dy: &[f32], b: &Option<Vector>, p: &mut ParamStore) {
    if let Some(Vector::Param(id)) = b {
        let (_, g) = p.value_and_grad(*id);
        bias_backward(g, dy);
    }
}
