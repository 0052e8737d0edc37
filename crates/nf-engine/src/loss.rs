//! Softmax cross-entropy over a chunk of logits: the training loss of a language model.
//!
//! The logits of a whole sequence (`[tokens, vocab]`, vocab ~50k) are the largest activation
//! of a training step, so the backward works in place: the caller computes a chunk of
//! logits, this turns them into their gradient, and the caller feeds that straight into the
//! lm-head backward before computing the next chunk.

use rayon::prelude::*;

use crate::cpu::multiversion;

/// A target that contributes neither loss nor gradient (padding, prompt tokens under a
/// completion-only loss).
pub const IGNORE: u32 = u32::MAX;

/// logits: [n, vocab] in; OVERWRITTEN with dlogits = (softmax(logits) - onehot(target)) * scale
/// for rows whose target != IGNORE, zeros for ignored rows. Returns the sum over non-ignored
/// rows of -log softmax(logits)[target], in f64.
///
/// `scale` is typically `1 / (number of non-ignored targets in the batch)`, making the
/// gradient that of the mean loss while the returned sum stays easy to combine across chunks.
pub fn softmax_cross_entropy_backward(
    logits: &mut [f32],
    targets: &[u32],
    vocab: usize,
    scale: f32,
) -> f64 {
    check_shapes(logits.len(), targets, vocab);
    // Rows are independent; each row's loss is collected in row order and summed on one
    // thread, so the total is the same however rayon schedules the rows.
    let isa = crate::cpu::isa();
    let per_row: Vec<f64> = logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter())
        .map(|(row, &target)| {
            if target == IGNORE {
                row.fill(0.0);
                return 0.0;
            }
            softmax_row(isa, row, target as usize, scale)
        })
        .collect();
    per_row.iter().sum()
}

/// Lanes of the row passes: whole registers at every tier, in a fixed order.
const LANES: usize = 16;

multiversion!(softmax_row => softmax_row_generic(row: &mut [f32], target: usize, scale: f32) -> f64);

/// One row of [`softmax_cross_entropy_backward`]: the row becomes its gradient, the row's
/// loss is returned. Three passes (max; exponentials and their sum; scaling), each over
/// `LANES` lanes so it compiles to vector code.
#[inline(always)]
fn softmax_row_generic(row: &mut [f32], target: usize, scale: f32) -> f64 {
    let target_logit = row[target] as f64;
    let max = row_max(row);
    // Exponentials in f32 (they are the softmax numerators we keep), their sum in f64 lanes
    // added as a fixed tree: a 50k-term f32 sum would lose several digits.
    let mut sums = [0.0f64; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            c[l] = crate::fastmath::exp(c[l] - max);
            sums[l] += c[l] as f64;
        }
    }
    for (l, v) in chunks.into_remainder().iter_mut().enumerate() {
        *v = crate::fastmath::exp(*v - max);
        sums[l] += *v as f64;
    }
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            sums[l] += sums[l + w];
        }
        w /= 2;
    }
    let sum = sums[0];
    let inv = (scale as f64 / sum) as f32;
    for v in row.iter_mut() {
        *v *= inv;
    }
    row[target] -= scale;
    max as f64 + sum.ln() - target_logit
}

/// Forward only (eval): the same sum, logits untouched.
pub fn cross_entropy_loss(logits: &[f32], targets: &[u32], vocab: usize) -> f64 {
    check_shapes(logits.len(), targets, vocab);
    let per_row: Vec<f64> = logits
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &target)| {
            if target == IGNORE {
                return 0.0;
            }
            let max = row_max(row);
            let sum: f64 = row.iter().map(|&v| (v - max).exp() as f64).sum();
            max as f64 + sum.ln() - row[target as usize] as f64
        })
        .collect();
    per_row.iter().sum()
}

/// Reference for [`softmax_cross_entropy_backward`]: everything in f64, row by row.
pub fn softmax_cross_entropy_backward_naive(
    logits: &mut [f32],
    targets: &[u32],
    vocab: usize,
    scale: f32,
) -> f64 {
    let mut total = 0.0;
    for (row, &target) in logits.chunks_exact_mut(vocab).zip(targets) {
        if target == IGNORE {
            row.fill(0.0);
            continue;
        }
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let z: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
        let lse = max + z.ln();
        total += lse - row[target as usize] as f64;
        for (j, v) in row.iter_mut().enumerate() {
            let p = (*v as f64 - lse).exp();
            let onehot = if j == target as usize { 1.0 } else { 0.0 };
            *v = ((p - onehot) * scale as f64) as f32;
        }
    }
    total
}

