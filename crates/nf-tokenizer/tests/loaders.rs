//! Loader behaviour that needs no model assets: Hugging Face configs beside a
//! `tokenizer.json`, and typed errors (never panics) for bad files.

use std::path::Path;

use nf_formats::GgufFile;
use nf_testkit::temp_dir;
use nf_tokenizer::{Tokenizer, TokenizerError};

/// A tiny WordLevel tokenizer.json: `<s>`/`</s>` special, `<tool>` a plain added token.
const TOKENIZER_JSON: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 5, "content": "<tool>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": false}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "WhitespaceSplit"},
  "post_processor": null,
  "decoder": null,
  "model": {"type": "WordLevel", "vocab": {"hello": 2, "world": 3, "[UNK]": 4, "<tool>": 5}, "unk_token": "[UNK]"}
}"#;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn hf_configs_supply_special_tokens_and_template() {
    let dir = temp_dir("hf-configs");
    write(&dir, "tokenizer.json", TOKENIZER_JSON);
    write(
        &dir,
        "tokenizer_config.json",
        r#"{"bos_token": {"content": "<s>", "special": true}, "eos_token": "</s>", "add_bos_token": true,
            "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#,
    );
    write(
        &dir,
        "generation_config.json",
        r#"{"bos_token_id": 0, "eos_token_id": [1, 3]}"#,
    );
    let tok = Tokenizer::from_hf_dir(&dir).unwrap();
    assert_eq!(tok.kind(), "hf-json");
    assert_eq!(tok.vocab_size(), 6);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(0), Some(1)));
    assert_eq!(tok.eos_ids(), [1, 3]);
    assert!(tok.add_bos_default());
    assert_eq!(tok.chat_template(), Some("D"));

    assert_eq!(
        tok.encode("hello <s> world", true, true).unwrap(),
        [0, 2, 0, 3]
    );
    // As plain text `<s>` is an unknown word; `<tool>` is a non-special added token and is
    // matched either way.
    assert_eq!(
        tok.encode("hello <s> world", false, false).unwrap(),
        [2, 4, 3]
    );
    assert_eq!(
        tok.encode("hello<tool>world", false, false).unwrap(),
        [2, 5, 3]
    );
    assert_eq!(tok.decode(&[0, 2, 5, 3, 1]), "hello<tool>world");

    // A single-string template and no add_bos_token: BOS comes from nowhere, so false.
    write(
        &dir,
        "tokenizer_config.json",
        r#"{"chat_template": "S", "eos_token": null}"#,
    );
    std::fs::remove_file(dir.join("generation_config.json")).unwrap();
    let tok = Tokenizer::from_hf_file(dir.join("tokenizer.json")).unwrap();
    assert_eq!(tok.chat_template(), Some("S"));
    assert!(!tok.add_bos_default());
    assert_eq!(tok.bos_id(), Some(0), "found by its name <s>");
    assert_eq!(tok.eos_id(), Some(1), "found by its name </s>");
}

