//! Finding and opening a model and its tokenizer from the `--model` / `--tokenizer` flags.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use nf_data::Tokenizer;
use nf_formats::GgufFile;
use nf_model::{Model, ModelFormat};

use crate::cli::ModelArgs;
use crate::errors::user_error;

/// The NeuralForge home: `--home`, else `$NEURALFORGE_HOME` (clap reads both), else the
/// platform data dir (`$XDG_DATA_HOME/neuralforge` or `~/.local/share/neuralforge`).
pub fn home_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(h) = flag {
        return h.to_path_buf();
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("neuralforge");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/neuralforge")
}

/// `--model` may be a path or the name of a model in `<home>/models/`.
pub fn resolve_model_path(model: &Path, home: &Path) -> Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    let is_plain_name = model.components().count() == 1;
    if is_plain_name {
        let stored = home.join("models").join(model);
        if stored.exists() {
            // A stored model folder holds the files as imported; a single-file model is the
            // only .gguf or .bin inside it.
            return Ok(single_model_file(&stored).unwrap_or(stored));
        }
    }
    Err(user_error(
        "not_found",
        format!("model not found: {}", model.display()),
        "pass a model folder (config.json + *.safetensors), a .gguf file, a llama2.c .bin, or a name under <home>/models/",
    ))
}

fn single_model_file(dir: &Path) -> Option<PathBuf> {
    if dir.join("config.json").is_file() {
        return None;
    }
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "gguf" || e == "bin")
                && !p.ends_with("tokenizer.bin")
        })
        .collect();
    (files.len() == 1).then(|| files[0].clone())
}

/// A model with its tokenizer.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_ms: f64,
}

pub fn load(args: &ModelArgs, home: &Path) -> Result<Loaded> {
    let t0 = Instant::now();
    let path = resolve_model_path(&args.model, home)?;
    let format = ModelFormat::detect(&path)?;
    let (model, own_tokenizer) = match format {
        ModelFormat::Gguf => {
            let g = GgufFile::open(&path)?;
            let model = Model::from_gguf(&g)?;
            let tok = if args.tokenizer.is_none() {
                Some(Tokenizer::from_gguf(&g)?)
            } else {
                None
            };
            (model, tok)
        }
        ModelFormat::HfDir => {
            let model = Model::open(&path)?;
            let tok = if args.tokenizer.is_none() {
                Some(Tokenizer::from_hf_dir(&path)?)
            } else {
                None
            };
            (model, tok)
        }
        ModelFormat::Llama2c => (Model::open(&path)?, None),
    };
    let tokenizer = match (own_tokenizer, &args.tokenizer) {
        (Some(t), _) => t,
        (None, Some(tp)) => load_tokenizer(tp, Some(model.config.vocab_size))?,
        (None, None) => {
            return Err(user_error(
                "bad_input",
                format!(
                    "{} is a llama2.c checkpoint, which carries no tokenizer",
                    path.display()
                ),
                "pass --tokenizer PATH (the llama2.c tokenizer.bin that goes with it)",
            ));
        }
    };
    check_match(&model, &tokenizer)?;
    Ok(Loaded {
        model,
        tokenizer,
        load_ms: t0.elapsed().as_secs_f64() * 1e3,
    })
}

/// Opens a tokenizer file by its kind: `tokenizer.json`, a `.gguf`, a folder with
/// `tokenizer.json`, or a llama2.c `tokenizer.bin`.
pub fn load_tokenizer(path: &Path, vocab_hint: Option<usize>) -> Result<Tokenizer> {
    if path.is_dir() {
        return Ok(Tokenizer::from_hf_dir(path)?);
    }
    if path.extension().is_some_and(|e| e == "json") {
        return Ok(Tokenizer::from_hf_file(path)?);
    }
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
        .map_err(|e| nf_formats::FormatError::io(path, e))?;
    if n == 4 && &magic == nf_formats::gguf::GGUF_MAGIC {
        let g = GgufFile::open(path)?;
        return Ok(Tokenizer::from_gguf(&g)?);
    }
    Tokenizer::from_llama2c(path, vocab_hint)
        .with_context(|| format!("reading {} as a llama2.c tokenizer.bin", path.display()))
}

/// A tokenizer that can produce ids the model has no embedding for is the wrong tokenizer.
fn check_match(model: &Model, tok: &Tokenizer) -> Result<()> {
    let (tv, mv) = (tok.vocab_size(), model.config.vocab_size);
    if tv > mv {
        return Err(user_error(
            "mismatch",
            format!(
                "tokenizer has {tv} tokens but the model's vocabulary has {mv}: they do not belong together"
            ),
            "pass the tokenizer that came with this model (--tokenizer)",
        ));
    }
    Ok(())
}
