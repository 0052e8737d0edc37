//! Training attention: forward with a saved log-sum-exp, and its backward.
//!
//! Both work on blocks of query rows of one head as small matrix products: the scores
//! `S = Q_blk · Kᵀ` of a block against every key it may see, a row-wise softmax, then
//! `O_blk = P · V`; the backward recomputes `P` the same way and forms `dP = dO_blk · Vᵀ`,
//! `dS`, `dQ_blk = dS · K`, `dK += dSᵀ · Q_blk` and `dV += Pᵀ · dO_blk`. Every product runs on
//! the f32 GEMM's register-tiled micro-kernels (one thread each; the blocks are the parallel
//! tasks), which reach several times the rate of the per-row vector loops this replaced.
//! Only the row-wise softmax and the `dS` formula are our own loops, compiled per
//! instruction set through [`crate::cpu::multiversion!`] (in [`super::rows`]).
//!
//! A block of `R` rows starting at `r0` sees keys `first_key(r0)..r0 + R`; each row masks the
//! keys outside its own `first_key(t)..=t` to a probability of exactly 0. Computing the
//! masked corner costs at most `R²/2` wasted multiply-adds per block.

use std::cell::Cell;

use rayon::prelude::*;

use super::AttnShape;
use super::rows::{score_grads, softmax_rows};
use crate::Precision;
use crate::gemm_bf16::{Panel, PanelView, Rhs, WINDOW_ALIGN, gemm_bf16};
use crate::matmul::{Operand, gemm_strided};

/// Query rows per block, at least. The backward's tasks each hold a partial dK and dV of
/// `T · hd`, so for long sequences the blocks grow to keep at most `MAX_BLOCKS` per head.
/// Both depend only on T, not on the thread count, so the order in which the partials are
/// added (and so the result's bits) is the same everywhere.
const MIN_ROWS: usize = 64;
const MAX_BLOCKS: usize = 8;

/// Query rows per block for a sequence of `t_len` tokens.
fn block_rows(t_len: usize) -> usize {
    MIN_ROWS.max(t_len.div_ceil(MAX_BLOCKS))
}

/// The first key query row `t` may attend: the start of its packed example, or 0 when
/// `starts` is empty (one causal sequence).
#[inline(always)]
pub(super) fn first_key(starts: &[u32], t: usize) -> usize {
    starts.get(t).map_or(0, |&s| s as usize)
}

thread_local! {
    /// Score and gradient blocks kept between calls, so a training step does not allocate
    /// (and page-fault) them per block. Taken out, not borrowed: nothing inside the closure
    /// can reach it again, as the products it runs are single-threaded.
    static WORK: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on `len` floats of this thread's work buffer (contents unspecified).
fn with_work<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut w = WORK.take();
    if w.len() < len {
        w.resize(len, 0.0);
    }
    let r = f(&mut w[..len]);
    WORK.set(w);
    r
}

/// dst: `[rows, cols]`, contiguous (=|+=) `lhs · rhs` on this thread, in the step's
/// precision: f32, or bf16 operands with f32 sums as every other product of a bf16 step.
/// A bf16 product reads `panel`, the same rhs packed beforehand, where there is one.
#[allow(clippy::too_many_arguments)]
fn product(
    precision: Precision,
    dst: &mut [f32],
    rows: usize,
    cols: usize,
    depth: usize,
    lhs: Operand,
    (rhs, panel): (Operand, Option<PanelView>),
    accumulate: bool,
) {
    let dst = &mut dst[..rows * cols];
    match precision {
        Precision::F32 => gemm_strided((dst, cols), rows, cols, depth, lhs, rhs, accumulate, 1),
        Precision::Bf16 => {
            let isa = crate::cpu::isa();
            let rhs = panel.map_or(Rhs::Strided(rhs), Rhs::Panel);
            gemm_bf16(isa, dst, rows, cols, depth, lhs, rhs, accumulate, 1)
        }
    }
}

