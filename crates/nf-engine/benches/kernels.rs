//! Kernel micro-benchmarks on SmolLM2-135M shapes (dim 576, ffn 1536, 9 heads of 64).
//! Run with `cargo bench -p nf-engine`; results are recorded in BENCHMARKS.md.

use divan::{Bencher, black_box};
use nf_engine::Precision;
use nf_engine::attention::{
    AttnShape, attention, attention_backward, attention_backward_scratch_len,
    attention_forward_train,
};
use nf_engine::gemm_bf16::{matmul_backward_bf16, matmul_bf16};
use nf_engine::ggml::GgmlType;
use nf_engine::linear::{Weight, linear};
use nf_engine::lowrank::{Strided as S, wide_t_times_narrow, wide_times_narrow};
use nf_engine::matmul::{matmul, matmul_backward};
use nf_engine::norm::rmsnorm;
use nf_engine::quant::{dequantize, quantize};

fn main() {
    divan::main();
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32
                - 0.5
        })
        .collect()
}

const D: usize = 576;
const H: usize = 1536;

/// f32 GEMM, `[n, 576] · [1536, 576]ᵀ`: decode (n = 1) and a prompt batch (n = 128).
#[divan::bench(args = [1, 128])]
fn matmul_f32(b: Bencher, n: usize) {
    let (x, w) = (data(n * D, 1), data(H * D, 2));
    let mut out = vec![0.0; n * H];
    b.counter(divan::counter::ItemsCount::new(2 * n * H * D))
        .bench_local(|| matmul(black_box(&mut out), &x, &w, n, D, H));
}

/// The same product with quantized weights, dequantized on the fly.
#[divan::bench(args = [(GgmlType::Q4_1, 1), (GgmlType::Q4_1, 128), (GgmlType::Q8_0, 1), (GgmlType::Q8_0, 128)])]
fn linear_quant(b: Bencher, (ty, n): (GgmlType, usize)) {
    let mut bytes = Vec::new();
    quantize(ty, &data(H * D, 3), &mut bytes).unwrap();
    let w = Weight::from_quant(H, D, ty, bytes).unwrap();
    let x = data(n * D, 4);
    let mut out = vec![0.0; n * H];
    b.counter(divan::counter::ItemsCount::new(2 * n * H * D))
        .bench_local(|| linear(black_box(&mut out), &x, &w));
}

#[divan::bench(args = [1, 128])]
fn rmsnorm_576(b: Bencher, n: usize) {
    let (x, w) = (data(n * D, 5), data(D, 6));
    let mut out = vec![0.0; n * D];
    b.bench_local(|| rmsnorm(black_box(&mut out), &x, &w, 1e-5));
}

/// One decode step attending over 512 cached positions, and a 128-token causal prompt.
#[divan::bench(args = [(1, 511), (128, 0)])]
fn attention_gqa(b: Bencher, (n, pos0): (usize, usize)) {
    let s = AttnShape {
        n_heads: 9,
        n_kv_heads: 3,
        head_dim: 64,
    };
    let q = data(n * 576, 7);
    let k = data((pos0 + n) * 192, 8);
    let v = data((pos0 + n) * 192, 9);
    let mut out = vec![0.0; n * 576];
    b.bench_local(|| attention(black_box(&mut out), &q, &k, &v, pos0, s));
}

/// Decoding one FFN weight (`[1536, 576]`) to f32, as the bf16 GEMM's packing does for a
/// frozen quantized base in every forward and backward product.
#[divan::bench(args = [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4K, GgmlType::Q6K])]
fn dequantize_ffn(b: Bencher, ty: GgmlType) {
    let mut q = Vec::new();
    quantize(ty, &data(H * D, 5), &mut q).ok();
    if q.is_empty() {
        // The k-quants have no quantizer here; decode arbitrary blocks (the speed does not
        // care).
        q = (0..H * D / ty.block_size() * ty.type_size())
            .map(|i| (i * 7) as u8)
            .collect();
    }
    let mut out = vec![0.0f32; H * D];
    b.counter(divan::counter::ItemsCount::new(H * D))
        .bench_local(|| dequantize(ty, black_box(&q), &mut out).unwrap());
}

/// Backward of the 128-token product above: `dx += dy · w` and `dw += dyᵀ · x`, twice the
/// forward's work.
#[divan::bench]
fn matmul_backward_f32(b: Bencher) {
    let n = 128;
    let (x, w, dy) = (data(n * D, 1), data(H * D, 2), data(n * H, 3));
    let (mut dx, mut dw) = (vec![0.0; n * D], vec![0.0; H * D]);
    b.counter(divan::counter::ItemsCount::new(4 * n * H * D))
        .bench_local(|| {
            matmul_backward(
                Some(black_box(&mut dx)),
                Some(black_box(&mut dw)),
                &dy,
                &x,
                &w,
                n,
                D,
                H,
            )
        });
}

