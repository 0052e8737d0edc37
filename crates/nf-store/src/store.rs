//! The model store, `<home>/models/<name>/`.
//!
//! A stored model is a folder holding the model's files as imported (an HF folder's files,
//! a `.gguf`, or a llama2.c `.bin` with its `tokenizer.bin`) and `model.json`, written last:
//! a folder without it is not a stored model. `model.json`:
//!
//! ```json
//! {"format":"neuralforge-model","version":1,"name":"smol","model_format":"hf",
//!  "source":"hf://HuggingFaceTB/SmolLM2-135M@<commit>","added":"2026-12-02T03:00:00.000Z",
//!  "repo":"HuggingFaceTB/SmolLM2-135M","revision":"main","commit":"<sha>","endpoint":"https://huggingface.co",
//!  "files":[{"path":"config.json","size":704,"sha256":"…"}, …]}
//! ```
//!
//! A new or replaced model is assembled in a hidden staging folder and swapped in whole
//! (`nf_formats::atomic::replace`), so a crash leaves the old model or the new one.

use std::io::Write;
use std::path::{Path, PathBuf};

use nf_model::ModelFormat;
use nf_protocol::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::{Result, fail, io_context};

/// The file that makes a folder a stored model.
pub const MODEL_FILE: &str = "model.json";

/// `model.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredModel {
    /// Always `neuralforge-model`.
    pub format: String,
    /// The `model.json` format version, 1.
    pub version: u32,
    /// The name in the store (the folder's name).
    pub name: String,
    /// `hf`, `gguf` or `llama2c` (`unknown` for a pull whose files are no model we read).
    pub model_format: String,
    /// Where it came from: an absolute path, or `hf://REPO@COMMIT`.
    pub source: String,
    /// When it was stored (RFC 3339).
    pub added: String,
    /// The hub repository a pulled model came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The revision asked for (a branch, tag or commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The commit the revision resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The hub it was pulled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The stored files, sorted by path.
    pub files: Vec<StoredFile>,
}

impl StoredModel {
    /// A `model.json` for `files` stored now.
    pub(crate) fn new(
        name: &str,
        model_format: &str,
        source: String,
        files: Vec<StoredFile>,
    ) -> StoredModel {
        StoredModel {
            format: "neuralforge-model".into(),
            version: 1,
            name: name.into(),
            model_format: model_format.into(),
            source,
            added: nf_protocol::rfc3339_now(),
            repo: None,
            revision: None,
            commit: None,
            endpoint: None,
            files,
        }
    }

    /// The stored files' total size.
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// One file of a stored model, relative to its folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredFile {
    /// The path relative to the model's folder.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256, as `sha256sum` prints it.
    pub sha256: String,
}

/// `<home>/models`.
pub fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

/// Refuses a name that is not one plain folder name.
pub fn check_name(name: &str) -> Result<()> {
    if crate::home::is_plain_name(name) {
        Ok(())
    } else {
        Err(fail(
            ErrorCode::BadInput,
            format!("`{name}` is not a model name"),
            "use a plain name such as `smollm2-135m` (letters, digits, - _ .), or --name",
        ))
    }
}

/// The folder of the stored model `name` (checked to be a plain name).
pub fn model_dir(home: &Path, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    Ok(models_dir(home).join(name))
}

/// Reads a stored model's `model.json`.
pub fn read_stored(dir: &Path) -> Result<StoredModel> {
    let path = dir.join(MODEL_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        fail(
            ErrorCode::NotFound,
            format!("{}: {e}", path.display()),
            "`neuralforge models list` shows the stored models",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        fail(
            ErrorCode::Corrupt,
            format!("{}: {e}", path.display()),
            "import or pull the model again with --force",
        )
    })
}

/// Every folder under `<home>/models`, sorted, with its `model.json` or the error reading
/// it (a folder not made by NeuralForge).
pub fn list(home: &Path) -> Vec<(PathBuf, Result<StoredModel>)> {
    crate::home::subdirs(&models_dir(home))
        .into_iter()
        .map(|d| {
            let m = read_stored(&d);
            (d, m)
        })
        .collect()
}

/// Fails when a model named `name` is stored and `force` is not set.
pub(crate) fn refuse_existing(final_dir: &Path, name: &str, force: bool) -> Result<()> {
    if final_dir.exists() && !force {
        return Err(fail(
            ErrorCode::Exists,
            format!("a model named {name} is already stored"),
            "pass --force to replace it, or choose another --name",
        ));
    }
    Ok(())
}

/// Writes `model.json` into `staging` and swaps the folder in as `final_dir` in one step.
pub(crate) fn install(staging: &Path, final_dir: &Path, m: &StoredModel) -> Result<()> {
    let text = serde_json::to_string_pretty(m).expect("model.json serializes");
    let path = staging.join(MODEL_FILE);
    nf_formats::atomic::write_atomic(&path, |w| w.write_all(text.as_bytes()))?;
    nf_formats::atomic::replace(staging, final_dir).map_err(io_context(|| {
        format!("renaming into {}", final_dir.display())
    }))
}

/// What `models import` stores.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The model folder or file.
    pub path: PathBuf,
    /// The name in the store (default: the folder or file name without extension).
    pub name: Option<String>,
    /// A llama2.c tokenizer.bin to store with a .bin checkpoint (default: the
    /// `tokenizer.bin` beside it).
    pub tokenizer: Option<PathBuf>,
    /// Hard-link the files instead of copying them where the file system allows.
    pub link: bool,
    /// Replace a stored model of this name.
    pub force: bool,
}