/// The largest logit of a row: subtracting it keeps every exponential in (0, 1]. Kept in
/// `LANES` lanes so it vectorizes where it inlines (the maximum does not depend on order).
#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            lanes[l] = lanes[l].max(c[l]);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    lanes.iter().copied().fold(tail, f32::max)
}

fn check_shapes(n_logits: usize, targets: &[u32], vocab: usize) {
    assert!(vocab > 0, "cross entropy: vocab is zero");
    assert_eq!(
        n_logits,
        targets.len() * vocab,
        "cross entropy: logits are not [targets, vocab]"
    );
    // An out-of-range target is a bug in the caller's data pipeline, not a value to clamp.
    assert!(
        targets.iter().all(|&t| t == IGNORE || (t as usize) < vocab),
        "cross entropy: a target is outside the vocabulary"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, assert_grad_close, finite_diff};

    /// Logits with a wide spread, like a trained model's (and a large offset, to exercise the
    /// max subtraction).
    fn logits(rng: &mut Rng, n: usize, offset: f32) -> Vec<f32> {
        rng.vec(n).iter().map(|v| v * 10.0 + offset).collect()
    }

    #[test]
    fn matches_naive_with_ignored_rows() {
        let mut rng = Rng::new(61);
        for &(vocab, offset) in &[(7, 0.0), (1000, 0.0), (49152, 300.0)] {
            let targets = [3u32, IGNORE, 0, 6, IGNORE];
            let x = logits(&mut rng, targets.len() * vocab, offset);
            let mut fast = x.clone();
            let mut slow = x.clone();
            let scale = 1.0 / 3.0;
            let l_fast = softmax_cross_entropy_backward(&mut fast, &targets, vocab, scale);
            let l_slow = softmax_cross_entropy_backward_naive(&mut slow, &targets, vocab, scale);
            assert!(
                (l_fast - l_slow).abs() < 1e-5 * l_slow.abs().max(1.0),
                "{l_fast} vs {l_slow}"
            );
            assert_close(&fast, &slow, 1e-6);
            // Ignored rows are zeros; every other row of dlogits sums to zero.
            assert!(fast[vocab..2 * vocab].iter().all(|&g| g == 0.0));
            let row_sum: f64 = fast[..vocab].iter().map(|&g| g as f64).sum();
            assert!(row_sum.abs() < 1e-6);
            let l_eval = cross_entropy_loss(&x, &targets, vocab);
            assert!((l_eval - l_slow).abs() < 1e-5 * l_slow.abs().max(1.0));
        }
    }

    #[test]
    fn uniform_logits_cost_log_vocab() {
        let mut x = vec![5.0f32; 2 * 100];
        let l = softmax_cross_entropy_backward(&mut x, &[7, 42], 100, 1.0);
        assert!((l - 2.0 * 100f64.ln()).abs() < 1e-9);
        assert!((x[7] - (0.01 - 1.0)).abs() < 1e-7 && (x[8] - 0.01).abs() < 1e-7);
    }

    #[test]
    fn matches_finite_differences_with_ignored_rows() {
        let vocab = 11;
        let targets = [2u32, IGNORE, 10, 0];
        let mut rng = Rng::new(62);
        let x = logits(&mut rng, targets.len() * vocab, 0.0);
        let scale = 0.25f32;
        // f64 forward: the scaled sum of the non-ignored rows' losses.
        let loss = |x: &[f64]| -> f64 {
            let mut l = 0.0;
            for (row, &t) in x.chunks_exact(vocab).zip(&targets) {
                if t != IGNORE {
                    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                    let z: f64 = row.iter().map(|&v| (v - max).exp()).sum();
                    l += max + z.ln() - row[t as usize];
                }
            }
            l * scale as f64
        };
        let mut g = x.clone();
        softmax_cross_entropy_backward(&mut g, &targets, vocab, scale);
        assert_grad_close(&g, &finite_diff(loss, &x), 1e-4);
    }
}
