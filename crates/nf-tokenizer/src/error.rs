//! The error type of this crate. Errors about a file carry its path, so a user reading
//! `error: ...` knows which file to look at.

use std::path::PathBuf;

/// An error loading a tokenizer, encoding text, or rendering a chat template.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the format we expected, or its contents are inconsistent
    /// (truncated, negative lengths, wrong JSON shape).
    #[error("{path}: corrupt {format} file: {reason}")]
    Corrupt {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The format the file was read as.
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A key the tokenizer needs is absent from the model file (e.g. a GGUF with no
    /// `tokenizer.ggml.tokens`).
    #[error("{path}: no tokenizer in this file: `{key}` is missing")]
    MissingMetadata {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The metadata key that is missing.
        key: String,
    },
    /// The file is well formed but asks for something we do not implement (an unknown
    /// `tokenizer.ggml.model` or pre-tokenizer).
    #[error("{path}: unsupported tokenizer: {reason}")]
    Unsupported {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The Hugging Face `tokenizers` library rejected a tokenizer or an input.
    #[error("{context}: {message}")]
    Library {
        /// What was being done.
        context: String,
        /// The library's message.
        message: String,
    },
    /// A chat template failed to compile or to render (this includes the template's own
    /// `raise_exception(...)` calls).
    #[error("chat template: {0:#}")]
    Template(#[from] minijinja::Error),
    /// A conversation is not a JSON array of messages ending with the user's turn.
    #[error("{0}")]
    Conversation(String),
    /// The tokenizer (or its chat template) cannot be written in the requested format.
    #[error("cannot write the tokenizer as {target}: {reason}")]
    NotExportable {
        /// The format asked for.
        target: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl TokenizerError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TokenizerError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        TokenizerError::Corrupt {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }
}

/// The result type of this crate, with [`TokenizerError`] by default.
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

impl nf_protocol::Describe for TokenizerError {
    fn code(&self) -> nf_protocol::ErrorCode {
        match self {
            TokenizerError::NotExportable { .. } => nf_protocol::ErrorCode::Unsupported,
            TokenizerError::Conversation(_) => nf_protocol::ErrorCode::BadInput,
            _ => nf_protocol::ErrorCode::Tokenizer,
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            TokenizerError::NotExportable { .. } => {
                "export with another --format (hf carries any tokenizer), or pass --chat-template"
            }
            TokenizerError::Conversation(_) => {
                r#"write a JSON array such as [{"role":"user","content":"Hello"}], the user's new message last"#
            }
            _ => "check the tokenizer file; llama2.c models need --tokenizer tokenizer.bin",
        }.into())
    }
}
