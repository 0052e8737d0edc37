//! The original 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.
//!
//! In the 4- and 5-bit types, byte `j` of `qs` holds element `j` in its low nibble and element
//! `j + 16` in its high nibble. The 5-bit types keep each element's fifth bit in `qh`, a
//! little-endian u32 whose bit `j` belongs to element `j`.
//!
//! The quantizers follow `quantize_row_*_ref`: the quants are computed with the f32 scale
//! (`id = 1/d`) before `d` is rounded to f16 for storage, exactly as ggml does. Like gguf-py,
//! we evaluate `x * id + 8.5` as a multiply then an add; a C build of ggml that contracts it
//! into an FMA could round a rare element differently.

use super::{f16_at, f16_bytes};

const QK: usize = 32;

/// block_q4_0, 18 bytes: `d: f16`, `qs: [u8; 16]`. Element = (nibble - 8) * d.
#[inline(always)]
pub(super) fn dequantize_q4_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(18).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        nibbles(y, b[2..18].try_into().unwrap(), |q| {
            (i32::from(q) - 8) as f32 * d
        });
    }
}

/// y: [32]: element `j` from the low nibble of `qs[j]`, element `j + 16` from its high
/// nibble, each mapped by `f`. (The compiler vectorizes this across blocks, with scattered
/// stores; the AVX2 tiers use [`x86::dequantize_q4`] instead.)
#[inline(always)]
fn nibbles(y: &mut [f32], qs: &[u8; 16], f: impl Fn(u8) -> f32) {
    let (lo, hi) = y.split_at_mut(QK / 2);
    let lo: &mut [f32; 16] = lo.try_into().unwrap();
    let hi: &mut [f32; 16] = hi.try_into().unwrap();
    for j in 0..QK / 2 {
        lo[j] = f(qs[j] & 0x0F);
    }
    for j in 0..QK / 2 {
        hi[j] = f(qs[j] >> 4);
    }
}

/// block_q4_1, 20 bytes: `d: f16`, `m: f16`, `qs: [u8; 16]`. Element = nibble * d + m.
#[inline(always)]
pub(super) fn dequantize_q4_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(20).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        nibbles(y, b[4..20].try_into().unwrap(), |q| f32::from(q) * d + m);
    }
}

/// The 4-bit types with AVX2 intrinsics: one 16-byte load per block, nibbles widened eight
/// at a time, then the scalar code's multiply and add (no FMA, so the bits are the same).
#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use std::arch::x86_64::*;

    use super::{QK, f16_at};

    /// A Q4_0 (`min == false`) or Q4_1 (`min == true`) block's scale, minimum (0 for Q4_0)
    /// and 16 bytes of quants.
    #[inline(always)]
    fn q4_header(b: &[u8], min: bool) -> (f32, f32, &[u8]) {
        if min {
            (f16_at(b, 0), f16_at(b, 2), &b[4..20])
        } else {
            (f16_at(b, 0), 0.0, &b[2..18])
        }
    }

    /// Q4_0 (`min == false`: `(q - 8) · d`, 18-byte blocks) or Q4_1 (`min == true`:
    /// `q · d + m`, 20-byte blocks).
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    pub(in crate::quant) unsafe fn dequantize_q4(src: &[u8], dst: &mut [f32], min: bool) {
        let size = if min { 20 } else { 18 };
        for (b, y) in src.chunks_exact(size).zip(dst.chunks_exact_mut(QK)) {
            let (d, m, qs) = q4_header(b, min);
            let y: &mut [f32; QK] = y.try_into().unwrap();
            // SAFETY: qs is 16 bytes and y 32 floats; the loads and stores stay inside.
            unsafe {
                let q = _mm_loadu_si128(qs.as_ptr().cast());
                let mask = _mm_set1_epi8(0x0F);
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                let (vd, vm) = (_mm256_set1_ps(d), _mm256_set1_ps(m));
                let bias = _mm256_set1_epi32(if min { 0 } else { 8 });
                let halves = [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)];
                for (i, h) in halves.into_iter().enumerate() {
                    let x = _mm256_sub_epi32(_mm256_cvtepu8_epi32(h), bias);
                    let mut v = _mm256_mul_ps(_mm256_cvtepi32_ps(x), vd);
                    if min {
                        v = _mm256_add_ps(v, vm);
                    }
                    _mm256_storeu_ps(y.as_mut_ptr().add(8 * i), v);
                }
            }
        }
    }

    /// [`dequantize_q4`] 16 values per register: the same operations in the same order per
    /// value, so the same bits.
    ///
    /// # Safety
    /// The CPU supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::quant) unsafe fn dequantize_q4_avx512(src: &[u8], dst: &mut [f32], min: bool) {
        let size = if min { 20 } else { 18 };
        for (b, y) in src.chunks_exact(size).zip(dst.chunks_exact_mut(QK)) {
            let (d, m, qs) = q4_header(b, min);
            let y: &mut [f32; QK] = y.try_into().unwrap();
            // SAFETY: qs is 16 bytes and y 32 floats; the loads and stores stay inside.
            unsafe {
                let q = _mm_loadu_si128(qs.as_ptr().cast());
                let mask = _mm_set1_epi8(0x0F);
                // Low nibbles are values 0..16, high nibbles 16..32.
                let lo = _mm_and_si128(q, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                let (vd, vm) = (_mm512_set1_ps(d), _mm512_set1_ps(m));
                let bias = _mm512_set1_epi32(if min { 0 } else { 8 });
                for (i, h) in [lo, hi].into_iter().enumerate() {
                    let x = _mm512_sub_epi32(_mm512_cvtepu8_epi32(h), bias);
                    let mut v = _mm512_mul_ps(_mm512_cvtepi32_ps(x), vd);
                    if min {
                        v = _mm512_add_ps(v, vm);
                    }
                    _mm512_storeu_ps(y.as_mut_ptr().add(16 * i), v);
                }
            }
        }
    }
}

