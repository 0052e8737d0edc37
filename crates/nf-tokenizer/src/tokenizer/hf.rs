//! Hugging Face `tokenizer.json`, with the `tokenizer_config.json` and
//! `generation_config.json` that sit beside it.
//!
//! The `tokenizers` crate deserializes the file. Added tokens marked `special` are taken out
//! of its added vocabulary and matched by our own splitter instead, because `tokenizers`
//! always splits them out of the text, and `encode(.., parse_special = false)` must treat
//! `<|eot_id|>` in a document as plain text. Non-special added tokens are matched in any
//! text, as HF does.
//!
//! Byte-level BPE files (no normalizer; regex splits and a final ByteLevel step, as Llama 3,
//! GPT-2 and SmolLM ship) run on our faster byte-level path (`bpe::ByteBpe`) with the
//! file's own regexes and BPE model; anything else runs through the `tokenizers`
//! pipeline as is.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::bpe::{ByteBpe, GPT2_REGEX};
use super::special::SpecialToken;
use super::vocab::{ByteLevelTable, PieceStyle, TokenAttr, Vocab, parse_byte_token};
use super::{Engine, Parts, Tokenizer};
use crate::error::{Result, TokenizerError};

/// Names tried, in order, when no config names the BOS or EOS token.
const BOS_NAMES: &[&str] = &["<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"];
const EOS_NAMES: &[&str] = &["<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"];

const FORMAT: &str = "tokenizer.json";

impl Tokenizer {
    /// Loads `dir/tokenizer.json` (plus `tokenizer_config.json` and
    /// `generation_config.json` when present).
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Tokenizer> {
        Tokenizer::from_hf_file(dir.as_ref().join("tokenizer.json"))
    }

    /// Loads a `tokenizer.json` (any file name) and the configs in the same folder.
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let corrupt = |reason: String| TokenizerError::corrupt(path, FORMAT, reason);
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::io(path, e))?;
        let mut json: Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        drop(bytes);
        let obj = json
            .as_object_mut()
            .ok_or_else(|| corrupt("the top level is not an object".into()))?;

        let added = added_tokens(obj.get("added_tokens")).map_err(corrupt)?;
        let (special, plain): (Vec<_>, Vec<_>) = added.into_iter().partition(|t| t.special);
        let style = piece_style(obj.get("decoder"));
        let strip_first_space = matches!(style, (PieceStyle::SentencePiece, true));
        let byte_fallback = field(obj, "model")["byte_fallback"]
            .as_bool()
            .unwrap_or(false);
        let fast_regexes = byte_level_regexes(obj)
            .filter(|_| matches!(style.0, PieceStyle::ByteLevel(_)))
            .filter(|_| plain.iter().all(|t| !t.single_word));
        // On the fast path our splitter matches the plain added tokens too; otherwise
        // `tokenizers` keeps them.
        let kept_added = if fast_regexes.is_some() {
            &[][..]
        } else {
            &plain[..]
        };
        obj.insert(
            "added_tokens".into(),
            Value::Array(kept_added.iter().map(|t| t.json.clone()).collect()),
        );
        let post_bos = post_processor_bos(obj.get("post_processor"));

        if let Some(reason) = unsafe_for_tokenizers(&json) {
            return Err(corrupt(reason));
        }
        // Defence in depth: a panic in the crate on some other odd file is an error here.
        let parsed =
            std::panic::catch_unwind(|| serde_json::from_value::<tokenizers::Tokenizer>(json))
                .map_err(|_| corrupt("the `tokenizers` crate failed on it (a panic)".into()))?;
        let tok = parsed.map_err(|e| {
            corrupt(format!(
                "not a tokenizer the `tokenizers` crate accepts: {e}"
            ))
        })?;

        // The vocabulary: the model's, the added tokens left in `tok`, and the ones we match.
        let mut entries: Vec<(String, u32)> = tok.get_vocab(true).into_iter().collect();
        entries.extend(special.iter().map(|t| (t.content.clone(), t.id)));
        entries.extend(plain.iter().map(|t| (t.content.clone(), t.id)));
        let n = entries.iter().map(|e| e.1 as usize + 1).max().unwrap_or(0);
        if n == 0 || n > 4 * entries.len() + 1024 {
            return Err(corrupt(format!(
                "{} tokens with ids up to {n}",
                entries.len()
            )));
        }
        let mut tokens = vec![String::new(); n];
        let mut attrs = vec![TokenAttr::Normal; n];
        for (text, id) in entries {
            let i = id as usize;
            if byte_fallback && parse_byte_token(&text).is_some() {
                attrs[i] = TokenAttr::Byte;
            }
            tokens[i] = text;
        }
        for t in &plain {
            attrs[t.id as usize] = TokenAttr::UserDefined;
        }
        for t in &special {
            attrs[t.id as usize] = TokenAttr::Control;
        }
        let vocab = Vocab::new(tokens, attrs);

        let dir = path.parent().unwrap_or(Path::new("."));
        let config = read_optional_json(&dir.join("tokenizer_config.json"))?;
        let gen_config = read_optional_json(&dir.join("generation_config.json"))?;
        let config_token = |key: &str| {
            config
                .as_ref()
                .and_then(|c| token_content(&c[key]))
                .and_then(|t| vocab.id(t))
        };
        let gen_ids = |key: &str| -> Vec<u32> {
            match gen_config.as_ref().map(|g| &g[key]) {
                Some(Value::Array(a)) => a.iter().filter_map(json_u32).collect(),
                Some(v) => json_u32(v).into_iter().collect(),
                None => Vec::new(),
            }
        };
        let by_name = |names: &[&str]| names.iter().find_map(|n| vocab.id(n));
        let bos = config_token("bos_token")
            .or(post_bos.as_deref().and_then(|t| vocab.id(t)))
            .or(gen_ids("bos_token_id").first().copied())
            .or_else(|| by_name(BOS_NAMES));
        let gen_eos = gen_ids("eos_token_id");
        let eos = config_token("eos_token")
            .or(gen_eos.first().copied())
            .or_else(|| by_name(EOS_NAMES));
        let add_bos = config
            .as_ref()
            .and_then(|c| c["add_bos_token"].as_bool())
            .unwrap_or_else(|| post_bos.is_some());
        let chat_template = config
            .as_ref()
            .and_then(|c| chat_template(&c["chat_template"]));

        let matched_plain = if fast_regexes.is_some() {
            &plain[..]
        } else {
            &[][..]
        };
        let specials = special
            .iter()
            .chain(matched_plain)
            .map(|t| SpecialToken {
                text: t.content.clone(),
                id: t.id,
                always: !t.special,
                lstrip: t.lstrip,
                rstrip: t.rstrip,
            })
            .collect();
        let engine = match fast_regexes {
            Some(regexes) => {
                let regexes: Vec<&str> = regexes.iter().map(String::as_str).collect();
                let bpe = ByteBpe::new(tok.get_model().clone(), &regexes).map_err(corrupt)?;
                Engine::Bpe(Box::new(bpe))
            }
            None => Engine::Hf(Box::new(tok)),
        };
        Ok(Tokenizer::from_parts(Parts {
            kind: "hf-json".to_string(),
            vocab,
            engine,
            style: style.0,
            specials,
            bos,
            eos,
            extra_eos: gen_eos,
            add_bos,
            strip_first_space,
            chat_template,
            origin: super::Origin::HfFile(path.to_path_buf()),
        }))
    }
}

