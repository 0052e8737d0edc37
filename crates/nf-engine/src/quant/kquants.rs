//! The k-quants: 256-element super-blocks split into sub-blocks of 16 or 32 elements, each
//! with its own small integer scale (and, for the "_1"-style types, min) that multiplies a
//! super-block f16 scale.

use super::f16_at;
use crate::ggml::QK_K;

/// block_q2_K, 84 bytes: `scales: [u8; 16]` (low nibble: scale, high nibble: min, one pair
/// per 16 elements), `qs: [u8; 64]` (2-bit quants), `d: f16`, `dmin: f16`.
///
/// Each 128-element half uses 32 bytes of `qs`: bits `2s..2s+2` of byte `l` hold element
/// `32s + l` of that half. Element = d * scale * q - dmin * min.
#[inline(always)]
pub(super) fn dequantize_q2_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(84).zip(dst.chunks_exact_mut(QK_K)) {
        let scales = &b[0..16];
        let d = f16_at(b, 80);
        let dmin = f16_at(b, 82);
        let mut out = y.iter_mut();
        let mut is = 0;
        for q in b[16..80].chunks_exact(32) {
            for shift in [0, 2, 4, 6] {
                // Two sub-blocks of 16 per shift: bytes 0..16, then bytes 16..32.
                for half in q.chunks_exact(16) {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * f32::from(sc & 0x0F);
                    let ml = dmin * f32::from(sc >> 4);
                    for &ql in half {
                        *out.next().unwrap() = dl * f32::from((ql >> shift) & 3) - ml;
                    }
                }
            }
        }
    }
}

/// block_q3_K, 110 bytes: `hmask: [u8; 32]` (third bit of each quant), `qs: [u8; 64]` (low two
/// bits), `scales: [u8; 12]` (sixteen 6-bit scales, packed), `d: f16`.
///
/// The low two bits are laid out as in Q2_K. The third bit of the element that takes its low
/// bits from `qs[32h + l]` at shift `2s` is bit `4h + s` of `hmask[l]` (`h` is the 128-element
/// half). A *clear* third bit subtracts 4, so quants run from -4 to 3; the scales are stored
/// offset by 32. Element = d * (scale - 32) * q.
#[inline(always)]
pub(super) fn dequantize_q3_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(110).zip(dst.chunks_exact_mut(QK_K)) {
        let hmask = &b[0..32];
        let scales = q3_k_scales(b[96..108].try_into().unwrap());
        let d = f16_at(b, 108);
        let mut out = y.iter_mut();
        let mut is = 0;
        let mut bit = 0;
        for q in b[32..96].chunks_exact(32) {
            for shift in [0, 2, 4, 6] {
                for (half, hm) in q.chunks_exact(16).zip(hmask.chunks_exact(16)) {
                    let dl = d * f32::from(scales[is] - 32);
                    is += 1;
                    for (&ql, &h) in half.iter().zip(hm) {
                        let low = i8::try_from((ql >> shift) & 3).unwrap();
                        let high = if h & (1 << bit) != 0 { 0 } else { 4 };
                        *out.next().unwrap() = dl * f32::from(low - high);
                    }
                }
                bit += 1;
            }
        }
    }
}

/// Unpacks Q3_K's sixteen 6-bit scales. Scale `j` has its low four bits in the low (`j < 8`)
/// or high (`j >= 8`) nibble of byte `j % 8`, and its top two bits at bits `2 * (j / 4)` of
/// byte `8 + j % 4`.
#[inline(always)]
fn q3_k_scales(packed: &[u8; 12]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, s) in out.iter_mut().enumerate() {
        let low = if j < 8 {
            packed[j] & 0x0F
        } else {
            packed[j - 8] >> 4
        };
        let high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
        *s = (low | (high << 4)) as i8;
    }
    out
}

