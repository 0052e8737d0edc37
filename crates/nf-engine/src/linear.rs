//! Linear layers over weights that are either f32 or ggml quantized blocks:
//! `out[n, rows] = x[n, cols] · Wᵀ` with `W` stored `[rows, cols]` (`[out, in]`).
//!
//! Quantized weights stay quantized in memory (a Q4_1 model takes a sixth of its f32 size)
//! and are dequantized on the fly, a row or a tile of rows at a time:
//! - few tokens (decoding): each row is dequantized into an L1-resident buffer and dotted
//!   with every token, so the weight bytes are read once per call;
//! - many tokens (prompts, training): tiles of rows are dequantized into an f32 panel and
//!   multiplied with the f32 GEMM, so the dequantization cost is amortized over the tokens.

use std::cell::Cell;

use rayon::prelude::*;

use crate::Precision;
use crate::ggml::GgmlType;
use crate::matmul::{gemm_accumulate, matmul, matmul_backward_naive, matmul_naive};
use crate::qdot::dot_rows;
use crate::quant::{QuantError, dequantize};

/// Token counts at or below this use the row-at-a-time path.
const FEW_TOKENS: usize = 8;

/// Weight storage.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightData {
    /// Plain f32 values, row-major.
    F32(Vec<f32>),
    /// Row-major ggml blocks; every row is a whole number of blocks.
    Quant {
        /// The tensor type.
        ty: GgmlType,
        /// The blocks, row after row.
        bytes: Vec<u8>,
    },
}

/// A `[rows, cols]` weight matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// The values.
    pub data: WeightData,
}

impl Weight {
    /// A weight holding `v` (`rows · cols` values, row-major).
    pub fn from_f32(rows: usize, cols: usize, v: Vec<f32>) -> Weight {
        assert_eq!(v.len(), rows * cols, "weight is not [rows, cols]");
        Weight {
            rows,
            cols,
            data: WeightData::F32(v),
        }
    }

    /// Wraps quantized rows, checking that the bytes hold exactly `rows` whole rows.
    pub fn from_quant(
        rows: usize,
        cols: usize,
        ty: GgmlType,
        bytes: Vec<u8>,
    ) -> Result<Weight, QuantError> {
        // A type we cannot decode (F64, I32 in a hostile GGUF) is refused here, so the
        // rows are always decodable later (found by nf-fuzz: it panicked at first use).
        if !crate::quant::can_dequantize(ty) {
            return Err(QuantError::Unsupported {
                ty,
                op: "dequantization",
            });
        }
        let bs = ty.block_size();
        if !cols.is_multiple_of(bs) {
            return Err(QuantError::NotWholeBlocks {
                ty,
                n_elements: cols,
                block_size: bs,
            });
        }
        let expected = rows * (cols / bs) * ty.type_size();
        if bytes.len() != expected {
            return Err(QuantError::LengthMismatch {
                ty,
                n_elements: rows * cols,
                expected,
                actual: bytes.len(),
            });
        }
        if ty == GgmlType::F32 {
            let v = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            return Ok(Weight::from_f32(rows, cols, v));
        }
        Ok(Weight {
            rows,
            cols,
            data: WeightData::Quant { ty, bytes },
        })
    }

    /// The element type (`F32` for f32 weights).
    pub fn ggml_type(&self) -> GgmlType {
        match &self.data {
            WeightData::F32(_) => GgmlType::F32,
            WeightData::Quant { ty, .. } => *ty,
        }
    }

    /// Bytes of one stored row.
    fn row_bytes(&self) -> usize {
        match &self.data {
            WeightData::F32(_) => self.cols * 4,
            WeightData::Quant { ty, .. } => self.cols / ty.block_size() * ty.type_size(),
        }
    }

    /// Writes rows `r0..r0 + dst.len() / cols` as f32 into `dst`.
    pub fn rows_to_f32(&self, r0: usize, dst: &mut [f32]) {
        let n_rows = dst.len() / self.cols;
        assert!(r0 + n_rows <= self.rows);
        match &self.data {
            WeightData::F32(v) => {
                dst.copy_from_slice(&v[r0 * self.cols..(r0 + n_rows) * self.cols])
            }
            WeightData::Quant { ty, bytes } => {
                let rb = self.row_bytes();
                dequantize(*ty, &bytes[r0 * rb..(r0 + n_rows) * rb], dst)
                    .expect("rows hold whole blocks (checked at construction)");
            }
        }
    }

    /// The whole matrix as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            WeightData::F32(v) => v.clone(),
            WeightData::Quant { .. } => {
                let mut out = vec![0.0; self.rows * self.cols];
                self.rows_to_f32(0, &mut out);
                out
            }
        }
    }

    /// Splits into consecutive blocks of `counts` rows each (fused projections such as
    /// Phi-3's qkv), without dequantizing.
    pub fn split_rows(self, counts: &[usize]) -> Vec<Weight> {
        assert_eq!(
            counts.iter().sum::<usize>(),
            self.rows,
            "split does not cover every row"
        );
        let rb = self.row_bytes();
        let mut start = 0;
        let mut parts = Vec::with_capacity(counts.len());
        for &r in counts {
            let data = match &self.data {
                WeightData::F32(v) => {
                    WeightData::F32(v[start * self.cols..(start + r) * self.cols].to_vec())
                }
                WeightData::Quant { ty, bytes } => WeightData::Quant {
                    ty: *ty,
                    bytes: bytes[start * rb..(start + r) * rb].to_vec(),
                },
            };
            parts.push(Weight {
                rows: r,
                cols: self.cols,
                data,
            });
            start += r;
        }
        parts
    }

    /// Bytes the weight occupies in memory.
    pub fn size_bytes(&self) -> usize {
        self.rows * self.row_bytes()
    }
}

