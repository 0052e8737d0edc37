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

use crate::cpu::{self, Isa, multiversion};
use crate::linear::{Weight, WeightData};
use crate::matmul::{Operand, threads_for};

#[cfg(target_arch = "x86_64")]
mod block_tile;
mod packed;
mod panel;
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
    pub lhs: Operand<'a>,
    pub rhs: Rhs<'a>,
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
    let out = SendPtr(dst.as_mut_ptr());
    let packs_by_tile = !prepacked && terms.iter().all(|t| tile_packs(isa, t.rhs));
    // Every column tile reads the whole packed lhs, so it must stay in cache: a weight
    // gradient's lhs (tens of thousands of rows) would be re-read from memory per tile.
    let lhs_fits = row_tiles * mr * kpt * 4 <= TILE_PASS_LHS_BYTES;
    if packs_by_tile && lhs_fits && col_tiles >= 2 * threads {
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
                b_kpt: kpt,
                b_k0: 0,
                b_tile0: ct,
                mr,
            };
            // SAFETY: tasks write disjoint column ranges of dst, which is rows × cols long
            // (asserted above) and outlives this call.
            unsafe { block.compute(isa, &a, tile, out, accumulate) };
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
            b_kpt,
            b_k0,
            b_tile0: 0,
            mr,
        };
        // SAFETY: tasks write disjoint rectangles of dst (rows r0..r1 × cols c0..c1), which
        // is rows × cols long (asserted above) and outlives this call.
        unsafe { block.compute(isa, &a, b, out, accumulate) };
    };
    if threads == 1 || tr * tc == 1 {
        (0..tr * tc).for_each(run);
    } else {
        (0..tr * tc).into_par_iter().for_each(run);
    }
    Buffers::A.put(threads, a);
    if !b_buf.is_empty() {
        Buffers::B.put(threads, b_buf);
    }
}

/// The largest packed lhs a product packed by column tiles reads (half a Zen 4 core's L2):
/// 256 tokens of depth up to 1,024, and every depth slice of a deep product.
const TILE_PASS_LHS_BYTES: usize = 512 << 10;

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
    let slice_lhs = rows.next_multiple_of(geometry(isa).0) * KC * 4;
    let tile_pass = tile_packs(isa, t.rhs)
        && slice_lhs <= TILE_PASS_LHS_BYTES
        && cols.div_ceil(NR) >= 2 * threads;
    if kp <= DEEP || !sliceable || !tile_pass {
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
}

/// The panels of multi-threaded products: one pair for the process. Those products come
/// from the thread running a step, which may be either pool thread (`cpu::on_pool`); kept
/// per thread, each would end up holding the largest panel (131 MiB for TinyLlama's
/// classifier).
static SHARED: [Mutex<Vec<u32>>; 2] = [Mutex::new(Vec::new()), Mutex::new(Vec::new())];

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

/// Packs each term's lhs `[rows, depth]` into its pairs of row-major `[rows][kpt]`, from
/// its offset on; the pairs past the last term are zero.
fn pack_lhs(
    isa: Isa,
    a: &mut [u32],
    terms: &[Term],
    offsets: &[usize],
    rows: usize,
    (kp, kpt): (usize, usize),
    threads: usize,
) {
    // Blocks of 16 rows, so a transposed lhs is read 16 contiguous elements at a time.
    const BLOCK: usize = 16;
    let pack = |(bi, chunk): (usize, &mut [u32]), pairs: &mut Vec<u32>| {
        let wide = isa >= Isa::Avx512;
        for (t, &off) in terms.iter().zip(offsets) {
            pack_lhs_rows(
                isa,
                chunk,
                t.lhs,
                bi * BLOCK,
                t.depth,
                kpt,
                off,
                wide,
                pairs,
            );
        }
        if kp < kpt {
            chunk
                .chunks_exact_mut(kpt)
                .for_each(|row| row[kp..].fill(0));
        }
    };
    let a = &mut a[..rows * kpt];
    if threads == 1 {
        let mut pairs = Vec::new();
        a.chunks_mut(BLOCK * kpt)
            .enumerate()
            .for_each(|x| pack(x, &mut pairs));
    } else {
        a.par_chunks_mut(BLOCK * kpt)
            .enumerate()
            .for_each_init(Vec::new, |pairs, x| pack(x, pairs));
    }
}