/// One entry of `added_tokens`, with its JSON kept to hand back to `tokenizers`.
struct AddedToken {
    id: u32,
    content: String,
    special: bool,
    lstrip: bool,
    rstrip: bool,
    single_word: bool,
    json: Value,
}

fn added_tokens(list: Option<&Value>) -> Result<Vec<AddedToken>, String> {
    let Some(list) = list.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = list.as_array().ok_or("`added_tokens` is not a list")?;
    items
        .iter()
        .map(|t| {
            let id = json_u32(&t["id"]).ok_or("an added token has no valid `id`")?;
            let content = t["content"]
                .as_str()
                .ok_or("an added token has no `content`")?;
            let flag = |k: &str| t[k].as_bool().unwrap_or(false);
            Ok(AddedToken {
                id,
                content: content.to_string(),
                special: flag("special"),
                lstrip: flag("lstrip"),
                rstrip: flag("rstrip"),
                single_word: flag("single_word"),
                json: t.clone(),
            })
        })
        .collect()
}

fn json_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// How the decoder maps tokens to text, and whether it strips SentencePiece's dummy prefix.
fn piece_style(decoder: Option<&Value>) -> (PieceStyle, bool) {
    let Some(d) = decoder else {
        return (PieceStyle::Raw, false);
    };
    let steps: Vec<&Value> = match d["type"].as_str() {
        Some("Sequence") => d["decoders"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        _ => vec![d],
    };
    let mut style = PieceStyle::Raw;
    let mut strip = false;
    for s in steps {
        match s["type"].as_str() {
            Some("ByteLevel") => style = PieceStyle::ByteLevel(Box::new(ByteLevelTable::new())),
            Some("Metaspace") => {
                style = PieceStyle::SentencePiece;
                strip = s["prepend_scheme"].as_str().map_or_else(
                    || s["add_prefix_space"].as_bool().unwrap_or(true),
                    |p| p != "never",
                );
            }
            Some("Replace") if s["pattern"]["String"] == "▁" && s["content"] == " " => {
                style = PieceStyle::SentencePiece;
            }
            Some("Strip") if s["content"] == " " && s["start"].as_u64().unwrap_or(0) > 0 => {
                strip = true;
            }
            _ => {}
        }
    }
    (style, strip)
}

/// The split regexes, in order, if this is a plain byte-level BPE: a BPE model without
/// dropout, no normalizer, and a pre-tokenizer made of regex splits (Isolated), digit
/// splits, and a final ByteLevel step without prefix space.
pub(crate) fn byte_level_regexes(obj: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
    let model = field(obj, "model");
    if model["type"] != "BPE" || !model["dropout"].is_null() || !field(obj, "normalizer").is_null()
    {
        return None;
    }
    let pre = field(obj, "pre_tokenizer");
    let steps: Vec<&Value> = match pre["type"].as_str()? {
        "Sequence" => pre["pretokenizers"].as_array()?.iter().collect(),
        _ => vec![pre],
    };
    let (last, rest) = steps.split_last()?;
    if last["type"] != "ByteLevel" || last["add_prefix_space"] == true {
        return None;
    }
    let mut regexes = Vec::new();
    for step in rest {
        match step["type"].as_str()? {
            "Split" if step["behavior"] == "Isolated" && step["invert"] != true => {
                regexes.push(step["pattern"]["Regex"].as_str()?.to_string());
            }
            // HF's Digits tests `char::is_numeric`, which is `\p{N}`.
            "Digits" => regexes.push(if step["individual_digits"] == true {
                r"\p{N}".to_string()
            } else {
                r"\p{N}+".to_string()
            }),
            _ => return None,
        }
    }
    if last["use_regex"] != false {
        regexes.push(GPT2_REGEX.to_string());
    }
    Some(regexes)
}

/// A top-level field, `null` when absent (indexing a JSON map directly would panic).
fn field<'a>(obj: &'a serde_json::Map<String, Value>, key: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    obj.get(key).unwrap_or(&NULL)
}

