//! The micro-kernels and the loop that runs them over one task's block of the output.
//!
//! `tile[mr][NR] = a_panel · b_panel` over a block of depth pairs: AVX512_BF16
//! (`vdpbf16ps`, 12, 8 or 4 rows) where the CPU's bf16 dot products outpace its FMAs, an
//! AVX-512 FMA kernel on the same bf16 panels elsewhere (AVX-512 without BF16, and Intel
//! cores whose `vdpbf16ps` runs at half the FMA flop rate), AMX-BF16 (`tdpbf16ps`, 32 rows;
//! never run on hardware yet), and a portable kernel per tier that sums in the same order
//! as the FMA kernel.

use super::{KC, MR, MR_AMX, NR, SendPtr, geometry};
use crate::cpu::{self, Isa, multiversion};

/// The AVX-512 kernels over bf16 pair panels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Avx512Kernel {
    /// `vdpbf16ps`: two products per lane and instruction.
    Dot,
    /// Each pair widened to two f32 and multiplied with `vfmadd231ps`.
    Fma,
}

impl Avx512Kernel {
    /// The kernel a tier runs: the dot product only where it is the faster of the two
    /// ([`cpu::bf16_dot_fast`]); `None` below AVX-512 and on AMX.
    pub(super) fn of(isa: Isa) -> Option<Avx512Kernel> {
        match isa {
            Isa::Avx512Bf16 if cpu::bf16_dot_fast() => Some(Avx512Kernel::Dot),
            Isa::Avx512Bf16 | Isa::Avx512 => Some(Avx512Kernel::Fma),
            _ => None,
        }
    }

    /// Runs this kernel on `M` rows (12, 8 or 4); the arguments are those of
    /// [`kernel_avx512bf16`].
    ///
    /// # Safety
    /// As for [`kernel_avx512bf16`], with the kernel's instructions available.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) unsafe fn run<const M: usize>(
        self,
        dst: *mut f32,
        ldd: usize,
        add: bool,
        a: &[u32],
        lda: usize,
        b: &[u32],
        kc: usize,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                Avx512Kernel::Dot => kernel_avx512bf16::<M>(dst, ldd, add, a, lda, b, kc),
                Avx512Kernel::Fma => kernel_avx512fma::<M>(dst, ldd, add, a, lda, b, kc),
            }
        }
    }

    /// The name reports and benchmarks give this kernel.
    pub(super) fn name(self) -> &'static str {
        match self {
            Avx512Kernel::Dot => "vdpbf16ps",
            Avx512Kernel::Fma => "avx512-fma",
        }
    }
}

/// The micro-kernel bf16 products run on at tier `isa`, as reports name it.
pub fn kernel_name(isa: Isa) -> &'static str {
    match (isa, Avx512Kernel::of(isa)) {
        (_, Some(k)) => k.name(),
        (Isa::Amx, _) => "tdpbf16ps",
        _ => "portable",
    }
}

/// The packed lhs elements kernel `k` (`None`: a portable or AMX one) reads for `rows` rows
/// `lda` apart and `kc` pairs: the FMA kernel's widened rows hold two f32 per pair.
pub(super) fn lhs_len(k: Option<Avx512Kernel>, rows: usize, lda: usize, kc: usize) -> usize {
    let per_pair = if k == Some(Avx512Kernel::Fma) { 2 } else { 1 };
    (rows - 1) * lda + per_pair * kc
}

/// Whether products at this tier widen their packed lhs for the FMA kernel.
pub(super) fn widens_lhs(isa: Isa) -> bool {
    Avx512Kernel::of(isa) == Some(Avx512Kernel::Fma)
}

multiversion!(pub(super) widen_lhs => widen_lhs_generic(dst: &mut [u32], a: &[u32]));

/// dst: `2 × a.len()` f32 bits, a: bf16 pairs. Each pair becomes its two halves widened to
/// f32, in depth order: the FMA kernel broadcasts both as f32 straight from memory, where
/// splitting a broadcast pair in registers would take two more operations per row and pair
/// on the ports the FMAs need.
#[inline(always)]
fn widen_lhs_generic(dst: &mut [u32], a: &[u32]) {
    for (d, &v) in dst.chunks_exact_mut(2).zip(a) {
        d[0] = v << 16;
        d[1] = v & 0xffff_0000;
    }
}