/// Keys or values of every kv head packed once per call for the bf16 products that read
/// them, instead of once per (head, row block) product; empty in f32.
#[derive(Default)]
struct HeadPanels {
    /// As a `[hd, T]` rhs (`Xᵀ`, the scores' `Kᵀ` and `dP`'s `Vᵀ`).
    t: Vec<Panel>,
    /// As a `[T, hd]` rhs (`X`, the output's `V` and `dQ`'s `K`).
    n: Vec<Panel>,
}

impl HeadPanels {
    /// x: `[T, n_kv_heads * hd]`. Packs the layouts asked for, in bf16 only.
    fn new(precision: Precision, x: &[f32], s: AttnShape, t: bool, n: bool) -> HeadPanels {
        if precision != Precision::Bf16 {
            return HeadPanels::default();
        }
        let (hd, kv_row) = (s.head_dim, s.n_kv_heads * s.head_dim);
        let t_len = x.len() / kv_row;
        let isa = crate::cpu::isa();
        let pack = |transposed: bool| -> Vec<Panel> {
            (0..s.n_kv_heads)
                .into_par_iter()
                .map(|g| {
                    let mut p = Panel::default();
                    let x = &x[g * hd..];
                    if transposed {
                        p.pack(isa, (x, 1, kv_row), hd, t_len);
                    } else {
                        p.pack(isa, (x, kv_row, 1), t_len, hd);
                    }
                    p
                })
                .collect()
        };
        HeadPanels {
            t: if t { pack(true) } else { Vec::new() },
            n: if n { pack(false) } else { Vec::new() },
        }
    }

    /// Kv head g's keys `k0..` as the `[hd, keys]` rhs, if packed.
    fn t_from(&self, g: usize, k0: usize) -> Option<PanelView<'_>> {
        self.t.get(g).map(|p| p.view(0, k0))
    }

    /// Kv head g's keys `k0..` as the `[keys, hd]` rhs, if packed.
    fn n_from(&self, g: usize, k0: usize) -> Option<PanelView<'_>> {
        self.n.get(g).map(|p| p.view(k0, 0))
    }
}

/// The first key a block of rows from `r0` reads: its first row's, aligned down so that
/// the keys are a window of the packed panels. The keys before the first one a row sees get
/// probability 0 like any other masked key.
fn block_first_key(starts: &[u32], r0: usize) -> usize {
    first_key(starts, r0) / WINDOW_ALIGN * WINDOW_ALIGN
}

/// One query head's block: where its rows and keys lie in the row-major q, k, v buffers.
#[derive(Clone, Copy)]
struct Block {
    /// First query row and number of rows.
    r0: usize,
    rows: usize,
    /// First key any row of the block sees; keys run `k0..r0 + rows`.
    k0: usize,
    /// The kv head, and the offsets of this query head in a q row and of its kv head in a
    /// k/v row.
    g: usize,
    q_off: usize,
    kv_off: usize,
    q_row: usize,
    kv_row: usize,
    hd: usize,
}

impl Block {
    fn new(s: AttnShape, starts: &[u32], h: usize, r0: usize, rows: usize) -> Block {
        let hd = s.head_dim;
        let g = h / (s.n_heads / s.n_kv_heads);
        Block {
            r0,
            rows,
            k0: block_first_key(starts, r0),
            g,
            q_off: h * hd,
            kv_off: g * hd,
            q_row: s.n_heads * hd,
            kv_row: s.n_kv_heads * hd,
            hd,
        }
    }

    fn keys(&self) -> usize {
        self.r0 + self.rows - self.k0
    }

