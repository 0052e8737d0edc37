//! RMSNorm: `out = x / sqrt(mean(x²) + eps) * weight`, per row.

/// out: [n, d], x: [n, d], weight: [d].
pub fn rmsnorm(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    assert_eq!(out.len(), x.len());
    assert_eq!(x.len() % d, 0, "rmsnorm: x rows are not of length d");
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        // Sum of squares in f32 with four lanes so the compiler vectorizes it; the error is
        // far below the 1e-5 tolerance the reference comparisons use.
        let mut acc = [0.0f32; 4];
        let mut chunks = xr.chunks_exact(4);
        for c in &mut chunks {
            for l in 0..4 {
                acc[l] += c[l] * c[l];
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
        let ss = acc.iter().sum::<f32>() + tail;
        let scale = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, &v), &w) in o.iter_mut().zip(xr).zip(weight) {
            *o = v * scale * w;
        }
    }
}

/// Reference for [`rmsnorm`], in f64.
pub fn rmsnorm_naive(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for (o, xr) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let scale = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..d {
            o[i] = (xr[i] as f64 * scale * weight[i] as f64) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close};

    #[test]
    fn rmsnorm_matches_naive() {
        let mut rng = Rng::new(2);
        for &(n, d) in &[(1, 1), (3, 7), (5, 64), (2, 576)] {
            let x = rng.vec(n * d);
            let w = rng.vec(d);
            let mut fast = vec![0.0; n * d];
            let mut slow = vec![0.0; n * d];
            rmsnorm(&mut fast, &x, &w, 1e-5);
            rmsnorm_naive(&mut slow, &x, &w, 1e-5);
            assert_close(&fast, &slow, 1e-5);
        }
    }

    #[test]
    fn rmsnorm_of_constant_row_is_weight() {
        let mut out = vec![0.0; 3];
        rmsnorm(&mut out, &[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0], 0.0);
        assert_close(&out, &[1.0, 2.0, 3.0], 1e-6);
    }
}
