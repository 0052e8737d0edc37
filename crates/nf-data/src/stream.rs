//! The training token stream: shards and text files concatenated in the order given.
//!
//! Shards (`.bin`) are taken as they are: `neuralforge ingest` already put document
//! separators in them. Any other file is read as UTF-8 text and tokenized here, one file
//! one document, each document starting with a separator token: BOS when the vocabulary
//! has one (as llama2.c's pretokenizer does), else EOS (as llm.c does with GPT-2's
//! `<|endoftext|>`). Text is tokenized without parsing special tokens, so a document that
//! happens to contain `<|im_start|>` trains on those characters, not on the control token.

use std::path::{Path, PathBuf};

use super::error::{DatasetError, Result};
use super::shard::TokenShard;
use nf_tokenizer::{Tokenizer, TokenizerError};

/// Text is tokenized in chunks of about this many bytes, cut after a blank line, so one
/// tokenizer call never holds a whole large file's intermediate state.
///
/// A chunk starts like a fresh text, so at each cut SentencePiece gives the next word its
/// dummy-prefix space, and byte-level BPE may merge the blank line into one token instead
/// of two: changes of one token every megabyte, at a paragraph break, which do not matter
/// for training.
pub const TEXT_CHUNK_BYTES: usize = 1 << 20;

/// Files with more than this fraction of bytes that are not UTF-8 are refused rather than
/// decoded lossily: they are probably in another encoding (Latin-1, UTF-16) or binary.
const MAX_INVALID_UTF8_FRACTION: f64 = 0.01;

/// How a source file is read, decided by its extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A token shard (`.bin`, any case), see [`super::shard`].
    Shard,
    /// Anything else: UTF-8 text tokenized on the fly.
    Text,
}

impl SourceKind {
    /// `.bin` is a shard; every other extension (or none) is text.
    pub fn of(path: &Path) -> SourceKind {
        match path.extension() {
            Some(e) if e.eq_ignore_ascii_case("bin") => SourceKind::Shard,
            _ => SourceKind::Text,
        }
    }
}

/// One source added to a [`TokenStream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    /// The source file.
    pub path: PathBuf,
    /// Whether it was a token shard or a text file.
    pub kind: SourceKind,
    /// Tokens it contributed, separators included.
    pub tokens: usize,
}

/// The concatenated tokens of several sources, with what each contributed and the
/// warnings met on the way (for the caller to show; this library never prints).
#[derive(Clone, Debug, Default)]
pub struct TokenStream {
    tokens: Vec<u32>,
    sources: Vec<SourceInfo>,
    warnings: Vec<String>,
}

/// The id put before each document: BOS if the vocabulary has one, else EOS, else none.
pub fn document_separator(tokenizer: &Tokenizer) -> Option<u32> {
    tokenizer.bos_id().or(tokenizer.eos_id())
}

/// Appends one document to `out`: its [`document_separator`], then the text's ids,
/// tokenized in [`TEXT_CHUNK_BYTES`] chunks without parsing special tokens.
pub fn encode_document(
    text: &str,
    tokenizer: &Tokenizer,
    out: &mut Vec<u32>,
) -> std::result::Result<(), TokenizerError> {
    out.extend(document_separator(tokenizer));
    for chunk in paragraph_chunks(text, TEXT_CHUNK_BYTES) {
        out.extend(tokenizer.encode(chunk, false, false)?);
    }
    Ok(())
}

/// Cuts `text` into pieces of at least `target` bytes (the last may be shorter), each cut
/// just after a blank line ("\n\n"). Text without blank lines stays whole.
fn paragraph_chunks(text: &str, target: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = if rest.len() <= target {
            rest.len()
        } else {
            // `target` may fall inside a UTF-8 char; "\n\n" is ASCII, so search bytes.
            match rest.as_bytes()[target..]
                .windows(2)
                .position(|w| w == b"\n\n")
            {
                Some(i) => {
                    // Keep the whole run of newlines with the paragraph before the cut.
                    let mut end = target + i + 2;
                    while rest.as_bytes().get(end) == Some(&b'\n') {
                        end += 1;
                    }
                    end
                }
                None => rest.len(),
            }
        };
        let (chunk, tail) = rest.split_at(cut);
        rest = tail;
        Some(chunk)
    })
}

