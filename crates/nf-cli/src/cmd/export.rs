//! `neuralforge export`: a run (or any model) as a Hugging Face folder, a PEFT adapter, a
//! GGUF, a GGUF LoRA, or an Ollama folder (`nf_export`), printed and recorded in the audit
//! log.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use nf_export::{ExportFormat, ExportOptions, Verification};
use nf_formats::GgmlType;
use nf_protocol::Event;

use crate::cli::ExportArgs;
use crate::flags::template_override;
use crate::output::Output;

/// `neuralforge export`, recorded in the audit log (source in, export out, or the error), so
/// `lineage` can follow an exported file back to its run and documents.
pub fn run(args: &ExportArgs, home: &Path, out: &mut Output) -> Result<()> {
    crate::audit::scoped(home, "export", |rec| {
        // The source as open_source resolves it, so a model named from the store is
        // recorded by its files too; an unknown source is left to open_source to refuse.
        if let Ok(source) = nf_store::resolve::resolve_model_path(&args.source, home) {
            let kind = if nf_train::run::is_run(&source) {
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
    let format = ExportFormat::parse(&args.format)?;
    let quant = format.quant(args.quant.as_deref())?;
    let opts = ExportOptions {
        source: args.source.clone(),
        format,
        quant,
        out: args.out.clone(),
        force: args.force,
        verify: !args.no_verify,
        tokenizer: args.tokenizer.clone(),
        adapter: args.adapter.clone(),
        chat_template: args
            .chat_template
            .as_deref()
            .map(template_override)
            .transpose()?,
    };
    let mut event_error = None;
    let done = nf_export::export(home, &opts, &mut |v| {
        if let Err(e) = print_verification(v, out) {
            event_error.get_or_insert(e);
        }
    });
    if let Some(e) = event_error {
        return Err(e.into());
    }
    let done = done?;
    let wall_s = t0.elapsed().as_secs_f64();
    if !out.is_json() {
        eprintln!(
            "exported {} ({}) to {}: {} in {wall_s:.1} s{}",
            format.name(),
            quant.name(),
            args.out.display(),
            nf_protocol::human_bytes(done.bytes),
            if opts.verify { "" } else { " (not verified)" }
        );
        if !done.fallbacks.is_empty() {
            eprintln!(
                "note: {} matrices stored as f16 (rows not whole {} blocks)",
                done.fallbacks.len(),
                quant.name()
            );
        }
        for n in &done.notes {
            eprintln!("note: {n}");
        }
    }
    out.event(|| Event::ExportDone {
        format: format.name().into(),
        quant: quant.name().into(),
        path: args.out.display().to_string(),
        files: done.files,
        bytes: done.bytes,
        wall_s,
        verified: opts.verify,
        fallbacks: done.fallbacks,
        notes: done.notes,
    })?;
    Ok(())
}

/// The parity check's lines on stderr, and its `export.verify` event.
fn print_verification(v: &Verification, out: &mut Output) -> std::io::Result<()> {
    let (p, file) = (&v.parity, &v.file);
    if !out.is_json() && v.stored != GgmlType::F32 {
        eprintln!(
            "verified the file against the in-memory {} model: greedy {}, logit deviation {:.2e} (bound {:.1e})",
            v.stored.name(),
            if file.tokens_identical {
                "identical"
            } else {
                "differs"
            },
            file.max_rel_rms,
            v.file_tolerance.max_rel_rms
        );
    }
    if !out.is_json() {
        eprintln!(
            "verified {} prompts: greedy {} ({}/{} tokens agree), logit deviation {:.2e} (bound {:.1e}), max |Δ| {:.3}, top-1 {:.0}%, top-{} overlap {:.0}%{}",
            p.prompts,
            if p.tokens_identical {
                "identical"
            } else {
                "differs"
            },
            p.tokens_agreeing,
            p.generated,
            p.max_rel_rms,
            v.tolerance.max_rel_rms,
            p.max_abs_diff,
            p.top1_agreement * 100.0,
            nf_export::verify::CHECK_TOP_K,
            p.topk_overlap * 100.0,
            if v.tokenizer_identical {
                ", tokenizer identical"
            } else {
                ", TOKENIZER DIFFERS"
            }
        );
    }
    out.event(|| v.event())
}