/// Scale and min of sub-block `j` (0..8) of Q4_K and Q5_K, 6 bits each (ggml's
/// `get_scale_min_k4`). Bytes 0..4 hold scales 0..4, bytes 4..8 mins 0..4, in their low six
/// bits; sub-blocks 4..8 keep their low four bits in the nibbles of bytes 8..12 and their top
/// two bits in the spare top bits of bytes 0..8.
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// block_q4_K, 144 bytes: `d: f16`, `dmin: f16`, `scales: [u8; 12]` (eight 6-bit scale/min
/// pairs), `qs: [u8; 128]`.
///
/// Each 64 elements use 32 bytes of `qs`: low nibbles for the first 32 (sub-block 2k), high
/// nibbles for the next 32 (sub-block 2k + 1). Element = d * scale * q - dmin * min.
#[inline(always)]
pub(super) fn dequantize_q4_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(144).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        for (k, (q, y)) in b[16..144]
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (d1, m1) = scaled_pair(d, dmin, scale_min_k4(2 * k, scales));
            let (d2, m2) = scaled_pair(d, dmin, scale_min_k4(2 * k + 1, scales));
            for l in 0..32 {
                y[l] = d1 * f32::from(q[l] & 0x0F) - m1;
                y[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
            }
        }
    }
}

/// block_q5_K, 176 bytes: `d: f16`, `dmin: f16`, `scales: [u8; 12]`, `qh: [u8; 32]` (fifth
/// bits), `qs: [u8; 128]` (low nibbles, laid out as in Q4_K).
///
/// For the k-th 64 elements, bit 2k of `qh[l]` is the fifth bit of element `l` and bit 2k + 1
/// that of element `l + 32`. Element = d * scale * q - dmin * min.
#[inline(always)]
pub(super) fn dequantize_q5_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(176).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 0);
        let dmin = f16_at(b, 2);
        let scales = &b[4..16];
        let qh = &b[16..48];
        for (k, (q, y)) in b[48..176]
            .chunks_exact(32)
            .zip(y.chunks_exact_mut(64))
            .enumerate()
        {
            let (d1, m1) = scaled_pair(d, dmin, scale_min_k4(2 * k, scales));
            let (d2, m2) = scaled_pair(d, dmin, scale_min_k4(2 * k + 1, scales));
            let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
            for l in 0..32 {
                let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
                y[l] = d1 * f32::from((q[l] & 0x0F) + h1) - m1;
                y[l + 32] = d2 * f32::from((q[l] >> 4) + h2) - m2;
            }
        }
    }
}

/// `(d * scale, dmin * min)`, each rounded to f32 once, as ggml computes them.
#[inline(always)]
fn scaled_pair(d: f32, dmin: f32, (sc, m): (u8, u8)) -> (f32, f32) {
    (d * f32::from(sc), dmin * f32::from(m))
}

/// block_q6_K, 210 bytes: `ql: [u8; 128]` (low four bits), `qh: [u8; 64]` (top two bits),
/// `scales: [i8; 16]` (one per 16 elements), `d: f16`.
///
/// Each 128 elements use 64 bytes of `ql` and 32 of `qh`. For `l` in 0..32, elements
/// `l, l+32, l+64, l+96` take their low bits from the low nibble of `ql[l]`, the low nibble of
/// `ql[l+32]`, the high nibble of `ql[l]`, the high nibble of `ql[l+32]`, and their top bits
/// from bits 0-1, 2-3, 4-5, 6-7 of `qh[l]`. Element = d * scale * (q - 32).
#[inline(always)]
pub(super) fn dequantize_q6_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(210).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f16_at(b, 208);
        for n in 0..2 {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let sc = &b[192 + 8 * n..192 + 8 * n + 8];
            let y = &mut y[128 * n..128 * n + 128];
            for l in 0..32 {
                let is = l / 16;
                let q = [
                    (ql[l] & 0x0F) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (g, &q) in q.iter().enumerate() {
                    let scale = f32::from(sc[is + 2 * g] as i8);
                    // ggml evaluates `d * sc * q` left to right: (d * sc) * q.
                    y[l + 32 * g] = d * scale * f32::from(q as i8 - 32);
                }
            }
        }
    }
}

/// block_q8_K, 292 bytes: `d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]` (sums of each 16
/// quants, used only by dot products). Element = d * q.
#[inline(always)]
pub(super) fn dequantize_q8_k(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(292).zip(dst.chunks_exact_mut(QK_K)) {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        for (y, &q) in y.iter_mut().zip(&b[4..260]) {
            *y = d * f32::from(q as i8);
        }
    }
}
