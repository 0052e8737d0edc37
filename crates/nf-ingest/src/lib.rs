#![warn(missing_docs)]
//! Document ingestion: from a folder of PDFs, Word files, web pages, Markdown, plain text
//! and JSONL to a dataset folder the trainer reads.
//!
//! The path a file takes:
//!
//! 1. [`read_document`] picks a reader by extension and returns a [`Document`]: the
//!    file's sha256 and its text as [`Unit`]s (paragraphs, table rows) that remember where
//!    they came from (page, paragraph, table row), or for chat and completion JSONL its
//!    [`Example`]s. Readers never panic on bad input: each failure is an [`IngestError`]
//!    naming the file, so one broken file does not stop an ingest.
//! 2. [`clean`] normalizes whitespace, joins words hyphenated across line breaks, drops
//!    page headers and footers that repeat across a PDF's pages, and (in [`build`]) drops
//!    paragraphs that occur verbatim earlier in the dataset.
//! 3. [`chunk`] groups paragraphs into training windows of about `seq_len` tokens, cut on
//!    paragraph boundaries, with a small overlap.
//! 4. [`build::build_dataset`] tokenizes in parallel, splits train/validation **by
//!    document**, and writes `manifest.json`, `documents.jsonl`, `train.bin`, `val.bin` and
//!    masks into a staging folder that replaces the dataset folder only when complete.
//!
//! The dataset folder is described in [`manifest`].

pub mod bench;
pub mod build;
pub mod chunk;
pub mod clean;
mod docx;
mod error;
pub mod examples;
mod html;
mod jsonl;
pub mod manifest;
pub mod parallel;
mod pdf;
mod pdf_streams;
mod text;
mod write;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use build::{BuildOptions, BuildOutcome, IngestEvent, build_dataset, collect_sources};
pub use error::{IngestError, Result};
pub use jsonl::JsonlShape;
pub use manifest::Manifest;
pub use pdf::PDF_THREAD_NAME;

use nf_tokenizer::ChatMessage;

/// One piece of a document's text with its provenance. Page and paragraph numbers are
/// 1-based: `page` for PDFs, `paragraph` for the paragraph within the page (PDF), within
/// the document (DOCX: the index among the body's paragraphs as Word and python-docx count
/// them, empty ones included; text, Markdown, HTML: among non-empty paragraphs), or the
/// line number (JSONL `{"text"}` records). Table rows carry `table` and `row` instead.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unit {
    /// The text.
    pub text: String,
    /// Its page (PDF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<u32>,
    /// Its paragraph number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paragraph: Option<u32>,
    /// Its table (DOCX, HTML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// Its row in the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u32>,
}

impl Unit {
    /// A unit with only a paragraph number.
    pub fn paragraph(text: impl Into<String>, paragraph: u32) -> Unit {
        Unit {
            text: text.into(),
            page: None,
            paragraph: Some(paragraph),
            table: None,
            row: None,
        }
    }
}

/// A supervised example from JSONL: what the model sees and what it learns to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// `{"prompt", "completion"}` (also Alpaca's `instruction`/`input`/`output`).
    Completion {
        /// What the model sees.
        prompt: String,
        /// What it learns to write.
        completion: String,
    },
    /// `{"messages": [{"role", "content"}, ...]}` (also ShareGPT's `conversations`).
    Chat {
        /// The conversation; the assistant's turns are what it learns to write.
        messages: Vec<ChatMessage>,
    },
}

/// An example with the JSONL line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The JSONL line (1-based).
    pub line: u32,
    /// The example on it.
    pub example: Example,
}

/// What a reader made of one source file.
#[derive(Debug, Clone)]
pub struct Document {
    /// The file read.
    pub source: PathBuf,
    /// sha256 of the file's bytes, lowercase hex.
    pub sha256: String,
    /// `"text"`, `"markdown"`, `"html"`, `"docx"`, `"pdf"` or `"jsonl"`.
    pub reader: &'static str,
    /// File size in bytes.
    pub size: u64,
    /// Pages (PDF) or paragraphs counted by the reader, for the manifest.
    pub pages: Option<u32>,
    /// Paragraphs counted by the reader.
    pub paragraphs: Option<u32>,
    /// The text, in reading order. Empty for chat and completion JSONL.
    pub units: Vec<Unit>,
    /// Chat and completion examples (JSONL only).
    pub examples: Vec<Record>,
    /// Problems that did not stop reading (lossy decoding, skipped JSONL lines, removed
    /// headers), one line each.
    pub warnings: Vec<String>,
}