impl TokenStream {
    /// An empty stream.
    pub fn new() -> TokenStream {
        TokenStream::default()
    }

    /// A stream of `paths` in order, each read as its [`SourceKind`] says. Shards are
    /// checked against the tokenizer's vocabulary size.
    pub fn from_paths<P: AsRef<Path>>(paths: &[P], tokenizer: &Tokenizer) -> Result<TokenStream> {
        let mut s = TokenStream::new();
        for p in paths {
            s.add_path(p.as_ref(), tokenizer)?;
        }
        Ok(s)
    }

    /// Appends a source, a shard or a text file by its extension. A folder is an error
    /// ([`DatasetError::IsDirectory`]): which of its files are data is the caller's call.
    pub fn add_path(&mut self, path: &Path, tokenizer: &Tokenizer) -> Result<()> {
        let meta = std::fs::metadata(path).map_err(|e| DatasetError::io(path, e))?;
        if meta.is_dir() {
            return Err(DatasetError::IsDirectory {
                path: path.to_path_buf(),
            });
        }
        match SourceKind::of(path) {
            SourceKind::Shard => self.add_shard(path, tokenizer.vocab_size()),
            SourceKind::Text => self.add_text_file(path, tokenizer),
        }
    }

    /// Appends the ids of a token shard, after checking every id is below `vocab_size`.
    /// A shard with no ids is an error ([`DatasetError::EmptySource`]).
    pub fn add_shard(&mut self, path: &Path, vocab_size: usize) -> Result<()> {
        let shard = TokenShard::open(path)?;
        if shard.is_empty() {
            return Err(DatasetError::EmptySource {
                path: path.to_path_buf(),
            });
        }
        shard.check_vocab(vocab_size)?;
        let start = self.tokens.len();
        self.tokens.resize(start + shard.len(), 0);
        shard.read_window(0, &mut self.tokens[start..]);
        self.push_source(path, SourceKind::Shard, start);
        Ok(())
    }

    /// Appends a text file as one document (see [`encode_document`]).
    ///
    /// Empty or whitespace-only files are an error ([`DatasetError::EmptySource`]), and so
    /// are files that look binary ([`DatasetError::NotText`]: NUL bytes, or more than 1%
    /// of bytes not UTF-8). A few invalid bytes are replaced with U+FFFD and reported in
    /// [`TokenStream::warnings`]. A leading byte-order mark is dropped.
    pub fn add_text_file(&mut self, path: &Path, tokenizer: &Tokenizer) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| DatasetError::io(path, e))?;
        let text = self.decode_text(path, &bytes)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        if text.trim().is_empty() {
            return Err(DatasetError::EmptySource {
                path: path.to_path_buf(),
            });
        }
        if document_separator(tokenizer).is_none() && self.sources.is_empty() {
            self.warnings.push(
                "the tokenizer has neither BOS nor EOS: documents are joined with no separator"
                    .into(),
            );
        }
        let start = self.tokens.len();
        encode_document(text, tokenizer, &mut self.tokens).map_err(|source| {
            DatasetError::Tokenize {
                path: path.to_path_buf(),
                source,
            }
        })?;
        self.push_source(path, SourceKind::Text, start);
        Ok(())
    }

    /// UTF-8 text of a file, refusing binaries and decoding a few bad bytes lossily.
    fn decode_text<'a>(
        &mut self,
        path: &Path,
        bytes: &'a [u8],
    ) -> Result<std::borrow::Cow<'a, str>> {
        let not_text = |reason: String| DatasetError::NotText {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.contains(&0) {
            return Err(not_text(
                "it contains NUL bytes: a binary document (PDF, DOCX, ...) or UTF-16 text; \
                 extract or convert it to UTF-8 text first"
                    .into(),
            ));
        }
        if let Ok(s) = std::str::from_utf8(bytes) {
            return Ok(s.into());
        }
        let (invalid, first_bad) = invalid_utf8(bytes);
        if invalid as f64 > bytes.len() as f64 * MAX_INVALID_UTF8_FRACTION {
            return Err(not_text(format!(
                "{invalid} of its {} bytes are not UTF-8 (first at byte {first_bad}); \
                 convert it to UTF-8 first",
                bytes.len()
            )));
        }
        self.warnings.push(format!(
            "{}: {invalid} bytes are not valid UTF-8 (first at byte {first_bad}); \
             they were replaced with U+FFFD",
            path.display()
        ));
        Ok(String::from_utf8_lossy(bytes))
    }

    fn push_source(&mut self, path: &Path, kind: SourceKind, start: usize) {
        self.sources.push(SourceInfo {
            path: path.to_path_buf(),
            kind,
            tokens: self.tokens.len() - start,
        });
    }

    /// All tokens so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The tokens, for a [`super::Batcher`] or [`super::split_train_val`].
    pub fn into_tokens(self) -> Vec<u32> {
        self.tokens
    }

    /// Tokens in the stream.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the stream holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The sources added, in order.
    pub fn sources(&self) -> &[SourceInfo] {
        &self.sources
    }

    /// Problems that did not stop reading (lossy UTF-8 decoding, no separator token), each
    /// one line naming its file where there is one.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// How many bytes of `bytes` are not valid UTF-8, and the offset of the first (0 when
