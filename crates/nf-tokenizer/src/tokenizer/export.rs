//! Writing a tokenizer out again: as GGUF `tokenizer.ggml.*` metadata (what llama.cpp and
//! our own GGUF reader rebuild it from) and as Hugging Face files (`tokenizer.json`,
//! `tokenizer_config.json`, `special_tokens_map.json`).
//!
//! A tokenizer read from a GGUF or a llama2.c `tokenizer.bin` gets a `tokenizer.json`
//! written for it: SentencePiece vocabularies become a byte-fallback BPE with merges
//! derived from the scores (what `transformers`' `LlamaConverter` does), byte-level BPE
//! vocabularies keep their merges and get the pre-tokenizer regexes as `Split` steps. A
//! `tokenizer.json` tokenizer is copied as it is for HF, and for GGUF needs a byte-level
//! BPE whose regexes match a pre-tokenizer llama.cpp knows. Whatever is written, the
//! caller should read it back and compare encodings (the export's parity check does).

use std::collections::BTreeMap;

use nf_formats::MetaValue;
use nf_formats::gguf::MetaArray;
use serde_json::{Value, json};

use super::bpe::PreTokenizer;
use super::vocab::TokenAttr;
use super::{Engine, Origin, Tokenizer};
use crate::error::{Result, TokenizerError};

/// GGUF value-type ids of array elements.
const GGUF_I32: u32 = 5;
const GGUF_F32: u32 = 6;
const GGUF_STRING: u32 = 8;

fn not_exportable(target: &'static str, reason: impl Into<String>) -> TokenizerError {
    TokenizerError::NotExportable {
        target,
        reason: reason.into(),
    }
}

fn gguf_type(a: TokenAttr) -> i32 {
    match a {
        TokenAttr::Normal => 1,
        TokenAttr::Unknown => 2,
        TokenAttr::Control => 3,
        TokenAttr::UserDefined => 4,
        TokenAttr::Unused => 5,
        TokenAttr::Byte => 6,
    }
}

fn strings(v: impl IntoIterator<Item = String>) -> MetaValue {
    MetaValue::Array(MetaArray {
        elem_type: GGUF_STRING,
        values: v.into_iter().map(MetaValue::String).collect(),
    })
}

impl Tokenizer {
    /// The `tokenizer.*` metadata of a GGUF file holding this tokenizer, with `chat_template`
    /// (the template the model was trained with) when given.
    pub fn gguf_metadata(&self, chat_template: Option<&str>) -> Result<Vec<(String, MetaValue)>> {
        let mut kv: Vec<(String, MetaValue)> = Vec::new();
        let mut put = |k: &str, v: MetaValue| kv.push((format!("tokenizer.ggml.{k}"), v));
        let tokens = self.vocab.tokens.clone();
        let types = MetaValue::Array(MetaArray {
            elem_type: GGUF_I32,
            values: self
                .vocab
                .attrs
                .iter()
                .map(|&a| MetaValue::I32(gguf_type(a)))
                .collect(),
        });
        match &self.engine {
            Engine::Spm(spm) => {
                put("model", MetaValue::String("llama".into()));
                put("tokens", strings(tokens));
                put(
                    "scores",
                    MetaValue::Array(MetaArray {
                        elem_type: GGUF_F32,
                        values: spm.scores.iter().map(|&s| MetaValue::F32(s)).collect(),
                    }),
                );
                put("token_type", types);
                if let Some(u) = spm.unk {
                    put("unknown_token_id", MetaValue::U32(u));
                }
                put("add_space_prefix", MetaValue::Bool(spm.add_space_prefix));
            }
            Engine::Bpe(_) => {
                let (pre, merges) = self.bpe_pre_and_merges()?;
                put("model", MetaValue::String("gpt2".into()));
                put("pre", MetaValue::String(pre));
                put("tokens", strings(tokens));
                put("token_type", types);
                put("merges", strings(merges));
            }
            Engine::Hf(_) => {
                return Err(not_exportable(
                    "GGUF",
                    "only SentencePiece and byte-level BPE tokenizers can be stored in GGUF; this tokenizer.json is neither",
                ));
            }
        }
        if let Some(b) = self.bos {
            put("bos_token_id", MetaValue::U32(b));
        }
        if let Some(e) = self.eos {
            put("eos_token_id", MetaValue::U32(e));
        }
        if let Origin::Gguf {
            eot, eom, padding, ..
        } = &self.origin
        {
            for (k, v) in [
                ("eot_token_id", eot),
                ("eom_token_id", eom),
                ("padding_token_id", padding),
            ] {
                if let Some(v) = v {
                    put(k, MetaValue::U32(*v));
                }
            }
        }
        put("add_bos_token", MetaValue::Bool(self.add_bos));
        if let Some(t) = chat_template {
            kv.push((
                "tokenizer.chat_template".into(),
                MetaValue::String(t.into()),
            ));
        }
        Ok(kv)
    }

