//! `bench` arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{ModelArgs, PrecisionArg};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Prompt processing and decode tokens/s, as llama.cpp's llama-bench measures them.
    Model(BenchModelArgs),
    /// Tokenizer encode throughput in MB/s over text files.
    Tokenizer(BenchTokenizerArgs),
    /// Document extraction speed: pages/s (PDF) and MB/s (every reader) per file.
    Ingest(BenchIngestArgs),
    /// Training throughput (forward + backward + AdamW) in tokens/s, on a model file or a
    /// randomly initialized model of given dimensions (default: Stories110M's).
    Train(BenchTrainArgs),
    /// The machine's f32 and bf16 matrix-multiply peaks in GFLOP/s on the active
    /// instruction set (the utilization references of f32 and bf16 training).
    Peak(BenchPeakArgs),
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// A model to train instead of a random one (with --tokenizer for llama2.c files).
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Tokenizer for --model when it is a llama2.c checkpoint.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Random model: model width.
    #[arg(long, default_value_t = 768)]
    pub dim: usize,
    /// Random model: layers.
    #[arg(long, default_value_t = 12)]
    pub layers: usize,
    /// Random model: attention heads.
    #[arg(long, default_value_t = 12)]
    pub heads: usize,
    /// Random model: key/value heads (default = heads).
    #[arg(long)]
    pub kv_heads: Option<usize>,
    /// Random model: feed-forward width.
    #[arg(long, default_value_t = 2048)]
    pub hidden: usize,
    /// Random model: vocabulary size.
    #[arg(long, default_value_t = 32000)]
    pub vocab: usize,
    #[arg(long, default_value_t = 1, value_name = "B")]
    pub batch_size: usize,
    #[arg(long, default_value_t = 256, value_name = "T")]
    pub seq_len: usize,
    /// LoRA rank (0 = full fine-tuning).
    #[arg(long, default_value_t = 0, value_name = "R")]
    pub lora_rank: usize,
    /// Recompute activations in the backward pass.
    #[arg(long)]
    pub recompute: bool,
    /// Arithmetic of the matrix products, as `train --precision`: auto, f32 or bf16.
    #[arg(long, value_enum, default_value = "auto", value_name = "P")]
    pub precision: PrecisionArg,
    /// With --lora-rank: how the frozen base is held, as `train --base-dtype`: as-loaded
    /// (f32 for the random model), f32, bf16, f16, q8_0, q4_0 or q4_1. The random model is
    /// made directly in this type, matrix by matrix, so the memory reported is what a run
    /// on such a base holds.
    #[arg(long, default_value = "as-loaded", value_name = "TYPE")]
    pub base_dtype: String,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub steps: usize,
}

#[derive(Debug, Args)]
pub struct BenchPeakArgs {
    /// Square matrix size.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub size: usize,
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub reps: usize,
}

#[derive(Debug, Args)]
pub struct BenchModelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt tokens processed in one batch (pp).
    #[arg(long, default_value_t = 128, value_name = "N")]
    pub prompt_tokens: usize,
    /// Tokens decoded one at a time (tg).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub gen_tokens: usize,
    /// Repetitions; the report gives the mean and standard deviation.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub reps: usize,
}

#[derive(Debug, Args)]
pub struct BenchTokenizerArgs {
    /// tokenizer.json, a .gguf, a model folder, or a llama2.c tokenizer.bin.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: PathBuf,
    /// Text files to encode.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Repetitions; the mean and standard deviation are reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub reps: usize,
    /// Instead of the throughput, encode prefixes of the text (repeated as needed) of 1 KB,
    /// 10 KB, ... up to this many MB on one thread, to show the cost is linear in the size.
    #[arg(long, value_name = "MB")]
    pub scaling: Option<usize>,
}

#[derive(Debug, Args)]
pub struct BenchIngestArgs {
    /// Documents to extract (PDF, DOCX, HTML, Markdown, text, JSONL).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Repetitions per file; the mean and standard deviation are reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub reps: usize,
}