    /// The block's rows of a `[T, n_heads * hd]` buffer (q, dout, out), as a `[rows, hd]`
    /// operand.
    fn rows_of<'a>(&self, x: &'a [f32]) -> (&'a [f32], usize, usize) {
        (&x[self.r0 * self.q_row + self.q_off..], self.q_row, 1)
    }

    /// Its keys of a `[T, n_kv_heads * hd]` buffer (k, v), as a `[keys, hd]` operand.
    fn keys_of<'a>(&self, x: &'a [f32]) -> (&'a [f32], usize, usize) {
        (&x[self.k0 * self.kv_row + self.kv_off..], self.kv_row, 1)
    }

    /// The same keys transposed, `[hd, keys]`, read in place.
    fn keys_t_of<'a>(&self, x: &'a [f32]) -> (&'a [f32], usize, usize) {
        (&x[self.k0 * self.kv_row + self.kv_off..], 1, self.kv_row)
    }

    /// `sc = Q_blk · K_blkᵀ`: `[rows, keys]`, unscaled. `kt`: the keys packed as `Kᵀ`.
    fn scores(&self, precision: Precision, sc: &mut [f32], q: &[f32], k: &[f32], kt: &HeadPanels) {
        let q = self.rows_of(q);
        let kt = (self.keys_t_of(k), kt.t_from(self.g, self.k0));
        product(precision, sc, self.rows, self.keys(), self.hd, q, kt, false);
    }
}

/// out: [T, n_heads*hd] (overwrites), lse: [n_heads, T] (overwrites; log-sum-exp of the
/// scaled scores of each query row, saved for backward), q: [T, n_heads*hd],
/// k, v: [T, n_kv_heads*hd].
///
/// Training attention over one causal sequence of `T` tokens at positions `0..T`. Instead
/// of the `T × T` probabilities, only the per-row log-sum-exp is kept: with it the backward
/// recomputes any probability as `exp(score - lse)` (FlashAttention's trick).
///
/// `out` equals what [`super::attention`] gives with `pos0 = 0` to about 1e-6 relative, not
/// bit for bit: the products sum in the GEMM's order and the exp is the vectorized
/// [`fastmath::exp`], where inference keeps the scalar operation order its llama2.c golden
/// outputs were taken with.
///
/// `starts`: empty for one causal sequence, else `[T]`, the first position of the packed
/// example each row belongs to (non-decreasing, `starts[t] ≤ t`): row `t` then attends only
/// keys `starts[t]..=t`, so no example sees another, and the result for each example is
/// what it would be alone.
///
/// `precision`: with [`Precision::Bf16`] the two products (and the backward's five) take
/// bf16 operands with f32 sums, as every other product of a bf16 step; the softmax, `lse`
/// and the score gradients stay f32.
///
/// Parallel over (head, block of rows); allocates a head-major copy of the output
/// (`T · n_heads · hd` floats) and per-thread score blocks of `O(rows · T)`.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_train(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    s: AttnShape,
    precision: Precision,
) {
    let (t_len, _) = check_train_shapes(q, k, v, s);
    check_starts(starts, t_len);
    let hd = s.head_dim;
    assert_eq!(
        out.len(),
        q.len(),
        "attention_forward_train: out is not like q"
    );
    assert_eq!(
        lse.len(),
        s.n_heads * t_len,
        "attention_forward_train: lse is not [n_heads, T]"
    );
    if t_len == 0 {
        return;
    }
    let rows = block_rows(t_len);
    let scale = 1.0 / (hd as f32).sqrt();
    let isa = crate::cpu::isa();
    // Tasks own (head, row block) pieces of a head-major output, `[n_heads][T][hd]`, which
    // are contiguous; one pass afterwards interleaves the heads into `out`.
    let mut by_head = vec![0.0; out.len()];
    let (k_panels, v_panels) = (
        HeadPanels::new(precision, k, s, true, false),
        HeadPanels::new(precision, v, s, false, true),
    );
    by_head
        .par_chunks_mut(t_len * hd)
        .zip(lse.par_chunks_mut(t_len))
        .enumerate()
        .for_each(|(h, (o_h, lse_h))| {
            o_h.par_chunks_mut(rows * hd)
                .zip(lse_h.par_chunks_mut(rows))
                .enumerate()
                .for_each(|(b, (o, lse_b))| {
                    let blk = Block::new(s, starts, h, b * rows, lse_b.len());
                    let kc = blk.keys();
                    with_work(blk.rows * kc, |p| {
                        blk.scores(precision, p, q, k, &k_panels);
                        softmax_rows(isa, p, lse_b, starts, blk.r0, blk.k0, scale);
                        let p = (&*p, kc, 1);
                        let v = (blk.keys_of(v), v_panels.n_from(blk.g, blk.k0));
                        product(precision, o, blk.rows, hd, kc, p, v, false);
                    });
                });
        });
    let q_row = s.n_heads * hd;
    out.par_chunks_mut(q_row)
        .enumerate()
        .for_each(|(t, out_t)| {
            for (h, o) in out_t.chunks_exact_mut(hd).enumerate() {
                o.copy_from_slice(&by_head[(h * t_len + t) * hd..][..hd]);
            }
        });
}

