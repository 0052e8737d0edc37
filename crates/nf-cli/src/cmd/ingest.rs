//! `neuralforge ingest`: documents in, a dataset folder out (see `nf_ingest`).
//!
//! Text mode: a progress line on a terminal, one line per file on stderr otherwise, and a
//! summary with every failed file on stderr; the dataset folder on stdout. `--json`:
//! `progress`, `ingest.file` (one per source) and `ingest.done` events. The exit code is
//! 1 when any file failed, even though the others were ingested.

use nf_protocol::ErrorCode;
use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Result;
use nf_ingest::manifest::SourceEntry;
use nf_ingest::{
    BuildOptions, IngestError, IngestEvent, JsonlShape, Manifest, PDF_THREAD_NAME, ReadOptions,
    build_dataset, collect_sources,
};
use nf_protocol::Event;

use crate::cli::IngestArgs;
use crate::errors::user_error;
use crate::output::Output;

/// PDF extraction may panic on odd fonts; the library catches it and reports the file, so
/// the default hook's message and backtrace note would only be noise on the terminal.
pub fn quiet_pdf_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() != Some(PDF_THREAD_NAME) {
            default(info);
        }
    }));
}

/// A dataset name is one plain folder name.
pub fn check_name(name: &str) -> Result<()> {
    if nf_store::home::is_plain_name(name) {
        Ok(())
    } else {
        Err(user_error(
            ErrorCode::BadInput,
            format!("`{name}` is not a dataset name"),
            "use a plain name such as `handbook` (letters, digits, - and _), or --out DIR",
        ))
    }
}

/// Audited: the entry lists every source document (path, sha256), the tokenizer, and the
/// dataset written (its `manifest.json`'s sha256).
pub fn run(args: &IngestArgs, home: &Path, out: &mut Output) -> Result<()> {
    crate::audit::scoped(home, "ingest", |rec| run_inner(args, home, out, rec))
}

