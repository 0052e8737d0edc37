//! `run.json`: everything a run needs, resolved when it is created and read back to resume.

use std::path::{Path, PathBuf};

use nf_engine::Precision;
use nf_formats::GgmlType;
use nf_model::Config;
use nf_model::train::{LoraConfig, Method, parse_targets};
use nf_protocol::{ErrorCode, Failure};
use serde::{Deserialize, Serialize};

use super::RUN_FILE;
use crate::trainer::{RunHashes, TrainOptions};
use crate::{Result, TrainError};

/// Which weights a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMethod {
    /// Every weight.
    Full,
    /// A LoRA adapter on a frozen base.
    Lora,
}

impl RunMethod {
    /// `full` or `lora`, as `run.json` and the events spell it.
    pub fn name(self) -> &'static str {
        match self {
            RunMethod::Full => "full",
            RunMethod::Lora => "lora",
        }
    }
}

/// How a LoRA run holds the f32 matrices of its frozen base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BaseDtype {
    /// As loaded: HF and llama2.c models load as f32, GGUF matrices stay in their types.
    #[default]
    #[serde(rename = "as-loaded")]
    AsLoaded,
    /// bf16 (round to nearest even).
    #[serde(rename = "bf16")]
    Bf16,
    /// f16.
    #[serde(rename = "f16")]
    F16,
    /// 8-bit blocks of 32 with one scale.
    #[serde(rename = "q8_0")]
    Q8_0,
    /// 4-bit blocks of 32 with one scale.
    #[serde(rename = "q4_0")]
    Q4_0,
    /// 4-bit blocks of 32 with a scale and a minimum.
    #[serde(rename = "q4_1")]
    Q4_1,
}

impl BaseDtype {
    /// The names `--base-dtype` takes.
    pub const NAMES: &str = "as-loaded (= f32), bf16, f16, q8_0, q4_0 or q4_1";

    /// Parses a `--base-dtype` name; `f32` is `as-loaded`, which every f32 base already is.
    pub fn parse(name: &str) -> Option<BaseDtype> {
        Some(match name {
            "as-loaded" | "f32" => BaseDtype::AsLoaded,
            "bf16" => BaseDtype::Bf16,
            "f16" => BaseDtype::F16,
            "q8_0" => BaseDtype::Q8_0,
            "q4_0" => BaseDtype::Q4_0,
            "q4_1" => BaseDtype::Q4_1,
            _ => return None,
        })
    }

    /// The name `run.json` records.
    pub fn name(self) -> &'static str {
        match self {
            BaseDtype::AsLoaded => "as-loaded",
            BaseDtype::Bf16 => "bf16",
            BaseDtype::F16 => "f16",
            BaseDtype::Q8_0 => "q8_0",
            BaseDtype::Q4_0 => "q4_0",
            BaseDtype::Q4_1 => "q4_1",
        }
    }

    /// The tensor type to convert the frozen matrices to, `None` to keep them.
    pub fn ggml(self) -> Option<GgmlType> {
        match self {
            BaseDtype::AsLoaded => None,
            BaseDtype::Bf16 => Some(GgmlType::BF16),
            BaseDtype::F16 => Some(GgmlType::F16),
            BaseDtype::Q8_0 => Some(GgmlType::Q8_0),
            BaseDtype::Q4_0 => Some(GgmlType::Q4_0),
            BaseDtype::Q4_1 => Some(GgmlType::Q4_1),
        }
    }
}

/// A dataset a run trained on, as `run.json` records it (lineage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetRef {
    /// The dataset's name (its manifest's).
    pub name: String,
    /// Its folder, absolute.
    pub path: PathBuf,
    /// sha256 of its `manifest.json` when the run was configured.
    pub manifest_sha256: String,
}

impl DatasetRef {
    /// The dataset folder `dir` named `name`, with its manifest's hash as it is now.
    pub fn of(dir: &Path, name: &str) -> Result<DatasetRef> {
        let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let manifest = path.join("manifest.json");
        let manifest_sha256 =
            nf_protocol::sha256_file(&manifest).map_err(|source| TrainError::Io {
                path: manifest,
                source,
            })?;
        Ok(DatasetRef {
            name: name.to_string(),
            path,
            manifest_sha256,
        })
    }
}

