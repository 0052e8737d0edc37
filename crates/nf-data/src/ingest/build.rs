//! Building a dataset folder from source files: read, de-duplicate, window, tokenize,
//! split by document, write beside the target, swap in.
//!
//! Reading and tokenizing run on `threads` threads; the output does not depend on the
//! thread count (results are assembled in source order). The folder is written as
//! `.<name>.staging-<pid>` beside the target and renamed over it only when complete, so a
//! crash or an error leaves any earlier dataset as it was. When some sources failed and a
//! dataset already exists at the target, the old one is kept and the new one discarded
//! ([`BuildOutcome::written`] is false): a partial ingest never replaces a whole one.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::chunk::{split_long, windows};
use super::error::{IngestError, Result};
use super::examples::{Encoded, Renderer};
use super::manifest::{
    Counts, DocumentLine, Files, Location, MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, Settings,
    SourceEntry, SplitInfo, TokenizerInfo,
};
use super::{Document, Example, ReadOptions, Unit, parallel, read_document, reader_for};
use crate::Tokenizer;
use crate::dataset::write_shard;

/// Paragraphs shorter than this are not de-duplicated: short lines ("Yes", "Total",
/// "Introduction") repeat legitimately.
const MIN_DEDUP_CHARS: usize = 24;

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub name: String,
    /// The dataset folder to create (or replace with `force`).
    pub out_dir: PathBuf,
    pub force: bool,
    /// Fraction of the tokens, in whole documents, held out for validation.
    pub val_fraction: f32,
    /// Seed of the document split.
    pub seed: u64,
    /// Window length in tokens (separator included).
    pub seq_len: usize,
    /// Tokens consecutive windows may share.
    pub overlap: usize,
    /// Write loss masks for chat and completion examples.
    pub mask: bool,
    pub threads: usize,
    pub read: ReadOptions,
    /// The chat template for chat and completion examples (the model's, usually).
    pub chat_template: Option<String>,
    /// Where the tokenizer came from, and its file's sha256, for the manifest.
    pub tokenizer_source: String,
    pub tokenizer_sha256: Option<String>,
    /// The creation time to record (RFC 3339), given by the caller.
    pub created: String,
}

/// Progress reports, on the calling thread.
#[derive(Debug)]
pub enum IngestEvent<'a> {
    /// `done` of `total` items of a stage (`"read"`, `"tokenize"`) are finished.
    Progress {
        stage: &'static str,
        done: usize,
        total: usize,
    },
    /// A source's final entry (in source order, after tokenization).
    File(&'a SourceEntry),
}

/// The result of [`build_dataset`].
#[derive(Debug)]
pub struct BuildOutcome {
    pub manifest: Manifest,
    pub dir: PathBuf,
    /// False when sources failed and an existing dataset was kept rather than replaced.
    pub written: bool,
}

/// The files to ingest from `paths`: files as given, folders walked recursively (sorted,
/// hidden entries skipped, only extensions a reader handles). Returns the files and the
/// files skipped for their extension. A path that does not exist is returned as a file,
/// so reading it reports the error in its place.
pub fn collect_sources(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, skipped: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            files.push(dir.to_path_buf()); // reading it reports why
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                // Symlinked folders can form cycles; real trees are not this deep.
                if depth < 32 {
                    walk(&p, depth + 1, files, skipped);
                }
            } else if reader_for(&p).is_some() {
                files.push(p);
            } else {
                skipped.push(p);
            }
        }
    }
    let (mut files, mut skipped) = (Vec::new(), Vec::new());
    for p in paths {
        if p.is_dir() {
            walk(p, 0, &mut files, &mut skipped);
        } else {
            files.push(p.clone());
        }
    }
    (files, skipped)
}

/// One piece of training data: a window of a document or one example.
struct Piece {
    enc: Encoded,
    line: DocumentLine,
}

/// A source after tokenization.
struct Done {
    entry: SourceEntry,
    pieces: Vec<Piece>,
    /// JSONL examples are split one by one; a document's windows go together.
    split_each: bool,
}

