//! Causal grouped-query attention over a key/value cache.
//!
//! Query head `h` reads key/value head `h / (n_heads / n_kv_heads)`: GQA, with MHA as the
//! case `n_kv_heads == n_heads`. Token `t` of the batch sits at position `pos0 + t` and sees
//! cache rows `0..=pos0 + t`.

use rayon::prelude::*;

#[cfg(test)]
use crate::cpu::Isa;
use crate::cpu::multiversion;
use crate::fastmath;
use crate::simd::dot_generic;

/// Shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// out: [n_tok, n_heads * hd], q: [n_tok, n_heads * hd],
/// k_cache, v_cache: [>= pos0 + n_tok, n_kv_heads * hd] (rows for this batch already written).
pub fn attention(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    pos0: usize,
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let q_row = n_heads * hd;
    let kv_row = n_kv_heads * hd;
    let n_tok = q.len() / q_row;
    assert_eq!(out.len(), q.len());
    assert!(k_cache.len() >= (pos0 + n_tok) * kv_row && v_cache.len() >= (pos0 + n_tok) * kv_row);
    let group = n_heads / n_kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    // One task per (token, head); each writes its own `hd`-wide slice of `out`.
    out.par_chunks_mut(hd).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (idx, o)| {
            let (t, h) = (idx / n_heads, idx % n_heads);
            let qh = &q[t * q_row + h * hd..][..hd];
            let kv = KvHead {
                k: k_cache,
                v: v_cache,
                row: kv_row,
                offset: h / group * hd,
            };
            attend_row(o, scores, qh, kv, pos0 + t + 1, scale);
        },
    );
}

/// One key/value head inside row-major `[positions, n_kv_heads * hd]` k and v buffers.
#[derive(Clone, Copy)]
struct KvHead<'a> {
    k: &'a [f32],
    v: &'a [f32],
    /// Floats per position (`n_kv_heads * hd`).
    row: usize,
    /// Where this head starts within a row (`kv_head * hd`).
    offset: usize,
}

impl<'a> KvHead<'a> {
    fn k(&self, p: usize, hd: usize) -> &'a [f32] {
        &self.k[p * self.row + self.offset..][..hd]
    }

    fn v(&self, p: usize, hd: usize) -> &'a [f32] {
        &self.v[p * self.row + self.offset..][..hd]
    }
}

/// The scaled score of one query against one key, for inference. (The training kernels
/// compute scores a chunk of keys at a time with [`score_chunk`].)
#[inline]
fn score(qh: &[f32], kh: &[f32], scale: f32) -> f32 {
    qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() * scale
}

/// o: [hd] (overwrites), scores: scratch, qh: [hd]. One query row of attention over
/// positions `0..len` of one kv head. Returns the log-sum-exp of the scaled scores.
fn attend_row(
    o: &mut [f32],
    scores: &mut Vec<f32>,
    qh: &[f32],
    kv: KvHead,
    len: usize,
    scale: f32,
) -> f32 {
    let hd = o.len();
    scores.clear();
    scores.extend((0..len).map(|p| score(qh, kv.k(p, hd), scale)));
    // The softmax of `activation::softmax`, operation for operation, keeping the max and
    // the sum it computes on the way: together they are the log-sum-exp training saves.
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in scores.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in scores.iter_mut() {
        *v *= inv;
    }
    o.fill(0.0);
    for (p, &w) in scores.iter().enumerate() {
        for (oi, vi) in o.iter_mut().zip(kv.v(p, hd)) {
            *oi += w * vi;
        }
    }
    max + sum.ln()
}

