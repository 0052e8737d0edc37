//! The one dispatch point: which instruction set the kernels use, detected once per process,
//! and the thread count.
//!
//! Every kernel family (dot products, quantized dots, exp, attention, GEMM in f32 and bf16)
//! asks [`isa`] which of its compiled copies to run. The answer is the highest [`Isa`] tier
//! the CPU and the operating system both support, lowered by the `NF_ISA` environment
//! variable when it is set (never raised: a tier the CPU lacks would fault). Tests call the
//! kernels' `*_with(isa, …)` entry points for every tier in [`Isa::available`], so one
//! machine checks each path it can run.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

mod probe;
pub use probe::{bf16_dot_fast, rates as bf16_dot_rates};

/// Instruction-set tiers, lowest first. Each tier includes everything below it, which is
/// true of every CPU that has shipped: AVX-512 parts have AVX2 and FMA, AVX512_BF16 parts
/// have AVX-512F/BW/VL, and AMX parts have AVX512_BF16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Whatever the compilation target guarantees (SSE2 on x86-64).
    Baseline,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F, BW, VL and DQ.
    Avx512,
    /// AVX-512 plus AVX512_BF16 (`vdpbf16ps`): native bf16 dot products with f32 sums.
    Avx512Bf16,
    /// AVX512_BF16 plus AMX-TILE and AMX-BF16 (`tdpbf16ps`), enabled by the OS for this process.
    Amx,
}

impl Isa {
    /// Every tier, lowest first.
    pub const ALL: [Isa; 5] = [
        Isa::Baseline,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];

    /// The name `NF_ISA` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Baseline => "baseline",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// Parses a tier name as `NF_ISA` takes it.
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this tier multiplies bf16 pairs natively (and so trains faster in bf16 than in
    /// f32).
    pub fn has_native_bf16(self) -> bool {
        self >= Isa::Avx512Bf16
    }

    /// The tiers this machine can run, lowest first: every tier up to the detected one.
    pub fn available() -> Vec<Isa> {
        let top = features().best();
        Isa::ALL.into_iter().filter(|&i| i <= top).collect()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The tier the kernels use in this process: the detected one, capped by `NF_ISA`.
/// An `NF_ISA` that does not parse is ignored here; [`isa_override`] reports it so the
/// binary can refuse it with a clear message before any kernel runs.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = features().best();
        match isa_override() {
            Ok(Some(cap)) => cap.min(best),
            _ => best,
        }
    })
}

/// The `NF_ISA` setting: `Ok(None)` when unset or empty, an error naming the bad value.
pub fn isa_override() -> Result<Option<Isa>, String> {
    match std::env::var("NF_ISA") {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Isa::parse(&v).map(Some).ok_or(v),
        Err(_) => Ok(None),
    }
}

/// What the CPU offers that our kernels can use, detected at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    /// AVX2 (256-bit integer and float vectors).
    pub avx2: bool,
    /// Fused multiply-add.
    pub fma: bool,
    /// Half-precision conversion instructions.
    pub f16c: bool,
    /// AVX-512 F, BW, VL and DQ together (the subset every AVX-512 kernel here assumes).
    pub avx512: bool,
    /// `vdpbf16ps`: bf16 pair dot products with f32 sums.
    pub avx512bf16: bool,
    /// VNNI: 8-bit integer dot products.
    pub avx512vnni: bool,
    /// AMX-TILE and AMX-BF16 in CPUID.
    pub amx_cpu: bool,
    /// The OS saves tile state (XCR0 bits 17 and 18) and granted this process the tile data
    /// permission (Linux `arch_prctl(ARCH_REQ_XCOMP_PERM)`).
    pub amx_os: bool,
}

/// The CPU's features, detected once.
pub fn features() -> CpuFeatures {
    static F: OnceLock<CpuFeatures> = OnceLock::new();
    *F.get_or_init(CpuFeatures::detect)
}

impl CpuFeatures {
    /// Reads CPUID and the OS state. Prefer [`features`], which caches this.
    pub fn detect() -> CpuFeatures {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            // `is_x86_feature_detected!` checks XCR0 for the AVX and AVX-512 state; AMX is
            // not exposed by it on stable Rust, so read CPUID leaf 7 EDX bits 22 (AMX-BF16)
            // and 24 (AMX-TILE) and check its OS state ourselves.
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            let amx_cpu = leaf7.edx & (1 << 22) != 0 && leaf7.edx & (1 << 24) != 0;
            CpuFeatures {
                avx2: has!("avx2"),
                fma: has!("fma"),
                f16c: has!("f16c"),
                avx512: has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq"),
                avx512bf16: has!("avx512bf16"),
                avx512vnni: has!("avx512vnni"),
                amx_cpu,
                amx_os: amx_cpu && amx_os_enabled(),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            CpuFeatures {
                avx2: false,
                fma: false,
                f16c: false,
                avx512: false,
                avx512bf16: false,
                avx512vnni: false,
                amx_cpu: false,
                amx_os: false,
            }
        }
    }

    /// The highest tier these features support.
    pub fn best(&self) -> Isa {
        let avx2 = self.avx2 && self.fma && self.f16c;
        let avx512 = avx2 && self.avx512;
        let bf16 = avx512 && self.avx512bf16;
        if bf16 && self.amx_cpu && self.amx_os {
            Isa::Amx
        } else if bf16 {
            Isa::Avx512Bf16
        } else if avx512 {
            Isa::Avx512
        } else if avx2 {
            Isa::Avx2
        } else {
            Isa::Baseline
        }
    }

