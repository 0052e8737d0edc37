//! SwiGLU: `out = silu(gate) * up` with `silu(x) = x * sigmoid(x)`.

/// out: [n], gate: [n], up: [n].
pub fn swiglu(out: &mut [f32], gate: &[f32], up: &[f32]) {
    assert_eq!(out.len(), gate.len());
    assert_eq!(out.len(), up.len());
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Reference for [`swiglu`], in f64.
pub fn swiglu_naive(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for i in 0..out.len() {
        let g = gate[i] as f64;
        out[i] = (g * (1.0 / (1.0 + (-g).exp())) * up[i] as f64) as f32;
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
    use crate::testutil::{Rng, assert_close};

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
    fn softmax_sums_to_one_and_survives_large_inputs() {
        let mut x = vec![1000.0, 1001.0, 999.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[1] > x[0] && x[0] > x[2]);
    }
}
