//! The error type of the dataset module. Every error about a file carries its path.

use std::path::PathBuf;

use nf_formats::FormatError;

use nf_tokenizer::TokenizerError;

/// An error reading, writing or batching training data.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Memory-mapping or atomically writing a file failed (the error names the file).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The file is not a token shard at all (wrong magic number, too short for a header).
    #[error("{path}: not a token shard (.bin): {reason}")]
    NotAShard { path: PathBuf, reason: String },
    /// The file is a token shard but its contents are inconsistent (truncated, trailing
    /// bytes, unknown version or id width).
    #[error("{path}: corrupt token shard: {reason}")]
    CorruptShard { path: PathBuf, reason: String },
    /// A token id is outside the vocabulary: the shard was made with another tokenizer,
    /// or the ids passed to the writer do not belong to the vocabulary given.
    #[error(
        "{path}: token id {id} at position {position} is outside the vocabulary of \
         {vocab_size} tokens (was this data made with another tokenizer?)"
    )]
    IdOutOfVocab {
        path: PathBuf,
        id: u32,
        position: usize,
        vocab_size: usize,
    },
    /// A source file holds no text (or a shard holds no tokens).
    #[error("{path}: empty file: no training tokens in it")]
    EmptySource { path: PathBuf },
    /// A source file looks binary (NUL bytes, mostly invalid UTF-8): a PDF or a document
    /// that needs extracting first.
    #[error("{path}: not a text file: {reason}")]
    NotText { path: PathBuf, reason: String },
    /// A source path is a folder; the caller decides which files in it to use.
    #[error("{path}: is a directory; pass the files in it")]
    IsDirectory { path: PathBuf },
    /// The tokenizer failed on the text of `path`.
    #[error("{path}: tokenizing: {source}")]
    Tokenize {
        path: PathBuf,
        #[source]
        source: TokenizerError,
    },
    /// There are fewer tokens than one training window needs.
    #[error(
        "the data has {tokens} tokens, but one window of seq_len {seq_len} needs {needed} \
         (seq_len + 1)"
    )]
    TooFewTokens {
        tokens: usize,
        seq_len: usize,
        needed: usize,
    },
    /// A dataset's `.mask` or `.starts` shard does not fit its tokens.
    #[error("{path}: {reason}")]
    BadSidecar { path: PathBuf, reason: String },
    /// A batch size or sequence length of zero, or similar.
    #[error("invalid batching configuration: {0}")]
    InvalidConfig(String),
    /// A saved [`BatcherState`](super::BatcherState) does not fit this batcher (another
    /// dataset, batch size or sequence length).
    #[error("cannot restore the data position: {0}")]
    StateMismatch(String),
}

impl DatasetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result type of the dataset module.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

impl nf_protocol::Describe for DatasetError {
    fn code(&self) -> nf_protocol::ErrorCode {
        match self {
            DatasetError::BadSidecar { .. } => nf_protocol::ErrorCode::Corrupt,
            _ => nf_protocol::ErrorCode::Other,
        }
    }
    fn hint(&self) -> Option<String> {
        match self {
            DatasetError::BadSidecar { .. } => {
                Some("the dataset folder is damaged; ingest the dataset again".into())
            }
            _ => None,
        }
    }
}