/// Where the parts of [`attention_backward`]'s scratch lie, for a sequence of T tokens:
/// one part per task (kv head g, row block b), g-major, each
/// `[dq: group × rows × hd][dK: T × hd][dV: T × hd]`.
#[derive(Clone, Copy)]
struct BackwardLayout {
    /// Query rows per block (the last block may have fewer).
    rows: usize,
    /// Row blocks per kv head.
    blocks: usize,
    dq: usize,
    dkv: usize,
    task: usize,
}

impl BackwardLayout {
    fn new(t_len: usize, s: AttnShape) -> BackwardLayout {
        let hd = s.head_dim;
        let rows = block_rows(t_len);
        let dq = s.n_heads / s.n_kv_heads * rows * hd;
        let dkv = t_len * hd;
        BackwardLayout {
            rows,
            blocks: t_len.div_ceil(rows),
            dq,
            dkv,
            task: dq + 2 * dkv,
        }
    }

    fn len(&self, s: AttnShape) -> usize {
        s.n_kv_heads * self.blocks * self.task
    }
}

/// Floats of scratch [`attention_backward`] needs for a sequence of `t` tokens: each of at
/// most `MAX_BLOCKS` row blocks per kv head holds a partial dK and dV (`2 · T · hd`) and its
/// rows' dq.
pub fn attention_backward_scratch_len(t: usize, s: AttnShape) -> usize {
    BackwardLayout::new(t, s).len(s)
}

