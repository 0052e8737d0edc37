//! Products with a narrow side: the rank-`r` factors of a LoRA adapter.
//!
//! Four of an adapter's products have one side of `r` (8 to 64): `h = x · Aᵀ` and
//! `dh = dy · B` (a wide `[m, k]` matrix times a narrow `[k, r]` one), and `dB += dyᵀ · h`
//! and `dAᵀ += xᵀ · dh` (a wide matrix read transposed times a narrow `[n, r]` one). A
//! general GEMM packs both operands and tiles for square-ish outputs, which here costs more
//! than the arithmetic. These loops keep a block of the narrow operand in registers per
//! depth step and read the wide operand once, straight from memory, in f32.
//!
//! Each output element is summed by one task in a fixed order, so results do not depend on
//! the thread count.
//!
//! Below AVX-512 the products go to the `gemm` crate instead: with 16 vector registers the
//! loops hold too few sums to keep the FMA units busy (measured on Zen 4 under
//! `NF_ISA=avx2`: 1.35× the gemm crate's time).

use rayon::prelude::*;

use crate::cpu::{self, Isa, multiversion};
use crate::matmul::{Operand, gemm_strided, threads_for};

/// Columns per register block: one AVX-512 register, two AVX2 ones.
const LANES: usize = 16;
/// Output rows per register block: 6 × 16 sums fit AVX2's sixteen registers with room for
/// the narrow operand's row.
const ROWS: usize = 6;

/// A strided f32 matrix: element `(i, j)` is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> Strided<'a> {
    /// A row-major `[_, cols]` matrix.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Strided {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major `[_, cols]` matrix.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Strided {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }

    fn check(&self, rows: usize, cols: usize, what: &str) {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
            assert!(last < self.data.len(), "lowrank: {what} too short");
        }
    }

    fn operand(&self) -> Operand<'a> {
        (self.data, self.row_stride, self.col_stride)
    }

    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// Checks the operands of either product: `out` `[m, r]`, `wide` `[rows, cols]` read by
/// rows, `narrow` `[depth, r]`.
fn check_shapes(
    (out, m): (&[f32], usize),
    wide: Strided,
    narrow: Strided,
    (rows, cols): (usize, usize),
    (depth, r): (usize, usize),
) {
    assert_eq!(out.len(), m * r, "lowrank: out is not [m, r]");
    assert_eq!(
        wide.col_stride, 1,
        "lowrank: the wide operand is read by rows"
    );
    wide.check(rows, cols, "wide operand");
    narrow.check(depth, r, "narrow operand");
}

/// `narrow`'s `[depth][r rounded up to LANES]` copy, zero-padded, so the kernels load whole
/// registers of it.
fn pad_narrow(narrow: Strided, depth: usize, r: usize) -> (Vec<f32>, usize) {
    let rp = r.next_multiple_of(LANES);
    let mut v = vec![0.0; depth * rp];
    for (p, row) in v.chunks_exact_mut(rp).enumerate() {
        for (j, x) in row[..r].iter_mut().enumerate() {
            *x = narrow.at(p, j);
        }
    }
    (v, rp)
}

/// out: [m, r] row-major (= or +=) `wide [m, k] · narrow [k, r]`, wide row-major: `h = x · Aᵀ` (narrow =
/// Aᵀ, [`Strided::transposed`] of A) and `dh = dy · B` (narrow = B).
#[allow(clippy::too_many_arguments)]
pub fn wide_times_narrow(
    out: &mut [f32],
    wide: Strided,
    narrow: Strided,
    m: usize,
    k: usize,
    r: usize,
    accumulate: bool,
) {
    let threads = threads_for(m * k * r);
    wide_times_narrow_with(cpu::isa(), threads, out, wide, narrow, m, k, r, accumulate);
}

/// [`wide_times_narrow`] on a given instruction-set tier and thread count.
#[allow(clippy::too_many_arguments)]
pub fn wide_times_narrow_with(
    isa: Isa,
    threads: usize,
    out: &mut [f32],
    wide: Strided,
    narrow: Strided,
    m: usize,
    k: usize,
    r: usize,
    accumulate: bool,
) {
    check_shapes((out, m), wide, narrow, (m, k), (k, r));
    if isa < Isa::Avx512 {
        let (lhs, rhs) = ((wide.data, wide.row_stride, 1), narrow.operand());
        return gemm_strided((out, r), m, r, k, lhs, rhs, accumulate, threads);
    }
    let (nar, rp) = pad_narrow(narrow, k, r);
    let rs = wide.row_stride;
    for_row_blocks(out, m, r, threads, |i0, out| {
        block(
            isa,
            out,
            wide.data,
            i0 * rs,
            rs,
            1,
            &nar,
            rp,
            k,
            r,
            accumulate,
        )
    });
}

/// out: [m, r] row-major (+=) `wideᵀ · narrow`, wide `[n, m]` row-major, narrow `[n, r]`:
/// `dB += dyᵀ · h` and `dAᵀ += xᵀ · dh`.
pub fn wide_t_times_narrow(
    out: &mut [f32],
    wide: Strided,
    narrow: Strided,
    n: usize,
    m: usize,
    r: usize,
) {
    let threads = threads_for(m * n * r);
    wide_t_times_narrow_with(cpu::isa(), threads, out, wide, narrow, n, m, r);
}

