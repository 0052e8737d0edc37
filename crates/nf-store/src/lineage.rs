//! Lineage: which runs, datasets and documents an artifact came from, and what was made
//! from a document.
//!
//! Backwards (artifact → run → datasets → documents) it reads the files themselves: a
//! run's `run.json` names its datasets with the sha256 of their `manifest.json`, and each
//! manifest lists its source documents with their sha256. When a dataset was re-ingested
//! after the run (its manifest hash differs), the documents come from the audit log's
//! `ingest` entry that wrote the manifest the run recorded. An artifact that is not inside
//! a run or a dataset (an exported file) is looked up in the audit log by path and sha256:
//! the entry that wrote it names the run it came from.
//!
//! Forwards (from a document) it follows the audit log: every entry that read the document
//! (by sha256) or anything made from it (by sha256 or path) adds its outputs, so datasets,
//! runs, adapters and exports made from the document are found wherever they were written;
//! datasets and runs in the home are also scanned directly.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nf_audit::Entry;
use nf_ingest::Manifest;
use nf_protocol::{ErrorCode, Event};
use nf_train::run::{ADAPTER_DIR, CHECKPOINTS_DIR, MODEL_DIR, RunConfig, is_run};
use serde_json::{Value, json};

use crate::{Result, fail, io_context};

/// What lineage found for one artifact; the fields of the `lineage` event.
#[derive(Debug, Default)]
pub struct Lineage {
    /// The artifact (or document) lineage started from.
    pub artifact: PathBuf,
    /// `run`, `checkpoint`, `adapter`, `model`, `dataset`, `export` or `document`.
    pub kind: &'static str,
    /// Its sha256, when it is a file.
    pub sha256: Option<String>,
    /// The runs involved: path, method, base model and datasets of each.
    pub runs: Vec<Value>,
    /// The datasets involved: name, path and manifest sha256 of each.
    pub datasets: Vec<Value>,
    /// The source documents: path, sha256 and dataset of each.
    pub documents: Vec<Value>,
    /// Exported files found in the audit log: path, sha256, time, command and entry.
    pub exports: Vec<Value>,
    /// What could not be followed, for the user.
    pub notes: Vec<String>,
}

impl Lineage {
    /// The `lineage` event.
    pub fn event(&self) -> Event {
        Event::Lineage {
            artifact: self.artifact.display().to_string(),
            kind: self.kind.into(),
            sha256: self.sha256.clone(),
            runs: self.runs.clone(),
            datasets: self.datasets.clone(),
            documents: self.documents.clone(),
            exports: self.exports.clone(),
            notes: self.notes.clone(),
        }
    }
}

/// The audit log's entries (none when there is no readable log).
pub fn audit_log(home: &Path) -> Vec<Entry> {
    nf_audit::read_entries(&nf_audit::audit_dir(home).join(nf_audit::LOG_FILE))
        .map(|(e, _)| e)
        .unwrap_or_default()
}

fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or(p.to_path_buf()))
}

/// The run folder holding `p` (itself or an ancestor with `run.json`).
fn run_dir_of(p: &Path) -> Option<PathBuf> {
    p.ancestors().find(|d| is_run(d)).map(Path::to_path_buf)
}

