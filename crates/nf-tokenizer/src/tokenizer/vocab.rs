//! The id ⇄ text table shared by every tokenizer kind, each token's type, and how a
//! token's text turns back into bytes.

use super::fxhash::FxHashMap;

/// What a token is, in GGUF's `tokenizer.ggml.token_type` terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenAttr {
    /// Ordinary text (type 1; also any type we do not know).
    Normal,
    /// `<unk>` (type 2).
    Unknown,
    /// BOS, EOS, chat markers: never produced from plain text (type 3).
    Control,
    /// Added by the model's authors and always matched as a unit (type 4).
    UserDefined,
    /// Reserved slots that no text produces (type 5).
    Unused,
    /// SentencePiece byte fallback `<0xNN>` (type 6).
    Byte,
}

impl TokenAttr {
    pub fn from_gguf_type(t: i64) -> Self {
        match t {
            2 => TokenAttr::Unknown,
            3 => TokenAttr::Control,
            4 => TokenAttr::UserDefined,
            5 => TokenAttr::Unused,
            6 => TokenAttr::Byte,
            _ => TokenAttr::Normal,
        }
    }

    /// Tokens that decode to nothing: they mark structure, not text.
    pub fn is_silent(self) -> bool {
        matches!(
            self,
            TokenAttr::Control | TokenAttr::Unknown | TokenAttr::Unused
        )
    }
}

/// How the text of a normal token maps to the bytes it stands for.
#[derive(Debug, Clone)]
pub(crate) enum PieceStyle {
    /// SentencePiece: `▁` is a space, `<0xNN>` byte tokens are single bytes.
    SentencePiece,
    /// GPT-2 byte-level BPE: every char of the token stands for one byte.
    ByteLevel(Box<ByteLevelTable>),
    /// The token text is the text (WordLevel and other simple vocabularies).
    Raw,
}

/// The vocabulary: token texts by id, ids by text, and token types.
#[derive(Debug, Default)]
pub(crate) struct Vocab {
    pub tokens: Vec<String>,
    pub attrs: Vec<TokenAttr>,
    pub ids: FxHashMap<String, u32>,
}

impl Vocab {
    /// Builds the table; on duplicate texts the lower id wins, as a lookup by text must
    /// return one id (llama.cpp refuses such files; we prefer to load them).
    pub fn new(tokens: Vec<String>, attrs: Vec<TokenAttr>) -> Self {
        debug_assert_eq!(tokens.len(), attrs.len());
        let mut ids = FxHashMap::default();
        ids.reserve(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            if !t.is_empty() {
                ids.entry(t.clone()).or_insert(i as u32);
            }
        }
        Vocab { tokens, attrs, ids }
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn text(&self, id: u32) -> Option<&str> {
        self.tokens
            .get(id as usize)
            .map(String::as_str)
            .filter(|t| !t.is_empty())
    }

    pub fn attr(&self, id: u32) -> Option<TokenAttr> {
        self.attrs.get(id as usize).copied()
    }

    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The bytes one token stands for: empty for control, unknown and unused tokens and
    /// for ids outside the vocabulary; user-defined tokens give their text.
    pub fn token_bytes(&self, id: u32, style: &PieceStyle, out: &mut Vec<u8>) {
        let (Some(text), Some(attr)) = (self.text(id), self.attr(id)) else {
            return;
        };
        match attr {
            a if a.is_silent() => {}
            TokenAttr::UserDefined => out.extend_from_slice(text.as_bytes()),
            TokenAttr::Byte => match parse_byte_token(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            _ => match style {
                PieceStyle::SentencePiece => {
                    for part in text.split('▁').enumerate() {
                        if part.0 > 0 {
                            out.push(b' ');
                        }
                        out.extend_from_slice(part.1.as_bytes());
                    }
                }
                PieceStyle::ByteLevel(table) => table.decode_into(text, out),
                PieceStyle::Raw => out.extend_from_slice(text.as_bytes()),
            },
        }
    }
}

/// `<0x0A>` → `Some(0x0A)`.
pub(crate) fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// GPT-2's reversible byte → char map: printable Latin-1 bytes stand for themselves, the
/// other 68 bytes are shifted, in order, to U+0100.. so that every byte is a visible char.
pub(crate) fn gpt2_byte_chars() -> [char; 256] {
    let mut chars = ['\0'; 256];
    let mut shifted = 0u32;
    for (b, slot) in chars.iter_mut().enumerate() {
        let code = if matches!(b, 33..=126 | 161..=172 | 174..=255) {
            b as u32
        } else {
            shifted += 1;
            255 + shifted
        };
        *slot = char::from_u32(code).unwrap_or('\u{FFFD}');
    }
    chars
}

/// The inverse of [`gpt2_byte_chars`], for decoding.
#[derive(Debug, Clone)]
pub(crate) struct ByteLevelTable {
    /// Indexed by char code (all mapped chars are below U+0144).
    char_to_byte: Vec<Option<u8>>,
}

impl ByteLevelTable {
    pub fn new() -> Self {
        let mut char_to_byte = vec![None; 0x200];
        for (b, c) in gpt2_byte_chars().iter().enumerate() {
            char_to_byte[*c as usize] = Some(b as u8);
        }
        ByteLevelTable { char_to_byte }
    }

    /// Maps each char back to its byte; chars outside the map (never in a well-formed
    /// byte-level vocabulary) are kept as their UTF-8.
    pub fn decode_into(&self, text: &str, out: &mut Vec<u8>) {
        for c in text.chars() {
            match self.char_to_byte.get(c as usize).copied().flatten() {
                Some(b) => out.push(b),
                None => {
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_gpt2s() {
        let t = ByteLevelTable::new();
        let mut out = Vec::new();
        // `Ġ` is the space, `Ċ` the newline, `ĉ` the tab in GPT-2's map.
        t.decode_into("ĠhelloĊĉ!", &mut out);
        assert_eq!(out, b" hello\n\t!");
    }

    #[test]
    fn parses_byte_tokens() {
        assert_eq!(parse_byte_token("<0x0A>"), Some(10));
        assert_eq!(parse_byte_token("<0xFF>"), Some(255));
        assert_eq!(parse_byte_token("<0x0>"), None);
        assert_eq!(parse_byte_token("hello"), None);
    }
}
