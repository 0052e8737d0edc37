//! The files of each export format, and the Ollama Modelfile.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use nf_formats::{GgmlType, MetaValue};
use nf_protocol::ErrorCode;

use crate::{ExportFormat, Result, Source, fail};

/// Writes the export into `staging`; returns the matrices that fell back to f16.
pub(crate) fn write(
    format: ExportFormat,
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
        .unwrap_or_else(|| src.base.model.display().to_string());
    match format {
        ExportFormat::Hf => {
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
            let text = serde_json::to_string_pretty(&generation).expect("a JSON value serializes");
            nf_formats::atomic::write_atomic(&staging.join("generation_config.json"), |w| {
                w.write_all(text.as_bytes())
            })?;
            Ok(Vec::new())
        }
        ExportFormat::Peft => {
            let adapter = src.adapter.as_ref().expect("open_source checked it");
            nf_model::train::adapter::save_adapter_peft(
                adapter, c, staging, &base_name, &src.meta,
            )?;
            Ok(Vec::new())
        }
        ExportFormat::GgufLora => {
            let adapter = src.adapter.as_ref().expect("open_source checked it");
            nf_model::train::adapter_gguf::save_gguf_lora(
                adapter,
                c,
                staging,
                gguf_provenance(&src.meta),
            )?;
            Ok(Vec::new())
        }
        ExportFormat::Gguf => write_gguf(src, quant, template, staging),
        ExportFormat::Ollama => {
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
        fail(
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
    let (bos, eos) = tok.bos_eos_text();
    let mut mf = format!(
        "# Exported by NeuralForge {}{}\nFROM ./model.gguf\n",
        env!("CARGO_PKG_VERSION"),
        src.meta
            .get("run_id")
            .map_or(String::new(), |r| format!(" from run {r}"))
    );
    let triple = |s: &str| -> Result<String> {
        if s.contains("\"\"\"") {
            return Err(fail(
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
                &bos,
                &eos,
                tok.add_bos_default(),
                &stops,
            )
                .map_err(|e| {
                    fail(
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
                mf.push_str(&format!(
                    "PARAMETER stop {}\n",
                    serde_json::Value::from(s.as_str())
                ));
            }
        }
        None => {
            notes.push("the model has no chat template: the Modelfile uses Ollama's plain `{{ .Prompt }}` (completion)".into());
            mf.push_str("TEMPLATE \"\"\"{{ .Prompt }}\"\"\"\n");
            if let Some(e) = tok.eos_id().and_then(|i| tok.id_to_token(i)) {
                mf.push_str(&format!("PARAMETER stop {}\n", serde_json::Value::from(e)));
            }
        }
    }
    Ok(mf)
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
