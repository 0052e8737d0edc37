//! Finding and opening a model and its tokenizer from what the user passed: a model path,
//! the name of a stored model, or a run folder made by `train`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use nf_formats::GgufFile;
use nf_model::{Model, ModelFormat};
use nf_protocol::ErrorCode;
use nf_tokenizer::Tokenizer;

use crate::{Result, StoreError, fail, io_context};

/// What to load: the `--model`, `--tokenizer` and `--adapter` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// A model folder (Hugging Face layout), a .gguf, a llama2.c .bin, a stored model's
    /// name, or a run folder.
    pub model: PathBuf,
    /// A tokenizer to use instead of the model's own.
    pub tokenizer: Option<PathBuf>,
    /// A LoRA adapter to merge: a run folder, a PEFT folder or a GGUF LoRA file.
    pub adapter: Option<PathBuf>,
}

/// A model with its tokenizer.
pub struct Loaded {
    /// The model, with any adapter merged.
    pub model: Model,
    /// The tokenizer it was loaded with.
    pub tokenizer: Tokenizer,
    /// How long loading took, in milliseconds.
    pub load_ms: f64,
}

/// `model` may be a path or the name of a model in `<home>/models/`.
pub fn resolve_model_path(model: &Path, home: &Path) -> Result<PathBuf> {
    if model.exists() {
        return Ok(model.to_path_buf());
    }
    let is_plain_name = model.components().count() == 1;
    if is_plain_name {
        let stored = crate::store::models_dir(home).join(model);
        if stored.exists() {
            // A stored model folder holds the files as imported; a single-file model is the
            // only .gguf or .bin inside it.
            return Ok(single_model_file(&stored).unwrap_or(stored));
        }
    }
    Err(fail(
        ErrorCode::NotFound,
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

/// Loads `spec`: a run folder means its result, and an adapter is merged into the base.
pub fn load(spec: &ModelSpec, home: &Path) -> Result<Loaded> {
    let t0 = Instant::now();
    let spec = &resolve_run(spec, home)?;
    let mut loaded = load_base(spec, home)?;
    if let Some(dir) = &spec.adapter {
        let adapter = load_adapter(dir, &loaded.model.config)?;
        nf_model::train::adapter::merge_adapter(&mut loaded.model, &adapter);
    }
    loaded.load_ms = t0.elapsed().as_secs_f64() * 1e3;
    Ok(loaded)
}

/// A LoRA adapter for a model of configuration `c`: a PEFT folder, a run folder holding
/// one, or a GGUF LoRA file (as `export --format gguf-lora` and llama.cpp write).
pub fn load_adapter(
    path: &Path,
    c: &nf_model::Config,
) -> Result<nf_model::train::adapter::Adapter> {
    if path.is_file() {
        return Ok(nf_model::train::adapter_gguf::load_gguf_lora(path, c)?);
    }
    let dir = adapter_dir(path)?;
    Ok(nf_model::train::adapter::load_peft(&dir, c)?)
}

/// `--model RUN_DIR` (a folder made by `train`) means the run's result: its base model with
/// its adapter, or its fully fine-tuned model, with the tokenizer the run used. Any other
/// spec is returned as it is.
pub fn resolve_run(spec: &ModelSpec, home: &Path) -> Result<ModelSpec> {
    let path = resolve_model_path(&spec.model, home)?;
    if !path.is_dir() || !nf_train::run::is_run(&path) {
        return Ok(spec.clone());
    }
    let cfg = nf_train::run::RunConfig::read(&path)?;
    let tokenizer = spec.tokenizer.clone().or(cfg.tokenizer);
    if cfg.method == nf_train::run::RunMethod::Full {
        let model = path.join(nf_train::run::MODEL_DIR);
        if !model.join("config.json").is_file() {
            return Err(fail(
                ErrorCode::NotFound,
                format!("{} has no final model yet", path.display()),
                format!(
                    "finish the run with `neuralforge train --resume {}`",
                    path.display()
                ),
            ));
        }
        return Ok(ModelSpec {
            model,
            tokenizer,
            adapter: spec.adapter.clone(),
        });
    }
    Ok(ModelSpec {
        model: cfg.model,
        tokenizer,
        adapter: Some(spec.adapter.clone().unwrap_or(path)),
    })
}

/// A PEFT adapter folder, or a run folder holding one in `adapter/`.
pub fn adapter_dir(dir: &Path) -> Result<PathBuf> {
    for d in [dir.to_path_buf(), dir.join(nf_train::run::ADAPTER_DIR)] {
        if d.join("adapter_config.json").is_file() {
            return Ok(d);
        }
    }
    let hint = if dir.join(nf_train::run::MODEL_DIR).is_dir() {
        format!(
            "this run trained every weight: pass --model {} instead",
            dir.display()
        )
    } else {
        "pass a run folder made by `neuralforge train` with LoRA, or a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)".into()
    };
    Err(fail(
        ErrorCode::NotFound,
        format!("no LoRA adapter in {}", dir.display()),
        hint,
    ))
}

/// Loads the model `spec` names (a path or a stored name, not a run) with its tokenizer,
/// without merging any adapter.
pub fn load_base(spec: &ModelSpec, home: &Path) -> Result<Loaded> {
    let t0 = Instant::now();
    let path = resolve_model_path(&spec.model, home)?;
    let format = ModelFormat::detect(&path)?;
    let (model, own_tokenizer) = match format {
        ModelFormat::Gguf => {
            let g = GgufFile::open(&path)?;
            let model = Model::from_gguf(&g)?;
            let tok = if spec.tokenizer.is_none() {
                Some(Tokenizer::from_gguf(&g)?)
            } else {
                None
            };
            (model, tok)
        }
        ModelFormat::HfDir => {
            let model = Model::open(&path)?;
            let tok = if spec.tokenizer.is_none() {
                Some(Tokenizer::from_hf_dir(&path)?)
            } else {
                None
            };
            (model, tok)
        }
        ModelFormat::Llama2c => (Model::open(&path)?, None),
    };
    let tokenizer = match (own_tokenizer, &spec.tokenizer) {
        (Some(t), _) => t,
        (None, Some(tp)) => load_tokenizer(tp, Some(model.config.vocab_size))?,
        // A llama2.c checkpoint in the model store keeps its tokenizer beside it.
        (None, None)
            if path.starts_with(crate::store::models_dir(home))
                && path.with_file_name("tokenizer.bin").is_file() =>
        {
            load_tokenizer(
                &path.with_file_name("tokenizer.bin"),
                Some(model.config.vocab_size),
            )?
        }
        (None, None) => {
            return Err(fail(
                ErrorCode::BadInput,
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
    if nf_formats::gguf::has_gguf_magic(path)? {
        let g = GgufFile::open(path)?;
        return Ok(Tokenizer::from_gguf(&g)?);
    }
    // The llama2.c reader is the fallback for any other file, so its errors say which
    // reading was tried.
    Tokenizer::from_llama2c(path, vocab_hint).map_err(|source| StoreError::Llama2cTokenizer {
        path: path.to_path_buf(),
        source,
    })
}

/// The tokenizer of the model at `model` (a path or a stored name) without loading its
/// weights, and the path it was read from: `tokenizer` when given, else the model's own (a
/// folder's tokenizer.json, a GGUF's vocabulary, or the tokenizer.bin a llama2.c checkpoint
/// in the store keeps beside it).
pub fn model_tokenizer(
    model: &Path,
    tokenizer: Option<&Path>,
    home: &Path,
) -> Result<(Tokenizer, PathBuf)> {
    let path = resolve_model_path(model, home)?;
    let own = if let Some(t) = tokenizer {
        t.to_path_buf()
    } else if path.is_dir() || nf_formats::gguf::has_gguf_magic(&path).unwrap_or(false) {
        path.clone()
    } else if path.starts_with(crate::store::models_dir(home))
        && path.with_file_name("tokenizer.bin").is_file()
    {
        path.with_file_name("tokenizer.bin")
    } else {
        return Err(fail(
            ErrorCode::BadInput,
            format!("{} carries no tokenizer", path.display()),
            "pass --tokenizer PATH (for llama2.c checkpoints: the tokenizer.bin that goes with it)",
        ));
    };
    Ok((load_tokenizer(&own, None)?, own))
}

/// A tokenizer that can produce ids the model has no embedding for is the wrong tokenizer.
fn check_match(model: &Model, tok: &Tokenizer) -> Result<()> {
    let (tv, mv) = (tok.vocab_size(), model.config.vocab_size);
    if tv > mv {
        return Err(fail(
            ErrorCode::Mismatch,
            format!(
                "tokenizer has {tv} tokens but the model's vocabulary has {mv}: they do not belong together"
            ),
            "pass the tokenizer that came with this model (--tokenizer)",
        ));
    }
    Ok(())
}

/// sha256 over a model's files (a folder's `config.json` and `*.safetensors`, or the
/// single file), so a resume notices a replaced base; and each file with its own sha256.
pub fn hash_model_files(path: &Path) -> Result<(String, Vec<(PathBuf, String)>)> {
    let mut files = Vec::new();
    if path.is_dir() {
        let reading = || format!("reading {}", path.display());
        for e in std::fs::read_dir(path).map_err(io_context(reading))? {
            let p = e.map_err(io_context(reading))?.path();
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            if name == "config.json" || name.ends_with(".safetensors") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut all = String::new();
    let mut each = Vec::new();
    for f in files {
        let h = nf_protocol::sha256_file(&f)
            .map_err(io_context(|| format!("reading {}", f.display())))?;
        all.push_str(&h);
        each.push((f, h));
    }
    Ok((nf_protocol::sha256_hex(all.as_bytes()), each))
}
