//! `neuralforge eval`: a model's mean cross-entropy and perplexity on held-out text, the
//! number that says what fine-tuning or quantization did to it.
//!
//! The tokens are cut into consecutive windows of `--seq-len + 1`; each window is one
//! forward pass from an empty cache, scoring every token after the first from the ones
//! before it in the window. A dataset (folder or name) is scored on its `val.bin`.

use nf_protocol::ErrorCode;
use std::path::{Path, PathBuf};

use anyhow::Result;
use nf_data::TokenStream;
use nf_protocol::Event;

use crate::cli::EvalArgs;
use crate::errors::user_error;
use crate::output::Output;
use nf_store::resolve::load;

pub fn run(args: &EvalArgs, home: &Path, out: &mut Output) -> Result<()> {
    crate::audit::scoped(home, "eval", |rec| {
        let data = data_paths(&args.data, home)?;
        for p in &data {
            rec.inputs
                .push(nf_audit::Artifact::path("data", p).map_err(crate::audit::audit_error)?);
        }
        run_inner(args, &data, home, out)
    })
}

/// Each dataset among `paths` becomes its `val.bin` (or, when it has no validation
/// tokens, its `train.bin`); other paths stay as they are.
fn data_paths(paths: &[PathBuf], home: &Path) -> Result<Vec<PathBuf>> {
    // expand_datasets keeps plain files in order and turns each dataset into its
    // train.bin, listing the val.bin of those with validation tokens apart.
    let (train, val, _) = nf_store::datasets::expand_datasets(paths, home)?;
    Ok(train
        .into_iter()
        .map(|p| {
            let sibling = p.with_file_name("val.bin");
            if p.file_name().is_some_and(|n| n == "train.bin") && val.contains(&sibling) {
                sibling
            } else {
                p
            }
        })
        .collect())
}

fn run_inner(args: &EvalArgs, data: &[PathBuf], home: &Path, out: &mut Output) -> Result<()> {
    let loaded = load(&args.model.spec(), home)?;
    let model = &loaded.model;
    let tokens = TokenStream::from_paths(data, &loaded.tokenizer)?.into_tokens();
    let seq = args.seq_len.clamp(1, model.config.max_seq_len);
    let windows = (tokens.len().saturating_sub(1) / seq).min(args.max_windows);
    if windows == 0 {
        return Err(user_error(
            ErrorCode::BadInput,
            format!(
                "the data has {} tokens, fewer than one window of {}",
                tokens.len(),
                seq + 1
            ),
            "give more text, or a smaller --seq-len",
        ));
    }
    let vocab = model.config.vocab_size;
    let mut cache = model.new_cache(seq);
    let (mut loss_sum, mut scored) = (0.0f64, 0usize);
    for w in 0..windows {
        let window = &tokens[w * seq..w * seq + seq + 1];
        cache.truncate(0);
        let logits = model.forward(&mut cache, &window[..seq], true)?;
        loss_sum += nf_engine::loss::cross_entropy_loss(&logits, &window[1..], vocab);
        scored += seq;
    }
    let loss = loss_sum / scored as f64;
    let perplexity = loss.exp();
    out.text(&format!(
        "loss {loss:.4}  perplexity {perplexity:.3}  ({scored} tokens in {windows} windows of {seq})\n"
    ))?;
    out.event(|| Event::EvalResult {
        loss,
        perplexity,
        tokens: scored as u64,
        windows: windows as u64,
        seq_len: seq as u64,
    })?;
    Ok(())
}