/// Reference for [`attention`]: materializes the full score matrix per head, in f64.
pub fn attention_naive(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    pos0: usize,
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let n_tok = q.len() / (n_heads * hd);
    for t in 0..n_tok {
        for h in 0..n_heads {
            let kvh = h * n_kv_heads / n_heads;
            let len = pos0 + t + 1;
            let mut sc: Vec<f64> = (0..len)
                .map(|p| {
                    (0..hd)
                        .map(|i| {
                            q[(t * n_heads + h) * hd + i] as f64
                                * k_cache[(p * n_kv_heads + kvh) * hd + i] as f64
                        })
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc
                .iter_mut()
                .map(|v| {
                    *v = (*v - m).exp();
                    *v
                })
                .sum();
            for i in 0..hd {
                let acc: f64 = (0..len)
                    .map(|p| sc[p] / z * v_cache[(p * n_kv_heads + kvh) * hd + i] as f64)
                    .sum();
                out[(t * n_heads + h) * hd + i] = acc as f32;
            }
        }
    }
}

// Training kernels
// ----------------
//
// Both work on one kv head at a time with its K and V *head-transposed*: `Kᵀ, Vᵀ: [hd][tp]`,
// `tp` being T rounded up to a multiple of `LANES` and the padding zeroed. Every inner loop
// then runs over the key index j with unit stride, `LANES` keys at a time in fixed-size
// arrays that the compiler keeps in vector registers: a query row's scores are hd
// multiply-adds of `Kᵀ` rows, its probabilities one vectorized exp, and each gradient
// update a multiply-add over j. With tiny heads (stories260K: hd = 8) the scalar
// per-(row, key) work this replaces (a dot of length 8, a libm exp, three axpys of length
// 8) was nearly all overhead. Keys past the causal limit inside a row's last chunk are
// masked to a score of -inf, so their probability is exactly 0 and they contribute nothing.
//
// The chunk loops are compiled once per instruction set ([`Isa`]), like `simd::dot`.

/// Keys per chunk in the training kernels: two AVX2 registers or one AVX-512 register.
const LANES: usize = 16;
/// Query rows per backward task, at least: each task also holds a partial dK and dV of
/// `O(T · hd)`, so for long sequences the blocks grow to keep at most
/// `BACKWARD_MAX_BLOCKS` per kv head. Both depend only on T, not on the thread count, so the
/// order in which the partials are added (and so the result's bits) is the same everywhere.
const BACKWARD_MIN_ROWS: usize = 32;
const BACKWARD_MAX_BLOCKS: usize = 8;
/// Query rows the backward processes together, sharing each load and store of a chunk of
/// Kᵀ, dKᵀ and dVᵀ (which otherwise dominate its memory traffic).
const TILE: usize = 4;
/// Query rows (of every head) per forward task. Later rows cost more (they see more keys);
/// small blocks keep the tasks balanced.
const FORWARD_ROWS: usize = 16;

/// T rounded up to whole chunks: the row length of the head-transposed buffers.
fn padded(t_len: usize) -> usize {
    t_len.div_ceil(LANES) * LANES
}

/// xt: [hd][tp] (overwrites), x: [T, row]. The `hd` columns of x starting at `offset`,
/// transposed; columns `T..tp` are zeroed so masked lanes compute on finite numbers.
fn transpose_head(xt: &mut [f32], x: &[f32], row: usize, offset: usize, hd: usize) {
    let t_len = x.len() / row;
    let tp = xt.len() / hd;
    for (i, xt_i) in xt.chunks_exact_mut(tp).enumerate() {
        for (j, dst) in xt_i[..t_len].iter_mut().enumerate() {
            *dst = x[j * row + offset + i];
        }
        xt_i[t_len..].fill(0.0);
    }
}

/// kvt: [n_kv_heads][2][hd][tp] (overwrites): each kv head's Kᵀ then Vᵀ.
fn transpose_kv(kvt: &mut [f32], k: &[f32], v: &[f32], s: AttnShape) {
    let hd = s.head_dim;
    let kv_row = s.n_kv_heads * hd;
    kvt.par_chunks_mut(kvt.len() / s.n_kv_heads)
        .enumerate()
        .for_each(|(g, buf)| {
            let (kt, vt) = buf.split_at_mut(buf.len() / 2);
            transpose_head(kt, k, kv_row, g * hd, hd);
            transpose_head(vt, v, kv_row, g * hd, hd);
        });
}

/// The scaled scores of query `qh` ([hd]) against keys `j0..j0 + LANES` of `kt` ([hd][tp]),
/// keys before `first` (an earlier packed example) or after `t` masked to -inf. The training
/// forward and backward both call this, so the backward recomputes exactly the scores the
/// forward's log-sum-exp was taken over.
///
/// (Inference uses [`score`], which sums over hd in a different order; the two agree to
/// rounding, not bit for bit.)
#[inline(always)]
fn score_chunk(
    qh: &[f32],
    kt: &[f32],
    tp: usize,
    j0: usize,
    first: usize,
    t: usize,
    scale: f32,
) -> [f32; LANES] {
    let mut acc = [0.0f32; LANES];
    for (i, &qi) in qh.iter().enumerate() {
        let k: &[f32; LANES] = kt[i * tp + j0..][..LANES].try_into().unwrap();
        for l in 0..LANES {
            acc[l] = qi.mul_add(k[l], acc[l]);
        }
    }
    // Lane l is key j0 + l (t ≥ j0 and first < j0 + LANES in every chunk a row visits).
    for (l, a) in acc.iter_mut().enumerate() {
        let j = j0 + l;
        *a = if j >= first && j <= t {
            *a * scale
        } else {
            f32::NEG_INFINITY
        };
    }
    acc
}

/// The first key query row `t` may attend: the start of its packed example, or 0 when
/// `starts` is empty (one causal sequence).
#[inline(always)]
fn first_key(starts: &[u32], t: usize) -> usize {
    starts.get(t).map_or(0, |&s| s as usize)
}

multiversion!(forward_block => forward_block_generic(
    out: &mut [f32],
    lse_t: &mut [f32],
    work: &mut [f32],
    q: &[f32],
    kvt: &[f32],
    starts: &[u32],
    r0: usize,
    s: AttnShape,
));

/// out: [rows, n_heads*hd] (overwrites), lse_t: [rows, n_heads] (overwrites), work:
/// tp + hd·LANES floats, q: [T, n_heads*hd], kvt: [n_kv_heads][2][hd][tp] from
/// [`transpose_kv`]. Query rows `r0..r0 + rows` of [`attention_forward_train`], every head.
///
/// Per (row t, head): pass 1 computes the scores chunk by chunk into `work` and their max;
/// pass 2 takes `e = exp(score - max)`, sums it, and accumulates `Σ_j e_j · v_j` per lane
/// (`acc: [hd][LANES]`); the lanes are summed at the end, in a fixed order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_block_generic(
    out: &mut [f32],
    lse_t: &mut [f32],
    work: &mut [f32],
    q: &[f32],
    kvt: &[f32],
    starts: &[u32],
    r0: usize,
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let (q_row, group) = (n_heads * hd, n_heads / n_kv_heads);
    let tp = kvt.len() / (n_kv_heads * 2 * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let (scores, acc) = work.split_at_mut(tp);
    let acc = &mut acc[..hd * LANES];
    for (r, (o_t, lse_row)) in out
        .chunks_exact_mut(q_row)
        .zip(lse_t.chunks_exact_mut(n_heads))
        .enumerate()
    {
        let t = r0 + r;
        let first = first_key(starts, t);
        let (c_first, n_chunks) = (first / LANES, (t + 1).div_ceil(LANES));
        for (h, (o, lse_th)) in o_t.chunks_exact_mut(hd).zip(lse_row).enumerate() {
            let head = &kvt[h / group * 2 * hd * tp..][..2 * hd * tp];
            let (kt, vt) = head.split_at(hd * tp);
            let qh = &q[t * q_row + h * hd..][..hd];

            let mut lane_max = [f32::NEG_INFINITY; LANES];
            for c in c_first..n_chunks {
                let sc = score_chunk(qh, kt, tp, c * LANES, first, t, scale);
                scores[c * LANES..][..LANES].copy_from_slice(&sc);
                for l in 0..LANES {
                    lane_max[l] = if sc[l] > lane_max[l] {
                        sc[l]
                    } else {
                        lane_max[l]
                    };
                }
            }
            let max = lane_max
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });

            acc.fill(0.0);
            let mut lanes = [0.0f32; LANES];
            for c in c_first..n_chunks {
                let j0 = c * LANES;
                let sc = &scores[j0..][..LANES];
                let mut e = [0.0f32; LANES];
                for l in 0..LANES {
                    e[l] = fastmath::exp(sc[l] - max);
                    lanes[l] += e[l];
                }
                for (i, a) in acc.chunks_exact_mut(LANES).enumerate() {
                    let vi = &vt[i * tp + j0..][..LANES];
                    for l in 0..LANES {
                        a[l] = e[l].mul_add(vi[l], a[l]);
                    }
                }
            }
            let sum = lane_sum(&lanes);
            let inv = 1.0 / sum;
            for (oi, a) in o.iter_mut().zip(acc.chunks_exact(LANES)) {
                *oi = lane_sum(a) * inv;
            }
            *lse_th = max + sum.ln();
        }
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
/// `out` equals what [`attention`] gives with `pos0 = 0` to about 1e-7 relative, not bit for
/// bit: this kernel uses the vectorized [`fastmath::exp`] and sums in vector lanes, where
/// inference keeps the scalar operation order its llama2.c golden outputs were taken with.
///
/// `starts`: empty for one causal sequence, else `[T]`, the first position of the packed
/// example each row belongs to (non-decreasing, `starts[t] ≤ t`): row `t` then attends only
/// keys `starts[t]..=t`, so no example sees another, and the result for each example is
/// what it would be alone.
///
/// Parallel over blocks of `FORWARD_ROWS` query rows; allocates the head-transposed K and V
/// (`2 · n_kv_heads · hd · T` floats) and per-thread scratch of `O(T + hd)`.
pub fn attention_forward_train(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    s: AttnShape,
) {
    let (t_len, _) = check_train_shapes(q, k, v, s);
    check_starts(starts, t_len);
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    assert_eq!(
        out.len(),
        q.len(),
        "attention_forward_train: out is not like q"
    );
    assert_eq!(
        lse.len(),
        n_heads * t_len,
        "attention_forward_train: lse is not [n_heads, T]"
    );
    let tp = padded(t_len);
    let mut kvt = vec![0.0; n_kv_heads * 2 * hd * tp];
    transpose_kv(&mut kvt, k, v, s);
    let isa = crate::cpu::isa();
    // Tasks own blocks of whole rows of `out`; lse is [n_heads, T], transposed relative to
    // that, so it is produced as [T, n_heads] and transposed afterwards.
    let mut lse_t = vec![0.0; t_len * n_heads];
    out.par_chunks_mut(FORWARD_ROWS * n_heads * hd)
        .zip(lse_t.par_chunks_mut(FORWARD_ROWS * n_heads))
        .enumerate()
        .for_each_init(Vec::new, |work: &mut Vec<f32>, (b, (o, l))| {
            work.resize(tp + hd * LANES, 0.0);
            forward_block(isa, o, l, work, q, &kvt, starts, b * FORWARD_ROWS, s);
        });
    for (t, row) in lse_t.chunks_exact(n_heads).enumerate() {
        for (h, &l) in row.iter().enumerate() {
            lse[h * t_len + t] = l;
        }
    }
}

multiversion!(backward_block => backward_block_generic(
    dq_part: &mut [f32],
    dkt: &mut [f32],
    dvt: &mut [f32],
    work: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    starts: &[u32],
    g: usize,
    r0: usize,
    s: AttnShape,
));

/// One task of [`attention_backward`]: kv head `g`, query rows `r0..r0 + rows` of each query
/// head that reads it.
///
/// dq_part: [group, rows, hd] (overwrites): those rows' dq. dkt, dvt: [hd][tp] (overwrites
/// columns `0..padded(r0 + rows)`, the only ones these rows' keys reach): this block's
/// contribution to kv head g's dK and dV, transposed. work: TILE·hd·(LANES + 1) floats. kt, vt:
/// [hd][tp], kv head g's Kᵀ and Vᵀ. The rest as in [`attention_backward`].
///
/// Per head, `TILE` rows at a time, chunk by chunk over keys `j ≤ t`: for each row recompute
/// `p = exp(score - lse)`, `dp_j = dout · v_j`, `ds = p (dp - D)`; then, per column i of the
/// chunk, accumulate each row's `ds_j · k_j` per lane into its `acc: [hd][LANES]` (its dq,
/// lanes summed at the end) and add the rows' `scale · q · ds_j` and `p_j · dout`, in row
/// order, into column j of dKᵀ and dVᵀ.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_block_generic(
    dq_part: &mut [f32],
    dkt: &mut [f32],
    dvt: &mut [f32],
    work: &mut [f32],
    dout: &[f32],
    out: &[f32],
    lse: &[f32],
    q: &[f32],
    kt: &[f32],
    vt: &[f32],
    starts: &[u32],
    g: usize,
    r0: usize,
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let (q_row, group) = (n_heads * hd, n_heads / n_kv_heads);
    let t_len = q.len() / q_row;
    let tp = kt.len() / hd;
    let rows = dq_part.len() / (group * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let reach = padded(r0 + rows);
    for (dkt_i, dvt_i) in dkt.chunks_exact_mut(tp).zip(dvt.chunks_exact_mut(tp)) {
        dkt_i[..reach].fill(0.0);
        dvt_i[..reach].fill(0.0);
    }
    // Per tile row u: acc [hd][LANES] (dq's lane partial sums), then sq = scale · q [hd].
    let (acc, sq) = work.split_at_mut(TILE * hd * LANES);
    let sq = &mut sq[..TILE * hd];
    for (hg, dq_h) in dq_part.chunks_exact_mut(rows * hd).enumerate() {
        let h = g * group + hg;
        for (tile, dq_tile) in dq_h.chunks_mut(TILE * hd).enumerate() {
            let t0 = r0 + tile * TILE;
            let nr = dq_tile.len() / hd;
            let row = |u: usize| (t0 + u) * q_row + h * hd;
            let mut d = [0.0f32; TILE];
            let mut lse_t = [0.0f32; TILE];
            for u in 0..nr {
                let at = row(u);
                d[u] = dot_generic(&dout[at..][..hd], &out[at..][..hd]);
                lse_t[u] = lse[h * t_len + t0 + u];
                for (x, &qi) in sq[u * hd..][..hd].iter_mut().zip(&q[at..][..hd]) {
                    *x = scale * qi;
                }
            }
            acc.fill(0.0);
            // Starts never decrease, so the tile's first row reaches back the furthest.
            for c in first_key(starts, t0) / LANES..(t0 + nr).div_ceil(LANES) {
                let j0 = c * LANES;
                // Every row's p and ds over this chunk; rows that end before it, or whose
                // example starts after it, have none (their p and ds stay 0).
                let (mut p, mut ds) = ([[0.0f32; LANES]; TILE], [[0.0f32; LANES]; TILE]);
                for u in 0..nr {
                    let t = t0 + u;
                    let first = first_key(starts, t);
                    if j0 > t || j0 + LANES <= first {
                        continue;
                    }
                    let (qh, doh) = (&q[row(u)..][..hd], &dout[row(u)..][..hd]);
                    let sc = score_chunk(qh, kt, tp, j0, first, t, scale);
                    let mut dp = [0.0f32; LANES];
                    for (i, &di) in doh.iter().enumerate() {
                        let vi: &[f32; LANES] = vt[i * tp + j0..][..LANES].try_into().unwrap();
                        for l in 0..LANES {
                            dp[l] = di.mul_add(vi[l], dp[l]);
                        }
                    }
                    for l in 0..LANES {
                        p[u][l] = fastmath::exp(sc[l] - lse_t[u]);
                        ds[u][l] = p[u][l] * (dp[l] - d[u]);
                    }
                }
                // Load each column of Kᵀ, dKᵀ and dVᵀ once for the whole tile.
                for i in 0..hd {
                    let ki: &[f32; LANES] = kt[i * tp + j0..][..LANES].try_into().unwrap();
                    let dki: &mut [f32; LANES] =
                        (&mut dkt[i * tp + j0..][..LANES]).try_into().unwrap();
                    let dvi: &mut [f32; LANES] =
                        (&mut dvt[i * tp + j0..][..LANES]).try_into().unwrap();
                    let (mut dk_acc, mut dv_acc) = (*dki, *dvi);
                    for u in 0..nr {
                        let (sqi, doi) = (sq[u * hd + i], dout[row(u) + i]);
                        let a = &mut acc[(u * hd + i) * LANES..][..LANES];
                        for l in 0..LANES {
                            a[l] = ds[u][l].mul_add(ki[l], a[l]);
                            dk_acc[l] = sqi.mul_add(ds[u][l], dk_acc[l]);
                            dv_acc[l] = doi.mul_add(p[u][l], dv_acc[l]);
                        }
                    }
                    (*dki, *dvi) = (dk_acc, dv_acc);
                }
            }
            for (dq_t, acc_u) in dq_tile
                .chunks_exact_mut(hd)
                .zip(acc.chunks_exact(hd * LANES))
            {
                for (x, a) in dq_t.iter_mut().zip(acc_u.chunks_exact(LANES)) {
                    *x = scale * lane_sum(a);
                }
            }
        }
    }
}

/// The sum of one chunk's lanes, as a fixed tree of halvings (vectorizable, and the same
/// order every time).
#[inline(always)]
fn lane_sum(a: &[f32]) -> f32 {
    let mut v: [f32; LANES] = a[..LANES].try_into().unwrap();
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            v[l] += v[l + w];
        }
        w /= 2;
    }
    v[0]
}