multiversion!(pack_lhs_rows => pack_lhs_rows_generic(
    dst: &mut [u32],
    lhs: Operand,
    i0: usize,
    depth: usize,
    kpt: usize,
    off: usize,
    wide: bool,
    pairs: &mut Vec<u32>,
));

/// Rows `i0..i0 + dst.len() / kpt` of the lhs as bf16 pairs, into pairs `off..` of each
/// packed row. `wide`: AVX-512 is there for the 16 × 16 transposes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_lhs_rows_generic(
    dst: &mut [u32],
    (v, rs, cs): Operand,
    i0: usize,
    depth: usize,
    kpt: usize,
    off: usize,
    wide: bool,
    pairs: &mut Vec<u32>,
) {
    let kp = depth.div_ceil(2);
    let nb = dst.len() / kpt;
    if cs == 1 {
        // Rows contiguous along the depth (activations, dy): convert each row.
        for (ri, row) in term_pairs(dst, kpt, off, kp).enumerate() {
            let i = i0 + ri;
            pairs_from_row(row, &v[i * rs..i * rs + depth]);
        }
    } else if rs == 1 {
        // A transposed lhs (dyᵀ of a weight gradient): depth rows are contiguous along our
        // rows, so interleave two of them at a time, then store each row's pairs.
        pairs.resize(kp * nb, 0);
        for p in 0..kp {
            let r0 = &v[2 * p * cs + i0..2 * p * cs + i0 + nb];
            let d = &mut pairs[p * nb..(p + 1) * nb];
            if 2 * p + 1 < depth {
                interleave_rows(d, r0, &v[(2 * p + 1) * cs + i0..(2 * p + 1) * cs + i0 + nb]);
            } else {
                d.iter_mut().zip(r0).for_each(|(d, &x)| *d = pair(x, 0.0));
            }
        }
        // Then each row takes its column of the pairs: 16 × 16 blocks in registers for a
        // whole block of 16 rows, the plain loop for the rest.
        let mut pf = 0;
        #[cfg(target_arch = "x86_64")]
        if wide && nb == 16 {
            pf = kp / 16 * 16;
            assert!(dst.len() >= 15 * kpt + off + pf && pairs.len() >= pf * 16);
            for pb in (0..pf).step_by(16) {
                // SAFETY: `wide` is only set at tiers with AVX-512F; the block reads pair
                // rows pb..pb + 16 (16 each) and writes rows 0..16 of dst at off + pb..
                // off + pb + 16, inside the lengths asserted above.
                unsafe {
                    transpose16_avx512(
                        dst.as_mut_ptr().add(off + pb),
                        kpt,
                        pairs.as_ptr().add(pb * 16),
                        16,
                    )
                };
            }
        }
        let _ = wide;
        for (ri, row) in term_pairs(dst, kpt, off, kp).enumerate() {
            for (p, d) in row.iter_mut().enumerate().skip(pf) {
                *d = pairs[p * nb + ri];
            }
        }
    } else {
        for (ri, row) in term_pairs(dst, kpt, off, kp).enumerate() {
            let i = i0 + ri;
            for (p, d) in row.iter_mut().enumerate() {
                let lo = v[i * rs + 2 * p * cs];
                let hi = if 2 * p + 1 < depth {
                    v[i * rs + (2 * p + 1) * cs]
                } else {
                    0.0
                };
                *d = pair(lo, hi);
            }
        }
    }
}

/// Each packed row's pairs `off..off + kp` (one term's part of the depth).
#[inline(always)]
fn term_pairs(
    dst: &mut [u32],
    kpt: usize,
    off: usize,
    kp: usize,
) -> impl Iterator<Item = &mut [u32]> {
    dst.chunks_exact_mut(kpt)
        .map(move |row| &mut row[off..off + kp])
}

/// dst[p] = the bf16 pair (row[2p], row[2p + 1]), the last one padded with zero.
#[inline(always)]
fn pairs_from_row(dst: &mut [u32], row: &[f32]) {
    let (whole, tail) = row.split_at(row.len() & !1);
    for (d, c) in dst.iter_mut().zip(whole.chunks_exact(2)) {
        *d = pair(c[0], c[1]);
    }
    if let [last] = tail {
        dst[whole.len() / 2] = pair(*last, 0.0);
    }
}

