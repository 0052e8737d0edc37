//! Byte-level BPE from a GGUF vocabulary (`tokenizer.ggml.model = gpt2`), run by the
//! Hugging Face `tokenizers` crate, plus the rule that lets long inputs be encoded in
//! chunks.
//!
//! A GGUF file names its pre-tokenizer (`tokenizer.ggml.pre`) instead of storing it; the
//! regexes below are llama.cpp's (src/llama-vocab.cpp), which in turn come from each
//! model's `tokenizer.json`. Each regex splits the text with matches kept as their own
//! pieces (Split, Isolated), in order, then bytes are mapped to GPT-2's printable chars
//! (ByteLevel without its own regex).

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};

/// GPT-2's pattern, used by gpt-2 and, after splitting digits, by smollm/starcoder.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Llama 3's pattern with the case-insensitive contractions spelled out, as llama.cpp
/// adapted it.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's: Llama 3's with single digits.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's: Qwen2's with combining marks kept inside words.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// How one `tokenizer.ggml.pre` value tokenizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreTokenizer {
    pub regexes: &'static [&'static str],
    /// A pre-token that is itself in the vocabulary is emitted whole (Llama 3).
    pub ignore_merges: bool,
    /// llama.cpp's default for `add_bos` when the file does not say.
    pub add_bos: bool,
}

impl PreTokenizer {
    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, or `None` if we do not know it.
    pub fn for_name(pre: &str) -> Option<PreTokenizer> {
        let p = |regexes, ignore_merges, add_bos| PreTokenizer {
            regexes,
            ignore_merges,
            add_bos,
        };
        Some(match pre {
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" => p(&[LLAMA3], true, true),
            "dbrx" | "smaug-bpe" | "chatglm-bpe" | "glm4" => p(&[LLAMA3], false, false),
            "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" => {
                p(&[QWEN2], false, false)
            }
            "qwen35" => p(&[QWEN35], false, false),
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion" | "exaone4"
            | "granite-docling" | "jina-es" | "jina-de" | "jina-v2-es" | "jina-v2-de"
            | "gigachat" | "mellum" | "a.x-4.0" => p(&[GPT2], false, false),
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" | "mellum2" => p(&[r"\p{N}", GPT2], false, false),
            "default" => p(
                &[
                    r"[\p{P}\$\+<=>\^~\|]+",
                    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
                    r"\p{N}+",
                    "[0-9][0-9][0-9]",
                ],
                false,
                false,
            ),
            _ => return None,
        })
    }

    /// Whether [`chunk_boundaries`] cuts are exact for these regexes (see there).
    pub fn chunkable(&self) -> bool {
        self.regexes
            .iter()
            .all(|r| [GPT2, LLAMA3, QWEN2, QWEN35, r"\p{N}"].contains(r))
    }

    fn build(&self) -> Result<PreTokenizerWrapper, String> {
        let mut steps: Vec<PreTokenizerWrapper> = Vec::new();
        for r in self.regexes {
            let pattern = SplitPattern::Regex((*r).to_string());
            let split = Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| format!("regex {r:?}: {e}"))?;
            steps.push(split.into());
        }
        steps.push(ByteLevel::new(false, false, false).into());
        Ok(Sequence::new(steps).into())
    }
}

/// Builds the BPE tokenizer from the GGUF vocabulary and merges (`"a b"` strings).
///
/// Merges whose parts or result are missing from the vocabulary are dropped: llama.cpp
/// never applies them either (it looks the result up), while `tokenizers` would refuse the
/// whole vocabulary.
pub(crate) fn build_gguf_bpe(
    tokens: &[String],
    merges: &[&str],
    pre: &PreTokenizer,
) -> Result<tokenizers::Tokenizer, String> {
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut pairs = Vec::with_capacity(merges.len());
    for m in merges {
        // llama.cpp splits at the first space after the first byte (a space can never
        // be inside a multi-byte char, so the byte search is safe).
        let Some(pos) = m.bytes().skip(1).position(|b| b == b' ').map(|p| p + 1) else {
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        let joined = format!("{a}{b}");
        if vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&joined) {
            pairs.push((a.to_string(), b.to_string()));
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| e.to_string())?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(pre.build()?));
    Ok(tok)
}

/// Byte offsets where `text` can be cut into chunks of about `target` bytes that tokenize,
/// one by one, exactly as the whole text does (the last offset is `text.len()`).
///
/// A cut goes right after a `\n` that follows a non-whitespace char and precedes an ASCII
/// letter. For the GPT-2, Llama 3 and Qwen patterns no regex match can run from the `\n`
/// into the letter (letters are matched by `\p{L}+` alternatives whose optional prefix is
/// a space or excludes `\r\n`), and since the `\n` is a whitespace run of one char the
/// `\s+(?!\S)` lookahead gives the same one-char piece whether a letter or the end of the
/// chunk follows. BPE merges never cross pre-token boundaries, so the ids are identical.
pub(crate) fn chunk_boundaries(text: &str, target: usize) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut cuts = Vec::new();
    let mut last = 0;
    let mut search = target;
    while search < bytes.len() {
        let Some(off) = bytes[search..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let nl = search + off;
        search = nl + 1;
        let next_is_letter = bytes.get(nl + 1).is_some_and(u8::is_ascii_alphabetic);
        let prev_is_text = text[last..nl]
            .chars()
            .next_back()
            .is_some_and(|c| !c.is_whitespace());
        if next_is_letter && prev_is_text {
            cuts.push(nl + 1);
            last = nl + 1;
            search = last + target;
        }
    }
    cuts.push(bytes.len());
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_only_after_a_lone_newline_before_a_letter() {
        let text = "aaaa\nbbbb  \ncccc\n\ndddd.\neeee";
        let cuts = chunk_boundaries(text, 1);
        let pieces: Vec<&str> = cuts
            .iter()
            .scan(0, |start, &end| {
                let s = &text[*start..end];
                *start = end;
                Some(s)
            })
            .collect();
        assert_eq!(pieces, ["aaaa\n", "bbbb  \ncccc\n\ndddd.\n", "eeee"]);
    }

    #[test]
    fn known_pre_tokenizers_build() {
        for name in ["llama-bpe", "qwen2", "qwen35", "smollm", "gpt-2", "default"] {
            let pre = PreTokenizer::for_name(name).unwrap();
            pre.build().unwrap();
        }
        assert!(PreTokenizer::for_name("no-such-pre").is_none());
    }
}
