//! Deterministic test data and comparison helpers for kernel tests.

/// The workspace's test generator ([`crate::rng::XorShift64`]).
pub use crate::rng::XorShift64 as Rng;

/// A random `[rows, cols]` weight (uniform in [-1, 1)) stored as `ty`.
pub fn random_weight(
    ty: crate::ggml::GgmlType,
    rows: usize,
    cols: usize,
    rng: &mut Rng,
) -> crate::linear::Weight {
    let v = rng.vec(rows * cols);
    let mut bytes = Vec::new();
    crate::quant::quantize(ty, &v, &mut bytes).unwrap();
    crate::linear::Weight::from_quant(rows, cols, ty, bytes).unwrap()
}

/// Asserts `a` and `b` agree to `tol` relative to the larger magnitude (or absolutely near 0).
pub fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "length mismatch");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let scale = x.abs().max(y.abs()).max(1.0);
        assert!(
            (x - y).abs() <= tol * scale,
            "element {i}: {x} vs {y} (tol {tol})"
        );
    }
}

/// Widens a slice to f64, for the f64 forwards that finite differences run on.
pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Central-difference gradient of the scalar `f` at `x`, entirely in f64.
///
/// The kernels under test are f32, but the finite differences are taken on an f64 version of
/// the forward: in f64 a step of 1e-5 has truncation error ~1e-10 and rounding error ~1e-11,
/// so any disagreement beyond that is the f32 kernel's (or a bug).
pub fn finite_diff(mut f: impl FnMut(&[f64]) -> f64, x: &[f32]) -> Vec<f64> {
    const EPS: f64 = 1e-5;
    let mut xs = to_f64(x);
    (0..xs.len())
        .map(|i| {
            let x0 = xs[i];
            xs[i] = x0 + EPS;
            let up = f(&xs);
            xs[i] = x0 - EPS;
            let down = f(&xs);
            xs[i] = x0;
            (up - down) / (2.0 * EPS)
        })
        .collect()
}

/// Asserts an analytic gradient agrees with a numeric one to relative tolerance `rtol`.
///
/// Elements whose true gradient is near zero cannot be judged relatively (cancellation
/// leaves f32 noise of the size of the larger terms), so each element is compared against
/// its own magnitude with a floor of 1% of the largest gradient magnitude.
pub fn assert_grad_close(analytic: &[f32], numeric: &[f64], rtol: f64) {
    assert_eq!(analytic.len(), numeric.len(), "gradient length mismatch");
    let largest = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(
        largest > 0.0,
        "numeric gradient is identically zero: the check is vacuous"
    );
    for (i, (&a, &n)) in analytic.iter().zip(numeric).enumerate() {
        let a = a as f64;
        let scale = a.abs().max(n.abs()).max(1e-2 * largest);
        assert!(
            (a - n).abs() <= rtol * scale,
            "gradient element {i}: analytic {a} vs numeric {n} (rtol {rtol}, scale {scale})"
        );
    }
}