/// Training's linear layers at Stories110M's shapes, 256 tokens: `(out, in)` of the
/// attention projections, the FFN's up and down, and the 32000-token classifier. Forward plus
/// both backward products (6·n·out·in flops), in f32 and in bf16 with f32 sums.
const TRAIN_LINEARS: [(usize, usize); 4] = [(768, 768), (2048, 768), (768, 2048), (32000, 768)];

/// The three products of the classifier on their own, bf16: which one lags.
#[divan::bench(args = ["forward", "dx", "dw"])]
fn classifier_bf16(b: Bencher, product: &str) {
    let (n, m, k) = (256, 32000, 768);
    let (x, w, dy) = (data(n * k, 1), data(m * k, 2), data(n * m, 3));
    let (mut out, mut dx, mut dw) = (vec![0.0; n * m], vec![0.0; n * k], vec![0.0; m * k]);
    b.counter(divan::counter::ItemsCount::new(2 * n * m * k))
        .bench_local(|| match product {
            "forward" => matmul_bf16(black_box(&mut out), &x, &w, n, k, m),
            "dx" => matmul_backward_bf16(Some(&mut dx), None, &dy, &x, &w, n, k, m),
            _ => matmul_backward_bf16(None, Some(&mut dw), &dy, &x, &w, n, k, m),
        });
}

fn linear_step(b: Bencher, (m, k): (usize, usize), bf16: bool) {
    let n = 256;
    let (x, w, dy) = (data(n * k, 1), data(m * k, 2), data(n * m, 3));
    let (mut out, mut dx, mut dw) = (vec![0.0; n * m], vec![0.0; n * k], vec![0.0; m * k]);
    b.counter(divan::counter::ItemsCount::new(6 * n * m * k))
        .bench_local(|| {
            if bf16 {
                matmul_bf16(black_box(&mut out), &x, &w, n, k, m);
                matmul_backward_bf16(Some(&mut dx), Some(&mut dw), &dy, &x, &w, n, k, m);
            } else {
                matmul(black_box(&mut out), &x, &w, n, k, m);
                matmul_backward(Some(&mut dx), Some(&mut dw), &dy, &x, &w, n, k, m);
            }
        });
}

#[divan::bench(args = TRAIN_LINEARS)]
fn train_linear_f32(b: Bencher, shape: (usize, usize)) {
    linear_step(b, shape, false);
}

#[divan::bench(args = TRAIN_LINEARS)]
fn train_linear_bf16(b: Bencher, shape: (usize, usize)) {
    linear_step(b, shape, true);
}

const TRAIN_SHAPE: AttnShape = AttnShape {
    n_heads: 9,
    n_kv_heads: 3,
    head_dim: 64,
};

/// stories260K's attention (8 heads / 4 kv heads of 8): tiny heads, where per-(row, key)
/// overhead rather than arithmetic decides the speed.
const TINY_SHAPE: AttnShape = AttnShape {
    n_heads: 8,
    n_kv_heads: 4,
    head_dim: 8,
};

/// Forward and backward of training attention for one sequence of `t` tokens of `s`.
fn train_inputs(t: usize, s: AttnShape) -> [Vec<f32>; 4] {
    let (qd, kvd) = (s.n_heads * s.head_dim, s.n_kv_heads * s.head_dim);
    [
        data(t * qd, 7),
        data(t * kvd, 8),
        data(t * kvd, 9),
        data(t * qd, 10),
    ]
}

#[divan::bench(args = [256])]
fn attention_train_forward_tiny(b: Bencher, t: usize) {
    let s = TINY_SHAPE;
    let [q, k, v, _] = train_inputs(t, s);
    let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; s.n_heads * t]);
    b.bench_local(|| {
        attention_forward_train(
            black_box(&mut out),
            &mut lse,
            &q,
            &k,
            &v,
            &[],
            s,
            Precision::F32,
        )
    });
}

#[divan::bench(args = [256])]
fn attention_train_backward_tiny(b: Bencher, t: usize) {
    let s = TINY_SHAPE;
    let [q, k, v, dout] = train_inputs(t, s);
    let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; s.n_heads * t]);
    attention_forward_train(&mut out, &mut lse, &q, &k, &v, &[], s, Precision::F32);
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    let mut scratch = vec![0.0; attention_backward_scratch_len(t, s)];
    b.bench_local(|| {
        attention_backward(
            black_box(&mut dq),
            &mut dk,
            &mut dv,
            &mut scratch,
            &dout,
            &out,
            &lse,
            &q,
            &k,
            &v,
            &[],
            s,
            Precision::F32,
        )
    });
}