/// out: [n, w.rows], x: [n, w.cols]. Overwrites `out`.
pub fn linear(out: &mut [f32], x: &[f32], w: &Weight) {
    let (rows, cols) = (w.rows, w.cols);
    let n = x.len() / cols.max(1);
    assert_eq!(x.len(), n * cols, "linear: x is not [n, cols]");
    assert_eq!(out.len(), n * rows, "linear: out is not [n, rows]");
    match &w.data {
        WeightData::F32(v) => matmul(out, x, v, n, cols, rows),
        WeightData::Quant { .. } if n <= FEW_TOKENS => linear_rows(out, x, w, n),
        WeightData::Quant { .. } => linear_tiles(out, x, w, n),
    }
}

/// [`linear`] in the given precision; in bf16 the weight's rows (of any type) are
/// dequantized straight into the packed bf16 panel of [`crate::gemm_bf16::linear_bf16`].
pub fn linear_in(precision: Precision, out: &mut [f32], x: &[f32], w: &Weight) {
    match precision {
        Precision::F32 => linear(out, x, w),
        Precision::Bf16 => crate::gemm_bf16::linear_bf16(out, x, w),
    }
}

/// Few tokens: dequantize each row once, dot it with every token.
fn linear_rows(out: &mut [f32], x: &[f32], w: &Weight, n: usize) {
    let rows = w.rows;
    // Work on outᵀ ([rows, n]) so each task owns a contiguous block of rows.
    let mut out_t = vec![0.0f32; rows * n];
    let rows_per_task = (rows / (4 * crate::cpu::threads())).clamp(16, 256);
    out_t
        .par_chunks_mut(rows_per_task * n)
        .enumerate()
        .for_each_init(Vec::new, |buf, (t, chunk)| {
            dot_rows(chunk, w, t * rows_per_task, x, n, buf);
        });
    for (j, o) in out_t.chunks_exact(n).enumerate() {
        for (tok, &v) in o.iter().enumerate() {
            out[tok * rows + j] = v;
        }
    }
}

/// Many tokens: dequantize tiles of rows and multiply each with GEMM.
fn linear_tiles(out: &mut [f32], x: &[f32], w: &Weight, n: usize) {
    let (rows, cols) = (w.rows, w.cols);
    // A 256 KiB f32 panel per tile: large enough for efficient GEMM, small enough for L2.
    let tile = (65_536 / cols.max(1)).clamp(16, 512).min(rows);
    let n_tiles = rows.div_ceil(tile);
    let tiles: Vec<Vec<f32>> = (0..n_tiles)
        .into_par_iter()
        .map_init(Vec::new, |panel: &mut Vec<f32>, t| {
            let r0 = t * tile;
            let tr = tile.min(rows - r0);
            panel.resize(tr * cols, 0.0);
            w.rows_to_f32(r0, panel);
            let mut o = vec![0.0f32; n * tr];
            crate::matmul::matmul_single_thread(&mut o, x, panel, n, cols, tr);
            o
        })
        .collect();
    for (t, o) in tiles.iter().enumerate() {
        let r0 = t * tile;
        let tr = o.len() / n;
        for tok in 0..n {
            out[tok * rows + r0..tok * rows + r0 + tr]
                .copy_from_slice(&o[tok * tr..(tok + 1) * tr]);
        }
    }
}

/// dx: [n, w.cols] (+=), dy: [n, w.rows]. dx += dy · W for a frozen Weight of any type (F32
/// or any ggml type [`dequantize`] handles).
///
/// The gradient of `linear` with respect to its input, for training adapters on a frozen,
/// possibly quantized base model. The rows of `W` are the depth of this product, so the
/// quantized path dequantizes tiles of rows into an f32 panel and accumulates
/// `dx += dy[:, tile] · panel` with GEMM, tile after tile. The tiles are added in a fixed
/// order, so the result does not depend on thread scheduling.
pub fn linear_backward_dx(dx: &mut [f32], dy: &[f32], w: &Weight) {
    let (rows, cols) = (w.rows, w.cols);
    let n = dy.len() / rows.max(1);
    assert_eq!(
        dy.len(),
        n * rows,
        "linear_backward_dx: dy is not [n, rows]"
    );
    assert_eq!(
        dx.len(),
        n * cols,
        "linear_backward_dx: dx is not [n, cols]"
    );
    let threads = crate::matmul::threads_for(n * rows * cols);
    match &w.data {
        // dx[n, cols] += dy[n, rows] · W[rows, cols], both row-major.
        WeightData::F32(v) => {
            gemm_accumulate(dx, n, cols, rows, (dy, rows, 1), (v, cols, 1), threads)
        }
        WeightData::Quant { .. } => linear_backward_dx_tiles(dx, dy, w, n, threads),
    }
}

