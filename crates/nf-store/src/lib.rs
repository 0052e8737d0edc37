#![warn(missing_docs)]
//! The NeuralForge home and its model store, the Hugging Face hub client that fills the
//! store, and turning what a user passes as `--model` into a loaded model.
//!
//! - [`home`]: where the home is (`--home`, `$NEURALFORGE_HOME`, the platform data dir) and
//!   keeping it owner-only.
//! - [`store`]: `<home>/models/<name>/`, each a folder of the model's files as imported plus
//!   `model.json` (written last): list, read, import, remove.
//! - [`mod@pull`]: download a revision of a hub repository into the store, resuming partial
//!   files and verifying each against the hub's sha256. It is the only code in NeuralForge
//!   that opens a network connection; [`hub`] is its HTTP client.
//! - [`resolve`]: a path, a stored model's name or a run folder to a [`Loaded`] model and
//!   tokenizer, with a LoRA adapter merged when one is asked for.
//! - [`datasets`]: the home's datasets by path or name, and a run's data expanded from them.
//! - [`lineage`]: the runs, datasets and documents an artifact came from, and what was made
//!   from a document.
//!
//! The crate never prints: downloads report progress through a callback, and every failure
//! the user can act on is a [`Failure`] with a stable code and a hint.

pub mod datasets;
pub mod home;
pub mod hub;
pub mod inspect;
pub mod lineage;
pub mod pull;
pub mod resolve;
mod stall;
pub mod store;

use nf_formats::FormatError;
use nf_model::ModelError;
use nf_protocol::{ErrorCode, Failure};
use nf_tokenizer::TokenizerError;

pub use home::{home_dir, private_home};
pub use pull::{PullOptions, PullProgress, pull};
pub use resolve::{Loaded, ModelSpec, load, load_adapter, load_base, load_tokenizer};
pub use store::{ImportOptions, MODEL_FILE, StoredFile, StoredModel};

/// An error of the store, the hub client or model resolution. The source errors stay
/// attached, so a caller can find the model or format error under it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A failure with its own code and hint (a bad name, a missing model, a refused
    /// download).
    #[error("{0}")]
    Failure(#[from] Failure),
    /// The operating system refused an operation; `context` says which, with the path.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A model could not be loaded.
    #[error("{0}")]
    Model(#[from] ModelError),
    /// A model file could not be read.
    #[error("{0}")]
    Format(#[from] FormatError),
    /// A tokenizer could not be read.
    #[error("{0}")]
    Tokenizer(#[from] TokenizerError),
    /// A dataset's manifest could not be read.
    #[error("{0}")]
    Ingest(#[from] nf_ingest::IngestError),
    /// A run's `run.json` could not be read.
    #[error("{0}")]
    Train(#[from] nf_train::TrainError),
    /// A file that is neither a tokenizer.json, a folder nor a GGUF, read as a llama2.c
    /// tokenizer.bin (the last kind left) and refused by that reader too.
    #[error("reading {} as a llama2.c tokenizer.bin: {source}", path.display())]
    Llama2cTokenizer {
        /// The file read.
        path: std::path::PathBuf,
        /// The llama2.c reader's error.
        #[source]
        source: TokenizerError,
    },
}

/// The result type of this crate, with [`StoreError`] by default.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A [`StoreError::Failure`] with this code, message and hint.
pub fn fail(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> StoreError {
    StoreError::Failure(Failure::new(code, message, hint))
}

/// Attaches `context` (what was being done, naming the path) to an IO error, as a
/// [`StoreError::Io`].
pub fn io_context(context: impl FnOnce() -> String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io {
        context: context(),
        source,
    }
}
