#![warn(missing_docs)]
//! The Llama-family model: configuration from any source format, weights kept as loaded
//! (f32, or a GGUF's quantized blocks, dequantized on the fly), the forward pass with a KV
//! cache, sampling, and generation; training (`train`: LoRA and full fine-tuning, the
//! training forward and backward), export (`export`: HF, GGUF, the parity check) and random
//! models for benchmarks and tests (`random`). One implementation serves Llama 1/2/3,
//! TinyLlama, SmolLM, Mistral, Qwen2, Qwen3 and Phi-3 through config flags.

pub mod config;
pub mod error;
pub mod export;
pub mod generate;
pub mod model;
pub mod random;
pub mod sampler;
pub mod train;
pub mod weights;

pub use config::Config;
pub use error::{ModelError, Result};
pub use model::{KvCache, Model, ModelFormat};
pub use sampler::{Sampler, SamplerConfig};
