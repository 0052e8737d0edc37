//! Byte-level BPE (GPT-2 style): GGUF vocabularies with `tokenizer.ggml.model = gpt2`,
//! and `tokenizer.json` files of the same shape.
//!
//! A GGUF file names its pre-tokenizer (`tokenizer.ggml.pre`) instead of storing it; the
//! regexes below are llama.cpp's (src/llama-vocab.cpp), which in turn come from each
//! model's `tokenizer.json`. Each regex splits the text with matches kept as their own
//! pieces (HF's Split with Isolated behaviour), in order; each piece's bytes are mapped to
//! GPT-2's printable chars and merged by the `tokenizers` crate's BPE model.
//!
//! We run the pre-tokenization ourselves, with the same regex engine `tokenizers` uses,
//! rather than a whole `tokenizers::Tokenizer`: its pipeline tracks offsets through every
//! step and spends most of its time allocating. Doing the splitting here also lets one
//! `encode` call cache the ids of each distinct piece (words repeat), which makes prose
//! several times faster. The ids are the same: same regexes, same splitting rule, same
//! BPE model.

use tokenizers::Model as _;
use tokenizers::models::ModelWrapper;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::utils::SysRegex;

use super::fxhash::FxHashMap;
use super::vocab::gpt2_byte_chars;

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
}

impl PreTokenizer {
    /// The `tokenizer.ggml.pre` name whose regexes are exactly `regexes` (for writing a
    /// `tokenizer.json` byte-level BPE into GGUF), preferring llama.cpp's usual names.
    pub fn name_for_regexes(regexes: &[String]) -> Option<&'static str> {
        // Hugging Face spells the contractions case-insensitively; llama.cpp spells out
        // the case classes. Both match the same strings.
        let canonical: Vec<String> = regexes
            .iter()
            .map(|r| {
                r.replace(
                    "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
                    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])",
                )
            })
            .collect();
        ["llama-bpe", "qwen2", "qwen35", "smollm", "gpt-2", "default"]
            .into_iter()
            .find(|name| {
                PreTokenizer::for_name(name).is_some_and(|p| {
                    p.regexes
                        .iter()
                        .copied()
                        .eq(canonical.iter().map(String::as_str))
                })
            })
    }
}

/// The GPT-2 regex, for `tokenizer.json` files whose ByteLevel pre-tokenizer uses its
/// built-in pattern (`use_regex: true`).
pub(crate) const GPT2_REGEX: &str = GPT2;

/// Byte-level BPE: regex pre-tokenization, GPT-2 byte-to-char mapping, BPE merges.
pub(crate) struct ByteBpe {
    model: ModelWrapper,
    regexes: Vec<SysRegex>,
    /// The regex sources, to rebuild the same pipeline in `tokenizers` as a reference.
    #[cfg(test)]
    patterns: Vec<String>,
    /// GPT-2's printable char for each byte.
    byte_chars: [char; 256],
}

/// Inputs shorter than this are encoded without a piece cache.
const CACHE_MIN_BYTES: usize = 512;

