//! Tokenizers: HF `tokenizer.json`, a GGUF's `tokenizer.ggml.*` vocabulary, llama2.c's
//! `tokenizer.bin`. Seeds are the shared tokenizers cut down to their first tokens (a
//! 128k-token vocabulary takes a quarter of a second to build; 1,000 tokens keep each
//! input in milliseconds and exercise the same code).

use std::collections::HashSet;
use std::path::Path;

use nf_formats::gguf::{GgufFile, MetaArray, MetaValue};
use nf_formats::gguf_write::GgufWriter;
use nf_tokenizer::Tokenizer;
use serde_json::Value;

use super::{FileHarness, put, read};
use crate::{Harness, Setup, Target, Verdict};

pub const TOKENIZER_JSON: Target = Target {
    name: "tokenizer-json",
    what: "an HF tokenizer.json (byte-level BPE and SentencePiece-style); then encode and decode",
    setup: json_setup,
};

pub const GGUF_VOCAB: Target = Target {
    name: "gguf-vocab",
    what: "a GGUF vocabulary (tokens, scores, types, merges, special ids); then encode and decode",
    setup: vocab_setup,
};

pub const LLAMA2C_TOKENIZER: Target = Target {
    name: "llama2c-tokenizer",
    what: "a llama2.c tokenizer.bin; then encode and decode",
    setup: llama2c_setup,
};

/// How many tokens the cut-down vocabularies keep.
const KEEP: usize = 1000;

const TEXT: &str =
    "Once upon a time, Ünïcödé 日本語 <|endoftext|><s></s> <|im_start|>  x\n\n\t42 1234567 don't";

/// Encodes and decodes the way ingestion and generation do, and asks for every kind of id,
/// in range or not.
fn exercise(tok: &Tokenizer) -> Verdict {
    for (bos, special) in [(true, true), (false, false)] {
        let Ok(ids) = tok.encode(TEXT, bos, special) else {
            return Verdict::Refused;
        };
        std::hint::black_box(tok.decode(&ids));
    }
    let n = tok.vocab_size() as u32;
    let probes = [0, 1, 2, n / 2, n.saturating_sub(1), n, n + 1, u32::MAX];
    for id in probes {
        std::hint::black_box((tok.token_bytes(id), tok.id_to_token(id)));
    }
    std::hint::black_box(tok.decode(&probes));
    Verdict::Accepted
}

/// The first [`KEEP`] tokens of a GGUF vocabulary as a vocabulary-only GGUF: the token
/// arrays cut, merges kept only between kept tokens, special ids past the cut dropped.
fn cut_vocab(path: &Path) -> Result<Vec<u8>, String> {
    let g = GgufFile::open(path).map_err(|e| e.to_string())?;
    let kept: HashSet<String> = g
        .get("tokenizer.ggml.tokens")
        .and_then(MetaValue::as_array)
        .ok_or("no tokenizer.ggml.tokens")?
        .iter()
        .take(KEEP)
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let mut w = GgufWriter::new();
    for (key, value) in &g.metadata {
        let value = match (key.as_str(), value) {
            (
                "tokenizer.ggml.tokens" | "tokenizer.ggml.scores" | "tokenizer.ggml.token_type",
                MetaValue::Array(a),
            ) => MetaValue::Array(MetaArray {
                elem_type: a.elem_type,
                values: a.values.iter().take(KEEP).cloned().collect(),
            }),
            ("tokenizer.ggml.merges", MetaValue::Array(a)) => MetaValue::Array(MetaArray {
                elem_type: a.elem_type,
                values: a
                    .values
                    .iter()
                    .filter(|m| {
                        m.as_str()
                            .and_then(|m| m.split_once(' '))
                            .is_some_and(|(l, r)| {
                                kept.contains(l)
                                    && kept.contains(r)
                                    && kept.contains(&format!("{l}{r}"))
                            })
                    })
                    .cloned()
                    .collect(),
            }),
            (k, v) if k.ends_with("_token_id") && v.as_u64().is_none_or(|id| id >= KEEP as u64) => {
                continue;
            }
            _ => value.clone(),
        };
        w.set(key.clone(), value).map_err(|e| e.to_string())?;
    }
    Ok(w.to_bytes())
}

