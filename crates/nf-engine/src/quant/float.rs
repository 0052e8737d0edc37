//! The unquantized element types: F32, F16 and BF16, one element per "block".

use half::{bf16, f16};

/// F32: 4 little-endian bytes per element, copied as they are (NaN payloads included).
#[inline(always)]
pub(super) fn dequantize_f32(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(4).zip(dst.iter_mut()) {
        *y = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// F16: IEEE binary16; widening to f32 is exact. (NaNs come out quiet, as with x86's F16C
/// conversion that ggml uses; their payload is kept.)
#[inline(always)]
pub(super) fn dequantize_f16(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// BF16: the upper 16 bits of an f32, so widening is a shift (ggml's `GGML_BF16_TO_FP32`).
/// We shift by hand because `half` sets the quiet bit of signalling NaNs and ggml does not.
#[inline(always)]
pub(super) fn dequantize_bf16(src: &[u8], dst: &mut [f32]) {
    for (b, y) in src.chunks_exact(2).zip(dst.iter_mut()) {
        *y = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
    }
}

pub(super) fn quantize_f32(src: &[f32], dst: &mut Vec<u8>) {
    for &x in src {
        dst.extend_from_slice(&x.to_le_bytes());
    }
}

/// Rounds to nearest, ties to even; overflow gives ±inf, as `GGML_FP32_TO_FP16` (F16C) does.
pub(super) fn quantize_f16(src: &[f32], dst: &mut Vec<u8>) {
    for &x in src {
        dst.extend_from_slice(&f16::from_f32(x).to_le_bytes());
    }
}

/// Rounds to nearest, ties to even, and quiets NaNs, as ggml's `ggml_compute_fp32_to_bf16`:
/// `half`'s conversion implements the same rule (a test holds it to ggml's formula).
pub(super) fn quantize_bf16(src: &[f32], dst: &mut Vec<u8>) {
    for &x in src {
        dst.extend_from_slice(&bf16::from_f32(x).to_le_bytes());
    }
}
