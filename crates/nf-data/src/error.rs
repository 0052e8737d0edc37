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
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Memory-mapping or atomically writing a file failed (the error names the file).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The file is not a token shard at all (wrong magic number, too short for a header).
    #[error("{path}: not a token shard (.bin): {reason}")]
    NotAShard {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file is a token shard but its contents are inconsistent (truncated, trailing
    /// bytes, unknown version or id width).
    #[error("{path}: corrupt token shard: {reason}")]
    CorruptShard {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A token id is outside the vocabulary: the shard was made with another tokenizer,
    /// or the ids passed to the writer do not belong to the vocabulary given.
    #[error(
        "{path}: token id {id} at position {position} is outside the vocabulary of \
         {vocab_size} tokens (was this data made with another tokenizer?)"
    )]
    IdOutOfVocab {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The token id.
        id: u32,
        /// Its position in the shard.
        position: usize,
        /// The vocabulary's size.
        vocab_size: usize,
    },
    /// A source file holds no text (or a shard holds no tokens).
    #[error("{path}: empty file: no training tokens in it")]
    EmptySource {
        /// The file (or folder) concerned.
        path: PathBuf,
    },
    /// A source file looks binary (NUL bytes, mostly invalid UTF-8): a PDF or a document
    /// that needs extracting first.
    #[error("{path}: not a text file: {reason}")]
    NotText {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A source path is a folder; the caller decides which files in it to use.
    #[error("{path}: is a directory; pass the files in it")]
    IsDirectory {
        /// The file (or folder) concerned.
        path: PathBuf,
    },
    /// The tokenizer failed on the text of `path`.
    #[error("{path}: tokenizing: {source}")]
    Tokenize {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: TokenizerError,
    },
    /// There are fewer tokens than one training window needs.
    #[error(
        "the data has {tokens} tokens, but one window of seq_len {seq_len} needs {needed} \
         (seq_len + 1)"
    )]
    TooFewTokens {
        /// Tokens available.
        tokens: usize,
        /// The window length.
        seq_len: usize,
        /// Tokens one window needs.
        needed: usize,
    },
    /// A dataset's `.mask` or `.starts` shard does not fit its tokens.
    #[error("{path}: {reason}")]
    BadSidecar {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