/// The cut-down vocabularies: SentencePiece (llama), byte-level BPE (gpt-2, qwen2).
fn cut_vocabs(s: &Setup) -> Result<Vec<Vec<u8>>, String> {
    [
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-gpt-2.gguf",
        "ggml-vocab-qwen2.gguf",
    ]
    .iter()
    .map(|name| cut_vocab(&s.assets.join("llamacpp-vocab").join(name)))
    .collect()
}

fn vocab_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    Ok(Box::new(FileHarness {
        seeds: cut_vocabs(s)?,
        dictionary: &[
            b"tokenizer.ggml.model",
            b"tokenizer.ggml.tokens",
            b"tokenizer.ggml.merges",
            b"tokenizer.ggml.pre",
            b"llama",
            b"gpt2",
            b"<0x0A>",
            b"\xe2\x96\x81",
        ],
        file: s.work.join("input.gguf"),
        parse: |path| match GgufFile::open(path).map(|g| Tokenizer::from_gguf(&g)) {
            Ok(Ok(t)) => exercise(&t),
            _ => Verdict::Refused,
        },
    }))
}

/// The shared llama3 tokenizer.json cut to its first [`KEEP`] tokens, with two of its
/// added tokens renumbered after them.
fn cut_tokenizer_json(path: &Path) -> Result<Vec<u8>, String> {
    let mut j: Value = serde_json::from_slice(&read(path)?).map_err(|e| e.to_string())?;
    let vocab = j["model"]["vocab"]
        .as_object_mut()
        .ok_or("no model.vocab")?;
    vocab.retain(|_, id| id.as_u64().is_some_and(|id| id < KEEP as u64));
    let kept: HashSet<String> = vocab.keys().cloned().collect();
    let merges = j["model"]["merges"]
        .as_array_mut()
        .ok_or("no model.merges")?;
    merges.retain(|m| {
        m.as_str()
            .and_then(|m| m.split_once(' '))
            .is_some_and(|(l, r)| {
                kept.contains(l) && kept.contains(r) && kept.contains(&format!("{l}{r}"))
            })
    });
    let added = j["added_tokens"].as_array_mut().ok_or("no added_tokens")?;
    added.truncate(2);
    for (i, t) in added.iter_mut().enumerate() {
        t["id"] = Value::from(KEEP + i);
    }
    j["post_processor"] = Value::Null;
    serde_json::to_vec(&j).map_err(|e| e.to_string())
}

fn json_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let mut seeds = vec![cut_tokenizer_json(
        &s.assets.join("hf-tokenizers/llama3-tokenizer.json"),
    )?];
    // A SentencePiece-style tokenizer.json, as `export` writes one for a llama vocabulary.
    let spm = s.work.join("seed-spm.gguf");
    put(&spm, &cut_vocabs(s)?[0]);
    let g = GgufFile::open(&spm).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(&g).map_err(|e| e.to_string())?;
    let files = tok.hf_files(None).map_err(|e| e.to_string())?;
    let (_, json) = files
        .into_iter()
        .find(|(name, _)| name == "tokenizer.json")
        .ok_or("the export wrote no tokenizer.json")?;
    seeds.push(json);
    Ok(Box::new(FileHarness {
        seeds,
        dictionary: JSON_TOKENS,
        file: s.work.join("tokenizer.json"),
        parse: |path| match Tokenizer::from_hf_file(path) {
            Ok(t) => exercise(&t),
            Err(_) => Verdict::Refused,
        },
    }))
}

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"null",
    b"-1",
    b"\"type\"",
    b"\"BPE\"",
    b"\"Unigram\"",
    b"\"WordPiece\"",
    b"\"Sequence\"",
    b"\"Regex\"",
    b"\"ByteLevel\"",
    b"\"Metaspace\"",
    b"\"ByteFallback\"",
    b"\"merges\"",
    b"\"vocab\"",
    b"\"added_tokens\"",
    b"\"special\"",
    b"(?",
];

fn llama2c_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    Ok(Box::new(FileHarness {
        seeds: vec![read(&s.assets.join("llama2c/tok512.bin"))?],
        dictionary: &[],
        file: s.work.join("tokenizer.bin"),
        parse: |path| match Tokenizer::from_llama2c(path, Some(512)) {
            Ok(t) => exercise(&t),
            Err(_) => Verdict::Refused,
        },
    }))
}
