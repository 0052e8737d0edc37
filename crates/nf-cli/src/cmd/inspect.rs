//! `neuralforge inspect`: what a model file is, without running it.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use nf_engine::rope::RopeStyle;
use nf_formats::GgufFile;
use nf_formats::llama2c::Llama2cFile;
use nf_formats::safetensors::SafeTensorsDir;
use nf_model::{Config, ModelFormat};
use nf_protocol::{Event, ModelInfo};

use crate::cli::InspectArgs;
use crate::output::Output;
use nf_store::resolve::{load_tokenizer, resolve_model_path};

pub fn run(args: &InspectArgs, home: &Path, out: &mut Output) -> Result<()> {
    let path = resolve_model_path(&args.path, home)?;
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
            let tok = match &args.tokenizer {
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
    out.text(&human(&info))?;
    out.event(|| Event::ModelInfo(Box::new(info)))?;
    Ok(())
}

fn human(i: &ModelInfo) -> String {
    let mut types: Vec<String> = i
        .tensor_types
        .iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect();
    if types.is_empty() {
        types.push("none: no weights (a vocabulary-only file)".into());
    }
    let params = if i.n_params >= 1_000_000 {
        format!("{:.1}M", i.n_params as f64 / 1e6)
    } else {
        format!("{:.1}K", i.n_params as f64 / 1e3)
    };
    format!(
        "path            {}\nformat          {}\narchitecture    {}\nparameters      {params}\nlayers          {}\ndim             {} (ffn {})\nheads           {} query, {} key/value, head size {}\nvocabulary      {}\ncontext length  {}\nrope            theta {}, {}\nclassifier      {}\nextras          {}\ntensor types    {}\ntokenizer       {}\nchat template   {}\n",
        i.path,
        i.format,
        i.arch,
        i.n_layers,
        i.dim,
        i.hidden_dim,
        i.n_heads,
        i.n_kv_heads,
        i.head_dim,
        i.vocab_size,
        i.context_length,
        i.rope_theta,
        i.rope_style,
        if i.tied_embeddings {
            "tied to the embedding"
        } else {
            "separate"
        },
        match (i.qkv_bias, i.qk_norm) {
            (true, true) => "qkv bias, q/k norm",
            (true, false) => "qkv bias",
            (false, true) => "q/k norm",
            (false, false) => "none",
        },
        types.join(", "),
        i.tokenizer
            .as_deref()
            .unwrap_or("none (llama2.c checkpoints need --tokenizer)"),
        if i.chat_template { "yes" } else { "no" },
    )
}