    /// `tokenizer.ggml.pre` and the merges (`"a b"`) of a byte-level BPE tokenizer.
    fn bpe_pre_and_merges(&self) -> Result<(String, Vec<String>)> {
        match &self.origin {
            Origin::Gguf {
                pre: Some(pre),
                merges: Some(merges),
                ..
            } => Ok((pre.clone(), merges.clone())),
            Origin::HfFile(path) => {
                let bytes = std::fs::read(path).map_err(|e| TokenizerError::io(path, e))?;
                let json: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    TokenizerError::corrupt(path, "tokenizer.json", format!("not JSON: {e}"))
                })?;
                let obj = json.as_object().cloned().unwrap_or_default();
                let regexes = super::hf::byte_level_regexes(&obj).unwrap_or_default();
                let pre = PreTokenizer::name_for_regexes(&regexes).ok_or_else(|| {
                    not_exportable(
                        "GGUF",
                        "the tokenizer.json pre-tokenizer matches none that llama.cpp knows (tokenizer.ggml.pre)",
                    )
                })?;
                let merges = json["model"]["merges"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|m| match m {
                                Value::String(s) => Some(s.clone()),
                                Value::Array(p) => Some(format!(
                                    "{} {}",
                                    p.first()?.as_str()?,
                                    p.get(1)?.as_str()?
                                )),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Ok((pre.to_string(), merges))
            }
            _ => Err(not_exportable(
                "GGUF",
                "the byte-level BPE merges were not kept",
            )),
        }
    }

    /// The Hugging Face tokenizer files for this tokenizer: `(file name, contents)`.
    pub fn hf_files(&self, chat_template: Option<&str>) -> Result<Vec<(String, Vec<u8>)>> {
        let tokenizer_json = match (&self.origin, &self.engine) {
            (Origin::HfFile(path), _) => {
                std::fs::read(path).map_err(|e| TokenizerError::io(path, e))?
            }
            (_, Engine::Spm(spm)) => self.spm_tokenizer_json(spm)?,
            (_, Engine::Bpe(_)) => self.bpe_tokenizer_json()?,
            (_, Engine::Hf(_)) => unreachable!("Hf engines come only from tokenizer.json"),
        };
        let name = |id: Option<u32>| id.and_then(|i| self.vocab.text(i)).map(str::to_string);
        let mut config = serde_json::Map::new();
        config.insert("add_bos_token".into(), self.add_bos.into());
        config.insert("add_eos_token".into(), false.into());
        config.insert("bos_token".into(), name(self.bos).into());
        config.insert("eos_token".into(), name(self.eos).into());
        let unk = match &self.engine {
            Engine::Spm(spm) => name(spm.unk),
            _ => None,
        };
        config.insert("unk_token".into(), unk.clone().into());
        config.insert("clean_up_tokenization_spaces".into(), false.into());
        config.insert("legacy".into(), false.into());
        config.insert(
            "model_max_length".into(),
            1_000_000_000_000_000_000u64.into(),
        );
        config.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
        if let Some(t) = chat_template {
            config.insert("chat_template".into(), t.into());
        }
        let mut special = serde_json::Map::new();
        for (k, v) in [
            ("bos_token", name(self.bos)),
            ("eos_token", name(self.eos)),
            ("unk_token", unk),
        ] {
            if let Some(v) = v {
                special.insert(k.into(), v.into());
            }
        }
        let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON serializes");
        Ok(vec![
            ("tokenizer.json".into(), tokenizer_json),
            (
                "tokenizer_config.json".into(),
                pretty(&Value::Object(config)),
            ),
            (
                "special_tokens_map.json".into(),
                pretty(&Value::Object(special)),
            ),
        ])
    }

