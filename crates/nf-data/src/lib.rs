//! Tokenizers and chat templates.
//!
//! [`Tokenizer`] loads a GGUF vocabulary ([`Tokenizer::from_gguf`]), a Hugging Face
//! `tokenizer.json` ([`Tokenizer::from_hf_dir`], [`Tokenizer::from_hf_file`]) or a llama2.c
//! `tokenizer.bin` ([`Tokenizer::from_llama2c`]) and encodes and decodes text with the ids
//! the model was trained on. [`render_chat`] turns a conversation into the prompt text a
//! chat model expects, using the Jinja template shipped with the model. [`dataset`] holds
//! the training data side: token shards, the token stream, batching and splits.
//! [`ingest`] turns documents (PDF, DOCX, HTML, Markdown, text, JSONL) into datasets.

pub mod chat;
pub mod dataset;
pub mod error;
pub mod ingest;
pub mod ollama;
pub mod tokenizer;

pub use chat::{ChatMessage, builtin_template, render_chat};
pub use error::{Result, TokenizerError};
pub use tokenizer::Tokenizer;
