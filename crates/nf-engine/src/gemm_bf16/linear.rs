//! The products of a linear layer in bf16 with f32 sums, on the GEMM above: `x · Wᵀ`
//! (forward), `dy · W` (dX) and the weight gradient, for f32, quantized and packed
//! weights, with an unmerged LoRA term folded into the same pass where there is one.

use super::{PackedWeight, Rhs, Term, gemm_bf16, gemm_bf16_sum};
use crate::cpu;
use crate::linear::{Weight, WeightData};
use crate::matmul::threads_for;

/// out: [n, m] = x: [n, k] · w: [m, k]ᵀ in bf16 with f32 sums. Overwrites `out`.
pub fn matmul_bf16(out: &mut [f32], x: &[f32], w: &[f32], n: usize, k: usize, m: usize) {
    assert_eq!(x.len(), n * k, "matmul_bf16: x is not [n, k]");
    assert_eq!(w.len(), m * k, "matmul_bf16: w is not [m, k]");
    gemm_bf16(
        cpu::isa(),
        out,
        n,
        m,
        k,
        (x, k, 1),
        Rhs::Strided((w, 1, k)),
        false,
        threads_for(n * m * k),
    );
}

/// dx: [n, k] (+=), dw: [m, k] (+=), dy: [n, m], x: [n, k], w: [m, k]: the gradient of
/// [`matmul_bf16`], each product in bf16 with f32 sums (`dx += dy · w`, `dw += dyᵀ · x`).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward_bf16(
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    n: usize,
    k: usize,
    m: usize,
) {
    assert_eq!(dy.len(), n * m, "matmul_backward_bf16: dy is not [n, m]");
    assert_eq!(x.len(), n * k, "matmul_backward_bf16: x is not [n, k]");
    assert_eq!(w.len(), m * k, "matmul_backward_bf16: w is not [m, k]");
    let threads = threads_for(n * m * k);
    let isa = cpu::isa();
    if let Some(dx) = dx {
        gemm_bf16(
            isa,
            dx,
            n,
            k,
            m,
            (dy, m, 1),
            Rhs::Strided((w, k, 1)),
            true,
            threads,
        );
    }
    if let Some(dw) = dw {
        gemm_bf16(
            isa,
            dw,
            m,
            k,
            n,
            (dy, 1, m),
            Rhs::Strided((x, k, 1)),
            true,
            threads,
        );
    }
}

/// out: [n, w.rows] = x: [n, w.cols] · Wᵀ for a frozen weight of any type, its rows
/// dequantized straight into the packed bf16 panel. Overwrites `out`.
pub fn linear_bf16(out: &mut [f32], x: &[f32], w: &Weight) {
    linear_lora_bf16(out, x, w, None);
}

/// A frozen weight as a product's rhs: `Wᵀ` (`transposed`, depth = W's columns: the
/// forward) or `W` (depth = W's rows: dx). An f32 weight is read in place through its
/// strides; any other type is decoded into the panel a row at a time.
fn frozen_rhs(w: &Weight, transposed: bool) -> Rhs<'_> {
    match (&w.data, transposed) {
        (WeightData::F32(v), true) => Rhs::Strided((v, 1, w.cols)),
        (WeightData::F32(v), false) => Rhs::Strided((v, w.cols, 1)),
        (WeightData::Quant { .. }, true) => Rhs::WeightT(w),
        (WeightData::Quant { .. }, false) => Rhs::Weight(w),
    }
}

/// A low-rank term beside a frozen product: `h: [n, r]` and its factor `m`, row-major.
/// In the forward `m` is B `[w.rows, r]` (the term is `h · Bᵀ`), in the backward A
/// `[r, w.cols]` (the term is `dh · A`).
#[derive(Clone, Copy)]
pub struct LowRank<'a> {
    /// The low-rank activations `[n, r]` (`x · Aᵀ` forward, `dy · B` backward).
    pub h: &'a [f32],
    /// The other low-rank factor, as the doc above says.
    pub m: &'a [f32],
    /// The rank.
    pub r: usize,
}

