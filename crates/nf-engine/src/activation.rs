//! SwiGLU: `out = silu(gate) * up` with `silu(x) = x * sigmoid(x)`.

use rayon::prelude::*;

use crate::cpu::{self, multiversion};
use crate::fastmath;

/// Elements per parallel task: below this a call runs on the calling thread (a decode
/// step's 1–6k elements), above it the work is split (a training step's 256 × 2048).
const PAR_CHUNK: usize = 1 << 14;

/// out: [n], gate: [n], up: [n].
///
/// The sigmoid uses the vectorized [`fastmath::exp`] (within 2 ulp of libm's), compiled per
/// instruction set; elements are independent, so splitting the work changes no bits.
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert_eq!(out.len(), gate.len());
    assert_eq!(out.len(), up.len());
    let isa = cpu::isa();
    if out.len() <= PAR_CHUNK {
        return swiglu_with(isa, out, gate, up);
    }
    out.par_chunks_mut(PAR_CHUNK)
        .zip(gate.par_chunks(PAR_CHUNK))
        .zip(up.par_chunks(PAR_CHUNK))
        .for_each(|((o, g), u)| swiglu_with(isa, o, g, u));
}

multiversion!(
    /// [`swiglu`] on the calling thread, compiled for `isa`.
    pub swiglu_with => swiglu_generic(out: &mut [f32], gate: &[f32], up: &[f32])
);

#[inline(always)]
fn swiglu_generic(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + fastmath::exp(-g)) * u;
    }
}

/// Reference for [`swiglu`], in f64.
pub fn swiglu_naive(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for i in 0..out.len() {
        let g = gate[i] as f64;
        out[i] = (g * (1.0 / (1.0 + (-g).exp())) * up[i] as f64) as f32;
    }
}

/// dgate, dup: [n] (OVERWRITES), dout, gate, up: [n]. Backward of swiglu.
///
/// With `σ = sigmoid(g)`: `∂out/∂up = g·σ` and `∂out/∂g = u·σ·(1 + g·(1 - σ))`, the
/// derivative of `silu(g) = g·σ` being `σ + g·σ·(1 - σ)`.
pub fn swiglu_backward(dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
    let n = dout.len();
    assert!(
        dgate.len() == n && dup.len() == n && gate.len() == n && up.len() == n,
        "swiglu_backward: slices differ in length"
    );
    let isa = cpu::isa();
    if n <= PAR_CHUNK {
        return swiglu_backward_with(isa, dgate, dup, dout, gate, up);
    }
    dgate
        .par_chunks_mut(PAR_CHUNK)
        .zip(dup.par_chunks_mut(PAR_CHUNK))
        .zip(dout.par_chunks(PAR_CHUNK))
        .zip(gate.par_chunks(PAR_CHUNK).zip(up.par_chunks(PAR_CHUNK)))
        .for_each(|(((dg, du), d), (g, u))| swiglu_backward_with(isa, dg, du, d, g, u));
}

multiversion!(
    /// [`swiglu_backward`] on the calling thread, compiled for `isa`.
    pub swiglu_backward_with => swiglu_backward_generic(
        dgate: &mut [f32],
        dup: &mut [f32],
        dout: &[f32],
        gate: &[f32],
        up: &[f32],
    )
);

#[inline(always)]
fn swiglu_backward_generic(
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
) {
    let ins = dout.iter().zip(gate).zip(up);
    for ((dg, du), ((&d, &g), &u)) in dgate.iter_mut().zip(dup.iter_mut()).zip(ins) {
        let sig = 1.0 / (1.0 + fastmath::exp(-g));
        let silu = g * sig;
        *du = d * silu;
        *dg = d * u * (sig + silu * (1.0 - sig));
    }
}

/// Reference for [`swiglu_backward`], in f64.
pub fn swiglu_backward_naive(
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
) {
    for i in 0..dout.len() {
        let (g, u, d) = (gate[i] as f64, up[i] as f64, dout[i] as f64);
        let sig = 1.0 / (1.0 + (-g).exp());
        dup[i] = (d * g * sig) as f32;
        dgate[i] = (d * u * sig * (1.0 + g * (1.0 - sig))) as f32;
    }
}

