//! The last steps of a build: the train/validation split by document, and writing the
//! dataset folder beside its target before swapping it in (see [`super::build`]).

use std::io::Write;
use std::path::Path;

use super::build::{BuildOptions, BuildOutcome, Done};
use super::error::{IngestError, Result};
use super::examples::Encoded;
use super::manifest::{
    Counts, Files, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, Settings, SplitInfo, TokenizerInfo,
};
use nf_data::write_shard;
use nf_tokenizer::Tokenizer;

/// Which pieces go to validation: whole documents (JSONL examples one by one) in an
/// order fixed by the seed and their content, until `val_fraction` of the tokens is held
/// out; at least one document stays in training. Returns the documents on each side.
pub(super) fn split_documents(done: &mut [Done], val_fraction: f32, seed: u64) -> (usize, usize) {
    // (source index, piece index or None for the whole document, tokens, order key)
    let mut units: Vec<(usize, Option<usize>, usize, String)> = Vec::new();
    for (i, d) in done.iter().enumerate() {
        if d.pieces.is_empty() {
            continue;
        }
        let sha = d.entry.sha256.clone().unwrap_or_default();
        if d.split_each {
            for (k, p) in d.pieces.iter().enumerate() {
                let key = crate::sha256_hex(format!("{seed}:{sha}:{k}").as_bytes());
                units.push((i, Some(k), p.enc.ids.len(), key));
            }
        } else {
            let key = crate::sha256_hex(format!("{seed}:{sha}").as_bytes());
            units.push((i, None, d.pieces.iter().map(|p| p.enc.ids.len()).sum(), key));
        }
    }
    let total: usize = units.iter().map(|u| u.2).sum();
    let f = if val_fraction.is_finite() {
        val_fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let target = (total as f64 * f as f64) as usize;
    units.sort_by(|a, b| a.3.cmp(&b.3));
    let mut val = vec![false; units.len()];
    let mut val_tokens = 0;
    let mut n_val = 0;
    for (k, u) in units.iter().enumerate() {
        if val_tokens >= target || n_val + 1 >= units.len() {
            break;
        }
        // Skip a document that would overshoot the target by far; a smaller one may fit.
        if val_tokens + u.2 > target * 2 && val_tokens + u.2 > target + 64 {
            continue;
        }
        val[k] = true;
        val_tokens += u.2;
        n_val += 1;
    }
    for (k, u) in units.iter().enumerate() {
        let side = if val[k] { "val" } else { "train" };
        let d = &mut done[u.0];
        match u.1 {
            Some(p) => d.pieces[p].line.split = side.into(),
            None => d.pieces.iter_mut().for_each(|p| p.line.split = side.into()),
        }
    }
    for d in done.iter_mut() {
        let sides: std::collections::BTreeSet<&str> =
            d.pieces.iter().map(|p| p.line.split.as_str()).collect();
        d.entry.split = match sides.len() {
            0 => None,
            1 => sides.first().map(|s| s.to_string()),
            _ => Some("both".into()),
        };
    }
    (units.len() - n_val, n_val)
}

/// Writes the dataset into a staging folder and swaps it in.
pub(super) fn write_staged(
    done: &mut [Done],
    tok: &Tokenizer,
    opts: &BuildOptions,
    (train_docs, val_docs): (usize, usize),
    duplicates: usize,
) -> Result<BuildOutcome> {
    let target = &opts.out_dir;
    let ok = done.iter().filter(|d| d.entry.status == "ok").count();
    let errors = done.iter().filter(|d| d.entry.status == "error").count();
    let mut train = Encoded::default();
    let mut val = Encoded::default();
    let mut lines = Vec::new();
    let mut has_examples = false;
    // Where each window or example begins in its side's token array.
    let (mut train_starts, mut val_starts) = (Vec::new(), Vec::new());
    for d in done.iter_mut() {
        for p in d.pieces.drain(..) {
            has_examples |= p.line.messages.is_some() || p.line.prompt.is_some();
            let (side, starts) = if p.line.split == "val" {
                (&mut val, &mut val_starts)
            } else {
                (&mut train, &mut train_starts)
            };
            starts.push(side.ids.len() as u32);
            side.ids.extend_from_slice(&p.enc.ids);
            side.mask.extend_from_slice(&p.enc.mask);
            lines.push(p.line);
        }
    }
    if train.ids.is_empty() {
        let why = if done.is_empty() {
            "no files to read".to_string()
        } else {
            format!("none of the {} sources gave any text", done.len())
        };
        return Err(IngestError::NothingIngested(why));
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| IngestError::io(parent, e))?;
    let name = target
        .file_name()
        .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned());
    // Leftovers of killed ingests of this dataset go first: nothing else removes them.
    nf_formats::atomic::remove_stale(target, "staging");
    let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| IngestError::io(&staging, e))?;
    let write_mask = opts.mask && has_examples;
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        version: MANIFEST_VERSION,
        name: opts.name.clone(),
        created: opts.created.clone(),
        neuralforge_version: env!("CARGO_PKG_VERSION").into(),
        tokenizer: TokenizerInfo {
            kind: tok.kind().to_string(),
            vocab_size: tok.vocab_size(),
            bos_id: tok.bos_id(),
            eos_id: tok.eos_id(),
            source: opts.tokenizer_source.clone(),
            sha256: opts.tokenizer_sha256.clone(),
            chat_template: opts.chat_template.is_some(),
        },
        settings: Settings {
            seq_len: opts.seq_len,
            overlap: opts.overlap,
            val_fraction: opts.val_fraction,
            seed: opts.seed,
            mask: write_mask,
            format: opts.read.jsonl_shape,
        },
        split: SplitInfo {
            by: "document".into(),
            train_documents: train_docs,
            val_documents: val_docs,
            train_tokens: train.ids.len(),
            val_tokens: val.ids.len(),
        },
        counts: Counts {
            sources: done.len(),
            ok,
            errors,
            skipped: done.len() - ok - errors,
            units: lines.iter().map(|l| l.units.len().max(1)).sum(),
            duplicates_removed: duplicates,
            windows: lines.iter().filter(|l| l.line.is_none()).count(),
            examples: lines.iter().filter(|l| l.line.is_some()).count(),
            chars: done.iter().map(|d| d.entry.chars).sum(),
            tokens: train.ids.len() + val.ids.len(),
        },
        files: Files {
            documents: "documents.jsonl".into(),
            train: "train.bin".into(),
            val: "val.bin".into(),
            train_mask: write_mask.then(|| "train.mask".into()),
            val_mask: write_mask.then(|| "val.mask".into()),
            train_starts: Some("train.starts".into()),
            val_starts: Some("val.starts".into()),
        },
        sources: done.iter().map(|d| d.entry.clone()).collect(),
    };
    let written = (|| -> Result<()> {
        let docs_path = staging.join("documents.jsonl");
        nf_formats::atomic::write_atomic(&docs_path, |w| {
            for l in &lines {
                serde_json::to_writer(&mut *w, l)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        let vocab = tok.vocab_size();
        write_shard(&staging.join("train.bin"), &train.ids, vocab)?;
        write_shard(&staging.join("val.bin"), &val.ids, vocab)?;
        // Offsets are below the side's length, which bounds them as a vocabulary would.
        write_shard(
            &staging.join("train.starts"),
            &train_starts,
            train.ids.len() + 1,
        )?;
        write_shard(&staging.join("val.starts"), &val_starts, val.ids.len() + 1)?;
        if write_mask {
            let m = |v: &[u8]| v.iter().map(|&b| b as u32).collect::<Vec<u32>>();
            write_shard(&staging.join("train.mask"), &m(&train.mask), 2)?;
            write_shard(&staging.join("val.mask"), &m(&val.mask), 2)?;
        }
        // The manifest goes last: a folder without one is not a dataset.
        manifest.write(&staging)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if errors > 0 && Manifest::is_dataset(target) {
        let _ = std::fs::remove_dir_all(&staging);
        return Ok(BuildOutcome {
            manifest,
            dir: target.clone(),
            written: false,
        });
    }
    swap_in(&staging, target)?;
    Ok(BuildOutcome {
        manifest,
        dir: target.clone(),
        written: true,
    })
}

/// Puts `staging` in the place of `target` in one step (`nf_formats::atomic::replace`), so a
/// crash leaves the old dataset or the new one, never neither.
fn swap_in(staging: &Path, target: &Path) -> Result<()> {
    nf_formats::atomic::replace(staging, target).map_err(|e| {
        let _ = std::fs::remove_dir_all(staging);
        IngestError::io(target, e)
    })
}