/// Packs each term's rhs `[depth, cols]` into its pair rows of `[col tile][kpt][NR]`, from
/// its offset on; padding is zero.
fn pack_rhs(
    isa: Isa,
    b: &mut [u32],
    terms: &[Term],
    offsets: &[usize],
    cols: usize,
    (kp, kpt): (usize, usize),
    threads: usize,
) {
    let col_tiles = cols.div_ceil(NR);
    let b = &mut b[..col_tiles * kpt * NR];
    for (t, &off) in terms.iter().zip(offsets) {
        match t.rhs {
            Rhs::Weight(w) => pack_weight_rows(isa, b, w, kpt, off, threads),
            Rhs::WeightRows(..) => unreachable!("W's rows are packed by column tiles only"),
            _ => {}
        }
    }
    // Each task owns whole column tiles, so writes never overlap.
    let tile = |ct: usize, dst: &mut [u32], scratch: &mut Scratch| {
        pack_column_tile(isa, dst, terms, offsets, ct, (cols, kp), false, scratch);
    };
    if threads == 1 {
        let mut scratch = Scratch::default();
        for (ct, dst) in b.chunks_exact_mut(kpt * NR).enumerate() {
            tile(ct, dst, &mut scratch);
        }
    } else {
        b.par_chunks_exact_mut(kpt * NR)
            .enumerate()
            .for_each_init(Scratch::default, |scratch, (ct, dst)| {
                tile(ct, dst, scratch)
            });
    }
}

/// Column tile `ct` (`[kpt][NR]`) of every term's rhs, except a [`Rhs::Weight`] when
/// `weights` is false (the caller packs those by pair rows, [`pack_weight_rows`]); the pairs
/// past `kp` are zero.
#[allow(clippy::too_many_arguments)]
fn pack_column_tile(
    isa: Isa,
    dst: &mut [u32],
    terms: &[Term],
    offsets: &[usize],
    ct: usize,
    (cols, kp): (usize, usize),
    weights: bool,
    scratch: &mut Scratch,
) {
    for (t, &off) in terms.iter().zip(offsets) {
        let dst = &mut dst[off * NR..(off + t.depth.div_ceil(2)) * NR];
        let rows_of_w = match t.rhs {
            Rhs::Weight(w) => Some((w, 0)),
            Rhs::WeightRows(w, r0) => Some((w, r0)),
            _ => None,
        };
        match rows_of_w {
            #[cfg(target_arch = "x86_64")]
            Some((w, r0)) if weights => {
                assert!(
                    tile_packs(isa, t.rhs),
                    "gemm_bf16: W cannot be packed by tiles"
                );
                // SAFETY: tile_packs checked the tier (AVX-512F and BW) and the type; dst
                // is this term's pair rows of the tile; the check at entry put its rows in W.
                unsafe { block_tile::pack_w_tile_avx512(dst, w, ct, (r0, t.depth)) };
            }
            Some(_) => assert!(!weights, "gemm_bf16: W cannot be packed by tiles"),
            None => {
                let wide = isa >= Isa::Avx512;
                pack_rhs_tile(isa, dst, t.rhs, ct, t.depth, cols, wide, scratch)
            }
        }
    }
    dst[kp * NR..].fill(0);
}

/// Whether a rhs can be packed one column tile at a time: all but `W` itself, which is
/// decoded by rows unless its blocks are one tile wide and AVX-512 is there.
fn tile_packs(isa: Isa, rhs: Rhs) -> bool {
    match rhs {
        #[cfg(target_arch = "x86_64")]
        Rhs::Weight(w) | Rhs::WeightRows(w, _) => isa >= Isa::Avx512 && block_tile::handles_w(w),
        #[cfg(not(target_arch = "x86_64"))]
        Rhs::Weight(_) | Rhs::WeightRows(..) => {
            let _ = isa;
            false
        }
        _ => true,
    }
}

/// Per-task buffers of rhs packing: dequantized or gathered f32 rows or columns, and the
/// bf16 pairs of a tile's columns before they are transposed into place.
#[derive(Default)]
struct Scratch {
    f: Vec<f32>,
    pairs: Vec<u32>,
}

multiversion!(pack_rhs_tile => pack_rhs_tile_generic(
    dst: &mut [u32],
    rhs: Rhs,
    ct: usize,
    depth: usize,
    cols: usize,
    wide: bool,
    scratch: &mut Scratch,
));

