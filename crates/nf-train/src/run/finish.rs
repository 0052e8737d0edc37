//! The run's final output: its adapter or model, written into the run folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{ADAPTER_DIR, MODEL_DIR, RunConfig};
use crate::trainer::Trainer;
use crate::{Result, TrainError};

/// Writes the final adapter (PEFT layout, `adapter/`) or model (HF layout, `model/`) into
/// the run folder, with the run's lineage in its metadata. The previous final output is
/// replaced only once the new one is complete, so a crash leaves one or the other.
pub fn save_final(trainer: &Trainer, cfg: &RunConfig, run_dir: &Path) -> Result<PathBuf> {
    let mut meta = BTreeMap::new();
    meta.insert(
        "neuralforge_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    if let Some(h) = &cfg.hashes {
        meta.insert("base_model_sha256".into(), h.base_model.clone());
        meta.insert("data_sha256".into(), h.data.clone());
    }
    if !cfg.datasets.is_empty() {
        // Lineage travels with the adapter/model: which datasets (by manifest hash).
        let list: Vec<String> = cfg
            .datasets
            .iter()
            .map(|d| format!("{}:{}", d.name, d.manifest_sha256))
            .collect();
        meta.insert("datasets".into(), list.join(","));
    }
    meta.insert("run_dir".into(), run_dir.display().to_string());
    let m = &trainer.model;
    let name = if m.lora().is_some() {
        ADAPTER_DIR
    } else {
        MODEL_DIR
    };
    let dir = run_dir.join(name);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TrainError::Io { path, source }
    };
    let staging = run_dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(io(&staging))?;
    if m.lora().is_some() {
        nf_model::train::adapter::save_peft(m, &staging, &cfg.model.display().to_string(), &meta)?;
    } else {
        nf_model::export::export_hf(&m.to_model(), &staging, &meta)?;
    }
    let old = run_dir.join(format!(".{name}.old"));
    let _ = std::fs::remove_dir_all(&old);
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(io(&dir))?;
    }
    std::fs::rename(&staging, &dir).map_err(io(&dir))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(dir)
}
