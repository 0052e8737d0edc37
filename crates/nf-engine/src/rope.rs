//! Rotary position embeddings, in both conventions checkpoints use.
//!
//! - [`RopeStyle::Interleaved`]: dimension pairs `(2i, 2i+1)` rotate together. llama2.c and
//!   GGUF `llama` files use it (llama.cpp's converter permutes q/k rows to get there).
//! - [`RopeStyle::RotateHalf`]: pairs `(i, i + d/2)`. Hugging Face checkpoints use it, and
//!   GGUF files of Qwen2/Qwen3/Phi-3 (llama.cpp's "neox" mode).
//!
//! Pair `i` rotates by angle `pos · inv_freq[i]`, `inv_freq[i] = theta^(-2i/d)`, optionally
//! rescaled for long contexts ([`RopeScaling`]).

/// Which dimensions form a rotating pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs of adjacent channels (llama2.c, GGUF `llama`).
    Interleaved,
    /// Channel `i` paired with `i + d/2` (Hugging Face, GGUF qwen2/qwen3/phi3).
    RotateHalf,
}

/// Context-extension rescaling of the frequencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// No rescaling.
    None,
    /// Position interpolation: every frequency divided by `factor`.
    Linear {
        /// The context-extension factor.
        factor: f32,
    },
    /// Llama 3.1's piecewise rescaling by wavelength.
    Llama3 {
        /// The context-extension factor.
        factor: f32,
        /// Wavelengths above `original_max_position / low_freq_factor` are scaled fully.
        low_freq_factor: f32,
        /// Wavelengths below `original_max_position / high_freq_factor` are kept.
        high_freq_factor: f32,
        /// The context the model was trained with.
        original_max_position: f32,
    },
}

/// Precomputed inverse frequencies for one head size.
#[derive(Debug, Clone)]
pub struct Rope {
    /// Which channels are rotated together.
    pub style: RopeStyle,
    /// `[rot_dim / 2]`.
    pub inv_freq: Vec<f32>,
}

impl Rope {
    /// `rot_dim` is the number of rotated dimensions per head (the head size for every model
    /// we support; partial rotary would pass less).
    pub fn new(style: RopeStyle, rot_dim: usize, theta: f32, scaling: RopeScaling) -> Rope {
        // Computed in f32 exactly as llama2.c's run.c and HF's float32 `inv_freq` do, so
        // greedy outputs match those references bit for bit.
        let mut inv_freq: Vec<f32> = (0..rot_dim / 2)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / rot_dim as f32))
            .collect();
        match scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => inv_freq.iter_mut().for_each(|f| *f /= factor),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                let low_wavelen = original_max_position / low_freq_factor;
                let high_wavelen = original_max_position / high_freq_factor;
                for f in &mut inv_freq {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    if wavelen > low_wavelen {
                        *f /= factor;
                    } else if wavelen >= high_wavelen {
                        let smooth = (original_max_position / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        *f = (1.0 - smooth) * *f / factor + smooth * *f;
                    }
                }
            }
        }
        Rope { style, inv_freq }
    }

    /// Rotates every head of every token in place.
    /// x: [n_tok, n_heads * head_dim]; token `t` sits at position `pos0 + t`.
    pub fn apply(&self, x: &mut [f32], pos0: usize, n_heads: usize, head_dim: usize) {
        self.rotate(x, pos0, n_heads, head_dim, 1.0);
    }

    /// Backward of `apply`: rotates by the negative angle (the transpose of a rotation), in
    /// place. dx: [n_tok, n_heads*head_dim].
    ///
    /// A rotation is orthogonal, so its Jacobian's transpose is its inverse: the gradient
    /// flowing into the rotated vector is rotated back by the same angle.
    pub fn apply_backward(&self, dx: &mut [f32], pos0: usize, n_heads: usize, head_dim: usize) {
        self.rotate(dx, pos0, n_heads, head_dim, -1.0);
    }

    /// Rotates by `sign · angle`; `sign` is +1 for the forward and -1 for the backward.
    /// Training's whole sequences are split over threads by tokens (each token's rotation
    /// is the same computation either way); decode's single tokens stay on the caller.
    fn rotate(&self, x: &mut [f32], pos0: usize, n_heads: usize, head_dim: usize, sign: f32) {
        const TASK_TOKENS: usize = 32;
        let row = n_heads * head_dim;
        if row == 0 {
            return;
        }
        if !crate::cpu::split_pass(x.len()) {
            return self.rotate_rows(x, pos0, n_heads, head_dim, sign);
        }
        use rayon::prelude::*;
        x.par_chunks_mut(TASK_TOKENS * row)
            .enumerate()
            .for_each(|(i, rows)| {
                self.rotate_rows(rows, pos0 + i * TASK_TOKENS, n_heads, head_dim, sign)
            });
    }

    fn rotate_rows(&self, x: &mut [f32], pos0: usize, n_heads: usize, head_dim: usize, sign: f32) {
        let half = self.inv_freq.len();
        let mut cos_sin = vec![(0.0f32, 0.0f32); half];
        for (t, row) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
            let pos = (pos0 + t) as f32;
            for (cs, &f) in cos_sin.iter_mut().zip(&self.inv_freq) {
                // The angle is computed exactly as in the forward and only the sine's sign
                // flips (sin is odd), so the backward is the forward's exact transpose.
                let angle = pos * f;
                *cs = (angle.cos(), sign * angle.sin());
            }
            for head in row.chunks_exact_mut(head_dim) {
                for (i, &(c, s)) in cos_sin.iter().enumerate() {
                    let (a, b) = match self.style {
                        RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                        RopeStyle::RotateHalf => (i, i + half),
                    };
                    let (x0, x1) = (head[a], head[b]);
                    head[a] = x0 * c - x1 * s;
                    head[b] = x0 * s + x1 * c;
                }
            }
        }
    }
}

