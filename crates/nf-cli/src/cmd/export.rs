//! `neuralforge export`: a run (or any model) as a Hugging Face folder, a PEFT adapter, a
//! GGUF, a GGUF LoRA, or an Ollama folder.
//!
//! Everything is written to a staging path beside `--out` (`.NAME.nf-export-PID`), read
//! back with our own readers and compared with the in-memory fine-tuned model (the parity
//! check, `nf_model::export::parity`), and only then renamed to `--out`. A failure at any
//! step removes the staging path, so a failed export leaves nothing behind and never
//! touches an existing export (which `--force` replaces only with a complete, checked one).

use nf_protocol::ErrorCode;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use nf_formats::{GgmlType, GgufFile, MetaValue};
use nf_model::Model;
use nf_model::export::parity::{Parity, compare, file_tolerance, tolerance};
use nf_model::train::adapter::Adapter;
use nf_protocol::Event;
use nf_tokenizer::Tokenizer;

use crate::cli::ExportArgs;
use crate::errors::user_error;
use crate::output::Output;
use nf_store::ModelSpec;
use nf_store::resolve::{Loaded, load, load_adapter, load_base, resolve_run};

/// Texts the parity check continues (and the tokenizer check encodes).
const PROMPTS: &[&str] = &[
    "Once upon a time",
    "The little dog ran to the park and",
    "Hello! What is the capital of France?",
];
/// Greedy tokens generated per prompt in the parity check.
const CHECK_TOKENS: usize = 16;
/// Size of the top-k sets compared.
const CHECK_TOP_K: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Hf,
    Peft,
    Gguf,
    GgufLora,
    Ollama,
}