/// One task of [`attention_backward`]: kv head `g`, query rows `r0..r0 + rows` of each query
/// head that reads it.
///
/// dq_part: [group, rows, hd] (overwrites): those rows' dq. dk_part, dv_part: [T, hd]
/// (overwrites rows `0..r0 + rows`, the only ones these rows' keys reach, zeros before the
/// first key): this block's contribution to kv head g's dK and dV. The rest as in
/// [`attention_backward`].
#[allow(clippy::too_many_arguments)]
fn backward_block(
    dq_part: &mut [f32],
    dk_part: &mut [f32],
    dv_part: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    g: usize,
    r0: usize,
    s: AttnShape,
    precision: Precision,
    (k_panels, v_panels): (&HeadPanels, &HeadPanels),
) {
    let hd = s.head_dim;
    let group = s.n_heads / s.n_kv_heads;
    let t_len = lse.len() / s.n_heads;
    let rows = dq_part.len() / (group * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let isa = crate::cpu::isa();
    let t1 = r0 + rows;
    dk_part[..t1 * hd].fill(0.0);
    dv_part[..t1 * hd].fill(0.0);
    let k0 = block_first_key(starts, r0);
    let (dk_keys, dv_keys) = (
        &mut dk_part[k0 * hd..t1 * hd],
        &mut dv_part[k0 * hd..t1 * hd],
    );
    let kc = t1 - k0;
    with_work(2 * rows * kc + rows, |work| {
        let (p, rest) = work.split_at_mut(rows * kc);
        let (ds, d) = rest.split_at_mut(rows * kc);
        for (hg, dq_h) in dq_part.chunks_exact_mut(rows * hd).enumerate() {
            let h = g * group + hg;
            let blk = Block::new(s, starts, h, r0, rows);
            let (q_blk, do_blk) = (blk.rows_of(q), blk.rows_of(dout));
            // D = rowsum(dO ⊙ O), which equals Σ_j p_j dp_j.
            for (r, d_r) in d.iter_mut().enumerate() {
                let at = (r0 + r) * blk.q_row + blk.q_off;
                *d_r = crate::simd::dot(&dout[at..][..hd], &out[at..][..hd]);
            }
            blk.scores(precision, p, q, k, k_panels);
            let vt = (blk.keys_t_of(v), v_panels.t_from(g, k0));
            product(precision, ds, rows, kc, hd, do_blk, vt, false);
            let lse_b = &lse[h * t_len + r0..][..rows];
            score_grads(isa, p, ds, lse_b, d, starts, r0, k0, scale);
            let (p, ds) = (&*p, &*ds);
            // dQ_blk = dS · K; dK += dSᵀ · Q_blk; dV += Pᵀ · dO_blk (Pᵀ and dSᵀ read in place).
            let k_blk = (blk.keys_of(k), k_panels.n_from(g, k0));
            product(precision, dq_h, rows, hd, kc, (ds, kc, 1), k_blk, false);
            let (q_blk, do_blk) = ((q_blk, None), (do_blk, None));
            product(precision, dk_keys, kc, hd, rows, (ds, 1, kc), q_blk, true);
            product(precision, dv_keys, kc, hd, rows, (p, 1, kc), do_blk, true);
        }
    });
}

/// dq: [T, n_heads*hd] (+=), dk, dv: [T, n_kv_heads*hd] (+=), dout: [T, n_heads*hd], out and
/// lse from the forward, q, k, v and starts as in forward. scratch: at least
/// attention_backward_scratch_len(T, s) floats.
///
/// FlashAttention-2's backward: with `p_j = exp(s_j - lse)` (recomputed exactly as the
/// forward computed it), `D = dout · out` (which equals `Σ_j p_j dp_j`), `dp_j = dout · v_j`
/// and `ds_j = p_j (dp_j - D)`, it adds `scale · ds_j · k_j` to dq, `scale · ds_j · q` to
/// dk_j and `p_j · dout` to dv_j.
///
/// Work is split into tasks per (kv head, block of query rows) and run in parallel. A task
/// owns the dq of its rows (for the query heads that read its kv head) and its own partial
/// dK and dV; no two tasks write the same memory, and there are no atomics. Afterwards each
/// output element receives one addition: its dq part, or the sum of the partial dK/dV of
/// the blocks that reach it, taken in block order. The split depends only on T and the
/// shape, so the result has the same bits on every run, for any thread count.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    s: AttnShape,
    precision: Precision,
) {
    let (t_len, group) = check_train_shapes(q, k, v, s);
    check_starts(starts, t_len);
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let (q_row, kv_row) = (n_heads * hd, n_kv_heads * hd);
    assert!(
        dq.len() == q.len() && dout.len() == q.len() && out.len() == q.len(),
        "attention_backward: dq, dout or out is not like q"
    );
    assert!(
        dk.len() == k.len() && dv.len() == v.len(),
        "attention_backward: dk or dv is not like k"
    );
    assert_eq!(
        lse.len(),
        n_heads * t_len,
        "attention_backward: lse is not [n_heads, T]"
    );
    let lay = BackwardLayout::new(t_len, s);
    assert!(
        scratch.len() >= lay.len(s),
        "attention_backward: scratch is shorter than attention_backward_scratch_len"
    );
    if t_len == 0 {
        return;
    }
    let tasks = &mut scratch[..lay.len(s)];
    let (k_panels, v_panels) = (
        HeadPanels::new(precision, k, s, true, true),
        HeadPanels::new(precision, v, s, true, false),
    );
    tasks
        .par_chunks_mut(lay.task)
        .enumerate()
        .for_each(|(idx, part)| {
            let (g, b) = (idx / lay.blocks, idx % lay.blocks);
            let r0 = b * lay.rows;
            let rows = lay.rows.min(t_len - r0);
            let (dq_part, rest) = part.split_at_mut(lay.dq);
            let (dk_part, dv_part) = rest.split_at_mut(lay.dkv);
            backward_block(
                &mut dq_part[..group * rows * hd],
                dk_part,
                dv_part,
                dout,
                out,
                lse,
                q,
                k,
                v,
                starts,
                g,
                r0,
                s,
                precision,
                (&k_panels, &v_panels),
            );
        });

    // Add the parts into the strided outputs, in parallel over row blocks (each owns its
    // rows of dq, dk and dv). Key row j of kv head g is reached by the row blocks at or
    // after j's own; their partials are summed in block order, then added once.
    let tasks = &*tasks;
    let part = |g: usize, b: usize| &tasks[(g * lay.blocks + b) * lay.task..][..lay.task];
    dq.par_chunks_mut(lay.rows * q_row)
        .zip(dk.par_chunks_mut(lay.rows * kv_row))
        .zip(dv.par_chunks_mut(lay.rows * kv_row))
        .enumerate()
        .for_each(|(b, ((dq_b, dk_b), dv_b))| {
            let (r0, rows) = (b * lay.rows, dk_b.len() / kv_row);
            let (mut sk, mut sv) = (vec![0.0f32; hd], vec![0.0f32; hd]);
            for g in 0..n_kv_heads {
                let dq_part = &part(g, b)[..group * rows * hd];
                for (hg, dq_h) in dq_part.chunks_exact(rows * hd).enumerate() {
                    let h = g * group + hg;
                    for (r, src) in dq_h.chunks_exact(hd).enumerate() {
                        add(&mut dq_b[r * q_row + h * hd..][..hd], src);
                    }
                }
                for r in 0..rows {
                    let at = (r0 + r) * hd;
                    let dk_r = &mut dk_b[r * kv_row + g * hd..][..hd];
                    let dv_r = &mut dv_b[r * kv_row + g * hd..][..hd];
                    // Whole rows at a time (vectorized), in block order from zero.
                    sk.fill(0.0);
                    sv.fill(0.0);
                    for later in b..lay.blocks {
                        let p = &part(g, later)[lay.dq..];
                        add(&mut sk, &p[at..][..hd]);
                        add(&mut sv, &p[lay.dkv + at..][..hd]);
                    }
                    add(dk_r, &sk);
                    add(dv_r, &sv);
                }
            }
        });
}

