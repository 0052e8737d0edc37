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
    /// Refuse every network access, even `models pull` (also NEURALFORGE_OFFLINE=1).
    /// Nothing else in NeuralForge ever opens a connection.
    #[arg(
        long,
        global = true,
        env = "NEURALFORGE_OFFLINE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub offline: bool,
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
    /// Fine-tune a model (LoRA or full) on text files, token shards or a dataset.
    Train(Box<TrainArgs>),
    /// Turn documents (PDF, DOCX, HTML, Markdown, text, JSONL) into a training dataset.
    Ingest(Box<IngestArgs>),
    /// Export a run or model as a Hugging Face folder, PEFT adapter, GGUF, GGUF LoRA or
    /// Ollama folder, checked against the model it came from.
    Export(Box<ExportArgs>),
    /// Mean cross-entropy and perplexity of a model on text, token shards or a dataset's
    /// validation split.
    Eval(EvalArgs),
    /// List the datasets in the NeuralForge home, or show one.
    #[command(subcommand)]
    Datasets(DatasetsCommand),
    /// Measure speed: prompt processing and decoding, or tokenizer throughput.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The tamper-evident audit log: show, verify, export; make a signing key.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Where an artifact came from (run, dataset, source documents), or what used a document.
    Lineage(LineageArgs),
    /// The model store in <home>/models: list, import, pull from a hub, show, remove.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// The local web app: dashboard, configure, ingest, models, generate and audit pages
    /// in the browser, driving this binary's commands.
    Studio(StudioArgs),
}

#[derive(Debug, Args)]
pub struct StudioArgs {
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 7700, value_name = "P")]
    pub port: u16,
    /// Address to listen on. Anything but a loopback address exposes the studio to the
    /// network (it still needs its token); it is never the default.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub host: std::net::IpAddr,
    /// Do not open a browser; only print the address.
    #[arg(long)]
    pub no_open: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the log's entries (oldest first).
    Show(AuditShowArgs),
    /// Check the hash chain, head and signatures; exit 1 naming the first broken entry.
    Verify(AuditVerifyArgs),
    /// Print the newest entry's anchor (`SEQ:SHA256`) to keep outside this machine; a later
    /// `audit verify --expect-head` with it catches a log rewritten from that entry back.
    Anchor,
    /// Write the entries for an auditor as JSON or CSV.
    Export(AuditExportArgs),
    /// Create this device's ed25519 signing key (audit/device.key, mode 0600); later
    /// entries are signed.
    Keygen,
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// An anchor printed by `audit anchor` (SEQ:SHA256): that entry must still be in the log
    /// unchanged.
    #[arg(long, value_name = "SEQ:SHA256")]
    pub expect_head: Option<String>,
    /// The device's public key (hex, as `audit keygen` printed it), held outside the home:
    /// signatures must have been checked against this key.
    #[arg(long, value_name = "PUBKEY")]
    pub expect_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditShowArgs {
    /// Only entries at or after this time: RFC 3339, a date, or an age such as 24h or 7d.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only entries before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    /// json (one document with the verification result) or csv (one row per entry).
    #[arg(long, default_value = "json", value_name = "FORMAT")]
    pub format: String,
    /// Only entries at or after this time: RFC 3339, a date, or an age such as 24h or 7d.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only entries before this time.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Write to this file (atomically) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LineageArgs {
    /// A run folder, its adapter/ or model/ folder, a checkpoint, an exported file, or a
    /// dataset (folder or name).
    #[arg(value_name = "ARTIFACT", required_unless_present = "document")]
    pub artifact: Option<PathBuf>,
    /// Instead: every dataset, run and export that used this document (matched by sha256).
    #[arg(long, value_name = "FILE", conflicts_with = "artifact")]
    pub document: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The models in <home>/models/.
    List,
    /// Copy (or link) a local model into the store: an HF folder, a .gguf, or a llama2.c
    /// .bin (with its tokenizer.bin beside it, or --tokenizer).
    Import(ModelsImportArgs),
    /// Download a model repository from the Hugging Face hub (or a mirror) into the store.
    Pull(ModelsPullArgs),
    /// One stored model: its source and the sha256 of each file.
    Show(ModelsNameArgs),
    /// Remove a stored model.
    Rm(ModelsNameArgs),
}

#[derive(Debug, Args)]
pub struct ModelsImportArgs {
    /// The model folder or file.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// Name in the store (default: the folder or file name without extension).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A llama2.c tokenizer.bin to store with a .bin checkpoint.
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// Hard-link the files instead of copying them (same file system only; falls back to
    /// a copy).
    #[arg(long)]
    pub link: bool,
    /// Replace a stored model of this name.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ModelsPullArgs {
    /// The repository, e.g. HuggingFaceTB/SmolLM2-135M-Instruct.
    #[arg(value_name = "REPO")]
    pub repo: String,
    /// Branch, tag or commit.
    #[arg(long, default_value = "main", value_name = "REV")]
    pub revision: String,
    /// Only files matching this glob (`*` and `?`; repeatable), e.g. `*.safetensors`.
    /// Default: the files a model needs (config, weights, tokenizer, generation config).
    #[arg(long, value_name = "PATTERN")]
    pub include: Vec<String>,
    /// Hub address (a mirror); default $HF_ENDPOINT or https://huggingface.co.
    #[arg(long, env = "HF_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,
    /// Name in the store (default: the repository name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Replace a stored model of this name.
    #[arg(long)]
    pub force: bool,
    /// Give up on a file when no bytes arrive for this many seconds (the partial file is
    /// kept; the same command resumes it).
    #[arg(long, default_value_t = 60.0, value_name = "SECS", value_parser = positive_secs)]
    pub stall_timeout: f64,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a number of seconds between 0 and 86400"
        )),
    }
}