/// The special token a `TemplateProcessing` post-processor puts first, if any: that is the
/// BOS the model expects.
fn post_processor_bos(pp: Option<&Value>) -> Option<String> {
    let pp = pp?;
    match pp["type"].as_str()? {
        "Sequence" => pp["processors"]
            .as_array()?
            .iter()
            .find_map(|p| post_processor_bos(Some(p))),
        "TemplateProcessing" => pp["single"][0]["SpecialToken"]["id"]
            .as_str()
            .map(str::to_string),
        _ => None,
    }
}

/// A token in a config: a string, or an AddedToken object with `content`.
fn token_content(v: &Value) -> Option<&str> {
    v.as_str().or_else(|| v["content"].as_str())
}

/// `chat_template`: a string, or a list of `{name, template}` (the one named `default`,
/// else the first).
fn chat_template(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t["name"] == "default")
            .or_else(|| list.first())
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// A JSON file that may be absent; present but unreadable or invalid is an error.
fn read_optional_json(path: &PathBuf) -> Result<Option<Value>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TokenizerError::io(path, e)),
    };
    let name = if path.ends_with("generation_config.json") {
        "generation_config.json"
    } else {
        "tokenizer_config.json"
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| TokenizerError::corrupt(path, name, format!("not JSON: {e}")))
}

/// How much longer (in bytes) a normalizer, pre-tokenizer or decoder may make a text, at
/// most. Real tokenizers stay below 20 (Llama's Prepend and Replace of `▁`: 16; byte-level
/// BPE: 2); a hostile file chaining 30 ByteLevel stages doubled the text 30 times (found by
/// nf-fuzz: a gigabyte for a short text).
const MAX_EXPANSION: f64 = 256.0;

