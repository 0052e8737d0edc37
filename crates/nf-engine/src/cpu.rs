//! CPU feature detection and thread configuration.

use std::sync::atomic::{AtomicUsize, Ordering};

/// What the CPU offers that our kernels can use, detected at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    pub avx512bf16: bool,
    pub amx_bf16: bool,
    pub amx_tile: bool,
}

impl CpuFeatures {
    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            // AMX is not exposed by `is_x86_feature_detected!` on stable Rust: read CPUID
            // leaf 7, sub-leaf 0, EDX bits 22 (AMX-BF16) and 24 (AMX-TILE) directly.
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            // Sub-leaf 1 of leaf 7 reports AVX512-BF16 in EAX bit 5.
            let leaf7_1 = std::arch::x86_64::__cpuid_count(7, 1);
            CpuFeatures {
                avx2: std::arch::is_x86_feature_detected!("avx2"),
                fma: std::arch::is_x86_feature_detected!("fma"),
                avx512f: std::arch::is_x86_feature_detected!("avx512f"),
                avx512bf16: leaf7_1.eax & (1 << 5) != 0,
                amx_bf16: leaf7.edx & (1 << 22) != 0,
                amx_tile: leaf7.edx & (1 << 24) != 0,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures {
                avx2: false,
                fma: false,
                avx512f: false,
                avx512bf16: false,
                amx_bf16: false,
                amx_tile: false,
            }
        }
    }

    /// A short list for logs and `neuralforge inspect`: `avx2 fma avx512f amx-bf16`.
    pub fn summary(&self) -> String {
        let names = [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.avx512f, "avx512f"),
            (self.avx512bf16, "avx512bf16"),
            (self.amx_tile, "amx-tile"),
            (self.amx_bf16, "amx-bf16"),
        ];
        let on: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        if on.is_empty() {
            "baseline".to_string()
        } else {
            on.join(" ")
        }
    }
}

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Sets how many threads the kernels use (0 = all available cores). Call before the first
/// kernel runs; the rayon pool is global and fixed once built.
pub fn set_threads(n: usize) {
    let n = if n == 0 { available_threads() } else { n };
    THREADS.store(n, Ordering::Relaxed);
    // A second call cannot resize the global pool; the kernels still honour the new count
    // for gemm's own parallelism, so the error is not worth surfacing.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}

/// The number of threads kernels use.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => available_threads(),
        n => n,
    }
}

fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