/// Builds the dataset at `opts.out_dir` from `files` (see the module docs).
pub fn build_dataset(
    files: &[PathBuf],
    tok: &Tokenizer,
    opts: &BuildOptions,
    on_event: &mut dyn FnMut(IngestEvent),
) -> Result<BuildOutcome> {
    let target = &opts.out_dir;
    if target.exists() {
        if !Manifest::is_dataset(target) && !is_empty_dir(target) {
            return Err(IngestError::NotADataset {
                path: target.clone(),
                reason: "the folder exists and holds other files; refusing to replace it".into(),
            });
        }
        if Manifest::is_dataset(target) && !opts.force {
            return Err(IngestError::Exists {
                path: target.clone(),
            });
        }
    }
    let total = files.len();
    let mut read_count = 0;
    let docs = parallel::map(
        files,
        opts.threads,
        |p| read_document(p, &opts.read),
        |_, _| {
            read_count += 1;
            on_event(IngestEvent::Progress {
                stage: "read",
                done: read_count,
                total,
            });
        },
    );
    let (docs, duplicates) = deduplicate(docs);
    let renderer = Renderer::new(tok, opts.chat_template.as_deref());
    let items: Vec<(&PathBuf, &std::result::Result<Document, Skip>)> =
        files.iter().zip(&docs).collect();
    let mut done_count = 0;
    let mut done = parallel::map(
        &items,
        opts.threads,
        |(path, doc)| process(path, doc, &renderer, opts),
        |_, _| {
            done_count += 1;
            on_event(IngestEvent::Progress {
                stage: "tokenize",
                done: done_count,
                total,
            });
        },
    );
    for d in &done {
        on_event(IngestEvent::File(&d.entry));
    }
    let split = split_documents(&mut done, opts.val_fraction, opts.seed);
    write_staged(&mut done, tok, opts, split, duplicates)
}

/// Why a source yields nothing: its read error, or the earlier source with the same bytes.
enum Skip {
    Error(IngestError),
    Duplicate(PathBuf),
}

/// Drops files whose bytes equal an earlier file's, and paragraphs (of at least
/// [`MIN_DEDUP_CHARS`]) and examples that occur verbatim earlier in the dataset.
fn deduplicate(docs: Vec<Result<Document>>) -> (Vec<std::result::Result<Document, Skip>>, usize) {
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    let mut seen: std::collections::HashSet<[u8; 16]> = Default::default();
    let mut key = |s: &str| -> bool {
        let h = super::sha256_hex(s.as_bytes());
        let mut k = [0u8; 16];
        k.copy_from_slice(&h.as_bytes()[..16]);
        seen.insert(k)
    };
    let mut removed = 0;
    let out = docs
        .into_iter()
        .map(|d| {
            let mut d = d.map_err(Skip::Error)?;
            if let Some(first) = files.get(&d.sha256) {
                return Err(Skip::Duplicate(first.clone()));
            }
            files.insert(d.sha256.clone(), d.source.clone());
            let before = d.units.len() + d.examples.len();
            d.units
                .retain(|u| u.text.chars().count() < MIN_DEDUP_CHARS || key(&u.text));
            d.examples.retain(|r| key(&format!("{:?}", r.example)));
            removed += before - d.units.len() - d.examples.len();
            Ok(d)
        })
        .collect();
    (out, removed)
}

fn entry_for(path: &Path) -> SourceEntry {
    SourceEntry {
        path: path.display().to_string(),
        size: std::fs::metadata(path).ok().map(|m| m.len()),
        sha256: None,
        reader: reader_for(path).map(str::to_string),
        pages: None,
        paragraphs: None,
        chars: 0,
        tokens: 0,
        windows: 0,
        examples: 0,
        split: None,
        status: "error".into(),
        message: None,
        warnings: Vec::new(),
    }
}

