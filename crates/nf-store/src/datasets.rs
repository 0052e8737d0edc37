//! The home's datasets, `<home>/datasets/<name>/`, as `ingest` makes them, found by path
//! or by name.

use std::path::{Path, PathBuf};

use nf_ingest::Manifest;
use nf_train::run::DatasetRef;

use crate::Result;

/// The dataset folder `name` names: a folder holding `manifest.json`, or a dataset name
/// under `<home>/datasets/`.
pub fn resolve_dataset(name: &Path, home: &Path) -> Option<PathBuf> {
    if Manifest::is_dataset(name) {
        return Some(name.to_path_buf());
    }
    let plain = name.components().count() == 1;
    let stored = datasets_dir(home).join(name);
    (plain && Manifest::is_dataset(&stored)).then_some(stored)
}

/// `train --data`: each dataset (folder or name) among `paths` becomes its `train.bin`,
/// and its `val.bin`, when it holds tokens, is returned as validation data. Other paths
/// are kept as they are. The third list is the datasets used (for lineage).
pub fn expand_datasets(
    paths: &[PathBuf],
    home: &Path,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>, Vec<DatasetRef>)> {
    let (mut data, mut val, mut used) = (Vec::new(), Vec::new(), Vec::new());
    for p in paths {
        let Some(dir) = resolve_dataset(p, home).filter(|_| !p.is_file()) else {
            data.push(p.clone());
            continue;
        };
        let m = Manifest::read(&dir)?;
        let (train, v) = m.shard_paths(&dir);
        data.push(train);
        if m.split.val_tokens > 0 && v.is_file() {
            val.push(v);
        }
        used.push(DatasetRef::of(&dir, &m.name)?);
    }
    Ok((data, val, used))
}

/// `<home>/datasets`.
pub fn datasets_dir(home: &Path) -> PathBuf {
    home.join("datasets")
}

/// `n` training windows of `seq_len` tokens, evenly spaced through train.bin, decoded
/// with the dataset's tokenizer; the first windows of documents.jsonl when the tokenizer
/// is no longer where it was.
pub fn samples(m: &Manifest, dir: &Path, n: usize) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    let tok = crate::resolve::load_tokenizer(Path::new(&m.tokenizer.source), None).ok();
    let shard = nf_data::TokenShard::open(dir.join(&m.files.train)).ok();
    if let (Some(tok), Some(shard)) = (tok, shard) {
        let len = m.settings.seq_len.min(shard.len());
        if len > 0 {
            let span = shard.len() - len;
            return (0..n.min(shard.len().div_ceil(len).max(1)))
                .map(|k| {
                    let start = if n > 1 { span * k / (n - 1) } else { 0 };
                    let mut ids = vec![0u32; len];
                    shard.read_window(start, &mut ids);
                    tok.decode(&ids)
                })
                .collect();
        }
    }
    nf_ingest::manifest::read_documents(dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l.split == "train")
        .filter_map(|l| l.text)
        .take(n)
        .collect()
}
