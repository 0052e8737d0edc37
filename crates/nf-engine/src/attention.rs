//! Causal grouped-query attention over a key/value cache.
//!
//! Query head `h` reads key/value head `h / (n_heads / n_kv_heads)`: GQA, with MHA as the
//! case `n_kv_heads == n_heads`. Token `t` of the batch sits at position `pos0 + t` and sees
//! cache rows `0..=pos0 + t`.

use rayon::prelude::*;

use crate::simd::dot;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// out: [n_tok, n_heads * hd], q: [n_tok, n_heads * hd],
/// k_cache, v_cache: [>= pos0 + n_tok, n_kv_heads * hd] (rows for this batch already written).
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    pos0: usize,
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let q_row = n_heads * hd;
    let kv_row = n_kv_heads * hd;
    let n_tok = q.len() / q_row;
    assert_eq!(out.len(), q.len());
    assert!(k_cache.len() >= (pos0 + n_tok) * kv_row && v_cache.len() >= (pos0 + n_tok) * kv_row);
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    // One task per (token, head); each writes its own `hd`-wide slice of `out`.
    out.par_chunks_mut(hd).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (idx, o)| {
            let (t, h) = (idx / n_heads, idx % n_heads);
            let qh = &q[t * q_row + h * hd..][..hd];
            let kv = KvHead {
                k: k_cache,
                v: v_cache,
                row: kv_row,
                offset: h / group * hd,
            };
            attend_row(o, scores, qh, kv, pos0 + t + 1, scale);
        },
    );
}

/// One key/value head inside row-major `[positions, n_kv_heads * hd]` k and v buffers.
#[derive(Clone, Copy)]
struct KvHead<'a> {
    k: &'a [f32],
    v: &'a [f32],
    /// Floats per position (`n_kv_heads * hd`).
    row: usize,
    /// Where this head starts within a row (`kv_head * hd`).
    offset: usize,
}

impl<'a> KvHead<'a> {
    fn k(&self, p: usize, hd: usize) -> &'a [f32] {
        &self.k[p * self.row + self.offset..][..hd]
    }

    fn v(&self, p: usize, hd: usize) -> &'a [f32] {
        &self.v[p * self.row + self.offset..][..hd]
    }
}

/// The scaled score of one query against one key. Inference, the training forward and the
/// training backward all call this, so the backward recomputes exactly the scores the
/// forward saw and the training forward reproduces inference bit for bit.
#[inline]
fn score(qh: &[f32], kh: &[f32], scale: f32) -> f32 {
    qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() * scale
}

/// o: [hd] (overwrites), scores: scratch, qh: [hd]. One query row of attention over
/// positions `0..len` of one kv head. Returns the log-sum-exp of the scaled scores.
fn attend_row(
    o: &mut [f32],
    scores: &mut Vec<f32>,
    qh: &[f32],
    kv: KvHead,
    len: usize,
    scale: f32,
) -> f32 {
    let hd = o.len();
    scores.clear();
    scores.extend((0..len).map(|p| score(qh, kv.k(p, hd), scale)));
    // The softmax of `activation::softmax`, operation for operation, keeping the max and
    // the sum it computes on the way: together they are the log-sum-exp training saves.
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in scores.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in scores.iter_mut() {
        *v *= inv;
    }
    o.fill(0.0);
    for (p, &w) in scores.iter().enumerate() {
        for (oi, vi) in o.iter_mut().zip(kv.v(p, hd)) {
            *oi += w * vi;
        }
    }
    max + sum.ln()
}