/// Windows and tokenizes one source.
fn process(
    path: &Path,
    doc: &std::result::Result<Document, Skip>,
    r: &Renderer,
    opts: &BuildOptions,
) -> Done {
    let mut entry = entry_for(path);
    let doc = match doc {
        Ok(d) => d,
        Err(Skip::Error(e)) => {
            // A file with no text loses nothing: a warning, not a failure.
            if matches!(e, IngestError::Empty { .. }) {
                entry.status = "skipped".into();
            }
            entry.message = Some(e.to_string());
            return Done {
                entry,
                pieces: Vec::new(),
                split_each: false,
            };
        }
        Err(Skip::Duplicate(first)) => {
            entry.status = "skipped".into();
            entry.message = Some(format!("same bytes as {}", first.display()));
            return Done {
                entry,
                pieces: Vec::new(),
                split_each: false,
            };
        }
    };
    entry.sha256 = Some(doc.sha256.clone());
    entry.size = Some(doc.size);
    entry.pages = doc.pages;
    entry.paragraphs = doc.paragraphs;
    entry.chars = doc.chars();
    entry.warnings = doc.warnings.clone();
    let pieces = match pieces(doc, r, opts, &mut entry.warnings) {
        Ok(p) => p,
        Err(e) => {
            entry.message = Some(
                IngestError::Tokenize {
                    path: path.to_path_buf(),
                    source: e,
                }
                .to_string(),
            );
            return Done {
                entry,
                pieces: Vec::new(),
                split_each: false,
            };
        }
    };
    if pieces.is_empty() {
        entry.message = Some(format!(
            "{}: nothing left after removing duplicates",
            path.display()
        ));
        entry.status = "skipped".into();
    } else {
        entry.status = "ok".into();
    }
    entry.tokens = pieces.iter().map(|p| p.enc.ids.len()).sum();
    // JSONL records (text ones too) are examples; windows are cut from documents.
    entry.examples = pieces.iter().filter(|p| p.line.line.is_some()).count();
    entry.windows = pieces.len() - entry.examples;
    Done {
        entry,
        pieces,
        split_each: doc.reader == "jsonl",
    }
}

