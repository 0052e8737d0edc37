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
        ty: GgmlType,
        n_elements: usize,
        block_size: usize,
    },
    /// The byte buffer does not hold exactly the blocks the element count needs.
    #[error("{n_elements} {ty} elements take {expected} bytes, but the buffer holds {actual}")]
    LengthMismatch {
        ty: GgmlType,
        n_elements: usize,
        expected: usize,
        actual: usize,
    },
    /// We have no routine for this type in this direction.
    #[error("{op} of {ty} tensors is not supported")]
    Unsupported { ty: GgmlType, op: &'static str },
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
    Ok(())
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
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Rounds `x` to f16 (ggml's `GGML_FP32_TO_FP16`: round to nearest, ties to even) and returns
/// its little-endian bytes.
fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}
