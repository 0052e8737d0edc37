//! The targets, one per parser a hostile file or request reaches. Each feeds its input
//! through the entry point a user's input takes, and where a parse succeeds, goes on to
//! use the result the way the product does (a forward pass, an encode, a resume load), so
//! a value that parses but breaks a later assumption is found too.

mod documents;
mod formats;
mod state;
mod studio;
mod tokenizers;

use std::path::{Path, PathBuf};

use crate::{Harness, Target, Verdict};

/// Every target, in the order reports list them.
pub const ALL: &[Target] = &[
    formats::GGUF,
    formats::SAFETENSORS,
    formats::LLAMA2C,
    tokenizers::TOKENIZER_JSON,
    tokenizers::GGUF_VOCAB,
    tokenizers::LLAMA2C_TOKENIZER,
    documents::DOCX,
    documents::PDF,
    documents::HTML,
    documents::JSONL,
    state::CHECKPOINT,
    state::AUDIT,
    studio::STUDIO,
];

/// Writes `bytes` to `path`, replacing what was there. A failure here is the harness's,
/// not the parser's, so it panics with the path.
fn put(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("harness: {}: {e}", path.display()));
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Accepted when `r` is `Ok`.
fn verdict<T, E>(r: &Result<T, E>) -> Verdict {
    if r.is_ok() {
        Verdict::Accepted
    } else {
        Verdict::Refused
    }
}

/// An input that names one of several files: the first byte picks which (modulo the
/// count), the rest is its content. Mutations mostly change the content; now and then
/// they change the pick, which feeds one file's bytes to another's parser.
fn tagged(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(content.len() + 1);
    v.push(tag);
    v.extend_from_slice(content);
    v
}

/// `(pick, content)` of a [`tagged`] input over `n` files; an empty input picks file 0
/// with no content.
fn untag(input: &[u8], n: usize) -> (usize, &[u8]) {
    match input.split_first() {
        Some((&t, rest)) => (t as usize % n, rest),
        None => (0, &[]),
    }
}

/// Files that a parser reads together (a checkpoint, an HF folder, an audit folder), fed
/// one at a time: an input is a [`tagged`] file, and the others keep their seed content.
struct FileSet {
    names: &'static [&'static str],
    files: Vec<Vec<u8>>,
}

impl FileSet {
    /// The files `names` as they are in `dir`.
    fn read(dir: &Path, names: &'static [&'static str]) -> Result<FileSet, String> {
        let files = names
            .iter()
            .map(|n| read(&dir.join(n)))
            .collect::<Result<_, _>>()?;
        Ok(FileSet { names, files })
    }

    /// Each file whole, tagged with its index.
    fn seeds(&self) -> Vec<Vec<u8>> {
        (0..self.files.len())
            .map(|i| tagged(i as u8, &self.files[i]))
            .collect()
    }

    /// The file `input` picks, and every file's name and bytes with it in place.
    fn contents<'a>(&'a self, input: &'a [u8]) -> (usize, Vec<(&'static str, &'a [u8])>) {
        let (pick, content) = untag(input, self.files.len());
        let files = (self.names.iter().zip(&self.files).enumerate())
            .map(|(i, (&name, seed))| (name, if i == pick { content } else { &seed[..] }))
            .collect();
        (pick, files)
    }

    /// Writes the files for `input` into `dir`; returns the pick.
    fn write(&self, input: &[u8], dir: &Path) -> usize {
        let (pick, files) = self.contents(input);
        for (name, bytes) in files {
            put(&dir.join(name), bytes);
        }
        pick
    }
}

/// A target whose input is one file: written to `file`, then handed to `parse`.
struct FileHarness {
    seeds: Vec<Vec<u8>>,
    dictionary: &'static [&'static [u8]],
    file: PathBuf,
    parse: fn(&Path) -> Verdict,
}

impl Harness for FileHarness {
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        self.dictionary
    }
    fn run(&mut self, input: &[u8]) -> Verdict {
        put(&self.file, input);
        (self.parse)(&self.file)
    }
}