/// Where the parts of [`attention_backward`]'s scratch lie, for a sequence of T tokens.
///
/// scratch = [kvt: n_kv_heads × (Kᵀ, Vᵀ: [hd][tp])] then one part per task (kv head g,
/// row block b), g-major: [dq: group × rows × hd][dKᵀ: hd × tp][dVᵀ: hd × tp]
/// [work: TILE · hd · (LANES + 1)].
#[derive(Clone, Copy)]
struct BackwardLayout {
    tp: usize,
    /// Query rows per block (the last block may have fewer).
    rows: usize,
    /// Row blocks per kv head.
    blocks: usize,
    kvt: usize,
    dq: usize,
    dkvt: usize,
    task: usize,
}

impl BackwardLayout {
    fn new(t_len: usize, s: AttnShape) -> BackwardLayout {
        let hd = s.head_dim;
        let tp = padded(t_len);
        let rows = BACKWARD_MIN_ROWS.max(t_len.div_ceil(BACKWARD_MAX_BLOCKS));
        let dq = s.n_heads / s.n_kv_heads * rows * hd;
        let dkvt = hd * tp;
        BackwardLayout {
            tp,
            rows,
            blocks: t_len.div_ceil(rows),
            kvt: s.n_kv_heads * 2 * hd * tp,
            dq,
            dkvt,
            task: dq + 2 * dkvt + TILE * hd * (LANES + 1),
        }
    }

