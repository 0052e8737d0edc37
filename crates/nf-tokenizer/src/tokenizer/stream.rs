//! Streaming detokenization: text deltas as ids arrive.

use super::Tokenizer;

/// Turns a growing list of ids into text deltas. Decoding is done on a short window that
/// starts inside the prompt, so tokenizer rules about the first piece (SentencePiece drops
/// its leading space) apply exactly as they would to the whole text, and a character split
/// across tokens is held back until it is complete.
pub struct TextStream<'a> {
    tok: &'a Tokenizer,
    ids: Vec<u32>,
    base: usize,
    emitted: usize,
}

impl<'a> TextStream<'a> {
    /// A stream continuing `prompt` (the ids already decoded and shown).
    pub fn new(tok: &'a Tokenizer, prompt: &[u32]) -> TextStream<'a> {
        let ids = prompt[prompt.len().saturating_sub(4)..].to_vec();
        let base = tok.decode(&ids).len();
        TextStream {
            tok,
            ids,
            base,
            emitted: 0,
        }
    }

    /// The text `id` adds (possibly empty while a multi-byte character is incomplete).
    pub fn push(&mut self, id: u32) -> String {
        self.ids.push(id);
        let text = self.tok.decode(&self.ids);
        if text.ends_with('\u{FFFD}') {
            return String::new();
        }
        self.take(&text)
    }

    /// Whatever is still held back.
    pub fn finish(&mut self) -> String {
        let text = self.tok.decode(&self.ids);
        self.take(&text)
    }

    fn take(&mut self, text: &str) -> String {
        let start = (self.base + self.emitted).min(text.len());
        if !text.is_char_boundary(start) {
            return String::new();
        }
        let delta = text[start..].to_string();
        self.emitted += delta.len();
        delta
    }
}
