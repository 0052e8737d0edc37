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
use std::path::{Path, PathBuf};

use super::chunk::{split_long, windows};
use super::error::{IngestError, Result};
use super::examples::{Encoded, Renderer};
use super::manifest::{DocumentLine, Location, Manifest, SourceEntry};
use super::{Document, Example, ReadOptions, Unit, parallel, read_document, reader_for, write};
use nf_tokenizer::Tokenizer;

/// Paragraphs shorter than this are not de-duplicated: short lines ("Yes", "Total",
/// "Introduction") repeat legitimately.
const MIN_DEDUP_CHARS: usize = 24;

/// What to build and how.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The dataset's name (recorded in the manifest).
    pub name: String,
    /// The dataset folder to create (or replace with `force`).
    pub out_dir: PathBuf,
    /// Replace an existing dataset at `out_dir`.
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
    /// Threads for reading and tokenizing.
    pub threads: usize,
    /// How files are read.
    pub read: ReadOptions,
    /// The chat template for chat and completion examples (the model's, usually).
    pub chat_template: Option<String>,
    /// Where the tokenizer came from, and its file's sha256, for the manifest.
    pub tokenizer_source: String,
    /// The sha256 of the tokenizer's file.
    pub tokenizer_sha256: Option<String>,
    /// The creation time to record (RFC 3339), given by the caller.
    pub created: String,
}

/// Progress reports, on the calling thread.
#[derive(Debug)]
pub enum IngestEvent<'a> {
    /// `done` of `total` items of a stage (`"read"`, `"tokenize"`) are finished.
    Progress {
        /// `read` or `tokenize`.
        stage: &'static str,
        /// Items finished.
        done: usize,
        /// Items in the stage.
        total: usize,
    },
    /// A source's final entry (in source order, after tokenization).
    File(&'a SourceEntry),
}

/// The result of [`build_dataset`].
#[derive(Debug)]
pub struct BuildOutcome {
    /// The manifest written (or the one a failed build would have written).
    pub manifest: Manifest,
    /// The dataset folder.
    pub dir: PathBuf,
    /// False when sources failed and an existing dataset was kept rather than replaced.
    pub written: bool,
}

/// The files to ingest from `paths`: files as given, folders walked recursively (sorted,
/// hidden entries skipped, only extensions a reader handles). Returns the files and the
/// entries skipped: for their extension, or for not being a regular file or folder.
/// Inside a folder, symbolic links are never followed (a link to `..` would make the walk
/// loop, and one to `/dev/zero` never end) and devices, pipes and sockets are skipped; a
/// path given directly is taken as the user named it. A path that does not exist is
/// returned as a file, so reading it reports the error in its place.
pub fn collect_sources(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    fn walk(dir: &Path, depth: usize, files: &mut Vec<PathBuf>, skipped: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            files.push(dir.to_path_buf()); // reading it reports why
            return;
        };
        // The entry's own type: DirEntry::file_type does not follow a link.
        let mut entries: Vec<(PathBuf, Option<std::fs::FileType>)> = rd
            .filter_map(|e| e.ok().map(|e| (e.path(), e.file_type().ok())))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, kind) in entries {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            match kind {
                Some(k) if k.is_dir() => {
                    // Without links the tree has no cycles; this only bounds the stack.
                    if depth < 64 {
                        walk(&p, depth + 1, files, skipped);
                    }
                }
                Some(k) if k.is_file() && reader_for(&p).is_some() => files.push(p),
                // Other extensions, links, devices, pipes, sockets.
                _ => skipped.push(p),
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
pub(super) struct Piece {
    pub(super) enc: Encoded,
    pub(super) line: DocumentLine,
}

/// A source after tokenization.
pub(super) struct Done {
    pub(super) entry: SourceEntry,
    pub(super) pieces: Vec<Piece>,
    /// JSONL examples are split one by one; a document's windows go together.
    pub(super) split_each: bool,
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
    let split = write::split_documents(&mut done, opts.val_fraction, opts.seed);
    write::write_staged(&mut done, tok, opts, split, duplicates)
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
        let h = crate::sha256_hex(s.as_bytes());
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
) -> nf_tokenizer::Result<Vec<Piece>> {
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
fn fit_units(
    units: &[Unit],
    tok: &Tokenizer,
    budget: usize,
) -> nf_tokenizer::Result<Vec<(Unit, usize)>> {
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

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
}
