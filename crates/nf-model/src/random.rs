//! Randomly initialized models: for benchmarks at any size (`bench train`), and tiny ones
//! for tests (finite-difference gradients, resume, kernels against references).

use std::path::Path;

use nf_engine::linear::Weight;
use nf_engine::quant::QuantError;
use nf_engine::rope::{RopeScaling, RopeStyle};
use nf_formats::GgmlType;

use crate::config::Config;
use crate::model::{Model, ModelFormat};
use crate::weights::{LayerWeights, Weights};

pub use nf_engine::rng::XorShift64;

/// A Llama configuration (interleaved RoPE, tied embeddings, no biases) of the given shape.
pub fn llama_config(
    dim: usize,
    hidden_dim: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv_heads: usize,
    vocab_size: usize,
    max_seq_len: usize,
) -> Config {
    Config {
        arch: "llama".into(),
        dim,
        hidden_dim,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim: dim / n_heads,
        vocab_size,
        max_seq_len,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_scaling: RopeScaling::None,
        rope_style: RopeStyle::Interleaved,
        tied_embeddings: true,
        qkv_bias: false,
        qk_norm: false,
    }
}

/// A tiny configuration (dim 16, 2 layers, 4 heads on 2 kv heads, vocabulary 19) with the
/// architecture's options switched as asked, for tests that must run in milliseconds.
pub fn tiny_config(style: RopeStyle, tied: bool, qkv_bias: bool, qk_norm: bool) -> Config {
    Config {
        head_dim: if qk_norm { 6 } else { 4 },
        rope_style: style,
        tied_embeddings: tied,
        qkv_bias,
        qk_norm,
        ..llama_config(16, 24, 2, 4, 2, 19, 32)
    }
}

/// A model of configuration `c` with weights as GPT-2 and llama2.c initialize them (std
/// 0.02; norms 1). With `ty` every matrix is made in that type a few rows at a time, so no
/// f32 copy of the whole model ever exists: the memory is what a base stored in `ty`
/// holds. Fails when a matrix's rows are not whole blocks of `ty`.
pub fn random_model(c: &Config, ty: Option<GgmlType>, seed: u64) -> Result<Model, QuantError> {
    let mut r = XorShift64(seed.max(1));
    let mut mat = |rows: usize, cols: usize| -> Result<Weight, QuantError> {
        let mut values = |n: usize| (0..n).map(|_| r.weight()).collect::<Vec<f32>>();
        let Some(ty) = ty else {
            return Ok(Weight::from_f32(rows, cols, values(rows * cols)));
        };
        if !cols.is_multiple_of(ty.block_size()) {
            return Err(QuantError::NotWholeBlocks {
                ty,
                n_elements: cols,
                block_size: ty.block_size(),
            });
        }
        // Blocks never straddle rows, so quantizing a few rows at a time gives the bytes
        // quantizing the whole matrix would.
        let mut bytes = Vec::new();
        let mut done = 0;
        while done < rows {
            let k = (rows - done).min(64);
            nf_engine::quant::quantize(ty, &values(k * cols), &mut bytes)?;
            done += k;
        }
        Weight::from_quant(rows, cols, ty, bytes)
    };
    let (d, h, qd, kvd) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim());
    let layers = (0..c.n_layers)
        .map(|_| {
            Ok(LayerWeights {
                attn_norm: vec![1.0; d],
                wq: mat(qd, d)?,
                wk: mat(kvd, d)?,
                wv: mat(kvd, d)?,
                wo: mat(d, qd)?,
                bq: None,
                bk: None,
                bv: None,
                q_norm: None,
                k_norm: None,
                ffn_norm: vec![1.0; d],
                w_gate: mat(h, d)?,
                w_up: mat(h, d)?,
                w_down: mat(d, h)?,
            })
        })
        .collect::<Result<Vec<_>, QuantError>>()?;
    let weights = Weights {
        token_embd: mat(c.vocab_size, d)?,
        output: if c.tied_embeddings {
            None
        } else {
            Some(mat(c.vocab_size, d)?)
        },
        layers,
        output_norm: vec![1.0; d],
        rope_freqs: None,
    };
    Ok(Model::assemble(
        c.clone(),
        weights,
        Path::new("random"),
        ModelFormat::Llama2c,
    ))
}

/// A model whose matrices are uniform in ±`scale` and whose norms, biases and q/k norms
/// (where `c` has them) are random too: every parameter matters, as gradient checks need.
pub fn random_model_uniform(c: &Config, seed: u64, scale: f32) -> Model {
    let mut r = XorShift64(seed * 7919 + 1);
    let (d, h, qd, kvd, hd) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim(), c.head_dim);
    let m = |rows: usize, cols: usize, r: &mut XorShift64| {
        Weight::from_f32(rows, cols, r.vec_scaled(rows * cols, scale))
    };
    let layers = (0..c.n_layers)
        .map(|_| LayerWeights {
            attn_norm: r.norm(d),
            wq: m(qd, d, &mut r),
            wk: m(kvd, d, &mut r),
            wv: m(kvd, d, &mut r),
            wo: m(d, qd, &mut r),
            bq: c.qkv_bias.then(|| r.vec_scaled(qd, 0.3)),
            bk: c.qkv_bias.then(|| r.vec_scaled(kvd, 0.3)),
            bv: c.qkv_bias.then(|| r.vec_scaled(kvd, 0.3)),
            q_norm: c.qk_norm.then(|| r.norm(hd)),
            k_norm: c.qk_norm.then(|| r.norm(hd)),
            ffn_norm: r.norm(d),
            w_gate: m(h, d, &mut r),
            w_up: m(h, d, &mut r),
            w_down: m(d, h, &mut r),
        })
        .collect();
    let weights = Weights {
        token_embd: m(c.vocab_size, d, &mut r),
        layers,
        output_norm: r.norm(d),
        output: (!c.tied_embeddings).then(|| m(c.vocab_size, d, &mut r)),
        rope_freqs: None,
    };
    Model::assemble(c.clone(), weights, Path::new("tiny"), ModelFormat::Llama2c)
}
