//! The event kinds and their fields, as the crate docs describe them on the wire.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// One event kind with its fields. See the crate docs for the wire contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Event {
    /// `model.loaded`: A model and its tokenizer are ready.
    #[serde(rename = "model.loaded")]
    ModelLoaded {
        /// String.
        path: String,
        /// `"hf"`, `"gguf"`, `"llama2c"`.
        format: String,
        /// String.
        arch: String,
        /// Integer.
        n_params: u64,
        /// Integer.
        n_layers: u64,
        /// Integer.
        context_length: u64,
        /// String: the tokenizer kind.
        tokenizer: String,
        /// Number.
        load_ms: f64,
    },
    /// `model.info`: What `inspect` found.
    #[serde(rename = "model.info")]
    ModelInfo(Box<ModelInfo>),
    /// `generate.token`: One generated token.
    #[serde(rename = "generate.token")]
    GenerateToken {
        /// Integer, 0-based among generated tokens.
        index: u64,
        /// Integer token id.
        id: u32,
        /// String: the text this token completes; may be empty when the token is part of a
        /// multi-byte character that the next token finishes.
        text: String,
    },
    /// `generate.done`: Generation finished.
    #[serde(rename = "generate.done")]
    GenerateDone {
        /// String: the whole continuation.
        text: String,
        /// Integer.
        prompt_tokens: u64,
        /// Integer.
        generated_tokens: u64,
        /// String: `"stop"` for a stop token, `"length"` for the token budget, `"context"` for a full context, `"cancelled"`.
        stop: String,
        /// Number.
        prompt_ms: f64,
        /// Number.
        decode_ms: f64,
        /// Number.
        prompt_tokens_per_s: f64,
        /// Number.
        decode_tokens_per_s: f64,
    },
    /// `tokens`: The result of `tokenize`.
    #[serde(rename = "tokens")]
    Tokens {
        /// Array of integers.
        ids: Vec<u32>,
    },
    /// `eval.result`: `neuralforge eval`'s measurement.
    #[serde(rename = "eval.result")]
    EvalResult {
        /// Number: mean cross-entropy in nats per scored token.
        loss: f64,
        /// Number: `exp(loss)`.
        perplexity: f64,
        /// Integer: tokens scored.
        tokens: u64,
        /// Integer.
        windows: u64,
        /// Integer: tokens of context per window.
        seq_len: u64,
    },
    /// `bench.result`: One measurement of `bench`.
    #[serde(rename = "bench.result")]
    BenchResult {
        /// String, e.g. `"pp128"`, `"tg64"`, `"tokenize"`, `"sgemm1024"`, `"bf16gemm1024"`.
        test: String,
        /// Integer.
        threads: u64,
        /// Number: mean.
        value: f64,
        /// Number.
        stddev: f64,
        /// String: `"tokens/s"`, `"MB/s"`, `"GFLOP/s"`, `"ms"`, `"MiB"`.
        unit: String,
        /// Integer.
        reps: u64,
        /// String, optional: the instruction-set tier the kernels ran on, `"baseline"`, `"avx2"`, `"avx512"`, `"avx512bf16"` or `"amx"`; see `NF_ISA`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        isa: Option<String>,
        /// String, optional: `"f32"` or `"bf16"`, the arithmetic of the matrix products measured; `bench train` and `bench peak` only.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        precision: Option<String>,
    },
    /// `train.start`: A training run began or resumed.
    #[serde(rename = "train.start")]
    TrainStart {
        /// String.
        run_dir: String,
        /// `"full"` or `"lora"`.
        method: String,
        /// Integer.
        trainable_params: u64,
        /// Integer.
        total_params: u64,
        /// Integer: the step the run ends at.
        steps: u64,
        /// Integer: 0, or the checkpoint step when resuming.
        start_step: u64,
        /// Integers.
        batch_size: u64,
        /// Integers.
        seq_len: u64,
        /// Integers.
        grad_accum: u64,
        /// Integer.
        tokens_per_step: u64,
        /// Integers.
        train_tokens: u64,
        /// Integers.
        val_tokens: u64,
        /// Boolean.
        resumed: bool,
        /// Absent in events of runs from before precision was recorded (they were f32).
        #[serde(default)]
        precision: String,
        /// String: the instruction-set tier the kernels run on in this process, `"baseline"`, `"avx2"`, `"avx512"`, `"avx512bf16"` or `"amx"`; bf16 below `"avx512bf16"` is emulated.
        #[serde(default)]
        isa: String,
        /// String, present for bf16 runs: the micro-kernel of the bf16 products, `"vdpbf16ps"`, `"avx512-fma"` (pairs widened to f32 and multiplied with FMA, on AVX-512 without AVX512_BF16 and on CPUs whose `vdpbf16ps` is the slower of the two), `"tdpbf16ps"` (AMX) or `"portable"`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        kernel: String,
    },
    /// `train.plan`: What a run would take, from `train --dry-run` (which writes nothing and starts no run).
    #[serde(rename = "train.plan")]
    TrainPlan(Box<TrainPlan>),
    /// `train.step`: One optimizer step.
    #[serde(rename = "train.step")]
    TrainStep {
        /// Integer, 1-based.
        step: u64,
        /// Number: mean training loss of the step.
        loss: f64,
        /// Number: exponential moving average, factor 0.9.
        loss_ema: f64,
        /// Number.
        lr: f64,
        /// Number: global L2 norm before clipping.
        grad_norm: f64,
        /// Numbers.
        tokens_per_s: f64,
        /// Numbers.
        ms_per_step: f64,
        /// Numbers.
        tflops: f64,
        /// Object: component → milliseconds this step: `matmul`, `attention`, `norms`, `loss`, `other`, `optimizer`, `data`.
        ms: std::collections::BTreeMap<String, f64>,
        /// Boolean: the NaN guard skipped the update.
        skipped: bool,
    },
    /// `train.eval`: Validation.
    #[serde(rename = "train.eval")]
    TrainEval {
        /// Integer.
        step: u64,
        /// Number.
        val_loss: f64,
        /// Number.
        perplexity: f64,
        /// Boolean: the best validation loss so far.
        best: bool,
    },
    /// `train.sample`: A sample generation.
    #[serde(rename = "train.sample")]
    TrainSample {
        /// Integer.
        step: u64,
        /// String.
        prompt: String,
        /// String.
        text: String,
    },
    /// `checkpoint.saved`: A checkpoint is complete on disk.
    #[serde(rename = "checkpoint.saved")]
    CheckpointSaved {
        /// Integer.
        step: u64,
        /// String: the checkpoint's folder.
        path: String,
    },
    /// `warning`: Something the user should know that does not stop the command (a skipped non-finite step, a rollback, a corrupt checkpoint passed over).
    #[serde(rename = "warning")]
    Warning {
        /// String.
        message: String,
    },
    /// `train.done`: The run ended.
    #[serde(rename = "train.done")]
    TrainDone {
        /// `"completed"`, `"interrupted"`, `"early_stopped"`.
        reason: String,
        /// Integer: steps done in this process.
        steps: u64,
        /// Integer.
        final_step: u64,
        /// Number or null.
        final_loss: Option<f64>,
        /// Number or null.
        val_loss: Option<f64>,
        /// Numbers.
        wall_s: f64,
        /// Numbers.
        ms_per_step: f64,
        /// Numbers.
        tokens_per_s: f64,
        /// Numbers.
        tflops: f64,
        /// Number in [0, 1] or null: the achieved GEMM rate (`tflops`) over `peak_gflops`; null when no peak could be measured.
        utilization: Option<f64>,
        /// Number or null: the GEMM peak of the arithmetic the run used, measured at the start of the run on this machine: the f32 GEMM for `"f32"`, the bf16 GEMM for `"bf16"`.
        #[serde(default)]
        peak_gflops: Option<f64>,
        /// Boolean: the run went faster than the measured peak, even after measuring it again on larger matrices, so the peak is too low; `utilization` is then clamped to 1 and reads "at least".
        #[serde(default)]
        peak_under_measured: bool,
        /// Strings, as in `train.start`.
        #[serde(default)]
        precision: String,
        /// Strings, as in `train.start`.
        #[serde(default)]
        isa: String,
        /// Strings, as in `train.start`.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        kernel: String,
        /// Object: component → mean milliseconds per step.
        ms: std::collections::BTreeMap<String, f64>,
        /// String: the final adapter or model folder.
        output: String,
    },
    /// `ingest.file`: What `ingest` made of one source file (one event per file, after it is tokenized).
    #[serde(rename = "ingest.file")]
    IngestFile(Box<IngestFile>),
    /// `ingest.done`: The dataset is built.
    #[serde(rename = "ingest.done")]
    IngestDone {
        /// String: its name.
        dataset: String,
        /// String: its folder.
        path: String,
        /// Boolean: false when files failed and an existing dataset was kept.
        written: bool,
        /// Integers.
        sources: u64,
        /// Integers.
        ok: u64,
        /// Integers.
        errors: u64,
        /// Integers.
        skipped: u64,
        /// Integers.
        train_tokens: u64,
        /// Integers.
        val_tokens: u64,
        /// Integers.
        windows: u64,
        /// Integers.
        examples: u64,
        /// Integers.
        duplicates_removed: u64,
    },
    /// `dataset.info`: One dataset, from `datasets list` or `datasets show`.
    #[serde(rename = "dataset.info")]
    DatasetInfo {
        /// Strings.
        name: String,
        /// Strings.
        path: String,
        /// Strings.
        created: String,
        /// Strings.
        tokenizer: String,
        /// Integers.
        sources: u64,
        /// Integers.
        errors: u64,
        /// Integers.
        train_tokens: u64,
        /// Integers.
        val_tokens: u64,
        /// Integers.
        windows: u64,
        /// Integers.
        examples: u64,
        /// Array of strings: decoded training windows; `show` only, else empty.
        samples: Vec<String>,
    },
    /// `audit.entry`: One entry of the audit log (`audit show`).
    #[serde(rename = "audit.entry")]
    AuditEntry {
        /// Object: the entry exactly as in `audit/audit.ndjson`.
        entry: serde_json::Value,
    },
    /// `audit.verify`: The result of `audit verify`.
    #[serde(rename = "audit.verify")]
    AuditVerify {
        /// Boolean.
        intact: bool,
        /// Integer: entries checked before the first problem, or all.
        entries: u64,
        /// Integer.
        signed: u64,
        /// Strings or null.
        first_time: Option<String>,
        /// Strings or null.
        last_time: Option<String>,
        /// Integer or null.
        head_seq: Option<u64>,
        /// String or null: the device public key signatures were checked against.
        key: Option<String>,
        /// String or null: the first broken entry and why.
        problem: Option<String>,
        /// Null or one of `"edited"`, `"deleted"`, `"reordered"`, `"truncated"`, `"torn_tail"`, `"bad_signature"`, `"head"`, `"anchor"`: the log or key differs from `--expect-head` / `--expect-key`.
        problem_kind: Option<String>,
        /// Integer or null: the entry it is reported at.
        problem_seq: Option<u64>,
        /// Array of strings.
        notes: Vec<String>,
    },
    /// `audit.anchor`: `audit anchor`: the newest entry of an intact log, to keep outside the machine and pass back as `audit verify --expect-head SEQ:SHA256`.
    #[serde(rename = "audit.anchor")]
    AuditAnchor {
        /// Integer.
        seq: u64,
        /// String, 64 hex digits.
        sha256: String,
    },
    /// `audit.exported`: `audit export --out FILE` wrote the file.
    #[serde(rename = "audit.exported")]
    AuditExported {
        /// String.
        path: String,
        /// `"json"` or `"csv"`.
        format: String,
        /// Integer.
        entries: u64,
    },
    /// `lineage`: Where an artifact came from (`lineage ARTIFACT`) or what used a document (`lineage --document FILE`).
    #[serde(rename = "lineage")]
    Lineage {
        /// String: the path asked about.
        artifact: String,
        /// String: `"run"`, `"adapter"`, `"model"`, `"checkpoint"`, `"export"`, `"dataset"` or `"document"`.
        kind: String,
        /// String or null.
        sha256: Option<String>,
        /// Array of `{path, method, base_model, datasets}`.
        runs: Vec<serde_json::Value>,
        /// Array of `{name, path, manifest_sha256}`.
        datasets: Vec<serde_json::Value>,
        /// Array of `{path, sha256, dataset}`.
        documents: Vec<serde_json::Value>,
        /// Array of `{path, sha256, time, command, seq}` from the audit log.
        exports: Vec<serde_json::Value>,
        /// Array of strings: e.g. a dataset re-ingested since the run, whose documents then come from the audit log.
        notes: Vec<String>,
    },
    /// `model.stored`: A model in the store (`models list`, `show`, `import`, `pull`).
    #[serde(rename = "model.stored")]
    ModelStored {
        /// `"hf"`, `"gguf"`, `"llama2c"`.
        name: String,
        /// `"hf"`, `"gguf"`, `"llama2c"`.
        path: String,
        /// `"hf"`, `"gguf"`, `"llama2c"`.
        format: String,
        /// String: where it came from: a path or `hf://REPO@REVISION`.
        source: String,
        /// String, RFC 3339.
        added: String,
        /// Integer.
        bytes: u64,
        /// Array of `{path, size, sha256}`; `show`, `import` and `pull` only, else empty.
        files: Vec<serde_json::Value>,
    },
    /// `download.progress`: Bytes of one file downloaded by `models pull`.
    #[serde(rename = "download.progress")]
    DownloadProgress {
        /// String: the path in the repository.
        file: String,
        /// Integer: bytes on disk, including a resumed `.partial`.
        done: u64,
        /// Integer or null when the server did not say.
        total: Option<u64>,
    },
    /// `export.verify`: The parity check of an export: the written files read back with NeuralForge's own readers against the in-memory fine-tuned model (see `neuralforge export`).
    #[serde(rename = "export.verify")]
    ExportVerify {
        /// String.
        format: String,
        /// String: the matrices' type.
        quant: String,
        /// Integers: prompts run and positions whose logits were compared.
        prompts: u64,
        /// Integers: prompts run and positions whose logits were compared.
        positions: u64,
        /// Boolean: every greedy continuation equal.
        tokens_identical: bool,
        /// Integers: generated tokens before the first difference, of all generated.
        tokens_agreeing: u64,
        /// Integers: generated tokens before the first difference, of all generated.
        generated: u64,
        /// Number: largest RMS of the logit difference relative to the logits' standard deviation.
        max_rel_rms: f64,
        /// Number.
        max_abs_diff: f64,
        /// Numbers in [0, 1].
        top1_agreement: f64,
        /// Numbers in [0, 1].
        topk_overlap: f64,
        /// Number: the allowed `max_rel_rms` for this type.
        bound: f64,
        /// Boolean: whether identical continuations are required.
        tokens_required: bool,
        /// Boolean: the exported tokenizer encodes the check's texts to the same ids.
        tokenizer_identical: bool,
        /// Boolean, number: the same comparison against the in-memory model quantized exactly as the file stores it, which must agree to `file_bound`; for f32 exports they equal the fields above.
        file_tokens_identical: bool,
        /// Boolean, number: the same comparison against the in-memory model quantized exactly as the file stores it, which must agree to `file_bound`; for f32 exports they equal the fields above.
        file_max_rel_rms: f64,
        /// Number.
        file_bound: f64,
        /// Boolean.
        passed: bool,
    },
    /// `export.done`: An export is complete at its final path.
    #[serde(rename = "export.done")]
    ExportDone {
        /// String.
        format: String,
        /// String.
        quant: String,
        /// String.
        path: String,
        /// Array of strings: file names, relative to `path` for folders.
        files: Vec<String>,
        /// Integer: total size.
        bytes: u64,
        /// Number.
        wall_s: f64,
        /// Boolean: false with `--no-verify`.
        verified: bool,
        /// Array of strings: matrices stored as f16 because their rows are not whole blocks of `quant`.
        fallbacks: Vec<String>,
        /// Array of strings: what the user should know, e.g. that a completion model got Ollama's plain `{{ .Prompt }}` template.
        notes: Vec<String>,
    },
    /// `progress`: Progress of a long task.
    #[serde(rename = "progress")]
    Progress {
        /// String.
        task: String,
        /// Integer.
        done: u64,
        /// Integer or null when unknown.
        total: Option<u64>,
        /// String, e.g. `"bytes"`, `"files"`, `"steps"`.
        unit: String,
    },
    /// `studio.ready`: `neuralforge studio` is listening.
    #[serde(rename = "studio.ready")]
    StudioReady {
        /// String: the address to open, with the session token as `?token=`.
        url: String,
        /// String.
        host: String,
        /// Integer.
        port: u16,
    },
    /// `error`: The command failed; it is the last event of the stream and the exit code is non-zero.
    #[serde(rename = "error")]
    Error {
        /// String, stable: one of [`ErrorCode`]'s names, e.g. `"bad_input"`, `"not_found"`, `"io"`.
        code: ErrorCode,
        /// String, one line.
        message: String,
        /// String or null: what to do about it.
        hint: Option<String>,
    },
}

