//! `inspect`: what a model file holds, read without loading its weights.

use std::collections::BTreeMap;
use std::path::Path;

use nf_engine::rope::RopeStyle;
use nf_formats::GgufFile;
use nf_formats::llama2c::Llama2cFile;
use nf_formats::safetensors::SafeTensorsDir;
use nf_model::{Config, ModelFormat};
use nf_protocol::ModelInfo;

use crate::Result;
use crate::resolve::{load_tokenizer, resolve_model_path};

/// What `inspect` reports about the model at `model` (a path or a stored name): its
/// configuration, tensor types and tokenizer, read from the file without loading weights.
/// A llama2.c checkpoint's tokenizer is `tokenizer` (it carries none).
pub fn inspect(model: &Path, tokenizer: Option<&Path>, home: &Path) -> Result<ModelInfo> {
    let path = resolve_model_path(model, home)?;
    let format = ModelFormat::detect(&path)?;
    let mut types: BTreeMap<String, u64> = BTreeMap::new();
    let (config, tokenizer, chat_template) = match format {
        ModelFormat::Gguf => {
            let g = GgufFile::open(&path)?;
            for t in &g.tensors {
                *types.entry(t.ggml_type.name().to_string()).or_default() += 1;
            }
            let kind =
                g.get_str("tokenizer.ggml.model")
                    .map(|m| match g.get_str("tokenizer.ggml.pre") {
                        Some(pre) => format!("gguf-{m}:{pre}"),
                        None => format!("gguf-{m}"),
                    });
            (
                Config::from_gguf(&g)?,
                kind,
                g.get_str("tokenizer.chat_template").is_some(),
            )
        }
        ModelFormat::HfDir => {
            let st = SafeTensorsDir::open(&path)?;
            for f in &st.files {
                for t in &f.tensors {
                    *types.entry(t.dtype.name().to_lowercase()).or_default() += 1;
                }
            }
            let tok = load_tokenizer(&path, None).ok();
            let template = tok.as_ref().is_some_and(|t| t.chat_template().is_some());
            (
                Config::from_hf_json(&path.join("config.json"))?,
                tok.map(|t| t.kind().to_string()),
                template,
            )
        }
        ModelFormat::Llama2c => {
            let f = Llama2cFile::open(&path)?;
            let ty = if f.version == 2 {
                "int8 groups (ak42 v2)"
            } else {
                "f32"
            };
            types.insert(ty.into(), f.tensors.len() as u64);
            let tok = match tokenizer {
                Some(t) => Some(
                    load_tokenizer(t, Some(f.config.vocab_size))?
                        .kind()
                        .to_string(),
                ),
                None => None,
            };
            (Config::from_llama2c(&f.config, &path)?, tok, false)
        }
    };
    let info = ModelInfo {
        path: path.display().to_string(),
        format: format.name().into(),
        arch: config.arch.clone(),
        dim: config.dim as u64,
        hidden_dim: config.hidden_dim as u64,
        n_layers: config.n_layers as u64,
        n_heads: config.n_heads as u64,
        n_kv_heads: config.n_kv_heads as u64,
        head_dim: config.head_dim as u64,
        vocab_size: config.vocab_size as u64,
        context_length: config.max_seq_len as u64,
        n_params: config.n_params() as u64,
        rope_theta: config.rope_theta as f64,
        rope_style: match config.rope_style {
            RopeStyle::Interleaved => "interleaved".into(),
            RopeStyle::RotateHalf => "rotate_half".into(),
        },
        tied_embeddings: config.tied_embeddings,
        qkv_bias: config.qkv_bias,
        qk_norm: config.qk_norm,
        tensor_types: types,
        tokenizer,
        chat_template,
    };
    Ok(info)
}
