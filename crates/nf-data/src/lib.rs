#![warn(missing_docs)]
//! Training data: token shards on disk, the token stream built from shards and text files,
//! the train/validation split, batching with an exactly resumable position, and a content
//! hash of the tokens for checkpoints; [`prep`] loads a run's data with its loss masks and
//! example starts.
//!
//! The usual path from files to batches:
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use nf_tokenizer::Tokenizer;
//! use nf_data::{Batcher, Sampling, TokenStream, split_train_val, tokens_hash};
//!
//! let tok = Tokenizer::from_hf_dir("models/smollm2")?;
//! let stream = TokenStream::from_paths(&["notes.md", "datasets/docs/train.bin"], &tok)?;
//! for w in stream.warnings() {
//!     eprintln!("warning: {w}");
//! }
//! let (train, val) = split_train_val(stream.into_tokens(), 0.1);
//! let data_hash = tokens_hash(&train);
//! let mut batches = Batcher::new(train, 8, 256, Sampling::Random, 1337)?;
//! let (mut x, mut y) = (vec![0; 8 * 256], vec![0; 8 * 256]);
//! batches.next_batch(&mut x, &mut y);
//! # let _ = (val, data_hash);
//! # Ok(()) }
//! ```

mod batcher;
mod error;
mod hash;
pub mod prep;
mod rng;
pub mod shard;
mod split;
mod stream;
pub use stream::invalid_utf8;

pub use batcher::{Batcher, BatcherState, MASKED_TARGET, Sampling};
pub use error::{DatasetError, Result};
pub use hash::tokens_hash;
pub use rng::Rng;
pub use shard::{TokenShard, write_shard};
pub use split::split_train_val;
pub use stream::{
    SourceInfo, SourceKind, TEXT_CHUNK_BYTES, TokenStream, document_separator, encode_document,
};
