//! Optimizers: AdamW with decoupled weight decay, and the gradient norm for clipping.

use rayon::prelude::*;

#[cfg(test)]
use crate::cpu::Isa;
use crate::cpu::multiversion;
use crate::gemm_bf16::{PACK_ROWS, PackedWeight};

/// AdamW hyperparameters (PyTorch's names and meanings).
#[derive(Debug, Clone, Copy)]
pub struct AdamWParams {
    /// The learning rate.
    pub lr: f32,
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Added to the second moment's root.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
}

/// AdamW's zeroed moment buffer of `n` elements, its pages already written.
///
/// `vec![0.0; n]` maps a large buffer lazily: the first step's read of a moment maps the
/// shared zero page and its write then copies it, and each copy flushes that page from the
/// other cores' TLBs. Under a hypervisor those interrupts are slow: the first AdamW step of
/// a 110M-parameter model spent about 1.5 s in them (perf, 2 vCPUs). Writing the zeros
/// here maps every page by writing it, which needs no flush.
pub fn zeroed_moments(n: usize) -> Vec<f32> {
    let mut m = vec![0.0f32; n];
    // Opaque to the compiler, so it cannot drop the fill as storing zeros over zeros.
    std::hint::black_box(m.as_mut_slice()).fill(0.0);
    m
}

/// params, m, v: [n] updated in place; grads: [n]; step: 1-based.
///
/// Follows `torch.optim.AdamW` (non-fused, non-amsgrad) operation for operation: decay the
/// parameter by `lr · wd` first (decoupled from the gradient), update both moments, then
/// step by `lr / (1 - β1^t) · m / (sqrt(v) / sqrt(1 - β2^t) + eps)`, which is
/// `lr · m̂ / (sqrt(v̂) + eps)` arranged as PyTorch arranges it.
pub fn adamw_step(
    params: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[f32],
    step: u64,
    h: AdamWParams,
) {
    // Element-wise, so any split gives the same bits; chunks of 64k elements spread a
    // 100M-parameter update over the cores (it is a fifth of a full fine-tuning step's
    // time outside the GEMMs on one).
    const CHUNK: usize = 1 << 16;
    adamw_blocks(params, m, v, grads, step, h, CHUNK, |_, _| {});
}

/// [`adamw_step`] on a `[rows, cols]` matrix kept packed in bf16 as well: each block of
/// [`PACK_ROWS`] rows is updated and then packed into `packed` while it is still in cache,
/// so refreshing the bf16 copy costs no second pass over memory. The f32 values, moments
/// and packed panels come out exactly as `adamw_step` followed by [`PackedWeight::pack`].
pub fn adamw_step_repack(
    params: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[f32],
    step: u64,
    h: AdamWParams,
    packed: &mut PackedWeight,
) {
    assert_eq!(
        params.len(),
        packed.rows * packed.cols,
        "adamw_step_repack: params are not the packed matrix"
    );
    let block = PACK_ROWS * packed.cols.max(1);
    let writer = packed.writer();
    adamw_blocks(params, m, v, grads, step, h, block, |b, p| {
        writer.pack_block(b, p)
    });
}

/// AdamW over blocks of `block` elements in parallel; `then(b, values)` runs on block `b`
/// right after its update, while it is still in cache.
#[allow(clippy::too_many_arguments)]
fn adamw_blocks(
    params: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[f32],
    step: u64,
    h: AdamWParams,
    block: usize,
    then: impl Fn(usize, &[f32]) + Sync,
) {
    let n = params.len();
    assert!(
        m.len() == n && v.len() == n && grads.len() == n,
        "adamw_step: slices differ in length"
    );
    let k = Consts::new(step, h);
    let isa = crate::cpu::isa();
    params
        .par_chunks_mut(block)
        .zip(m.par_chunks_mut(block))
        .zip(v.par_chunks_mut(block))
        .zip(grads.par_chunks(block))
        .enumerate()
        .for_each(|(b, (((p, m), v), g))| {
            adamw_chunk(isa, p, m, v, g, k);
            then(b, p);
        });
}

/// The per-step constants of [`adamw_step`].
#[derive(Clone, Copy)]
struct Consts {
    decay: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

impl Consts {
    fn new(step: u64, h: AdamWParams) -> Consts {
        assert!(step >= 1, "adamw_step: step is 1-based");
        // Bias corrections in f64: β2^t for t in the thousands is far from 0 and 1 alike,
        // and powi in f32 would drift.
        let t = step.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (h.beta1 as f64).powi(t);
        let bc2 = 1.0 - (h.beta2 as f64).powi(t);
        Consts {
            decay: 1.0 - h.lr * h.weight_decay,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            step_size: (h.lr as f64 / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
        }
    }
}

multiversion!(adamw_chunk => adamw_chunk_generic(
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    k: Consts,
));

/// The update without `mul_add`, so every tier rounds exactly as the scalar code does and
/// a checkpoint resumed on another machine continues bit for bit.
#[inline(always)]
fn adamw_chunk_generic(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], k: Consts) {
    for i in 0..p.len().min(m.len()).min(v.len()).min(g.len()) {
        let g = g[i];
        p[i] *= k.decay;
        m[i] = k.beta1 * m[i] + (1.0 - k.beta1) * g;
        v[i] = k.beta2 * v[i] + (1.0 - k.beta2) * g * g;
        let denom = v[i].sqrt() / k.bc2_sqrt + k.eps;
        p[i] -= k.step_size * m[i] / denom;
    }
}

/// Reference for [`adamw_step`]: the textbook formulas, in f64.
pub fn adamw_step_naive(
    params: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    grads: &[f32],
    step: u64,
    h: AdamWParams,
) {
    let (lr, b1, b2) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64);
    let (eps, wd) = (h.eps as f64, h.weight_decay as f64);
    for i in 0..params.len() {
        let g = grads[i] as f64;
        let mut p = params[i] as f64;
        p -= lr * wd * p;
        let mi = b1 * m[i] as f64 + (1.0 - b1) * g;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * g * g;
        let mhat = mi / (1.0 - b1.powi(step as i32));
        let vhat = vi / (1.0 - b2.powi(step as i32));
        p -= lr * mhat / (vhat.sqrt() + eps);
        (params[i], m[i], v[i]) = (p as f32, mi as f32, vi as f32);
    }
}