/// Column tile `ct` of the rhs, `[kp][NR]`.
#[inline(always)]
fn pack_rhs_tile_generic(
    dst: &mut [u32],
    rhs: Rhs,
    ct: usize,
    depth: usize,
    cols: usize,
    wide: bool,
    scratch: &mut Scratch,
) {
    let j0 = ct * NR;
    let nj = NR.min(cols - j0);
    if nj < NR {
        // The last tile's columns past `cols` are zero.
        dst.fill(0);
    }
    match rhs {
        // Depth rows contiguous along the columns: interleave two rows at a time.
        Rhs::Strided((v, rs, 1)) => {
            for p in 0..depth.div_ceil(2) {
                let r0 = &v[2 * p * rs + j0..2 * p * rs + j0 + nj];
                let d = &mut dst[p * NR..p * NR + nj];
                if 2 * p + 1 < depth {
                    let r1 = &v[(2 * p + 1) * rs + j0..(2 * p + 1) * rs + j0 + nj];
                    interleave_rows(d, r0, r1);
                } else {
                    d.iter_mut().zip(r0).for_each(|(d, &x)| *d = pair(x, 0.0));
                }
            }
        }
        // Columns contiguous along the depth: convert pairs, then transpose into the tile.
        Rhs::Strided((v, 1, cs)) => {
            transpose_columns(dst, depth, j0, nj, Columns::Slice(v, cs), wide, scratch);
        }
        Rhs::WeightT(w) => {
            #[cfg(target_arch = "x86_64")]
            if wide && block_tile::handles(w, nj) {
                // SAFETY: `wide` is only set at tiers with AVX-512F and BW; `handles` checked
                // the type and a whole tile; dst is this term's `cols / 2` pair rows.
                return unsafe { block_tile::pack_tile_avx512(dst, w, ct) };
            }
            transpose_columns(dst, depth, j0, nj, Columns::WeightRows(w), wide, scratch);
        }
        Rhs::Strided((v, rs, cs)) => {
            transpose_columns(
                dst,
                depth,
                j0,
                nj,
                Columns::Gather(v, rs, cs),
                wide,
                scratch,
            );
        }
        Rhs::Weight(_) => unreachable!("packed by pack_weight_rows"),
        Rhs::WeightRows(..) => unreachable!("packed by column tiles only"),
        Rhs::Packed(_) | Rhs::PackedT(_) | Rhs::Panel(_) => unreachable!("already packed"),
    }
}

/// Packs `W` as the rhs (depth = W's rows, the `dx = dy · W` of a frozen weight) into pair
/// rows `off..` of every column tile. Each task takes a run of pair rows: it dequantizes
/// W's rows `2p` and `2p + 1` once and writes pair row `off + p` of every column tile, so a
/// quantized weight is decoded once per product rather than once per tile.
fn pack_weight_rows(isa: Isa, b: &mut [u32], w: &Weight, kpt: usize, off: usize, threads: usize) {
    let (depth, cols) = (w.rows, w.cols);
    let col_tiles = cols.div_ceil(NR);
    let kp = depth.div_ceil(2);
    let out = SendPtr(b.as_mut_ptr());
    let per_task = kp.div_ceil(threads * 8).max(1);
    let task = |t: usize, f: &mut Vec<f32>| {
        f.resize(2 * col_tiles * NR, 0.0);
        let (r0, r1) = f.split_at_mut(col_tiles * NR);
        // Columns past `cols` stay zero: rows_to_f32 writes only the first `cols`.
        r0[cols..].fill(0.0);
        r1[cols..].fill(0.0);
        for p in t * per_task..((t + 1) * per_task).min(kp) {
            w.rows_to_f32(2 * p, &mut r0[..cols]);
            if 2 * p + 1 < depth {
                w.rows_to_f32(2 * p + 1, &mut r1[..cols]);
            } else {
                r1.fill(0.0);
            }
            for ct in 0..col_tiles {
                // SAFETY: pair row off + p of tile ct is NR elements at ct·kpt·NR + (off +
                // p)·NR, inside b (col_tiles · kpt · NR long, off + kp ≤ kpt); tasks own
                // disjoint p, so no two write it.
                let at = ct * kpt * NR + (off + p) * NR;
                let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), NR) };
                let cs = ct * NR..(ct + 1) * NR;
                interleave(isa, dst, &r0[cs.clone()], &r1[cs]);
            }
        }
    };
    let n_tasks = kp.div_ceil(per_task);
    if threads == 1 {
        let mut f = Vec::new();
        (0..n_tasks).for_each(|t| task(t, &mut f));
    } else {
        (0..n_tasks)
            .into_par_iter()
            .for_each_init(Vec::new, |f, t| task(t, f));
    }
}

