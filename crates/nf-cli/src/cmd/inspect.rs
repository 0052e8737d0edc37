//! `neuralforge inspect`: what a model file is, without running it.

use std::path::Path;

use anyhow::Result;
use nf_protocol::{Event, ModelInfo};

use crate::cli::InspectArgs;
use crate::output::Output;

pub fn run(args: &InspectArgs, home: &Path, out: &mut Output) -> Result<()> {
    let info = nf_store::inspect::inspect(&args.path, args.tokenizer.as_deref(), home)?;
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
