//! Writing a model as GGUF v3 with llama.cpp's tensor names and metadata keys.
//!
//! The in-memory weights already carry GGUF names. What has to be decided on the way out:
//!
//! - **RoPE rows.** GGUF `llama` files hold q/k rows in the interleaved layout; a model
//!   loaded from a Hugging Face folder computes with rotate-half rows, which are permuted
//!   the way llama.cpp's converter does. qwen2/qwen3/phi3 GGUFs keep rotate-half rows.
//! - **Fused projections.** llama.cpp's phi3 expects `attn_qkv` and a double-height
//!   `ffn_up` (gate then up), which the loader split; they are concatenated again.
//! - **Types.** Matrices take `--quant`'s type; 1-D tensors (norms, biases) stay f32, as in
//!   llama.cpp. A matrix whose rows are not whole blocks of the type (stories260K's
//!   172-wide FFN) falls back to f16, which is llama.cpp's fallback for the legacy types.
//!   With a 4-bit type the classifier (`output.weight`, or `token_embd.weight` when it is
//!   tied) is stored as q8_0: llama.cpp keeps it at q6_k for the same reason, since every
//!   logit goes through it (on SmolLM2 a 4-bit classifier alone multiplies the logit
//!   deviation by about ten), and we have no k-quant quantizer yet.

use std::path::Path;

use nf_engine::rope::{RopeScaling, RopeStyle};
use nf_formats::gguf::MetaArray;
use nf_formats::quant::quantize;
use nf_formats::{GgmlType, GgufWriter, MetaValue};

use crate::error::{ModelError, Result};
use crate::export::rotate_half_rows_to_interleaved;
use crate::model::Model;

/// The types `--quant` accepts for GGUF export.
pub const EXPORT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
];

/// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`) for a model mostly in `ty`.
fn file_type(ty: GgmlType) -> u32 {
    match ty {
        GgmlType::F32 => 0,
        GgmlType::F16 => 1,
        GgmlType::Q4_0 => 2,
        GgmlType::Q4_1 => 3,
        GgmlType::Q8_0 => 7,
        GgmlType::BF16 => 32,
        _ => 0,
    }
}

/// What was written: tensors per type, and the matrices that could not take the requested
/// type.
#[derive(Debug, Clone, Default)]
pub struct GgufSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Matrices stored as f16 because their rows are not whole blocks of the type asked for.
    pub fallbacks: Vec<String>,
}

/// The architecture name llama.cpp knows the model by.
pub fn gguf_arch(arch: &str) -> &str {
    match arch {
        // llama.cpp converts Mistral checkpoints as `llama`.
        "mistral" => "llama",
        a => a,
    }
}

/// Whether GGUF stores this architecture's q/k rows interleaved.
fn gguf_interleaved(arch: &str) -> bool {
    gguf_arch(arch) == "llama"
}

/// Rows `[rows, cols]` of q or k (or their bias, `cols = 1`) in the layout the GGUF of
/// this architecture expects.
pub fn qk_rows_for_gguf(model: &Model, data: Vec<f32>, heads: usize, cols: usize) -> Vec<f32> {
    let c = &model.config;
    if gguf_interleaved(&c.arch) && c.rope_style == RopeStyle::RotateHalf {
        rotate_half_rows_to_interleaved(&data, heads, c.head_dim, cols)
    } else {
        data
    }
}

fn meta_err(e: nf_formats::GgufWriteError) -> ModelError {
    ModelError::Export(e.to_string())
}

