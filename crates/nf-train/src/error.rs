//! The error types of this crate. Every error about a file or folder carries its path.

use std::path::PathBuf;

use nf_formats::FormatError;

/// An error of the training support code.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A failure with its own code and hint (a damaged `run.json`, a run that is running).
    #[error("{0}")]
    Failure(#[from] nf_protocol::Failure),
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a run's file (`run.json`) failed; the error names the file.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Saving, finding or loading a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A learning-rate schedule name that is not `constant`, `linear` or `cosine`.
    #[error("unknown learning-rate schedule `{0}`; expected constant, linear or cosine")]
    UnknownSchedule(String),
    /// The run's settings or data do not allow training.
    #[error("{0}")]
    Config(String),
    /// A checkpoint belongs to another run: its configuration, base model or data differ.
    #[error("{dir}: the checkpoint was made with a different {what}; refusing to resume from it")]
    Mismatch {
        /// What differs.
        what: String,
        /// The folder concerned.
        dir: PathBuf,
    },
    /// Every recent step was non-finite and there is no checkpoint to roll back to.
    #[error(
        "training diverged: {steps} non-finite steps in a row and no checkpoint to roll back to"
    )]
    Diverged {
        /// Non-finite steps in a row.
        steps: u32,
    },
    /// Loading or batching the training data failed.
    #[error(transparent)]
    Data(#[from] nf_data::DatasetError),
    /// The model rejected a batch (a token outside its vocabulary, a wrong shape).
    #[error(transparent)]
    Model(#[from] nf_model::ModelError),
}

/// What is wrong with a checkpoint, or why saving one failed. The messages say which
/// folder or file, and what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The operating system refused an operation on `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A tensor file could not be read or written (the error names the file).
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The folder has no `COMPLETE` marker: the save was interrupted before it finished.
    #[error("{dir}: incomplete checkpoint (no COMPLETE marker; the save was interrupted)")]
    Incomplete {
        /// The folder concerned.
        dir: PathBuf,
    },
    /// The `COMPLETE` marker is unreadable or lacks an entry for a required file.
    #[error("{path}: bad checkpoint marker: {reason}")]
    BadMarker {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file listed in the marker is missing.
    #[error("{path}: missing from the checkpoint")]
    MissingFile {
        /// The file (or folder) concerned.
        path: PathBuf,
    },
    /// A file's content is not what was saved: corrupted or edited after the save.
    #[error(
        "{path}: checksum mismatch (sha256 {actual}, the marker says {expected}): the file is corrupted"
    )]
    HashMismatch {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The sha256 the marker lists.
        expected: String,
        /// The sha256 of the file now.
        actual: String,
    },
    /// A file passed its checksum but does not make sense (a tensor without its
    /// optimizer moments, a `state.json` that is not JSON).
    #[error("{path}: corrupt checkpoint: {reason}")]
    Corrupt {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The folder name is not `step-N`.
    #[error("{path}: not a checkpoint folder (expected a name like step-100)")]
    NotACheckpoint {
        /// The file (or folder) concerned.
        path: PathBuf,
    },
    /// The tensors handed to [`crate::checkpoint::save_checkpoint`] are inconsistent
    /// (a shape that does not match the data length, moments that do not match weights).
    #[error("cannot save a checkpoint: {0}")]
    InvalidInput(String),
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The result type of this crate, with [`TrainError`] by default.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;
