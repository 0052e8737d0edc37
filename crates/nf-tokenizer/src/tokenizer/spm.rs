//! SentencePiece BPE with scores, as llama.cpp's `llm_tokenizer_spm` does it.
//!
//! The text (spaces already turned into `▁`) starts as one symbol per UTF-8 char. Then,
//! repeatedly, the adjacent pair whose concatenation is a vocabulary piece with the highest
//! score is merged (the leftmost pair on equal scores). Symbols that end up outside the
//! vocabulary are spelled with byte-fallback tokens `<0xNN>`.
//!
//! Symbols live in a doubly linked list over one vector, and candidate pairs in a binary
//! heap; a popped pair whose symbols changed since it was pushed is stale and skipped. This
//! makes a line of n chars O(n log n) instead of the O(n²) rescan of llama2.c's `run.c`,
//! with the same result: both always merge the best-scoring pair present.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::fxhash::FxHashMap;
use super::vocab::{TokenAttr, parse_byte_token};

/// The SentencePiece model: which pieces merges may produce, and their scores.
#[derive(Debug)]
pub(crate) struct Spm {
    /// Pieces that plain text can turn into: normal and user-defined tokens. Control,
    /// unknown, unused and byte tokens are left out so that, say, the text `<s>` never
    /// merges into BOS (SentencePiece never produces them from text either).
    pieces: FxHashMap<Box<str>, u32>,
    pub(crate) scores: Vec<f32>,
    max_piece_len: usize,
    byte_ids: [Option<u32>; 256],
    pub(crate) unk: Option<u32>,
    /// Prepend `▁` to text that starts the input or follows a special token.
    pub add_space_prefix: bool,
    /// No mergeable piece longer than one byte contains `\n`, so a newline is a hard
    /// boundary and each line can be merged on its own with exactly the same result.
    split_lines: bool,
    /// No mergeable piece has a `▁` right after another char (true of Llama's and
    /// Phi-3's vocabularies: `▁` only starts pieces or follows `▁`), so the text can be cut
    /// before every `▁` that follows another char: no merge can span such a cut, and
    /// merges on one side never change the candidates on the other. Words then repeat,
    /// and their ids are cached for the length of one `encode` call.
    split_words: bool,
}

/// Inputs shorter than this are merged without a word cache.
const CACHE_MIN_BYTES: usize = 512;
/// Longer words are rare; they are merged every time rather than cached.
const CACHE_MAX_WORD: usize = 64;

impl Spm {
    pub fn new(
        tokens: &[String],
        attrs: &[TokenAttr],
        scores: Vec<f32>,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Self {
        let mut pieces: FxHashMap<Box<str>, u32> = FxHashMap::default();
        let mut byte_ids = [None; 256];
        let mut max_piece_len = 0;
        for (i, (text, &attr)) in tokens.iter().zip(attrs).enumerate() {
            match attr {
                TokenAttr::Normal | TokenAttr::UserDefined if !text.is_empty() => {
                    pieces.entry(text.as_str().into()).or_insert(i as u32);
                    max_piece_len = max_piece_len.max(text.len());
                }
                TokenAttr::Byte => {
                    if let Some(b) = parse_byte_token(text) {
                        byte_ids[b as usize].get_or_insert(i as u32);
                    }
                }
                _ => {}
            }
        }
        // Vocabularies without `<0xNN>` tokens spell a byte with the one-byte piece, as
        // llama.cpp's byte_to_token falls back to.
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            if slot.is_none() && b < 0x80 {
                *slot = pieces.get(&*(b as u8 as char).to_string()).copied();
            }
        }
        let split_lines = !pieces.keys().any(|k| k.len() > 1 && k.contains('\n'));
        let split_words = !pieces.keys().any(|k| {
            let mut prev = None;
            k.chars().any(|c| {
                let glued = c == '▁' && prev.is_some_and(|p| p != '▁');
                prev = Some(c);
                glued
            })
        });
        Spm {
            pieces,
            scores,
            max_piece_len,
            byte_ids,
            unk,
            add_space_prefix,
            split_lines,
            split_words,
        }
    }

