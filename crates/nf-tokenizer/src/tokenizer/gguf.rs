//! Loading the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
//!
//! Defaults follow llama.cpp's `llama_vocab::impl::load` where the file is silent:
//! SentencePiece vocabularies (`llama`) add BOS and a dummy-prefix space; byte-level BPE
//! (`gpt2`) adds BOS only for the Llama 3 family.

use std::path::Path;

use nf_formats::{GgufFile, MetaValue};

use super::bpe::{PreTokenizer, build_gguf_bpe};
use super::spm::Spm;
use super::vocab::{ByteLevelTable, PieceStyle, TokenAttr, Vocab};
use super::{Engine, Parts, Tokenizer, specials_from_types};
use crate::error::{Result, TokenizerError};

const FORMAT: &str = "GGUF";

impl Tokenizer {
    /// The tokenizer of a GGUF model (or vocab-only GGUF). Supports
    /// `tokenizer.ggml.model` = `llama` (SentencePiece) and `gpt2` (byte-level BPE with
    /// the pre-tokenizers listed in `bpe.rs`: llama-bpe, qwen2, qwen35, smollm, gpt-2,
    /// default and their aliases).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
        let path = gguf.path();
        let model = gguf
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| missing(path, "tokenizer.ggml.model"))?;
        // Checked before reading the vocabulary, so that a model we cannot run is
        // reported as unsupported rather than as whatever else is odd about it.
        let sentencepiece = match model {
            "llama" => true,
            "gpt2" => false,
            other => {
                return Err(TokenizerError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!("tokenizer model `{other}` (tokenizer.ggml.model)"),
                });
            }
        };
        let tokens = string_array(gguf, "tokenizer.ggml.tokens")?
            .ok_or_else(|| missing(path, "tokenizer.ggml.tokens"))?;
        let n = tokens.len();
        if n == 0 {
            return Err(corrupt(path, "tokenizer.ggml.tokens is empty"));
        }
        let attrs: Vec<TokenAttr> = match numbers(gguf, "tokenizer.ggml.token_type", n)? {
            Some(types) => types
                .iter()
                .map(|&t| TokenAttr::from_gguf_type(t as i64))
                .collect(),
            None => vec![TokenAttr::Normal; n],
        };
        let id = |key: &str| gguf.get_u64(key).and_then(|v| u32::try_from(v).ok());
        let flag = |key: &str| gguf.get(key).and_then(MetaValue::as_bool);
        let chat_template = gguf.get_str("tokenizer.chat_template").map(str::to_string);
        let (eot, eom) = (
            id("tokenizer.ggml.eot_token_id"),
            id("tokenizer.ggml.eom_token_id"),
        );
        let padding = id("tokenizer.ggml.padding_token_id");
        let mut kept_merges = None;
        let mut kept_pre = None;
        let extra_eos = ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"]
            .iter()
            .filter_map(|k| id(k))
            .collect();

        let (kind, engine, style, add_bos, strip_first_space, bos, eos);
        if sentencepiece {
            let scores = numbers(gguf, "tokenizer.ggml.scores", n)?
                .map(|s| s.into_iter().map(|v| v as f32).collect())
                .unwrap_or_else(|| vec![0.0; n]);
            let add_space_prefix = flag("tokenizer.ggml.add_space_prefix").unwrap_or(true);
            let unk = id("tokenizer.ggml.unknown_token_id").or(Some(0));
            kind = "gguf-llama".to_string();
            engine = Engine::Spm(Box::new(Spm::new(
                &tokens,
                &attrs,
                scores,
                unk,
                add_space_prefix,
            )));
            style = PieceStyle::SentencePiece;
            add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(true);
            strip_first_space = add_space_prefix;
            bos = id("tokenizer.ggml.bos_token_id").or(Some(1));
            eos = id("tokenizer.ggml.eos_token_id").or(Some(2));
        } else {
            let pre_name = gguf.get_str("tokenizer.ggml.pre").unwrap_or("default");
            let pre =
                PreTokenizer::for_name(pre_name).ok_or_else(|| TokenizerError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!("pre-tokenizer `{pre_name}` (tokenizer.ggml.pre)"),
                })?;
            let merges = string_array(gguf, "tokenizer.ggml.merges")?
                .ok_or_else(|| missing(path, "tokenizer.ggml.merges"))?;
            let merge_strs: Vec<&str> = merges.iter().map(String::as_str).collect();
            let bpe = build_gguf_bpe(&tokens, &merge_strs, &pre)
                .map_err(|e| corrupt(path, format!("cannot build the BPE tokenizer: {e}")))?;
            kept_merges = Some(merges);
            kept_pre = Some(pre_name.to_string());
            kind = format!("gguf-gpt2:{pre_name}");
            engine = Engine::Bpe(Box::new(bpe));
            style = PieceStyle::ByteLevel(Box::new(ByteLevelTable::new()));
            add_bos = flag("tokenizer.ggml.add_bos_token").unwrap_or(pre.add_bos);
            strip_first_space = false;
            bos = id("tokenizer.ggml.bos_token_id");
            eos = id("tokenizer.ggml.eos_token_id");
        }

        let vocab = Vocab::new(tokens, attrs);
        // llama.cpp strips whitespace after Phi-3's special tokens, mirroring `rstrip` in
        // its tokenizer.json; the GGUF does not record it, so llama.cpp keys it on the
        // model name and so do we.
        let name = gguf
            .get_str("general.name")
            .unwrap_or("")
            .to_ascii_lowercase();
        let phi3 = name.contains("phi-3") || name.contains("phi3");
        let specials = specials_from_types(&vocab, |t| {
            phi3 && !matches!(t, "<unk>" | "<s>" | "<|endoftext|>")
        });
        Ok(Tokenizer::from_parts(Parts {
            kind,
            vocab,
            engine,
            style,
            specials,
            bos,
            eos,
            extra_eos,
            add_bos,
            strip_first_space,
            chat_template,
            origin: super::Origin::Gguf {
                pre: kept_pre,
                merges: kept_merges,
                eot,
                eom,
                padding,
            },
        }))
    }
}

fn missing(path: &Path, key: &str) -> TokenizerError {
    TokenizerError::MissingMetadata {
        path: path.to_path_buf(),
        key: key.to_string(),
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::corrupt(path, FORMAT, reason)
}

/// A string array, or `None` when the key is absent; any other type is corrupt.
fn string_array(gguf: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    let Some(value) = gguf.get(key) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .ok_or_else(|| corrupt(gguf.path(), format!("`{key}` is not an array")))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| corrupt(gguf.path(), format!("`{key}` holds a non-string")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A numeric array with at least `n` entries (one per token), or `None` when absent.
fn numbers(gguf: &GgufFile, key: &str, n: usize) -> Result<Option<Vec<f64>>> {
    let Some(value) = gguf.get(key) else {
        return Ok(None);
    };
    let items = value
        .as_array()
        .ok_or_else(|| corrupt(gguf.path(), format!("`{key}` is not an array")))?;
    if items.len() < n {
        return Err(corrupt(
            gguf.path(),
            format!("`{key}` has {} entries for {n} tokens", items.len()),
        ));
    }
    items[..n]
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| corrupt(gguf.path(), format!("`{key}` holds a non-number")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}