    fn len(&self, s: AttnShape) -> usize {
        self.kvt + s.n_kv_heads * self.blocks * self.task
    }
}

/// dq: [T, n_heads*hd] (+=), dk, dv: [T, n_kv_heads*hd] (+=), dout: [T, n_heads*hd], out and
/// lse from the forward, q, k, v and starts as in forward. scratch: at least
/// attention_backward_scratch_len(T, s) floats (no allocation inside).
///
/// FlashAttention-2's backward: with `p_j = exp(s_j - lse)` (recomputed exactly as the
/// forward computed it), `D = dout · out` (which equals `Σ_j p_j dp_j`), `dp_j = dout · v_j`
/// and `ds_j = p_j (dp_j - D)`, it adds `scale · ds_j · k_j` to dq, `scale · ds_j · q` to
/// dk_j and `p_j · dout` to dv_j.
///
/// Work is split into tasks per (kv head, block of query rows) and run in parallel. A task owns the dq of its rows (for the query heads that read its kv head) and
/// its own partial dK and dV; no two tasks write the same memory, and there are no atomics.
/// Afterwards each output element receives one addition: its dq part, or the sum of the
/// partial dK/dV of the blocks that reach it, taken in block order. The split depends only on
/// T and the shape, so the result has the same bits on every run, for any thread count.
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
    let (kvt, tasks) = scratch[..lay.len(s)].split_at_mut(lay.kvt);
    transpose_kv(kvt, k, v, s);
    let kvt = &*kvt;
    let isa = crate::cpu::isa();
    let head_len = hd * lay.tp;

    tasks
        .par_chunks_mut(lay.task)
        .enumerate()
        .for_each(|(idx, part)| {
            let (g, b) = (idx / lay.blocks, idx % lay.blocks);
            let r0 = b * lay.rows;
            let rows = lay.rows.min(t_len - r0);
            let (dq_part, rest) = part.split_at_mut(lay.dq);
            let (dkt, rest) = rest.split_at_mut(lay.dkvt);
            let (dvt, work) = rest.split_at_mut(lay.dkvt);
            let (kt, vt) = kvt[g * 2 * head_len..][..2 * head_len].split_at(head_len);
            backward_block(
                isa,
                &mut dq_part[..group * rows * hd],
                dkt,
                dvt,
                work,
                dout,
                out,
                lse,
                q,
                kt,
                vt,
                starts,
                g,
                r0,
                s,
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
            for g in 0..n_kv_heads {
                let dq_part = &part(g, b)[..group * rows * hd];
                for (hg, dq_h) in dq_part.chunks_exact(rows * hd).enumerate() {
                    let h = g * group + hg;
                    for (r, src) in dq_h.chunks_exact(hd).enumerate() {
                        add(&mut dq_b[r * q_row + h * hd..][..hd], src);
                    }
                }
                for i in 0..hd {
                    for r in 0..rows {
                        let col = i * lay.tp + r0 + r;
                        let (mut sk, mut sv) = (0.0f32, 0.0f32);
                        for later in b..lay.blocks {
                            let p = &part(g, later)[lay.dq..];
                            sk += p[col];
                            sv += p[lay.dkvt + col];
                        }
                        dk_b[r * kv_row + g * hd + i] += sk;
                        dv_b[r * kv_row + g * hd + i] += sv;
                    }
                }
            }
        });
}

