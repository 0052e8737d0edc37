//! Tokenizers written out again (GGUF metadata, `tokenizer.json`) and read back must encode
//! a corpus to the same ids: SentencePiece from llama2.c and GGUF, byte-level BPE from GGUF
//! and from a `tokenizer.json`.

use std::path::Path;

use nf_formats::{GgufFile, GgufWriter};
use nf_testkit::{require_assets, temp_dir};
use nf_tokenizer::Tokenizer;

/// The corpus sample, one piece per paragraph plus some text with digits, accents, tabs
/// and special-token look-alikes.
fn texts(assets: &Path) -> Vec<String> {
    let corpus =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    let mut v: Vec<String> = corpus.split("\n\n").take(60).map(str::to_string).collect();
    v.push(
        "Ünïcödé 12345 6789\ttabs  double  spaces\nnew line — em dash, “quotes” 日本語 🙂".into(),
    );
    v.push("<s> </s> <|im_start|>user\nhi<|im_end|> <unk>".into());
    v
}

fn same_ids(a: &Tokenizer, b: &Tokenizer, texts: &[String], what: &str) {
    assert_eq!(a.vocab_size(), b.vocab_size(), "{what}: vocabulary size");
    assert_eq!(a.bos_id(), b.bos_id(), "{what}: bos");
    assert_eq!(a.eos_id(), b.eos_id(), "{what}: eos");
    assert_eq!(a.add_bos_default(), b.add_bos_default(), "{what}: add_bos");
    for t in texts {
        for special in [false, true] {
            let x = a.encode(t, a.add_bos_default(), special).unwrap();
            let y = b.encode(t, b.add_bos_default(), special).unwrap();
            assert_eq!(x, y, "{what}: {t:?} (parse_special {special})");
        }
    }
}

/// Writes `tok` as a vocab-only GGUF and reads it back.
fn via_gguf(tok: &Tokenizer, dir: &Path) -> Tokenizer {
    let mut w = GgufWriter::new();
    for (k, v) in tok.gguf_metadata(tok.chat_template()).unwrap() {
        w.set(k, v).unwrap();
    }
    let path = dir.join("vocab.gguf");
    w.write(&path).unwrap();
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap()
}

/// Writes `tok`'s Hugging Face files and reads them back.
fn via_hf(tok: &Tokenizer, dir: &Path) -> Tokenizer {
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for (name, bytes) in tok.hf_files(tok.chat_template()).unwrap() {
        std::fs::write(hf.join(name), bytes).unwrap();
    }
    Tokenizer::from_hf_dir(&hf).unwrap()
}

#[test]
fn llama2c_sentencepiece_round_trips_through_gguf_and_tokenizer_json() {
    let assets = require_assets!();
    let dir = temp_dir("tokexport-l2c");
    let t = texts(&assets);
    let tok = Tokenizer::from_llama2c(assets.join("llama2c/tok512.bin"), Some(512)).unwrap();
    same_ids(&tok, &via_gguf(&tok, &dir), &t, "tok512 via GGUF");
    let hf = via_hf(&tok, &dir);
    same_ids(&tok, &hf, &t, "tok512 via tokenizer.json");
    let ids = tok.encode(&t[0], true, false).unwrap();
    assert_eq!(hf.decode(&ids), tok.decode(&ids));
}

#[test]
fn gguf_vocabularies_round_trip() {
    let assets = require_assets!();
    let t = texts(&assets);
    for name in [
        "ggml-vocab-llama-spm.gguf",
        "ggml-vocab-llama-bpe.gguf",
        "ggml-vocab-qwen2.gguf",
    ] {
        let dir = temp_dir("tokexport-gguf");
        let g = GgufFile::open(assets.join("llamacpp-vocab").join(name)).unwrap();
        let tok = Tokenizer::from_gguf(&g).unwrap();
        same_ids(&tok, &via_gguf(&tok, &dir), &t, &format!("{name} via GGUF"));
        same_ids(
            &tok,
            &via_hf(&tok, &dir),
            &t,
            &format!("{name} via tokenizer.json"),
        );
    }
}

#[test]
fn tokenizer_json_byte_level_bpe_goes_into_gguf() {
    let assets = require_assets!();
    let dir = temp_dir("tokexport-hf");
    let t = texts(&assets);
    let tok = Tokenizer::from_hf_file(assets.join("hf-tokenizers/llama3-tokenizer.json")).unwrap();
    let back = via_gguf(&tok, &dir);
    same_ids(&tok, &back, &t, "llama3 tokenizer.json via GGUF");
    assert_eq!(back.kind(), "gguf-gpt2:llama-bpe");
}