    /// A short list for logs and `neuralforge inspect`: `avx2 fma avx512 avx512bf16 …`.
    /// AMX that the CPU has but the OS does not enable shows as `amx(os-disabled)`.
    pub fn summary(&self) -> String {
        let amx_off = self.amx_cpu && !self.amx_os;
        let names = [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.f16c, "f16c"),
            (self.avx512, "avx512"),
            (self.avx512vnni, "avx512vnni"),
            (self.avx512bf16, "avx512bf16"),
            (self.amx_os, "amx-bf16"),
            (amx_off, "amx(os-disabled)"),
        ];
        let on: Vec<&str> = names.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        if on.is_empty() {
            "baseline".to_string()
        } else {
            on.join(" ")
        }
    }
}

/// Whether the OS lets this process use AMX tiles: XCR0 must have the tile config and tile
/// data bits, and on Linux the process must ask for the (large) tile data state first.
#[cfg(target_arch = "x86_64")]
fn amx_os_enabled() -> bool {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return false;
    }
    // SAFETY: XGETBV with ECX = 0 is valid whenever the OS has enabled XSAVE (checked above).
    let xcr0 = unsafe { std::arch::x86_64::_xgetbv(0) };
    if xcr0 & (0b11 << 17) != 0b11 << 17 {
        return false;
    }
    request_tile_permission()
}

/// Linux's `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`: without it the first tile
/// instruction raises SIGILL. Called once (through [`features`]); granted for the whole process.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_permission() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: a plain system call with two integer arguments; the kernel clobbers rcx and
    // r11 and returns in rax, as declared. It touches no memory of ours.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Other systems enable tile state without a request, when XCR0 says they save it.
#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_tile_permission() -> bool {
    true
}

/// Defines `$vis $name(isa, args…) -> ret`, which runs the `#[inline(always)]` function
/// `$generic` compiled for the widest vector tier `isa` allows: `$generic` is inlined into a
/// `#[target_feature]` copy per tier, and everything it calls must be `#[inline(always)]` too
/// (called directly, never through a function pointer) to be compiled for that tier as well.
/// `isa` must be a tier this CPU runs ([`isa`], [`Isa::available`]); every kernel family's
/// dispatch is this one macro.
macro_rules! multiversion {
    ($(#[$attr:meta])* $vis:vis $name:ident => $generic:ident($($arg:ident: $ty:ty),* $(,)?)
        $(-> $ret:ty)?) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name(isa: $crate::cpu::Isa, $($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma,f16c")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $generic($($arg),*)
                }
                if isa >= $crate::cpu::Isa::Avx512 {
                    // SAFETY: only tiers this CPU supports reach here, and the Avx512 tier
                    // includes every feature enabled above.
                    return unsafe { avx512($($arg),*) };
                }
                if isa >= $crate::cpu::Isa::Avx2 {
                    // SAFETY: as above; the Avx2 tier includes AVX2, FMA and F16C.
                    return unsafe { avx2($($arg),*) };
                }
            }
            let _ = isa;
            $generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

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

/// Runs `f` on one of the kernel pool's threads and returns its result.
///
/// A parallel loop started from a thread outside the pool hands its work over and then
/// sleeps until the pool is done (two wake-ups per loop, a few microseconds each, and the
/// caller's core idle meanwhile). A training step starts about 2,000 loops, so it runs as
/// one job on the pool: its loops then start from a pool thread, which shares the work and
/// keeps it, and the serial code between them runs on a core the pool already holds.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Whether an element-wise pass over `elements` floats (a norm, RoPE) is worth splitting
/// over threads: below 16k the hand-off costs more than it saves, so decode's single rows
/// stay on the caller.
pub(crate) fn split_pass(elements: usize) -> bool {
    elements >= 1 << 14 && threads() > 1
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_and_named() {
        for w in Isa::ALL.windows(2) {
            assert!(w[0] < w[1]);
        }
        for i in Isa::ALL {
            assert_eq!(Isa::parse(i.name()), Some(i));
        }
        assert_eq!(Isa::parse(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(Isa::parse("sse9"), None);
    }

    #[test]
    fn the_active_tier_is_available_and_capped() {
        let avail = Isa::available();
        assert_eq!(avail[0], Isa::Baseline);
        assert!(avail.contains(&isa()));
        assert!(isa() <= features().best());
        // A lower tier's feature set never claims a higher one.
        let f = features();
        assert_eq!(
            f.best() >= Isa::Avx512Bf16,
            f.avx512bf16 && f.avx512 && f.avx2
        );
    }

    #[test]
    fn amx_needs_cpu_and_os() {
        let f = CpuFeatures {
            avx2: true,
            fma: true,
            f16c: true,
            avx512: true,
            avx512bf16: true,
            avx512vnni: true,
            amx_cpu: true,
            amx_os: false,
        };
        assert_eq!(f.best(), Isa::Avx512Bf16);
        assert!(f.summary().contains("amx(os-disabled)"));
        assert_eq!(CpuFeatures { amx_os: true, ..f }.best(), Isa::Amx);
        assert_eq!(
            CpuFeatures {
                avx512bf16: false,
                amx_os: true,
                ..f
            }
            .best(),
            Isa::Avx512
        );
    }
}