/// Floats of scratch [`attention_backward`] needs for a sequence of `t` tokens: about
/// `2 · n_kv_heads · hd · T · (1 + blocks)` (Kᵀ and Vᵀ, and each row block's partial dKᵀ and
/// dVᵀ; at most `BACKWARD_MAX_BLOCKS` blocks) plus dq's `n_heads · hd · T`.
pub fn attention_backward_scratch_len(t: usize, s: AttnShape) -> usize {
    BackwardLayout::new(t, s).len(s)
}

/// y += x.
#[inline]
fn add(y: &mut [f32], x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// Checks the training shapes; returns `(T, n_heads / n_kv_heads)`.
/// Packed-example starts must be empty or one per row, each at or before its row and never
/// decreasing (the kernels rely on both to skip whole chunks).
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

/// Training attention entirely in f64, materializing every score: the oracle behind both
/// naive references and the finite-difference tests. Returns `(out, lse)` shaped like
/// [`attention_forward_train`]'s outputs.
fn attention_train_f64(q: &[f64], k: &[f64], v: &[f64], s: AttnShape) -> (Vec<f64>, Vec<f64>) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let t_len = q.len() / (n_heads * hd);
    let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; n_heads * t_len]);
    for h in 0..n_heads {
        let kvh = h * n_kv_heads / n_heads;
        let p = probabilities_f64(q, k, h, kvh, t_len, s);
        for t in 0..t_len {
            lse[h * t_len + t] = p[t].1;
            for i in 0..hd {
                out[(t * n_heads + h) * hd + i] = (0..=t)
                    .map(|j| p[t].0[j] * v[(j * n_kv_heads + kvh) * hd + i])
                    .sum();
            }
        }
    }
    (out, lse)
}