/// Reference for [`Rope::apply`]: each pair as a complex number times `e^{i·angle}`, in f64.
pub fn rope_naive(rope: &Rope, x: &mut [f32], pos0: usize, n_heads: usize, head_dim: usize) {
    let half = rope.inv_freq.len();
    for (t, row) in x.chunks_exact_mut(n_heads * head_dim).enumerate() {
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let angle = (pos0 + t) as f64 * rope.inv_freq[i] as f64;
                let (a, b) = match rope.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::RotateHalf => (i, i + half),
                };
                let (re, im) = (head[a] as f64, head[b] as f64);
                head[a] = (re * angle.cos() - im * angle.sin()) as f32;
                head[b] = (re * angle.sin() + im * angle.cos()) as f32;
            }
        }
    }
}

/// Reference for [`Rope::apply_backward`]: each pair times `e^{-i·angle}`, in f64.
pub fn rope_backward_naive(
    rope: &Rope,
    dx: &mut [f32],
    pos0: usize,
    n_heads: usize,
    head_dim: usize,
) {
    let half = rope.inv_freq.len();
    for (t, row) in dx.chunks_exact_mut(n_heads * head_dim).enumerate() {
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let angle = -((pos0 + t) as f64 * rope.inv_freq[i] as f64);
                let (a, b) = match rope.style {
                    RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                    RopeStyle::RotateHalf => (i, i + half),
                };
                let (re, im) = (head[a] as f64, head[b] as f64);
                head[a] = (re * angle.cos() - im * angle.sin()) as f32;
                head[b] = (re * angle.sin() + im * angle.cos()) as f32;
            }
        }
    }
}