/// One task's rectangle of the output.
pub(super) struct Block {
    pub(super) r0: usize,
    pub(super) r1: usize,
    pub(super) c0: usize,
    pub(super) c1: usize,
    /// dst's row stride.
    pub(super) cols: usize,
    pub(super) kpt: usize,
    /// The packed lhs's row stride: `kpt` pairs, or `2 × kpt` f32 for the FMA kernel's
    /// widened rows ([`widen_lhs`]).
    pub(super) lda: usize,
    /// Pairs per column tile of the rhs panels, the first pair the product reads, and the
    /// column tile the panels given to `compute` start at.
    pub(super) b_kpt: usize,
    pub(super) b_k0: usize,
    pub(super) b_tile0: usize,
    pub(super) mr: usize,
}

impl Block {
    /// # Safety
    /// `out` points to a `[rows, cols]` matrix no other thread writes inside this block.
    pub(super) unsafe fn compute(
        &self,
        isa: Isa,
        a: &[u32],
        b: &[u32],
        out: SendPtr<f32>,
        accumulate: bool,
    ) {
        let mut tile = [0.0f32; MR_AMX * NR];
        let avx512 = Avx512Kernel::of(isa);
        for k0 in (0..self.kpt).step_by(KC) {
            let kc = KC.min(self.kpt - k0);
            for i0 in (self.r0..self.r1).step_by(self.mr) {
                // A widened row holds two elements per pair.
                let a_panel = &a[i0 * self.lda + k0 * (self.lda / self.kpt)..];
                for j0 in (self.c0..self.c1).step_by(NR) {
                    let b_at = (j0 / NR - self.b_tile0) * self.b_kpt * NR + (self.b_k0 + k0) * NR;
                    let b_panel = &b[b_at..][..kc * NR];
                    let (ni, nj) = (self.mr.min(self.r1 - i0), NR.min(self.c1 - j0));
                    let add = accumulate || k0 > 0;
                    #[cfg(target_arch = "x86_64")]
                    if let Some(k) = avx512
                        && ni == MR
                        && nj == NR
                    {
                        // A whole tile goes from the registers straight into the output,
                        // without the round trip through `tile` (2% of a LoRA step).
                        assert!(a_panel.len() >= lhs_len(avx512, MR, self.lda, kc));
                        // SAFETY: the tier was verified; the panels' lengths are checked
                        // (above and by the slicing of b_panel); rows i0..i0 + MR and columns
                        // j0..j0 + NR lie inside this task's block of `out`.
                        unsafe {
                            let dst = out.at(i0 * self.cols + j0);
                            k.run::<MR>(dst, self.cols, add, a_panel, self.lda, b_panel, kc)
                        };
                        continue;
                    }
                    kernel(isa, &mut tile, ni, a_panel, self.lda, b_panel, kc);
                    for i in 0..ni {
                        // SAFETY: (i0 + i, j0..j0 + nj) lies inside this task's block.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(out.at((i0 + i) * self.cols + j0), nj)
                        };
                        let t = &tile[i * NR..i * NR + nj];
                        if add {
                            row.iter_mut().zip(t).for_each(|(o, v)| *o += v);
                        } else {
                            row.copy_from_slice(t);
                        }
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Amx {
            amx::release();
        }
    }
}

/// tile: [mr][NR] = a_panel (rows of stride `lda` pairs, `kc` pairs used) · b_panel [kc][NR].
#[inline]
/// `rows` (at most the tile height) are the rows the caller keeps; a kernel may compute
/// more, from the lhs panel's zero padding.
pub(super) fn kernel(
    isa: Isa,
    tile: &mut [f32],
    rows: usize,
    a: &[u32],
    lda: usize,
    b: &[u32],
    kc: usize,
) {
    let (mr, _) = geometry(isa);
    let avx512 = Avx512Kernel::of(isa);
    assert!(a.len() >= lhs_len(avx512, mr, lda, kc) && b.len() >= kc * NR && tile.len() >= mr * NR);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: each arm runs only at a tier `cpu` verified this CPU (and OS) supports;
        // the panel lengths were checked above.
        match isa {
            Isa::Amx => return unsafe { amx::kernel(tile, a, lda, b, kc) },
            Isa::Avx512Bf16 | Isa::Avx512 => {
                let k = avx512.expect("an AVX-512 tier has a kernel");
                // The last row tile of 256 tokens has 4 rows: a 4-row kernel skips the 8
                // padding rows (3% of every such product).
                let t = tile.as_mut_ptr();
                return unsafe {
                    match rows {
                        0..=4 => k.run::<4>(t, NR, false, a, lda, b, kc),
                        5..=8 => k.run::<8>(t, NR, false, a, lda, b, kc),
                        _ => k.run::<MR>(t, NR, false, a, lda, b, kc),
                    }
                };
            }
            Isa::Avx2 => return unsafe { kernel_portable_avx2(tile, a, lda, b, kc) },
            Isa::Baseline => {}
        }
    }
    kernel_portable(tile, a, lda, b, kc)
}

/// The portable kernel: bf16 pairs widened to f32 and multiplied with FMA, in the order
/// `vdpbf16ps` sums them (even element, then odd). Compiled per tier below.
#[inline(always)]
fn kernel_portable(tile: &mut [f32], a: &[u32], lda: usize, b: &[u32], kc: usize) {
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        let bp = &b[p * NR..p * NR + NR];
        let mut blo = [0.0f32; NR];
        let mut bhi = [0.0f32; NR];
        for j in 0..NR {
            blo[j] = f32::from_bits(bp[j] << 16);
            bhi[j] = f32::from_bits(bp[j] & 0xffff_0000);
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            let ap = a[i * lda + p];
            let (alo, ahi) = (f32::from_bits(ap << 16), f32::from_bits(ap & 0xffff_0000));
            for j in 0..NR {
                acc[j] = ahi.mul_add(bhi[j], alo.mul_add(blo[j], acc[j]));
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        tile[i * NR..i * NR + NR].copy_from_slice(acc);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_portable_avx2(tile: &mut [f32], a: &[u32], lda: usize, b: &[u32], kc: usize) {
    kernel_portable(tile, a, lda, b, kc)
}

/// The AVX512_BF16 kernel: `M` (12, or 8 or 4 for a last row tile) rows × 32 columns of f32
/// sums in `2M` registers; per depth pair, two 16-column loads of the rhs and one broadcast
/// pair per row feed `2M` `vdpbf16ps`. The sums are stored to `dst` (rows `ldd` apart), or
/// added to it when `add`.
///
/// # Safety
/// AVX512_BF16 is available; `dst` holds M rows of NR floats, `ldd` apart; a holds M rows
/// of at least `kc` pairs, `lda` apart; b holds `kc × NR` pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512bf16<const M: usize>(
    dst: *mut f32,
    ldd: usize,
    add: bool,
    a: &[u32],
    lda: usize,
    b: &[u32],
    kc: usize,
) {
    use std::arch::x86_64::*;
    let (a, b) = (a.as_ptr(), b.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; M];
    for p in 0..kc {
        // SAFETY: `kernel` checked b holds kc × NR pairs and a holds rows of lda ≥ kc pairs.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(i * lda + p) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], ai, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], ai, b1);
            }
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { store_tile(dst, ldd, add, &acc) }
}

/// The AVX-512 FMA kernel: the arithmetic of [`kernel_portable`] (each pair's even product,
/// then its odd one, fused into the sum) at the FMA's full rate. Per depth pair the two rhs
/// registers are split into their even and odd bf16 halves widened to f32 (four integer
/// operations), and each row's halves are broadcast from its widened lhs row
/// ([`widen_lhs`]).
///
/// # Safety
/// AVX-512F is available; `dst` holds M rows of NR floats, `ldd` apart; a holds M widened
/// rows `lda` apart, of at least `2 × kc` f32 each; b holds `kc × NR` pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512fma<const M: usize>(
    dst: *mut f32,
    ldd: usize,
    add: bool,
    a: &[u32],
    lda: usize,
    b: &[u32],
    kc: usize,
) {
    use std::arch::x86_64::*;
    let (a, b) = (a.as_ptr().cast::<f32>(), b.as_ptr());
    let high = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let mut acc = [[_mm512_setzero_ps(); 2]; M];
    for p in 0..kc {
        // SAFETY: b holds kc × NR pairs and each widened row kc halves of each kind (the
        // caller's guarantee), and p < kc.
        unsafe {
            let at = b.add(p * NR);
            let (b0, b1) = (
                _mm512_loadu_si512(at.cast()),
                _mm512_loadu_si512(at.add(16).cast()),
            );
            let (l0, h0) = (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b0)),
                _mm512_castsi512_ps(_mm512_and_si512(b0, high)),
            );
            let (l1, h1) = (
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(b1)),
                _mm512_castsi512_ps(_mm512_and_si512(b1, high)),
            );
            for (i, acc) in acc.iter_mut().enumerate() {
                let row = a.add(i * lda + 2 * p);
                let (al, ah) = (_mm512_set1_ps(*row), _mm512_set1_ps(*row.add(1)));
                // Both registers' even products, then both odd ones: a sum's two FMAs are
                // not back to back (the same order per sum, so the same bits).
                acc[0] = _mm512_fmadd_ps(al, l0, acc[0]);
                acc[1] = _mm512_fmadd_ps(al, l1, acc[1]);
                acc[0] = _mm512_fmadd_ps(ah, h0, acc[0]);
                acc[1] = _mm512_fmadd_ps(ah, h1, acc[1]);
            }
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { store_tile(dst, ldd, add, &acc) }
}

/// Stores a kernel's `M` rows of sums (two registers each) to `dst`, rows `ldd` apart, or
/// adds them to what is there when `add`.
///
/// Always inlined into the kernels (which enable AVX-512F): a call would pass the 24
/// accumulators through memory.
///
/// # Safety
/// AVX-512F is available; `dst` holds M rows of NR floats, `ldd` apart.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_tile<const M: usize>(
    dst: *mut f32,
    ldd: usize,
    add: bool,
    acc: &[[std::arch::x86_64::__m512; 2]; M],
) {
    use std::arch::x86_64::*;
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: the caller guarantees M rows of NR floats at dst, ldd apart.
        unsafe {
            let row = dst.add(i * ldd);
            let (mut l, mut h) = (acc[0], acc[1]);
            if add {
                l = _mm512_add_ps(l, _mm512_loadu_ps(row));
                h = _mm512_add_ps(h, _mm512_loadu_ps(row.add(16)));
            }
            _mm512_storeu_ps(row, l);
            _mm512_storeu_ps(row.add(16), h);
        }
    }
}

