//! `neuralforge datasets list|show`: what `ingest` made.

use nf_protocol::ErrorCode;
use std::path::Path;

use anyhow::Result;
use nf_ingest::Manifest;
use nf_protocol::Event;

use crate::cli::{DatasetShowArgs, DatasetsCommand};
use crate::errors::user_error;
use crate::output::Output;
use nf_store::datasets::resolve_dataset;

pub fn run(cmd: &DatasetsCommand, home: &Path, out: &mut Output) -> Result<()> {
    match cmd {
        DatasetsCommand::List => list(home, out),
        DatasetsCommand::Show(a) => show(a, home, out),
    }
}

fn info(m: &Manifest, dir: &Path, samples: Vec<String>) -> Event {
    Event::DatasetInfo {
        name: m.name.clone(),
        path: dir.display().to_string(),
        created: m.created.clone(),
        tokenizer: m.tokenizer.kind.clone(),
        sources: m.counts.sources as u64,
        errors: m.counts.errors as u64,
        train_tokens: m.split.train_tokens as u64,
        val_tokens: m.split.val_tokens as u64,
        windows: m.counts.windows as u64,
        examples: m.counts.examples as u64,
        samples,
    }
}

fn list(home: &Path, out: &mut Output) -> Result<()> {
    let root = nf_store::datasets::datasets_dir(home);
    // Not hidden folders: an ingest's staging folder is one until it is renamed into place,
    // and one stopped by a crash stays behind with a whole dataset in it.
    let dirs = nf_store::home::subdirs(&root);
    let mut rows = Vec::new();
    for d in dirs.iter().filter(|d| Manifest::is_dataset(d)) {
        match Manifest::read(d) {
            Ok(m) => rows.push((d.clone(), m)),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    if rows.is_empty() && !out.is_json() {
        eprintln!(
            "no datasets in {} (make one with `neuralforge ingest`)",
            root.display()
        );
    }
    if !rows.is_empty() {
        out.text(&format!(
            "{:<24} {:>7} {:>6} {:>12} {:>10}  {}\n",
            "NAME", "SOURCES", "ERRORS", "TRAIN TOK", "VAL TOK", "CREATED"
        ))?;
    }
    for (d, m) in &rows {
        out.text(&format!(
            "{:<24} {:>7} {:>6} {:>12} {:>10}  {}\n",
            d.file_name().unwrap_or_default().to_string_lossy(),
            m.counts.sources,
            m.counts.errors,
            m.split.train_tokens,
            m.split.val_tokens,
            m.created
        ))?;
        out.event(|| info(m, d, Vec::new()))?;
    }
    Ok(())
}

fn show(a: &DatasetShowArgs, home: &Path, out: &mut Output) -> Result<()> {
    let dir = resolve_dataset(&a.name, home).ok_or_else(|| {
        user_error(
            ErrorCode::NotFound,
            format!("no dataset `{}`", a.name.display()),
            "see `neuralforge datasets list`, or pass a dataset folder",
        )
    })?;
    let m = Manifest::read(&dir)?;
    let samples = nf_store::datasets::samples(&m, &dir, a.samples);
    let mut t = String::new();
    let c = &m.counts;
    t.push_str(&format!("dataset {}  ({})\n", m.name, dir.display()));
    t.push_str(&format!(
        "created {}  tokenizer {} ({} tokens, from {})\n",
        m.created, m.tokenizer.kind, m.tokenizer.vocab_size, m.tokenizer.source
    ));
    t.push_str(&format!(
        "sources {} ({} ok, {} failed, {} skipped); {} windows, {} examples, {} characters; {} duplicate paragraphs removed\n",
        c.sources, c.ok, c.errors, c.skipped, c.windows, c.examples, c.chars, c.duplicates_removed
    ));
    t.push_str(&format!(
        "split by {}: train {} documents / {} tokens, val {} documents / {} tokens; seq_len {}, masks {}\n\nsources:\n",
        m.split.by,
        m.split.train_documents,
        m.split.train_tokens,
        m.split.val_documents,
        m.split.val_tokens,
        m.settings.seq_len,
        if m.settings.mask { "yes" } else { "no" }
    ));
    for s in &m.sources {
        let extent = match (s.pages, s.paragraphs) {
            (Some(p), _) => format!("{p} pages"),
            (None, Some(p)) => format!("{p} paragraphs"),
            _ => String::new(),
        };
        t.push_str(&format!(
            "  {:<7} {:<8} {:>12} {:>8} tok {:<5} {}{}\n",
            s.status,
            s.reader.as_deref().unwrap_or("-"),
            extent,
            s.tokens,
            s.split.as_deref().unwrap_or("-"),
            s.path,
            s.message.as_deref().map_or(String::new(), |msg| {
                let msg = msg
                    .strip_prefix(s.path.as_str())
                    .and_then(|m| m.strip_prefix(": "))
                    .unwrap_or(msg);
                format!("\n          {msg}")
            })
        ));
    }
    for (i, s) in samples.iter().enumerate() {
        t.push_str(&format!("\nsample {}:\n{}\n", i + 1, s.trim_end()));
    }
    out.text(&t)?;
    out.event(|| info(&m, &dir, samples))?;
    Ok(())
}
