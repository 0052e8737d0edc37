//! Llama-family model.
