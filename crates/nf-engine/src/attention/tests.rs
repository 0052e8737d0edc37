use super::reference::attention_train_f64;
use super::*;
use crate::Precision;
use crate::cpu::Isa;
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
        attention_forward_train(&mut out, &mut lse, &q, &k, &v, &[], s, Precision::F32);
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
    run_backward_packed(s, q, k, v, &[], dout, start, Precision::F32)
}

#[allow(clippy::type_complexity, clippy::too_many_arguments)]
fn run_backward_packed(
    s: AttnShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    starts: &[u32],
    dout: &[f32],
    start: (&[f32], &[f32], &[f32]),
    precision: Precision,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let t_len = q.len() / (s.n_heads * s.head_dim);
    let mut out = vec![0.0; q.len()];
    let mut lse = vec![0.0; s.n_heads * t_len];
    attention_forward_train(&mut out, &mut lse, q, k, v, starts, s, precision);
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
        precision,
    );
    (dq, dk, dv)
}

/// The largest difference between `a` and the reference `b`, relative to `b`'s largest
/// magnitude.
fn error_of_scale(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    worst / scale
}

/// bf16 attention (the five products with bf16 operands and f32 sums; softmax, lse and the
/// score gradients in f32) against the naive f32 reference. The stated tolerance: every
/// output within 2% of its largest element (bf16 keeps 8 significant bits; measured under
/// 1%). It must also differ from the f32 path, or the bf16 products did not run.
#[test]
fn bf16_attention_matches_the_reference_within_bf16_tolerance() {
    let mut rng = Rng::new(87);
    for &(n_heads, n_kv_heads, hd, t_len) in &[(4, 2, 8, 7), (9, 3, 64, 150), (2, 1, 3, 70)] {
        let s = shape(n_heads, n_kv_heads, hd);
        let q = rng.vec(t_len * n_heads * hd);
        let k = rng.vec(t_len * n_kv_heads * hd);
        let v = rng.vec(t_len * n_kv_heads * hd);
        let dout = rng.vec(q.len());
        let mut out = vec![f32::NAN; q.len()];
        let mut lse = vec![f32::NAN; n_heads * t_len];
        attention_forward_train(&mut out, &mut lse, &q, &k, &v, &[], s, Precision::Bf16);
        let (mut out_ref, mut lse_ref) = (vec![0.0; q.len()], vec![0.0; lse.len()]);
        attention_forward_train_naive(&mut out_ref, &mut lse_ref, &q, &k, &v, s);
        assert!(error_of_scale(&out, &out_ref) < 2e-2);
        assert!(error_of_scale(&lse, &lse_ref) < 2e-2);
        let zeros = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
        let start = (&zeros.0[..], &zeros.1[..], &zeros.2[..]);
        let bf16 = run_backward_packed(s, &q, &k, &v, &[], &dout, start, Precision::Bf16);
        let f32s = run_backward_packed(s, &q, &k, &v, &[], &dout, start, Precision::F32);
        let (mut dq, mut dk, mut dv) = zeros.clone();
        attention_backward_naive(&mut dq, &mut dk, &mut dv, &dout, &q, &k, &v, s);
        for (name, got, want, f) in [
            ("dq", &bf16.0, &dq, &f32s.0),
            ("dk", &bf16.1, &dk, &f32s.1),
            ("dv", &bf16.2, &dv, &f32s.2),
        ] {
            let e = error_of_scale(got, want);
            assert!(e < 2e-2, "{name}: bf16 off by {e} of its scale");
            assert_ne!(
                got, f,
                "{name}: bf16 equals f32, the bf16 products did not run"
            );
        }
    }
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
/// chunk, straddling chunk edges and spanning row blocks. In bf16 the products read windows
/// of keys packed once, which start before an example's first key; the keys outside it must
/// still count for nothing (the sums may group pairs differently, hence the tolerance).
#[test]
fn packed_examples_are_independent() {
    for (precision, tol) in [(Precision::F32, 1e-6), (Precision::Bf16, 1e-5)] {
        packed_examples_are_independent_in(precision, tol);
    }
}

fn packed_examples_are_independent_in(precision: Precision, tol: f32) {
    let mut rng = Rng::new(86);
    for &(n_heads, n_kv_heads, hd, ref lens) in &[
        (4, 2, 8, vec![3usize, 5, 1, 7]),
        (2, 1, 3, vec![17, 1, 40, 9, 133]),
        (9, 3, 64, vec![33, 31]),
        (9, 3, 64, vec![40, 90, 126]),
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
        attention_forward_train(&mut out, &mut lse, &q, &k, &v, &starts, s, precision);
        let zeros = (vec![0.0; q.len()], vec![0.0; k.len()]);
        let (dq, dk, dv) = run_backward_packed(
            s,
            &q,
            &k,
            &v,
            &starts,
            &dout,
            (&zeros.0, &zeros.1, &zeros.1),
            precision,
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
                precision,
            );
            assert_close(&out[qs.clone()], &o1, tol);
            for h in 0..n_heads {
                assert_close(&lse[h * t_len + first..][..n], &l1[h * n..][..n], tol);
            }
            let z = (vec![0.0; n * qr], vec![0.0; n * kr]);
            let (dq1, dk1, dv1) = run_backward_packed(
                s,
                &q[qs.clone()],
                &k[ks.clone()],
                &v[ks.clone()],
                &[],
                &dout[qs.clone()],
                (&z.0, &z.1, &z.1),
                precision,
            );
            assert_close(&dq[qs], &dq1, tol);
            assert_close(&dk[ks.clone()], &dk1, tol);
            assert_close(&dv[ks], &dv1, tol);
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
fn row_kernels_agree_bit_for_bit_across_instruction_sets() {
    // The products run on the GEMM crate's own dispatch; the softmax and the score
    // gradients are ours, and every tier compiles the same scalar code (fused multiply-adds
    // in the same order), so the portable fallback gives the same bits as the vector copies.
    let mut rng = Rng::new(86);
    let (r0, rows) = (5, 9);
    // Two packed examples: rows before 8 start at 2, the rest at 8; keys run 2..14.
    let starts: Vec<u32> = (0..r0 + rows).map(|t| if t < 8 { 2 } else { 8 }).collect();
    let (k0, kc) = (2, r0 + rows - 2);
    let scores: Vec<f32> = rng.vec(rows * kc).iter().map(|x| 4.0 * x).collect();
    let softmax = |isa| {
        let (mut p, mut lse) = (scores.clone(), vec![0.0; rows]);
        super::rows::softmax_rows(isa, &mut p, &mut lse, &starts, r0, k0, 0.3);
        (p, lse)
    };
    let (p, lse) = softmax(Isa::Baseline);
    for (r, row) in p.chunks_exact(kc).enumerate() {
        let t = r0 + r;
        let live = if t < 8 { 0..t + 1 - k0 } else { 6..t + 1 - k0 };
        let total: f32 = row[live.clone()].iter().sum();
        assert!((total - 1.0).abs() < 1e-5, "row {r} sums to {total}");
        for (j, &x) in row.iter().enumerate() {
            assert!(live.contains(&j) || x == 0.0, "row {r} sees masked key {j}");
        }
    }
    let dp = rng.vec(rows * kc);
    let d = rng.vec(rows);
    let grads = |isa| {
        let (mut p2, mut ds) = (scores.clone(), dp.clone());
        super::rows::score_grads(isa, &mut p2, &mut ds, &lse, &d, &starts, r0, k0, 0.3);
        (p2, ds)
    };
    let (p2, _) = grads(Isa::Baseline);
    // The backward recomputes the forward's probabilities from the saved log-sum-exp.
    assert_close(&p2, &p, 1e-6);
    for isa in Isa::available() {
        assert!(softmax(isa) == (p.clone(), lse.clone()), "{isa}");
        assert!(grads(isa) == grads(Isa::Baseline), "{isa}");
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
