//! llama2.c's `tokenizer.bin`: a SentencePiece vocabulary exported without token types.
//!
//! Layout (little-endian): `i32 max_token_length`, then for each token `f32 score`,
//! `i32 len`, `len` bytes. The file does not store the vocabulary size (run.c takes it from
//! the model header), so we read `vocab_size_hint` tokens, or up to the end of the file.
//!
//! The export replaced SentencePiece's `▁` with a plain space and spelled BOS/EOS as
//! `"\n<s>\n"` / `"\n</s>\n"`; we undo both so the pieces look like every other
//! SentencePiece vocabulary and the same [`Spm`] code encodes them. Ids 0, 1, 2 are
//! `<unk>`, BOS and EOS, and `<0xNN>` pieces are byte fallbacks.

use std::path::Path;

use super::spm::Spm;
use super::vocab::{PieceStyle, TokenAttr, Vocab, parse_byte_token};
use super::{Engine, Parts, Tokenizer, specials_from_types};
use crate::error::{Result, TokenizerError};

const FORMAT: &str = "llama2.c tokenizer.bin";

impl Tokenizer {
    /// Loads a llama2.c `tokenizer.bin`. `vocab_size_hint` is the model's vocabulary size
    /// (from its checkpoint header); without it every token in the file is read.
    pub fn from_llama2c(
        path: impl AsRef<Path>,
        vocab_size_hint: Option<usize>,
    ) -> Result<Tokenizer> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|e| TokenizerError::io(path, e))?;
        let (pieces, scores) = parse(&data, vocab_size_hint)
            .map_err(|reason| TokenizerError::corrupt(path, FORMAT, reason))?;

        let mut tokens = Vec::with_capacity(pieces.len());
        let mut attrs = Vec::with_capacity(pieces.len());
        for (id, piece) in pieces.into_iter().enumerate() {
            let (text, attr) = match id {
                0 => (piece, TokenAttr::Unknown),
                1 | 2 => (piece.trim().to_string(), TokenAttr::Control),
                _ if parse_byte_token(&piece).is_some() => (piece, TokenAttr::Byte),
                _ => (piece.replace(' ', "▁"), TokenAttr::Normal),
            };
            tokens.push(text);
            attrs.push(attr);
        }
        let n = tokens.len() as u32;
        let spm = Spm::new(&tokens, &attrs, scores, Some(0), true);
        let vocab = Vocab::new(tokens, attrs);
        let specials = specials_from_types(&vocab, |_| false);
        Ok(Tokenizer::from_parts(Parts {
            kind: "llama2c-spm".to_string(),
            vocab,
            engine: Engine::Spm(Box::new(spm)),
            style: PieceStyle::SentencePiece,
            specials,
            bos: (n > 1).then_some(1),
            eos: (n > 2).then_some(2),
            extra_eos: Vec::new(),
            add_bos: true,
            strip_first_space: true,
            chat_template: None,
            origin: super::Origin::Llama2c,
        }))
    }
}

/// Reads the pieces and scores; the error says what was wrong and where.
fn parse(data: &[u8], hint: Option<usize>) -> Result<(Vec<String>, Vec<f32>), String> {
    let mut pos = 0usize;
    let take = |n: usize, what: &str, pos: &mut usize| -> Result<&[u8], String> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| {
                format!(
                    "truncated while reading {what} at byte {pos} (file is {} bytes)",
                    data.len()
                )
            })?;
        let s = &data[*pos..end];
        *pos = end;
        Ok(s)
    };
    let max_len = i32::from_le_bytes(take(4, "the header", &mut pos)?.try_into().unwrap());
    if max_len <= 0 || max_len > 1 << 16 {
        return Err(format!("max_token_length is {max_len}"));
    }
    if let Some(h) = hint
        && h.checked_mul(8).is_none_or(|b| b > data.len())
    {
        return Err(format!("a vocabulary of {h} tokens cannot fit in the file"));
    }
    let mut pieces = Vec::with_capacity(hint.unwrap_or(data.len() / 12));
    let mut scores = Vec::with_capacity(pieces.capacity());
    while hint.map_or(pos < data.len(), |h| pieces.len() < h) {
        let what = format!("token {}", pieces.len());
        let head = take(8, &what, &mut pos)?;
        let score = f32::from_le_bytes(head[..4].try_into().unwrap());
        let len = i32::from_le_bytes(head[4..].try_into().unwrap());
        if len < 0 || len > max_len {
            return Err(format!(
                "{what} has length {len} (max_token_length is {max_len})"
            ));
        }
        let bytes = take(len as usize, &what, &mut pos)?;
        pieces.push(String::from_utf8_lossy(bytes).into_owned());
        scores.push(score);
    }
    if pieces.is_empty() {
        return Err("no tokens".to_string());
    }
    Ok((pieces, scores))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(tokens: &[(&str, f32)]) -> Vec<u8> {
        let mut d = 8i32.to_le_bytes().to_vec();
        for (t, s) in tokens {
            d.extend_from_slice(&s.to_le_bytes());
            d.extend_from_slice(&(t.len() as i32).to_le_bytes());
            d.extend_from_slice(t.as_bytes());
        }
        d
    }

    #[test]
    fn reads_to_the_end_or_to_the_hint() {
        let d = file(&[
            ("<unk>", 0.0),
            ("\n<s>\n", 0.0),
            ("\n</s>\n", 0.0),
            (" a", -1.0),
        ]);
        assert_eq!(parse(&d, None).unwrap().0.len(), 4);
        assert_eq!(parse(&d, Some(3)).unwrap().0.len(), 3);
        assert!(parse(&d, Some(5)).is_err());
    }

    #[test]
    fn truncation_and_bad_lengths_are_errors() {
        let d = file(&[("<unk>", 0.0), ("abc", 0.0)]);
        for cut in [2, 5, d.len() - 1] {
            let err = parse(&d[..cut], None).unwrap_err();
            assert!(err.contains("truncated"), "{err}");
        }
        let mut bad = file(&[("<unk>", 0.0)]);
        bad[8..12].copy_from_slice(&(-3i32).to_le_bytes());
        assert!(parse(&bad, None).unwrap_err().contains("length -3"));
    }
}
