//! Flags several commands share, resolved: `--chat-template`, `--base-dtype`, the sampling
//! flags, and the model-loaded event and instruction-set label they print.

use anyhow::Result;
use nf_model::SamplerConfig;
use nf_protocol::{ErrorCode, Event};
use nf_store::resolve::Loaded;
use nf_tokenizer::{BUILTIN_TEMPLATES, Tokenizer, builtin_template};
use nf_train::run::BaseDtype;

use crate::cli::SamplingArgs;
use crate::errors::user_error;
use crate::output::Output;

/// The template `--chat-template` names (built-in or file), else the model's own.
pub fn chat_template(tok: &Tokenizer, choice: Option<&str>) -> Result<String> {
    match choice {
        Some(name) => template_override(name),
        None => tok.chat_template().map(str::to_string).ok_or_else(|| {
            user_error(
                ErrorCode::BadInput,
                "this model has no chat template",
                "pass --chat-template chatml|llama2|llama3|FILE, or use generate without --chat",
            )
        }),
    }
}

/// The text of the template `--chat-template NAME|FILE` names: a built-in one, or a Jinja
/// template file.
pub fn template_override(name: &str) -> Result<String> {
    if let Some(t) = builtin_template(name) {
        return Ok(t.to_string());
    }
    std::fs::read_to_string(name).map_err(|e| {
        user_error(
            ErrorCode::BadInput,
            format!("chat template `{name}`: {e}"),
            format!(
                "use a built-in name ({}) or a Jinja template file",
                BUILTIN_TEMPLATES.join(", ")
            ),
        )
    })
}

/// The sampler `--temperature`, `--top-k`, `--top-p`, `--repetition-penalty` and `--seed` set.
pub fn sampler_config(s: &SamplingArgs) -> SamplerConfig {
    SamplerConfig {
        temperature: s.temperature,
        top_k: s.top_k,
        top_p: s.top_p,
        repetition_penalty: s.repetition_penalty,
        seed: s.seed,
    }
}

/// Parses `--base-dtype` (`f32` is `as-loaded`, which every f32 base already is).
pub(crate) fn base_dtype(name: &str) -> Result<BaseDtype> {
    BaseDtype::parse(name).ok_or_else(|| {
        user_error(
            ErrorCode::BadInput,
            format!("unknown --base-dtype `{name}`"),
            format!("use {}", BaseDtype::NAMES),
        )
    })
}

/// Emits `model.loaded` in `--json` mode.
pub fn announce(l: &Loaded, out: &mut Output) -> Result<()> {
    out.event(|| Event::ModelLoaded {
        path: l.model.path.display().to_string(),
        format: l.model.format.name().into(),
        arch: l.model.config.arch.clone(),
        n_params: l.model.config.n_params() as u64,
        n_layers: l.model.config.n_layers as u64,
        context_length: l.model.config.max_seq_len as u64,
        tokenizer: l.tokenizer.kind().to_string(),
        load_ms: l.load_ms,
    })?;
    Ok(())
}

/// `isa`, with the bf16 kernel after it when there is one: "avx512bf16 (avx512-fma kernel)".
pub(crate) fn isa_and_kernel(isa: &str, kernel: &str) -> String {
    if kernel.is_empty() {
        isa.into()
    } else {
        format!("{isa} ({kernel} kernel)")
    }
}