/// An upper bound on how much `component` (a `tokenizer.json` normalizer, pre-tokenizer
/// or decoder, possibly a `Sequence`) can lengthen a text, in bytes. Stages multiply.
fn expansion_bound(component: &Value, depth: usize) -> f64 {
    if depth > 8 {
        return f64::INFINITY;
    }
    let text_len = |v: &Value| v.as_str().map_or(0, str::len) as f64;
    match component["type"].as_str() {
        None => 1.0,
        Some("Sequence") => ["normalizers", "pretokenizers", "decoders"]
            .iter()
            .filter_map(|k| component[*k].as_array())
            .flatten()
            .map(|c| expansion_bound(c, depth + 1))
            .product(),
        // Each match (a pattern may match the empty string: between every two characters)
        // becomes the content.
        Some("Replace") => 1.0 + text_len(&component["content"]),
        Some("Prepend") => 1.0 + text_len(&component["prepend"]),
        Some("Metaspace") => 1.0 + text_len(&component["replacement"]),
        // Every byte becomes a character of at most two bytes.
        Some("ByteLevel") => 2.0,
        // Unicode's longest decompositions are 18 characters.
        Some("NFD" | "NFKD" | "NFKC") => 18.0,
        Some("NFC") => 3.0,
        // Spaces around CJK characters.
        Some("BertNormalizer") => 3.0,
        Some(
            "Lowercase" | "Strip" | "StripAccents" | "Split" | "Whitespace" | "WhitespaceSplit"
            | "Punctuation" | "Digits" | "BertPreTokenizer" | "ByteFallback" | "Fuse",
        ) => 1.0,
        // Anything else (SentencePiece's precompiled map, future types): a generous bound.
        Some(_) => 8.0,
    }
}

/// Why `tokenizers` must not be handed this file, if it must not. Its BPE builder assumes
/// that the right side of every merge starts with the model's `continuing_subword_prefix`
/// (it subtracts the prefix length, panicking on a shorter token, and slices the bytes
/// after it into a string without checking UTF-8: undefined behaviour when the cut falls
/// inside a character), and that no merge joins into something longer than the longest
/// token (it copies the parts into a buffer of that length, panicking past it). Found by
/// nf-fuzz.
fn unsafe_for_tokenizers(json: &Value) -> Option<String> {
    for part in ["normalizer", "pre_tokenizer", "decoder"] {
        let bound = expansion_bound(&json[part], 0);
        if bound > MAX_EXPANSION {
            return Some(format!(
                "its {part} could make text up to {bound:.0} times longer (the limit is {MAX_EXPANSION:.0}): chained stages that each grow the text"
            ));
        }
    }
    let model = &json["model"];
    let prefix = model["continuing_subword_prefix"].as_str().unwrap_or("");
    let longest = model["vocab"]
        .as_object()
        .map(|v| v.keys().map(String::len).max().unwrap_or(0));
    let parts = |m: &Value| -> Option<(String, String)> {
        match m {
            Value::String(s) => s
                .split_once(' ')
                .map(|(l, r)| (l.to_string(), r.to_string())),
            Value::Array(a) => Some((
                a.first()?.as_str()?.to_string(),
                a.get(1)?.as_str()?.to_string(),
            )),
            _ => None,
        }
    };
    for (l, r) in model["merges"].as_array()?.iter().filter_map(parts) {
        if !r.starts_with(prefix) {
            return Some(format!(
                "the merge part `{r}` does not start with the continuing-subword prefix `{prefix}`"
            ));
        }
        // The builder copies both parts into a buffer as long as the longest token.
        if longest.is_some_and(|n| l.len() + r.len() - prefix.len() > n) {
            return Some(format!(
                "the merge `{l} {r}` makes a token longer than any in the vocabulary"
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stages_that_multiply_the_text_are_refused() {
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false});
        let chain = json!({"type": "Sequence", "pretokenizers": vec![byte_level.clone(); 30]});
        assert!(unsafe_for_tokenizers(&json!({"pre_tokenizer": chain})).is_some());
        // The shapes of real tokenizers pass.
        let llama = json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]});
        assert!(
            unsafe_for_tokenizers(&json!({"normalizer": llama, "pre_tokenizer": null})).is_none()
        );
        let qwen = json!({"normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "Sequence",
            "pretokenizers": [{"type": "Split", "pattern": {"Regex": "x"}}, byte_level]}});
        assert!(unsafe_for_tokenizers(&qwen).is_none());
    }

    #[test]
    fn a_merge_longer_than_every_token_is_refused() {
        let json = json!({"model": {"type": "BPE",
            "vocab": {"ab": 0, "cd": 1, "x": 2}, "merges": ["ab cd"]}});
        let why = unsafe_for_tokenizers(&json).unwrap();
        assert!(why.contains("longer than any"), "{why}");
        let fine = json!({"model": {"type": "BPE",
            "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}});
        assert!(unsafe_for_tokenizers(&fine).is_none());
    }

    #[test]
    fn a_merge_without_the_subword_prefix_is_refused_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("nf-hf-prefix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        let json = serde_json::json!({
            "model": {"type": "BPE", "continuing_subword_prefix": "##éé",
                      "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
            "added_tokens": [],
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let e = Tokenizer::from_hf_file(&path).unwrap_err().to_string();
        assert!(e.contains("continuing-subword prefix"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
