//! The one error type of this crate. Every variant carries the path of the file it is about,
//! so a user reading `error: ...` knows which file to look at.

use std::path::PathBuf;

/// An error reading or writing a model file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the format we were asked to read (wrong magic number, wrong shape).
    #[error("{path}: not a {format} file: {reason}")]
    WrongFormat {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    /// The file claims to be in the format but its contents are inconsistent: truncated,
    /// offsets past the end, absurd sizes.
    #[error("{path}: corrupt {format} file: {reason}")]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    /// The file is well formed but uses a feature we do not implement.
    #[error("{path}: unsupported {format} feature: {reason}")]
    Unsupported {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    /// A tensor the caller asked for is not in the file.
    #[error("{path}: tensor `{name}` not found")]
    MissingTensor { path: PathBuf, name: String },
}

impl FormatError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        FormatError::Io {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = FormatError> = std::result::Result<T, E>;
