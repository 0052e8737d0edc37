//! PDF: the text layer of each page, through `pdf-extract`.
//!
//! `pdf-extract` panics on some fonts by design and has no time limit, so it runs on its
//! own thread (named [`PDF_THREAD_NAME`], so a binary's panic hook can keep its panic
//! messages off the terminal) inside `catch_unwind`, and is abandoned after
//! [`ReadOptions::pdf_timeout`](super::ReadOptions). An abandoned thread runs on until it
//! finishes or the process exits: Rust cannot stop a thread, and a child process per
//! PDF would cost more than it saves for the files people actually have.
//!
//! Pages are cleaned one by one (whitespace), running headers and footers are removed
//! across pages ([`strip_repeated_lines`]), and each page's paragraphs (blocks separated
//! by a blank line) become units with their page and paragraph-on-page numbers, their
//! hard-wrapped lines joined ([`join_lines`]).

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;

use super::clean::{join_lines, normalize, strip_repeated_lines};
use super::error::{IngestError, Result};
use super::{Document, ReadOptions, Unit};

/// The name of the threads that run PDF extraction.
pub const PDF_THREAD_NAME: &str = "nf-pdf-extract";

pub(super) fn read_pdf(doc: &mut Document, bytes: Vec<u8>, opts: &ReadOptions) -> Result<()> {
    let path = doc.source.clone();
    if !bytes.starts_with(b"%PDF-") {
        return Err(IngestError::corrupt(
            &path,
            "PDF",
            "it does not start with `%PDF-`",
        ));
    }
    let encrypted = super::pdf_streams::find(&bytes, b"/Encrypt").is_some();
    if let Some(size) = super::pdf_streams::expands_beyond(&bytes, opts.pdf_max_inflated_bytes) {
        return Err(IngestError::refused(
            &path,
            format!(
                "its compressed streams decode to more than {size} bytes (the limit is {} bytes): a decompression bomb, or a PDF too large to read",
                opts.pdf_max_inflated_bytes
            ),
        ));
    }
    let pages = match extract_pages(bytes, opts) {
        Ok((pages, failed)) => {
            for f in failed {
                doc.warnings
                    .push(format!("{}: text of {f} could not be read", path.display()));
            }
            pages
        }
        Err(reason) if encrypted => {
            return Err(IngestError::refused(
                &path,
                format!("encrypted PDF: cannot read its text without the password ({reason})"),
            ));
        }
        Err(reason) => return Err(IngestError::corrupt(&path, "PDF", reason)),
    };
    let n_pages = pages.len();
    let mut pages: Vec<String> = pages.iter().map(|p| normalize(p)).collect();
    let removed = strip_repeated_lines(&mut pages);
    if !removed.is_empty() {
        doc.warnings.push(format!(
            "{}: removed running headers/footers: {}",
            path.display(),
            removed
                .iter()
                .map(|l| format!("{l:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for (i, page) in pages.iter().enumerate() {
        let paras = page.split("\n\n").map(join_lines).filter(|p| !p.is_empty());
        for (k, text) in paras.enumerate() {
            doc.units.push(Unit {
                text,
                page: Some(i as u32 + 1),
                paragraph: Some(k as u32 + 1),
                table: None,
                row: None,
            });
        }
    }
    doc.pages = Some(n_pages as u32);
    doc.paragraphs = Some(doc.units.len() as u32);
    if doc.units.is_empty() && encrypted {
        // Decrypting with the empty password "worked" but gave nothing readable.
        return Err(IngestError::refused(
            &path,
            "encrypted PDF: no readable text without the password",
        ));
    }
    if doc.units.is_empty() {
        return Err(IngestError::empty(
            &path,
            format!("{n_pages} pages, no text layer: a scan without OCR? run OCR on it first"),
        ));
    }
    Ok(())
}

/// The text of each page (empty for a page that failed, with a warning naming it), or
/// why the document cannot be read.
fn extract_pages(
    bytes: Vec<u8>,
    opts: &ReadOptions,
) -> std::result::Result<(Vec<String>, Vec<String>), String> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(PDF_THREAD_NAME.into())
        .spawn(move || {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| pages_of(&bytes)));
            let _ = tx.send(r.map_err(|p| panic_message(&*p)));
        })
        .map_err(|e| format!("starting the PDF reader: {e}"))?;
    match rx.recv_timeout(opts.pdf_timeout) {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => Err(format!("the PDF reader failed on this file ({panic})")),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "text extraction took longer than {} s and was abandoned",
            opts.pdf_timeout.as_secs()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the PDF reader stopped".into()),
    }
}

/// Page by page, so one bad page (an error or a panic in a font) costs that page only;
/// `pdf_extract`'s own by-page function stops silently at the first failing page.
fn pages_of(bytes: &[u8]) -> std::result::Result<(Vec<String>, Vec<String>), String> {
    let mut doc = pdf_extract::Document::load_mem(bytes).map_err(|e| e.to_string())?;
    if doc.is_encrypted() {
        // Many PDFs are encrypted with an empty user password (print/copy restrictions).
        doc.decrypt("").map_err(|e| format!("encrypted: {e}"))?;
    }
    let n = doc.get_pages().len() as u32;
    let (mut pages, mut failed) = (Vec::new(), Vec::new());
    for page in 1..=n {
        let text = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let mut s = String::new();
            let mut out = pdf_extract::PlainTextOutput::new(&mut s);
            pdf_extract::output_doc_page(&doc, &mut out, page).map(|()| s)
        }));
        match text {
            Ok(Ok(s)) => pages.push(s),
            Ok(Err(e)) => {
                failed.push(format!("page {page}: {e}"));
                pages.push(String::new());
            }
            Err(p) => {
                failed.push(format!("page {page}: {}", panic_message(&*p)));
                pages.push(String::new());
            }
        }
    }
    if !failed.is_empty() && failed.len() == pages.len() {
        return Err(format!("no page could be read ({})", failed[0]));
    }
    Ok((pages, failed))
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}
