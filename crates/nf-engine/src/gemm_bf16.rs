//! bf16 GEMM with f32 accumulation (placeholder while the kernels land).

use crate::cpu::Isa;

/// The best bf16 GEMM rate of `reps` square `n × n × n` products on this machine with the
/// active instruction set, in GFLOP/s.
pub fn peak_gflops(n: usize, reps: usize) -> f64 {
    let _ = (n, reps, Isa::Baseline);
    0.0
}
