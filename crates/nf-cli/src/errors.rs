//! User-facing failures: one `error:` line, an optional `hint:` line, a stable code for the
//! NDJSON `error` event, and the exit code.

use nf_formats::FormatError;
use nf_ingest::IngestError;
use nf_model::ModelError;
use nf_protocol::{ErrorCode, Event};
use nf_tokenizer::TokenizerError;

/// An error raised by the CLI itself with a hint for the user.
pub use nf_protocol::Failure as UserError;

/// Builds an error with a hint: `return Err(user_error(ErrorCode::BadInput, "...", "..."))`.
pub fn user_error(
    code: ErrorCode,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> anyhow::Error {
    UserError::new(code, message, hint).into()
}

/// Code and hint for any error the libraries return: those of the outermost error in the
/// chain (contexts, library error enums wrapping others) that has them.
pub fn describe(err: &anyhow::Error) -> (ErrorCode, Option<String>) {
    err.chain()
        .find_map(describe_one)
        .unwrap_or((ErrorCode::Other, None))
}

fn describe_one(err: &(dyn std::error::Error + 'static)) -> Option<(ErrorCode, Option<String>)> {
    if let Some(u) = err.downcast_ref::<UserError>() {
        return Some((u.code, u.hint.clone()));
    }
    let format_hint = |e: &FormatError| -> (ErrorCode, Option<String>) {
        match e {
            FormatError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                (ErrorCode::NotFound, Some("check the path; models are folders (config.json + safetensors), .gguf files or llama2.c .bin files".into()))
            }
            FormatError::Io { .. } => (ErrorCode::Io, Some("check the path, its permissions and the free disk space".into())),
            FormatError::WrongFormat { .. } => (ErrorCode::BadInput, Some("pass a model folder (Hugging Face layout), a .gguf file, or a llama2.c .bin".into())),
            FormatError::Corrupt { .. } => (ErrorCode::Corrupt, Some("the file is damaged or incomplete; download or export it again".into())),
            FormatError::Unsupported { .. } => (ErrorCode::Unsupported, Some("convert the model with a current llama.cpp or transformers".into())),
            FormatError::MissingTensor { .. } => (ErrorCode::Corrupt, Some("the file lacks weights this architecture needs; is it a complete Llama-family model?".into())),
        }
    };
    if let Some(e) = err.downcast_ref::<ModelError>() {
        return Some(match e {
            ModelError::Format(f) => format_hint(f),
            ModelError::UnsupportedArch { .. } => (ErrorCode::Unsupported, Some("supported: llama, mistral, qwen2, qwen3, phi3 (Llama, TinyLlama, SmolLM, Mistral, Qwen2/3, Phi-3)".into())),
            ModelError::Shape { .. } | ModelError::Config { .. } => (ErrorCode::Corrupt, Some("the weights do not match the model's configuration".into())),
            ModelError::BadToken { .. } => (ErrorCode::Mismatch, Some("the tokenizer does not belong to this model; pass the matching --tokenizer".into())),
            ModelError::ContextFull { .. } => (ErrorCode::ContextFull, Some("shorten the prompt or lower --max-tokens".into())),
            ModelError::Export(_) => (ErrorCode::Export, Some("pick another --format or --quant".into())),
            ModelError::UnknownModelPath { .. } => (ErrorCode::BadInput, Some("pass a model folder, a .gguf file, or a llama2.c .bin".into())),
        });
    }
    if let Some(e) = err.downcast_ref::<FormatError>() {
        return Some(format_hint(e));
    }
    if let Some(e) = err.downcast_ref::<IngestError>() {
        return Some(match e {
            IngestError::NotADataset { .. } => (
                ErrorCode::Corrupt,
                Some(
                    "the dataset folder is damaged; run `neuralforge ingest` again with --force"
                        .into(),
                ),
            ),
            IngestError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                (ErrorCode::NotFound, Some("check the path".into()))
            }
            // Writing the dataset (a full disk, an unwritable home).
            IngestError::Io { .. } | IngestError::Format(FormatError::Io { .. }) => (
                ErrorCode::Io,
                Some("check the path, its permissions and the free disk space".into()),
            ),
            _ => (ErrorCode::Ingest, None),
        });
    }
    if let Some(nf_data::DatasetError::BadSidecar { .. }) = err.downcast_ref() {
        return Some((
            ErrorCode::Corrupt,
            Some("the dataset folder is damaged; ingest the dataset again".into()),
        ));
    }
    if let Some(TokenizerError::NotExportable { .. }) = err.downcast_ref::<TokenizerError>() {
        return Some((
            ErrorCode::Unsupported,
            Some(
                "export with another --format (hf carries any tokenizer), or pass --chat-template"
                    .into(),
            ),
        ));
    }
    if err.downcast_ref::<TokenizerError>().is_some() {
        return Some((
            ErrorCode::Tokenizer,
            Some("check the tokenizer file; llama2.c models need --tokenizer tokenizer.bin".into()),
        ));
    }
    if let Some(e) = err.downcast_ref::<std::io::Error>() {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Some((ErrorCode::BrokenPipe, None));
        }
        return Some((
            ErrorCode::Io,
            Some("check the path, its permissions and the free disk space".into()),
        ));
    }
    None
}

/// The error and its causes on one line (`a: b: c`), without repeating a cause that the
/// outer message already contains.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg.replace('\n', " ")
}

/// The `error` event for a failure: its code and hint ([`describe`]) and its one-line
/// message ([`one_line`]), as the command's last event on stdout and in a failed run's
/// `events.ndjson`.
pub fn error_event(err: &anyhow::Error) -> Event {
    let (code, hint) = describe(err);
    Event::Error {
        code,
        message: one_line(err),
        hint,
    }
}
