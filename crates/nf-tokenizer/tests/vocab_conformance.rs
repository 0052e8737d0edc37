//! Conformance with llama.cpp's tokenizer test vectors (the `.inp`/`.out` files beside each
//! vocab-only GGUF in `shared/assets/llamacpp-vocab`), and agreement between loaders that
//! hold the same vocabulary in different formats.

mod common;

use common::{check_cases, read_cases, vocab_files};
use nf_formats::GgufFile;
use nf_tokenizer::Tokenizer;

fn load_gguf(path: &std::path::Path) -> Tokenizer {
    let gguf = GgufFile::open(path).expect("open gguf");
    Tokenizer::from_gguf(&gguf).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every vocab GGUF encodes every one of its cases (no BOS, specials as text) to the
/// expected ids. This covers llama-spm, phi-3, llama-bpe, qwen2, qwen35 and gpt-2.
#[test]
fn every_vocab_gguf_matches_llamacpp_vectors() {
    let assets = nf_testkit::require_assets!();
    let files = vocab_files(&assets);
    assert!(
        files.len() >= 6,
        "expected at least 6 vocab files, found {files:?}"
    );
    for path in files {
        let tok = load_gguf(&path);
        let cases = read_cases(&path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        check_cases(&name, &cases, |t| tok.encode(t, false, false).unwrap());
    }
}

/// Decoding what we encoded gives the input back. Byte-level BPE is lossless outright;
/// SentencePiece adds a dummy-prefix space that decode removes again, so the round trip is
/// exact for inputs without `▁` (U+2581), which SentencePiece cannot tell from a space.
#[test]
fn decode_inverts_encode_on_every_case() {
    let assets = nf_testkit::require_assets!();
    for path in vocab_files(&assets) {
        let tok = load_gguf(&path);
        for case in read_cases(&path) {
            if case.text.contains('▁') {
                continue;
            }
            let ids = tok.encode(&case.text, false, false).unwrap();
            assert_eq!(
                tok.decode(&ids),
                case.text,
                "{}: {:?}",
                tok.kind(),
                case.text
            );
            // With BOS in front, decode skips it and the rule is the same.
            let with_bos = tok.encode(&case.text, true, false).unwrap();
            assert_eq!(tok.decode(&with_bos), case.text, "{}", tok.kind());
            // Streaming: the tokens' bytes concatenated are the decoded bytes, up to the
            // dummy-prefix space.
            let streamed: Vec<u8> = ids.iter().flat_map(|&i| tok.token_bytes(i)).collect();
            let streamed = String::from_utf8_lossy(&streamed).into_owned();
            let expected = if tok.kind() == "gguf-llama" && !case.text.is_empty() {
                format!(" {}", case.text)
            } else {
                case.text.clone()
            };
            assert_eq!(streamed, expected, "{}", tok.kind());
        }
    }
}

/// Meta's Llama 3 tokenizer in Hugging Face form, loaded through `from_hf_file`, gives the
/// same ids as the llama-bpe GGUF on all of its cases.
#[test]
fn llama3_tokenizer_json_agrees_with_llama_bpe_gguf() {
    let assets = nf_testkit::require_assets!();
    let tok = Tokenizer::from_hf_file(assets.join("hf-tokenizers/llama3-tokenizer.json")).unwrap();
    assert_eq!(tok.kind(), "hf-json");
    assert_eq!(tok.vocab_size(), 128_256);
    let gguf_path = assets.join("llamacpp-vocab/ggml-vocab-llama-bpe.gguf");
    let gguf = load_gguf(&gguf_path);
    let cases = read_cases(&gguf_path);
    check_cases("llama3-tokenizer.json", &cases, |t| {
        tok.encode(t, false, false).unwrap()
    });
    for c in &cases {
        let ids = tok.encode(&c.text, false, false).unwrap();
        assert_eq!(tok.decode(&ids), c.text);
    }
    assert_eq!(tok.bos_id(), gguf.bos_id());
    assert_eq!(tok.eos_id(), gguf.eos_id());
    assert_eq!(tok.eos_ids(), gguf.eos_ids());
    // This is Llama 3.0's vocabulary: 128008 is still a reserved token, not <|eom_id|>.
    assert_eq!(tok.eos_ids(), [128001, 128009]);
    // Specials are text unless asked for.
    let text = "<|start_header_id|>user<|end_header_id|>";
    assert_eq!(
        tok.encode(text, false, true).unwrap(),
        [128006, 882, 128007]
    );
    assert_eq!(
        tok.encode(text, false, false).unwrap(),
        gguf.encode(text, false, false).unwrap()
    );
    assert!(tok.encode(text, false, false).unwrap().len() > 3);
}

/// llama2.c's `tokenizer.bin` is the Llama 2 SentencePiece vocabulary; it must give the
/// llama-spm GGUF's ids on all of that file's cases.
#[test]
fn llama2c_tokenizer_bin_agrees_with_llama_spm_gguf() {
    let assets = nf_testkit::require_assets!();
    let tok = Tokenizer::from_llama2c(assets.join("llama2c/tokenizer.bin"), None).unwrap();
    assert_eq!(tok.kind(), "llama2c-spm");
    assert_eq!(tok.vocab_size(), 32_000);
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(tok.add_bos_default());
    let gguf_path = assets.join("llamacpp-vocab/ggml-vocab-llama-spm.gguf");
    let cases = read_cases(&gguf_path);
    check_cases("tokenizer.bin", &cases, |t| {
        tok.encode(t, false, false).unwrap()
    });
    let gguf = load_gguf(&gguf_path);
    for c in &cases {
        let ids = tok.encode(&c.text, true, false).unwrap();
        assert_eq!(ids, gguf.encode(&c.text, true, false).unwrap());
        assert_eq!(tok.decode(&ids), gguf.decode(&ids));
    }
}

/// Metadata each vocab declares: BOS/EOS, end-of-generation ids, whether BOS is added.
#[test]
fn vocab_metadata_is_read() {
    let assets = nf_testkit::require_assets!();
    let dir = assets.join("llamacpp-vocab");
    let spm = load_gguf(&dir.join("ggml-vocab-llama-spm.gguf"));
    assert_eq!(spm.kind(), "gguf-llama");
    assert_eq!(
        (spm.bos_id(), spm.eos_id(), spm.eos_ids()),
        (Some(1), Some(2), &[2][..])
    );
    assert!(spm.add_bos_default());
    assert_eq!(spm.id_to_token(1), Some("<s>"));
    assert_eq!(spm.token_to_id("▁Hello"), Some(15043));
    assert_eq!(spm.token_bytes(13), b"\n"); // <0x0A>
    assert!(spm.token_bytes(1).is_empty());

    let bpe = load_gguf(&dir.join("ggml-vocab-llama-bpe.gguf"));
    assert_eq!(bpe.kind(), "gguf-gpt2:llama-bpe");
    assert!(
        bpe.add_bos_default(),
        "llama.cpp adds BOS for llama-bpe by default"
    );
    assert_eq!(bpe.vocab_size(), 128_256);

    let phi3 = load_gguf(&dir.join("ggml-vocab-phi-3.gguf"));
    let end = phi3.token_to_id("<|end|>").unwrap();
    assert!(phi3.eos_ids().contains(&32000) && phi3.eos_ids().contains(&end));
    assert!(phi3.chat_template().unwrap().contains("<|assistant|>"));

    let qwen = load_gguf(&dir.join("ggml-vocab-qwen2.gguf"));
    assert_eq!(qwen.kind(), "gguf-gpt2:qwen2");
    assert!(!qwen.add_bos_default());
    assert_eq!(qwen.eos_ids(), [151643, 151645]); // <|endoftext|>, <|im_end|>

    let gpt2 = load_gguf(&dir.join("ggml-vocab-gpt-2.gguf"));
    assert_eq!(gpt2.eos_ids(), [50256]);
}