/// out: [n, w.rows] = x · Wᵀ (+ h · Bᵀ): a frozen linear with a LoRA adapter's up
/// projection packed beside it along the depth, so the adapter costs no second pass over
/// `out`. Overwrites `out`.
pub fn linear_lora_bf16(out: &mut [f32], x: &[f32], w: &Weight, lora: Option<LowRank>) {
    let n = x.len() / w.cols.max(1);
    assert_eq!(x.len(), n * w.cols, "linear_bf16: x is not [n, cols]");
    let threads = threads_for(n * w.rows * w.cols);
    let mut terms = vec![Term {
        lhs: (x, w.cols, 1),
        rhs: frozen_rhs(w, true),
        depth: w.cols,
    }];
    if let Some(LowRank { h, m, r }) = lora {
        assert_eq!(h.len(), n * r, "linear_lora_bf16: h is not [n, r]");
        assert_eq!(m.len(), w.rows * r, "linear_lora_bf16: B is not [rows, r]");
        // Bᵀ's element (p, j) is B[j · r + p].
        terms.push(Term {
            lhs: (h, r, 1),
            rhs: Rhs::Strided((m, 1, r)),
            depth: r,
        });
    }
    gemm_bf16_sum(cpu::isa(), out, n, w.rows, &terms, false, threads);
}

/// dx: [n, w.cols] (+=) from dy: [n, w.rows]: `dx += dy · W` for a frozen weight of any type.
pub fn linear_backward_dx_bf16(dx: &mut [f32], dy: &[f32], w: &Weight) {
    linears_backward_dx_bf16(dx, &[(dy, w)], &[]);
}

/// dx: [n, cols] (+=) `Σ dyᵢ · Wᵢ + Σ dhⱼ · Aⱼ`: the input gradient of frozen linears that
/// read the same input (q, k and v; gate and up) and of their adapters' down projections
/// (`LowRank { h: dh, m: A, r }`), all packed along one depth: one pass over `dx` and one
/// parallel product instead of one per matrix.
pub fn linears_backward_dx_bf16(dx: &mut [f32], parts: &[(&[f32], &Weight)], lora: &[LowRank]) {
    let Some(&(dy0, w0)) = parts.first() else {
        return;
    };
    let cols = w0.cols;
    let n = dy0.len() / w0.rows.max(1);
    assert_eq!(
        dx.len(),
        n * cols,
        "linears_backward_dx_bf16: dx is not [n, cols]"
    );
    let mut terms = Vec::with_capacity(parts.len() + lora.len());
    let mut multiply_adds = 0;
    for &(dy, w) in parts {
        assert_eq!(
            w.cols, cols,
            "linears_backward_dx_bf16: weights differ in columns"
        );
        assert_eq!(
            dy.len(),
            n * w.rows,
            "linears_backward_dx_bf16: dy is not [n, rows]"
        );
        terms.push(Term {
            lhs: (dy, w.rows, 1),
            rhs: frozen_rhs(w, false),
            depth: w.rows,
        });
        multiply_adds += n * w.rows * cols;
    }
    for &LowRank { h, m, r } in lora {
        assert_eq!(h.len(), n * r, "linears_backward_dx_bf16: dh is not [n, r]");
        assert_eq!(
            m.len(),
            r * cols,
            "linears_backward_dx_bf16: A is not [r, cols]"
        );
        terms.push(Term {
            lhs: (h, r, 1),
            rhs: Rhs::Strided((m, cols, 1)),
            depth: r,
        });
    }
    let threads = threads_for(multiply_adds);
    gemm_bf16_sum(cpu::isa(), dx, n, cols, &terms, true, threads);
}

/// out: [n, w.rows] = x: [n, w.cols] · Wᵀ for a trainable weight kept packed. Overwrites
/// `out`. Same bits as [`matmul_bf16`] on the matrix it was packed from.
pub fn linear_packed(out: &mut [f32], x: &[f32], w: &PackedWeight) {
    let n = x.len() / w.cols.max(1);
    assert_eq!(x.len(), n * w.cols, "linear_packed: x is not [n, cols]");
    let threads = threads_for(n * w.rows * w.cols);
    let lhs = (x, w.cols, 1);
    let rhs = Rhs::PackedT(w);
    gemm_bf16(cpu::isa(), out, n, w.rows, w.cols, lhs, rhs, false, threads);
}

/// dx: [n, w.cols] (+=) from dy: [n, w.rows]: `dx += dy · W` for a packed weight.
pub fn linear_backward_dx_packed(dx: &mut [f32], dy: &[f32], w: &PackedWeight) {
    let n = dy.len() / w.rows.max(1);
    assert_eq!(
        dy.len(),
        n * w.rows,
        "linear_backward_dx_packed: dy is not [n, rows]"
    );
    let threads = threads_for(n * w.rows * w.cols);
    let lhs = (dy, w.rows, 1);
    let rhs = Rhs::Packed(w);
    gemm_bf16(cpu::isa(), dx, n, w.cols, w.rows, lhs, rhs, true, threads);
}
