//! Splitting text on special tokens before the model sees it.
//!
//! Chat prompts contain markers such as `<|im_start|>` that must become one token id each,
//! while the same characters in a user's document must stay plain text. Both llama.cpp
//! and Hugging Face `tokenizers` therefore cut the input at special-token matches first and
//! tokenize only the text between them. We do the same for every tokenizer kind, so the
//! rule is written once:
//!
//! - "parse-special" tokens (control and unknown tokens, HF added tokens marked `special`)
//!   are matched only when the caller asks for it (`parse_special = true`);
//! - "always" tokens (GGUF user-defined tokens) are matched in any case, as llama.cpp does,
//!   because the model was trained to see them as units even in plain text.
//!
//! Matching is leftmost-longest, like the Aho-Corasick matcher in `tokenizers`.

/// One token the splitter recognizes.
#[derive(Debug, Clone)]
pub(crate) struct SpecialToken {
    pub text: String,
    pub id: u32,
    /// Matched even when the caller did not ask to parse special tokens.
    pub always: bool,
    /// Whitespace before the token is dropped (HF `lstrip`).
    pub lstrip: bool,
    /// Whitespace after the token is dropped (HF `rstrip`).
    pub rstrip: bool,
}

/// A piece of the input: text to run through the model, or a special token's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Token(u32),
}

#[derive(Debug, Default)]
pub(crate) struct SpecialSplitter {
    /// Sorted longest first, so the first match at a position is the longest.
    tokens: Vec<SpecialToken>,
    /// For each first byte, the indices into `tokens` that start with it.
    by_first: Vec<Vec<u32>>,
    /// Whether any token (resp. any "always" token) starts with this byte; lets the scan
    /// skip ordinary bytes with one table lookup.
    any_first: Vec<bool>,
    always_first: Vec<bool>,
}

impl SpecialSplitter {
    pub fn new(mut tokens: Vec<SpecialToken>) -> Self {
        tokens.retain(|t| !t.text.is_empty());
        tokens.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        let mut by_first = vec![Vec::new(); 256];
        let mut any_first = vec![false; 256];
        let mut always_first = vec![false; 256];
        for (i, t) in tokens.iter().enumerate() {
            let b = t.text.as_bytes()[0] as usize;
            by_first[b].push(i as u32);
            any_first[b] = true;
            always_first[b] |= t.always;
        }
        SpecialSplitter {
            tokens,
            by_first,
            any_first,
            always_first,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Cuts `text` into pieces. Empty text pieces are left out, as llama.cpp does.
    pub fn split<'a>(&self, text: &'a str, parse_special: bool, out: &mut Vec<Piece<'a>>) {
        let table = if parse_special {
            &self.any_first
        } else {
            &self.always_first
        };
        let bytes = text.as_bytes();
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            if !table[bytes[i] as usize] {
                i += 1;
                continue;
            }
            // A special token's first byte is a UTF-8 leading byte, so `i` is a char
            // boundary whenever a token matches here.
            let found = self.by_first[bytes[i] as usize]
                .iter()
                .map(|&k| &self.tokens[k as usize])
                .find(|t| (parse_special || t.always) && bytes[i..].starts_with(t.text.as_bytes()));
            let Some(tok) = found else {
                i += 1;
                continue;
            };
            let mut left = &text[start..i];
            if tok.lstrip {
                left = left.trim_end();
            }
            if !left.is_empty() {
                out.push(Piece::Text(left));
            }
            out.push(Piece::Token(tok.id));
            i += tok.text.len();
            if tok.rstrip {
                let rest = &text[i..];
                i += rest.len() - rest.trim_start().len();
            }
            start = i;
        }
        if start < text.len() {
            out.push(Piece::Text(&text[start..]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(text: &str, id: u32, always: bool) -> SpecialToken {
        SpecialToken {
            text: text.into(),
            id,
            always,
            lstrip: false,
            rstrip: false,
        }
    }

    #[test]
    fn splits_leftmost_longest_and_respects_parse_special() {
        let s = SpecialSplitter::new(vec![
            tok("<|a|>", 1, false),
            tok("<|a|><|a|>", 2, false),
            tok("<u>", 3, true),
        ]);
        let mut out = Vec::new();
        s.split("x<|a|><|a|>y<u>z<|a|>", true, &mut out);
        assert_eq!(
            out,
            [
                Piece::Text("x"),
                Piece::Token(2),
                Piece::Text("y"),
                Piece::Token(3),
                Piece::Text("z"),
                Piece::Token(1)
            ]
        );
        out.clear();
        s.split("x<|a|>y<u>", false, &mut out);
        assert_eq!(out, [Piece::Text("x<|a|>y"), Piece::Token(3)]);
    }

    #[test]
    fn strips_whitespace_where_asked() {
        let mut t = tok("<e>", 7, false);
        t.lstrip = true;
        t.rstrip = true;
        let s = SpecialSplitter::new(vec![t]);
        let mut out = Vec::new();
        s.split("a  <e> \n b", true, &mut out);
        assert_eq!(out, [Piece::Text("a"), Piece::Token(7), Piece::Text("b")]);
    }
}