multiversion!(interleave => interleave_rows(dst: &mut [u32], r0: &[f32], r1: &[f32]));

/// Where the depth-contiguous columns of a rhs come from.
#[derive(Clone, Copy)]
enum Columns<'a> {
    /// Column `j` is `v[j * cs..j * cs + depth]`.
    Slice(&'a [f32], usize),
    /// Column `j` is row `j` of the weight.
    WeightRows(&'a Weight),
    /// Element `(p, j)` is `v[p * rs + j * cs]`.
    Gather(&'a [f32], usize, usize),
}

impl Columns<'_> {
    /// Column `j` (`depth` long), borrowed when it lies in memory as is, else made in `buf`.
    #[inline(always)]
    fn get<'b>(&'b self, j: usize, depth: usize, buf: &'b mut [f32]) -> &'b [f32] {
        match *self {
            Columns::Slice(v, cs) => &v[j * cs..j * cs + depth],
            Columns::WeightRows(w) => {
                w.rows_to_f32(j, buf);
                buf
            }
            Columns::Gather(v, rs, cs) => {
                for (p, x) in buf.iter_mut().enumerate() {
                    *x = v[p * rs + j * cs];
                }
                buf
            }
        }
    }
}

/// Fills columns `0..nj` of a `[kpt][NR]` tile from rhs columns `j0..j0 + nj`. Each column
/// is converted to pairs whole (a vectorized loop), then the pairs are transposed into the
/// tile's rows (16 × 16 blocks in registers when `wide`, AVX-512 being there).
#[inline(always)]
fn transpose_columns(
    dst: &mut [u32],
    depth: usize,
    j0: usize,
    nj: usize,
    columns: Columns,
    wide: bool,
    scratch: &mut Scratch,
) {
    let kp = depth.div_ceil(2);
    scratch.f.resize(depth, 0.0);
    scratch.pairs.resize(NR * kp, 0);
    let pairs = &mut scratch.pairs[..NR * kp];
    for jj in 0..nj {
        let col = columns.get(j0 + jj, depth, &mut scratch.f[..depth]);
        pairs_from_row(&mut pairs[jj * kp..(jj + 1) * kp], col);
    }
    transpose_pairs(dst, pairs, kp, nj, wide);
}

/// `dst[p · NR + jj] = pairs[jj · kp + p]` for `p < kp`, `jj < nj`.
#[inline(always)]
fn transpose_pairs(dst: &mut [u32], pairs: &[u32], kp: usize, nj: usize, wide: bool) {
    assert!(nj <= NR && dst.len() >= kp * NR && pairs.len() >= nj * kp);
    // The part 16 × 16 blocks cover; the scalar loop below does the rest.
    let (mut pf, mut jf) = (0, 0);
    #[cfg(target_arch = "x86_64")]
    if wide {
        (pf, jf) = (kp / 16 * 16, nj / 16 * 16);
        for jb in (0..jf).step_by(16) {
            for pb in (0..pf).step_by(16) {
                // SAFETY: `wide` is only set at tiers with AVX-512F; the block reads rows
                // jb..jb + 16 (< nj) of pairs at pb..pb + 16 (≤ kp) and writes rows
                // pb..pb + 16 of dst at jb..jb + 16 (≤ NR), inside the lengths asserted above.
                unsafe {
                    transpose16_avx512(
                        dst.as_mut_ptr().add(pb * NR + jb),
                        NR,
                        pairs.as_ptr().add(jb * kp + pb),
                        kp,
                    )
                };
            }
        }
    }
    let _ = wide;
    for p in 0..kp {
        // Blocks covered columns 0..jf of pair rows 0..pf.
        let from = if p < pf { jf } else { 0 };
        let row = &mut dst[p * NR..p * NR + nj];
        for (jj, d) in row.iter_mut().enumerate().skip(from) {
            *d = pairs[jj * kp + p];
        }
    }
}

/// Transposes a 16 × 16 block of u32: `dst[i · ds + j] = src[j · ss + i]`. Two rounds of
/// unpacks put each 4 × 4 sub-block in place within the 128-bit lanes; two rounds of lane
/// shuffles move the lanes.
///
/// # Safety
/// AVX-512F is available; src rows `0..16` (stride `ss`) and dst rows `0..16` (stride `ds`)
/// hold 16 elements each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16_avx512(dst: *mut u32, ds: usize, src: *const u32, ss: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the 16 rows of 16 elements on both sides.
    unsafe {
        let r: [__m512i; 16] = std::array::from_fn(|i| _mm512_loadu_si512(src.add(i * ss).cast()));
        // Row pairs interleaved: t[2k] = lo(r[2k], r[2k+1]), t[2k+1] = hi(...).
        let mut t = [_mm512_setzero_si512(); 16];
        for k in 0..8 {
            t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
            t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
        }
        // s[4g + c]: lane L holds column 4L + c of rows 4g..4g + 4.
        let mut s = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (a, b) = (4 * g, 4 * g + 2);
            s[4 * g] = _mm512_unpacklo_epi64(t[a], t[b]);
            s[4 * g + 1] = _mm512_unpackhi_epi64(t[a], t[b]);
            s[4 * g + 2] = _mm512_unpacklo_epi64(t[a + 1], t[b + 1]);
            s[4 * g + 3] = _mm512_unpackhi_epi64(t[a + 1], t[b + 1]);
        }
        // Output row 4L + c gathers lane L of s[4g + c] for g = 0..4.
        for c in 0..4 {
            let (a0, a1, a2, a3) = (s[c], s[4 + c], s[8 + c], s[12 + c]);
            let x0 = _mm512_shuffle_i32x4::<0x44>(a0, a1);
            let x1 = _mm512_shuffle_i32x4::<0xEE>(a0, a1);
            let x2 = _mm512_shuffle_i32x4::<0x44>(a2, a3);
            let x3 = _mm512_shuffle_i32x4::<0xEE>(a2, a3);
            let out = [
                _mm512_shuffle_i32x4::<0x88>(x0, x2),
                _mm512_shuffle_i32x4::<0xDD>(x0, x2),
                _mm512_shuffle_i32x4::<0x88>(x1, x3),
                _mm512_shuffle_i32x4::<0xDD>(x1, x3),
            ];
            for (l, o) in out.into_iter().enumerate() {
                _mm512_storeu_si512(dst.add((4 * l + c) * ds).cast(), o);
            }
        }
    }
}