/// Backwards from an artifact (a run, its adapter, model or checkpoints, a dataset, or an
/// exported file) to the runs, datasets and documents it came from.
pub fn backwards(art: &Path, home: &Path, log: &[Entry]) -> Result<Lineage> {
    let mut l = Lineage::default();
    let path = if art.exists() {
        abs(art)
    } else if let Some(d) = crate::datasets::resolve_dataset(art, home) {
        abs(&d)
    } else {
        return Err(fail(
            ErrorCode::NotFound,
            format!("{} does not exist", art.display()),
            "pass a run folder, an adapter, a checkpoint, an exported file or a dataset",
        ));
    };
    let sha = if path.is_file() {
        Some(
            nf_protocol::sha256_file(&path)
                .map_err(io_context(|| format!("reading {}", path.display())))?,
        )
    } else {
        None
    };
    let kind;
    if Manifest::is_dataset(&path) {
        kind = "dataset";
        let m = Manifest::read(&path)?;
        let manifest = path.join("manifest.json");
        let msha = nf_protocol::sha256_file(&manifest)
            .map_err(io_context(|| format!("reading {}", manifest.display())))?;
        dataset(&mut l, &m.name, &path, &msha, log);
    } else if let Some(run) = run_dir_of(&path) {
        kind = if path == run {
            "run"
        } else if path.starts_with(run.join(CHECKPOINTS_DIR)) {
            "checkpoint"
        } else if path.starts_with(run.join(ADAPTER_DIR)) {
            "adapter"
        } else if path.starts_with(run.join(MODEL_DIR)) {
            "model"
        } else {
            "run"
        };
        run_lineage(&mut l, &run, log)?;
    } else {
        // An artifact written elsewhere (an export): the audit entry that wrote it.
        kind = "export";
        let p = path.display().to_string();
        let writer = log.iter().rev().find(|e| {
            e.outputs.iter().any(|o| {
                o.path.as_deref() == Some(p.as_str())
                    || (sha.is_some() && o.sha256 == sha && o.sha256.is_some())
            })
        });
        let Some(e) = writer else {
            return Err(fail(
                ErrorCode::NotFound,
                format!(
                    "no lineage for {}: it is not in a run or a dataset, and no audit entry wrote it",
                    path.display()
                ),
                "pass a run folder, its adapter or model, a checkpoint, a dataset, or a file a NeuralForge command exported",
            ));
        };
        let out_sha = e
            .outputs
            .iter()
            .find(|o| o.path.as_deref() == Some(p.as_str()))
            .and_then(|o| o.sha256.clone());
        if sha.is_some() && out_sha.is_some() && out_sha != sha {
            l.notes.push(format!(
                "{} changed since entry {} wrote it (sha256 then {})",
                path.display(),
                e.seq,
                out_sha.as_deref().unwrap_or("")
            ));
        }
        l.exports.push(
            json!({"path": p, "sha256": sha, "time": e.time, "command": e.command, "seq": e.seq}),
        );
        let mut runs = BTreeSet::new();
        for i in &e.inputs {
            if let Some(r) = i.path.as_deref().and_then(|ip| run_dir_of(Path::new(ip))) {
                runs.insert(r);
            }
        }
        if runs.is_empty() {
            l.notes.push(format!(
                "audit entry {} ({}) names no run among its inputs",
                e.seq, e.command
            ));
        }
        for r in runs {
            run_lineage(&mut l, &r, log)?;
        }
    }
    l.artifact = path;
    l.kind = kind;
    l.sha256 = sha;
    Ok(l)
}

fn run_lineage(l: &mut Lineage, run: &Path, log: &[Entry]) -> Result<()> {
    let cfg = RunConfig::read(run)?;
    l.runs.push(run_json(run, Some(&cfg)));
    for d in &cfg.datasets {
        dataset(l, &d.name, &d.path, &d.manifest_sha256, log);
    }
    if cfg.datasets.is_empty() {
        // Plain files trained on directly are the documents.
        for f in &cfg.data {
            let sha = nf_protocol::sha256_file(f).ok();
            l.documents
                .push(json!({"path": f, "sha256": sha, "dataset": null}));
        }
    }
    Ok(())
}

/// A run as the lineage event lists it (nulls where its `run.json` is unreadable).
fn run_json(run: &Path, cfg: Option<&RunConfig>) -> Value {
    json!({
        "path": run.display().to_string(),
        "method": cfg.map(|c| c.method),
        "base_model": cfg.map(|c| &c.model),
        "datasets": cfg.map(|c| &c.datasets),
    })
}

/// A dataset and its documents: from its manifest when it is the one recorded, else from
/// the audit entry that wrote the recorded manifest.
fn dataset(l: &mut Lineage, name: &str, dir: &Path, recorded: &str, log: &[Entry]) {
    let current = nf_protocol::sha256_file(&dir.join("manifest.json")).ok();
    l.datasets.push(json!({
        "name": name, "path": dir.display().to_string(), "manifest_sha256": recorded,
        "unchanged": current.as_deref() == Some(recorded),
    }));
    if current.as_deref() == Some(recorded)
        && let Ok(m) = Manifest::read(dir)
    {
        for s in m.sources.iter().filter(|s| s.status == "ok") {
            l.documents
                .push(json!({"path": s.path, "sha256": s.sha256, "dataset": name}));
        }
        return;
    }
    let writer = log.iter().rev().find(|e| {
        e.command == "ingest"
            && e.outputs
                .iter()
                .any(|o| o.kind == "dataset" && o.sha256.as_deref() == Some(recorded))
    });
    match writer {
        Some(e) => {
            l.notes.push(format!(
                "dataset {name} was changed or re-ingested after the run; its documents are those audit entry {} recorded",
                e.seq
            ));
            for i in e.inputs.iter().filter(|i| i.kind == "document") {
                l.documents.push(json!({"path": i.path, "sha256": i.sha256, "dataset": name}));
            }
        }
        None => l.notes.push(format!(
            "dataset {name} at {} no longer has the manifest the run recorded ({recorded}) and no audit entry wrote that one: its documents are unknown",
            dir.display()
        )),
    }
}

