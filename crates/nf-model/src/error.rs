//! Errors of model loading and inference.

use std::path::PathBuf;

use nf_formats::FormatError;

/// An error loading, running or exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file could not be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The model's configuration is missing something or describes a model we cannot run.
    #[error("{path}: {reason}")]
    Config {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The architecture is not in the Llama family we implement.
    #[error("{path}: unsupported architecture `{arch}`")]
    UnsupportedArch {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The architecture the file names.
        arch: String,
    },
    /// A tensor's shape disagrees with the configuration.
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The tensor's name.
        name: String,
        /// The shape the configuration implies.
        expected: Vec<usize>,
        /// The shape in the file.
        got: Vec<usize>,
    },
    /// A token id is outside the vocabulary (tokenizer and model do not match).
    #[error("token id {id} is outside the model's vocabulary of {vocab}")]
    BadToken {
        /// The token id.
        id: u32,
        /// The model's vocabulary size.
        vocab: usize,
    },
    /// The sequence would exceed the KV cache / context length.
    #[error("context is full: {needed} positions needed, the model holds {capacity}")]
    ContextFull {
        /// Positions the sequence needs.
        needed: usize,
        /// Positions the cache holds.
        capacity: usize,
    },
    /// An export could not be written as asked (a type or layout the target cannot hold).
    #[error("{0}")]
    Export(String),
    /// A path that is not a model directory, `.gguf` or llama2.c `.bin`.
    #[error("{path}: {reason}")]
    UnknownModelPath {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The result type of this crate, with [`ModelError`] by default.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

impl nf_protocol::Describe for ModelError {
    fn code(&self) -> nf_protocol::ErrorCode {
        use nf_protocol::ErrorCode;
        match self {
            ModelError::Format(f) => f.code(),
            ModelError::UnsupportedArch { .. } => ErrorCode::Unsupported,
            ModelError::Shape { .. } | ModelError::Config { .. } => ErrorCode::Corrupt,
            ModelError::BadToken { .. } => ErrorCode::Mismatch,
            ModelError::ContextFull { .. } => ErrorCode::ContextFull,
            ModelError::Export(_) => ErrorCode::Export,
            ModelError::UnknownModelPath { .. } => ErrorCode::BadInput,
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            ModelError::Format(f) => return f.hint(),
            ModelError::UnsupportedArch { .. } => "supported: llama, mistral, qwen2, qwen3, phi3 (Llama, TinyLlama, SmolLM, Mistral, Qwen2/3, Phi-3)",
            ModelError::Shape { .. } | ModelError::Config { .. } => "the weights do not match the model's configuration",
            ModelError::BadToken { .. } => "the tokenizer does not belong to this model; pass the matching --tokenizer",
            ModelError::ContextFull { .. } => "shorten the prompt or lower --max-tokens",
            ModelError::Export(_) => "pick another --format or --quant",
            ModelError::UnknownModelPath { .. } => "pass a model folder, a .gguf file, or a llama2.c .bin",
        }.into())
    }
}