/// Training attention over one causal sequence of T tokens, f32 and bf16 products.
#[divan::bench(args = [(128, "f32"), (256, "f32"), (512, "f32"), (256, "bf16")])]
fn attention_train_forward(b: Bencher, (t, precision): (usize, &str)) {
    let precision = Precision::parse(precision).unwrap();
    let q = data(t * 576, 7);
    let (k, v) = (data(t * 192, 8), data(t * 192, 9));
    let (mut out, mut lse) = (vec![0.0; t * 576], vec![0.0; 9 * t]);
    b.bench_local(|| {
        attention_forward_train(
            black_box(&mut out),
            &mut lse,
            &q,
            &k,
            &v,
            &[],
            TRAIN_SHAPE,
            precision,
        )
    });
}

#[divan::bench(args = [(128, "f32"), (256, "f32"), (512, "f32"), (256, "bf16")])]
fn attention_train_backward(b: Bencher, (t, precision): (usize, &str)) {
    let precision = Precision::parse(precision).unwrap();
    let s = TRAIN_SHAPE;
    let q = data(t * 576, 7);
    let (k, v) = (data(t * 192, 8), data(t * 192, 9));
    let dout = data(t * 576, 10);
    let (mut out, mut lse) = (vec![0.0; t * 576], vec![0.0; 9 * t]);
    attention_forward_train(&mut out, &mut lse, &q, &k, &v, &[], s, precision);
    let (mut dq, mut dk, mut dv) = (vec![0.0; t * 576], vec![0.0; t * 192], vec![0.0; t * 192]);
    let mut scratch = vec![0.0; attention_backward_scratch_len(t, s)];
    b.bench_local(|| {
        attention_backward(
            black_box(&mut dq),
            &mut dk,
            &mut dv,
            &mut scratch,
            &dout,
            &out,
            &lse,
            &q,
            &k,
            &v,
            &[],
            s,
            precision,
        )
    });
}

/// The six small products of a rank-16 LoRA adapter on SmolLM2's FFN up projection
/// (1536 × 576) at 256 tokens, bf16: `h = x·Aᵀ`, `y += h·Bᵀ`, `dB += dyᵀ·h`, `dh = dy·B`,
/// `dA += dhᵀ·x`, `dx += dh·A`.
#[divan::bench(args = ["h", "y", "db", "dh", "da", "dx"])]
fn lora_products_bf16(b: Bencher, product: &str) {
    let (n, m, k, r) = (256, H, D, 16);
    let (x, a, bm, dy) = (
        data(n * k, 1),
        data(r * k, 2),
        data(m * r, 3),
        data(n * m, 4),
    );
    let (mut h, mut y, mut dx) = (data(n * r, 5), vec![0.0; n * m], vec![0.0; n * k]);
    let (mut da, mut db, mut dh) = (vec![0.0; r * k], vec![0.0; m * r], vec![0.0; n * r]);
    b.bench_local(|| match product {
        "h" => matmul_bf16(black_box(&mut h), &x, &a, n, k, r),
        "y" => matmul_bf16(black_box(&mut y), &h, &bm, n, r, m),
        "db" => matmul_backward_bf16(None, Some(&mut db), &dy, &h, &bm, n, r, m),
        "dh" => matmul_backward_bf16(Some(&mut dh), None, &dy, &h, &bm, n, r, m),
        "da" => matmul_backward_bf16(None, Some(&mut da), &dh, &x, &a, n, k, r),
        _ => matmul_backward_bf16(Some(&mut dx), None, &dh, &x, &a, n, k, r),
    });
}

/// The four narrow products on `nf_engine::lowrank`'s f32 register-block loops (the other two
/// ride along the frozen product's depth in bf16 training).
#[divan::bench(args = ["h", "db", "dh", "da"])]
fn lora_products_narrow(b: Bencher, product: &str) {
    let (n, m, k, r) = (256, H, D, 16);
    let (x, a, bm, dy) = (
        data(n * k, 1),
        data(r * k, 2),
        data(m * r, 3),
        data(n * m, 4),
    );
    let (h, mut out) = (data(n * r, 5), vec![0.0; k.max(m).max(n) * r]);
    b.bench_local(|| match product {
        "h" => wide_times_narrow(
            &mut out[..n * r],
            S::rows(&x, k),
            S::transposed(&a, k),
            n,
            k,
            r,
            false,
        ),
        "dh" => wide_times_narrow(
            &mut out[..n * r],
            S::rows(&dy, m),
            S::rows(&bm, r),
            n,
            m,
            r,
            false,
        ),
        "db" => wide_t_times_narrow(&mut out[..m * r], S::rows(&dy, m), S::rows(&h, r), n, m, r),
        _ => wide_t_times_narrow(&mut out[..k * r], S::rows(&x, k), S::rows(&h, r), n, k, r),
    });
}

