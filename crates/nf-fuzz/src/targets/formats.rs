//! Model files: GGUF, safetensors (with an HF folder's config.json), llama2.c. Seeds are
//! the shared Stories260K model and its exports, written by this process's own exporters.

use std::path::{Path, PathBuf};

use nf_formats::GgmlType;
use nf_formats::gguf::GgufFile;
use nf_formats::safetensors::SafeTensors;
use nf_model::Model;
use nf_model::export::{export_hf, gguf::export_gguf};

use super::{FileHarness, FileSet, read};
use crate::{Harness, Setup, Target, Verdict, refused};

pub const GGUF: Target = Target {
    name: "gguf",
    what: "a GGUF model: header, metadata, tensor infos, quantized blocks; then a forward pass",
    setup: gguf_setup,
};

pub const SAFETENSORS: Target = Target {
    name: "safetensors",
    what: "an HF folder: the safetensors header and data, or config.json; then a forward pass",
    setup: hf_setup,
};

pub const LLAMA2C: Target = Target {
    name: "llama2c",
    what: "a llama2.c checkpoint: header (legacy, v1, v2) and weights; then a forward pass",
    setup: llama2c_setup,
};

const GGUF_TOKENS: &[&[u8]] = &[
    b"GGUF",
    b"general.architecture",
    b"llama.context_length",
    b"llama.embedding_length",
    b"llama.attention.head_count",
    b"llama.attention.head_count_kv",
    b"llama.block_count",
    b"general.alignment",
    b"token_embd.weight",
    b"blk.0.attn_q.weight",
];

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\\u0000",
    b"\\ud800",
    b"1e999",
    b"-1",
    b"18446744073709551615",
    b"null",
    b"true",
    b"\"F32\"",
    b"\"BF16\"",
    b"\"I64\"",
    b"\"shape\"",
    b"\"dtype\"",
    b"\"data_offsets\"",
    b"\"__metadata__\"",
];

/// The shared Stories260K model, the seed every model target starts from.
fn stories(s: &Setup) -> Result<Model, String> {
    let path = s.assets.join("llama2c/stories260K.bin");
    Model::open(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// One forward pass of two tokens: what `generate` does first with a model it opened.
fn forward(m: &Model) -> Verdict {
    let vocab = m.config.vocab_size.max(1) as u32;
    let mut cache = m.new_cache(4);
    match m.forward(&mut cache, &[0, 1 % vocab], false) {
        Ok(logits) => {
            assert_eq!(
                logits.len(),
                m.config.vocab_size,
                "logits of the last token"
            );
            Verdict::Accepted
        }
        Err(_) => Verdict::Refused,
    }
}

fn gguf_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let model = stories(s)?;
    let mut seeds = Vec::new();
    for quant in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_0] {
        let path = s.work.join(format!("seed-{quant:?}.gguf"));
        export_gguf(&model, &path, quant, Vec::new()).map_err(|e| e.to_string())?;
        seeds.push(read(&path)?);
    }
    Ok(Box::new(FileHarness {
        seeds,
        dictionary: GGUF_TOKENS,
        file: s.work.join("input.gguf"),
        parse: parse_gguf,
    }))
}

/// Open, touch every tensor's bytes, load the model, run it.
fn parse_gguf(path: &Path) -> Verdict {
    let Ok(g) = GgufFile::open(path) else {
        return Verdict::Refused;
    };
    let bytes: usize = g.tensors.iter().map(|t| g.tensor_data(t).len()).sum();
    std::hint::black_box(bytes);
    match Model::from_gguf(&g) {
        Ok(m) => forward(&m),
        Err(_) => Verdict::Refused,
    }
}

struct HfHarness {
    seeds: Vec<Vec<u8>>,
    files: FileSet,
    dir: PathBuf,
}

const HF_FILES: &[&str] = &["model.safetensors", "config.json"];

fn hf_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let model = stories(s)?;
    let dir = s.work.join("seed-hf");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    export_hf(&model, &dir, &Default::default()).map_err(|e| e.to_string())?;
    let files = FileSet::read(&dir, HF_FILES)?;
    let input = s.work.join("input");
    std::fs::create_dir_all(&input).map_err(|e| e.to_string())?;
    Ok(Box::new(HfHarness {
        seeds: files.seeds(),
        files,
        dir: input,
    }))
}

impl Harness for HfHarness {
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        JSON_TOKENS
    }
    fn run(&mut self, input: &[u8]) -> Verdict {
        if self.files.write(input, &self.dir) == 0 {
            // The header and every tensor's conversion on their own, as `inspect` does.
            if let Ok(st) = SafeTensors::open(self.dir.join(HF_FILES[0])) {
                for t in &st.tensors {
                    let _ = st.to_f32(&t.name);
                }
            }
        }
        match Model::open(&self.dir) {
            Ok(m) => forward(&m),
            Err(_) => Verdict::Refused,
        }
    }
}

fn llama2c_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    Ok(Box::new(FileHarness {
        seeds: vec![read(&s.assets.join("llama2c/stories260K.bin"))?],
        dictionary: &[],
        file: s.work.join("input.bin"),
        parse: open_and_forward,
    }))
}

fn open_and_forward(path: &Path) -> Verdict {
    match Model::open(path) {
        Ok(m) => forward(&m),
        Err(e) => refused(e),
    }
}
