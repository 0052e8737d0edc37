//! bf16 GEMM with f32 accumulation: the matrix products of mixed-precision training.
//!
//! `dst[rows, cols] (=|+=) lhs[rows, depth] · rhs[depth, cols]`, where both operands are
//! rounded to bf16 (round to nearest even) while they are packed, and every product is
//! summed in f32. That is the arithmetic of `vdpbf16ps` (AVX512_BF16) and `tdpbf16ps`
//! (AMX-BF16), so all paths agree to f32 rounding.
//!
//! Packed layouts (a `u32` holds a bf16 pair: depth `2p` in the low half, `2p + 1` in the
//! high half, which is what both instructions multiply):
//! - lhs: row-major pairs `[rows padded to MR][kp]`. The AVX-512 kernel broadcasts one pair
//!   per row; an AMX A tile is 16 of these rows, 16 pairs (64 bytes) each.
//! - rhs: `[column tile][kp][NR]`: per pair index, the NR columns of one tile side by side.
//!   The AVX-512 kernel loads 16 columns per register; an AMX B tile is 16 pair rows of 16
//!   columns, read with a 128-byte stride.
//!
//! The rhs is packed straight from wherever it lives: a strided f32 matrix, or the rows of
//! a frozen [`Weight`] (f32, bf16 or ggml blocks, dequantized a row at a time), read either
//! as `W` (the depth is W's rows: `dx = dy · W`) or as `Wᵀ` (the forward `y = x · Wᵀ`).
//!
//! Work is split into blocks of rows × columns, one rayon task each; every output element
//! is computed by one task with a fixed depth order, so results do not depend on scheduling.

use std::cell::Cell;
use std::sync::Mutex;

use rayon::prelude::*;

use crate::cpu::Isa;
use crate::linear::Weight;
use crate::matmul::Operand;

#[cfg(target_arch = "x86_64")]
mod block_tile;
mod kernel;
mod linear;
mod pack;
mod packed;
mod panel;

pub use kernel::kernel_name;
use kernel::{Block, widen_lhs, widens_lhs};
pub use linear::{
    LowRank, linear_backward_dx_bf16, linear_backward_dx_packed, linear_bf16, linear_lora_bf16,
    linear_packed, linears_backward_dx_bf16, matmul_backward_bf16, matmul_bf16,
};
#[cfg(target_arch = "x86_64")]
use pack::transpose16_avx512;
use pack::{
    Scratch, interleave_rows, pack_column_tile, pack_lhs, pack_rhs, pairs_from_row, tile_packs,
};
pub use packed::{BlockWriter, PACK_ROWS, PackedWeight};
pub use panel::{Panel, PanelView, WINDOW_ALIGN};

/// Rows per micro-tile of the AVX-512 and portable kernels.
const MR: usize = 12;
/// Rows per micro-tile of the AMX kernel (two 16-row A tiles).
const MR_AMX: usize = 32;
/// Columns per micro-tile (and per packed rhs tile): two 16-lane registers, or two AMX B tiles.
const NR: usize = 32;
/// Depth pairs per cache block. A block's rhs micro-panel (384 × 32 pairs, 48 KiB) streams
/// from L2 while the lhs micro-panel (12 rows × 384 pairs, 18 KiB) stays in L1; 384 pairs
/// cover the 768-deep products of Stories110M in one pass over the output.
const KC: usize = 384;
/// Micro-tiles per task in each direction.
const TASK_ROW_TILES: usize = 4;
const TASK_COL_TILES: usize = 4;

/// f32 → bf16 bits, rounding to nearest even. NaN stays a (quiet) NaN.
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `x` rounded to the nearest bf16, as an f32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    bf16_to_f32(bf16_bits(x))
}

#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16
}