#[test]
fn bad_hf_files_are_typed_errors() {
    let dir = temp_dir("hf-bad");
    match Tokenizer::from_hf_dir(&dir) {
        Err(TokenizerError::Io { path, .. }) => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected an IO error, got {other:?}"),
    }
    write(&dir, "tokenizer.json", "{ this is not json");
    match Tokenizer::from_hf_dir(&dir) {
        Err(e @ TokenizerError::Corrupt { .. }) => {
            assert!(
                e.to_string().contains("tokenizer.json") && e.to_string().contains("not JSON"),
                "{e}"
            )
        }
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
    for text in [
        "[1, 2]",
        r#"{"model": {"type": "Nonsense"}}"#,
        r#"{"added_tokens": [{"id": -1}]}"#,
    ] {
        write(&dir, "tokenizer.json", text);
        assert!(
            matches!(
                Tokenizer::from_hf_dir(&dir),
                Err(TokenizerError::Corrupt { .. })
            ),
            "{text}"
        );
    }
    write(&dir, "tokenizer.json", TOKENIZER_JSON);
    write(&dir, "tokenizer_config.json", "not json either");
    match Tokenizer::from_hf_dir(&dir) {
        Err(TokenizerError::Corrupt { path, .. }) => {
            assert!(path.ends_with("tokenizer_config.json"))
        }
        other => panic!("expected a corrupt config error, got {other:?}"),
    }
}

#[test]
fn bad_llama2c_files_are_typed_errors() {
    let dir = temp_dir("llama2c-bad");
    let missing = dir.join("nope.bin");
    match Tokenizer::from_llama2c(&missing, None) {
        Err(TokenizerError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected an IO error, got {other:?}"),
    }
    // A valid file: header, then <unk>, BOS, EOS and two pieces (`hi` merges first, then
    // `▁hi`).
    let mut good = 8i32.to_le_bytes().to_vec();
    for (t, s) in [
        ("<unk>", 0.0f32),
        ("\n<s>\n", 0.0),
        ("\n</s>\n", 0.0),
        (" hi", -2.0),
        ("hi", -1.0),
    ] {
        good.extend_from_slice(&s.to_le_bytes());
        good.extend_from_slice(&(t.len() as i32).to_le_bytes());
        good.extend_from_slice(t.as_bytes());
    }
    let path = dir.join("tokenizer.bin");
    std::fs::write(&path, &good).unwrap();
    let tok = Tokenizer::from_llama2c(&path, None).unwrap();
    assert_eq!(tok.vocab_size(), 5);
    assert_eq!(tok.encode("hi", true, false).unwrap(), [1, 3]);
    assert_eq!(tok.decode(&[1, 3]), "hi");
    // With the vocabulary size known (from the model header) every truncation is an
    // error. Without it, a cut between two records looks like a shorter vocabulary, but a
    // cut inside a record is still caught.
    for cut in 0..good.len() {
        std::fs::write(&path, &good[..cut]).unwrap();
        match Tokenizer::from_llama2c(&path, Some(5)) {
            Err(TokenizerError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("cut at {cut}: expected a corrupt-file error, got {other:?}"),
        }
    }
    std::fs::write(&path, &good[..good.len() - 1]).unwrap();
    assert!(matches!(
        Tokenizer::from_llama2c(&path, None),
        Err(TokenizerError::Corrupt { .. })
    ));
    std::fs::write(&path, &good).unwrap();
    assert!(matches!(
        Tokenizer::from_llama2c(&path, Some(6)),
        Err(TokenizerError::Corrupt { .. })
    ));
}

#[test]
fn truncated_real_tokenizer_bin_is_an_error() {
    let assets = nf_testkit::require_assets!();
    let data = std::fs::read(assets.join("llama2c/tok512.bin")).unwrap();
    let dir = temp_dir("tok512-cut");
    let path = dir.join("tok512.bin");
    std::fs::write(&path, &data[..data.len() / 2]).unwrap();
    let err = Tokenizer::from_llama2c(&path, Some(512)).unwrap_err();
    assert!(matches!(err, TokenizerError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("tok512.bin"), "{err}");
}

/// A GGUF v3 file with the given string metadata and no tensors.
fn gguf_with(meta: &[(&str, &str)]) -> Vec<u8> {
    let mut d = b"GGUF".to_vec();
    d.extend_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&0u64.to_le_bytes());
    d.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    let string = |d: &mut Vec<u8>, s: &str| {
        d.extend_from_slice(&(s.len() as u64).to_le_bytes());
        d.extend_from_slice(s.as_bytes());
    };
    for (k, v) in meta {
        string(&mut d, k);
        d.extend_from_slice(&8u32.to_le_bytes()); // string
        string(&mut d, v);
    }
    d
}

#[test]
fn gguf_without_a_usable_tokenizer_is_a_typed_error() {
    let dir = temp_dir("gguf-bad");
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("general.architecture", "llama")], "missing"),
        (&[("tokenizer.ggml.model", "llama")], "missing"),
        (&[("tokenizer.ggml.model", "bert")], "unsupported"),
        (
            &[
                ("tokenizer.ggml.model", "llama"),
                ("tokenizer.ggml.tokens", "not an array"),
            ],
            "corrupt",
        ),
    ];
    for (i, (meta, want)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.gguf"));
        std::fs::write(&path, gguf_with(meta)).unwrap();
        let gguf = GgufFile::open(&path).unwrap();
        let err = Tokenizer::from_gguf(&gguf).unwrap_err();
        let ok = match (*want, &err) {
            ("missing", TokenizerError::MissingMetadata { path: p, .. }) => p == &path,
            ("unsupported", TokenizerError::Unsupported { .. }) => true,
            ("corrupt", TokenizerError::Corrupt { .. }) => true,
            _ => false,
        };
        assert!(ok, "case {i}: expected {want}, got {err:?}");
    }
}

#[test]
fn gguf_with_unknown_pre_tokenizer_is_unsupported() {
    let assets = nf_testkit::require_assets!();
    // The real SmolLM2 metadata works; an unknown `tokenizer.ggml.pre` does not.
    let dir = temp_dir("gguf-pre");
    let path = dir.join("bpe.gguf");
    let mut d = b"GGUF".to_vec();
    d.extend_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&0u64.to_le_bytes());
    d.extend_from_slice(&4u64.to_le_bytes());
    let string = |d: &mut Vec<u8>, s: &str| {
        d.extend_from_slice(&(s.len() as u64).to_le_bytes());
        d.extend_from_slice(s.as_bytes());
    };
    for (k, v) in [
        ("tokenizer.ggml.model", "gpt2"),
        ("tokenizer.ggml.pre", "martian"),
    ] {
        string(&mut d, k);
        d.extend_from_slice(&8u32.to_le_bytes());
        string(&mut d, v);
    }
    for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.merges"] {
        string(&mut d, key);
        d.extend_from_slice(&9u32.to_le_bytes()); // array
        d.extend_from_slice(&8u32.to_le_bytes()); // of strings
        d.extend_from_slice(&1u64.to_le_bytes());
        string(&mut d, "a");
    }
    std::fs::write(&path, d).unwrap();
    let err = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_err();
    assert!(
        matches!(&err, TokenizerError::Unsupported { reason, .. } if reason.contains("martian")),
        "{err:?}"
    );
    drop(assets);
}
