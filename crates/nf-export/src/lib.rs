#![warn(missing_docs)]
//! Export: a run (or any model) as a Hugging Face folder, a PEFT adapter, a GGUF, a GGUF
//! LoRA, or an Ollama folder.
//!
//! Everything is written to a staging path beside the destination (`.NAME.nf-export-PID`),
//! read back with our own readers and compared with the in-memory fine-tuned model (the
//! parity check, [`verify`], on `nf_model::export::parity`), and only then renamed into
//! place. A failure at any step removes the staging path, so a failed export leaves nothing
//! behind and never touches an existing export (which `force` replaces only with a
//! complete, checked one).
//!
//! - [`source`]: what the export is made from (a finished run, a model, an adapter).
//! - [`mod@write`]: the files of each format, and the Ollama Modelfile.
//! - [`verify`]: reading the staged export back and comparing it.

pub mod source;
pub mod verify;
pub mod write;

use std::path::{Path, PathBuf};

use nf_formats::GgmlType;
use nf_protocol::ErrorCode;
use nf_store::StoreError;

pub use source::{Source, open_source};
pub use verify::Verification;

/// An export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// A Hugging Face folder (safetensors, config, tokenizer).
    Hf,
    /// A PEFT adapter folder.
    Peft,
    /// One GGUF file.
    Gguf,
    /// A GGUF LoRA adapter, as llama.cpp reads with `--lora`.
    GgufLora,
    /// A folder with `model.gguf` and a Modelfile.
    Ollama,
}

impl ExportFormat {
    /// Parses `--format`.
    pub fn parse(s: &str) -> Result<ExportFormat> {
        Ok(match s {
            "hf" => ExportFormat::Hf,
            "peft" => ExportFormat::Peft,
            "gguf" => ExportFormat::Gguf,
            "gguf-lora" => ExportFormat::GgufLora,
            "ollama" => ExportFormat::Ollama,
            other => {
                return Err(fail(
                    ErrorCode::BadInput,
                    format!("unknown --format `{other}`"),
                    "use hf, peft, gguf, gguf-lora or ollama",
                ));
            }
        })
    }

    /// The name `--format` takes.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::Hf => "hf",
            ExportFormat::Peft => "peft",
            ExportFormat::Gguf => "gguf",
            ExportFormat::GgufLora => "gguf-lora",
            ExportFormat::Ollama => "ollama",
        }
    }

    /// Whether it holds the adapter alone.
    pub fn adapter_only(self) -> bool {
        matches!(self, ExportFormat::Peft | ExportFormat::GgufLora)
    }

    /// Whether it is a folder (else one file).
    pub fn is_dir(self) -> bool {
        matches!(
            self,
            ExportFormat::Hf | ExportFormat::Peft | ExportFormat::Ollama
        )
    }

    /// The type of the exported matrices: `quant` (`--quant`) where the format takes one
    /// (GGUF and Ollama, f16 by default), f32 elsewhere.
    pub fn quant(self, quant: Option<&str>) -> Result<GgmlType> {
        let quantizable = matches!(self, ExportFormat::Gguf | ExportFormat::Ollama);
        match quant {
            None if quantizable => Ok(GgmlType::F16),
            None => Ok(GgmlType::F32),
            Some(q) if quantizable => parse_quant(q),
            Some("f32") => Ok(GgmlType::F32),
            Some(q) => Err(fail(
                ErrorCode::BadInput,
                format!("--quant {q} does not apply to --format {}", self.name()),
                "hf, peft and gguf-lora exports are f32; quantize with --format gguf or ollama",
            )),
        }
    }
}

fn parse_quant(s: &str) -> Result<GgmlType> {
    Ok(match s {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        other => {
            return Err(fail(
                ErrorCode::BadInput,
                format!("unknown --quant `{other}`"),
                "use f32, f16, bf16, q8_0, q4_0 or q4_1",
            ));
        }
    })
}