/// Everything a run needs, resolved: written to `run.json` before the first step and read
/// back by `--resume`. Fields added later have defaults that mean what runs before them
/// did, so every older `run.json` still reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// The version that created the run.
    pub neuralforge_version: String,
    /// The base model, absolute.
    pub model: PathBuf,
    /// The tokenizer given instead of the model's own, if any.
    pub tokenizer: Option<PathBuf>,
    /// The training data: token shards and text files, absolute.
    pub data: Vec<PathBuf>,
    /// Validation data; empty to hold out `val_fraction` of the training data.
    pub val_data: Vec<PathBuf>,
    /// Lineage: the datasets (made by `ingest`) among `data`, with their manifest hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<DatasetRef>,
    /// The share of the training tokens held out for validation when `val_data` is empty.
    pub val_fraction: f32,
    /// Which weights train.
    pub method: RunMethod,
    /// LoRA's rank.
    pub lora_rank: usize,
    /// LoRA's alpha (the update is scaled by alpha / rank).
    pub lora_alpha: f32,
    /// Dropout on LoRA's input.
    pub lora_dropout: f32,
    /// The projections LoRA adapts, as `--lora-targets` spells them (`q,k,v,o` or `all`).
    pub lora_targets: String,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Tokens per sequence (clamped to the model's context when the run is prepared).
    pub seq_len: usize,
    /// Recompute activations in the backward pass instead of keeping them.
    pub recompute: bool,
    /// The adapter a LoRA run started from (`--adapter`), if any, and its sha256 (a file's,
    /// or a folder's tree hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapter: Option<PathBuf>,
    /// The initial adapter's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_adapter_sha256: Option<String>,
    /// Attention crosses example boundaries inside a window (false: each example attends
    /// only to itself; runs from before this field existed read as false).
    #[serde(default)]
    pub cross_example_attention: bool,
    /// How a LoRA run stores its frozen f32 base.
    #[serde(default)]
    pub base_dtype: BaseDtype,
    /// The arithmetic of the step's matrix products, resolved when the run is created
    /// (never `auto`), so a resume, on this machine or another, trains as the run began.
    /// Runs from before this field trained in f32.
    #[serde(default, with = "precision_name")]
    pub precision: Precision,
    /// The prompt sample generations continue.
    pub sample_prompt: String,
    /// The trainer's settings.
    pub options: TrainOptions,
    /// The hashes the run's checkpoints are bound to, once prepared.
    pub hashes: Option<RunHashes>,
}

