//! The efficiency report's reference: the GEMM peak of the arithmetic a run trains in, and
//! the utilization (achieved over peak) computed so that it never reads above 100%.
//!
//! The peak is measured, not looked up: a short run of square GEMMs on this machine with
//! the kernels the run uses (the f32 GEMM for f32 training, the bf16 GEMM for bf16
//! training, each on the active [`nf_engine::cpu::isa`]). A short measurement on small
//! matrices can come out below what long training GEMMs reach. When a run's achieved rate
//! exceeds the measured peak, the peak is under-measured: the caller measures once more on
//! larger matrices ([`REMEASURE_SIZE`]) and keeps the higher figure; if the run still
//! exceeds it, [`utilization`] clamps the fraction to 1 and says the peak was
//! under-measured, so the report reads "at least" rather than claiming more than 100%.

use nf_engine::Precision;

/// Matrix size of the quick peak measurement at the start of a run (a few milliseconds).
pub const QUICK_SIZE: usize = 512;

/// Matrix size of the second measurement, taken when a run outpaced the quick one.
pub const REMEASURE_SIZE: usize = 1024;

/// The best GEMM rate in GFLOP/s of `reps` square `n × n × n` products in `precision` on
/// this machine, or `None` when the measurement gave nothing usable (zero, not finite).
pub fn gemm_peak_gflops(precision: Precision, n: usize, reps: usize) -> Option<f64> {
    let g = match precision {
        Precision::F32 => nf_engine::matmul::sgemm_peak_gflops(n, reps),
        Precision::Bf16 => nf_engine::gemm_bf16::peak_gflops(n, reps),
    };
    (g.is_finite() && g > 0.0).then_some(g)
}

/// A run's achieved GEMM rate as a fraction of the measured peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Utilization {
    /// Achieved over peak, in [0, 1].
    pub fraction: f64,
    /// The run went faster than the measured peak: the peak is too low and `fraction`,
    /// clamped to 1, is a lower bound.
    pub peak_under_measured: bool,
}

/// Achieved over peak, clamped to [0, 1]; `None` without a usable peak or rate.
pub fn utilization(achieved_gflops: f64, peak_gflops: Option<f64>) -> Option<Utilization> {
    let peak = peak_gflops.filter(|p| p.is_finite() && *p > 0.0)?;
    if !achieved_gflops.is_finite() || achieved_gflops < 0.0 {
        return None;
    }
    let raw = achieved_gflops / peak;
    Some(Utilization {
        fraction: raw.min(1.0),
        peak_under_measured: raw > 1.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utilization_never_exceeds_one() {
        let u = utilization(50.0, Some(100.0)).unwrap();
        assert_eq!(
            u,
            Utilization {
                fraction: 0.5,
                peak_under_measured: false
            }
        );
        let u = utilization(150.0, Some(100.0)).unwrap();
        assert_eq!(u.fraction, 1.0);
        assert!(u.peak_under_measured);
        // Exactly at the peak is not under-measured.
        assert!(!utilization(100.0, Some(100.0)).unwrap().peak_under_measured);
    }

    #[test]
    fn no_usable_peak_gives_no_utilization() {
        for peak in [
            None,
            Some(0.0),
            Some(-1.0),
            Some(f64::NAN),
            Some(f64::INFINITY),
        ] {
            assert_eq!(utilization(10.0, peak), None, "{peak:?}");
        }
        assert_eq!(utilization(f64::NAN, Some(10.0)), None);
    }
}
