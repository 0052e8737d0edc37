//! A frozen weight's ggml blocks decoded straight into a `Wᵀ` column tile of bf16 pairs.
//!
//! The forward of a frozen linear layer reads `Wᵀ`: a column tile is 32 rows of W, and its
//! pair row `p` holds the bf16 pair `(W[j][2p], W[j][2p + 1])` of each of them. The general
//! packer decodes each row to f32, converts it to pairs and then transposes 36 KiB of pairs
//! through memory; at 256 tokens that cost about a fifth of a frozen product. Here the 32
//! values of one block of 16 rows are decoded, rounded and paired in registers, and each
//! 16 × 16 square is transposed in L1 straight into the tile: one pass, no f32 rows.
//!
//! The values and their rounding are those of [`crate::quant::dequantize`] followed by
//! [`super::bf16_bits`], so the panel has the same bits as the general packer's.

use crate::ggml::GgmlType;
use crate::linear::{Weight, WeightData};
use crate::quant::f16_at;

use super::NR;

/// Values per block of every type handled here.
const QK: usize = 32;

/// Whether [`pack_tile_avx512`] handles `w` for a tile of `nj` columns.
pub(super) fn handles(w: &Weight, nj: usize) -> bool {
    matches!(
        w.data,
        WeightData::Quant {
            ty: GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0,
            ..
        }
    ) && nj == NR
        && w.cols.is_multiple_of(QK)
}

/// dst: `[kp][NR]`, column tile `ct` of `Wᵀ` (W's rows `ct · NR..(ct + 1) · NR`), pair
/// rows `0..cols / 2` written. Padding rows past them are the caller's.
///
/// # Safety
/// AVX-512F and AVX-512BW are available; [`handles`] said yes; dst holds `cols / 2 · NR`
/// pairs; the tile's rows exist in W.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn pack_tile_avx512(dst: &mut [u32], w: &Weight, ct: usize) {
    use std::arch::x86_64::*;
    let WeightData::Quant { ty, bytes } = &w.data else {
        unreachable!("checked by handles")
    };
    let (block_bytes, kind) = kind_of(*ty);
    let blocks = w.cols / QK;
    let row_bytes = blocks * block_bytes;
    assert!(dst.len() >= blocks * 16 * NR && (ct + 1) * NR <= w.rows);
    // One 16 × 16 square of pairs: row r is block b of W row j0 + r.
    let mut square = [0u32; 256];
    for half in 0..NR / 16 {
        let j0 = ct * NR + half * 16;
        for b in 0..blocks {
            for r in 0..16 {
                let at = (j0 + r) * row_bytes + b * block_bytes;
                let block = &bytes[at..at + block_bytes];
                // SAFETY: the caller guarantees the features; `block` is one whole block
                // and square row r is 16 u32.
                unsafe {
                    let pairs = decode_pairs(kind, block);
                    _mm512_storeu_si512(square.as_mut_ptr().add(16 * r).cast(), pairs);
                }
            }
            // SAFETY: pair rows 16b..16b + 16 of the tile, columns half · 16.. + 16, lie
            // inside dst (asserted above); square holds 16 rows of 16.
            unsafe {
                super::transpose16_avx512(
                    dst.as_mut_ptr().add(16 * b * NR + 16 * half),
                    NR,
                    square.as_ptr(),
                    16,
                )
            };
        }
    }
}

/// Whether [`pack_w_tile_avx512`] handles `w`: a type of 32-value blocks, so that a column
/// tile of `W` is one block of each row.
pub(super) fn handles_w(w: &Weight) -> bool {
    handles(w, NR)
}