/// y += x.
#[inline]
fn add(y: &mut [f32], x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// Packed-example starts must be empty or one per row, each at or before its row and never
/// decreasing (the kernels rely on both to bound each block's keys).
fn check_starts(starts: &[u32], t_len: usize) {
    if starts.is_empty() {
        return;
    }
    assert_eq!(starts.len(), t_len, "attention: starts is not [T]");
    for (t, w) in starts.windows(2).enumerate() {
        assert!(
            w[0] <= w[1] && w[1] as usize <= t + 1,
            "attention: starts decrease or point past their row at {}",
            t + 1
        );
    }
    assert_eq!(
        starts[0], 0,
        "attention: the first row's example must start at 0"
    );
}

/// Checks the training shapes; returns `(T, n_heads / n_kv_heads)`.
fn check_train_shapes(q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> (usize, usize) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    assert!(
        hd > 0 && n_kv_heads > 0 && n_heads.is_multiple_of(n_kv_heads),
        "attention: n_heads must be a multiple of n_kv_heads, head_dim non-zero"
    );
    let t_len = q.len() / (n_heads * hd);
    assert_eq!(
        q.len(),
        t_len * n_heads * hd,
        "attention: q is not [T, n_heads * hd]"
    );
    assert!(
        k.len() == t_len * n_kv_heads * hd && v.len() == k.len(),
        "attention: k or v is not [T, n_kv_heads * hd]"
    );
    (t_len, n_heads / n_kv_heads)
}
