#![warn(missing_docs)]
//! Model file formats: GGUF (read, and write in `gguf_write`), safetensors (read/write,
//! sharded), llama2.c checkpoints (read/write), atomic file and folder replacement
//! (`atomic`), and the ggml quantized block types. This crate knows shapes, dtypes and byte layouts; it
//! does no model math. Every reader memory-maps its file and validates sizes and offsets
//! against the file length before trusting them, so corrupt input yields a [`FormatError`],
//! never a panic or a huge allocation.

pub mod atomic;
pub mod error;
pub mod gguf;
pub mod gguf_write;
pub mod llama2c;
pub mod mmap;
pub mod safetensors;

/// The ggml element types and their (de)quantization, defined in `nf-engine`.
pub use nf_engine::{ggml, quant};

pub use error::{FormatError, Result};
pub use ggml::GgmlType;
pub use gguf::{GgufFile, MetaValue, TensorInfo};
pub use gguf_write::{GgufWriteError, GgufWriter};
pub use quant::QuantError;

/// The most layers a model file may claim. Layers are allocated one struct each before any
/// tensor is read, so a header's count is capped on its own; the largest open models have
/// about 130.
pub const MAX_LAYERS: usize = 1024;
