//! One tokenizer type over three sources: GGUF vocabularies, Hugging Face `tokenizer.json`,
//! and llama2.c `tokenizer.bin`.
//!
//! Every input goes through the same steps: BOS if asked, a cut at special tokens
//! (`special.rs`), then each text piece through one of three engines: SentencePiece with
//! scores (`spm.rs`, written after llama.cpp's), byte-level BPE (`bpe.rs`: our own regex
//! pre-tokenization feeding the `tokenizers` crate's BPE model), or, for any other
//! `tokenizer.json`, the whole `tokenizers` pipeline (`hf.rs`). Decoding is ours for all
//! kinds, token by token (`vocab.rs`), so streamed output and whole-sequence decoding agree.
//!
//! Long inputs are fast without changing a single id: SentencePiece merges each word on
//! its own and byte-level BPE each regex piece, and one `encode` call caches the ids of
//! every distinct word or piece; `equivalence_tests.rs` holds both against merging whole
//! texts and against the `tokenizers` pipeline on the corpus.

mod bpe;
#[cfg(test)]
mod equivalence_tests;
mod export;
mod fxhash;
mod gguf;
mod hf;
mod llama2c;
mod special;
mod spm;
mod stream;
pub use stream::TextStream;
mod vocab;

use special::{Piece, SpecialSplitter};
use spm::Spm;
use vocab::{PieceStyle, TokenAttr, Vocab};

use crate::error::{Result, TokenizerError};

/// Token texts that end a generation turn in the models we know, as llama.cpp lists them
/// (its `special_eog_ids`); a vocabulary that has one of these stops on it.
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
];

/// How text pieces are turned into ids.
enum Engine {
    /// SentencePiece with scores (GGUF `llama`, llama2.c).
    Spm(Box<Spm>),
    /// Byte-level BPE with our own pre-tokenization (GGUF `gpt2`, and `tokenizer.json`
    /// files of that shape).
    Bpe(Box<bpe::ByteBpe>),
    /// Any other `tokenizer.json`, run by the `tokenizers` pipeline.
    Hf(Box<tokenizers::Tokenizer>),
}

/// A loaded tokenizer: encode, decode, special tokens, and the chat template that came
/// with it. Cheap to share across threads (`Send + Sync`); encoding takes `&self`.
pub struct Tokenizer {
    kind: String,
    vocab: Vocab,
    engine: Engine,
    style: PieceStyle,
    specials: SpecialSplitter,
    bos: Option<u32>,
    eos: Option<u32>,
    eos_ids: Vec<u32>,
    add_bos: bool,
    /// SentencePiece's dummy prefix: decoding removes the space it put before the first
    /// word.
    strip_first_space: bool,
    chat_template: Option<String>,
    origin: Origin,
}

/// Where a tokenizer was read from, with what the reader saw but the engines do not keep,
/// so that it can be written out again (`export.rs`: GGUF metadata, `tokenizer.json`).
#[derive(Debug, Clone)]
pub(crate) enum Origin {
    /// A GGUF vocabulary: its pre-tokenizer name and merges (byte-level BPE only), and the
    /// ids llama.cpp reads besides BOS/EOS.
    Gguf {
        pre: Option<String>,
        merges: Option<Vec<String>>,
        eot: Option<u32>,
        eom: Option<u32>,
        padding: Option<u32>,
    },
    /// A llama2.c `tokenizer.bin` (SentencePiece with scores, no token types).
    Llama2c,
    /// A Hugging Face `tokenizer.json` at this path.
    HfFile(std::path::PathBuf),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab.len())
            .field("bos", &self.bos)
            .field("eos_ids", &self.eos_ids)
            .finish_non_exhaustive()
    }
}

/// What a loader found, before the common parts are derived from it.
struct Parts {
    kind: String,
    vocab: Vocab,
    engine: Engine,
    style: PieceStyle,
    /// Extra special tokens beyond those implied by token types (HF added tokens).
    specials: Vec<special::SpecialToken>,
    bos: Option<u32>,
    eos: Option<u32>,
    /// End-of-generation ids the source declares (GGUF eot/eom, generation_config).
    extra_eos: Vec<u32>,
    add_bos: bool,
    strip_first_space: bool,
    chat_template: Option<String>,
    origin: Origin,
}

impl Tokenizer {
    fn from_parts(mut p: Parts) -> Tokenizer {
        let valid = |id: Option<u32>| id.filter(|&i| (i as usize) < p.vocab.len());
        let (bos, eos) = (valid(p.bos), valid(p.eos));
        let mut eos_ids: Vec<u32> = eos.into_iter().chain(p.extra_eos).collect();
        for name in END_OF_GENERATION {
            let Some(id) = p.vocab.id(name) else {
                continue;
            };
            eos_ids.push(id);
            // Like llama.cpp, a turn marker stored as an ordinary token (old conversions)
            // is made a control token, so chat prompts can contain it and decode skips it.
            if p.vocab.attr(id) == Some(TokenAttr::Normal) {
                p.vocab.attrs[id as usize] = TokenAttr::Control;
                p.specials.push(special::SpecialToken {
                    text: name.to_string(),
                    id,
                    always: false,
                    lstrip: false,
                    rstrip: false,
                });
            }
        }
        eos_ids.retain(|&i| (i as usize) < p.vocab.len());
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Tokenizer {
            kind: p.kind,
            engine: p.engine,
            style: p.style,
            specials: SpecialSplitter::new(p.specials),
            bos,
            eos,
            eos_ids,
            add_bos: p.add_bos && bos.is_some(),
            strip_first_space: p.strip_first_space,
            chat_template: p.chat_template,
            origin: p.origin,
            vocab: p.vocab,
        }
    }

