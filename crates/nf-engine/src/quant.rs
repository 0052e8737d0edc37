//! Dequantization of ggml block types to f32, and quantization of the simple ones.
//!
//! Every routine reproduces ggml's scalar reference code (`dequantize_row_*` and
//! `quantize_row_*_ref` in ggml-quants.c) operation for operation: the same f32 arithmetic in
//! the same order. The results are bit-identical to llama.cpp's gguf-py (`gguf.quants`), which
//! the golden tests check. In dequantization each element is its formula's exact value rounded
//! once to f32: an f16 scale (11 significant bits) times a sub-block scale (at most 8 bits) is
//! exact in f32, and so is its product with a quant in every type but Q6_K and Q8_K, which have
//! no further term. So neither evaluation order nor FMA contraction in a C build of ggml can
//! change a dequantized value.
//!
//! Block layouts are described beside each routine, fields in the order and with the sizes of
//! ggml's `block_*` structs. All multi-byte fields are little-endian.

mod float;
mod kquants;
mod legacy;

use crate::ggml::GgmlType;

/// Why a (de)quantization request was refused. Nothing here ever panics on bad lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    /// The element count is not a whole number of the type's blocks.
    #[error("{n_elements} {ty} elements are not a whole number of {block_size}-element blocks")]
    NotWholeBlocks {
        /// The tensor type.
        ty: GgmlType,
        /// Elements asked for.
        n_elements: usize,
        /// Elements per block of the type.
        block_size: usize,
    },
    /// The byte buffer does not hold exactly the blocks the element count needs.
    #[error("{n_elements} {ty} elements take {expected} bytes, but the buffer holds {actual}")]
    LengthMismatch {
        /// The tensor type.
        ty: GgmlType,
        /// Elements asked for.
        n_elements: usize,
        /// Bytes those elements take.
        expected: usize,
        /// Bytes the buffer holds.
        actual: usize,
    },
    /// We have no routine for this type in this direction.
    #[error("{op} of {ty} tensors is not supported")]
    Unsupported {
        /// The tensor type.
        ty: GgmlType,
        /// `quantize` or `dequantize`.
        op: &'static str,
    },
}

/// Whether [`dequantize`] handles `ty`.
pub fn can_dequantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        ty,
        F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q2K | Q3K | Q4K | Q5K | Q6K | Q8K
    )
}

/// Whether [`quantize`] handles `ty`.
pub fn can_quantize(ty: GgmlType) -> bool {
    use GgmlType::*;
    matches!(ty, F32 | F16 | BF16 | Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0)
}

/// Decodes `dst.len()` elements of type `ty` from `src` into `dst`.
///
/// `dst.len()` must be a whole number of blocks and `src` must hold exactly those blocks.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    if !can_dequantize(ty) {
        return Err(QuantError::Unsupported {
            ty,
            op: "dequantization",
        });
    }
    let expected = bytes_for(ty, dst.len())?;
    if src.len() != expected {
        return Err(QuantError::LengthMismatch {
            ty,
            n_elements: dst.len(),
            expected,
            actual: src.len(),
        });
    }
    dequantize_with(crate::cpu::isa(), ty, src, dst);
    Ok(())
}

/// The decoding loop of [`dequantize`] for tier `isa`; `ty`, `src` and `dst` already checked.
fn dequantize_with(isa: crate::cpu::Isa, ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1) && isa >= crate::cpu::Isa::Avx2 {
        let min = ty == GgmlType::Q4_1;
        if isa >= crate::cpu::Isa::Avx512 {
            // SAFETY: only tiers this CPU supports are passed; Avx512 includes AVX-512F.
            return unsafe { legacy::x86::dequantize_q4_avx512(src, dst, min) };
        }
        // SAFETY: as above; Avx2 and above include AVX2.
        return unsafe { legacy::x86::dequantize_q4(src, dst, min) };
    }
    dequantize_tier(isa, ty, src, dst)
}

crate::cpu::multiversion!(
    /// The per-block loops compiled for `isa`, so they vectorize for it.
    dequantize_tier => dequantize_generic(ty: GgmlType, src: &[u8], dst: &mut [f32])
);

#[inline(always)]
fn dequantize_generic(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    use GgmlType::*;
    match ty {
        F32 => float::dequantize_f32(src, dst),
        F16 => float::dequantize_f16(src, dst),
        BF16 => float::dequantize_bf16(src, dst),
        Q4_0 => legacy::dequantize_q4_0(src, dst),
        Q4_1 => legacy::dequantize_q4_1(src, dst),
        Q5_0 => legacy::dequantize_q5_0(src, dst),
        Q5_1 => legacy::dequantize_q5_1(src, dst),
        Q8_0 => legacy::dequantize_q8_0(src, dst),
        Q2K => kquants::dequantize_q2_k(src, dst),
        Q3K => kquants::dequantize_q3_k(src, dst),
        Q4K => kquants::dequantize_q4_k(src, dst),
        Q5K => kquants::dequantize_q5_k(src, dst),
        Q6K => kquants::dequantize_q6_k(src, dst),
        Q8K => kquants::dequantize_q8_k(src, dst),
        Q8_1 | I8 | I16 | I32 | I64 | F64 => unreachable!("refused by can_dequantize"),
    }
}

