//! `neuralforge lineage ARTIFACT` and `neuralforge lineage --document FILE`.
//!
//! Backwards (ARTIFACT → run → datasets → documents) it reads the files themselves: a
//! run's `run.json` names its datasets with the sha256 of their `manifest.json`, and each
//! manifest lists its source documents with their sha256. When a dataset was re-ingested
//! after the run (its manifest hash differs), the documents come from the audit log's
//! `ingest` entry that wrote the manifest the run recorded. An artifact that is not inside
//! a run or a dataset (an exported file) is looked up in the audit log by path and sha256:
//! the entry that wrote it names the run it came from.
//!
//! Forwards (`--document`) it follows the audit log: every entry that read the document
//! (by sha256) or anything made from it (by sha256 or path) adds its outputs, so datasets,
//! runs, adapters and exports made from the document are found wherever they were written;
//! datasets and runs in the home are also scanned directly.

use nf_protocol::ErrorCode;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;
use nf_audit::Entry;
use nf_ingest::Manifest;
use nf_protocol::Event;
use serde_json::{Value, json};

use crate::cli::LineageArgs;
use crate::errors::user_error;
use crate::output::Output;

pub fn run(a: &LineageArgs, home: &Path, out: &mut Output) -> Result<()> {
    let log: Vec<Entry> =
        nf_audit::read_entries(&nf_audit::audit_dir(home).join(nf_audit::LOG_FILE))
            .map(|(e, _)| e)
            .unwrap_or_default();
    match (&a.artifact, &a.document) {
        (_, Some(doc)) => forwards(doc, home, &log, out),
        (Some(art), None) => backwards(art, home, &log, out),
        (None, None) => unreachable!("clap requires one"),
    }
}

fn abs(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::path::absolute(p).unwrap_or(p.to_path_buf()))
}

/// The run folder holding `p` (itself or an ancestor with `run.json`).
fn run_dir_of(p: &Path) -> Option<PathBuf> {
    p.ancestors()
        .find(|d| d.join("run.json").is_file())
        .map(Path::to_path_buf)
}

struct Lineage {
    runs: Vec<Value>,
    datasets: Vec<Value>,
    documents: Vec<Value>,
    exports: Vec<Value>,
    notes: Vec<String>,
}