/// What to export, and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// A run folder, a model path or a stored model's name.
    pub source: PathBuf,
    /// The format to write.
    pub format: ExportFormat,
    /// The matrices' type ([`ExportFormat::quant`]).
    pub quant: GgmlType,
    /// The destination file or folder.
    pub out: PathBuf,
    /// Replace `out` (only once the new export is complete and checked).
    pub force: bool,
    /// Read the export back and compare it with the source model.
    pub verify: bool,
    /// A tokenizer to use instead of the source's own.
    pub tokenizer: Option<PathBuf>,
    /// A LoRA adapter to export with (or merged into) the model.
    pub adapter: Option<PathBuf>,
    /// A chat template's text to write instead of the tokenizer's own.
    pub chat_template: Option<String>,
}

/// A finished export.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Files in the export (relative names) and their total size.
    pub files: Vec<String>,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Matrices stored as f16 because their rows are not whole blocks of the quant type.
    pub fallbacks: Vec<String>,
    /// Things the user should know (a Modelfile without a chat template).
    pub notes: Vec<String>,
}

/// Exports `o.source` to `o.out`. `on_verify` hears the parity check's result before a
/// failing check ends the export with an error.
pub fn export(
    home: &Path,
    o: &ExportOptions,
    on_verify: &mut dyn FnMut(&Verification),
) -> Result<Exported> {
    if o.out.exists() && !o.force {
        return Err(fail(
            ErrorCode::Exists,
            format!("{} already exists", o.out.display()),
            "pick another --out, or pass --force to replace it once the new export is complete",
        ));
    }
    let src = open_source(home, o)?;
    let template = o
        .chat_template
        .clone()
        .or_else(|| src.tokenizer.chat_template().map(str::to_string));
    let parent = match o.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io_context(|| {
        format!("creating the output folder {}", parent.display())
    }))?;
    let name = o
        .out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| {
            fail(
                ErrorCode::BadInput,
                format!("--out {} names no file or folder", o.out.display()),
                "pass a path such as exports/my-model.gguf",
            )
        })?;
    // Leftovers of killed exports to this path go first: nothing else removes them.
    nf_formats::atomic::remove_stale(&o.out, "nf-export");
    let mut staging = Staging {
        path: parent.join(format!(".{name}.nf-export-{}", std::process::id())),
        keep: false,
    };
    let _ = std::fs::remove_dir_all(&staging.path);
    let _ = std::fs::remove_file(&staging.path);
    if o.format.is_dir() {
        std::fs::create_dir(&staging.path).map_err(io_context(|| {
            format!("creating {}", staging.path.display())
        }))?;
    }
    let mut notes = Vec::new();
    let fallbacks = write::write(
        o.format,
        o.quant,
        &src,
        template.as_deref(),
        &staging.path,
        &mut notes,
    )?;
    if o.verify {
        let v = verify::verify(o.format, o.quant, &src, &staging.path, home)?;
        on_verify(&v);
        v.check()?;
    }
    // With force the old export goes only now, the new one complete and checked, and in
    // one step with its arrival, so a crash leaves one or the other.
    nf_formats::atomic::replace(&staging.path, &o.out)
        .map_err(io_context(|| format!("renaming into {}", o.out.display())))?;
    staging.keep = true;
    let (files, bytes) = list_files(&o.out);
    Ok(Exported {
        files,
        bytes,
        fallbacks,
        notes,
    })
}

/// Removes the staging path unless the export completed.
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Files under `path` (relative names) and their total size.
fn list_files(path: &Path) -> (Vec<String>, u64) {
    if path.is_file() {
        let n = path.metadata().map_or(0, |m| m.len());
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        return (vec![name], n);
    }
    let mut files = Vec::new();
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let len = e.metadata().map_or(0, |m| m.len());
            total += len;
            files.push(e.file_name().to_string_lossy().to_string());
        }
    }
    files.sort();
    (files, total)
}

/// An error of an export: the store's error type ([`StoreError`]), whose variants already
/// cover what an export meets (a failure with a hint, IO with its path, model, format,
/// tokenizer and run errors), so a caller handles one type for both.
pub type ExportError = StoreError;

/// The result type of exports, with [`ExportError`] by default.
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

use nf_store::{fail, io_context};