/// none): what the text decoders of the token stream and of ingestion report.
pub fn invalid_utf8(bytes: &[u8]) -> (usize, usize) {
    let (mut invalid, mut first_bad, mut offset) = (0usize, None, 0usize);
    for chunk in bytes.utf8_chunks() {
        offset += chunk.valid().len();
        if !chunk.invalid().is_empty() {
            first_bad.get_or_insert(offset);
            invalid += chunk.invalid().len();
        }
        offset += chunk.invalid().len();
    }
    (invalid, first_bad.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write_shard;

    /// A tiny llama2.c tokenizer: <unk>, <s>, </s>, the 256 byte tokens, and a few pieces.
    fn tokenizer(dir: &Path) -> Tokenizer {
        let mut pieces: Vec<(String, f32)> = vec![
            ("<unk>".into(), 0.0),
            ("\n<s>\n".into(), 0.0),
            ("\n</s>\n".into(), 0.0),
        ];
        pieces.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0)));
        for (i, p) in [" ", "h", "e", "l", "o", " h", "he", "ll", " hello"]
            .iter()
            .enumerate()
        {
            pieces.push((p.to_string(), -(i as f32)));
        }
        let mut d = 16i32.to_le_bytes().to_vec();
        for (t, s) in &pieces {
            d.extend_from_slice(&s.to_le_bytes());
            d.extend_from_slice(&(t.len() as i32).to_le_bytes());
            d.extend_from_slice(t.as_bytes());
        }
        let p = dir.join("tokenizer.bin");
        std::fs::write(&p, d).unwrap();
        Tokenizer::from_llama2c(&p, None).unwrap()
    }

    #[test]
    fn text_files_are_documents_starting_with_bos() {
        let d = nf_testkit::temp_dir("stream");
        let tok = tokenizer(&d);
        std::fs::write(d.join("a.txt"), "hello").unwrap();
        std::fs::write(d.join("b.md"), "\u{feff}hello\n\nhello").unwrap();
        let s = TokenStream::from_paths(&[d.join("a.txt"), d.join("b.md")], &tok).unwrap();
        let mut expected = vec![1];
        expected.extend(tok.encode("hello", false, false).unwrap());
        expected.push(1);
        expected.extend(tok.encode("hello\n\nhello", false, false).unwrap());
        assert_eq!(s.tokens(), expected);
        assert_eq!(s.sources().len(), 2);
        assert_eq!(s.sources()[0].tokens + s.sources()[1].tokens, s.len());
        assert!(s.warnings().is_empty());
    }

    #[test]
    fn shards_are_taken_as_they_are_and_checked() {
        let d = nf_testkit::temp_dir("stream");
        let tok = tokenizer(&d);
        write_shard(&d.join("train.bin"), &[1, 260, 265, 2], tok.vocab_size()).unwrap();
        std::fs::write(d.join("c.txt"), "hello").unwrap();
        let s = TokenStream::from_paths(&[d.join("train.bin"), d.join("c.txt")], &tok).unwrap();
        assert_eq!(s.tokens()[..4], [1, 260, 265, 2]);
        assert_eq!(s.sources()[0].kind, SourceKind::Shard);
        assert_eq!(s.sources()[1].kind, SourceKind::Text);

        write_shard(&d.join("other.bin"), &[1, 5000], 32000).unwrap();
        let e = TokenStream::from_paths(&[d.join("other.bin")], &tok).unwrap_err();
        assert!(
            matches!(e, DatasetError::IdOutOfVocab { id: 5000, .. }),
            "{e}"
        );
    }

    #[test]
    fn empty_binary_and_folder_sources_are_errors() {
        let d = nf_testkit::temp_dir("stream");
        let tok = tokenizer(&d);
        let mut s = TokenStream::new();
        std::fs::write(d.join("empty.txt"), " \n\n ").unwrap();
        let e = s.add_path(&d.join("empty.txt"), &tok).unwrap_err();
        assert!(matches!(e, DatasetError::EmptySource { .. }), "{e}");
        std::fs::write(d.join("doc.pdf"), b"%PDF-1.7\n\0\x01\x02").unwrap();
        let e = s.add_path(&d.join("doc.pdf"), &tok).unwrap_err();
        assert!(
            e.to_string().contains("doc.pdf") && e.to_string().contains("NUL"),
            "{e}"
        );
        std::fs::write(d.join("latin1.txt"), b"caf\xe9 \xe0 la cr\xe8me").unwrap();
        let e = s.add_path(&d.join("latin1.txt"), &tok).unwrap_err();
        assert!(matches!(e, DatasetError::NotText { .. }), "{e}");
        write_shard(&d.join("none.bin"), &[], 300).unwrap();
        let e = s.add_path(&d.join("none.bin"), &tok).unwrap_err();
        assert!(matches!(e, DatasetError::EmptySource { .. }), "{e}");
        let e = s.add_path(&d, &tok).unwrap_err();
        assert!(matches!(e, DatasetError::IsDirectory { .. }), "{e}");
        let e = s.add_path(&d.join("nope.txt"), &tok).unwrap_err();
        assert!(e.to_string().contains("nope.txt"), "{e}");
        assert!(s.is_empty() && s.sources().is_empty());
    }

    #[test]
    fn a_few_invalid_bytes_are_replaced_with_a_warning() {
        let d = nf_testkit::temp_dir("stream");
        let tok = tokenizer(&d);
        let mut text = "hello ".repeat(100).into_bytes();
        text.push(0xff);
        std::fs::write(d.join("x.txt"), &text).unwrap();
        let s = TokenStream::from_paths(&[d.join("x.txt")], &tok).unwrap();
        assert_eq!(s.warnings().len(), 1);
        assert!(s.warnings()[0].contains("x.txt") && s.warnings()[0].contains("byte 600"));
    }

    #[test]
    fn chunks_cut_after_blank_lines_and_rejoin_exactly() {
        let text = "aaaa\n\n\nbb\n\ncc é\n\nd";
        let chunks: Vec<&str> = paragraph_chunks(text, 3).collect();
        assert_eq!(chunks, ["aaaa\n\n\n", "bb\n\ncc é\n\n", "d"]);
        assert_eq!(chunks.concat(), text);
        assert_eq!(paragraph_chunks("no blank lines", 2).count(), 1);
        assert_eq!(paragraph_chunks("", 2).count(), 0);
    }
}
