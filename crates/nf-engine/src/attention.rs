//! Causal grouped-query attention over a key/value cache.
//!
//! Query head `h` reads key/value head `h / (n_heads / n_kv_heads)`: GQA, with MHA as the
//! case `n_kv_heads == n_heads`. Token `t` of the batch sits at position `pos0 + t` and sees
//! cache rows `0..=pos0 + t`.

use rayon::prelude::*;

use crate::activation::softmax;

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
            let kvh = h / group;
            let qh = &q[t * q_row + h * hd..][..hd];
            let len = pos0 + t + 1;
            scores.clear();
            scores.extend((0..len).map(|p| {
                let kh = &k_cache[p * kv_row + kvh * hd..][..hd];
                qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() * scale
            }));
            softmax(scores);
            o.fill(0.0);
            for (p, &w) in scores.iter().enumerate() {
                let vh = &v_cache[p * kv_row + kvh * hd..][..hd];
                for (oi, vi) in o.iter_mut().zip(vh) {
                    *oi += w * vi;
                }
            }
        },
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close};

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
}
