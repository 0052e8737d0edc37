//! Causal grouped-query attention over a key/value cache.
//!
//! Query head `h` reads key/value head `h / (n_heads / n_kv_heads)`: GQA, with MHA as the
//! case `n_kv_heads == n_heads`. Token `t` of the batch sits at position `pos0 + t` and sees
//! cache rows `0..=pos0 + t`.

use rayon::prelude::*;

mod reference;
mod rows;
#[cfg(test)]
mod tests;
mod train;

pub use reference::{attention_backward_naive, attention_forward_train_naive};
pub use train::{attention_backward, attention_backward_scratch_len, attention_forward_train};

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (query heads share them in groups).
    pub n_kv_heads: usize,
    /// Channels per head.
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

/// The scaled score of one query against one key, for inference.
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