/// The fields of a `model.info` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Strings.
    pub path: String,
    /// Strings.
    pub format: String,
    /// Strings.
    pub arch: String,
    /// Integers.
    pub dim: u64,
    /// Integers.
    pub hidden_dim: u64,
    /// Integers.
    pub n_layers: u64,
    /// Integers.
    pub n_heads: u64,
    /// Integers.
    pub n_kv_heads: u64,
    /// Integers.
    pub head_dim: u64,
    /// Integers.
    pub vocab_size: u64,
    /// Integers.
    pub context_length: u64,
    /// Integers.
    pub n_params: u64,
    /// Number.
    pub rope_theta: f64,
    /// `"interleaved"` or `"rotate_half"`.
    pub rope_style: String,
    /// Booleans.
    pub tied_embeddings: bool,
    /// Booleans.
    pub qkv_bias: bool,
    /// Booleans.
    pub qk_norm: bool,
    /// Object: type name → tensor count, e.g. `{"q4_1": 210, "f32": 61}`.
    pub tensor_types: std::collections::BTreeMap<String, u64>,
    /// String or null when the file carries none.
    pub tokenizer: Option<String>,
    /// Boolean.
    pub chat_template: bool,
}

/// The fields of an `ingest.file` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestFile {
    /// String.
    pub path: String,
    /// `"ok"`, `"error"`, or `"skipped"` for a file with the same bytes as an earlier one or nothing left after de-duplication.
    pub status: String,
    /// String or null: `"pdf"`, `"docx"`, `"html"`, `"markdown"`, `"text"`, `"jsonl"`.
    pub reader: Option<String>,
    /// Integer or null.
    pub size: Option<u64>,
    /// String or null.
    pub sha256: Option<String>,
    /// Integers or null.
    pub pages: Option<u32>,
    /// Integers or null.
    pub paragraphs: Option<u32>,
    /// Integers.
    pub chars: u64,
    /// Integers.
    pub tokens: u64,
    /// Integers.
    pub windows: u64,
    /// Integers.
    pub examples: u64,
    /// `"train"`, `"val"`, `"both"` or null: the split is made once every file is read, after this event, so `ingest` sends null; the dataset's `manifest.json` has each source's split.
    pub split: Option<String>,
    /// String or null: why it failed or was skipped.
    pub message: Option<String>,
    /// Array of strings.
    pub warnings: Vec<String>,
}