fn run_inner(
    args: &IngestArgs,
    home: &Path,
    out: &mut Output,
    rec: &mut nf_audit::Record,
) -> Result<()> {
    let (name, dir) = match (&args.name, &args.out) {
        (Some(n), Some(o)) => (n.clone(), o.clone()),
        (Some(n), None) => {
            check_name(n)?;
            (n.clone(), nf_store::datasets::datasets_dir(home).join(n))
        }
        (None, Some(o)) => (
            o.file_name()
                .map_or_else(|| "dataset".into(), |n| n.to_string_lossy().into_owned()),
            o.clone(),
        ),
        (None, None) => unreachable!("clap requires --name or --out"),
    };
    if !(0.0..1.0).contains(&args.val_fraction) {
        return Err(user_error(
            ErrorCode::BadInput,
            "--val-fraction must be in [0, 1)",
            "e.g. --val-fraction 0.1",
        ));
    }
    if args.seq_len < 16 {
        return Err(user_error(
            ErrorCode::BadInput,
            "--seq-len must be at least 16",
            "use the --seq-len you will train with, e.g. 256",
        ));
    }
    let shape = match args.format.as_str() {
        "auto" => None,
        f => Some(f.parse::<JsonlShape>().map_err(|e| {
            user_error(
                ErrorCode::BadInput,
                e,
                "--format is auto, text, completions or chat",
            )
        })?),
    };
    if Manifest::is_dataset(&dir) && !args.force {
        return Err(user_error(
            ErrorCode::Exists,
            format!("a dataset already exists at {}", dir.display()),
            "pass --force to replace it, or choose another --name",
        ));
    }
    let (tok, tok_path) =
        nf_store::resolve::model_tokenizer(&args.model, args.tokenizer.as_deref(), home)?;
    let template = match &args.chat_template {
        Some(choice) => Some(crate::flags::chat_template(&tok, Some(choice))?),
        None => tok.chat_template().map(str::to_string),
    };
    let tok_file = if tok_path.is_dir() {
        tok_path.join("tokenizer.json")
    } else {
        tok_path.clone()
    };
    let tokenizer_sha256 = tok_file
        .is_file()
        .then(|| nf_protocol::sha256_file(&tok_file).ok())
        .flatten();
    let (files, skipped) = collect_sources(&args.paths);
    if files.is_empty() {
        let exts: Vec<String> = nf_ingest::EXTENSIONS
            .iter()
            .map(|(e, _)| format!(".{e}"))
            .collect();
        return Err(user_error(
            ErrorCode::BadInput,
            format!(
                "no documents to ingest ({} entries skipped for their type, or as links or special files)",
                skipped.len()
            ),
            format!("ingest reads {}", exts.join(" ")),
        ));
    }
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let opts = BuildOptions {
        name: name.clone(),
        out_dir: dir.clone(),
        force: args.force,
        val_fraction: args.val_fraction,
        seed: args.seed,
        seq_len: args.seq_len,
        overlap: args.overlap.unwrap_or(args.seq_len / 8),
        mask: !args.no_mask,
        threads: nf_engine::cpu::threads(),
        read: ReadOptions {
            jsonl_shape: shape,
            ..ReadOptions::default()
        },
        chat_template: template,
        tokenizer_source: abs(&tok_path).display().to_string(),
        tokenizer_sha256,
        created: nf_protocol::rfc3339_now(),
    };
    let tty = std::io::stderr().is_terminal() && !out.is_json();
    let json = out.is_json();
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut passed_over: Vec<(String, String)> = Vec::new();
    let mut on_event = |e: IngestEvent| match e {
        IngestEvent::Progress { stage, done, total } => {
            if tty {
                let verb = if stage == "read" {
                    "reading"
                } else {
                    "tokenizing"
                };
                eprint!("\r\x1b[2K{verb} {done}/{total} files");
                let _ = std::io::stderr().flush();
            }
            let _ = out.event(|| Event::Progress {
                task: format!("ingest.{stage}"),
                done: done as u64,
                total: Some(total as u64),
                unit: "files".into(),
            });
        }
        IngestEvent::File(entry) => {
            if entry.status == "skipped" {
                passed_over.push((
                    entry.path.clone(),
                    entry.message.clone().unwrap_or_default(),
                ));
            }
            if entry.status == "error" {
                failed.push((
                    entry.path.clone(),
                    entry.message.clone().unwrap_or_default(),
                ));
            }
            if !json && !tty {
                eprintln!("{}", file_line(entry));
            }
            let _ = out.event(|| Event::IngestFile(Box::new(file_event(entry))));
        }
    };
    let result = build_dataset(&files, &tok, &opts, &mut on_event);
    if tty {
        eprint!("\r\x1b[2K");
    }
    let outcome = result.map_err(|e| match e {
        IngestError::Exists { path } => user_error(
            ErrorCode::Exists,
            format!("a dataset already exists at {}", path.display()),
            "pass --force to replace it, or choose another --name",
        ),
        IngestError::NothingIngested(why) => {
            for (p, m) in &failed {
                eprintln!("  failed: {p}: {}", strip_path(m, p));
            }
            user_error(
                ErrorCode::NoData,
                format!("nothing was ingested: {why}"),
                "see the failures above; ingest reads .pdf .docx .html .md .txt .jsonl",
            )
        }
        e => anyhow::Error::new(e),
    })?;
    let m = &outcome.manifest;
    let c = &m.counts;
    rec.inputs.extend(
        m.sources
            .iter()
            .map(|s| nf_audit::Artifact::new("document", &s.path, s.sha256.clone())),
    );
    rec.inputs.push(nf_audit::Artifact::new(
        "tokenizer",
        &m.tokenizer.source,
        m.tokenizer.sha256.clone(),
    ));
    if outcome.written {
        rec.outputs.push(nf_audit::Artifact::new(
            "dataset",
            &outcome.dir,
            Some(nf_audit::sha256_file(&outcome.dir.join("manifest.json"))?),
        ));
    }
    rec.details = Some(serde_json::json!({
        "dataset": name,
        "sources": c.sources, "ok": c.ok, "errors": c.errors, "skipped": c.skipped,
        "train_tokens": m.split.train_tokens, "val_tokens": m.split.val_tokens,
        "written": outcome.written,
    }));
    if !json {
        eprintln!(
            "ingested {} of {} files ({} failed, {} skipped): {} train / {} val tokens in {} windows and {} examples; {} duplicate paragraphs removed",
            c.ok,
            c.sources,
            c.errors,
            c.skipped,
            m.split.train_tokens,
            m.split.val_tokens,
            c.windows,
            c.examples,
            c.duplicates_removed
        );
        for (p, msg) in &failed {
            eprintln!("  failed: {p}: {}", strip_path(msg, p));
        }
        for (p, msg) in &passed_over {
            eprintln!("  skipped: {p}: {}", strip_path(msg, p));
        }
        if !skipped.is_empty() {
            eprintln!(
                "  {} entries skipped: not a type ingest reads (.pdf .docx .html .md .txt .jsonl), or a link or special file inside a folder (not followed)",
                skipped.len()
            );
        }
        if outcome.written {
            out.text(&format!("{}\n", outcome.dir.display()))?;
        } else {
            eprintln!(
                "the existing dataset at {} was kept: a partial ingest never replaces it",
                outcome.dir.display()
            );
        }
    }
    out.event(|| Event::IngestDone {
        dataset: name.clone(),
        path: outcome.dir.display().to_string(),
        written: outcome.written,
        sources: c.sources as u64,
        ok: c.ok as u64,
        errors: c.errors as u64,
        skipped: c.skipped as u64,
        train_tokens: m.split.train_tokens as u64,
        val_tokens: m.split.val_tokens as u64,
        windows: c.windows as u64,
        examples: c.examples as u64,
        duplicates_removed: c.duplicates_removed as u64,
    })?;
    if c.errors > 0 {
        let hint = if outcome.written {
            "the other files were ingested; fix or remove the failed ones and run again with --force"
        } else {
            "fix or remove the failed files and run again with --force"
        };
        return Err(user_error(
            ErrorCode::Partial,
            format!("{} of {} files could not be ingested", c.errors, c.sources),
            hint,
        ));
    }
    Ok(())
}