/// Builds the GGUF of `model` with matrices in `quant` and `extra` metadata (tokenizer,
/// provenance) appended after the architecture keys.
pub fn gguf_writer(
    model: &Model,
    quant: GgmlType,
    extra: Vec<(String, MetaValue)>,
) -> Result<(GgufWriter<'static>, GgufSummary)> {
    if !EXPORT_TYPES.contains(&quant) {
        return Err(ModelError::Export(format!(
            "GGUF export to {quant} is not supported (use f32, f16, bf16, q8_0, q4_0 or q4_1)"
        )));
    }
    let c = &model.config;
    let arch = gguf_arch(&c.arch).to_string();
    let mut w = GgufWriter::new();
    let mut set = |k: &str, v: MetaValue| w.set(k, v).map_err(meta_err);
    set("general.architecture", MetaValue::String(arch.clone()))?;
    let name = model
        .path
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().to_string());
    set("general.name", MetaValue::String(name))?;
    set("general.file_type", MetaValue::U32(file_type(quant)))?;
    set(
        "general.quantization_version",
        MetaValue::U32(2), // ggml's GGML_QNT_VERSION
    )?;
    let a = |k: &str| format!("{arch}.{k}");
    let u = |v: usize| MetaValue::U32(v as u32);
    set(&a("context_length"), u(c.max_seq_len))?;
    set(&a("embedding_length"), u(c.dim))?;
    set(&a("block_count"), u(c.n_layers))?;
    set(&a("feed_forward_length"), u(c.hidden_dim))?;
    set(&a("attention.head_count"), u(c.n_heads))?;
    set(&a("attention.head_count_kv"), u(c.n_kv_heads))?;
    set(&a("attention.key_length"), u(c.head_dim))?;
    set(&a("attention.value_length"), u(c.head_dim))?;
    set(
        &a("attention.layer_norm_rms_epsilon"),
        MetaValue::F32(c.norm_eps),
    )?;
    set(&a("rope.freq_base"), MetaValue::F32(c.rope_theta))?;
    set(&a("rope.dimension_count"), u(c.head_dim))?;
    set(&a("vocab_size"), u(c.vocab_size))?;
    if let RopeScaling::Linear { factor } = c.rope_scaling {
        set(&a("rope.scaling.type"), MetaValue::String("linear".into()))?;
        set(&a("rope.scaling.factor"), MetaValue::F32(factor))?;
    }
    if matches!(c.rope_scaling, RopeScaling::Llama3 { .. }) && model.weights.rope_freqs.is_none() {
        return Err(ModelError::Export(
            "Llama 3.1 RoPE scaling without its rope_freqs table cannot be written to GGUF".into(),
        ));
    }
    for (k, v) in extra {
        set(&k, v)?;
    }
    let mut summary = GgufSummary::default();
    let (d, h) = (c.dim, c.hidden_dim);
    let phi3 = arch == "phi3";
    let mut pending: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let named = model.weights.named_tensors(c);
    let mut fused_qkv: Vec<f32> = Vec::new();
    let mut fused_up: Vec<f32> = Vec::new();
    for (name, shape, data) in named {
        let data = data.into_owned();
        let data = if name.ends_with("attn_q.weight") || name.ends_with("attn_q.bias") {
            let cols = if name.ends_with("weight") { d } else { 1 };
            qk_rows_for_gguf(model, data, c.n_heads, cols)
        } else if name.ends_with("attn_k.weight") || name.ends_with("attn_k.bias") {
            let cols = if name.ends_with("weight") { d } else { 1 };
            qk_rows_for_gguf(model, data, c.n_kv_heads, cols)
        } else {
            data
        };
        if phi3 {
            // q, k, v arrive in that order for each layer, then gate and up.
            let layer = name.split('.').nth(1).unwrap_or("0").to_string();
            match name.rsplit_once(&format!("blk.{layer}.")).map(|x| x.1) {
                Some("attn_q.weight" | "attn_k.weight") => {
                    fused_qkv.extend(data);
                    continue;
                }
                Some("attn_v.weight") => {
                    fused_qkv.extend(data);
                    let rows = fused_qkv.len() / d;
                    pending.push((
                        format!("blk.{layer}.attn_qkv.weight"),
                        vec![rows, d],
                        std::mem::take(&mut fused_qkv),
                    ));
                    continue;
                }
                Some("ffn_gate.weight") => {
                    fused_up.extend(data);
                    continue;
                }
                Some("ffn_up.weight") => {
                    fused_up.extend(data);
                    pending.push((
                        format!("blk.{layer}.ffn_up.weight"),
                        vec![2 * h, d],
                        std::mem::take(&mut fused_up),
                    ));
                    continue;
                }
                _ => {}
            }
        }
        pending.push((name, shape, data));
    }
    if let Some(f) = &model.weights.rope_freqs {
        pending.push(("rope_freqs.weight".into(), vec![f.len()], f.clone()));
    }
    for (name, shape, data) in pending {
        // GGUF lists dims fastest-first: a [rows, cols] matrix is [cols, rows].
        let dims: Vec<u64> = shape.iter().rev().map(|&x| x as u64).collect();
        let ty = stored_type(model, &name, &shape, quant);
        if shape.len() == 2 && ty == GgmlType::F16 && quant != GgmlType::F16 {
            summary.fallbacks.push(name.clone());
        }
        let mut bytes = Vec::new();
        quantize(ty, &data, &mut bytes)
            .map_err(|e| ModelError::Export(format!("tensor `{name}`: {e}")))?;
        w.add_tensor(name, &dims, ty, bytes).map_err(meta_err)?;
        summary.tensors += 1;
    }
    Ok((w, summary))
}