/// Sum of squares of `g` in f64, for global gradient-norm clipping. Four partial sums in a
/// fixed order: deterministic, and independent enough to pipeline.
pub fn grad_norm_sq(g: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut chunks = g.chunks_exact(4);
    for c in &mut chunks {
        for l in 0..4 {
            acc[l] += c[l] as f64 * c[l] as f64;
        }
    }
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&x| x as f64 * x as f64)
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close};

    #[test]
    fn zeroed_moments_are_zeros_of_the_asked_length() {
        for n in [0, 1, 1 << 20] {
            let m = zeroed_moments(n);
            assert_eq!(m.len(), n);
            assert!(m.iter().all(|&x| x.to_bits() == 0));
        }
    }

    const H: AdamWParams = AdamWParams {
        lr: 0.1,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };

    #[test]
    fn two_steps_match_hand_computed_values() {
        let (mut p, mut m, mut v) = (vec![1.0f32], vec![0.0f32], vec![0.0f32]);
        // Step 1, g = 0.5: p = 1 - 0.1·0.01·1 = 0.999; m = 0.05; v = 0.00025;
        // m̂ = 0.5, v̂ = 0.25, so p = 0.999 - 0.1 · 0.5 / (0.5 + 1e-8) = 0.899 (to 1e-8).
        adamw_step(&mut p, &mut m, &mut v, &[0.5], 1, H);
        assert!((p[0] - 0.899).abs() < 1e-7, "{}", p[0]);
        // The moments carry f32 rounding of 1 - β (β2 = 0.999 is not exact in f32), so they
        // are held to a relative 1e-4.
        let near = |a: f32, b: f64| ((a as f64 - b) / b).abs() < 1e-4;
        assert!(near(m[0], 0.05) && near(v[0], 0.00025), "{} {}", m[0], v[0]);
        // Step 2, g = -0.25: p = 0.899 · 0.999 = 0.898101; m = 0.045 - 0.025 = 0.02;
        // v = 0.999 · 0.00025 + 0.001 · 0.0625 = 0.00031225; m̂ = 0.02 / 0.19;
        // v̂ = 0.00031225 / 0.001999; p = 0.898101 - 0.1 · m̂ / sqrt(v̂) = 0.87146730.
        adamw_step(&mut p, &mut m, &mut v, &[-0.25], 2, H);
        assert!(
            near(m[0], 0.02) && near(v[0], 0.00031225),
            "{} {}",
            m[0],
            v[0]
        );
        assert!((p[0] - 0.871_467_3).abs() < 1e-6, "{}", p[0]);
    }

    #[test]
    fn matches_naive_over_many_steps() {
        let mut rng = Rng::new(71);
        let n = 1000;
        let p0 = rng.vec(n);
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.0; n], vec![0.0; n]);
        let (mut pr, mut mr, mut vr) = (p0, vec![0.0; n], vec![0.0; n]);
        for step in 1..=20 {
            let g = rng.vec(n);
            adamw_step(&mut p, &mut m, &mut v, &g, step, H);
            adamw_step_naive(&mut pr, &mut mr, &mut vr, &g, step, H);
        }
        assert_close(&p, &pr, 1e-5);
        assert_close(&m, &mr, 1e-6);
        assert_close(&v, &vr, 1e-6);
    }

    #[test]
    fn every_tier_and_any_split_give_the_same_bits() {
        let mut rng = Rng::new(72);
        let n = (1 << 16) * 2 + 123;
        let (p0, m0, g) = (rng.vec(n), rng.vec(n), rng.vec(n));
        let v0: Vec<f32> = rng.vec(n).iter().map(|x| x * x).collect();
        let k = Consts {
            decay: 0.999,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step_size: 1e-3,
            bc2_sqrt: 0.05,
        };
        let run = |isa| {
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            adamw_chunk(isa, &mut p, &mut m, &mut v, &g, k);
            (p, m, v)
        };
        let reference = run(Isa::Baseline);
        for isa in Isa::available() {
            assert!(run(isa) == reference, "{isa}");
        }
        // The threaded whole-slice update (three chunks here) equals one scalar pass.
        let h = AdamWParams {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
        adamw_step(&mut p, &mut m, &mut v, &g, 3, h);
        let (mut p1, mut m1, mut v1) = (p0.clone(), m0.clone(), v0.clone());
        let bc1 = 1.0 - (h.beta1 as f64).powi(3);
        let bc2 = 1.0 - (h.beta2 as f64).powi(3);
        let k = Consts {
            decay: 1.0 - h.lr * h.weight_decay,
            beta1: h.beta1,
            beta2: h.beta2,
            eps: h.eps,
            step_size: (h.lr as f64 / bc1) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
        };
        adamw_chunk_generic(&mut p1, &mut m1, &mut v1, &g, k);
        assert!((p, m, v) == (p1, m1, v1));
    }

    #[test]
    fn grad_norm_sq_is_exact_on_small_integers() {
        let g: Vec<f32> = (0..11).map(|i| i as f32).collect();
        assert_eq!(grad_norm_sq(&g), 385.0);
        assert_eq!(grad_norm_sq(&[]), 0.0);
    }
}
