#![warn(missing_docs)]
//! Compute kernels for Llama-family transformers, as free functions on plain `f32` slices.
//!
//! Conventions (see ARCHITECTURE.md): activations are row-major `[tokens, channels]`;
//! weights are `[out, in]` as in Hugging Face checkpoints, so a linear layer is `y = x · Wᵀ`.
//! Outputs come first in every signature. Each fast kernel has a naive reference beside it
//! (`*_naive`), and the tests hold the fast one to the reference. Backward kernels sit directly
//! below their forward and accumulate (`+=`) into their gradient outputs unless their doc
//! says they overwrite; the caller zeroes gradients.
//!
//! The ggml block types ([`ggml`], [`quant`]) live here because kernels compute on them
//! directly; `nf-formats` re-exports them for file I/O.

pub mod activation;
pub mod attention;
pub mod cpu;
pub mod embedding;
pub mod fastmath;
pub mod gemm_bf16;
pub mod ggml;
pub mod linear;
pub mod loss;
pub mod lowrank;
pub mod matmul;
pub mod norm;
pub mod optim;
pub mod precision;
pub mod qdot;
pub mod quant;
pub mod rng;
pub mod rope;
pub mod simd;

pub use cpu::Isa;
pub use precision::Precision;

#[cfg(test)]
pub(crate) mod testutil;