/// The type tensor `name` of `shape` is stored in when the export asks for `quant`.
fn stored_type(model: &Model, name: &str, shape: &[usize], quant: GgmlType) -> GgmlType {
    if shape.len() < 2 {
        return GgmlType::F32;
    }
    let classifier = if model.weights.output.is_some() {
        "output.weight"
    } else {
        "token_embd.weight"
    };
    let ty = if matches!(quant, GgmlType::Q4_0 | GgmlType::Q4_1) && name == classifier {
        GgmlType::Q8_0
    } else {
        quant
    };
    if shape[1].is_multiple_of(ty.block_size()) {
        ty
    } else {
        GgmlType::F16
    }
}

/// `model` with every matrix quantized as the GGUF export of type `quant` stores it: what
/// reading that GGUF back must compute exactly (quantizing rows commutes with the q/k row
/// permutation and the phi3 fusing, which move whole rows).
pub fn quantized_like_export(model: &Model, quant: GgmlType) -> Result<Model> {
    let mut m = model.clone();
    let q = |w: &mut nf_engine::linear::Weight, name: &str| -> Result<()> {
        let ty = stored_type(model, name, &[w.rows, w.cols], quant);
        if ty == GgmlType::F32 {
            *w = nf_engine::linear::Weight::from_f32(w.rows, w.cols, w.to_f32());
            return Ok(());
        }
        let mut bytes = Vec::new();
        quantize(ty, &w.to_f32(), &mut bytes)
            .map_err(|e| ModelError::Export(format!("tensor `{name}`: {e}")))?;
        *w = nf_engine::linear::Weight::from_quant(w.rows, w.cols, ty, bytes)
            .map_err(|e| ModelError::Export(format!("tensor `{name}`: {e}")))?;
        Ok(())
    };
    q(&mut m.weights.token_embd, "token_embd.weight")?;
    if let Some(o) = &mut m.weights.output {
        q(o, "output.weight")?;
    }
    for (l, lw) in m.weights.layers.iter_mut().enumerate() {
        for (w, stem) in [
            (&mut lw.wq, "attn_q"),
            (&mut lw.wk, "attn_k"),
            (&mut lw.wv, "attn_v"),
            (&mut lw.wo, "attn_output"),
            (&mut lw.w_gate, "ffn_gate"),
            (&mut lw.w_up, "ffn_up"),
            (&mut lw.w_down, "ffn_down"),
        ] {
            q(w, &format!("blk.{l}.{stem}.weight"))?;
        }
    }
    Ok(m)
}

/// Writes `model` as a GGUF file at `path` (atomically).
pub fn export_gguf(
    model: &Model,
    path: &Path,
    quant: GgmlType,
    extra: Vec<(String, MetaValue)>,
) -> Result<GgufSummary> {
    let (w, summary) = gguf_writer(model, quant, extra)?;
    w.write(path)?;
    Ok(summary)
}

/// String metadata pairs as GGUF keys under `prefix` (provenance: `neuralforge.*`).
pub fn string_keys<'a>(
    prefix: &str,
    kv: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<(String, MetaValue)> {
    kv.into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), MetaValue::String(v.clone())))
        .collect()
}

/// An array of GGUF strings.
pub fn string_array(values: Vec<String>) -> MetaValue {
    MetaValue::Array(MetaArray {
        elem_type: 8,
        values: values.into_iter().map(MetaValue::String).collect(),
    })
}
