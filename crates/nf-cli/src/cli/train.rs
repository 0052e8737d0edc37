//! `train`, `ingest` and `datasets` arguments.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::PrecisionArg;

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The base model: a model folder (Hugging Face layout), a .gguf, a llama2.c .bin, or a
    /// model name in the NeuralForge home.
    #[arg(
        long,
        short = 'm',
        value_name = "PATH",
        required_unless_present = "resume"
    )]
    pub model: Option<PathBuf>,
    /// Tokenizer (required for llama2.c checkpoints): tokenizer.json, a .gguf, or tokenizer.bin.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Training data: text files (.txt, .md, ...; tokenized on the fly), .bin token shards,
    /// or a dataset made by `ingest` (its folder or its name), whose val.bin then validates.
    #[arg(long, num_args = 1.., value_name = "PATH", required_unless_present = "resume")]
    pub data: Vec<PathBuf>,
    /// Validation data (default: hold out --val-fraction of the training tokens, from the end).
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub val: Vec<PathBuf>,
    /// Fraction of the training tokens held out for validation when --val is not given.
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    pub val_fraction: f32,
    /// Train every weight (f32 master weights and AdamW moments) instead of a LoRA adapter.
    #[arg(long)]
    pub full: bool,
    /// LoRA rank.
    #[arg(long, default_value_t = 8, value_name = "R")]
    pub lora_rank: usize,
    /// LoRA alpha (scale = alpha / rank); default 2 × rank.
    #[arg(long, value_name = "A")]
    pub lora_alpha: Option<f32>,
    /// LoRA dropout on the adapter input.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub lora_dropout: f32,
    /// Projections that get adapters: a comma list of q,k,v,o,gate,up,down, or `all`.
    #[arg(long, default_value = "all", value_name = "LIST")]
    pub lora_targets: String,
    /// Continue training this LoRA adapter (a run folder, a PEFT folder or a GGUF LoRA
    /// file) instead of a fresh one; its rank, alpha and targets replace --lora-rank,
    /// --lora-alpha and --lora-targets.
    #[arg(long, value_name = "PATH", conflicts_with = "full")]
    pub adapter: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(
        long,
        default_value_t = 200,
        value_name = "N",
        conflicts_with = "epochs"
    )]
    pub steps: u64,
    /// Train for this many passes over the data instead of --steps.
    #[arg(long, value_name = "E")]
    pub epochs: Option<f32>,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4, value_name = "B")]
    pub batch_size: usize,
    /// Tokens per sequence (capped at the model's context length).
    #[arg(long, default_value_t = 256, value_name = "T")]
    pub seq_len: usize,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub grad_accum: usize,
    /// Peak learning rate (default 2e-3 for LoRA, 1e-4 for --full).
    #[arg(long, value_name = "LR")]
    pub lr: Option<f32>,
    /// Final learning rate of the cosine/linear schedule (default lr / 10).
    #[arg(long, value_name = "LR")]
    pub min_lr: Option<f32>,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 10, value_name = "W")]
    pub warmup: u64,
    /// Learning-rate schedule after warmup: cosine, linear or constant.
    #[arg(long, default_value = "cosine", value_name = "NAME")]
    pub schedule: String,
    /// AdamW decoupled weight decay (matrices only; norms and biases never decay).
    #[arg(long, default_value_t = 0.0, value_name = "WD")]
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0, value_name = "C")]
    pub clip: f32,
    /// Validate every N steps (and at the end).
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub eval_every: u64,
    /// Validation batches per evaluation.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub eval_batches: usize,
    /// Stop after this many evaluations without a better validation loss (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub patience: u32,
    /// Print a greedy sample every N steps (0 = never).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub sample_every: u64,
    /// Prompt of the sample generations.
    #[arg(long, default_value = "Once upon a time", value_name = "TEXT")]
    pub sample_prompt: String,
    /// Save a checkpoint every N steps (and at the end, and on Ctrl-C).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub save_every: u64,
    /// Checkpoints kept (besides the one with the best validation loss).
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub keep: usize,
    /// Window sampling: random (seeded) or sequential (packed, in order).
    #[arg(long, default_value = "random", value_name = "MODE")]
    pub sampling: String,
    /// How a LoRA run stores its frozen f32 base: as-loaded (= f32), bf16 or f16 (half the
    /// memory), q8_0 (about a quarter), q4_0 or q4_1 (about an eighth; rows must be whole
    /// blocks of 32). Quantized GGUF bases always stay in their own blocks.
    #[arg(long, default_value = "as-loaded", value_name = "TYPE")]
    pub base_dtype: String,
    /// Recompute each layer's activations in the backward pass (less memory, ~30% slower).
    #[arg(long)]
    pub recompute: bool,
    /// Arithmetic of the matrix products: `auto` (bf16 where the CPU multiplies bf16
    /// natively, i.e. AVX512_BF16 or AMX; f32 elsewhere), `f32`, or `bf16` (operands
    /// rounded to bf16, sums in f32; master weights, gradients and AdamW stay f32). bf16
    /// without native support is emulated and slower than f32. Recorded in run.json: a
    /// resumed run keeps its own. [default: auto]
    #[arg(long, value_enum, value_name = "P")]
    pub precision: Option<PrecisionArg>,
    /// Let attention cross from one packed example or document into the next in a
    /// window (by default each attends only within itself, as if trained alone).
    #[arg(long)]
    pub cross_example_attention: bool,
    /// Seed for data order, LoRA initialization and dropout.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Run folder (default: <home>/runs/<date>-<time>-<method>).
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in RUN_DIR from its newest valid checkpoint, with its run.json
    /// settings (other flags are ignored).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Plan the run without starting it: load the model and data, time one real forward
    /// and backward pass, and report (event `train.plan`) the parameter counts, memory by
    /// part, and estimated time. Nothing is written (no run folder), so it is not audited.
    #[arg(long, conflicts_with = "resume")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Files and folders (walked recursively) to ingest.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Dataset name: the folder <home>/datasets/NAME (default with --out: its folder name).
    #[arg(long, value_name = "NAME", required_unless_present = "out")]
    pub name: Option<String>,
    /// The model whose tokenizer and chat template the dataset is made for.
    #[arg(long, short = 'm', value_name = "PATH")]
    pub model: PathBuf,
    /// Tokenizer to use instead of the model's own (required for llama2.c checkpoints).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// JSONL record shape: auto (detected per file), text, completions or chat.
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    pub format: String,
    /// Chat template for chat and completion examples instead of the model's own: a
    /// built-in name (chatml, llama2, llama3) or a Jinja template file.
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    /// Fraction of the tokens held out for validation, in whole documents.
    #[arg(long, default_value_t = 0.1, value_name = "F")]
    pub val_fraction: f32,
    /// Training window length in tokens: long documents are cut into windows this long.
    #[arg(long, default_value_t = 256, value_name = "T")]
    pub seq_len: usize,
    /// Tokens consecutive windows share (default: seq_len / 8).
    #[arg(long, value_name = "N")]
    pub overlap: Option<usize>,
    /// Seed of the train/validation split.
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// Replace an existing dataset of this name.
    #[arg(long)]
    pub force: bool,
    /// Dataset folder instead of <home>/datasets/NAME.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Train on every token of chat and completion examples (no loss mask).
    #[arg(long)]
    pub no_mask: bool,
}

#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// The datasets in <home>/datasets/ with their sizes.
    List,
    /// A dataset's counts, sources and a few training windows decoded back to text.
    Show(DatasetShowArgs),
}

#[derive(Debug, Args)]
pub struct DatasetShowArgs {
    /// A dataset name under <home>/datasets/, or a dataset folder.
    #[arg(value_name = "NAME|DIR")]
    pub name: PathBuf,
    /// Training windows to decode and print.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub samples: usize,
}
