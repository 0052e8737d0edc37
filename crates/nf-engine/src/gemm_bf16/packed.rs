//! Trainable weights kept packed in bf16 between steps.
//!
//! A linear layer reads its `[rows, cols]` weight W twice per step: as `Wᵀ` in the forward
//! (`y = x · Wᵀ`) and as `W` in the backward (`dx = dy · W`). Packing it into the GEMM's
//! bf16 panels for each product re-reads the f32 matrix from memory twice per step, which
//! was a sixth of a full fine-tuning step's GEMM time. A [`PackedWeight`] holds both panels;
//! [`crate::optim::adamw_step_repack`] rewrites them block by block right after updating
//! each block of W, while it is still in cache, so the products read only bf16.

use rayon::prelude::*;

use super::{NR, SendPtr, geometry, interleave_rows, pairs_from_row};
use crate::cpu::multiversion;
use crate::cpu::{self, Isa};

/// Rows of W per packing block: one column tile of the `Wᵀ` panel, and `NR / 2` pair rows of
/// the `W` panel, so blocks write disjoint parts of both.
pub const PACK_ROWS: usize = NR;

/// W `[rows, cols]` as the two rhs panels of [`super::gemm_bf16`].
#[derive(Debug, Clone)]
pub struct PackedWeight {
    /// The tier whose panel geometry this was packed for (AMX pads the depth to 16 pairs).
    isa: Isa,
    /// Output features (W's rows).
    pub rows: usize,
    /// Input features (W's columns).
    pub cols: usize,
    /// `Wᵀ` (depth = cols, columns = rows): `[rows / NR tiles][cols_kpt][NR]`.
    t: Vec<u32>,
    /// `W` (depth = rows, columns = cols): `[cols / NR tiles][rows_kpt][NR]`.
    w: Vec<u32>,
}

impl PackedWeight {
    /// Zeroed panels for a `[rows, cols]` matrix (padding stays zero; [`Self::pack`] fills
    /// the rest).
    pub fn new(rows: usize, cols: usize) -> PackedWeight {
        PackedWeight::for_isa(cpu::isa(), rows, cols)
    }

    /// [`Self::new`] for the panel geometry of tier `isa` (tests pack for every tier).
    pub fn for_isa(isa: Isa, rows: usize, cols: usize) -> PackedWeight {
        let align = geometry(isa).1;
        let (t_kpt, w_kpt) = (kpt(cols, align), kpt(rows, align));
        PackedWeight {
            isa,
            rows,
            cols,
            t: vec![0; rows.div_ceil(NR) * t_kpt * NR],
            w: vec![0; cols.div_ceil(NR) * w_kpt * NR],
        }
    }

    /// Packs all of `w` (`[rows, cols]`), in parallel over blocks.
    pub fn pack(&mut self, w: &[f32]) {
        assert_eq!(
            w.len(),
            self.rows * self.cols,
            "PackedWeight: w is not [rows, cols]"
        );
        let block = PACK_ROWS * self.cols.max(1);
        let writer = self.writer();
        w.par_chunks(block)
            .enumerate()
            .for_each(|(b, block)| writer.pack_block(b, block));
    }

    /// A handle that packs blocks from several threads at once.
    pub fn writer(&mut self) -> BlockWriter<'_> {
        BlockWriter {
            isa: self.isa,
            rows: self.rows,
            cols: self.cols,
            t_kpt: self.t_kpt(),
            w_kpt: self.w_kpt(),
            t: SendPtr(self.t.as_mut_ptr()),
            w: SendPtr(self.w.as_mut_ptr()),
            _panels: std::marker::PhantomData,
        }
    }

    fn t_kpt(&self) -> usize {
        kpt(self.cols, geometry(self.isa).1)
    }

    fn w_kpt(&self) -> usize {
        kpt(self.rows, geometry(self.isa).1)
    }

    /// The `Wᵀ` panel, for a product of `depth = cols` on tier `isa`.
    pub(super) fn panel_t(&self, isa: Isa, kpt_wanted: usize) -> &[u32] {
        self.check(isa, kpt_wanted, self.t_kpt());
        &self.t
    }

    /// The `W` panel, for a product of `depth = rows` on tier `isa`.
    pub(super) fn panel_w(&self, isa: Isa, kpt_wanted: usize) -> &[u32] {
        self.check(isa, kpt_wanted, self.w_kpt());
        &self.w
    }

    fn check(&self, isa: Isa, wanted: usize, have: usize) {
        assert!(
            geometry(isa) == geometry(self.isa) && wanted == have,
            "PackedWeight packed for {} used on {isa}",
            self.isa
        );
    }
}