/// [`wide_t_times_narrow`] on a given instruction-set tier and thread count.
#[allow(clippy::too_many_arguments)]
pub fn wide_t_times_narrow_with(
    isa: Isa,
    threads: usize,
    out: &mut [f32],
    wide: Strided,
    narrow: Strided,
    n: usize,
    m: usize,
    r: usize,
) {
    check_shapes((out, m), wide, narrow, (n, m), (n, r));
    if isa < Isa::Avx512 {
        let (lhs, rhs) = ((wide.data, 1, wide.row_stride), narrow.operand());
        return gemm_strided((out, r), m, r, n, lhs, rhs, true, threads);
    }
    let (nar, rp) = pad_narrow(narrow, n, r);
    let rs = wide.row_stride;
    for_row_blocks(out, m, r, threads, |j0, out| {
        block(isa, out, wide.data, j0, 1, rs, &nar, rp, n, r, true)
    });
}

/// out: [r, m] row-major (+=) `narrowᵀ · wide`, narrow `[n, r]`, wide `[n, m]` row-major:
/// `dA += dhᵀ · x`, computed as [`wide_t_times_narrow`] and added transposed.
pub fn narrow_t_times_wide(
    out: &mut [f32],
    narrow: Strided,
    wide: Strided,
    n: usize,
    r: usize,
    m: usize,
) {
    assert_eq!(out.len(), r * m, "narrow_t_times_wide: out is not [r, m]");
    let mut t = vec![0.0; m * r];
    wide_t_times_narrow(&mut t, wide, narrow, n, m, r);
    for (j, row) in out.chunks_exact_mut(m.max(1)).enumerate().take(r) {
        row.iter_mut()
            .zip(t.iter().skip(j).step_by(r))
            .for_each(|(o, v)| *o += v);
    }
}

/// Runs `f(first_row, rows)` over blocks of whole output rows on `threads` threads.
fn for_row_blocks(
    out: &mut [f32],
    m: usize,
    r: usize,
    threads: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    if m == 0 || r == 0 {
        return;
    }
    let threads = threads.max(1);
    // One task per thread (more tasks measured slower: each is a wake-up), whole
    // register blocks each.
    let per_task = m.div_ceil(threads).next_multiple_of(ROWS);
    if threads == 1 {
        out.chunks_mut(per_task * r)
            .enumerate()
            .for_each(|(t, block)| f(t * per_task, block));
    } else {
        out.par_chunks_mut(per_task * r)
            .enumerate()
            .for_each(|(t, block)| f(t * per_task, block));
    }
}

multiversion!(block => block_generic(
    out: &mut [f32],
    a: &[f32],
    start: usize,
    si: usize,
    sp: usize,
    nar: &[f32],
    rp: usize,
    depth: usize,
    r: usize,
    accumulate: bool,
));

/// out: `[rows, r]` (= or +=) the block's rows of the wide operand times the narrow one:
/// row `i` of the block, element `p`, is `a[start + i·si + p·sp]` (`si` = the row stride
/// and `sp` = 1 for `wide`, the other way round for `wideᵀ`); narrow padded to
/// `[depth][rp]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn block_generic(
    out: &mut [f32],
    a: &[f32],
    start: usize,
    si: usize,
    sp: usize,
    nar: &[f32],
    rp: usize,
    depth: usize,
    r: usize,
    accumulate: bool,
) {
    let rows = out.len() / r;
    let full = rows - rows % ROWS;
    let at = |b0: usize| start + b0 * si;
    for b0 in (0..full).step_by(ROWS) {
        for c0 in (0..rp).step_by(LANES) {
            let acc = sum_block::<ROWS>(a, at(b0), si, sp, nar, rp, c0, depth);
            store(out, &acc, b0, c0, r, accumulate);
        }
    }
    for b0 in full..rows {
        for c0 in (0..rp).step_by(LANES) {
            let acc = sum_block::<1>(a, at(b0), si, sp, nar, rp, c0, depth);
            store(out, &acc, b0, c0, r, accumulate);
        }
    }
}

/// `acc[i][c] = Σ_p a[start + i·si + p·sp] · nar[p·rp + c0 + c]` for `NB` rows and `LANES`
/// columns: the one inner loop of both products, one broadcast and one FMA per sum and step.
/// `NB` is fixed at compile time, so the sums live in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sum_block<const NB: usize>(
    a: &[f32],
    start: usize,
    si: usize,
    sp: usize,
    nar: &[f32],
    rp: usize,
    c0: usize,
    depth: usize,
) -> [[f32; LANES]; NB] {
    let mut acc = [[0.0f32; LANES]; NB];
    if depth == 0 {
        return acc;
    }
    // One check for the whole block, so the loop below carries none.
    assert!(
        start + (NB - 1) * si + (depth - 1) * sp < a.len(),
        "lowrank: wide operand"
    );
    assert!(
        (depth - 1) * rp + c0 + LANES <= nar.len(),
        "lowrank: narrow operand"
    );
    for p in 0..depth {
        // SAFETY: p < depth and c0 + LANES ≤ rp, inside the bound asserted above.
        let v: [f32; LANES] = unsafe { *nar.as_ptr().add(p * rp + c0).cast::<[f32; LANES]>() };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i < NB and p < depth, inside the bound asserted above.
            let x = unsafe { *a.get_unchecked(start + i * si + p * sp) };
            for (s, &y) in acc.iter_mut().zip(&v) {
                *s = x.mul_add(y, *s);
            }
        }
    }
    acc
}

