//! The dataset folder (`<home>/datasets/<name>/`) and its `manifest.json`.
//!
//! | file | what it holds |
//! |---|---|
//! | `manifest.json` | [`Manifest`]: every source with size, sha256, reader, pages/paragraphs, characters, tokens, status; the tokenizer; the settings; the split; counts. Written last: a folder without it is not a dataset. |
//! | `documents.jsonl` | one [`DocumentLine`] per training window or example: its text (or messages), the source's path and sha256, the split, and where each paragraph came from. |
//! | `train.bin`, `val.bin` | token shards ([`nf_data::shard`]): each window or example in source order, each text window after the document separator (BOS, else EOS). |
//! | `train.mask`, `val.mask` | present when the dataset holds chat or completion examples (and masking was not turned off): a shard of the same length as its `.bin` whose ids are 0 or 1, 1 where the token is a training target (assistant turns; everything in text windows but the separator). |
//! | `train.starts`, `val.starts` | a shard whose ids are the offsets in its `.bin` where each window or example begins, ascending, the first 0. |
//!
//! Windows and examples are packed back to back with their separators, so a training
//! window may span two examples. The trainer reads `*.starts` and keeps attention inside
//! each example (and restarts its positions), so packing changes nothing an example
//! learns; the mask keeps the loss on the assistant tokens only.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{IngestError, Result};
use super::jsonl::JsonlShape;
use nf_tokenizer::ChatMessage;

/// `manifest.json` identifies itself with this.
pub const MANIFEST_FORMAT: &str = "neuralforge-dataset";
/// The manifest version this code writes and reads.
pub const MANIFEST_VERSION: u32 = 1;

/// `manifest.json`: what a dataset folder holds and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `neuralforge-dataset`.
    pub format: String,
    /// The format version.
    pub version: u32,
    /// The dataset's name.
    pub name: String,
    /// RFC 3339 UTC.
    pub created: String,
    /// The version that wrote it.
    pub neuralforge_version: String,
    /// The tokenizer that made the ids.
    pub tokenizer: TokenizerInfo,
    /// The settings it was built with.
    pub settings: Settings,
    /// The train/validation split.
    pub split: SplitInfo,
    /// What went in and what came out.
    pub counts: Counts,
    /// The folder's files.
    pub files: Files,
    /// Every source file and what became of it.
    pub sources: Vec<SourceEntry>,
}

/// Which tokenizer made the ids: a dataset is only valid with that tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenizerInfo {
    /// [`nf_tokenizer::Tokenizer::kind`].
    pub kind: String,
    /// Its vocabulary size.
    pub vocab_size: usize,
    /// Its beginning-of-sequence token.
    pub bos_id: Option<u32>,
    /// Its end-of-sequence token.
    pub eos_id: Option<u32>,
    /// Where it was loaded from (the model, or `--tokenizer`).
    pub source: String,
    /// sha256 of that file, when it is one file.
    pub sha256: Option<String>,
    /// Whether a chat template rendered the examples.
    pub chat_template: bool,
}

/// How the dataset was built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Target window length in tokens.
    pub seq_len: usize,
    /// Tokens shared by consecutive windows of a document (at most).
    pub overlap: usize,
    /// The share of the tokens held out for validation, in whole documents.
    pub val_fraction: f32,
    /// The seed of the document split.
    pub seed: u64,
    /// Whether masks were written for chat and completion examples.
    pub mask: bool,
    /// The JSONL shape forced with `--format`, or `None` for auto-detection.
    pub format: Option<JsonlShape>,
}

/// The split is by document: every window of a file (every example of a JSONL file, each
/// its own document) is on one side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// What the split is by (`document`).
    pub by: String,
    /// Documents in training.
    pub train_documents: usize,
    /// Documents in validation.
    pub val_documents: usize,
    /// Training tokens.
    pub train_tokens: usize,
    /// Validation tokens.
    pub val_tokens: usize,
}

/// Totals over the sources.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    /// Source files seen.
    pub sources: usize,
    /// Read without error.
    pub ok: usize,
    /// Failed.
    pub errors: usize,
    /// Skipped (the same bytes as an earlier source).
    pub skipped: usize,
    /// Paragraphs and rows read (after removing duplicates).
    pub units: usize,
    /// Paragraphs dropped as verbatim repeats.
    pub duplicates_removed: usize,
    /// Training windows written.
    pub windows: usize,
    /// Examples written.
    pub examples: usize,
    /// Characters of text.
    pub chars: usize,
    /// Tokens written.
    pub tokens: usize,
}