/// Pairs per packed depth row: the depth halved, rounded up to the tier's multiple.
fn kpt(depth: usize, align: usize) -> usize {
    depth.div_ceil(2).next_multiple_of(align)
}

/// Writes blocks of a [`PackedWeight`]; borrows it mutably for its lifetime.
pub struct BlockWriter<'a> {
    isa: Isa,
    rows: usize,
    cols: usize,
    t_kpt: usize,
    w_kpt: usize,
    t: SendPtr<u32>,
    w: SendPtr<u32>,
    _panels: std::marker::PhantomData<&'a mut PackedWeight>,
}

impl BlockWriter<'_> {
    /// Packs block `b`: W's rows `b·PACK_ROWS..`, given as `block` (`[≤ PACK_ROWS, cols]`,
    /// the rows that exist). Blocks may be packed concurrently, each once.
    pub fn pack_block(&self, b: usize, block: &[f32]) {
        let cols = self.cols;
        let n = block.len() / cols.max(1);
        assert!(
            block.len() == n * cols && b * PACK_ROWS + n <= self.rows && n <= PACK_ROWS,
            "PackedWeight: block {b} has the wrong shape"
        );
        if n == 0 || cols == 0 {
            return;
        }
        // SAFETY: column tile b of the Wᵀ panel is t_kpt · NR elements at b · t_kpt · NR,
        // inside the panel, and only block b writes it.
        let tile = unsafe {
            std::slice::from_raw_parts_mut(self.t.at(b * self.t_kpt * NR), self.t_kpt * NR)
        };
        let p0 = b * PACK_ROWS / 2;
        // Block b alone writes pair rows p0.. of the W panel.
        pack_block_with(self.isa, tile, self.w, self.w_kpt, p0, block, cols);
    }
}

multiversion!(
    /// [`pack_block_generic`] compiled for `isa`. The caller guarantees that pair rows
    /// `p0..p0 + block rows / 2` of every column tile of the `W` panel `w` (with `w_kpt`
    /// pairs per tile row) are this call's alone to write.
    pack_block_with => pack_block_generic(
        tile: &mut [u32],
        w: SendPtr<u32>,
        w_kpt: usize,
        p0: usize,
        block: &[f32],
        cols: usize,
    )
);

/// One block of W (`[n ≤ PACK_ROWS, cols]`) into both panels: `tile` (its `Wᵀ` column
/// tile, `[kpt][NR]`) and pair rows `p0..` of the `W` panel.
#[inline(always)]
fn pack_block_generic(
    tile: &mut [u32],
    w: SendPtr<u32>,
    w_kpt: usize,
    p0: usize,
    block: &[f32],
    cols: usize,
) {
    // Wᵀ: each row's pairs go down one column of the tile. The rows' pairs are made a
    // chunk of columns at a time (contiguous, vectorized), then stored a tile row at a time
    // (contiguous stores; storing each row's pairs down the column let the compiler emit
    // scattered stores, which cost more than the rest of the step's packing).
    const CHUNK: usize = 2 * NR;
    let n = block.len() / cols;
    let mut pairs = [[0u32; CHUNK]; NR];
    for c in 0..cols.div_ceil(2 * CHUNK) {
        let (f0, f1) = (c * 2 * CHUNK, ((c + 1) * 2 * CHUNK).min(cols));
        let kp = (f1 - f0).div_ceil(2);
        for (j, row) in block.chunks_exact(cols).enumerate() {
            pairs_from_row(&mut pairs[j][..kp], &row[f0..f1]);
        }
        for p in 0..kp {
            let dst = &mut tile[(c * CHUNK + p) * NR..][..n];
            for (j, d) in dst.iter_mut().enumerate() {
                *d = pairs[j][p];
            }
        }
    }
    // W: rows 2q and 2q + 1 of the block interleaved into pair row p0 + q of each tile.
    let zeros = [0.0f32; NR];
    for (q, two) in block.chunks(2 * cols).enumerate() {
        let (lo, hi) = two.split_at(cols);
        for ct in 0..cols.div_ceil(NR) {
            let (j0, j1) = (ct * NR, ((ct + 1) * NR).min(cols));
            let hi = if hi.is_empty() {
                &zeros[..j1 - j0]
            } else {
                &hi[j0..j1]
            };
            // SAFETY: pair row p0 + q of tile ct is NR elements inside the panel, and the
            // caller guarantees this call alone writes it.
            let dst = unsafe {
                std::slice::from_raw_parts_mut(w.at((ct * w_kpt + p0 + q) * NR), j1 - j0)
            };
            interleave_rows(dst, &lo[j0..j1], hi);
        }
    }
}