/// Reference for [`attention`]: materializes the full score matrix per head, in f64.
pub fn attention_naive(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    pos0: usize,
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let n_tok = q.len() / (n_heads * hd);
    for t in 0..n_tok {
        for h in 0..n_heads {
            let kvh = h * n_kv_heads / n_heads;
            let len = pos0 + t + 1;
            let mut sc: Vec<f64> = (0..len)
                .map(|p| {
                    (0..hd)
                        .map(|i| {
                            q[(t * n_heads + h) * hd + i] as f64
                                * k_cache[(p * n_kv_heads + kvh) * hd + i] as f64
                        })
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc
                .iter_mut()
                .map(|v| {
                    *v = (*v - m).exp();
                    *v
                })
                .sum();
            for i in 0..hd {
                let acc: f64 = (0..len)
                    .map(|p| sc[p] / z * v_cache[(p * n_kv_heads + kvh) * hd + i] as f64)
                    .sum();
                out[(t * n_heads + h) * hd + i] = acc as f32;
            }
        }
    }
}

/// out: [T, n_heads*hd] (overwrites), lse: [n_heads, T] (overwrites; log-sum-exp of the
/// scaled scores of each query row, saved for backward), q: [T, n_heads*hd],
/// k, v: [T, n_kv_heads*hd].
///
/// Training attention over one causal sequence of `T` tokens at positions `0..T`. Instead
/// of the `T × T` probabilities, only the per-row log-sum-exp is kept: with it the backward
/// recomputes any probability as `exp(score - lse)` (FlashAttention's trick). `out` is
/// bit for bit what [`attention`] gives with `pos0 = 0`.
pub fn attention_forward_train(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
) {
    let (t_len, group) = check_train_shapes(q, k, v, s);
    let AttnShape {
        n_heads,
        head_dim: hd,
        ..
    } = s;
    assert_eq!(
        out.len(),
        q.len(),
        "attention_forward_train: out is not like q"
    );
    assert_eq!(
        lse.len(),
        n_heads * t_len,
        "attention_forward_train: lse is not [n_heads, T]"
    );
    let scale = 1.0 / (hd as f32).sqrt();
    // Tasks run per (token, head) as in inference. lse is [n_heads, T], transposed relative
    // to that order, so each task returns its value and they are placed afterwards.
    let lse_by_token: Vec<f32> = out
        .par_chunks_mut(hd)
        .enumerate()
        .map_init(Vec::new, |scores: &mut Vec<f32>, (idx, o)| {
            let (t, h) = (idx / n_heads, idx % n_heads);
            let qh = &q[(t * n_heads + h) * hd..][..hd];
            let kv = KvHead {
                k,
                v,
                row: s.n_kv_heads * hd,
                offset: h / group * hd,
            };
            attend_row(o, scores, qh, kv, t + 1, scale)
        })
        .collect();
    for (idx, &l) in lse_by_token.iter().enumerate() {
        lse[(idx % n_heads) * t_len + idx / n_heads] = l;
    }
}

/// dq: [T, n_heads*hd] (+=), dk, dv: [T, n_kv_heads*hd] (+=), dout: [T, n_heads*hd], out and
/// lse from the forward, q, k, v as in forward. scratch: at least
/// attention_backward_scratch_len(T, s) floats (no allocation inside).
///
/// FlashAttention-2's backward, one query row at a time: with `p_j = exp(s_j - lse)`,
/// `D = dout · out` (which equals `Σ_j p_j dp_j`), `dp_j = dout · v_j` and
/// `ds_j = p_j (dp_j - D)`, it adds `scale · ds_j · k_j` to dq, `scale · ds_j · q` to dk_j
/// and `p_j · dout` to dv_j.
///
/// One rayon task per kv head: it owns that head's dk and dv and the dq of the query heads
/// that read it, so no two tasks write the same gradient. Each task accumulates into its own
/// contiguous part of `scratch` in a fixed order, and the parts are then added into the
/// strided outputs, one addition per element, so the result is the same on every run.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
) {
    let (t_len, group) = check_train_shapes(q, k, v, s);
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let (q_row, kv_row) = (n_heads * hd, n_kv_heads * hd);
    assert!(
        dq.len() == q.len() && dout.len() == q.len() && out.len() == q.len(),
        "attention_backward: dq, dout or out is not like q"
    );
    assert!(
        dk.len() == k.len() && dv.len() == v.len(),
        "attention_backward: dk or dv is not like k"
    );
    assert_eq!(
        lse.len(),
        n_heads * t_len,
        "attention_backward: lse is not [n_heads, T]"
    );
    let per_head = kv_head_scratch_len(t_len, s);
    assert!(
        scratch.len() >= n_kv_heads * per_head,
        "attention_backward: scratch is shorter than attention_backward_scratch_len"
    );
    let scratch = &mut scratch[..n_kv_heads * per_head];
    let scale = 1.0 / (hd as f32).sqrt();

    scratch
        .par_chunks_mut(per_head)
        .enumerate()
        .for_each(|(g, buf)| {
            // This task's gradients, each row-major over tokens: dq of its `group` query
            // heads [group, T, hd], then its dk [T, hd] and dv [T, hd].
            buf.fill(0.0);
            let (dq_g, rest) = buf.split_at_mut(group * t_len * hd);
            let (dk_g, dv_g) = rest.split_at_mut(t_len * hd);
            let kv = KvHead {
                k,
                v,
                row: kv_row,
                offset: g * hd,
            };
            for hg in 0..group {
                let h = g * group + hg;
                for t in 0..t_len {
                    let at = t * q_row + h * hd;
                    let (qt, dout_t) = (&q[at..][..hd], &dout[at..][..hd]);
                    let d = dot(dout_t, &out[at..][..hd]);
                    let lse_t = lse[h * t_len + t];
                    let dq_t = &mut dq_g[(hg * t_len + t) * hd..][..hd];
                    for j in 0..=t {
                        let (kj, vj) = (kv.k(j, hd), kv.v(j, hd));
                        let p = (score(qt, kj, scale) - lse_t).exp();
                        let ds = p * (dot(dout_t, vj) - d);
                        axpy(dq_t, scale * ds, kj);
                        axpy(&mut dk_g[j * hd..][..hd], scale * ds, qt);
                        axpy(&mut dv_g[j * hd..][..hd], p, dout_t);
                    }
                }
            }
        });

    // Scatter the per-head parts into the strided outputs. Every output element receives
    // exactly one addition here, so the loop order cannot change the result.
    for (g, buf) in scratch.chunks_exact(per_head).enumerate() {
        let (dq_g, rest) = buf.split_at(group * t_len * hd);
        let (dk_g, dv_g) = rest.split_at(t_len * hd);
        for t in 0..t_len {
            for hg in 0..group {
                let h = g * group + hg;
                add(
                    &mut dq[t * q_row + h * hd..][..hd],
                    &dq_g[(hg * t_len + t) * hd..][..hd],
                );
            }
            add(&mut dk[t * kv_row + g * hd..][..hd], &dk_g[t * hd..][..hd]);
            add(&mut dv[t * kv_row + g * hd..][..hd], &dv_g[t * hd..][..hd]);
        }
    }
}

/// Floats of scratch [`attention_backward`] needs for a sequence of `t` tokens.
pub fn attention_backward_scratch_len(t: usize, s: AttnShape) -> usize {
    s.n_kv_heads * kv_head_scratch_len(t, s)
}

/// One kv head's part of the scratch: the dq of its query-head group, its dk and its dv.
fn kv_head_scratch_len(t: usize, s: AttnShape) -> usize {
    (s.n_heads / s.n_kv_heads + 2) * t * s.head_dim
}

/// y += a · x.
#[inline]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// y += x.
#[inline]
fn add(y: &mut [f32], x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// Checks the training shapes; returns `(T, n_heads / n_kv_heads)`.
fn check_train_shapes(q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> (usize, usize) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    assert!(
        hd > 0 && n_kv_heads > 0 && n_heads.is_multiple_of(n_kv_heads),
        "attention: n_heads must be a multiple of n_kv_heads, head_dim non-zero"
    );
    let t_len = q.len() / (n_heads * hd);
    assert_eq!(
        q.len(),
        t_len * n_heads * hd,
        "attention: q is not [T, n_heads * hd]"
    );
    assert!(
        k.len() == t_len * n_kv_heads * hd && v.len() == k.len(),
        "attention: k or v is not [T, n_kv_heads * hd]"
    );
    (t_len, n_heads / n_kv_heads)
}

/// Training attention entirely in f64, materializing every score: the oracle behind both
/// naive references and the finite-difference tests. Returns `(out, lse)` shaped like
/// [`attention_forward_train`]'s outputs.
fn attention_train_f64(q: &[f64], k: &[f64], v: &[f64], s: AttnShape) -> (Vec<f64>, Vec<f64>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, assert_grad_close, finite_diff, to_f64};

    #[test]
    fn attention_matches_naive_for_mha_and_gqa() {
        let mut rng = Rng::new(6);
        for &(n_heads, n_kv_heads, hd, pos0, n_tok) in &[
            (4, 4, 8, 0, 5),
            (8, 4, 8, 3, 4),
            (9, 3, 64, 0, 1),
            (9, 3, 64, 10, 1),
        ] {
            let s = AttnShape {
                n_heads,
                n_kv_heads,
                head_dim: hd,
            };
            let q = rng.vec(n_tok * n_heads * hd);
            let k = rng.vec((pos0 + n_tok) * n_kv_heads * hd);
            let v = rng.vec((pos0 + n_tok) * n_kv_heads * hd);
            let mut fast = vec![0.0; q.len()];
            let mut slow = vec![0.0; q.len()];
            attention(&mut fast, &q, &k, &v, pos0, s);
            attention_naive(&mut slow, &q, &k, &v, pos0, s);
            assert_close(&fast, &slow, 1e-5);
        }
    }

    #[test]
    fn batched_prompt_equals_token_by_token() {
        // Causality: processing 6 tokens at once must equal processing them one at a time.
        let mut rng = Rng::new(7);
        let s = AttnShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        let q = rng.vec(6 * 32);
        let k = rng.vec(6 * 16);
        let v = rng.vec(6 * 16);
        let mut batched = vec![0.0; q.len()];
        attention(&mut batched, &q, &k, &v, 0, s);
        for t in 0..6 {
            let mut one = vec![0.0; 32];
            attention(&mut one, &q[t * 32..(t + 1) * 32], &k, &v, t, s);
            assert_close(&one, &batched[t * 32..(t + 1) * 32], 1e-6);
        }
    }

    fn shape(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttnShape {
        AttnShape {
            n_heads,
            n_kv_heads,
            head_dim,
        }
    }

    #[test]
    fn forward_train_equals_inference_and_naive() {
        let mut rng = Rng::new(81);
        for &(n_heads, n_kv_heads, hd, t_len) in
            &[(4, 4, 8, 5), (4, 2, 8, 7), (9, 3, 64, 33), (8, 1, 16, 1)]
        {
            let s = shape(n_heads, n_kv_heads, hd);
            let q = rng.vec(t_len * n_heads * hd);
            let k = rng.vec(t_len * n_kv_heads * hd);
            let v = rng.vec(t_len * n_kv_heads * hd);
            let mut out = vec![f32::NAN; q.len()];
            let mut lse = vec![f32::NAN; n_heads * t_len];
            attention_forward_train(&mut out, &mut lse, &q, &k, &v, s);
            let mut inference = vec![0.0; q.len()];
            attention(&mut inference, &q, &k, &v, 0, s);
            assert_eq!(out, inference, "training forward differs from inference");
            let (mut out_ref, mut lse_ref) = (vec![0.0; q.len()], vec![0.0; lse.len()]);
            attention_forward_train_naive(&mut out_ref, &mut lse_ref, &q, &k, &v, s);
            assert_close(&out, &out_ref, 1e-5);
            assert_close(&lse, &lse_ref, 1e-5);
        }
    }

    /// Runs forward and backward on random data; returns (dq, dk, dv) accumulated onto
    /// the given starting gradients.
    #[allow(clippy::type_complexity)]
    fn run_backward(
        s: AttnShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
        start: (&[f32], &[f32], &[f32]),
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let t_len = q.len() / (s.n_heads * s.head_dim);
        let mut out = vec![0.0; q.len()];
        let mut lse = vec![0.0; s.n_heads * t_len];
        attention_forward_train(&mut out, &mut lse, q, k, v, s);
        let (mut dq, mut dk, mut dv) = (start.0.to_vec(), start.1.to_vec(), start.2.to_vec());
        // Stale scratch must not leak into the result.
        let mut scratch = vec![f32::NAN; attention_backward_scratch_len(t_len, s)];
        attention_backward(
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
            dout,
            &out,
            &lse,
            q,
            k,
            v,
            s,
        );
        (dq, dk, dv)
    }

    #[test]
    fn backward_matches_naive_and_accumulates() {
        let mut rng = Rng::new(82);
        for &(n_heads, n_kv_heads, hd, t_len) in &[
            (4, 4, 8, 5),
            (4, 2, 8, 7),
            (9, 3, 64, 33),
            (8, 1, 16, 20),
            (2, 2, 4, 1),
        ] {
            let s = shape(n_heads, n_kv_heads, hd);
            let q = rng.vec(t_len * n_heads * hd);
            let k = rng.vec(t_len * n_kv_heads * hd);
            let v = rng.vec(t_len * n_kv_heads * hd);
            let dout = rng.vec(q.len());
            let (dq0, dk0, dv0) = (rng.vec(q.len()), rng.vec(k.len()), rng.vec(v.len()));
            let (dq, dk, dv) = run_backward(s, &q, &k, &v, &dout, (&dq0, &dk0, &dv0));
            let (mut dq_ref, mut dk_ref, mut dv_ref) = (dq0, dk0, dv0);
            attention_backward_naive(&mut dq_ref, &mut dk_ref, &mut dv_ref, &dout, &q, &k, &v, s);
            assert_close(&dq, &dq_ref, 1e-5);
            assert_close(&dk, &dk_ref, 1e-5);
            assert_close(&dv, &dv_ref, 1e-5);
        }
    }

    #[test]
    fn backward_is_deterministic() {
        let mut rng = Rng::new(83);
        let s = shape(8, 4, 32);
        let t_len = 64;
        let q = rng.vec(t_len * 8 * 32);
        let k = rng.vec(t_len * 4 * 32);
        let v = rng.vec(t_len * 4 * 32);
        let dout = rng.vec(q.len());
        let zeros = (vec![0.0; q.len()], vec![0.0; k.len()]);
        let first = run_backward(s, &q, &k, &v, &dout, (&zeros.0, &zeros.1, &zeros.1));
        for _ in 0..5 {
            let again = run_backward(s, &q, &k, &v, &dout, (&zeros.0, &zeros.1, &zeros.1));
            assert!(first == again, "attention_backward changed between runs");
        }
    }

    #[test]
    fn backward_matches_finite_differences_for_gqa_and_mha() {
        let mut rng = Rng::new(84);
        for (n_heads, n_kv_heads) in [(4, 2), (4, 4)] {
            let (hd, t_len) = (4, 5);
            let s = shape(n_heads, n_kv_heads, hd);
            // Larger-than-unit inputs make the softmax far from uniform.
            let mut big = |n| -> Vec<f32> { rng.vec(n).iter().map(|x| 2.0 * x).collect() };
            let q = big(t_len * n_heads * hd);
            let k = big(t_len * n_kv_heads * hd);
            let v = big(t_len * n_kv_heads * hd);
            let r = big(q.len());
            // L = Σ out ⊙ r, so dout = r.
            let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
                let (out, _) = attention_train_f64(q, k, v, s);
                out.iter().zip(&r).map(|(o, &w)| o * w as f64).sum()
            };
            let zeros = (vec![0.0; q.len()], vec![0.0; k.len()]);
            let (dq, dk, dv) = run_backward(s, &q, &k, &v, &r, (&zeros.0, &zeros.1, &zeros.1));
            let (q64, k64, v64) = (to_f64(&q), to_f64(&k), to_f64(&v));
            assert_grad_close(&dq, &finite_diff(|x| loss(x, &k64, &v64), &q), 1e-4);
            assert_grad_close(&dk, &finite_diff(|x| loss(&q64, x, &v64), &k), 1e-4);
            assert_grad_close(&dv, &finite_diff(|x| loss(&q64, &k64, x), &v), 1e-4);
        }
    }
}