/// The right-hand operand of [`gemm_bf16`], `[depth, cols]`.
#[derive(Clone, Copy)]
pub enum Rhs<'a> {
    /// Element `(p, j)` is `data[p * row_stride + j * col_stride]`.
    Strided(Operand<'a>),
    /// `W` itself: depth = `W.rows`, cols = `W.cols`.
    Weight(&'a Weight),
    /// `Wᵀ`: depth = `W.cols`, cols = `W.rows`.
    WeightT(&'a Weight),
    /// A trainable `W` kept packed: depth = `rows`, cols = `cols`.
    Packed(&'a PackedWeight),
    /// Its `Wᵀ`: depth = `cols`, cols = `rows`.
    PackedT(&'a PackedWeight),
    /// A window of a matrix packed once for many products.
    Panel(PanelView<'a>),
    /// W's rows from the given one on (as many as the term's depth): a depth slice of
    /// [`Rhs::Weight`], which deep products run in. Packed one column tile at a time only.
    WeightRows(&'a Weight, usize),
}

/// Micro-tile height and the depth-pair multiple the packed panels are padded to.
fn geometry(isa: Isa) -> (usize, usize) {
    if isa == Isa::Amx {
        (MR_AMX, 16)
    } else {
        (MR, 1)
    }
}

thread_local! {
    /// Packed panels kept between calls so a training step does not allocate them per GEMM.
    /// Taken out (not borrowed), so a nested call from rayon work stealing finds an empty
    /// buffer and allocates its own.
    static PACK_A: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    static PACK_B: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    static PACK_WIDE: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    /// One column tile of the rhs, for products that pack a tile per task.
    static PACK_TILE: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
}

/// dst: [rows, cols] row-major. `dst = lhs · rhs`, or `dst += lhs · rhs` when `accumulate`,
/// with lhs `[rows, depth]` read through its strides and both operands rounded to bf16.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16(
    isa: Isa,
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    depth: usize,
    lhs: Operand,
    rhs: Rhs,
    accumulate: bool,
    threads: usize,
) {
    let term = Term { lhs, rhs, depth };
    gemm_bf16_sum(isa, dst, rows, cols, &[term], accumulate, threads);
}

/// One product of a [`gemm_bf16_sum`]: `lhs [rows, depth] · rhs [depth, cols]`.
#[derive(Clone, Copy)]
pub struct Term<'a> {
    /// The left operand `[rows, depth]`.
    pub lhs: Operand<'a>,
    /// The right operand `[depth, cols]`.
    pub rhs: Rhs<'a>,
    /// The depth of the product.
    pub depth: usize,
}

/// dst: [rows, cols] row-major. `dst (=|+=) Σ lhsᵢ · rhsᵢ` as one product: the terms are
/// packed side by side along the depth, so a small product that shares the output of a big
/// one (a LoRA adapter's `h · Bᵀ` beside the frozen `x · Wᵀ`) costs its flops and no pass
/// over the output of its own. A pre-packed rhs ([`Rhs::Packed`]) must be the only term.
pub fn gemm_bf16_sum(
    isa: Isa,
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    terms: &[Term],
    accumulate: bool,
    threads: usize,
) {
    assert_eq!(dst.len(), rows * cols, "gemm_bf16: dst is not [rows, cols]");
    for t in terms {
        let depth = t.depth;
        check_operand(t.lhs, rows, depth);
        match t.rhs {
            Rhs::Strided(op) => check_operand(op, depth, cols),
            Rhs::Weight(w) => assert!(w.rows == depth && w.cols == cols, "gemm_bf16: W shape"),
            Rhs::WeightRows(w, r0) => assert!(
                r0 + depth <= w.rows && w.cols == cols,
                "gemm_bf16: W's rows shape"
            ),
            Rhs::WeightT(w) => assert!(w.cols == depth && w.rows == cols, "gemm_bf16: Wᵀ shape"),
            Rhs::Packed(w) => assert!(w.rows == depth && w.cols == cols, "gemm_bf16: W shape"),
            Rhs::PackedT(w) => assert!(w.cols == depth && w.rows == cols, "gemm_bf16: Wᵀ shape"),
            Rhs::Panel(p) => assert!(
                depth <= p.depth && cols <= p.cols,
                "gemm_bf16: the product runs past the panel"
            ),
        }
    }
    let prepacked = terms
        .iter()
        .any(|t| matches!(t.rhs, Rhs::Packed(_) | Rhs::PackedT(_) | Rhs::Panel(_)));
    assert!(
        !prepacked || terms.len() == 1,
        "gemm_bf16: a pre-packed rhs cannot share the depth with other terms"
    );
    if rows == 0 || cols == 0 {
        return;
    }
    // Each term starts at a whole pair, so an odd depth pads its own last pair with zero.
    let offsets: Vec<usize> = terms
        .iter()
        .scan(0, |off, t| {
            let start = *off;
            *off += t.depth.div_ceil(2);
            Some(start)
        })
        .collect();
    let kp: usize = terms.iter().map(|t| t.depth.div_ceil(2)).sum();
    if kp == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    if let Some(slices) = depth_slices(isa, terms, (rows, kp, cols), threads) {
        // A deep product (the classifier's input gradient sums over a 49k vocabulary) runs
        // as a sum of depth slices of KC pairs, each a product of its own: a slice's packed
        // operands stay in cache while every column tile reads them, where the whole
        // depth's would be re-read from memory for each tile, and the pack buffers stay
        // small. The slices are the kernel's own depth blocks, added in the same order, so
        // the result has the same bits.
        for (i, slice) in slices.enumerate() {
            gemm_bf16_sum(isa, dst, rows, cols, &[slice], accumulate || i > 0, threads);
        }
        return;
    }
    let (mr, align) = geometry(isa);
    let kpt = kp.next_multiple_of(align);
    let row_tiles = rows.div_ceil(mr);
    let col_tiles = cols.div_ceil(NR);
    let threads = threads.max(1);

    // The packers write every element, padding included, so the buffers are only grown.
    let mut a = Buffers::A.take(threads);
    grow(&mut a, row_tiles * mr * kpt);
    pack_lhs(isa, &mut a, terms, &offsets, rows, (kp, kpt), threads);
    a[rows * kpt..row_tiles * mr * kpt].fill(0);
    // The FMA kernel reads its lhs widened to f32; the pairs are widened once here, for
    // every tile that reads them.
    let widen = widens_lhs(isa);
    let mut wide = Vec::new();
    let lda = if widen {
        wide = Buffers::Wide.take(threads);
        grow(&mut wide, row_tiles * mr * 2 * kpt);
        let (dst, src) = (
            &mut wide[..row_tiles * mr * 2 * kpt],
            &a[..row_tiles * mr * kpt],
        );
        if threads == 1 {
            widen_lhs(isa, dst, src);
        } else {
            dst.par_chunks_mut(16 * 2 * kpt)
                .zip(src.par_chunks(16 * kpt))
                .for_each(|(d, s)| widen_lhs(isa, d, s));
        }
        2 * kpt
    } else {
        kpt
    };
    let lhs: &[u32] = if widen { &wide } else { &a };
    let out = SendPtr(dst.as_mut_ptr());
    if tile_pass(isa, terms, (rows, kpt, cols), threads) {
        // Each task packs one column tile of the rhs and multiplies every row by it right
        // away: one parallel pass instead of a packing pass and a product pass, the tile is
        // still in cache when the kernel reads it, and no thread holds the whole panel
        // (57 MiB for the classifier of a 49k vocabulary).
        let run = |scratch: &mut Scratch, ct: usize| {
            let mut tile_buf = PACK_TILE.take();
            grow(&mut tile_buf, kpt * NR);
            let tile = &mut tile_buf[..kpt * NR];
            pack_column_tile(isa, tile, terms, &offsets, ct, (cols, kp), true, scratch);
            let block = Block {
                r0: 0,
                r1: rows,
                c0: ct * NR,
                c1: ((ct + 1) * NR).min(cols),
                cols,
                kpt,
                lda,
                b_kpt: kpt,
                b_k0: 0,
                b_tile0: ct,
                mr,
            };
            // SAFETY: tasks write disjoint column ranges of dst, which is rows × cols long
            // (asserted above) and outlives this call.
            unsafe { block.compute(isa, lhs, tile, out, accumulate) };
            PACK_TILE.set(tile_buf);
        };
        if threads == 1 {
            let mut scratch = Scratch::default();
            (0..col_tiles).for_each(|ct| run(&mut scratch, ct));
        } else {
            (0..col_tiles)
                .into_par_iter()
                .for_each_init(Scratch::default, |scratch, ct| run(scratch, ct));
        }
        Buffers::A.put(threads, a);
        if widen {
            Buffers::Wide.put(threads, wide);
        }
        return;
    }
    let mut b_buf = Vec::new();
    // The rhs panels, the pairs per column tile in them, and the first pair read.
    let (b, b_kpt, b_k0): (&[u32], usize, usize) = match terms[0].rhs {
        Rhs::Packed(w) => (w.panel_w(isa, kpt), kpt, 0),
        Rhs::PackedT(w) => (w.panel_t(isa, kpt), kpt, 0),
        Rhs::Panel(p) => {
            // The padded depth read is zero in the lhs but must lie inside the panel.
            assert!(
                p.k0 + kpt <= p.kpt,
                "gemm_bf16: the window's padding runs past the panel"
            );
            (p.data, p.kpt, p.k0)
        }
        _ => {
            b_buf = Buffers::B.take(threads);
            grow(&mut b_buf, col_tiles * kpt * NR);
            pack_rhs(isa, &mut b_buf, terms, &offsets, cols, (kp, kpt), threads);
            (&b_buf, kpt, 0)
        }
    };

    let task_rows = TASK_ROW_TILES * mr;
    let task_cols = TASK_COL_TILES * NR;
    let (tr, tc) = (rows.div_ceil(task_rows), cols.div_ceil(task_cols));
    let run = |t: usize| {
        let (r0, c0) = ((t / tc) * task_rows, (t % tc) * task_cols);
        let block = Block {
            r0,
            r1: (r0 + task_rows).min(rows),
            c0,
            c1: (c0 + task_cols).min(cols),
            cols,
            kpt,
            lda,
            b_kpt,
            b_k0,
            b_tile0: 0,
            mr,
        };
        // SAFETY: tasks write disjoint rectangles of dst (rows r0..r1 × cols c0..c1), which
        // is rows × cols long (asserted above) and outlives this call.
        unsafe { block.compute(isa, lhs, b, out, accumulate) };
    };
    if threads == 1 || tr * tc == 1 {
        (0..tr * tc).for_each(run);
    } else {
        (0..tr * tc).into_par_iter().for_each(run);
    }
    Buffers::A.put(threads, a);
    if widen {
        Buffers::Wide.put(threads, wide);
    }
    if !b_buf.is_empty() {
        Buffers::B.put(threads, b_buf);
    }
}

/// The largest packed lhs a product packed by column tiles reads (half a Zen 4 core's L2):
/// 256 tokens of depth up to 1,024, and every depth slice of a deep product.
const TILE_PASS_LHS_BYTES: usize = 512 << 10;

/// Whether a product of `kpt` padded depth pairs runs as the column-tile pass of
/// [`gemm_bf16_sum`]: every rhs packs one column tile at a time, the packed lhs stays in
/// cache (every tile reads all of it: a weight gradient's lhs of tens of thousands of rows
/// would be re-read from memory per tile), and there are two tiles per thread or more.
fn tile_pass(
    isa: Isa,
    terms: &[Term],
    (rows, kpt, cols): (usize, usize, usize),
    threads: usize,
) -> bool {
    let lhs_bytes = rows.next_multiple_of(geometry(isa).0) * kpt * 4;
    terms.iter().all(|t| tile_packs(isa, t.rhs))
        && lhs_bytes <= TILE_PASS_LHS_BYTES
        && cols.div_ceil(NR) >= 2 * threads.max(1)
}

/// Products deeper than this many pairs run in slices of [`KC`] pairs.
const DEEP: usize = 2 * KC;

/// The depth slices of a deep single product whose rhs can be sliced and packed by column
/// tiles (see [`gemm_bf16_sum`]), or None to run it whole.
fn depth_slices<'a>(
    isa: Isa,
    terms: &[Term<'a>],
    (rows, kp, cols): (usize, usize, usize),
    threads: usize,
) -> Option<impl Iterator<Item = Term<'a>>> {
    let &[t] = terms else {
        return None;
    };
    let sliceable = matches!(
        t.rhs,
        Rhs::Strided(_) | Rhs::Weight(_) | Rhs::WeightRows(..)
    );
    // Each slice must take the column-tile pass (the only one that reads W's rows).
    if kp <= DEEP || !sliceable || !tile_pass(isa, terms, (rows, KC, cols), threads) {
        return None;
    }
    Some((0..kp).step_by(KC).map(move |p0| {
        let d0 = 2 * p0;
        let (v, rs, cs) = t.lhs;
        let rhs = match t.rhs {
            Rhs::Strided((v, rs, cs)) => Rhs::Strided((&v[d0 * rs..], rs, cs)),
            Rhs::Weight(w) => Rhs::WeightRows(w, d0),
            Rhs::WeightRows(w, r0) => Rhs::WeightRows(w, r0 + d0),
            _ => unreachable!("checked above"),
        };
        Term {
            lhs: (&v[d0 * cs..], rs, cs),
            rhs,
            depth: (2 * KC).min(t.depth - d0),
        }
    }))
}

/// The packed lhs (`A`) and rhs (`B`) panels of a product, kept between calls.
#[derive(Clone, Copy)]
enum Buffers {
    A,
    B,
    /// The lhs widened for the FMA kernel.
    Wide,
}

/// The panels of multi-threaded products: one pair for the process. Those products come
/// from the thread running a step, which may be either pool thread (`cpu::on_pool`); kept
/// per thread, each would end up holding the largest panel (131 MiB for TinyLlama's
/// classifier).
static SHARED: [Mutex<Vec<u32>>; 3] = [const { Mutex::new(Vec::new()) }; 3];

impl Buffers {
    /// Takes the buffer a product on `threads` threads uses: the shared one for a
    /// multi-threaded product (an empty one if another holds it), else this thread's.
    fn take(self, threads: usize) -> Vec<u32> {
        if threads > 1 {
            return SHARED[self as usize]
                .try_lock()
                .map(|mut v| std::mem::take(&mut *v))
                .unwrap_or_default();
        }
        match self {
            Buffers::A => PACK_A.take(),
            Buffers::B => PACK_B.take(),
            Buffers::Wide => PACK_WIDE.take(),
        }
    }

    /// Gives back what [`Buffers::take`] gave.
    fn put(self, threads: usize, v: Vec<u32>) {
        if threads > 1 {
            if let Ok(mut shared) = SHARED[self as usize].try_lock() {
                *shared = v;
            }
            return;
        }
        match self {
            Buffers::A => PACK_A.set(v),
            Buffers::B => PACK_B.set(v),
            Buffers::Wide => PACK_WIDE.set(v),
        }
    }
}

fn grow(v: &mut Vec<u32>, len: usize) {
    if v.len() < len {
        v.resize(len, 0);
    }
}

fn check_operand((v, rs, cs): Operand, r: usize, c: usize) {
    if r > 0 && c > 0 {
        assert!(
            (r - 1) * rs + (c - 1) * cs < v.len(),
            "gemm_bf16: operand too short"
        );
    }
}

/// A raw pointer into an output or a packed panel that tasks share; each task writes only
/// its own elements (a rectangle of the output, or its own pair rows of a panel).
struct SendPtr<T>(*mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The element `i` places on (a method, so closures capture the whole Send wrapper).
    fn at(self, i: usize) -> *mut T {
        self.0.wrapping_add(i)
    }
}
// SAFETY: only used for disjoint writes (see `gemm_bf16` and `pack_weight_rows`).
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

/// Reference: `dst (=|+=) lhs · rhs` with both operands rounded to bf16 and the sums in f64.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bf16_naive(
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    depth: usize,
    lhs: Operand,
    rhs: Operand,
    accumulate: bool,
) {
    for i in 0..rows {
        for j in 0..cols {
            let mut acc = 0.0f64;
            for p in 0..depth {
                let a = round_bf16(lhs.0[i * lhs.1 + p * lhs.2]) as f64;
                let b = round_bf16(rhs.0[p * rhs.1 + j * rhs.2]) as f64;
                acc += a * b;
            }
            let d = &mut dst[i * cols + j];
            *d = if accumulate {
                (*d as f64 + acc) as f32
            } else {
                acc as f32
            };
        }
    }
}

/// The best bf16 GEMM rate of `reps` square `n × n × n` products on this machine with the
/// active instruction set, in GFLOP/s, after one warm-up product: the reference for the
/// utilization of bf16 training.
pub fn peak_gflops(n: usize, reps: usize) -> f64 {
    crate::matmul::peak_gflops_of(matmul_bf16, n, reps)
}

#[cfg(test)]
mod tests;
