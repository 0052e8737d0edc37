//! Finding and opening a model and its tokenizer from the `--model` / `--tokenizer` flags.

use nf_protocol::ErrorCode;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use nf_formats::GgufFile;
use nf_model::{Model, ModelFormat};
use nf_tokenizer::Tokenizer;

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

/// Makes the home owner-only (0700) before any command writes to it: created so when it
/// is missing, and tightened when it exists with group or other access (homes made by
/// earlier versions took the umask, often leaving uploaded documents readable by every
/// local user). Everything NeuralForge stores lives under it, so this one folder's mode
/// guards datasets, uploads, runs and the audit log alike.
pub fn private_home(home: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        match std::fs::metadata(home) {
            Ok(m) if m.is_dir() => {
                // Only a folder this user owns; someone else's is theirs to set.
                let mine = m.uid() == current_uid();
                if mine && m.mode() & 0o077 != 0 {
                    let perms = std::fs::Permissions::from_mode(m.mode() & 0o7700);
                    std::fs::set_permissions(home, perms)
                        .with_context(|| format!("making {} owner-only", home.display()))?;
                }
            }
            Ok(_) => {}
            Err(_) => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(home)
                    .with_context(|| format!("creating {}", home.display()))?;
            }
        }
    }
    Ok(())
}

/// This process's user id, read from `/proc/self` (no libc call needed).
#[cfg(unix)]
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
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

/// A model with its tokenizer.
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Tokenizer,
    pub load_ms: f64,
}

pub fn load(args: &ModelArgs, home: &Path) -> Result<Loaded> {
    let t0 = Instant::now();
    let args = &resolve_run(args, home)?;
    let mut loaded = load_base(args, home)?;
    if let Some(dir) = &args.adapter {
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
/// its adapter, or its fully fine-tuned model, with the tokenizer the run used.
pub fn resolve_run(args: &ModelArgs, home: &Path) -> Result<ModelArgs> {
    let path = resolve_model_path(&args.model, home)?;
    let run_json = path.join("run.json");
    if !path.is_dir() || !run_json.is_file() {
        return Ok(args.clone());
    }
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&run_json)
            .with_context(|| format!("reading {}", run_json.display()))?,
    )
    .map_err(|e| {
        user_error(
            ErrorCode::Corrupt,
            format!("{}: {e}", run_json.display()),
            "the run folder is damaged",
        )
    })?;
    let tokenizer = args
        .tokenizer
        .clone()
        .or_else(|| v["tokenizer"].as_str().map(PathBuf::from));
    if v["method"] == "full" {
        let model = path.join("model");
        if !model.join("config.json").is_file() {
            return Err(user_error(
                ErrorCode::NotFound,
                format!("{} has no final model yet", path.display()),
                format!(
                    "finish the run with `neuralforge train --resume {}`",
                    path.display()
                ),
            ));
        }
        return Ok(ModelArgs {
            model,
            tokenizer,
            adapter: args.adapter.clone(),
        });
    }
    let base = v["model"].as_str().map(PathBuf::from).ok_or_else(|| {
        user_error(
            ErrorCode::Corrupt,
            format!("{} names no base model", run_json.display()),
            "the run folder is damaged",
        )
    })?;
    Ok(ModelArgs {
        model: base,
        tokenizer,
        adapter: Some(args.adapter.clone().unwrap_or(path)),
    })
}

/// A PEFT adapter folder, or a run folder holding one in `adapter/`.
pub fn adapter_dir(dir: &Path) -> Result<PathBuf> {
    for d in [dir.to_path_buf(), dir.join("adapter")] {
        if d.join("adapter_config.json").is_file() {
            return Ok(d);
        }
    }
    let hint = if dir.join("model").is_dir() {
        format!(
            "this run trained every weight: pass --model {} instead",
            dir.display()
        )
    } else {
        "pass a run folder made by `neuralforge train` with LoRA, or a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)".into()
    };
    Err(user_error(
        ErrorCode::NotFound,
        format!("no LoRA adapter in {}", dir.display()),
        hint,
    ))
}

pub fn load_base(args: &ModelArgs, home: &Path) -> Result<Loaded> {
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
        // A llama2.c checkpoint in the model store keeps its tokenizer beside it.
        (None, None)
            if path.starts_with(home.join("models"))
                && path.with_file_name("tokenizer.bin").is_file() =>
        {
            load_tokenizer(
                &path.with_file_name("tokenizer.bin"),
                Some(model.config.vocab_size),
            )?
        }
        (None, None) => {
            return Err(user_error(
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
            ErrorCode::Mismatch,
            format!(
                "tokenizer has {tv} tokens but the model's vocabulary has {mv}: they do not belong together"
            ),
            "pass the tokenizer that came with this model (--tokenizer)",
        ));
    }
    Ok(())
}