/// For query head `h` reading kv head `kvh`: each query row's causal probabilities
/// `[t + 1]` and the log-sum-exp of its scaled scores.
fn probabilities_f64(
    q: &[f64],
    k: &[f64],
    h: usize,
    kvh: usize,
    t_len: usize,
    s: AttnShape,
) -> Vec<(Vec<f64>, f64)> {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    (0..t_len)
        .map(|t| {
            let scores: Vec<f64> = (0..=t)
                .map(|j| {
                    (0..hd)
                        .map(|i| q[(t * n_heads + h) * hd + i] * k[(j * n_kv_heads + kvh) * hd + i])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + scores.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            (scores.iter().map(|x| (x - lse).exp()).collect(), lse)
        })
        .collect()
}

fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// Reference for [`attention_forward_train`], in f64 with the full score matrix.
pub fn attention_forward_train_naive(
    out: &mut [f32],
    lse: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
) {
    let (o, l) = attention_train_f64(&widen(q), &widen(k), &widen(v), s);
    for (dst, src) in out.iter_mut().zip(&o) {
        *dst = *src as f32;
    }
    for (dst, src) in lse.iter_mut().zip(&l) {
        *dst = *src as f32;
    }
}

/// Reference for [`attention_backward`]: the textbook matrix formulas per head in f64,
/// `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ⊙ (dP - rowsum(P ⊙ dP))`, `dQ = scale·dS·K`,
/// `dK = scale·dSᵀ·Q`, recomputing P from q and k (it needs no `out` or `lse`). Accumulates.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_naive(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    s: AttnShape,
) {
    let AttnShape {
        n_heads,
        n_kv_heads,
        head_dim: hd,
    } = s;
    let t_len = q.len() / (n_heads * hd);
    let (q, k, v, dout) = (widen(q), widen(k), widen(v), widen(dout));
    let (mut gq, mut gk, mut gv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    let scale = 1.0 / (hd as f64).sqrt();
    let qi = |t: usize, h: usize, i: usize| (t * n_heads + h) * hd + i;
    let ki = |j: usize, g: usize, i: usize| (j * n_kv_heads + g) * hd + i;
    for h in 0..n_heads {
        let g = h * n_kv_heads / n_heads;
        let p = probabilities_f64(&q, &k, h, g, t_len, s);
        for t in 0..t_len {
            let dp: Vec<f64> = (0..=t)
                .map(|j| (0..hd).map(|i| dout[qi(t, h, i)] * v[ki(j, g, i)]).sum())
                .collect();
            let row: f64 = (0..=t).map(|j| p[t].0[j] * dp[j]).sum();
            for j in 0..=t {
                let ds = p[t].0[j] * (dp[j] - row);
                for i in 0..hd {
                    gv[ki(j, g, i)] += p[t].0[j] * dout[qi(t, h, i)];
                    gq[qi(t, h, i)] += scale * ds * k[ki(j, g, i)];
                    gk[ki(j, g, i)] += scale * ds * q[qi(t, h, i)];
                }
            }
        }
    }
    for (d, g) in [(dq, gq), (dk, gk), (dv, gv)] {
        for (x, y) in d.iter_mut().zip(&g) {
            *x = (*x as f64 + y) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, assert_grad_close, finite_diff, to_f64};

    #[test]
    fn attention_matches_naive_for_mha_and_gqa() {
        let mut rng = Rng::new(6);
        for &(n_heads, n_kv_heads, hd, pos0, n_tok) in &[
            (4, 4, 8, 0, 5),
            (8, 4, 8, 3, 4),
            (9, 3, 64, 0, 1),
            (9, 3, 64, 10, 1),
        ] {
            let s = AttnShape {
                n_heads,
                n_kv_heads,
                head_dim: hd,
            };
            let q = rng.vec(n_tok * n_heads * hd);
            let k = rng.vec((pos0 + n_tok) * n_kv_heads * hd);
            let v = rng.vec((pos0 + n_tok) * n_kv_heads * hd);
            let mut fast = vec![0.0; q.len()];
            let mut slow = vec![0.0; q.len()];
            attention(&mut fast, &q, &k, &v, pos0, s);
            attention_naive(&mut slow, &q, &k, &v, pos0, s);
            assert_close(&fast, &slow, 1e-5);
        }
    }

    #[test]
    fn batched_prompt_equals_token_by_token() {
        // Causality: processing 6 tokens at once must equal processing them one at a time.
        let mut rng = Rng::new(7);
        let s = AttnShape {
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
        };
        let q = rng.vec(6 * 32);
        let k = rng.vec(6 * 16);
        let v = rng.vec(6 * 16);
        let mut batched = vec![0.0; q.len()];
        attention(&mut batched, &q, &k, &v, 0, s);
        for t in 0..6 {
            let mut one = vec![0.0; 32];
            attention(&mut one, &q[t * 32..(t + 1) * 32], &k, &v, t, s);
            assert_close(&one, &batched[t * 32..(t + 1) * 32], 1e-6);
        }
    }

    fn shape(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttnShape {
        AttnShape {
            n_heads,
            n_kv_heads,
            head_dim,
        }
    }

    #[test]
    fn forward_train_equals_inference_and_naive() {
        let mut rng = Rng::new(81);
        for &(n_heads, n_kv_heads, hd, t_len) in &[
            (4, 4, 8, 5),
            (4, 2, 8, 7),
            (9, 3, 64, 33),
            (8, 1, 16, 1),
            (8, 4, 8, 70),
            (2, 1, 3, 300),
        ] {
            let s = shape(n_heads, n_kv_heads, hd);
            let q = rng.vec(t_len * n_heads * hd);
            let k = rng.vec(t_len * n_kv_heads * hd);
            let v = rng.vec(t_len * n_kv_heads * hd);
            let mut out = vec![f32::NAN; q.len()];
            let mut lse = vec![f32::NAN; n_heads * t_len];
            attention_forward_train(&mut out, &mut lse, &q, &k, &v, &[], s);
            let mut inference = vec![0.0; q.len()];
            attention(&mut inference, &q, &k, &v, 0, s);
            // Not bit for bit: training uses the vectorized exp and lane-wise sums (see
            // attention_forward_train), so the two differ by rounding only.
            assert_close(&out, &inference, 1e-6);
            let (mut out_ref, mut lse_ref) = (vec![0.0; q.len()], vec![0.0; lse.len()]);
            attention_forward_train_naive(&mut out_ref, &mut lse_ref, &q, &k, &v, s);
            assert_close(&out, &out_ref, 1e-5);
            assert_close(&lse, &lse_ref, 1e-5);
        }
    }

    /// Runs forward and backward on random data; returns (dq, dk, dv) accumulated onto
    /// the given starting gradients.
    #[allow(clippy::type_complexity)]
    fn run_backward(
        s: AttnShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        dout: &[f32],
        start: (&[f32], &[f32], &[f32]),
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        run_backward_packed(s, q, k, v, &[], dout, start)
    }

    #[allow(clippy::type_complexity)]
    fn run_backward_packed(
        s: AttnShape,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        starts: &[u32],
        dout: &[f32],
        start: (&[f32], &[f32], &[f32]),
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let t_len = q.len() / (s.n_heads * s.head_dim);
        let mut out = vec![0.0; q.len()];
        let mut lse = vec![0.0; s.n_heads * t_len];
        attention_forward_train(&mut out, &mut lse, q, k, v, starts, s);
        let (mut dq, mut dk, mut dv) = (start.0.to_vec(), start.1.to_vec(), start.2.to_vec());
        // Stale scratch must not leak into the result.
        let mut scratch = vec![f32::NAN; attention_backward_scratch_len(t_len, s)];
        attention_backward(
            &mut dq,
            &mut dk,
            &mut dv,
            &mut scratch,
            dout,
            &out,
            &lse,
            q,
            k,
            v,
            starts,
            s,
        );
        (dq, dk, dv)
    }

    #[test]
    fn backward_matches_naive_and_accumulates() {
        let mut rng = Rng::new(82);
        for &(n_heads, n_kv_heads, hd, t_len) in &[
            (4, 4, 8, 5),
            (4, 2, 8, 7),
            (9, 3, 64, 33),
            (8, 1, 16, 20),
            (2, 2, 4, 1),
            // Several row blocks, T not a multiple of the chunk width, odd head_dim.
            (8, 4, 8, 70),
            (2, 1, 3, 300),
        ] {
            let s = shape(n_heads, n_kv_heads, hd);
            let q = rng.vec(t_len * n_heads * hd);
            let k = rng.vec(t_len * n_kv_heads * hd);
            let v = rng.vec(t_len * n_kv_heads * hd);
            let dout = rng.vec(q.len());
            let (dq0, dk0, dv0) = (rng.vec(q.len()), rng.vec(k.len()), rng.vec(v.len()));
            let (dq, dk, dv) = run_backward(s, &q, &k, &v, &dout, (&dq0, &dk0, &dv0));
            let (mut dq_ref, mut dk_ref, mut dv_ref) = (dq0, dk0, dv0);
            attention_backward_naive(&mut dq_ref, &mut dk_ref, &mut dv_ref, &dout, &q, &k, &v, s);
            assert_close(&dq, &dq_ref, 1e-5);
            assert_close(&dk, &dk_ref, 1e-5);
            assert_close(&dv, &dv_ref, 1e-5);
        }
    }

    /// Packed examples: each one's output, lse and gradients equal what it gets alone, so no
    /// example attends to, or sends gradient into, another. Lengths cover examples inside one
    /// chunk, straddling chunk edges and spanning row blocks.
    #[test]
    fn packed_examples_are_independent() {
        let mut rng = Rng::new(86);
        for &(n_heads, n_kv_heads, hd, ref lens) in &[
            (4, 2, 8, vec![3usize, 5, 1, 7]),
            (2, 1, 3, vec![17, 1, 40, 9, 133]),
            (9, 3, 64, vec![33, 31]),
        ] {
            let s = shape(n_heads, n_kv_heads, hd);
            let t_len: usize = lens.iter().sum();
            let (qr, kr) = (n_heads * hd, n_kv_heads * hd);
            let q = rng.vec(t_len * qr);
            let k = rng.vec(t_len * kr);
            let v = rng.vec(t_len * kr);
            let dout = rng.vec(q.len());
            let mut starts = Vec::with_capacity(t_len);
            for (e, &n) in lens.iter().enumerate() {
                let first: usize = lens[..e].iter().sum();
                starts.extend(std::iter::repeat_n(first as u32, n));
            }
            let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; n_heads * t_len]);
            attention_forward_train(&mut out, &mut lse, &q, &k, &v, &starts, s);
            let zeros = (vec![0.0; q.len()], vec![0.0; k.len()]);
            let (dq, dk, dv) = run_backward_packed(
                s,
                &q,
                &k,
                &v,
                &starts,
                &dout,
                (&zeros.0, &zeros.1, &zeros.1),
            );
            let mut first = 0;
            for &n in lens {
                let (qs, ks) = (first * qr..(first + n) * qr, first * kr..(first + n) * kr);
                let (mut o1, mut l1) = (vec![0.0; n * qr], vec![0.0; n_heads * n]);
                attention_forward_train(
                    &mut o1,
                    &mut l1,
                    &q[qs.clone()],
                    &k[ks.clone()],
                    &v[ks.clone()],
                    &[],
                    s,
                );
                assert_close(&out[qs.clone()], &o1, 1e-6);
                for h in 0..n_heads {
                    assert_close(&lse[h * t_len + first..][..n], &l1[h * n..][..n], 1e-6);
                }
                let z = (vec![0.0; n * qr], vec![0.0; n * kr]);
                let (dq1, dk1, dv1) = run_backward(
                    s,
                    &q[qs.clone()],
                    &k[ks.clone()],
                    &v[ks.clone()],
                    &dout[qs.clone()],
                    (&z.0, &z.1, &z.1),
                );
                assert_close(&dq[qs], &dq1, 1e-6);
                assert_close(&dk[ks.clone()], &dk1, 1e-6);
                assert_close(&dv[ks], &dv1, 1e-6);
                first += n;
            }
        }
    }

    #[test]
    fn backward_is_deterministic() {
        let mut rng = Rng::new(83);
        let s = shape(8, 4, 32);
        let t_len = 64;
        let q = rng.vec(t_len * 8 * 32);
        let k = rng.vec(t_len * 4 * 32);
        let v = rng.vec(t_len * 4 * 32);
        let dout = rng.vec(q.len());
        let zeros = (vec![0.0; q.len()], vec![0.0; k.len()]);
        let first = run_backward(s, &q, &k, &v, &dout, (&zeros.0, &zeros.1, &zeros.1));
        for _ in 0..5 {
            let again = run_backward(s, &q, &k, &v, &dout, (&zeros.0, &zeros.1, &zeros.1));
            assert!(first == again, "attention_backward changed between runs");
        }
    }

    #[test]
    fn training_kernels_do_not_depend_on_the_thread_count() {
        // The backward's split into row blocks and its reduction order depend only on T.
        let mut rng = Rng::new(85);
        let s = shape(8, 4, 8);
        let t_len = 100;
        let q = rng.vec(t_len * 64);
        let k = rng.vec(t_len * 32);
        let v = rng.vec(t_len * 32);
        let dout = rng.vec(q.len());
        let zeros = (vec![0.0; q.len()], vec![0.0; k.len()]);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| run_backward(s, &q, &k, &v, &dout, (&zeros.0, &zeros.1, &zeros.1)))
        };
        let one = run(1);
        for threads in [2, 3, 7] {
            assert!(one == run(threads), "result changed with {threads} threads");
        }
    }

    #[test]
    fn training_kernels_agree_bit_for_bit_across_instruction_sets() {
        // Every copy uses fused multiply-adds in the same order, so the portable fallback
        // (not otherwise exercised on a machine with AVX2) gives the same bits.
        let mut rng = Rng::new(86);
        let s = shape(4, 2, 8);
        let t_len = 40;
        let q = rng.vec(t_len * 32);
        let k = rng.vec(t_len * 16);
        let v = rng.vec(t_len * 16);
        let dout = rng.vec(q.len());
        let tp = padded(t_len);
        let mut kvt = vec![0.0; 2 * 2 * 8 * tp];
        transpose_kv(&mut kvt, &k, &v, s);
        let forward = |isa| {
            let (mut o, mut l) = (vec![0.0; q.len()], vec![0.0; t_len * 4]);
            let mut work = vec![0.0; tp + 8 * LANES];
            forward_block(isa, &mut o, &mut l, &mut work, &q, &kvt, &[], 0, s);
            (o, l)
        };
        let (out, lse_t) = forward(Isa::Baseline);
        for isa in Isa::available() {
            assert!((out.clone(), lse_t.clone()) == forward(isa), "{isa}");
        }
        let mut lse = vec![0.0; lse_t.len()];
        for (i, &x) in lse_t.iter().enumerate() {
            lse[(i % 4) * t_len + i / 4] = x;
        }
        let backward = |isa| {
            let (mut dq, mut dkt, mut dvt) =
                (vec![0.0; 2 * 24 * 8], vec![0.0; 8 * tp], vec![0.0; 8 * tp]);
            let mut work = vec![0.0; TILE * 8 * (LANES + 1)];
            let head = 2 * 8 * tp;
            let (kt, vt) = kvt[head..][..head].split_at(8 * tp);
            backward_block(
                isa,
                &mut dq,
                &mut dkt,
                &mut dvt,
                &mut work,
                &dout,
                &out,
                &lse,
                &q,
                kt,
                vt,
                &[],
                1,
                16,
                s,
            );
            (dq, dkt, dvt)
        };
        let reference = backward(Isa::Baseline);
        for isa in Isa::available() {
            assert!(backward(isa) == reference, "{isa}");
        }
    }

    #[test]
    fn backward_matches_finite_differences_for_gqa_and_mha() {
        let mut rng = Rng::new(84);
        for (n_heads, n_kv_heads) in [(4, 2), (4, 4)] {
            let (hd, t_len) = (4, 5);
            let s = shape(n_heads, n_kv_heads, hd);
            // Larger-than-unit inputs make the softmax far from uniform.
            let mut big = |n| -> Vec<f32> { rng.vec(n).iter().map(|x| 2.0 * x).collect() };
            let q = big(t_len * n_heads * hd);
            let k = big(t_len * n_kv_heads * hd);
            let v = big(t_len * n_kv_heads * hd);
            let r = big(q.len());
            // L = Σ out ⊙ r, so dout = r.
            let loss = |q: &[f64], k: &[f64], v: &[f64]| -> f64 {
                let (out, _) = attention_train_f64(q, k, v, s);
                out.iter().zip(&r).map(|(o, &w)| o * w as f64).sum()
            };
            let zeros = (vec![0.0; q.len()], vec![0.0; k.len()]);
            let (dq, dk, dv) = run_backward(s, &q, &k, &v, &r, (&zeros.0, &zeros.1, &zeros.1));
            let (q64, k64, v64) = (to_f64(&q), to_f64(&k), to_f64(&v));
            assert_grad_close(&dq, &finite_diff(|x| loss(x, &k64, &v64), &q), 1e-4);
            assert_grad_close(&dk, &finite_diff(|x| loss(&q64, x, &v64), &k), 1e-4);
            assert_grad_close(&dv, &finite_diff(|x| loss(&q64, &k64, x), &v), 1e-4);
        }
    }
}