impl Document {
    fn new(path: &Path, bytes: &[u8], reader: &'static str) -> Document {
        Document {
            source: path.to_path_buf(),
            sha256: sha256_hex(bytes),
            reader,
            size: bytes.len() as u64,
            pages: None,
            paragraphs: None,
            units: Vec::new(),
            examples: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Characters of text (examples: of all message contents).
    pub fn chars(&self) -> usize {
        let units: usize = self.units.iter().map(|u| u.text.chars().count()).sum();
        let ex: usize = self
            .examples
            .iter()
            .map(|r| match &r.example {
                Example::Completion { prompt, completion } => {
                    prompt.chars().count() + completion.chars().count()
                }
                Example::Chat { messages } => {
                    messages.iter().map(|m| m.content.chars().count()).sum()
                }
            })
            .sum();
        units + ex
    }
}

/// Limits and choices for the readers. The defaults bound the memory and time one hostile
/// file can take.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// Files larger than this are refused before they are read.
    pub max_file_bytes: u64,
    /// A DOCX whose parts we read may expand to at most this many bytes in total.
    pub max_uncompressed_bytes: u64,
    /// A DOCX (zip) with more entries than this is refused.
    pub max_zip_entries: usize,
    /// PDF extraction that takes longer is abandoned and the file reported.
    pub pdf_timeout: Duration,
    /// A PDF whose streams decode (Flate, LZW, ASCII85, chained) to more than this many
    /// bytes in total is refused before extraction (which would decode them whole, with
    /// no cap).
    pub pdf_max_inflated_bytes: u64,
    /// The JSONL shape to expect; `None` detects it from each file's first record.
    pub jsonl_shape: Option<JsonlShape>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            max_file_bytes: 256 << 20,
            max_uncompressed_bytes: 64 << 20,
            max_zip_entries: 10_000,
            pdf_timeout: Duration::from_secs(120),
            pdf_max_inflated_bytes: 512 << 20,
            jsonl_shape: None,
        }
    }
}

/// The extensions [`read_document`] reads (lowercase), and the reader each goes to.
pub const EXTENSIONS: &[(&str, &str)] = &[
    ("txt", "text"),
    ("text", "text"),
    ("md", "markdown"),
    ("markdown", "markdown"),
    ("html", "html"),
    ("htm", "html"),
    ("xhtml", "html"),
    ("docx", "docx"),
    ("pdf", "pdf"),
    ("jsonl", "jsonl"),
];

/// The reader for `path`'s extension, if there is one.
pub fn reader_for(path: &Path) -> Option<&'static str> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    EXTENSIONS.iter().find(|(e, _)| *e == ext).map(|(_, r)| *r)
}

/// Reads one source file with the reader its extension names. The file's size is checked
/// before it is read; the text comes back cleaned ([`clean::normalize`], de-hyphenated;
/// PDF page headers and footers removed) but not de-duplicated or chunked.
pub fn read_document(path: &Path, opts: &ReadOptions) -> Result<Document> {
    let reader = reader_for(path).ok_or_else(|| IngestError::Unsupported {
        path: path.to_path_buf(),
        ext: path
            .extension()
            .map_or_else(|| "(none)".into(), |e| e.to_string_lossy().into_owned()),
    })?;
    let meta = std::fs::metadata(path).map_err(|e| IngestError::io(path, e))?;
    if meta.is_dir() {
        return Err(IngestError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory"),
        ));
    }
    if !meta.is_file() {
        // A device (/dev/zero), pipe or socket: reading it may never end.
        return Err(IngestError::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a device, pipe or socket)",
            ),
        ));
    }
    let too_large = |size| IngestError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: opts.max_file_bytes,
    };
    if meta.len() > opts.max_file_bytes {
        return Err(too_large(meta.len()));
    }
    // Read at most one byte past the limit, so a file that grows while it is read cannot
    // take more memory than the limit allows.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(opts.max_file_bytes + 1).read_to_end(&mut bytes))
        .map_err(|e| IngestError::io(path, e))?;
    if bytes.len() as u64 > opts.max_file_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    if bytes.is_empty() {
        return Err(IngestError::empty(path, "the file has no bytes"));
    }
    let mut doc = Document::new(path, &bytes, reader);
    match reader {
        "text" | "markdown" => text::read_text(&mut doc, &bytes)?,
        "html" => html::read_html(&mut doc, &bytes)?,
        "docx" => docx::read_docx(&mut doc, &bytes, opts)?,
        "pdf" => pdf::read_pdf(&mut doc, bytes, opts)?,
        "jsonl" => jsonl::read_jsonl(&mut doc, &bytes, opts.jsonl_shape)?,
        _ => unreachable!("reader_for returns only the names above"),
    }
    if doc.units.is_empty() && doc.examples.is_empty() {
        return Err(IngestError::empty(path, "no text found in it"));
    }
    Ok(doc)
}

pub use nf_protocol::sha256_hex;
