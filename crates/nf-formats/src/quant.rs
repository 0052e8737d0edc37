//! Dequantization of ggml block types to f32.