/// Writes (or adds) a register block's sums to rows `b0..` and columns `c0..` of `out`,
/// dropping the padding columns past `r`.
#[inline(always)]
fn store(out: &mut [f32], acc: &[[f32; LANES]], b0: usize, c0: usize, r: usize, add: bool) {
    let nc = LANES.min(r - c0);
    for (i, acc) in acc.iter().enumerate() {
        let row = &mut out[(b0 + i) * r + c0..(b0 + i) * r + c0 + nc];
        if add {
            row.iter_mut().zip(acc).for_each(|(o, s)| *o += s);
        } else {
            row.copy_from_slice(&acc[..nc]);
        }
    }
}

/// Reference: `out (=|+=) lhs · rhs` with lhs `[m, k]` and rhs `[k, r]`, summed in f64.
pub fn product_naive(
    out: &mut [f32],
    lhs: Strided,
    rhs: Strided,
    (m, k, r): (usize, usize, usize),
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..r {
            let s: f64 = (0..k)
                .map(|p| lhs.at(i, p) as f64 * rhs.at(p, j) as f64)
                .sum();
            let o = &mut out[i * r + j];
            *o = if accumulate {
                (*o as f64 + s) as f32
            } else {
                s as f32
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close};

    /// (m, k, r): ranks that fill whole registers and ones that do not, row counts that
    /// leave a partial register block, and an empty side.
    const SHAPES: &[(usize, usize, usize)] = &[
        (1, 1, 1),
        (7, 33, 16),
        (13, 64, 8),
        (40, 100, 17),
        (256, 96, 32),
        (5, 0, 16),
    ];

    #[test]
    fn wide_times_narrow_matches_the_reference_on_every_tier() {
        let mut rng = Rng::new(41);
        for isa in Isa::available() {
            for &(m, k, r) in SHAPES {
                let x = rng.vec(m * k);
                // The narrow side both ways it arrives: Aᵀ of a row-major A, and B itself.
                let a = rng.vec(r * k);
                for narrow in [Strided::transposed(&a, k), Strided::rows(&a, r)] {
                    for accumulate in [false, true] {
                        let start = rng.vec(m * r);
                        let (mut fast, mut slow) = (start.clone(), start);
                        let wide = Strided::rows(&x, k);
                        let (o, t) = (&mut fast, 2);
                        wide_times_narrow_with(isa, t, o, wide, narrow, m, k, r, accumulate);
                        product_naive(&mut slow, wide, narrow, (m, k, r), accumulate);
                        assert_close(&fast, &slow, 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn wide_t_times_narrow_matches_the_reference_on_every_tier() {
        let mut rng = Rng::new(42);
        for isa in Isa::available() {
            for &(m, n, r) in SHAPES {
                let (w, q) = (rng.vec(n * m), rng.vec(n * r));
                let start = rng.vec(m * r);
                let (mut fast, mut slow) = (start.clone(), start);
                let (wide, narrow) = (Strided::rows(&w, m), Strided::rows(&q, r));
                wide_t_times_narrow_with(isa, 2, &mut fast, wide, narrow, n, m, r);
                product_naive(
                    &mut slow,
                    Strided::transposed(&w, m),
                    narrow,
                    (m, n, r),
                    true,
                );
                assert_close(&fast, &slow, 1e-5);
            }
        }
    }

    #[test]
    fn narrow_t_times_wide_adds_the_transposed_product() {
        let mut rng = Rng::new(44);
        for &(m, n, r) in SHAPES {
            let (q, w) = (rng.vec(n * r), rng.vec(n * m));
            let start = rng.vec(r * m);
            let (mut fast, mut slow) = (start.clone(), start);
            narrow_t_times_wide(
                &mut fast,
                Strided::rows(&q, r),
                Strided::rows(&w, m),
                n,
                r,
                m,
            );
            let (lhs, rhs) = (Strided::transposed(&q, r), Strided::rows(&w, m));
            product_naive(&mut slow, lhs, rhs, (r, n, m), true);
            assert_close(&fast, &slow, 1e-5);
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        // Large enough to run in parallel; each element has one fixed summation order.
        let mut rng = Rng::new(43);
        let (m, k, r) = (300, 576, 16);
        let (x, a) = (rng.vec(m * k), rng.vec(r * k));
        let run = |threads: usize| {
            let mut out = vec![0.0; m * r];
            let (wide, narrow) = (Strided::rows(&x, k), Strided::transposed(&a, k));
            let isa = cpu::isa();
            wide_times_narrow_with(isa, threads, &mut out, wide, narrow, m, k, r, false);
            out
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }
}
