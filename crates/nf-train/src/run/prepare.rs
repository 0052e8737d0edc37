//! A run made ready in memory: the model wrapped for training, the data loaded, split and
//! checked, the trainer built. Nothing is written.

use std::path::Path;

use nf_data::prep::load_run_data;
use nf_model::train::{BatchShape, Method, TrainModel, adapter::Adapter};
use nf_model::{Model, Sampler, SamplerConfig};
use nf_protocol::{ErrorCode, Failure};
use nf_tokenizer::Tokenizer;

use super::RunConfig;
use crate::trainer::{RunHashes, Trainer};
use crate::{Result, TrainError};

/// What [`prepare`] builds.
pub struct Prepared {
    /// The configuration as the run uses it (window clamped to the model, steps from
    /// `epochs`, an initial adapter's shape, the hashes).
    pub cfg: RunConfig,
    /// The trainer, ready to run or resume.
    pub trainer: Trainer,
    /// The model's parameter count (trainable or not).
    pub total_params: usize,
    /// The window the run trains on.
    pub seq_len: usize,
    /// What the data warned about (skipped files, a validation split too small to use).
    pub warnings: Vec<String>,
}

/// The adapter a fresh LoRA run starts from, with its sha256 (a file's, or a folder's tree
/// hash), which joins the config hash.
pub struct InitAdapter {
    /// The adapter's weights and shape.
    pub adapter: Adapter,
    /// Its sha256 (a file's, or a folder's tree hash).
    pub sha256: String,
}

/// Builds the trainer for `cfg` on `model` (loaded as `cfg.model` names it, whose files
/// hash to `base_hash`), reading the data with `tokenizer`.
///
/// `epochs` and `init` are for a fresh run only (a resume keeps the steps and the adapter
/// shape in its `run.json`, and its checkpoint holds newer weights): `epochs` sets the
/// steps, and `init` is the adapter a LoRA run starts from, whose shape it takes.
pub fn prepare(
    mut cfg: RunConfig,
    model: Model,
    tokenizer: &Tokenizer,
    base_hash: String,
    init: Option<InitAdapter>,
    epochs: Option<f32>,
    run_dir: &Path,
) -> Result<Prepared> {
    if let Some(i) = &init {
        let c = &i.adapter.config;
        cfg.lora_rank = c.rank;
        cfg.lora_alpha = c.alpha;
        cfg.lora_targets = c
            .targets
            .iter()
            .map(|t| t.short())
            .collect::<Vec<_>>()
            .join(",");
        cfg.init_adapter_sha256 = Some(i.sha256.clone());
    }
    let data = load_run_data(
        &cfg.data,
        &cfg.val_data,
        cfg.val_fraction,
        !cfg.cross_example_attention,
        tokenizer,
    )?;
    let mut warnings = data.warnings;
    let (train, val) = (data.train, data.val);
    let seq_len = cfg.seq_len.min(model.config.max_seq_len);
    // The window the run really uses is what run.json records and the config hash covers,
    // so a resume (which reads it back) hashes the same value.
    cfg.seq_len = seq_len;
    if let Some(epochs) = epochs {
        // One epoch is every packed window once.
        let windows = (train.tokens.len().saturating_sub(1) / seq_len) as f64;
        let per_step = (cfg.batch_size * cfg.options.grad_accum) as f64;
        cfg.options.steps = ((epochs as f64 * windows / per_step).ceil() as u64).max(1);
    }
    let need = seq_len + 1;
    if train.tokens.len() < need {
        return Err(TrainError::Failure(Failure::new(
            ErrorCode::BadInput,
            format!(
                "the training data has {} tokens, fewer than one window of {need}",
                train.tokens.len()
            ),
            "give more text, or a smaller --seq-len",
        )));
    }
    let val = (!val.tokens.is_empty()).then_some(val).filter(|v| {
        let ok = v.tokens.len() >= need;
        if !ok {
            warnings.push(format!("validation split has {} tokens, fewer than one window of {need}; validation is off (give more data, a larger --val-fraction, or --val)", v.tokens.len()));
        }
        ok
    });
    let (val, val_mask, val_starts) = match val {
        Some(v) => (Some(v.tokens), v.mask, v.starts),
        None => (None, None, None),
    };
    let hashes = RunHashes {
        config: cfg.config_hash(&model.config),
        base_model: base_hash,
        data: train.hash(),
        datasets: cfg
            .datasets
            .iter()
            .map(|d| d.manifest_sha256.clone())
            .collect(),
    };
    let method = cfg.train_method()?;
    let total_params = model.config.n_params();
    let shape = BatchShape {
        batch: cfg.batch_size,
        seq_len,
        recompute: cfg.recompute,
    };
    let lora = matches!(method, Method::Lora(_));
    let mut tm = TrainModel::new(model, method, shape, cfg.options.seed);
    if let Some(i) = &init {
        tm.load_adapter(&i.adapter)?;
    }
    if let Some(ty) = cfg.base_dtype.ggml().filter(|_| lora) {
        store_frozen_as(&mut tm, ty)?;
    }
    tm.set_precision(cfg.precision);
    cfg.hashes = Some(hashes.clone());
    let trainer = Trainer::new(tm, cfg.options.clone(), train.tokens, val, run_dir, hashes)?
        .with_loss_masks(train.mask, val_mask)?
        .with_example_starts(train.starts, val_starts)?;
    Ok(Prepared {
        cfg,
        trainer,
        total_params,
        seq_len,
        warnings,
    })
}

/// Converts a LoRA model's frozen f32 matrices to `ty`, failing with a hint when a matrix
/// cannot take it (rows that are not whole blocks of a quantized type).
pub fn store_frozen_as(tm: &mut TrainModel, ty: nf_formats::GgmlType) -> Result<()> {
    tm.store_frozen_as(ty).map_err(|e| {
        TrainError::Failure(Failure::new(
            ErrorCode::Unsupported,
            format!("cannot hold the base as {}: {e}", ty.name()),
            "pick another --base-dtype (bf16, f16 and q8_0 fit more shapes), or as-loaded",
        ))
    })
}

/// A short greedy continuation of `prompt` with the current weights, decoded (the
/// `train.sample` event's text); `None` when the prompt does not encode or generation
/// fails.
pub fn sample_text(m: &TrainModel, tokenizer: &Tokenizer, prompt: &str) -> Option<String> {
    let model = m.to_model();
    let ids = tokenizer
        .encode(prompt, tokenizer.add_bos_default(), false)
        .ok()?;
    let mut cache = model.new_cache(ids.len() + 48);
    let mut sampler = Sampler::new(SamplerConfig {
        temperature: 0.0,
        ..SamplerConfig::default()
    });
    let g = nf_model::generate::generate(
        &model,
        &mut cache,
        &ids,
        &mut sampler,
        40,
        tokenizer.eos_ids(),
        |_| true,
    )
    .ok()?;
    // Decode prompt and continuation together so the tokenizer's word boundaries come out
    // as they would in the whole text, then keep what follows the prompt.
    let mut all = ids.clone();
    all.extend(&g.tokens);
    let (whole, head) = (tokenizer.decode(&all), tokenizer.decode(&ids));
    Some(
        whole
            .strip_prefix(&head)
            .map_or_else(|| tokenizer.decode(&g.tokens), str::to_string),
    )
}
