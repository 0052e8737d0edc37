//! Command-line arguments. One vocabulary of flags across commands (DESIGN §7).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "neuralforge",
    version,
    about = "Private, on-device fine-tuning and inference for Llama-family models."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Write NDJSON events to stdout instead of human text (logs stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// NeuralForge home (models, datasets, runs); default: the platform data dir.
    #[arg(long, global = true, env = "NEURALFORGE_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Threads for compute kernels (0 = all cores).
    #[arg(long, global = true, default_value_t = 0, value_name = "N")]
    pub threads: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a continuation of a prompt (or a chat reply with --chat).
    Generate(GenerateArgs),
    /// Chat with a model in the terminal, turn by turn.
    Chat(ChatArgs),
    /// Print the token ids of the text on stdin.
    Tokenize(TokenizeArgs),
    /// Describe a model file or folder: architecture, sizes, types, tokenizer, template.
    Inspect(InspectArgs),
    /// Measure speed: prompt processing and decoding, or tokenizer throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Prompt processing and decode tokens/s, as llama.cpp's llama-bench measures them.
    Model(BenchModelArgs),
    /// Tokenizer encode throughput in MB/s over text files.
    Tokenizer(BenchTokenizerArgs),
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
    /// Repetitions; the best is reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub reps: usize,
}

/// Where the model and its tokenizer come from.
#[derive(Debug, Args, Clone)]
pub struct ModelArgs {
    /// A model folder (Hugging Face layout), a .gguf file, a llama2.c .bin, or a model name
    /// in the NeuralForge home.
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: PathBuf,
    /// Tokenizer to use instead of the model's own: tokenizer.json, a .gguf, or a llama2.c
    /// tokenizer.bin (required for llama2.c checkpoints).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct SamplingArgs {
    /// Maximum number of new tokens.
    #[arg(long, short = 'n', default_value_t = 256, value_name = "N")]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy (deterministic).
    #[arg(long, short = 't', default_value_t = 0.8, value_name = "T")]
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens up to this total probability.
    #[arg(long, default_value_t = 0.95, value_name = "P")]
    pub top_p: f32,
    /// Keep only the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 40, value_name = "K")]
    pub top_k: usize,
    /// Penalty for tokens already in the context (1.0 = off).
    #[arg(long, default_value_t = 1.0, value_name = "R")]
    pub repetition_penalty: f32,
    /// Random seed; the same seed and settings give the same output.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt text.
    #[arg(long, short = 'p', value_name = "TEXT")]
    pub prompt: String,
    /// Render the prompt as one user turn with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// System message for --chat.
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    /// Chat template to use instead of the model's own: a built-in name (chatml, llama2,
    /// llama3) or a file holding a Jinja template.
    #[arg(long, value_name = "NAME|FILE", requires = "chat")]
    pub chat_template: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message for the conversation.
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Chat template to use instead of the model's own: a built-in name (chatml, llama2,
    /// llama3) or a file holding a Jinja template.
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Do not add the beginning-of-sequence token.
    #[arg(long)]
    pub no_bos: bool,
    /// Treat special-token text such as `<|im_start|>` as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A model folder, .gguf, or llama2.c .bin.
    pub path: PathBuf,
    /// Tokenizer to describe for llama2.c checkpoints.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
}
