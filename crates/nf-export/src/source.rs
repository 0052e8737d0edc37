//! What an export is made from: a finished run, or a model with an optional adapter.

use std::collections::BTreeMap;
use std::path::Path;

use nf_model::Model;
use nf_model::train::adapter::Adapter;
use nf_protocol::ErrorCode;
use nf_store::ModelSpec;
use nf_store::resolve::{
    Loaded, hash_model_files, load, load_adapter, resolve_model_path, resolve_run,
};
use nf_tokenizer::Tokenizer;
use nf_train::run::{REPORT_FILE, RunConfig, RunMethod, is_run};

use crate::{ExportOptions, Result, fail};

/// What the export is made from.
pub struct Source {
    /// The fine-tuned model in memory (adapter merged), the reference of the parity check.
    pub reference: Model,
    /// The tokenizer the model was trained with, written into the export.
    pub tokenizer: Tokenizer,
    /// The base model without the adapter, to rebuild the model from an adapter export.
    pub base: ModelSpec,
    /// The LoRA adapter, for adapter formats and their check.
    pub adapter: Option<Adapter>,
    /// Provenance written into the export.
    pub meta: BTreeMap<String, String>,
}

/// Resolves the source (a run folder or a model), refusing unfinished runs and formats
/// the source cannot express.
pub fn open_source(home: &Path, o: &ExportOptions) -> Result<Source> {
    let path = resolve_model_path(&o.source, home).map_err(|_| {
        fail(
            ErrorCode::NotFound,
            format!("no run or model at {}", o.source.display()),
            "pass a run folder made by `neuralforge train`, or a model (folder, .gguf, llama2.c .bin)",
        )
    })?;
    let spec = ModelSpec {
        model: path.clone(),
        tokenizer: o.tokenizer.clone(),
        adapter: o.adapter.clone(),
    };
    let mut meta = BTreeMap::new();
    meta.insert(
        "neuralforge_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    let run = is_run(&path);
    let mut full_run = false;
    if run {
        check_finished(&path)?;
        let cfg = RunConfig::read(&path)?;
        full_run = cfg.method == RunMethod::Full;
        let id = std::fs::canonicalize(&path)
            .unwrap_or_else(|_| path.clone())
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        meta.insert("run_id".into(), id);
        if let Some(h) = &cfg.hashes {
            meta.insert("base_model_sha256".into(), h.base_model.clone());
            meta.insert("data_sha256".into(), h.data.clone());
            // The manifest.json sha256 of each dataset the run trained on (lineage's link
            // from a file to its documents), comma-separated; absent for plain files.
            if !h.datasets.is_empty() {
                meta.insert("dataset_manifest_sha256".into(), h.datasets.join(","));
            }
        }
        meta.insert("base_model".into(), cfg.model.display().to_string());
    }
    let resolved = resolve_run(&spec, home)?;
    if o.format.adapter_only() && resolved.adapter.is_none() {
        let why = if full_run {
            "this run trained every weight, so there is no adapter to export"
        } else {
            "this model has no LoRA adapter"
        };
        return Err(fail(
            ErrorCode::Unsupported,
            format!(
                "--format {} exports a LoRA adapter alone: {why}",
                o.format.name()
            ),
            "use --format hf, gguf or ollama for the whole model",
        ));
    }
    let base = ModelSpec {
        adapter: None,
        ..resolved.clone()
    };
    let Loaded {
        model: reference,
        tokenizer,
        ..
    } = load(&resolved, home)?;
    if !run {
        meta.insert("base_model_sha256".into(), hash_model_files(&base.model)?.0);
        meta.insert("base_model".into(), base.model.display().to_string());
    }
    let adapter = match &resolved.adapter {
        Some(p) => Some(load_adapter(p, &reference.config)?),
        None => None,
    };
    Ok(Source {
        reference,
        tokenizer,
        base,
        adapter,
        meta,
    })
}

/// A run is finished when `train` wrote its report after the final output, and it did not
/// stop on Ctrl-C.
fn check_finished(run: &Path) -> Result<()> {
    let resume = format!(
        "finish it with `neuralforge train --resume {}`",
        run.display()
    );
    let Ok(text) = std::fs::read_to_string(run.join(REPORT_FILE)) else {
        return Err(fail(
            ErrorCode::Unfinished,
            format!(
                "the run {} has not finished (no report.json)",
                run.display()
            ),
            resume,
        ));
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if v["reason"] == "interrupted" {
        return Err(fail(
            ErrorCode::Unfinished,
            format!(
                "the run {} was interrupted at step {}",
                run.display(),
                v["final_step"]
            ),
            resume,
        ));
    }
    Ok(())
}