impl Format {
    fn parse(s: &str) -> Result<Format> {
        Ok(match s {
            "hf" => Format::Hf,
            "peft" => Format::Peft,
            "gguf" => Format::Gguf,
            "gguf-lora" => Format::GgufLora,
            "ollama" => Format::Ollama,
            other => {
                return Err(user_error(
                    ErrorCode::BadInput,
                    format!("unknown --format `{other}`"),
                    "use hf, peft, gguf, gguf-lora or ollama",
                ));
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Hf => "hf",
            Format::Peft => "peft",
            Format::Gguf => "gguf",
            Format::GgufLora => "gguf-lora",
            Format::Ollama => "ollama",
        }
    }

    fn adapter_only(self) -> bool {
        matches!(self, Format::Peft | Format::GgufLora)
    }

    fn is_dir(self) -> bool {
        matches!(self, Format::Hf | Format::Peft | Format::Ollama)
    }
}

fn parse_quant(s: &str) -> Result<GgmlType> {
    let ty = match s {
        "f32" => GgmlType::F32,
        "f16" => GgmlType::F16,
        "bf16" => GgmlType::BF16,
        "q8_0" => GgmlType::Q8_0,
        "q4_0" => GgmlType::Q4_0,
        "q4_1" => GgmlType::Q4_1,
        other => {
            return Err(user_error(
                ErrorCode::BadInput,
                format!("unknown --quant `{other}`"),
                "use f32, f16, bf16, q8_0, q4_0 or q4_1",
            ));
        }
    };
    Ok(ty)
}

/// What the export is made from.
struct Source {
    /// The fine-tuned model in memory (adapter merged), the reference of the parity check.
    reference: Model,
    tokenizer: Tokenizer,
    /// The base model's flags without the adapter, to rebuild the model from an adapter
    /// export.
    base_args: ModelSpec,
    adapter: Option<Adapter>,
    /// Provenance written into the export.
    meta: BTreeMap<String, String>,
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

/// `neuralforge export`, recorded in the audit log (source in, export out, or the error), so
/// `lineage` can follow an exported file back to its run and documents.
pub fn run(args: &ExportArgs, home: &Path, out: &mut Output) -> Result<()> {
    crate::audit::scoped(home, "export", |rec| {
        // The source as open_source resolves it, so a model named from the store is
        // recorded by its files too; an unknown source is left to open_source to refuse.
        if let Ok(source) = nf_store::resolve::resolve_model_path(&args.source, home) {
            let kind = if source.join("run.json").is_file() {
                "run"
            } else {
                "model"
            };
            rec.inputs
                .push(nf_audit::Artifact::path(kind, &source).map_err(crate::audit::audit_error)?);
        }
        run_inner(args, home, out)?;
        rec.outputs.push(
            nf_audit::Artifact::path("export", &args.out).map_err(crate::audit::audit_error)?,
        );
        Ok(())
    })
}

fn run_inner(args: &ExportArgs, home: &Path, out: &mut Output) -> Result<()> {
    let t0 = Instant::now();
    let format = Format::parse(&args.format)?;
    let quant = match (&args.quant, format) {
        (None, Format::Gguf | Format::Ollama) => GgmlType::F16,
        (None, _) => GgmlType::F32,
        (Some(q), Format::Gguf | Format::Ollama) => parse_quant(q)?,
        (Some(q), _) if q == "f32" => GgmlType::F32,
        (Some(q), f) => {
            return Err(user_error(
                ErrorCode::BadInput,
                format!("--quant {q} does not apply to --format {}", f.name()),
                "hf, peft and gguf-lora exports are f32; quantize with --format gguf or ollama",
            ));
        }
    };
    if args.out.exists() && !args.force {
        return Err(user_error(
            ErrorCode::Exists,
            format!("{} already exists", args.out.display()),
            "pick another --out, or pass --force to replace it once the new export is complete",
        ));
    }
    let src = open_source(args, home, format)?;
    let template = match &args.chat_template {
        Some(choice) => Some(crate::cmd::generate::chat_template(
            &src.tokenizer,
            Some(choice),
        )?),
        None => src.tokenizer.chat_template().map(str::to_string),
    };

    let parent = match args.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("creating the output folder {}", parent.display()))?;
    let name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .ok_or_else(|| {
            user_error(
                ErrorCode::BadInput,
                format!("--out {} names no file or folder", args.out.display()),
                "pass a path such as exports/my-model.gguf",
            )
        })?;
    // Leftovers of killed exports to this path go first: nothing else removes them.
    nf_formats::atomic::remove_stale(&args.out, "nf-export");
    let mut staging = Staging {
        path: parent.join(format!(".{name}.nf-export-{}", std::process::id())),
        keep: false,
    };
    let _ = std::fs::remove_dir_all(&staging.path);
    let _ = std::fs::remove_file(&staging.path);
    if format.is_dir() {
        std::fs::create_dir(&staging.path)
            .with_context(|| format!("creating {}", staging.path.display()))?;
    }

    let mut notes = Vec::new();
    let fallbacks = write(
        format,
        quant,
        &src,
        template.as_deref(),
        &staging.path,
        &mut notes,
    )?;

    let verified = !args.no_verify;
    if verified {
        verify(format, quant, &src, &staging.path, home, out)?;
    }

    // With --force the old export goes only now, the new one complete and checked, and in
    // one step with its arrival, so a crash leaves one or the other.
    nf_formats::atomic::replace(&staging.path, &args.out)
        .with_context(|| format!("renaming into {}", args.out.display()))?;
    staging.keep = true;
    let (files, bytes) = list_files(&args.out);
    let wall_s = t0.elapsed().as_secs_f64();
    if !out.is_json() {
        eprintln!(
            "exported {} ({}) to {}: {} in {wall_s:.1} s{}",
            format.name(),
            quant.name(),
            args.out.display(),
            nf_protocol::human_bytes(bytes),
            if verified { "" } else { " (not verified)" }
        );
        if !fallbacks.is_empty() {
            eprintln!(
                "note: {} matrices stored as f16 (rows not whole {} blocks)",
                fallbacks.len(),
                quant.name()
            );
        }
        for n in &notes {
            eprintln!("note: {n}");
        }
    }
    out.event(|| Event::ExportDone {
        format: format.name().into(),
        quant: quant.name().into(),
        path: args.out.display().to_string(),
        files,
        bytes,
        wall_s,
        verified,
        fallbacks,
        notes,
    })?;
    Ok(())
}

/// Resolves the source (a run folder or a model), refusing unfinished runs and formats
/// the source cannot express.
fn open_source(args: &ExportArgs, home: &Path, format: Format) -> Result<Source> {
    let path = nf_store::resolve::resolve_model_path(&args.source, home).map_err(|_| {
        user_error(
            ErrorCode::NotFound,
            format!("no run or model at {}", args.source.display()),
            "pass a run folder made by `neuralforge train`, or a model (folder, .gguf, llama2.c .bin)",
        )
    })?;
    let model_args = ModelSpec {
        model: path.clone(),
        tokenizer: args.tokenizer.clone(),
        adapter: args.adapter.clone(),
    };
    let mut meta = BTreeMap::new();
    meta.insert(
        "neuralforge_version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    );
    let run = path.join("run.json").is_file();
    let mut full_run = false;
    if run {
        check_finished(&path)?;
        let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            path.join("run.json"),
        )?)
        .map_err(|e| {
            user_error(
                ErrorCode::Corrupt,
                format!("run.json: {e}"),
                "the run folder is damaged",
            )
        })?;
        full_run = cfg["method"] == "full";
        let id = std::fs::canonicalize(&path)
            .unwrap_or_else(|_| path.clone())
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_string());
        meta.insert("run_id".into(), id);
        for (key, field) in [("base_model_sha256", "base_model"), ("data_sha256", "data")] {
            if let Some(h) = cfg["hashes"][field].as_str() {
                meta.insert(key.into(), h.into());
            }
        }
        if let Some(m) = cfg["model"].as_str() {
            meta.insert("base_model".into(), m.into());
        }
        // The manifest.json sha256 of each dataset the run trained on (lineage's link from
        // a file to its documents), comma-separated; absent for runs on plain files.
        let manifests: Vec<&str> = cfg["hashes"]["datasets"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        if !manifests.is_empty() {
            meta.insert("dataset_manifest_sha256".into(), manifests.join(","));
        }
    }
    let resolved = resolve_run(&model_args, home)?;
    let adapter_path = resolved.adapter.clone();
    if format.adapter_only() && adapter_path.is_none() {
        let why = if full_run {
            "this run trained every weight, so there is no adapter to export"
        } else {
            "this model has no LoRA adapter"
        };
        return Err(user_error(
            ErrorCode::Unsupported,
            format!(
                "--format {} exports a LoRA adapter alone: {why}",
                format.name()
            ),
            "use --format hf, gguf or ollama for the whole model",
        ));
    }
    let base_args = ModelSpec {
        adapter: None,
        ..resolved.clone()
    };
    let Loaded {
        model: reference,
        tokenizer,
        ..
    } = load(&model_args, home)?;
    if !run {
        meta.insert(
            "base_model_sha256".into(),
            nf_store::resolve::hash_model_files(&base_args.model)?.0,
        );
        meta.insert("base_model".into(), base_args.model.display().to_string());
    }
    let adapter = match &adapter_path {
        Some(p) => Some(load_adapter(p, &reference.config)?),
        None => None,
    };
    Ok(Source {
        reference,
        tokenizer,
        base_args,
        adapter,
        meta,
    })
}

/// A run is finished when `train` wrote its report after the final output, and it did not
/// stop on Ctrl-C.
fn check_finished(run: &Path) -> Result<()> {
    let resume = format!(
        "finish it with `neuralforge train --resume {}`",
        run.display()
    );
    let report = run.join("report.json");
    let Ok(text) = std::fs::read_to_string(&report) else {
        return Err(user_error(
            ErrorCode::Unfinished,
            format!(
                "the run {} has not finished (no report.json)",
                run.display()
            ),
            resume,
        ));
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    if v["reason"] == "interrupted" {
        return Err(user_error(
            ErrorCode::Unfinished,
            format!(
                "the run {} was interrupted at step {}",
                run.display(),
                v["final_step"]
            ),
            resume,
        ));
    }
    Ok(())
}

/// GGUF keys of the provenance (`neuralforge.version`, `neuralforge.run_id`, ...).
fn gguf_provenance(meta: &BTreeMap<String, String>) -> Vec<(String, MetaValue)> {
    meta.iter()
        .map(|(k, v)| {
            let key = k.strip_prefix("neuralforge_").unwrap_or(k);
            (format!("neuralforge.{key}"), MetaValue::String(v.clone()))
        })
        .collect()
}

/// Writes the export into `staging`; returns the matrices that fell back to f16.
fn write(
    format: Format,
    quant: GgmlType,
    src: &Source,
    template: Option<&str>,
    staging: &Path,
    notes: &mut Vec<String>,
) -> Result<Vec<String>> {
    let c = &src.reference.config;
    let base_name = src
        .meta
        .get("base_model")
        .cloned()
        .unwrap_or_else(|| src.base_args.model.display().to_string());
    match format {
        Format::Hf => {
            nf_model::export::export_hf(&src.reference, staging, &src.meta)?;
            for (file, bytes) in src.tokenizer.hf_files(template)? {
                nf_formats::atomic::write_atomic(&staging.join(file), |w| w.write_all(&bytes))?;
            }
            let eos: Vec<u32> = src.tokenizer.eos_ids().to_vec();
            let generation = serde_json::json!({
                "bos_token_id": src.tokenizer.bos_id(),
                "eos_token_id": if eos.len() == 1 { serde_json::json!(eos[0]) } else { serde_json::json!(eos) },
                "do_sample": false,
            });
            let text = serde_json::to_string_pretty(&generation)?;
            nf_formats::atomic::write_atomic(&staging.join("generation_config.json"), |w| {
                w.write_all(text.as_bytes())
            })?;
            Ok(Vec::new())
        }
        Format::Peft => {
            let adapter = src.adapter.as_ref().expect("checked in open_source");
            nf_model::train::adapter::save_adapter_peft(
                adapter, c, staging, &base_name, &src.meta,
            )?;
            Ok(Vec::new())
        }
        Format::GgufLora => {
            let adapter = src.adapter.as_ref().expect("checked in open_source");
            nf_model::train::adapter_gguf::save_gguf_lora(
                adapter,
                c,
                staging,
                gguf_provenance(&src.meta),
            )?;
            Ok(Vec::new())
        }
        Format::Gguf => write_gguf(src, quant, template, staging),
        Format::Ollama => {
            let fallbacks = write_gguf(src, quant, template, &staging.join("model.gguf"))?;
            let modelfile = modelfile(src, template, notes)?;
            nf_formats::atomic::write_atomic(&staging.join("Modelfile"), |w| {
                w.write_all(modelfile.as_bytes())
            })?;
            Ok(fallbacks)
        }
    }
}

fn write_gguf(
    src: &Source,
    quant: GgmlType,
    template: Option<&str>,
    path: &Path,
) -> Result<Vec<String>> {
    let mut extra = src.tokenizer.gguf_metadata(template).map_err(|e| {
        user_error(
            ErrorCode::Unsupported,
            e.to_string(),
            "export with --format hf instead, whose tokenizer.json carries any tokenizer",
        )
    })?;
    extra.extend(gguf_provenance(&src.meta));
    let summary = nf_model::export::gguf::export_gguf(&src.reference, path, quant, extra)?;
    Ok(summary.fallbacks)
}

/// The Ollama Modelfile: `FROM` the GGUF beside it, and the TEMPLATE, SYSTEM and stop
/// parameters derived from the chat template the model was trained with.
fn modelfile(src: &Source, template: Option<&str>, notes: &mut Vec<String>) -> Result<String> {
    let tok = &src.tokenizer;
    let text = |id: Option<u32>| {
        id.and_then(|i| tok.id_to_token(i))
            .unwrap_or("")
            .to_string()
    };
    let mut mf = format!(
        "# Exported by NeuralForge {}{}\nFROM ./model.gguf\n",
        env!("CARGO_PKG_VERSION"),
        src.meta
            .get("run_id")
            .map_or(String::new(), |r| format!(" from run {r}"))
    );
    let triple = |s: &str| -> Result<String> {
        if s.contains("\"\"\"") {
            return Err(user_error(
                ErrorCode::Unsupported,
                "the chat template contains `\"\"\"`, which a Modelfile cannot quote",
                "export with --format gguf and write the Modelfile by hand",
            ));
        }
        Ok(format!("\"\"\"{s}\"\"\""))
    };
    match template {
        Some(t) => {
            let stops: Vec<String> = tok
                .eos_ids()
                .iter()
                .filter_map(|&i| tok.id_to_token(i).map(str::to_string))
                .collect();
            let chat = nf_tokenizer::ollama::ollama_chat(
                t,
                &text(tok.bos_id()),
                &text(tok.eos_id()),
                tok.add_bos_default(),
                &stops,
            )
                .map_err(|e| {
                    user_error(
                        ErrorCode::Unsupported,
                        e.to_string(),
                        "pass --chat-template chatml|llama3|FILE with a template of one turn per role, or use --format gguf",
                    )
                })?;
            mf.push_str(&format!("TEMPLATE {}\n", triple(&chat.template)?));
            if let Some(s) = &chat.system {
                mf.push_str(&format!("SYSTEM {}\n", triple(s)?));
            }
            for s in &chat.stops {
                mf.push_str(&format!("PARAMETER stop {}\n", serde_json::to_string(s)?));
            }
        }
        None => {
            notes.push("the model has no chat template: the Modelfile uses Ollama's plain `{{ .Prompt }}` (completion)".into());
            mf.push_str("TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n");
            if let Some(e) = tok.eos_id().and_then(|i| tok.id_to_token(i)) {
                mf.push_str(&format!("PARAMETER stop {}\n", serde_json::to_string(e)?));
            }
        }
    }
    Ok(mf)
}

/// Reads the staged export back and compares it with the reference; a failure is an error.
fn verify(
    format: Format,
    quant: GgmlType,
    src: &Source,
    staged: &Path,
    home: &Path,
    out: &mut Output,
) -> Result<()> {
    let (exported, tokenizer) = match format {
        Format::Hf => (Model::open(staged)?, Some(Tokenizer::from_hf_dir(staged)?)),
        Format::Gguf | Format::Ollama => {
            let file = if format == Format::Ollama {
                staged.join("model.gguf")
            } else {
                staged.to_path_buf()
            };
            let g = GgufFile::open(&file)?;
            (Model::from_gguf(&g)?, Some(Tokenizer::from_gguf(&g)?))
        }
        Format::Peft | Format::GgufLora => {
            let mut base = load_base(&src.base_args, home)?.model;
            let adapter = load_adapter(staged, &base.config)?;
            nf_model::train::adapter::merge_adapter(&mut base, &adapter);
            (base, None)
        }
    };
    let tok = &src.tokenizer;
    let mut texts: Vec<String> = PROMPTS.iter().map(|s| s.to_string()).collect();
    texts.push("Ünïcode, numbers 12345 and\nnew lines\t tabs.".into());
    let tokenizer_identical = match &tokenizer {
        Some(t) => texts.iter().all(|s| {
            let a = tok.encode(s, tok.add_bos_default(), true).ok();
            let b = t.encode(s, t.add_bos_default(), true).ok();
            a.is_some() && a == b
        }),
        None => true,
    };
    let prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|s| tok.encode(s, tok.add_bos_default(), false))
        .collect::<Result<_, _>>()?;
    let p: Parity = compare(
        &src.reference,
        &exported,
        &prompts,
        CHECK_TOKENS,
        CHECK_TOP_K,
    )?;
    let stored = if matches!(format, Format::Gguf | Format::Ollama) {
        quant
    } else {
        GgmlType::F32
    };
    // A quantized export is held to two bounds: the quantization error budget against the
    // fine-tuned model, and exactness against that model quantized the same way in memory
    // (which is what the file must hold).
    let file = if stored == GgmlType::F32 {
        p.clone()
    } else {
        let same = nf_model::export::gguf::quantized_like_export(&src.reference, quant)?;
        compare(&same, &exported, &prompts, CHECK_TOKENS, CHECK_TOP_K)?
    };
    let tol = tolerance(stored);
    let file_tol = file_tolerance();
    let violation = p.violation(tol).or_else(|| {
        file.violation(file_tol)
            .map(|v| format!("against the model quantized the same way in memory: {v}"))
    });
    let passed = violation.is_none() && tokenizer_identical;
    if !out.is_json() && stored != GgmlType::F32 {
        eprintln!(
            "verified the file against the in-memory {} model: greedy {}, logit deviation {:.2e} (bound {:.1e})",
            stored.name(),
            if file.tokens_identical {
                "identical"
            } else {
                "differs"
            },
            file.max_rel_rms,
            file_tol.max_rel_rms
        );
    }
    if !out.is_json() {
        eprintln!(
            "verified {} prompts: greedy {} ({}/{} tokens agree), logit deviation {:.2e} (bound {:.1e}), max |Δ| {:.3}, top-1 {:.0}%, top-{CHECK_TOP_K} overlap {:.0}%{}",
            p.prompts,
            if p.tokens_identical {
                "identical"
            } else {
                "differs"
            },
            p.tokens_agreeing,
            p.generated,
            p.max_rel_rms,
            tol.max_rel_rms,
            p.max_abs_diff,
            p.top1_agreement * 100.0,
            p.topk_overlap * 100.0,
            if tokenizer_identical {
                ", tokenizer identical"
            } else {
                ", TOKENIZER DIFFERS"
            }
        );
    }
    out.event(|| Event::ExportVerify {
        format: format.name().into(),
        quant: stored.name().into(),
        prompts: p.prompts as u64,
        positions: p.positions as u64,
        tokens_identical: p.tokens_identical,
        tokens_agreeing: p.tokens_agreeing as u64,
        generated: p.generated as u64,
        max_rel_rms: p.max_rel_rms as f64,
        max_abs_diff: p.max_abs_diff as f64,
        top1_agreement: p.top1_agreement as f64,
        topk_overlap: p.topk_overlap as f64,
        bound: tol.max_rel_rms as f64,
        tokens_required: tol.identical_tokens,
        tokenizer_identical,
        file_tokens_identical: file.tokens_identical,
        file_max_rel_rms: file.max_rel_rms as f64,
        file_bound: file_tol.max_rel_rms as f64,
        passed,
    })?;
    let hint =
        "nothing was written; this is a bug worth reporting (--no-verify keeps the export anyway)";
    if let Some(v) = violation {
        return Err(user_error(
            ErrorCode::Parity,
            format!("the export does not match the fine-tuned model: {v}"),
            hint,
        ));
    }
    if !tokenizer_identical {
        return Err(user_error(
            ErrorCode::Parity,
            "the exported tokenizer encodes text differently from the one the model was trained with",
            hint,
        ));
    }
    Ok(())
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