fn backwards(art: &Path, home: &Path, log: &[Entry], out: &mut Output) -> Result<()> {
    let mut l = Lineage {
        runs: Vec::new(),
        datasets: Vec::new(),
        documents: Vec::new(),
        exports: Vec::new(),
        notes: Vec::new(),
    };
    let path = if art.exists() {
        abs(art)
    } else if let Some(d) = crate::cmd::ingest::resolve_dataset(art, home) {
        abs(&d)
    } else {
        return Err(user_error(
            ErrorCode::NotFound,
            format!("{} does not exist", art.display()),
            "pass a run folder, an adapter, a checkpoint, an exported file or a dataset",
        ));
    };
    let sha = if path.is_file() {
        Some(nf_audit::sha256_file(&path).map_err(crate::audit::audit_error)?)
    } else {
        None
    };
    let kind;
    if Manifest::is_dataset(&path) {
        kind = "dataset";
        let m = Manifest::read(&path)?;
        let msha = nf_audit::sha256_file(&path.join("manifest.json"))
            .map_err(crate::audit::audit_error)?;
        dataset(&mut l, &m.name, &path, &msha, log);
    } else if let Some(run) = run_dir_of(&path) {
        kind = if path == run {
            "run"
        } else if path.starts_with(run.join("checkpoints")) {
            "checkpoint"
        } else if path.starts_with(run.join("adapter")) {
            "adapter"
        } else if path.starts_with(run.join("model")) {
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
            return Err(user_error(
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
    emit(out, &path, kind, sha, l)
}

fn run_lineage(l: &mut Lineage, run: &Path, log: &[Entry]) -> Result<()> {
    let text = std::fs::read_to_string(run.join("run.json"))?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| {
        user_error(
            ErrorCode::Corrupt,
            format!("{}: {e}", run.join("run.json").display()),
            "the run folder is damaged",
        )
    })?;
    let datasets: Vec<Value> = cfg["datasets"].as_array().cloned().unwrap_or_default();
    l.runs.push(json!({
        "path": run.display().to_string(),
        "method": cfg["method"],
        "base_model": cfg["model"],
        "datasets": datasets,
    }));
    for d in &datasets {
        let (Some(name), Some(path), Some(msha)) = (
            d["name"].as_str(),
            d["path"].as_str(),
            d["manifest_sha256"].as_str(),
        ) else {
            continue;
        };
        dataset(l, name, Path::new(path), msha, log);
    }
    if datasets.is_empty() {
        // Plain files trained on directly are the documents.
        for f in cfg["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let sha = nf_audit::sha256_file(Path::new(f)).ok();
            l.documents
                .push(json!({"path": f, "sha256": sha, "dataset": null}));
        }
    }
    Ok(())
}

/// A dataset and its documents: from its manifest when it is the one recorded, else from
/// the audit entry that wrote the recorded manifest.
fn dataset(l: &mut Lineage, name: &str, dir: &Path, recorded: &str, log: &[Entry]) {
    let current = nf_audit::sha256_file(&dir.join("manifest.json")).ok();
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

fn forwards(doc: &Path, home: &Path, log: &[Entry], out: &mut Output) -> Result<()> {
    if !doc.is_file() {
        return Err(user_error(
            ErrorCode::NotFound,
            format!("{} is not a file", doc.display()),
            "pass the document (PDF, DOCX, text, ...) to look for",
        ));
    }
    let sha = nf_audit::sha256_file(doc).map_err(crate::audit::audit_error)?;
    let mut l = Lineage {
        runs: Vec::new(),
        datasets: Vec::new(),
        documents: vec![
            json!({"path": abs(doc).display().to_string(), "sha256": sha, "dataset": null}),
        ],
        exports: Vec::new(),
        notes: Vec::new(),
    };
    // Datasets in the home whose manifest lists the document, and runs on them.
    let mut manifests: BTreeSet<String> = BTreeSet::new();
    let mut dataset_paths: BTreeSet<String> = BTreeSet::new();
    for dir in nf_store::home::subdirs(&home.join("datasets")) {
        let Ok(m) = Manifest::read(&dir) else {
            continue;
        };
        if m.sources
            .iter()
            .any(|s| s.sha256.as_deref() == Some(sha.as_str()))
        {
            let msha = nf_audit::sha256_file(&dir.join("manifest.json")).unwrap_or_default();
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
                || Path::new(p).starts_with(ip) && Path::new(ip).join("run.json").is_file()
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
    for dir in nf_store::home::subdirs(&home.join("runs")) {
        let Ok(text) = std::fs::read_to_string(dir.join("run.json")) else {
            continue;
        };
        let Ok(cfg) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let uses = cfg["datasets"].as_array().into_iter().flatten().any(|d| {
            d["manifest_sha256"]
                .as_str()
                .is_some_and(|h| shas.contains(h))
        });
        if uses {
            run_dirs.insert(abs(&dir));
        }
    }
    for r in &run_dirs {
        let cfg: Value = std::fs::read_to_string(r.join("run.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        l.runs.push(json!({"path": r.display().to_string(), "method": cfg["method"], "base_model": cfg["model"], "datasets": cfg["datasets"]}));
    }
    emit(out, doc, "document", Some(sha), l)
}

fn emit(out: &mut Output, path: &Path, kind: &str, sha: Option<String>, l: Lineage) -> Result<()> {
    if !out.is_json() {
        let mut s = format!(
            "{kind} {}{}\n",
            path.display(),
            sha.as_deref()
                .map_or(String::new(), |h| format!(" sha256 {h}"))
        );
        for e in &l.exports {
            s.push_str(&format!(
                "  export {} (by `{}` at {}, audit entry {})\n",
                e["path"].as_str().unwrap_or(""),
                e["command"].as_str().unwrap_or(""),
                e["time"].as_str().unwrap_or(""),
                e["seq"]
            ));
        }
        for r in &l.runs {
            s.push_str(&format!(
                "  run {} ({}, base {})\n",
                r["path"].as_str().unwrap_or(""),
                r["method"].as_str().unwrap_or("?"),
                r["base_model"].as_str().unwrap_or("?")
            ));
        }
        for d in &l.datasets {
            s.push_str(&format!(
                "    dataset {} {} manifest sha256 {}\n",
                d["name"].as_str().unwrap_or("?"),
                d["path"].as_str().unwrap_or(""),
                d["manifest_sha256"].as_str().unwrap_or("?")
            ));
        }
        if kind != "document" {
            for d in &l.documents {
                s.push_str(&format!(
                    "      document {} sha256 {}\n",
                    d["path"].as_str().unwrap_or(""),
                    d["sha256"].as_str().unwrap_or("?")
                ));
            }
        } else if l.datasets.is_empty() && l.runs.is_empty() && l.exports.is_empty() {
            s.push_str("  used by nothing NeuralForge knows of\n");
        }
        out.text(&s)?;
    }
    for n in &l.notes {
        eprintln!("note: {n}");
    }
    out.event(|| Event::Lineage {
        artifact: path.display().to_string(),
        kind: kind.into(),
        sha256: sha,
        runs: l.runs,
        datasets: l.datasets,
        documents: l.documents,
        exports: l.exports,
        notes: l.notes,
    })?;
    Ok(())
}
