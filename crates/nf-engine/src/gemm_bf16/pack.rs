//! Packing operands into the bf16 pair panels the kernels read.
//!
//! The lhs becomes row-major pairs `[rows][kpt]`; the rhs becomes `[col tile][kpt][NR]`,
//! packed from a strided f32 matrix or straight from a frozen [`Weight`] (decoded a row at a
//! time, or by [`super::block_tile`] for 32-value block types), in one pass over all column
//! tiles or a tile at a time. Every packer writes every element, padding included.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::block_tile;
use super::{NR, Rhs, SendPtr, Term, pair};
use crate::cpu::{Isa, multiversion};
use crate::linear::Weight;
use crate::matmul::Operand;

/// Packs each term's lhs `[rows, depth]` into its pairs of row-major `[rows][kpt]`, from
/// its offset on; the pairs past the last term are zero.
pub(super) fn pack_lhs(
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
pub(super) fn pairs_from_row(dst: &mut [u32], row: &[f32]) {
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
pub(super) fn pack_rhs(
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
pub(super) fn pack_column_tile(
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

/// Whether a rhs is packed one column tile at a time: not one packed beforehand, and not
/// `W` itself, which is decoded by rows unless its blocks are one tile wide and AVX-512 is
/// there.
pub(super) fn tile_packs(isa: Isa, rhs: Rhs) -> bool {
    match rhs {
        #[cfg(target_arch = "x86_64")]
        Rhs::Weight(w) | Rhs::WeightRows(w, _) => isa >= Isa::Avx512 && block_tile::handles_w(w),
        #[cfg(not(target_arch = "x86_64"))]
        Rhs::Weight(_) | Rhs::WeightRows(..) => {
            let _ = isa;
            false
        }
        // Already packed whole.
        Rhs::Packed(_) | Rhs::PackedT(_) | Rhs::Panel(_) => false,
        Rhs::Strided(_) | Rhs::WeightT(_) => true,
    }
}

/// Per-task buffers of rhs packing: dequantized or gathered f32 rows or columns, and the
/// bf16 pairs of a tile's columns before they are transposed into place.
#[derive(Default)]
pub(super) struct Scratch {
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
pub(super) fn transpose_pairs(dst: &mut [u32], pairs: &[u32], kp: usize, nj: usize, wide: bool) {
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
pub(super) unsafe fn transpose16_avx512(dst: *mut u32, ds: usize, src: *const u32, ss: usize) {
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
pub(super) fn interleave_rows(dst: &mut [u32], r0: &[f32], r1: &[f32]) {
    for ((d, &lo), &hi) in dst.iter_mut().zip(r0).zip(r1) {
        *d = pair(lo, hi);
    }
}