#[inline(always)]
fn interleave_rows(dst: &mut [u32], r0: &[f32], r1: &[f32]) {
    for ((d, &lo), &hi) in dst.iter_mut().zip(r0).zip(r1) {
        *d = pair(lo, hi);
    }
}

/// One task's rectangle of the output.
struct Block {
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
    /// dst's row stride.
    cols: usize,
    kpt: usize,
    /// Pairs per column tile of the rhs panels, the first pair the product reads, and the
    /// column tile the panels given to `compute` start at.
    b_kpt: usize,
    b_k0: usize,
    b_tile0: usize,
    mr: usize,
}

impl Block {
    /// # Safety
    /// `out` points to a `[rows, cols]` matrix no other thread writes inside this block.
    unsafe fn compute(&self, isa: Isa, a: &[u32], b: &[u32], out: SendPtr<f32>, accumulate: bool) {
        let mut tile = [0.0f32; MR_AMX * NR];
        for k0 in (0..self.kpt).step_by(KC) {
            let kc = KC.min(self.kpt - k0);
            for i0 in (self.r0..self.r1).step_by(self.mr) {
                let a_panel = &a[i0 * self.kpt + k0..];
                for j0 in (self.c0..self.c1).step_by(NR) {
                    let b_at = (j0 / NR - self.b_tile0) * self.b_kpt * NR + (self.b_k0 + k0) * NR;
                    let b_panel = &b[b_at..][..kc * NR];
                    let (ni, nj) = (self.mr.min(self.r1 - i0), NR.min(self.c1 - j0));
                    let add = accumulate || k0 > 0;
                    #[cfg(target_arch = "x86_64")]
                    if isa == Isa::Avx512Bf16 && ni == MR && nj == NR {
                        // A whole tile goes from the registers straight into the output,
                        // without the round trip through `tile` (2% of a LoRA step).
                        assert!(a_panel.len() >= (MR - 1) * self.kpt + kc);
                        // SAFETY: the tier was verified; the panels' lengths are checked
                        // (above and by the slicing of b_panel); rows i0..i0 + MR and columns
                        // j0..j0 + NR lie inside this task's block of `out`.
                        unsafe {
                            let dst = out.at(i0 * self.cols + j0);
                            kernel_avx512bf16::<MR>(
                                dst, self.cols, add, a_panel, self.kpt, b_panel, kc,
                            )
                        };
                        continue;
                    }
                    kernel(isa, &mut tile, ni, a_panel, self.kpt, b_panel, kc);
                    for i in 0..ni {
                        // SAFETY: (i0 + i, j0..j0 + nj) lies inside this task's block.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(out.at((i0 + i) * self.cols + j0), nj)
                        };
                        let t = &tile[i * NR..i * NR + nj];
                        if add {
                            row.iter_mut().zip(t).for_each(|(o, v)| *o += v);
                        } else {
                            row.copy_from_slice(t);
                        }
                    }
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Amx {
            amx::release();
        }
    }
}

/// tile: [mr][NR] = a_panel (rows of stride `lda` pairs, `kc` pairs used) · b_panel [kc][NR].
#[inline]
/// `rows` (at most the tile height) are the rows the caller keeps; a kernel may compute
/// more, from the lhs panel's zero padding.
fn kernel(isa: Isa, tile: &mut [f32], rows: usize, a: &[u32], lda: usize, b: &[u32], kc: usize) {
    let (mr, _) = geometry(isa);
    assert!(a.len() >= (mr - 1) * lda + kc && b.len() >= kc * NR && tile.len() >= mr * NR);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: each arm runs only at a tier `cpu` verified this CPU (and OS) supports;
        // the panel lengths were checked above.
        match isa {
            Isa::Amx => return unsafe { amx::kernel(tile, a, lda, b, kc) },
            Isa::Avx512Bf16 => {
                // The last row tile of 256 tokens has 4 rows: a 4-row kernel skips the 8
                // padding rows (3% of every such product).
                let t = tile.as_mut_ptr();
                return unsafe {
                    match rows {
                        0..=4 => kernel_avx512bf16::<4>(t, NR, false, a, lda, b, kc),
                        5..=8 => kernel_avx512bf16::<8>(t, NR, false, a, lda, b, kc),
                        _ => kernel_avx512bf16::<MR>(t, NR, false, a, lda, b, kc),
                    }
                };
            }
            Isa::Avx512 => return unsafe { kernel_portable_avx512(tile, a, lda, b, kc) },
            Isa::Avx2 => return unsafe { kernel_portable_avx2(tile, a, lda, b, kc) },
            Isa::Baseline => {}
        }
    }
    kernel_portable(tile, a, lda, b, kc)
}

/// The portable kernel: bf16 pairs widened to f32 and multiplied with FMA, in the order
/// `vdpbf16ps` sums them (even element, then odd). Compiled per tier below.
#[inline(always)]
fn kernel_portable(tile: &mut [f32], a: &[u32], lda: usize, b: &[u32], kc: usize) {
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        let bp = &b[p * NR..p * NR + NR];
        let mut blo = [0.0f32; NR];
        let mut bhi = [0.0f32; NR];
        for j in 0..NR {
            blo[j] = f32::from_bits(bp[j] << 16);
            bhi[j] = f32::from_bits(bp[j] & 0xffff_0000);
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            let ap = a[i * lda + p];
            let (alo, ahi) = (f32::from_bits(ap << 16), f32::from_bits(ap & 0xffff_0000));
            for j in 0..NR {
                acc[j] = ahi.mul_add(bhi[j], alo.mul_add(blo[j], acc[j]));
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        tile[i * NR..i * NR + NR].copy_from_slice(acc);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn kernel_portable_avx512(tile: &mut [f32], a: &[u32], lda: usize, b: &[u32], kc: usize) {
    kernel_portable(tile, a, lda, b, kc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_portable_avx2(tile: &mut [f32], a: &[u32], lda: usize, b: &[u32], kc: usize) {
    kernel_portable(tile, a, lda, b, kc)
}

/// The AVX512_BF16 kernel: `M` (12, or 8 or 4 for a last row tile) rows × 32 columns of f32
/// sums in `2M` registers; per depth pair, two 16-column loads of the rhs and one broadcast
/// pair per row feed `2M` `vdpbf16ps`. The sums are stored to `dst` (rows `ldd` apart), or
/// added to it when `add`.
///
/// # Safety
/// AVX512_BF16 is available; `dst` holds M rows of NR floats, `ldd` apart; a holds M rows
/// of at least `kc` pairs, `lda` apart; b holds `kc × NR` pairs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512bf16<const M: usize>(
    dst: *mut f32,
    ldd: usize,
    add: bool,
    a: &[u32],
    lda: usize,
    b: &[u32],
    kc: usize,
) {
    use std::arch::x86_64::*;
    let (a, b) = (a.as_ptr(), b.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; M];
    for p in 0..kc {
        // SAFETY: `kernel` checked b holds kc × NR pairs and a holds rows of lda ≥ kc pairs.
        unsafe {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR).cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * NR + 16).cast()));
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(i * lda + p) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], ai, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], ai, b1);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: the caller guarantees MR rows of NR floats at dst, ldd apart.
        unsafe {
            let row = dst.add(i * ldd);
            let (mut lo, mut hi) = (acc[0], acc[1]);
            if add {
                lo = _mm512_add_ps(lo, _mm512_loadu_ps(row));
                hi = _mm512_add_ps(hi, _mm512_loadu_ps(row.add(16)));
            }
            _mm512_storeu_ps(row, lo);
            _mm512_storeu_ps(row.add(16), hi);
        }
    }
}

