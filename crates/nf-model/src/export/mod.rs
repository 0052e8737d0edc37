//! Writing a model in Hugging Face layout (`config.json` + `model.safetensors`).
//!
//! Models whose q/k rows are in the interleaved RoPE layout (llama2.c, GGUF `llama`) have
//! those rows permuted back to Hugging Face's rotate-half layout, the inverse of what
//! llama.cpp's converter does, so `transformers` computes the same function.

pub mod gguf;
pub mod parity;

use std::collections::BTreeMap;
use std::path::Path;

use nf_engine::rope::{RopeStyle, rotate_half_to_interleaved_index};
use nf_formats::FormatError;
use nf_formats::atomic::write_atomic;
use nf_formats::safetensors::{StDtype, TensorToWrite, f32_bytes, write_safetensors};

use crate::error::Result;
use crate::model::Model;
use crate::weights::hf_name;

/// Reorders the rows of an interleaved-RoPE projection (`[n_heads * head_dim, cols]`) into
/// rotate-half order.
pub fn interleaved_rows_to_rotate_half(
    m: &[f32],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
) -> Vec<f32> {
    permute_head_rows(m, n_heads, head_dim, cols, true)
}

/// The inverse of [`interleaved_rows_to_rotate_half`]: rotate-half rows (Hugging Face, PEFT)
/// into the interleaved layout the model computes with.
pub fn rotate_half_rows_to_interleaved(
    m: &[f32],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
) -> Vec<f32> {
    permute_head_rows(m, n_heads, head_dim, cols, false)
}

/// Moves row `i` of every head to `rotate_half_to_interleaved_index(i)` (`forward`) or
/// back.
fn permute_head_rows(
    m: &[f32],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
    forward: bool,
) -> Vec<f32> {
    let mut out = vec![0.0; m.len()];
    for h in 0..n_heads {
        for i in 0..head_dim {
            let a = (h * head_dim + i) * cols;
            let b = (h * head_dim + rotate_half_to_interleaved_index(i, head_dim)) * cols;
            let (src, dst) = if forward { (a, b) } else { (b, a) };
            out[dst..dst + cols].copy_from_slice(&m[src..src + cols]);
        }
    }
    out
}

/// Writes named f32 tensors (`name`, `shape`, little-endian bytes) as one safetensors file
/// with `metadata` plus PyTorch's `format: pt`.
pub fn write_f32_tensors(
    path: &Path,
    owned: &[(String, Vec<usize>, Vec<u8>)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let tensors: Vec<TensorToWrite<'_>> = owned
        .iter()
        .map(|(name, shape, data)| TensorToWrite {
            name: name.clone(),
            dtype: StDtype::F32,
            shape: shape.clone(),
            data,
        })
        .collect();
    let mut meta = metadata.clone();
    meta.insert("format".into(), "pt".into());
    write_safetensors(path, &tensors, &meta)?;
    Ok(())
}

/// A tensor ready for safetensors: name, shape, little-endian bytes.
pub type OwnedTensor = (String, Vec<usize>, Vec<u8>);

/// Safetensors files above this size are split into shards, as `transformers`'
/// `save_pretrained` does by default ("2GB", decimal).
pub const SHARD_BYTES: usize = 2_000_000_000;

/// Writes `config.json` and `model.safetensors` (f32) into `dir`, which must exist; above
/// [`SHARD_BYTES`] the weights go into `model-0000i-of-0000n.safetensors` shards with a
/// `model.safetensors.index.json`.
pub fn export_hf(model: &Model, dir: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
    let c = &model.config;
    let mut hf_config = c.to_hf_json();
    let permute = c.rope_style == RopeStyle::Interleaved;
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape, data) in model.weights.named_tensors(c) {
        let bytes = if permute && (name.ends_with("attn_q.weight") || name.ends_with("attn_q.bias"))
        {
            let cols = if name.ends_with("weight") { c.dim } else { 1 };
            f32_bytes(&interleaved_rows_to_rotate_half(
                &data, c.n_heads, c.head_dim, cols,
            ))
        } else if permute && (name.ends_with("attn_k.weight") || name.ends_with("attn_k.bias")) {
            let cols = if name.ends_with("weight") { c.dim } else { 1 };
            f32_bytes(&interleaved_rows_to_rotate_half(
                &data,
                c.n_kv_heads,
                c.head_dim,
                cols,
            ))
        } else {
            f32_bytes(&data)
        };
        owned.push((hf_name(&name), shape, bytes));
    }
    write_sharded(dir, owned, metadata)?;
    hf_config["torch_dtype"] = "float32".into();
    let text = serde_json::to_string_pretty(&hf_config).expect("config serializes");
    let path = dir.join("config.json");
    write_atomic(&path, |w| std::io::Write::write_all(w, text.as_bytes()))
        .map_err(|e: FormatError| e)?;
    Ok(())
}

/// Writes `owned` as `model.safetensors`, or as shards of at most [`SHARD_BYTES`] (a
/// larger single tensor gets a shard of its own) with the index `transformers` reads.
fn write_sharded(
    dir: &Path,
    owned: Vec<OwnedTensor>,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let total: usize = owned.iter().map(|t| t.2.len()).sum();
    if total <= SHARD_BYTES {
        return write_f32_tensors(&dir.join("model.safetensors"), &owned, metadata);
    }
    let mut shards: Vec<Vec<OwnedTensor>> = vec![Vec::new()];
    let mut size = 0;
    for t in owned {
        if size > 0 && size + t.2.len() > SHARD_BYTES {
            shards.push(Vec::new());
            size = 0;
        }
        size += t.2.len();
        shards.last_mut().expect("one shard at least").push(t);
    }
    let n = shards.len();
    let mut weight_map = serde_json::Map::new();
    for (i, shard) in shards.iter().enumerate() {
        let file = format!("model-{:05}-of-{n:05}.safetensors", i + 1);
        for t in shard {
            weight_map.insert(t.0.clone(), file.clone().into());
        }
        write_f32_tensors(&dir.join(&file), shard, metadata)?;
    }
    let index = serde_json::json!({
        "metadata": {"total_size": total},
        "weight_map": weight_map,
    });
    let text = serde_json::to_string_pretty(&index).expect("index serializes");
    write_atomic(&dir.join("model.safetensors.index.json"), |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })?;
    Ok(())
}