/// Decodes `n_elements` elements of type `ty` from `src` into a new vector.
pub fn dequantize_to_vec(
    ty: GgmlType,
    src: &[u8],
    n_elements: usize,
) -> Result<Vec<f32>, QuantError> {
    // Check the lengths before allocating, so a bogus element count cannot drive a huge
    // allocation.
    let expected = bytes_for(ty, n_elements)?;
    if src.len() != expected {
        return Err(QuantError::LengthMismatch {
            ty,
            n_elements,
            expected,
            actual: src.len(),
        });
    }
    let mut out = vec![0.0f32; n_elements];
    dequantize(ty, src, &mut out)?;
    Ok(out)
}

/// Encodes `src` as type `ty` and appends the blocks to `dst` (appending lets a caller write
/// several rows into one buffer). `src.len()` must be a whole number of blocks.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut Vec<u8>) -> Result<(), QuantError> {
    if !can_quantize(ty) {
        return Err(QuantError::Unsupported {
            ty,
            op: "quantization",
        });
    }
    dst.reserve(bytes_for(ty, src.len())?);
    use GgmlType::*;
    match ty {
        F32 => float::quantize_f32(src, dst),
        F16 => float::quantize_f16(src, dst),
        BF16 => float::quantize_bf16(src, dst),
        Q4_0 => legacy::quantize_q4_0(src, dst),
        Q4_1 => legacy::quantize_q4_1(src, dst),
        Q5_0 => legacy::quantize_q5_0(src, dst),
        Q5_1 => legacy::quantize_q5_1(src, dst),
        Q8_0 => legacy::quantize_q8_0(src, dst),
        _ => unreachable!("refused by can_quantize"),
    }
    Ok(())
}

/// Bytes that `n_elements` of `ty` occupy, or why they cannot.
fn bytes_for(ty: GgmlType, n_elements: usize) -> Result<usize, QuantError> {
    let block_size = ty.block_size();
    if !n_elements.is_multiple_of(block_size) {
        return Err(QuantError::NotWholeBlocks {
            ty,
            n_elements,
            block_size,
        });
    }
    // A usize element count of whole blocks can only overflow the byte count on a
    // 32-bit target with an absurd request; report it as a length mismatch.
    (n_elements / block_size)
        .checked_mul(ty.type_size())
        .ok_or(QuantError::LengthMismatch {
            ty,
            n_elements,
            expected: usize::MAX,
            actual: 0,
        })
}

/// Reads the little-endian f16 at `b[at..at + 2]` as f32 (ggml's `GGML_FP16_TO_FP32`, exact).
#[inline(always)]
pub(crate) fn f16_at(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Widens f16 bits to f32, exactly, as x86's F16C does (NaNs come out quiet with their
/// payload). Plain integer and float arithmetic that inlines into the decoding loops, where
/// `half`'s conversion was an out-of-line call with a run-time feature check per block.
///
/// Shifting the 15 magnitude bits up by 13 lines the f16 exponent and mantissa up with
/// f32's; the result is the value times `2^-112` (subnormal f16s land on f32 subnormals of
/// the same mantissa), so one exact multiplication by `2^112` fixes it. Infinities and NaNs,
/// whose f16 exponent is all ones, get f32's all-ones exponent instead.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let mag = u32::from(h & 0x7fff) << 13;
    let bits = if h & 0x7c00 == 0x7c00 {
        let quiet = if h & 0x03ff != 0 { 0x0040_0000 } else { 0 };
        0x7f80_0000 | quiet | mag
    } else {
        (f32::from_bits(mag) * f32::from_bits(0x7780_0000)).to_bits()
    };
    f32::from_bits(sign | bits)
}

/// Rounds `x` to f16 (ggml's `GGML_FP32_TO_FP16`: round to nearest, ties to even) and returns
/// its little-endian bytes.
fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_matches_half_for_every_bit_pattern() {
        for h in 0..=u16::MAX {
            let want = half::f16::from_bits(h).to_f32();
            assert_eq!(f16_to_f32(h).to_bits(), want.to_bits(), "f16 bits {h:#06x}");
        }
    }

    #[test]
    fn every_tier_decodes_the_same_bits() {
        use GgmlType::*;
        // Random bytes make arbitrary (also non-finite) scales: the decoders must agree on
        // all of them, so compare bits.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut byte = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        };
        for ty in [
            F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K, Q8K,
        ] {
            let n = 2 * 256;
            let src: Vec<u8> = (0..bytes_for(ty, n).unwrap()).map(|_| byte()).collect();
            let mut want = vec![0.0f32; n];
            dequantize_with(crate::cpu::Isa::Baseline, ty, &src, &mut want);
            for isa in crate::cpu::Isa::available() {
                let mut got = vec![0.0f32; n];
                dequantize_with(isa, ty, &src, &mut got);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{ty} on {isa}");
            }
        }
    }
}