/// The AMX-BF16 kernel. No development machine has had AMX so far, so this path has not run
/// on hardware; the tests skip it with a message where the CPU lacks it.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{MR_AMX, NR};

    /// The tile configuration: palette 1; tmm0–3 hold the 2 × 2 C tiles (16 rows × 16 f32),
    /// tmm4–5 the two A tiles (16 rows × 32 bf16), tmm6–7 the two B tiles (16 pair rows ×
    /// 16 columns). Every tile is 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    const CONFIG: TileConfig = {
        let mut colsb = [0u16; 16];
        let mut rows = [0u8; 16];
        let mut t = 0;
        while t < 8 {
            colsb[t] = 64;
            rows[t] = 16;
            t += 1;
        }
        TileConfig {
            palette: 1,
            start_row: 0,
            reserved: [0; 14],
            colsb,
            rows,
        }
    };

    /// tile: [32][NR] = a (32 rows of stride `lda` pairs) · b [kc][NR]; kc is a multiple of 16
    /// (the packed depth is padded to it for AMX).
    ///
    /// # Safety
    /// The CPU and OS support AMX-BF16 (`cpu::isa() == Isa::Amx`), and the panels are as long
    /// as `super::kernel` checks.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn kernel(tile: &mut [f32], a: &[u32], lda: usize, b: &[u32], kc: usize) {
        debug_assert!(kc.is_multiple_of(16) && tile.len() >= MR_AMX * NR);
        let cfg = &CONFIG as *const TileConfig;
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), tile.as_mut_ptr());
        let a_stride = lda * 4;
        let b_stride = NR * 4;
        let c_stride = NR * 4;
        // SAFETY: the caller guarantees AMX is enabled; every tile load reads 16 rows of 64
        // bytes inside the panels (a: rows 0..32 of stride lda pairs, pairs p..p + 16 < kc;
        // b: pair rows p..p + 16 of 128 bytes), and the stores write the 32 × 32 tile buffer.
        unsafe {
            std::arch::asm!(
                "ldtilecfg [{cfg}]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                cfg = in(reg) cfg,
                options(nostack, readonly),
            );
            for p in (0..kc).step_by(16) {
                let a0 = a.add(p);
                let a1 = a.add(16 * lda + p);
                let b0 = b.add(p * NR);
                let b1 = b.add(p * NR + 16);
                std::arch::asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {sb}*1]",
                    "tileloadd tmm7, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a0,
                    a1 = in(reg) a1,
                    b0 = in(reg) b0,
                    b1 = in(reg) b1,
                    sa = in(reg) a_stride,
                    sb = in(reg) b_stride,
                    options(nostack, readonly),
                );
            }
            std::arch::asm!(
                "tilestored [{c00} + {sc}*1], tmm0",
                "tilestored [{c01} + {sc}*1], tmm1",
                "tilestored [{c10} + {sc}*1], tmm2",
                "tilestored [{c11} + {sc}*1], tmm3",
                c00 = in(reg) c,
                c01 = in(reg) c.add(16),
                c10 = in(reg) c.add(16 * NR),
                c11 = in(reg) c.add(16 * NR + 16),
                sc = in(reg) c_stride,
                options(nostack),
            );
        }
    }

    /// Releases the tile state at the end of a task, so the thread does not carry it
    /// (a larger XSAVE area) into unrelated work.
    pub(super) fn release() {
        // SAFETY: only called after `kernel`, on a CPU with AMX; TILERELEASE touches no memory.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    }
}

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
    pub h: &'a [f32],
    pub m: &'a [f32],
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