/// A frozen linear of SmolLM2 in a LoRA step, 256 tokens, bf16: the forward `x · Wᵀ` and the
/// input gradient `dy · W`, with W held as f32 (read in place) or as Q4_1 blocks (decoded
/// into the packed panel on every product). The gap is the cost of decoding and packing.
#[divan::bench(args = [("q4_1", 576, 576), ("f32", 576, 576), ("packed", 576, 576), ("q4_1", 1536, 576), ("f32", 1536, 576), ("packed", 1536, 576)])]
fn frozen_linear_bf16(b: Bencher, (ty, m, k): (&str, usize, usize)) {
    let n = 256;
    let v = data(m * k, 2);
    if ty == "packed" {
        // Both panels packed beforehand (as a trainable weight keeps them): the products alone.
        use nf_engine::gemm_bf16::{PackedWeight, Rhs, gemm_bf16};
        let mut pw = PackedWeight::new(m, k);
        pw.pack(&v);
        let (x, dy) = (data(n * k, 1), data(n * m, 3));
        let (mut out, mut dx) = (vec![0.0; n * m], vec![0.0; n * k]);
        let isa = nf_engine::cpu::isa();
        let t = nf_engine::cpu::threads();
        b.counter(divan::counter::ItemsCount::new(4 * n * m * k))
            .bench_local(|| {
                let out = black_box(&mut out);
                gemm_bf16(isa, out, n, m, k, (&x, k, 1), Rhs::PackedT(&pw), false, t);
                let dx = black_box(&mut dx);
                gemm_bf16(isa, dx, n, k, m, (&dy, m, 1), Rhs::Packed(&pw), true, t);
            });
        return;
    }
    let w = if ty == "f32" {
        Weight::from_f32(m, k, v)
    } else {
        let mut bytes = Vec::new();
        quantize(GgmlType::Q4_1, &v, &mut bytes).unwrap();
        Weight::from_quant(m, k, GgmlType::Q4_1, bytes).unwrap()
    };
    let (x, dy) = (data(n * k, 1), data(n * m, 3));
    let (mut out, mut dx) = (vec![0.0; n * m], vec![0.0; n * k]);
    b.counter(divan::counter::ItemsCount::new(4 * n * m * k))
        .bench_local(|| {
            nf_engine::gemm_bf16::linear_bf16(black_box(&mut out), &x, &w);
            nf_engine::gemm_bf16::linear_backward_dx_bf16(black_box(&mut dx), &dy, &w);
        });
}

/// The classifier and loss of a SmolLM2 LoRA step (vocabulary 49152, dim 576, the tied
/// embedding as Q8_0), 256 tokens, bf16: the logits, the softmax cross-entropy turning them
/// into their gradient, and the input gradient `dlogits · W`.
#[divan::bench(args = ["logits", "loss", "dx"])]
fn classifier_q8_0_bf16(b: Bencher, part: &str) {
    let (n, vocab, d) = (256, 49152, D);
    let mut bytes = Vec::new();
    quantize(GgmlType::Q8_0, &data(vocab * d, 2), &mut bytes).unwrap();
    let w = Weight::from_quant(vocab, d, GgmlType::Q8_0, bytes).unwrap();
    let x = data(n * d, 1);
    let targets: Vec<u32> = (0..n as u32).map(|i| i * 97 % vocab as u32).collect();
    let mut logits = vec![0.0; n * vocab];
    nf_engine::gemm_bf16::linear_bf16(&mut logits, &x, &w);
    let (mut dx, mut lg) = (vec![0.0; n * d], logits.clone());
    b.bench_local(|| match part {
        "logits" => nf_engine::gemm_bf16::linear_bf16(black_box(&mut logits), &x, &w),
        // Includes copying the logits back in (about a tenth of the time).
        "loss" => {
            lg.copy_from_slice(&logits);
            black_box(nf_engine::loss::softmax_cross_entropy_backward(
                &mut lg, &targets, vocab, 0.01,
            ));
        }
        _ => nf_engine::gemm_bf16::linear_backward_dx_bf16(black_box(&mut dx), &logits, &w),
    });
}