/// Reorders one head's dimensions from rotate-half order to interleaved order: output
/// position `2i` takes input `i`, `2i+1` takes `i + d/2`. Applied to the rows of Wq/Wk this
/// is the permutation llama.cpp's converter (and llama2.c's export) applies to HF weights.
pub fn rotate_half_to_interleaved_index(i: usize, head_dim: usize) -> usize {
    let half = head_dim / 2;
    if i.is_multiple_of(2) {
        i / 2
    } else {
        i / 2 + half
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, assert_grad_close, finite_diff};

    #[test]
    fn rope_matches_naive_in_both_styles() {
        let mut rng = Rng::new(4);
        for style in [RopeStyle::Interleaved, RopeStyle::RotateHalf] {
            let rope = Rope::new(style, 16, 10000.0, RopeScaling::None);
            // 5 tokens stay on the caller; 301 (with a partial last task) go over threads.
            for n_tok in [5, 301] {
                let x = rng.vec(n_tok * 3 * 16);
                let mut fast = x.clone();
                let mut slow = x.clone();
                rope.apply(&mut fast, 7, 3, 16);
                rope_naive(&rope, &mut slow, 7, 3, 16);
                assert_close(&fast, &slow, 1e-5);
            }
        }
    }

    #[test]
    fn rotate_half_equals_interleaved_on_permuted_dims() {
        let d = 8;
        let mut rng = Rng::new(5);
        let x = rng.vec(d);
        let perm: Vec<f32> = (0..d)
            .map(|i| x[rotate_half_to_interleaved_index(i, d)])
            .collect();
        let mut a = x.clone();
        let mut b = perm.clone();
        Rope::new(RopeStyle::RotateHalf, d, 10000.0, RopeScaling::None).apply(&mut a, 3, 1, d);
        Rope::new(RopeStyle::Interleaved, d, 10000.0, RopeScaling::None).apply(&mut b, 3, 1, d);
        let a_perm: Vec<f32> = (0..d)
            .map(|i| a[rotate_half_to_interleaved_index(i, d)])
            .collect();
        assert_close(&a_perm, &b, 1e-6);
    }

    #[test]
    fn position_zero_is_identity() {
        let x = vec![1.0, 2.0, 3.0, 4.0];
        let mut y = x.clone();
        Rope::new(RopeStyle::Interleaved, 4, 10000.0, RopeScaling::None).apply(&mut y, 0, 1, 4);
        assert_eq!(x, y);
    }

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let plain = Rope::new(RopeStyle::RotateHalf, 128, 500000.0, RopeScaling::None);
        let scaled = Rope::new(
            RopeStyle::RotateHalf,
            128,
            500000.0,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position: 8192.0,
            },
        );
        // Highest frequency (shortest wavelength) is untouched; lowest is divided by factor.
        assert_eq!(plain.inv_freq[0], scaled.inv_freq[0]);
        let last = plain.inv_freq.len() - 1;
        assert!((plain.inv_freq[last] / 8.0 - scaled.inv_freq[last]).abs() < 1e-12);
        let linear = Rope::new(
            RopeStyle::RotateHalf,
            8,
            10000.0,
            RopeScaling::Linear { factor: 2.0 },
        );
        assert!((linear.inv_freq[1] - 0.5 * 10000f32.powf(-0.25)).abs() < 1e-7);
    }

    #[test]
    fn rope_backward_matches_naive_and_inverts_apply() {
        let mut rng = Rng::new(31);
        for style in [RopeStyle::Interleaved, RopeStyle::RotateHalf] {
            let rope = Rope::new(style, 16, 10000.0, RopeScaling::None);
            let x = rng.vec(5 * 3 * 16);
            let mut fast = x.clone();
            let mut slow = x.clone();
            rope.apply_backward(&mut fast, 7, 3, 16);
            rope_backward_naive(&rope, &mut slow, 7, 3, 16);
            assert_close(&fast, &slow, 1e-5);
            // The transpose of a rotation is its inverse.
            rope.apply(&mut fast, 7, 3, 16);
            assert_close(&fast, &x, 1e-5);
        }
    }

    #[test]
    fn rope_backward_matches_finite_differences_in_both_styles() {
        let (n_tok, n_heads, hd, pos0) = (3, 2, 8, 5);
        let mut rng = Rng::new(32);
        for style in [RopeStyle::Interleaved, RopeStyle::RotateHalf] {
            let rope = Rope::new(style, hd, 10000.0, RopeScaling::None);
            let (x, r) = (rng.vec(n_tok * n_heads * hd), rng.vec(n_tok * n_heads * hd));
            // f64 forward: L = Σ rope(x) ⊙ r.
            let loss = |x: &[f64]| -> f64 {
                let half = hd / 2;
                let mut l = 0.0;
                for t in 0..n_tok {
                    for h in 0..n_heads {
                        let base = (t * n_heads + h) * hd;
                        for i in 0..half {
                            let angle = (pos0 + t) as f64 * rope.inv_freq[i] as f64;
                            let (a, b) = match style {
                                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                                RopeStyle::RotateHalf => (i, i + half),
                            };
                            let (x0, x1) = (x[base + a], x[base + b]);
                            l += (x0 * angle.cos() - x1 * angle.sin()) * r[base + a] as f64;
                            l += (x0 * angle.sin() + x1 * angle.cos()) * r[base + b] as f64;
                        }
                    }
                }
                l
            };
            // The gradient of L with respect to x is the backward applied to r.
            let mut dx = r.clone();
            rope.apply_backward(&mut dx, pos0, n_heads, hd);
            assert_grad_close(&dx, &finite_diff(loss, &x), 1e-5);
        }
    }
}
