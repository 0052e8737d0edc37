#![warn(missing_docs)]
//! Tokenizers and chat templates.
//!
//! [`Tokenizer`] loads a GGUF vocabulary ([`Tokenizer::from_gguf`]), a Hugging Face
//! `tokenizer.json` ([`Tokenizer::from_hf_dir`], [`Tokenizer::from_hf_file`]) or a llama2.c
//! `tokenizer.bin` ([`Tokenizer::from_llama2c`]) and encodes and decodes text with the ids
//! the model was trained on. [`render_chat`] turns a conversation into the prompt text a
//! chat model expects, using the Jinja template shipped with the model (or a built-in one),
//! and [`ollama`] writes the same conversation format as an Ollama Modelfile.

pub mod chat;
pub mod error;
pub mod ollama;
pub mod tokenizer;

pub use chat::{BUILTIN_TEMPLATES, ChatMessage, builtin_template, encode_chat, render_chat};
pub use error::{Result, TokenizerError};
pub use tokenizer::{TextStream, Tokenizer};