    /// Tokenizes one fragment of plain text (no special tokens in it) and appends the ids.
    pub fn encode(&self, text: &str, add_prefix: bool, out: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if add_prefix {
            escaped.push('▁');
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { '▁' } else { c });
        }
        let mut work = Work::default();
        if escaped.len() < CACHE_MIN_BYTES {
            self.for_each_segment(&escaped, |seg| self.encode_escaped(seg, &mut work, out));
            return;
        }
        // Ids of each word already merged in this call: ranges into `arena`.
        let mut cache: FxHashMap<&str, (u32, u32)> = FxHashMap::default();
        let mut arena: Vec<u32> = Vec::new();
        self.for_each_segment(&escaped, |seg| {
            if let Some(&(a, b)) = cache.get(seg) {
                out.extend_from_slice(&arena[a as usize..b as usize]);
                return;
            }
            let start = out.len();
            self.encode_escaped(seg, &mut work, out);
            if seg.len() <= CACHE_MAX_WORD {
                let a = arena.len() as u32;
                arena.extend_from_slice(&out[start..]);
                cache.insert(seg, (a, arena.len() as u32));
            }
        });
    }

    /// Calls `f` on the pieces of `text` that can be merged independently: lines when
    /// `split_lines`, words when `split_words` (see the fields), else the whole text.
    fn for_each_segment<'t>(&self, text: &'t str, mut f: impl FnMut(&'t str)) {
        const SPACE: &[u8] = "▁".as_bytes();
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if self.split_lines && bytes[i] == b'\n' {
                f(&text[start..=i]);
                start = i + 1;
                i += 1;
            } else if self.split_words
                && bytes[i..].starts_with(SPACE)
                && i > start
                && !bytes[..i].ends_with(SPACE)
            {
                f(&text[start..i]);
                start = i;
                i += SPACE.len();
            } else {
                i += 1;
            }
        }
        if start < bytes.len() {
            f(&text[start..]);
        }
    }

    /// The whole text merged at once, without line or word segmentation or caching: the
    /// reference the segmented path must agree with.
    #[cfg(test)]
    pub(crate) fn encode_unsegmented(&self, text: &str, add_prefix: bool, out: &mut Vec<u32>) {
        let prefix = if add_prefix { "▁" } else { "" };
        let escaped = format!("{prefix}{}", text.replace(' ', "▁"));
        self.encode_escaped(&escaped, &mut Work::default(), out);
    }

    fn encode_escaped(&self, text: &str, work: &mut Work, out: &mut Vec<u32>) {
        let Work { symbols, heap } = work;
        symbols.clear();
        heap.clear();
        for (i, (start, c)) in text.char_indices().enumerate() {
            symbols.push(Symbol {
                start: start as u32,
                len: c.len_utf8() as u32,
                prev: i as i32 - 1,
                next: i as i32 + 1,
            });
        }
        let Some(last) = symbols.last_mut() else {
            return;
        };
        last.next = -1;
        for i in 1..symbols.len() {
            self.push_pair(text, symbols, heap, i as i32 - 1, i as i32);
        }

        while let Some(pair) = heap.pop() {
            let (l, r) = (pair.left as usize, pair.right as usize);
            let (left, right) = (symbols[l], symbols[r]);
            // Stale: one side was merged away or grew since this pair was pushed.
            if left.len == 0 || right.len == 0 || left.len + right.len != pair.len {
                continue;
            }
            symbols[l].len += right.len;
            symbols[l].next = right.next;
            symbols[r].len = 0;
            if right.next >= 0 {
                symbols[right.next as usize].prev = l as i32;
            }
            self.push_pair(text, symbols, heap, left.prev, l as i32);
            self.push_pair(text, symbols, heap, l as i32, right.next);
        }

        let mut i = 0i32;
        while i >= 0 {
            let s = symbols[i as usize];
            let piece = &text[s.start as usize..(s.start + s.len) as usize];
            match self.pieces.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        if let Some(id) = self.byte_ids[b as usize].or(self.unk) {
                            out.push(id);
                        }
                    }
                }
            }
            i = s.next;
        }
    }

    fn push_pair(
        &self,
        text: &str,
        symbols: &[Symbol],
        heap: &mut BinaryHeap<Pair>,
        left: i32,
        right: i32,
    ) {
        if left < 0 || right < 0 {
            return;
        }
        let (l, r) = (symbols[left as usize], symbols[right as usize]);
        let len = l.len + r.len;
        if len as usize > self.max_piece_len {
            return;
        }
        let joined = &text[l.start as usize..(l.start + len) as usize];
        if let Some(&id) = self.pieces.get(joined) {
            heap.push(Pair {
                score: self.scores.get(id as usize).copied().unwrap_or(0.0),
                left: left as u32,
                right: right as u32,
                len,
            });
        }
    }
}

/// Buffers reused across the lines of one input.
#[derive(Default)]
struct Work {
    symbols: Vec<Symbol>,
    heap: BinaryHeap<Pair>,
}

/// A span of the text; `len == 0` once merged into its left neighbour.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, Clone, Copy)]
struct Pair {
    score: f32,
    left: u32,
    right: u32,
    /// Bytes of the merged piece, to detect stale entries.
    len: u32,
}

impl Ord for Pair {
    /// Higher score first, then the leftmost pair. Scores compare as C++ floats do in
    /// llama.cpp (so -0.0 equals 0.0 and the position decides).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .partial_cmp(&other.score)
            .unwrap_or(Ordering::Equal)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary: byte tokens for `a`, `b`, `\n`, and pieces with scores.
    fn toy() -> Spm {
        let tokens: Vec<String> = [
            "<unk>", "<0x61>", "<0x62>", "<0x0A>", "▁", "a", "b", "ab", "▁ab", "bb",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut attrs = vec![TokenAttr::Normal; tokens.len()];
        attrs[0] = TokenAttr::Unknown;
        attrs[1..4].fill(TokenAttr::Byte);
        let scores = vec![0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -3.5];
        Spm::new(&tokens, &attrs, scores, Some(0), true)
    }

    #[test]
    fn merges_best_pair_first_and_falls_back_to_bytes() {
        let spm = toy();
        let mut out = Vec::new();
        // "▁abb": candidates ▁a (absent), ab (-4), bb (-3.5): bb wins, then ▁ a bb.
        spm.encode("abb", true, &mut out);
        assert_eq!(out, [4, 5, 9]);
        out.clear();
        // "ab": ab (-4) then ▁ab (-5).
        spm.encode("ab", true, &mut out);
        assert_eq!(out, [8]);
        out.clear();
        // "c" is not in the vocabulary and has no byte token: <unk>. The newline is a byte.
        spm.encode("a\nc", false, &mut out);
        assert_eq!(out, [5, 3, 0]);
    }

    #[test]
    fn empty_text_gives_no_tokens() {
        let mut out = Vec::new();
        toy().encode("", false, &mut out);
        assert!(out.is_empty());
    }
}
