//! Command-line arguments. One vocabulary of flags across commands (DESIGN §7).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod bench;
mod train;
pub use bench::*;
pub use train::*;

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
