//! The Llama-family model: configuration from any source format, f32 weights, the forward
//! pass with a KV cache, sampling, and generation. One implementation serves Llama 1/2/3,
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