    /// Control, unknown and user-defined tokens as `tokenizer.json` added tokens.
    fn added_tokens_json(&self) -> Vec<Value> {
        self.vocab
            .tokens
            .iter()
            .zip(&self.vocab.attrs)
            .enumerate()
            .filter(|(_, (t, a))| {
                !t.is_empty()
                    && matches!(
                        a,
                        TokenAttr::Control | TokenAttr::Unknown | TokenAttr::UserDefined
                    )
            })
            .map(|(id, (t, a))| {
                json!({
                    "id": id, "content": t, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false,
                    "special": *a != TokenAttr::UserDefined,
                })
            })
            .collect()
    }

    /// A post-processor that puts BOS first when the model expects it.
    fn bos_post_processor(&self) -> Value {
        let Some(bos) = self.bos.filter(|_| self.add_bos) else {
            return Value::Null;
        };
        let text = self.vocab.text(bos).unwrap_or("");
        json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": text, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {text: {"id": text, "ids": [bos], "tokens": [text]}},
        })
    }

    fn vocab_json(&self) -> serde_json::Map<String, Value> {
        let mut vocab = serde_json::Map::new();
        for (id, t) in self.vocab.tokens.iter().enumerate() {
            // A duplicated text keeps its lowest id, as our reader does.
            if !t.is_empty() && !vocab.contains_key(t) {
                vocab.insert(t.clone(), id.into());
            }
        }
        vocab
    }

    /// SentencePiece as `transformers` converts it: BPE with byte fallback, the merges of
    /// every mergeable piece ordered by its score (best first, then by id), `▁` for spaces
    /// with one prepended per text segment.
    fn spm_tokenizer_json(&self, spm: &super::spm::Spm) -> Result<Vec<u8>> {
        let mergeable = |a: TokenAttr| matches!(a, TokenAttr::Normal | TokenAttr::UserDefined);
        let mut ids: BTreeMap<&str, usize> = BTreeMap::new();
        for (id, (t, &a)) in self.vocab.tokens.iter().zip(&self.vocab.attrs).enumerate() {
            if mergeable(a) && !t.is_empty() {
                ids.entry(t.as_str()).or_insert(id);
            }
        }
        // (score, id of the result, left length, left, right)
        let mut merges: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
        for (&piece, &id) in &ids {
            for (cut, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(cut);
                if ids.contains_key(l) && ids.contains_key(r) {
                    let score = spm.scores.get(id).copied().unwrap_or(0.0);
                    merges.push((score, id, l.len(), l, r));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let merges: Vec<Value> = merges.iter().map(|m| json!([m.3, m.4])).collect();
        let unk = spm.unk.and_then(|u| self.vocab.text(u));
        let mut normalizers = Vec::new();
        if spm.add_space_prefix {
            normalizers.push(json!({"type": "Prepend", "prepend": "▁"}));
        }
        normalizers.push(json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"}));
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if spm.add_space_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": self.added_tokens_json(),
            "normalizer": {"type": "Sequence", "normalizers": normalizers},
            "pre_tokenizer": null,
            "post_processor": self.bos_post_processor(),
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": unk,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": self.vocab_json(), "merges": merges,
            },
        });
        Ok(serde_json::to_vec(&doc).expect("JSON serializes"))
    }

    /// Byte-level BPE from a GGUF: the merges as they are, each pre-tokenizer regex as an
    /// isolating `Split`, then GPT-2's byte-to-char mapping.
    fn bpe_tokenizer_json(&self) -> Result<Vec<u8>> {
        let (pre_name, merges) = self.bpe_pre_and_merges()?;
        let pre = PreTokenizer::for_name(&pre_name).ok_or_else(|| {
            not_exportable("tokenizer.json", format!("pre-tokenizer `{pre_name}`"))
        })?;
        let mut steps: Vec<Value> = pre
            .regexes
            .iter()
            .map(|r| {
                json!({"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false})
            })
            .collect();
        steps.push(json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}));
        let merges: Vec<Value> = merges
            .iter()
            .filter_map(|m| {
                let pos = m.bytes().skip(1).position(|b| b == b' ')? + 1;
                Some(json!([&m[..pos], &m[pos + 1..]]))
            })
            .collect();
        let doc = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": self.added_tokens_json(),
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": steps},
            "post_processor": self.bos_post_processor(),
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": pre.ignore_merges,
                "vocab": self.vocab_json(), "merges": merges,
            },
        });
        Ok(serde_json::to_vec(&doc).expect("JSON serializes"))
    }
}