/// In-place numerically stable softmax over a row.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, assert_grad_close, finite_diff, to_f64};

    #[test]
    fn swiglu_matches_naive() {
        let mut rng = Rng::new(3);
        let g: Vec<f32> = rng.vec(257).iter().map(|v| v * 8.0).collect();
        let u = rng.vec(257);
        let mut fast = vec![0.0; 257];
        let mut slow = vec![0.0; 257];
        swiglu(&mut fast, &g, &u);
        swiglu_naive(&mut slow, &g, &u);
        assert_close(&fast, &slow, 1e-6);
    }

    #[test]
    fn split_work_and_every_tier_give_the_same_bits() {
        // Long enough to be split into tasks; compared with one unsplit call per tier.
        let n = 3 * PAR_CHUNK + 5;
        let mut rng = Rng::new(4);
        let g: Vec<f32> = rng.vec(n).iter().map(|v| v * 30.0).collect();
        let (u, d) = (rng.vec(n), rng.vec(n));
        let mut out = vec![0.0; n];
        swiglu(&mut out, &g, &u);
        let (mut dg, mut du) = (vec![0.0; n], vec![0.0; n]);
        swiglu_backward(&mut dg, &mut du, &d, &g, &u);
        for isa in crate::cpu::Isa::available() {
            let mut one = vec![0.0; n];
            swiglu_with(isa, &mut one, &g, &u);
            assert!(one == out, "{isa}");
            let (mut dg1, mut du1) = (vec![0.0; n], vec![0.0; n]);
            swiglu_backward_with(isa, &mut dg1, &mut du1, &d, &g, &u);
            assert!(dg1 == dg && du1 == du, "{isa}");
        }
        let mut slow = vec![0.0; n];
        swiglu_naive(&mut slow, &g, &u);
        assert_close(&out, &slow, 1e-6);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_inputs() {
        let mut x = vec![1000.0, 1001.0, 999.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2]);
    }

    #[test]
    fn swiglu_backward_matches_naive_and_overwrites() {
        let mut rng = Rng::new(41);
        let g: Vec<f32> = rng.vec(257).iter().map(|v| v * 8.0).collect();
        let (u, d) = (rng.vec(257), rng.vec(257));
        let (mut dg, mut du) = (vec![f32::NAN; 257], vec![f32::NAN; 257]);
        let (mut dg_ref, mut du_ref) = (vec![0.0; 257], vec![0.0; 257]);
        swiglu_backward(&mut dg, &mut du, &d, &g, &u);
        swiglu_backward_naive(&mut dg_ref, &mut du_ref, &d, &g, &u);
        assert_close(&dg, &dg_ref, 1e-6);
        assert_close(&du, &du_ref, 1e-6);
    }

    #[test]
    fn swiglu_backward_matches_finite_differences() {
        let mut rng = Rng::new(42);
        let g: Vec<f32> = rng.vec(40).iter().map(|v| v * 6.0).collect();
        let (u, r) = (rng.vec(40), rng.vec(40));
        // f64 forward: L = Σ silu(g) · u · r.
        let loss = |g: &[f64], u: &[f64]| -> f64 {
            (0..g.len())
                .map(|i| g[i] / (1.0 + (-g[i]).exp()) * u[i] * r[i] as f64)
                .sum()
        };
        let (mut dg, mut du) = (vec![0.0; 40], vec![0.0; 40]);
        swiglu_backward(&mut dg, &mut du, &r, &g, &u);
        let (g64, u64) = (to_f64(&g), to_f64(&u));
        assert_grad_close(&dg, &finite_diff(|g| loss(g, &u64), &g), 1e-5);
        assert_grad_close(&du, &finite_diff(|u| loss(&g64, u), &u), 1e-5);
    }
}
