//! f64 references for the training kernels: every score materialized, the textbook formulas.

use super::AttnShape;

/// Training attention entirely in f64, materializing every score: the oracle behind both
/// naive references and the finite-difference tests. Returns `(out, lse)` shaped like
/// [`attention_forward_train`]'s outputs.
pub(super) fn attention_train_f64(
    q: &[f64],
    k: &[f64],
    v: &[f64],
    s: AttnShape,
) -> (Vec<f64>, Vec<f64>) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let t_len = q.len() / (n_heads * hd);
    let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; n_heads * t_len]);
    for h in 0..n_heads {
        let kvh = h * n_kv_heads / n_heads;
        let p = probabilities_f64(q, k, h, kvh, t_len, s);
        for t in 0..t_len {
            lse[h * t_len + t] = p[t].1;
            for i in 0..hd {
                out[(t * n_heads + h) * hd + i] = (0..=t)
                    .map(|j| p[t].0[j] * v[(j * n_kv_heads + kvh) * hd + i])
                    .sum();
            }
        }
    }
    (out, lse)
}

/// For query head `h` reading kv head `kvh`: each query row's causal probabilities
/// `[t + 1]` and the log-sum-exp of its scaled scores.
fn probabilities_f64(
    q: &[f64],
    k: &[f64],
    h: usize,
    kvh: usize,
    t_len: usize,
    s: AttnShape,
) -> Vec<(Vec<f64>, f64)> {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    (0..t_len)
        .map(|t| {
            let scores: Vec<f64> = (0..=t)
                .map(|j| {
                    (0..hd)
                        .map(|i| q[(t * n_heads + h) * hd + i] * k[(j * n_kv_heads + kvh) * hd + i])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + scores.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            (scores.iter().map(|x| (x - lse).exp()).collect(), lse)
        })
        .collect()
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Reference for [`attention_forward_train`], in f64 with the full score matrix.
pub fn attention_forward_train_naive(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
) {
    let (o, l) = attention_train_f64(&widen(q), &widen(k), &widen(v), s);
    for (dst, src) in out.iter_mut().zip(&o) {
        *dst = *src as f32;
    }
    for (dst, src) in lse.iter_mut().zip(&l) {
        *dst = *src as f32;
    }
}

/// Reference for [`attention_backward`]: the textbook matrix formulas per head in f64,
/// `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP - rowsum(P ⊙ dP))`, `dQ = scale·dS·K`,
/// `dK = scale·dSᵀ·Q`, recomputing P from q and k (it needs no `out` or `lse`). Accumulates.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_naive(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let t_len = q.len() / (n_heads * hd);
    let (q, k, v, dout) = (widen(q), widen(k), widen(v), widen(dout));
    let (mut gq, mut gk, mut gv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    let scale = 1.0 / (hd as f64).sqrt();
    let qi = |t: usize, h: usize, i: usize| (t * n_heads + h) * hd + i;
    let ki = |j: usize, g: usize, i: usize| (j * n_kv_heads + g) * hd + i;
    for h in 0..n_heads {
        let g = h * n_kv_heads / n_heads;
        let p = probabilities_f64(&q, &k, h, g, t_len, s);
        for t in 0..t_len {
            let dp: Vec<f64> = (0..=t)
                .map(|j| (0..hd).map(|i| dout[qi(t, h, i)] * v[ki(j, g, i)]).sum())
                .collect();
            let row: f64 = (0..=t).map(|j| p[t].0[j] * dp[j]).sum();
            for j in 0..=t {
                let ds = p[t].0[j] * (dp[j] - row);
                for i in 0..hd {
                    gv[ki(j, g, i)] += p[t].0[j] * dout[qi(t, h, i)];
                    gq[qi(t, h, i)] += scale * ds * k[ki(j, g, i)];
                    gk[ki(j, g, i)] += scale * ds * q[qi(t, h, i)];
                }
            }
        }
    }
    for (d, g) in [(dq, gq), (dk, gk), (dv, gv)] {
        for (x, y) in d.iter_mut().zip(&g) {
            *x = (*x as f64 + y) as f32;
        }
    }
}
