//! The error type of the ingest module. Every error about a file carries its path, so one
//! bad document can be reported by name while the rest of an ingest goes on.

use std::path::PathBuf;

use nf_data::DatasetError;
use nf_tokenizer::TokenizerError;

/// An error reading one source document, or building or opening a dataset.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no text (zero bytes, only whitespace, or a document without a text
    /// layer).
    #[error("{path}: empty: {reason}")]
    Empty {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is larger than the reader accepts.
    #[error("{path}: too large: {size} bytes (the limit is {limit} bytes)")]
    TooLarge {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The reader's limit in bytes.
        limit: u64,
    },
    /// The extension promises text but the bytes are binary (NUL bytes, mostly invalid UTF-8).
    #[error("{path}: not a text file: {reason}")]
    NotText {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is not in the format its extension names, or is damaged (a `.docx` that is
    /// not a zip, a truncated PDF, a JSONL line that is not JSON).
    #[error("{path}: corrupt {format} file: {reason}")]
    Corrupt {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The format the file was read as.
        format: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A well-formed file that we will not read: an encrypted PDF, a zip bomb, a JSONL
    /// shape we do not know, an extraction that exceeded its time limit.
    #[error("{path}: {reason}")]
    Refused {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// No reader handles this extension.
    #[error("{path}: unsupported file type `{ext}`")]
    Unsupported {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The extension.
        ext: String,
    },
    /// The tokenizer or the chat template failed on the text of `path`.
    #[error("{path}: {source}")]
    Tokenize {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: TokenizerError,
    },
    /// Writing or reading token shards failed.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Writing a manifest or text file failed.
    #[error(transparent)]
    Format(#[from] nf_formats::FormatError),
    /// The dataset folder exists and replacing it was not asked for.
    #[error("{path}: a dataset already exists here")]
    Exists {
        /// The file (or folder) concerned.
        path: PathBuf,
    },
    /// Nothing usable came out of the sources.
    #[error("no training text: {0}")]
    NothingIngested(String),
    /// A dataset folder is damaged or is not a dataset.
    #[error("{path}: not a dataset: {reason}")]
    NotADataset {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl IngestError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IngestError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        format: &'static str,
        reason: impl Into<String>,
    ) -> Self {
        IngestError::Corrupt {
            path: path.into(),
            format,
            reason: reason.into(),
        }
    }

    pub(crate) fn refused(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IngestError::Refused {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn empty(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        IngestError::Empty {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The result type of the ingest module.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

impl nf_protocol::Describe for IngestError {
    fn code(&self) -> nf_protocol::ErrorCode {
        use nf_protocol::ErrorCode;
        match self {
            IngestError::NotADataset { .. } => ErrorCode::Corrupt,
            IngestError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorCode::NotFound
            }
            // Writing the dataset (a full disk, an unwritable home).
            IngestError::Io { .. } | IngestError::Format(nf_formats::FormatError::Io { .. }) => {
                ErrorCode::Io
            }
            _ => ErrorCode::Ingest,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            IngestError::NotADataset { .. } => Some(
                "the dataset folder is damaged; run `neuralforge ingest` again with --force".into(),
            ),
            IngestError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Some("check the path".into())
            }
            IngestError::Io { .. } | IngestError::Format(nf_formats::FormatError::Io { .. }) => {
                Some(nf_protocol::IO_HINT.into())
            }
            _ => None,
        }
    }
}
