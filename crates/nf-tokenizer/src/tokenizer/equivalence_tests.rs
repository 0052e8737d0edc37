//! Our fast paths against their references, on real vocabularies and the prose corpus:
//! SentencePiece segmentation and caching against merging whole texts at once, and our
//! byte-level pre-tokenization against the `tokenizers` pipeline with the same steps.

use std::path::Path;

use nf_formats::GgufFile;

use super::{Engine, Tokenizer};

/// The corpus files plus llama.cpp's test inputs (odd whitespace, digits, scripts).
fn texts(assets: &Path) -> Vec<String> {
    let mut out: Vec<String> = [
        "tinyshakespeare.txt",
        "sotu.txt",
        "wizard_of_oz.txt",
        "tinystories_sample_197k.txt",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(assets.join("corpus").join(f)).unwrap())
    .collect();
    // Keep the references' cost down: the unsegmented SentencePiece merge of one long
    // line is the slow case these tests exist to avoid elsewhere.
    for t in &mut out {
        let mut end = t.len().min(300_000);
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    let inp =
        std::fs::read_to_string(assets.join("llamacpp-vocab/ggml-vocab-qwen35.gguf.inp")).unwrap();
    out.push(inp.replace("\n__ggml_vocab_test__\n", "\n"));
    out.push(inp.replace("\n__ggml_vocab_test__\n", "  \n \t"));
    out
}

fn load(path: &Path) -> Tokenizer {
    Tokenizer::from_gguf(&GgufFile::open(path).unwrap()).unwrap()
}

#[test]
fn spm_segmented_and_cached_equals_whole_text_merge() {
    let assets = nf_testkit::require_assets!();
    let tok = load(&assets.join("llamacpp-vocab/ggml-vocab-llama-spm.gguf"));
    let Engine::Spm(spm) = &tok.engine else {
        panic!("expected SentencePiece");
    };
    for text in texts(&assets) {
        // The reference merges each whole text (up to 300 kB) as one symbol list.
        let mut fast = Vec::new();
        spm.encode(&text, true, &mut fast);
        let mut reference = Vec::new();
        spm.encode_unsegmented(&text, true, &mut reference);
        assert_eq!(fast.len(), reference.len());
        assert!(fast == reference, "segmented SentencePiece differs");
    }
}

#[test]
fn byte_level_splitting_equals_tokenizers_pipeline() {
    let assets = nf_testkit::require_assets!();
    let mut files: Vec<_> = ["llama-bpe", "qwen2", "qwen35", "gpt-2"]
        .iter()
        .map(|n| assets.join(format!("llamacpp-vocab/ggml-vocab-{n}.gguf")))
        .collect();
    files.push(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf"));
    let texts = texts(&assets);
    for path in files {
        let tok = load(&path);
        let Engine::Bpe(bpe) = &tok.engine else {
            panic!("expected byte-level BPE");
        };
        let reference = bpe.reference_pipeline();
        for text in &texts {
            let mut fast = Vec::new();
            bpe.encode(text, &mut fast).unwrap();
            let slow = reference.encode_fast(text.as_str(), false).unwrap();
            assert!(fast == slow.get_ids(), "{}: ids differ", path.display());
        }
    }
}

#[test]
fn hf_fast_path_equals_tokenizers_pipeline() {
    let assets = nf_testkit::require_assets!();
    let path = assets.join("hf-tokenizers/llama3-tokenizer.json");
    let tok = Tokenizer::from_hf_file(&path).unwrap();
    assert!(
        matches!(tok.engine, Engine::Bpe(_)),
        "llama3 json should take the fast path"
    );
    let reference = tokenizers::Tokenizer::from_file(&path).unwrap();
    for text in texts(&assets) {
        let fast = tok.encode(&text, false, false).unwrap();
        let slow = reference.encode_fast(text.as_str(), false).unwrap();
        assert!(fast == slow.get_ids(), "llama3 tokenizer.json: ids differ");
    }
}