/// Forwards from a document to the datasets, runs and exports made from it.
pub fn forwards(doc: &Path, home: &Path, log: &[Entry]) -> Result<Lineage> {
    if !doc.is_file() {
        return Err(fail(
            ErrorCode::NotFound,
            format!("{} is not a file", doc.display()),
            "pass the document (PDF, DOCX, text, ...) to look for",
        ));
    }
    let sha = nf_protocol::sha256_file(doc)
        .map_err(io_context(|| format!("reading {}", doc.display())))?;
    let mut l = Lineage {
        documents: vec![
            json!({"path": abs(doc).display().to_string(), "sha256": sha, "dataset": null}),
        ],
        ..Lineage::default()
    };
    // Datasets in the home whose manifest lists the document, and runs on them.
    let mut manifests: BTreeSet<String> = BTreeSet::new();
    let mut dataset_paths: BTreeSet<String> = BTreeSet::new();
    for dir in crate::home::subdirs(&crate::datasets::datasets_dir(home)) {
        let Ok(m) = Manifest::read(&dir) else {
            continue;
        };
        if m.sources
            .iter()
            .any(|s| s.sha256.as_deref() == Some(sha.as_str()))
        {
            let msha = nf_protocol::sha256_file(&dir.join("manifest.json")).unwrap_or_default();
            manifests.insert(msha.clone());
            dataset_paths.insert(abs(&dir).display().to_string());
            l.datasets.push(json!({"name": m.name, "path": abs(&dir).display().to_string(), "manifest_sha256": msha}));
        }
    }
    // The audit log, forwards: anything read from something found is found.
    let mut shas: BTreeSet<String> = BTreeSet::from([sha.clone()]);
    shas.extend(manifests.iter().cloned());
    let mut paths: BTreeSet<String> = dataset_paths.clone();
    let mut run_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let related = |ip: &str, paths: &BTreeSet<String>| {
        paths.iter().any(|p| {
            ip == p
                || Path::new(p).starts_with(ip) && is_run(Path::new(ip))
                || Path::new(ip).starts_with(p)
        })
    };
    for e in log {
        let uses = e.inputs.iter().any(|i| {
            i.sha256.as_ref().is_some_and(|h| shas.contains(h))
                || i.path.as_deref().is_some_and(|ip| related(ip, &paths))
        });
        if !uses {
            continue;
        }
        for o in &e.outputs {
            if let Some(h) = &o.sha256 {
                shas.insert(h.clone());
            }
            let Some(op) = &o.path else { continue };
            paths.insert(op.clone());
            match (e.command.as_str(), o.kind.as_str()) {
                ("ingest", "dataset") => {
                    if dataset_paths.insert(op.clone()) {
                        l.datasets.push(json!({"name": Path::new(op).file_name().map(|n| n.to_string_lossy().into_owned()), "path": op, "manifest_sha256": o.sha256}));
                    }
                }
                ("train", _) => {
                    if let Some(r) = run_dir_of(Path::new(op)).or_else(|| Path::new(op).parent().map(Path::to_path_buf).filter(|_| o.kind == "run")) {
                        run_dirs.insert(r);
                    }
                }
                ("generate" | "chat", _) => {}
                (cmd, kind) => l.exports.push(json!({"path": op, "sha256": o.sha256, "time": e.time, "command": cmd, "kind": kind, "seq": e.seq})),
            }
        }
    }
    // Runs in the home trained on a found dataset (even if the log was started later).
    for dir in crate::home::subdirs(&crate::home::runs_dir(home)) {
        let Ok(cfg) = RunConfig::read(&dir) else {
            continue;
        };
        if cfg
            .datasets
            .iter()
            .any(|d| shas.contains(&d.manifest_sha256))
        {
            run_dirs.insert(abs(&dir));
        }
    }
    for r in &run_dirs {
        l.runs.push(run_json(r, RunConfig::read(r).ok().as_ref()));
    }
    l.artifact = doc.to_path_buf();
    l.kind = "document";
    l.sha256 = Some(sha);
    Ok(l)
}