/// [`linear_backward_dx`] in the given precision.
pub fn linear_backward_dx_in(precision: Precision, dx: &mut [f32], dy: &[f32], w: &Weight) {
    match precision {
        Precision::F32 => linear_backward_dx(dx, dy, w),
        Precision::Bf16 => crate::gemm_bf16::linear_backward_dx_bf16(dx, dy, w),
    }
}

thread_local! {
    /// The dequantized panel of [`linear_backward_dx_tiles`], kept between calls so a
    /// training step does not allocate it once per layer.
    static PANEL: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Quantized weights: `dx += dy[:, tile] · panel(tile)` for consecutive tiles of W's rows.
fn linear_backward_dx_tiles(dx: &mut [f32], dy: &[f32], w: &Weight, n: usize, threads: usize) {
    let (rows, cols) = (w.rows, w.cols);
    // A 1 MiB panel: every tile is one more pass over dx, so tiles are larger than the
    // forward's, while the panel still fits in L2 alongside gemm's packed blocks.
    let tile = (262_144 / cols.max(1)).clamp(16, 1024).min(rows);
    // The buffer is taken out of the thread-local rather than borrowed: the rayon calls
    // below may run another linear_backward_dx on this thread (work stealing), which then
    // simply finds an empty buffer and allocates its own.
    let mut panel = PANEL.take();
    for r0 in (0..rows).step_by(tile.max(1)) {
        let tr = tile.min(rows - r0);
        panel.resize(tr * cols, 0.0);
        let panel = &mut panel[..tr * cols];
        // Dequantize the tile in parallel, a contiguous run of whole rows per task.
        let rows_per_task = tr.div_ceil(threads);
        panel
            .par_chunks_mut(rows_per_task * cols)
            .enumerate()
            .for_each(|(i, chunk)| w.rows_to_f32(r0 + i * rows_per_task, chunk));
        // dy[:, r0..r0 + tr] is dy from element r0 on, read with dy's row stride.
        gemm_accumulate(
            dx,
            n,
            cols,
            tr,
            (&dy[r0..], rows, 1),
            (panel, cols, 1),
            threads,
        );
    }
    PANEL.set(panel);
}

/// Reference for [`linear_backward_dx`]: dequantize everything, then the naive loops.
pub fn linear_backward_dx_naive(dx: &mut [f32], dy: &[f32], w: &Weight) {
    let n = dy.len() / w.rows;
    let x_unused = vec![0.0; n * w.cols];
    matmul_backward_naive(
        Some(dx),
        None,
        dy,
        &x_unused,
        &w.to_f32(),
        n,
        w.cols,
        w.rows,
    );
}

/// Reference for [`linear`]: dequantize everything, then the naive triple loop.
pub fn linear_naive(out: &mut [f32], x: &[f32], w: &Weight) {
    let n = x.len() / w.cols;
    matmul_naive(out, x, &w.to_f32(), n, w.cols, w.rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, random_weight};

    #[test]
    fn linear_matches_naive_for_every_path_and_type() {
        let mut rng = Rng::new(9);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_1,
        ] {
            for &(n, rows, cols) in &[
                (1, 37, 64),
                (3, 100, 96),
                (8, 64, 128),
                (9, 130, 64),
                (40, 300, 256),
            ] {
                let w = random_weight(ty, rows, cols, &mut rng);
                let x = rng.vec(n * cols);
                let mut fast = vec![f32::NAN; n * rows];
                let mut slow = vec![0.0; n * rows];
                linear(&mut fast, &x, &w);
                linear_naive(&mut slow, &x, &w);
                assert_close(&fast, &slow, 2e-5 * (cols as f32).sqrt());
            }
        }
    }

    #[test]
    fn from_quant_checks_lengths() {
        assert!(Weight::from_quant(2, 32, GgmlType::Q8_0, vec![0; 68]).is_ok());
        assert!(Weight::from_quant(2, 32, GgmlType::Q8_0, vec![0; 67]).is_err());
        assert!(Weight::from_quant(2, 48, GgmlType::Q8_0, vec![0; 102]).is_err());
    }

    #[test]
    fn linear_backward_dx_matches_naive_for_every_type() {
        let mut rng = Rng::new(10);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::BF16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
        ] {
            // (5000, 64) has several tiles, the last one partial.
            for &(n, rows, cols) in &[(1, 37, 64), (9, 130, 64), (40, 300, 256), (3, 5000, 64)] {
                let w = random_weight(ty, rows, cols, &mut rng);
                let dy = rng.vec(n * rows);
                let dx0 = rng.vec(n * cols);
                let (mut fast, mut slow) = (dx0.clone(), dx0.clone());
                linear_backward_dx(&mut fast, &dy, &w);
                linear_backward_dx_naive(&mut slow, &dy, &w);
                assert_close(&fast, &slow, 2e-5 * (rows as f32).sqrt());
            }
        }
    }
}