impl ByteBpe {
    /// `model` must be a byte-level vocabulary (pieces spelled in GPT-2's printable chars).
    pub fn new(model: ModelWrapper, patterns: &[&str]) -> Result<ByteBpe, String> {
        let regexes = patterns
            .iter()
            .map(|r| SysRegex::new(r).map_err(|e| format!("regex {r:?}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(ByteBpe {
            model,
            regexes,
            #[cfg(test)]
            patterns: patterns.iter().map(|p| p.to_string()).collect(),
            byte_chars: gpt2_byte_chars(),
        })
    }

    /// Encodes one fragment of plain text (no special tokens in it).
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<(), String> {
        self.encode_with(text, text.len() >= CACHE_MIN_BYTES, out)
    }

    fn encode_with(&self, text: &str, use_cache: bool, out: &mut Vec<u32>) -> Result<(), String> {
        // Split with each regex in turn, keeping matches and the gaps between them.
        let mut pieces = vec![(0usize, text.len())];
        for re in &self.regexes {
            let mut next = Vec::with_capacity(pieces.len() * 2);
            for &(start, end) in &pieces {
                let mut prev = start;
                for (a, b) in re.find_iter(&text[start..end]) {
                    if start + a > prev {
                        next.push((prev, start + a));
                    }
                    if b > a {
                        next.push((start + a, start + b));
                    }
                    prev = start + b;
                }
                if prev < end {
                    next.push((prev, end));
                }
            }
            pieces = next;
        }

        let mut mapped = String::new();
        let mut merge = |piece: &str, out: &mut Vec<u32>| -> Result<(), String> {
            mapped.clear();
            mapped.extend(piece.bytes().map(|b| self.byte_chars[b as usize]));
            let tokens = self.model.tokenize(&mapped).map_err(|e| e.to_string())?;
            out.extend(tokens.iter().map(|t| t.id));
            Ok(())
        };
        if !use_cache {
            for (a, b) in pieces {
                merge(&text[a..b], out)?;
            }
            return Ok(());
        }
        // Ids of each distinct piece already merged in this call: ranges into `arena`.
        let mut cache: FxHashMap<&str, (u32, u32)> = FxHashMap::default();
        let mut arena: Vec<u32> = Vec::new();
        for (a, b) in pieces {
            let piece = &text[a..b];
            if let Some(&(x, y)) = cache.get(piece) {
                out.extend_from_slice(&arena[x as usize..y as usize]);
                continue;
            }
            let start = out.len();
            merge(piece, out)?;
            let x = arena.len() as u32;
            arena.extend_from_slice(&out[start..]);
            cache.insert(piece, (x, arena.len() as u32));
        }
        Ok(())
    }
}

#[cfg(test)]
impl ByteBpe {
    /// The same steps as a `tokenizers` pipeline (Split per regex, then ByteLevel), the
    /// reference our own splitting must agree with.
    pub(crate) fn reference_pipeline(&self) -> tokenizers::Tokenizer {
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior};
        let mut steps: Vec<PreTokenizerWrapper> = self
            .patterns
            .iter()
            .map(|p| {
                let pattern = SplitPattern::Regex(p.clone());
                Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                    .unwrap()
                    .into()
            })
            .collect();
        steps.push(ByteLevel::new(false, false, false).into());
        let mut tok = tokenizers::Tokenizer::new(self.model.clone());
        tok.with_pre_tokenizer(Some(Sequence::new(steps)));
        tok
    }
}

/// Builds the BPE model from the GGUF vocabulary and merges (`"a b"` strings).
///
/// Merges whose parts or result are missing from the vocabulary are dropped: llama.cpp
/// never applies them either (it looks the result up), while `tokenizers` would refuse the
/// whole vocabulary.
pub(crate) fn build_gguf_bpe(
    tokens: &[String],
    merges: &[&str],
    pre: &PreTokenizer,
) -> Result<ByteBpe, String> {
    // Collected in reverse so that, for a duplicated text, the lowest id wins.
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
    ByteBpe::new(bpe.into(), pre.regexes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy vocabulary over `a`, `b`, space: merges `a b` then `Ġ ab`.
    fn toy(regexes: &[&str]) -> ByteBpe {
        let tokens: Vec<String> = ["a", "b", "Ġ", "ab", "Ġab"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let pre = PreTokenizer {
            regexes: &[],
            ignore_merges: false,
            add_bos: false,
        };
        let bpe = build_gguf_bpe(&tokens, &["a b", "Ġ ab", "x y"], &pre).unwrap();
        ByteBpe::new(bpe.model, regexes).unwrap()
    }

    #[test]
    fn splits_then_merges() {
        let mut out = Vec::new();
        toy(&[GPT2]).encode("ab abb", &mut out).unwrap();
        assert_eq!(out, [3, 4, 1]);
        out.clear();
        // Isolating every char prevents all merges.
        toy(&["."]).encode("ab ab", &mut out).unwrap();
        assert_eq!(out, [0, 1, 2, 0, 1]);
    }

    #[test]
    fn cached_and_uncached_paths_agree() {
        let bpe = toy(&[GPT2]);
        let text = "ab abb ba ".repeat(200);
        let mut cached = Vec::new();
        bpe.encode_with(&text, true, &mut cached).unwrap();
        let mut uncached = Vec::new();
        bpe.encode_with(&text, false, &mut uncached).unwrap();
        assert_eq!(cached, uncached);
    }

    #[test]
    fn known_pre_tokenizers_compile() {
        for name in ["llama-bpe", "qwen2", "qwen35", "smollm", "gpt-2", "default"] {
            let pre = PreTokenizer::for_name(name).unwrap();
            for r in pre.regexes {
                SysRegex::new(r).unwrap();
            }
        }
        assert!(PreTokenizer::for_name("no-such-pre").is_none());
    }
}