/// A model just stored.
#[derive(Debug, Clone)]
pub struct Imported {
    /// Its `model.json`.
    pub model: StoredModel,
    /// Its folder in the store.
    pub dir: PathBuf,
    /// Each source file with its sha256, in the order of `model.files`.
    pub sources: Vec<(PathBuf, String)>,
}

/// Copies (or links) a model folder or file into the store with its `model.json`.
pub fn import(home: &Path, a: &ImportOptions) -> Result<Imported> {
    let src = &a.path;
    if !src.exists() {
        return Err(fail(
            ErrorCode::NotFound,
            format!("{} does not exist", src.display()),
            "pass a model folder (config.json + *.safetensors), a .gguf or a llama2.c .bin",
        ));
    }
    let format = ModelFormat::detect(src)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    let final_dir = model_dir(home, &name)?;
    refuse_existing(&final_dir, &name, a.force)?;
    let mut files = source_files(src, format, a.tokenizer.as_deref())?;
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let root = models_dir(home);
    std::fs::create_dir_all(&root)
        .map_err(io_context(|| format!("creating {}", root.display())))?;
    let staging = root.join(format!(".import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(io_context(|| format!("creating {}", staging.display())))?;
    let mut stored = Vec::new();
    let mut sources = Vec::new();
    for (from, to) in &files {
        let dest = staging.join(to);
        let linked = a.link && std::fs::hard_link(from, &dest).is_ok();
        if !linked {
            std::fs::copy(from, &dest).map_err(io_context(|| {
                format!("copying {} to {}", from.display(), dest.display())
            }))?;
        }
        let sha256 = nf_protocol::sha256_file(&dest)
            .map_err(io_context(|| format!("reading {}", dest.display())))?;
        let size = std::fs::metadata(&dest)
            .map_err(io_context(|| format!("reading {}", dest.display())))?
            .len();
        sources.push((from.clone(), sha256.clone()));
        stored.push(StoredFile {
            path: to.clone(),
            size,
            sha256,
        });
    }
    let abs = std::fs::canonicalize(src).unwrap_or_else(|_| src.clone());
    let m = StoredModel::new(&name, format.name(), abs.display().to_string(), stored);
    install(&staging, &final_dir, &m)?;
    Ok(Imported {
        model: m,
        dir: final_dir,
        sources,
    })
}

/// The files to store for a model at `src`: (source file, name in the store).
fn source_files(
    src: &Path,
    format: ModelFormat,
    tokenizer: Option<&Path>,
) -> Result<Vec<(PathBuf, String)>> {
    let file_name = |p: &Path| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let mut files = Vec::new();
    match format {
        ModelFormat::HfDir => {
            let read = io_context(|| format!("reading {}", src.display()));
            for e in std::fs::read_dir(src).map_err(read)? {
                let p = e
                    .map_err(io_context(|| format!("reading {}", src.display())))?
                    .path();
                let n = file_name(&p);
                if p.is_file() && !n.starts_with('.') {
                    files.push((p, n));
                }
            }
        }
        ModelFormat::Gguf => files.push((src.to_path_buf(), file_name(src))),
        ModelFormat::Llama2c => {
            files.push((src.to_path_buf(), file_name(src)));
            let tok = tokenizer.map(Path::to_path_buf).or_else(|| {
                let t = src.with_file_name("tokenizer.bin");
                t.is_file().then_some(t)
            });
            let Some(t) = tok else {
                return Err(fail(
                    ErrorCode::BadInput,
                    format!(
                        "{} is a llama2.c checkpoint, which carries no tokenizer",
                        src.display()
                    ),
                    "pass --tokenizer PATH (its tokenizer.bin) to store it with the model",
                ));
            };
            // The tokenizer must fit the model (llama2.c folders often hold the 32000-token
            // Llama 2 tokenizer.bin beside a small model).
            let model = nf_model::Model::open(src)?;
            let tk = crate::resolve::load_tokenizer(&t, None)?;
            if tk.vocab_size() > model.config.vocab_size {
                return Err(fail(
                    ErrorCode::Mismatch,
                    format!(
                        "{} has {} tokens but the model's vocabulary has {}",
                        t.display(),
                        tk.vocab_size(),
                        model.config.vocab_size
                    ),
                    "pass the tokenizer that belongs to this checkpoint with --tokenizer",
                ));
            }
            files.push((t, "tokenizer.bin".into()));
        }
    }
    Ok(files)
}

/// Removes the stored model `name`: renamed aside first, so a crash midway never leaves a
/// half-deleted model under its name. Returns the folder it had.
pub fn remove(home: &Path, name: &str) -> Result<PathBuf> {
    let dir = model_dir(home, name)?;
    if !dir.is_dir() {
        return Err(fail(
            ErrorCode::NotFound,
            format!("no stored model named {name}"),
            "`neuralforge models list` shows the stored models",
        ));
    }
    let trash = models_dir(home).join(format!(".rm-{name}-{}", std::process::id()));
    std::fs::rename(&dir, &trash).map_err(io_context(|| format!("removing {}", dir.display())))?;
    std::fs::remove_dir_all(&trash)
        .map_err(io_context(|| format!("removing {}", trash.display())))?;
    Ok(dir)
}