fn pieces(
    doc: &Document,
    r: &Renderer,
    opts: &BuildOptions,
    warnings: &mut Vec<String>,
) -> crate::Result<Vec<Piece>> {
    let line = |index: usize, tokens: usize| DocumentLine {
        source: doc.source.display().to_string(),
        sha256: doc.sha256.clone(),
        split: String::new(),
        index,
        tokens,
        text: None,
        page_start: None,
        page_end: None,
        paragraph_start: None,
        paragraph_end: None,
        units: Vec::new(),
        line: None,
        messages: None,
        prompt: None,
        completion: None,
    };
    let mut out = Vec::new();
    if doc.reader == "jsonl" {
        // `{"text"}` records are examples of their own: one piece per line.
        for u in &doc.units {
            let enc = r.text(&u.text)?;
            let mut l = line(out.len(), enc.ids.len());
            l.text = Some(u.text.clone());
            l.line = u.paragraph;
            out.push(Piece { enc, line: l });
        }
        for rec in &doc.examples {
            let (enc, warning) = r.example(&rec.example)?;
            if let Some(w) = warning {
                warnings.push(format!("{}:{}: {w}", doc.source.display(), rec.line));
            }
            let mut l = line(out.len(), enc.ids.len());
            l.line = Some(rec.line);
            match &rec.example {
                Example::Chat { messages } => l.messages = Some(messages.clone()),
                Example::Completion { prompt, completion } => {
                    l.prompt = Some(prompt.clone());
                    l.completion = Some(completion.clone());
                }
            }
            out.push(Piece { enc, line: l });
        }
        return Ok(out);
    }
    let budget = opts.seq_len.saturating_sub(1).max(8);
    let units = fit_units(&doc.units, r.tok, budget)?;
    // Units are joined with a blank line, which costs tokens too.
    let join = r.tok.encode("\n\n", false, false)?.len();
    let counts: Vec<usize> = units.iter().map(|(_, n)| n + join).collect();
    for w in windows(&counts, budget, opts.overlap) {
        let us: Vec<&Unit> = units[w].iter().map(|(u, _)| u).collect();
        let text = us
            .iter()
            .map(|u| u.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        let enc = r.text(&text)?;
        let mut l = line(out.len(), enc.ids.len());
        l.page_start = us.iter().find_map(|u| u.page);
        l.page_end = us.iter().rev().find_map(|u| u.page);
        l.paragraph_start = us.iter().find_map(|u| u.paragraph);
        l.paragraph_end = us.iter().rev().find_map(|u| u.paragraph);
        l.units = us
            .iter()
            .map(|u| Location {
                page: u.page,
                paragraph: u.paragraph,
                table: u.table,
                row: u.row,
            })
            .collect();
        l.text = Some(text);
        out.push(Piece { enc, line: l });
    }
    Ok(out)
}

/// The units with their token counts, units over `budget` tokens split into pieces that
/// fit (same provenance). Blank lines inside a unit become single newlines, so a window's
/// text splits back into its units at blank lines.
fn fit_units(units: &[Unit], tok: &Tokenizer, budget: usize) -> crate::Result<Vec<(Unit, usize)>> {
    let mut out = Vec::with_capacity(units.len());
    for u in units {
        let mut u = u.clone();
        while u.text.contains("\n\n") {
            u.text = u.text.replace("\n\n", "\n");
        }
        let n = tok.encode(&u.text, false, false)?.len();
        if n <= budget {
            out.push((u, n));
            continue;
        }
        // Aim a little under the budget: token density varies along the text.
        let max_chars = (u.text.len() * budget / n * 9 / 10).max(16);
        for part in split_long(&u.text, max_chars) {
            let n = tok.encode(&part, false, false)?.len();
            out.push((
                Unit {
                    text: part,
                    ..u.clone()
                },
                n,
            ));
        }
    }
    Ok(out)
}

/// Which pieces go to validation: whole documents (JSONL examples one by one) in an
/// order fixed by the seed and their content, until `val_fraction` of the tokens is held
/// out; at least one document stays in training. Returns the documents on each side.
fn split_documents(done: &mut [Done], val_fraction: f32, seed: u64) -> (usize, usize) {
    // (source index, piece index or None for the whole document, tokens, order key)
    let mut units: Vec<(usize, Option<usize>, usize, String)> = Vec::new();
    for (i, d) in done.iter().enumerate() {
        if d.pieces.is_empty() {
            continue;
        }
        let sha = d.entry.sha256.clone().unwrap_or_default();
        if d.split_each {
            for (k, p) in d.pieces.iter().enumerate() {
                let key = super::sha256_hex(format!("{seed}:{sha}:{k}").as_bytes());
                units.push((i, Some(k), p.enc.ids.len(), key));
            }
        } else {
            let key = super::sha256_hex(format!("{seed}:{sha}").as_bytes());
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

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}

/// Writes the dataset into a staging folder and swaps it in.
fn write_staged(
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
    for d in done.iter_mut() {
        for p in d.pieces.drain(..) {
            has_examples |= p.line.messages.is_some() || p.line.prompt.is_some();
            let side = if p.line.split == "val" {
                &mut val
            } else {
                &mut train
            };
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

/// Renames `staging` to `target`, moving an existing `target` aside first and deleting it
/// once the new one is in place.
fn swap_in(staging: &Path, target: &Path) -> Result<()> {
    let old = staging.with_extension("old");
    let _ = std::fs::remove_dir_all(&old);
    let had_old = target.exists();
    if had_old {
        std::fs::rename(target, &old).map_err(|e| IngestError::io(target, e))?;
    }
    if let Err(e) = std::fs::rename(staging, target) {
        if had_old {
            let _ = std::fs::rename(&old, target);
        }
        let _ = std::fs::remove_dir_all(staging);
        return Err(IngestError::io(target, e));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}