/// dst: `[kp][NR]`, column tile `ct` of W's rows `r0..r0 + depth` (the rhs of a frozen
/// weight's input gradient `dx = dy · W`, or a depth slice of it): pair row `p` holds
/// `(W[r0 + 2p][c], W[r0 + 2p + 1][c])` for the tile's 32 columns, which are block `ct` of
/// both rows. Pair rows `0..depth.div_ceil(2)` are written (an odd last row is paired with
/// zero); padding rows past them are the caller's.
///
/// # Safety
/// AVX-512F and AVX-512BW are available; [`handles_w`] said yes; dst holds
/// `depth.div_ceil(2) · NR` pairs; the rows and the tile's columns exist in W.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn pack_w_tile_avx512(
    dst: &mut [u32],
    w: &Weight,
    ct: usize,
    (r0, depth): (usize, usize),
) {
    use std::arch::x86_64::*;
    let WeightData::Quant { ty, bytes } = &w.data else {
        unreachable!("checked by handles_w")
    };
    let (block_bytes, kind) = kind_of(*ty);
    let row_bytes = w.cols / QK * block_bytes;
    let kp = depth.div_ceil(2);
    assert!(dst.len() >= kp * NR && (ct + 1) * QK <= w.cols && r0 + depth <= w.rows);
    // Lane i of the first result takes value i/2 of row 2p (even i) or of row 2p + 1 (odd
    // i): the bf16 pairs of columns 0..16; the second, columns 16..32.
    let first: [i16; 32] = std::array::from_fn(|i| (i / 2 + 32 * (i % 2)) as i16);
    let second: [i16; 32] = std::array::from_fn(|i| (16 + i / 2 + 32 * (i % 2)) as i16);
    // SAFETY: the caller guarantees the features; each block read is one whole block of a
    // row that exists, and each store writes pair row p (< kp) of dst.
    unsafe {
        let (first, second) = (
            _mm512_loadu_si512(first.as_ptr().cast()),
            _mm512_loadu_si512(second.as_ptr().cast()),
        );
        let block = |r: usize| &bytes[(r0 + r) * row_bytes + ct * block_bytes..][..block_bytes];
        for p in 0..kp {
            let a = decode_pairs(kind, block(2 * p));
            let b = if 2 * p + 1 < depth {
                decode_pairs(kind, block(2 * p + 1))
            } else {
                _mm512_setzero_si512()
            };
            let row = dst.as_mut_ptr().add(p * NR);
            _mm512_storeu_si512(row.cast(), _mm512_permutex2var_epi16(a, first, b));
            _mm512_storeu_si512(row.add(16).cast(), _mm512_permutex2var_epi16(a, second, b));
        }
    }
}

/// Bytes per block and the decoder of a type [`handles`] accepts.
fn kind_of(ty: GgmlType) -> (usize, Kind) {
    match ty {
        GgmlType::Q4_0 => (18, Kind::Q4_0),
        GgmlType::Q4_1 => (20, Kind::Q4_1),
        _ => (34, Kind::Q8_0),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Q4_0,
    Q4_1,
    Q8_0,
}

/// One block's 32 values as 16 bf16 pairs (value `2p` in the low half of lane `p`).
/// Inlined into its callers, whose AVX-512 features it compiles with: a call would pass
/// the vector through memory.
///
/// # Safety
/// AVX-512F and AVX-512BW are available; `b` is one whole block of `kind`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn decode_pairs(kind: Kind, b: &[u8]) -> std::arch::x86_64::__m512i {
    use std::arch::x86_64::*;
    // SAFETY: each load reads inside the block (16 quant bytes at 2 or 4, or 32 at 2).
    unsafe {
        let (lo, hi) = match kind {
            Kind::Q4_0 | Kind::Q4_1 => {
                let min = matches!(kind, Kind::Q4_1);
                let (d, m, qs) = if min {
                    (f16_at(b, 0), f16_at(b, 2), &b[4..20])
                } else {
                    (f16_at(b, 0), 0.0, &b[2..18])
                };
                let q = _mm_loadu_si128(qs.as_ptr().cast());
                let mask = _mm_set1_epi8(0x0F);
                // Low nibbles are values 0..16, high nibbles 16..32.
                let (qlo, qhi) = (
                    _mm_and_si128(q, mask),
                    _mm_and_si128(_mm_srli_epi16(q, 4), mask),
                );
                let bias = _mm512_set1_epi32(if min { 0 } else { 8 });
                let (vd, vm) = (_mm512_set1_ps(d), _mm512_set1_ps(m));
                // The same operations as the dequantizer: (q - 8) · d, or q · d + m.
                let value = |h: __m128i| {
                    let x = _mm512_sub_epi32(_mm512_cvtepu8_epi32(h), bias);
                    let v = _mm512_mul_ps(_mm512_cvtepi32_ps(x), vd);
                    if min { _mm512_add_ps(v, vm) } else { v }
                };
                (value(qlo), value(qhi))
            }
            Kind::Q8_0 => {
                let d = _mm512_set1_ps(f16_at(b, 0));
                let q = |at: usize| {
                    let x = _mm512_cvtepi8_epi32(_mm_loadu_si128(b.as_ptr().add(at).cast()));
                    _mm512_mul_ps(_mm512_cvtepi32_ps(x), d)
                };
                (q(2), q(18))
            }
        };
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(bf16_halves(lo)), bf16_halves(hi))
    }
}

/// 16 floats rounded to bf16 as [`super::bf16_bits`] does (nearest even; NaN made quiet),
/// in order.
///
/// # Safety
/// AVX-512F and AVX-512BW are available (inlined as [`decode_pairs`] is).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bf16_halves(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m256i {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees AVX-512F and BW; these are register operations.
    unsafe {
        let b = _mm512_castps_si512(v);
        let odd = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32(
            _mm512_add_epi32(b, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))),
            16,
        );
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
        let quiet = _mm512_or_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x40));
        _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet))
    }
}