/// block_q5_0, 22 bytes: `d: f16`, `qh: [u8; 4]`, `qs: [u8; 16]`.
/// Element = (nibble | fifth bit << 4) - 16, times d.
#[inline(always)]
pub(super) fn dequantize_q5_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(22).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qs = &b[6..22];
        for j in 0..QK / 2 {
            let (x0, x1) = five_bit_pair(qs[j], qh, j);
            y[j] = (x0 - 16) as f32 * d;
            y[j + QK / 2] = (x1 - 16) as f32 * d;
        }
    }
}

/// block_q5_1, 24 bytes: `d: f16`, `m: f16`, `qh: [u8; 4]`, `qs: [u8; 16]`.
/// Element = (nibble | fifth bit << 4) * d + m.
#[inline(always)]
pub(super) fn dequantize_q5_1(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(24).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        let m = f16_at(b, 2);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let qs = &b[8..24];
        for j in 0..QK / 2 {
            let (x0, x1) = five_bit_pair(qs[j], qh, j);
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
    }
}

/// The 5-bit values of elements `j` and `j + 16`: nibbles from `q`, fifth bits from `qh`.
#[inline(always)]
fn five_bit_pair(q: u8, qh: u32, j: usize) -> (i32, i32) {
    let h0 = ((qh >> j) << 4) & 0x10;
    let h1 = (qh >> (j + 12)) & 0x10;
    (
        (u32::from(q & 0x0F) | h0) as i32,
        (u32::from(q >> 4) | h1) as i32,
    )
}

/// block_q8_0, 34 bytes: `d: f16`, `qs: [i8; 32]`. Element = q * d.
#[inline(always)]
pub(super) fn dequantize_q8_0(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(34).zip(dst.chunks_exact_mut(QK)) {
        let d = f16_at(b, 0);
        for (y, &q) in y.iter_mut().zip(&b[2..34]) {
            *y = f32::from(q as i8) * d;
        }
    }
}

/// The element of largest magnitude, with its sign (the first one on ties), as the symmetric
/// quantizers pick it so that it maps exactly to the most negative quant.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// The reciprocal scale, or 0 for an all-zero block (so every quant lands on the zero point).
fn inverse(d: f32) -> f32 {
    if d != 0.0 { 1.0 / d } else { 0.0 }
}

/// C's `(int8_t)x`: truncation toward zero. (Rust's `as` saturates where C is undefined; the
/// values here stay within range for finite input.)
fn trunc_i8(x: f32) -> i32 {
    i32::from(x as i8)
}

pub(super) fn quantize_q4_0(src: &[f32], dst: &mut Vec<u8>) {
    for x in src.chunks_exact(QK) {
        let d = signed_absmax(x) / -8.0;
        let id = inverse(d);
        dst.extend_from_slice(&f16_bytes(d));
        for j in 0..QK / 2 {
            let q0 = trunc_i8(x[j] * id + 8.5).min(15) as u8;
            let q1 = trunc_i8(x[j + QK / 2] * id + 8.5).min(15) as u8;
            dst.push(q0 | (q1 << 4));
        }
    }
}

pub(super) fn quantize_q4_1(src: &[f32], dst: &mut Vec<u8>) {
    for x in src.chunks_exact(QK) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = inverse(d);
        dst.extend_from_slice(&f16_bytes(d));
        dst.extend_from_slice(&f16_bytes(min));
        for j in 0..QK / 2 {
            let q0 = trunc_i8((x[j] - min) * id + 0.5).min(15) as u8;
            let q1 = trunc_i8((x[j + QK / 2] - min) * id + 0.5).min(15) as u8;
            dst.push(q0 | (q1 << 4));
        }
    }
}

pub(super) fn quantize_q5_0(src: &[f32], dst: &mut Vec<u8>) {
    for x in src.chunks_exact(QK) {
        let d = signed_absmax(x) / -16.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = trunc_i8(v * id + 16.5).min(31) as u8;
        }
        dst.extend_from_slice(&f16_bytes(d));
        push_five_bit(&q, dst);
    }
}

pub(super) fn quantize_q5_1(src: &[f32], dst: &mut Vec<u8>) {
    for x in src.chunks_exact(QK) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = inverse(d);
        let mut q = [0u8; QK];
        for (q, &v) in q.iter_mut().zip(x) {
            *q = trunc_i8((v - min) * id + 0.5).min(31) as u8;
        }
        dst.extend_from_slice(&f16_bytes(d));
        dst.extend_from_slice(&f16_bytes(min));
        push_five_bit(&q, dst);
    }
}

/// Appends `qh` and `qs` for 32 five-bit quants.
fn push_five_bit(q: &[u8; QK], dst: &mut Vec<u8>) {
    let mut qh = 0u32;
    for (j, &v) in q.iter().enumerate() {
        qh |= u32::from(v >> 4) << j;
    }
    dst.extend_from_slice(&qh.to_le_bytes());
    for j in 0..QK / 2 {
        dst.push((q[j] & 0x0F) | ((q[j + QK / 2] & 0x0F) << 4));
    }
}

pub(super) fn quantize_q8_0(src: &[f32], dst: &mut Vec<u8>) {
    for x in src.chunks_exact(QK) {
        let amax = x.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = inverse(d);
        dst.extend_from_slice(&f16_bytes(d));
        // `f32::round` rounds half away from zero, like C's `roundf`.
        dst.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
    }
}