/// The AMX-BF16 kernel. No development machine has had AMX so far, so this path has not run
/// on hardware; the tests skip it with a message where the CPU lacks it.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{MR_AMX, NR};

    /// The tile configuration: palette 1; tmm0–3 hold the 2 × 2 C tiles (16 rows × 16 f32),
    /// tmm4–5 the two A tiles (16 rows × 32 bf16), tmm6–7 the two B tiles (16 pair rows ×
    /// 16 columns). Every tile is 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = {
        let mut colsb = [0u16; 16];
        let mut rows = [0u8; 16];
        let mut t = 0;
        while t < 8 {
            colsb[t] = 64;
            rows[t] = 16;
            t += 1;
        }
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb,
            rows,
        }
    };

    /// tile: [32][NR] = a (32 rows of stride `lda` pairs) · b [kc][NR]; kc is a multiple of 16
    /// (the packed depth is padded to it for AMX).
    ///
    /// # Safety
    /// The CPU and OS support AMX-BF16 (`cpu::isa() == Isa::Amx`), and the panels are as long
    /// as `super::kernel` checks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel(tile: &mut [f32], a: &[u32], lda: usize, b: &[u32], kc: usize) {
        debug_assert!(kc.is_multiple_of(16) && tile.len() >= MR_AMX * NR);
        let cfg = &CONFIG as *const TileConfig;
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), tile.as_mut_ptr());
        let a_stride = lda * 4;
        let b_stride = NR * 4;
        let c_stride = NR * 4;
        // SAFETY: the caller guarantees AMX is enabled; every tile load reads 16 rows of 64
        // bytes inside the panels (a: rows 0..32 of stride lda pairs, pairs p..p + 16 < kc;
        // b: pair rows p..p + 16 of 128 bytes), and the stores write the 32 × 32 tile buffer.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{cfg}]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                cfg = in(reg) cfg,
                options(nostack, readonly),
            );
            for p in (0..kc).step_by(16) {
                let a0 = a.add(p);
                let a1 = a.add(16 * lda + p);
                let b0 = b.add(p * NR);
                let b1 = b.add(p * NR + 16);
                std::arch::asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) a1,
                    b0 = in(reg) b0,
                    b1 = in(reg) b1,
                    sa = in(reg) a_stride,
                    sb = in(reg) b_stride,
                    options(nostack, readonly),
                );
            }
            std::arch::asm!(
                "tilestored [{c00} + {sc}*1], tmm0",
                "tilestored [{c01} + {sc}*1], tmm1",
                "tilestored [{c10} + {sc}*1], tmm2",
                "tilestored [{c11} + {sc}*1], tmm3",
                c00 = in(reg) c,
                c01 = in(reg) c.add(16),
                c10 = in(reg) c.add(16 * NR),
                c11 = in(reg) c.add(16 * NR + 16),
                sc = in(reg) c_stride,
                options(nostack),
            );
        }
    }

    /// Releases the tile state at the end of a task, so the thread does not carry it
    /// (a larger XSAVE area) into unrelated work.
    pub(super) fn release() {
        // SAFETY: only called after `kernel`, on a CPU with AMX; TILERELEASE touches no memory.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}