/// The fields of a `train.plan` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    /// `"full"` or `"lora"`.
    pub method: String,
    /// Integers.
    pub trainable_params: u64,
    /// Integers.
    pub total_params: u64,
    /// Integer: optimizer steps the run would make.
    pub steps: u64,
    /// Integer.
    pub tokens_per_step: u64,
    /// Object of integers, in bytes: `weights` (the frozen base as stored; 0 for full fine-tuning, whose weights all train), `trainable` (the trainable parameters as f32), `gradients`, `optimizer` (AdamW's two moments), `activations` (saved activations and gradient scratch for one micro-batch), `total` (their sum; the token data and the program itself come on top).
    pub memory: TrainMemory,
    /// Number.
    pub flops_per_step: f64,
    /// Number: one measured forward and backward pass times the gradient accumulation, plus the AdamW update timed on a slice of the parameters and scaled to all.
    pub ms_per_step: f64,
    /// Number: `ms_per_step` times `steps`, plus the validations at the measured forward-pass speed; checkpoints and samples are not included.
    pub estimated_s: f64,
    /// Strings, as in `train.start`.
    #[serde(default)]
    pub precision: String,
    /// Strings, as in `train.start`.
    #[serde(default)]
    pub isa: String,
}

/// Bytes a run holds in memory, by part (the `memory` of a `train.plan` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainMemory {
    /// The frozen base as stored; 0 for full fine-tuning, whose weights all train.
    pub weights: u64,
    /// The trainable parameters as f32.
    pub trainable: u64,
    /// AdamW's two moments.
    pub gradients: u64,
    /// AdamW's two moments.
    pub optimizer: u64,
    /// Saved activations and gradient scratch for one micro-batch.
    pub activations: u64,
    /// Their sum; the token data and the program itself come on top.
    pub total: u64,
}