impl RunConfig {
    /// Reads `dir/run.json`.
    pub fn read(dir: &Path) -> Result<RunConfig> {
        let path = dir.join(RUN_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            TrainError::Failure(Failure::new(
                ErrorCode::NotFound,
                format!("{}: {e}", path.display()),
                "--resume takes a run folder made by `neuralforge train` (it holds run.json)",
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| {
            TrainError::Failure(Failure::new(
                ErrorCode::Corrupt,
                format!("{}: not a valid run configuration: {e}", path.display()),
                "the run folder is damaged; start a new run",
            ))
        })
    }

    /// Writes `dir/run.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("run.json serializes");
        nf_formats::atomic::write_atomic(&dir.join(RUN_FILE), |w| {
            std::io::Write::write_all(w, text.as_bytes())
        })
        .map_err(TrainError::from)
    }

    /// Refuses settings no run can train with, naming the flag that sets each.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: &str, hint: &str| {
            Err(TrainError::Failure(Failure::new(
                ErrorCode::BadInput,
                message,
                hint,
            )))
        };
        if self.options.steps == 0 {
            return bad("--steps must be at least 1", "pass --steps N");
        }
        if !(0.0..1.0).contains(&self.lora_dropout) || !(0.0..1.0).contains(&self.val_fraction) {
            return bad(
                "--lora-dropout and --val-fraction must be in [0, 1)",
                "e.g. --lora-dropout 0.05 --val-fraction 0.1",
            );
        }
        if self.lora_rank == 0
            || self.batch_size == 0
            || self.seq_len == 0
            || self.options.grad_accum == 0
        {
            return bad(
                "--lora-rank, --batch-size, --seq-len and --grad-accum must be at least 1",
                "see neuralforge train --help",
            );
        }
        self.train_method().map(drop)
    }

    /// The model's training method with its LoRA settings.
    pub fn train_method(&self) -> Result<Method> {
        if self.method == RunMethod::Full {
            return Ok(Method::Full);
        }
        let targets = parse_targets(&self.lora_targets).map_err(|e| {
            TrainError::Failure(Failure::new(
                ErrorCode::BadInput,
                e,
                "--lora-targets takes a list such as q,k,v,o,gate,up,down or `all`",
            ))
        })?;
        Ok(Method::Lora(LoraConfig {
            rank: self.lora_rank,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            targets,
        }))
    }

    /// Hash of everything that changes the computation (not cadence-only settings such as
    /// how often to sample), for a model of configuration `model`; checkpoints are bound
    /// to it.
    ///
    /// It covers a canonical serialization (sorted keys, each field named here), so adding
    /// a field to `RunConfig`, `TrainOptions` or the model's `Config` does not change it: a
    /// new field joins the hash only when it differs from its default, as `precision`
    /// does. A run created before this version recorded [`Self::config_hash_v1`] in its
    /// `run.json`; it keeps that hash, so its checkpoints still resume.
    pub fn config_hash(&self, model: &Config) -> String {
        let v2 = self.config_hash_v2(model);
        match &self.hashes {
            Some(h) if h.config != v2 && h.config == self.config_hash_v1(model) => h.config.clone(),
            _ => v2,
        }
    }

    fn config_hash_v2(&self, model: &Config) -> String {
        let o = &self.options;
        let mut key = serde_json::json!({
            "hash_version": 2,
            "model_config": {
                "arch": model.arch, "dim": model.dim, "hidden_dim": model.hidden_dim,
                "n_layers": model.n_layers, "n_heads": model.n_heads,
                "n_kv_heads": model.n_kv_heads, "head_dim": model.head_dim,
                "vocab_size": model.vocab_size, "max_seq_len": model.max_seq_len,
                "norm_eps": model.norm_eps, "rope_theta": model.rope_theta,
                "rope_scaling": format!("{:?}", model.rope_scaling),
                "rope_style": format!("{:?}", model.rope_style),
                "tied_embeddings": model.tied_embeddings, "qkv_bias": model.qkv_bias,
                "qk_norm": model.qk_norm,
            },
            "method": self.method, "rank": self.lora_rank, "alpha": self.lora_alpha,
            "dropout": self.lora_dropout, "targets": self.lora_targets,
            "batch": self.batch_size, "seq": self.seq_len,
            "options": {
                "steps": o.steps, "grad_accum": o.grad_accum, "lr": o.lr, "min_lr": o.min_lr,
                "warmup": o.warmup, "schedule": o.schedule, "weight_decay": o.weight_decay,
                "beta1": o.beta1, "beta2": o.beta2, "adam_eps": o.adam_eps, "clip": o.clip,
                "eval_every": o.eval_every, "eval_batches": o.eval_batches,
                "save_every": o.save_every, "seed": o.seed, "patience": o.patience,
                "max_bad_steps": o.max_bad_steps, "sampling": o.sampling,
            },
            "base_dtype": self.base_dtype,
            "val_fraction": self.val_fraction,
            "cross_example_attention": self.cross_example_attention,
            "init_adapter_sha256": self.init_adapter_sha256,
        });
        if self.precision != Precision::F32 {
            key["precision"] = self.precision.name().into();
        }
        nf_protocol::sha256_hex(key.to_string().as_bytes())
    }

    /// The first version of [`Self::config_hash`], which hashed the model configuration's
    /// `Debug` text and every option as serialized: kept only to recognise the hash older
    /// runs recorded.
    pub fn config_hash_v1(&self, model: &Config) -> String {
        let mut o = self.options.clone();
        o.sample_every = 0;
        o.keep_last = 0;
        let mut key = serde_json::json!({
            "model_config": format!("{:?}", model),
            "method": self.method, "rank": self.lora_rank, "alpha": self.lora_alpha,
            "dropout": self.lora_dropout, "targets": self.lora_targets,
            "batch": self.batch_size, "seq": self.seq_len, "options": o,
            "base_dtype": self.base_dtype,
            "val_fraction": self.val_fraction,
            "cross_example_attention": self.cross_example_attention,
            "init_adapter_sha256": self.init_adapter_sha256,
        });
        if self.precision != Precision::F32 {
            key["precision"] = self.precision.name().into();
        }
        nf_protocol::sha256_hex(key.to_string().as_bytes())
    }
}

/// `precision` as its name (`f32`, `bf16`); a `run.json` naming another is damaged.
mod precision_name {
    use nf_engine::Precision;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Precision, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Precision, D::Error> {
        let name = String::deserialize(d)?;
        Precision::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown precision `{name}` (f32 or bf16)"))
        })
    }
}