/// An error message without its leading `path: ` (the summary line names the file).
fn strip_path<'a>(msg: &'a str, path: &str) -> &'a str {
    msg.strip_prefix(path)
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(msg)
}

fn file_line(e: &SourceEntry) -> String {
    match e.status.as_str() {
        "ok" => {
            let mut what = vec![e.reader.clone().unwrap_or_default()];
            if let Some(p) = e.pages {
                what.push(format!("{p} pages"));
            } else if let Some(p) = e.paragraphs {
                what.push(format!("{p} paragraphs"));
            }
            what.push(format!("{} tokens", e.tokens));
            if let Some(s) = &e.split {
                what.push(s.clone());
            }
            format!("ok      {} ({})", e.path, what.join(", "))
        }
        s => format!(
            "{s:<7} {}: {}",
            e.path,
            strip_path(e.message.as_deref().unwrap_or(""), &e.path)
        ),
    }
}

fn file_event(e: &SourceEntry) -> nf_protocol::IngestFile {
    nf_protocol::IngestFile {
        path: e.path.clone(),
        status: e.status.clone(),
        reader: e.reader.clone(),
        size: e.size,
        sha256: e.sha256.clone(),
        pages: e.pages,
        paragraphs: e.paragraphs,
        chars: e.chars as u64,
        tokens: e.tokens as u64,
        windows: e.windows as u64,
        examples: e.examples as u64,
        split: e.split.clone(),
        message: e.message.clone(),
        warnings: e.warnings.clone(),
    }
}