#[derive(Debug, Args)]
pub struct ModelsNameArgs {
    /// The model's name in the store.
    #[arg(value_name = "NAME")]
    pub name: String,
}

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

/// `--precision`: how training's matrix products multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    /// bf16 where the CPU multiplies bf16 natively (AVX512_BF16, AMX), f32 elsewhere.
    Auto,
    /// f32 operands and sums.
    F32,
    /// bf16 operands (round to nearest even), f32 sums.
    Bf16,
}

impl PrecisionArg {
    /// The precision this choice means on the instruction-set tier `isa`.
    pub fn resolve(self, isa: nf_engine::cpu::Isa) -> nf_engine::Precision {
        match self {
            PrecisionArg::Auto => nf_engine::Precision::auto(isa),
            PrecisionArg::F32 => nf_engine::Precision::F32,
            PrecisionArg::Bf16 => nf_engine::Precision::Bf16,
        }
    }
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

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder made by `train`, or any model `--model` accepts.
    #[arg(value_name = "RUN_OR_MODEL")]
    pub source: PathBuf,
    /// `hf`, `peft`, `gguf`, `gguf-lora` or `ollama`.
    #[arg(long, value_name = "FORMAT")]
    pub format: String,
    /// Where to write: a folder (hf, peft, ollama) or a file (gguf, gguf-lora).
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Stored type of the matrices: f32, f16, bf16, q8_0, q4_0, q4_1 (GGUF and Ollama;
    /// default f16); hf, peft and gguf-lora are written in f32.
    #[arg(long, value_name = "TYPE")]
    pub quant: Option<String>,
    /// Skip the parity check of the written export against the in-memory model.
    #[arg(long)]
    pub no_verify: bool,
    /// Replace an existing export at --out (only once the new one is complete and checked).
    #[arg(long)]
    pub force: bool,
    /// Tokenizer for a llama2.c source (runs record their own).
    #[arg(long, value_name = "PATH")]
    pub tokenizer: Option<PathBuf>,
    /// A LoRA adapter to export with (or merged into) a plain model.
    #[arg(long, value_name = "RUN_DIR|ADAPTER")]
    pub adapter: Option<PathBuf>,
    /// The chat template to write instead of the tokenizer's own: a built-in name or a
    /// Jinja file.
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text files, .bin token shards, or a dataset made by `ingest` (its folder or name;
    /// scored on its val.bin when it has one).
    #[arg(long, required = true, num_args = 1.., value_name = "PATH")]
    pub data: Vec<PathBuf>,
    /// Tokens of context per window.
    #[arg(long, default_value_t = 256, value_name = "T")]
    pub seq_len: usize,
    /// Windows scored at most (from the start of the data).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_windows: usize,
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
    /// A LoRA adapter to apply on top of the model: a run folder made by `train` (its
    /// final adapter), or a PEFT adapter folder (adapter_config.json +
    /// adapter_model.safetensors).
    #[arg(long, value_name = "RUN_DIR|ADAPTER")]
    pub adapter: Option<PathBuf>,
}

impl ModelArgs {
    /// What to load, for `nf_store::load`.
    pub fn spec(&self) -> nf_store::ModelSpec {
        nf_store::ModelSpec {
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            adapter: self.adapter.clone(),
        }
    }
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
    /// The prompt text; `-` reads it from stdin (which keeps it out of the process list).
    #[arg(
        long,
        short = 'p',
        value_name = "TEXT",
        required_unless_present = "messages"
    )]
    pub prompt: Option<String>,
    /// Render the prompt as one user turn with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// With --chat: the whole conversation instead of --prompt and --system, a JSON array
    /// of `{"role", "content"}` messages ending with the user's turn; `-` reads stdin.
    #[arg(long, value_name = "FILE", requires = "chat", conflicts_with_all = ["prompt", "system"])]
    pub messages: Option<std::path::PathBuf>,
    /// System message for --chat.
    #[arg(long, value_name = "TEXT", requires = "chat")]
    pub system: Option<String>,
    /// Chat template to use instead of the model's own: a built-in name (chatml, llama2,
    /// llama3) or a file holding a Jinja template.
    #[arg(long, value_name = "NAME|FILE", requires = "chat")]
    pub chat_template: Option<String>,
    /// Store the prompt itself in the audit log (default: only its sha256).
    #[arg(long)]
    pub audit_prompts: bool,
    /// Also write the prompt's logits, `[prompt tokens, vocab]` little-endian f32 with the
    /// prompt's ids in FILE.ids (one per line), for comparisons with other tools.
    #[arg(long, value_name = "FILE")]
    pub logits: Option<std::path::PathBuf>,
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
    /// Store each message itself in the audit log (default: only its sha256).
    #[arg(long)]
    pub audit_prompts: bool,
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