/// The dataset folder's files, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Files {
    /// `documents.jsonl`.
    pub documents: String,
    /// The training token shard.
    pub train: String,
    /// The validation token shard.
    pub val: String,
    /// The training loss mask, when examples were masked.
    pub train_mask: Option<String>,
    /// The validation loss mask.
    pub val_mask: Option<String>,
    /// Absent in datasets written before example starts were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_starts: Option<String>,
    /// Where each validation window or example starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_starts: Option<String>,
}

/// One source file and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceEntry {
    /// The file, as given.
    pub path: String,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// Its sha256.
    pub sha256: Option<String>,
    /// The reader that read it.
    pub reader: Option<String>,
    /// Its pages (PDF).
    pub pages: Option<u32>,
    /// Its paragraphs.
    pub paragraphs: Option<u32>,
    /// Characters of text it gave.
    pub chars: usize,
    /// Tokens it gave.
    pub tokens: usize,
    /// Windows made from it.
    pub windows: usize,
    /// Examples made from it.
    pub examples: usize,
    /// `train`, `val`, `both` (JSONL examples are split one by one), or `None`.
    pub split: Option<String>,
    /// `ok`, `error` or `skipped` (same bytes as an earlier source).
    pub status: String,
    /// Why it failed or was skipped.
    pub message: Option<String>,
    /// What the reader warned about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where one unit of a window came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The page (PDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// The paragraph number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paragraph: Option<u32>,
    /// The table (DOCX, HTML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// The row in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
}

/// One line of `documents.jsonl`: a text window (`text` and `units`, one location per
/// paragraph of the text, which are joined with blank lines) or an example (`line`, and
/// `messages` or `prompt`/`completion`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentLine {
    /// The source file.
    pub source: String,
    /// Its sha256.
    pub sha256: String,
    /// `train` or `val`.
    pub split: String,
    /// 0-based index of the window or example within its source.
    pub index: usize,
    /// Tokens in the window or example.
    pub tokens: usize,
    /// The window's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Its first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_start: Option<u32>,
    /// Its last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_end: Option<u32>,
    /// Its first paragraph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paragraph_start: Option<u32>,
    /// Its last paragraph.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paragraph_end: Option<u32>,
    /// Where each of its paragraphs came from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<Location>,
    /// The example's JSONL line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// A chat example's messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// A completion example's prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// A completion example's completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
}

impl Manifest {
    /// Whether `dir` holds a dataset (a `manifest.json`).
    pub fn is_dataset(dir: &Path) -> bool {
        dir.join("manifest.json").is_file()
    }

    /// Reads `<dir>/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&path).map_err(|e| IngestError::io(&path, e))?;
        let m: Manifest = serde_json::from_str(&text).map_err(|e| IngestError::NotADataset {
            path: dir.to_path_buf(),
            reason: format!("manifest.json: {e}"),
        })?;
        if m.format != MANIFEST_FORMAT || m.version != MANIFEST_VERSION {
            return Err(IngestError::NotADataset {
                path: dir.to_path_buf(),
                reason: format!(
                    "manifest.json is {} version {}; this build reads {MANIFEST_FORMAT} version {MANIFEST_VERSION}",
                    m.format, m.version
                ),
            });
        }
        Ok(m)
    }

    /// Writes `<dir>/manifest.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("a manifest serializes");
        nf_formats::atomic::write_atomic(&dir.join("manifest.json"), |w| {
            w.write_all(text.as_bytes())?;
            w.write_all(b"\n")
        })?;
        Ok(())
    }

    /// The training and validation shards of the dataset in `dir`.
    pub fn shard_paths(&self, dir: &Path) -> (PathBuf, PathBuf) {
        (dir.join(&self.files.train), dir.join(&self.files.val))
    }
}

/// Reads `documents.jsonl` of the dataset in `dir`.
pub fn read_documents(dir: &Path) -> Result<Vec<DocumentLine>> {
    let path = dir.join("documents.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| IngestError::io(&path, e))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| IngestError::NotADataset {
                path: dir.to_path_buf(),
                reason: format!("documents.jsonl line {}: {e}", i + 1),
            })
        })
        .collect()
}