    /// Encodes `text` to token ids.
    ///
    /// `add_bos` puts the BOS token first (ignored when the vocabulary has none; see
    /// [`Tokenizer::add_bos_default`] for what the model expects). With `parse_special`,
    /// special-token texts such as `<|im_start|>` become their ids; without it they are
    /// ordinary text. GGUF user-defined tokens are matched either way, as in llama.cpp.
    pub fn encode(&self, text: &str, add_bos: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_bos && let Some(bos) = self.bos {
            out.push(bos);
        }
        let mut pieces = Vec::new();
        if self.specials.is_empty() {
            if !text.is_empty() {
                pieces.push(Piece::Text(text));
            }
        } else {
            self.specials.split(text, parse_special, &mut pieces);
        }
        // SentencePiece puts its dummy-prefix space before text that starts the input or
        // follows a special token (llama.cpp's `is_prev_special`), not after BOS only.
        let mut prev_special = true;
        for piece in pieces {
            match piece {
                Piece::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Piece::Text(t) => {
                    self.encode_text(t, prev_special, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    fn encode_text(&self, text: &str, prev_special: bool, out: &mut Vec<u32>) -> Result<()> {
        match &self.engine {
            Engine::Spm(spm) => spm.encode(text, spm.add_space_prefix && prev_special, out),
            Engine::Bpe(bpe) => bpe.encode(text, out).map_err(|e| self.library_error(e))?,
            Engine::Hf(tok) => {
                let enc = tok
                    .encode_fast(text, false)
                    .map_err(|e| self.library_error(e.to_string()))?;
                out.extend_from_slice(enc.get_ids());
            }
        }
        Ok(())
    }

    fn library_error(&self, message: String) -> TokenizerError {
        TokenizerError::Library {
            context: format!("encoding with the {} tokenizer", self.kind),
            message,
        }
    }

    /// Decodes ids to text: BOS, EOS and other control tokens are skipped, byte tokens
    /// become bytes, and invalid UTF-8 (say, a multi-byte char cut in half) becomes U+FFFD.
    /// Ids outside the vocabulary are skipped.
    ///
    /// For SentencePiece vocabularies with a dummy prefix, the space that encoding put
    /// before the first word is removed: the first text-bearing token loses one leading
    /// space if it is an ordinary piece. So `decode(encode(x, _, false)) == x` holds for
    /// any `x` without U+2581 (`▁`, which SentencePiece cannot tell from a space) and
    /// without user-defined tokens (text after one gets its own dummy prefix). Byte-level
    /// BPE vocabularies decode every encoding back exactly.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut first = true;
        for &id in ids {
            let start = bytes.len();
            self.vocab.token_bytes(id, &self.style, &mut bytes);
            if first && bytes.len() > start {
                first = false;
                if self.strip_first_space
                    && bytes[start] == b' '
                    && self.vocab.attr(id) == Some(TokenAttr::Normal)
                {
                    bytes.remove(start);
                }
            }
        }
        match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// The raw bytes one token stands for, for streaming output (a token may hold part of
    /// a UTF-8 char, so callers buffer until the bytes are valid).
    ///
    /// Control, unknown and unused tokens give **no bytes** (so concatenating
    /// `token_bytes` equals [`Tokenizer::decode`]; use [`Tokenizer::id_to_token`] to show
    /// them). SentencePiece pieces keep their leading space: like llama2.c's `run.c`,
    /// drop the space of the first piece after BOS when printing.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        self.vocab.token_bytes(id, &self.style, &mut out);
        out
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the vocabulary has one (the first of [`Self::eos_ids`]).
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// The texts of BOS and EOS (empty where the vocabulary has none): what a chat template
    /// writes for `bos_token` and `eos_token`.
    pub fn bos_eos_text(&self) -> (String, String) {
        let text = |id: Option<u32>| {
            id.and_then(|i| self.id_to_token(i))
                .unwrap_or("")
                .to_string()
        };
        (text(self.bos), text(self.eos))
    }

    /// Every id that ends a generation: EOS, end-of-turn tokens (`<|eot_id|>`,
    /// `<|im_end|>`, `<|end|>`, ...) and ids the model files declare. Sorted.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Whether the model expects BOS at the start of a prompt (from
    /// `tokenizer.ggml.add_bos_token`, `tokenizer_config.json`'s `add_bos_token`, or the
    /// `tokenizer.json` post-processor). False when there is no BOS token.
    pub fn add_bos_default(&self) -> bool {
        self.add_bos
    }

    /// Number of ids, including special and added tokens.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// `"llama2c-spm"`, `"gguf-llama"`, `"gguf-gpt2:<pre>"` or `"hf-json"`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The Jinja chat template shipped with the model, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The vocabulary text of a token (`▁the`, `Ġthe`, `<|im_end|>`), not its bytes.
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.text(id)
    }

    /// The id of `token` (a vocabulary piece, special tokens included), if it has one.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }
}

/// Special tokens derived from token types: control and unknown tokens when parsing
/// specials, user-defined tokens always.
fn specials_from_types(vocab: &Vocab, rstrip: impl Fn(&str) -> bool) -> Vec<special::SpecialToken> {
    vocab
        .tokens
        .iter()
        .zip(&vocab.attrs)
        .enumerate()
        .filter_map(|(id, (text, attr))| {
            let always = match attr {
                TokenAttr::Control | TokenAttr::Unknown => false,
                TokenAttr::UserDefined => true,
                _ => return None,
            };
            Some(special::SpecialToken {
                text: text.clone(),
                id: id as u32,
                always,
                lstrip: false,
                rstrip: rstrip(text),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// Tokenizers are loaded once and shared by worker threads.
    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Tokenizer>();
    }
}
