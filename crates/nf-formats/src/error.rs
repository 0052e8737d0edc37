//! The one error type of this crate. Every variant carries the path of the file it is about,
//! so a user reading `error: ...` knows which file to look at.

use std::path::PathBuf;

/// An error reading or writing a model file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the format we were asked to read (wrong magic number, wrong shape).
    #[error("{path}: not a {format} file: {reason}")]
    WrongFormat {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The format the file was read as.
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The file claims to be in the format but its contents are inconsistent: truncated,
    /// offsets past the end, absurd sizes.
    #[error("{path}: corrupt {format} file: {reason}")]
    Corrupt {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The format the file was read as.
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is well formed but uses a feature we do not implement.
    #[error("{path}: unsupported {format} feature: {reason}")]
    Unsupported {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The format the file was read as.
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor the caller asked for is not in the file.
    #[error("{path}: tensor `{name}` not found")]
    MissingTensor {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The tensor's name.
        name: String,
    },
}

impl FormatError {
    /// An IO error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result type of this crate, with [`FormatError`] by default.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;

impl nf_protocol::Describe for FormatError {
    fn code(&self) -> nf_protocol::ErrorCode {
        use nf_protocol::ErrorCode;
        match self {
            FormatError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorCode::NotFound
            }
            FormatError::Io { .. } => ErrorCode::Io,
            FormatError::WrongFormat { .. } => ErrorCode::BadInput,
            FormatError::Corrupt { .. } | FormatError::MissingTensor { .. } => ErrorCode::Corrupt,
            FormatError::Unsupported { .. } => ErrorCode::Unsupported,
        }
    }
    fn hint(&self) -> Option<String> {
        Some(match self {
            FormatError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                "check the path; models are folders (config.json + safetensors), .gguf files or llama2.c .bin files"
            }
            FormatError::Io { .. } => nf_protocol::IO_HINT,
            FormatError::WrongFormat { .. } => "pass a model folder (Hugging Face layout), a .gguf file, or a llama2.c .bin",
            FormatError::Corrupt { .. } => "the file is damaged or incomplete; download or export it again",
            FormatError::Unsupported { .. } => "convert the model with a current llama.cpp or transformers",
            FormatError::MissingTensor { .. } => "the file lacks weights this architecture needs; is it a complete Llama-family model?",
        }.into())
    }
}
