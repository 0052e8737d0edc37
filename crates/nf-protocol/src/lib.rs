#![warn(missing_docs)]
//! The NDJSON event protocol spoken by `neuralforge --json`.
//!
//! With `--json`, a command writes only events to stdout, one JSON object per line, flushed
//! after each line; logs and human text go to stderr. Consumers (the studio, scripts) read
//! lines, parse each as an [`Envelope`], and ignore kinds and fields they do not know.
//!
//! # Envelope
//!
//! Every line is an object with these fields plus the fields of its kind:
//!
//! - `v` (integer): protocol version, currently `1`. It changes only for a breaking change;
//!   new kinds and new fields are not breaking.
//! - `type` (string): the event kind, one of those below.
//! - `ts` (string): the time the event was written, RFC 3339 in UTC with milliseconds,
//!   e.g. `"2026-11-23T19:32:03.123Z"`.
//!
//! # Kinds
//!
//! ## `model.loaded`
//! A model and its tokenizer are ready. Fields: `path` (string), `format` (`"hf"`, `"gguf"`,
//! `"llama2c"`), `arch` (string), `n_params` (integer), `n_layers` (integer), `context_length`
//! (integer), `tokenizer` (string: the tokenizer kind), `load_ms` (number).
//!
//! ## `model.info`
//! What `inspect` found. Fields: `path`, `format`, `arch` (strings); `dim`, `hidden_dim`,
//! `n_layers`, `n_heads`, `n_kv_heads`, `head_dim`, `vocab_size`, `context_length`,
//! `n_params` (integers); `rope_theta` (number); `rope_style` (`"interleaved"` or
//! `"rotate_half"`); `tied_embeddings`, `qkv_bias`, `qk_norm` (booleans); `tensor_types`
//! (object: type name → tensor count, e.g. `{"q4_1": 210, "f32": 61}`); `tokenizer` (string
//! or null when the file carries none); `chat_template` (boolean).
//!
//! ## `generate.token`
//! One generated token. Fields: `index` (integer, 0-based among generated tokens), `id`
//! (integer token id), `text` (string: the text this token completes; may be empty when the
//! token is part of a multi-byte character that the next token finishes).
//!
//! ## `generate.done`
//! Generation finished. Fields: `text` (string: the whole continuation), `prompt_tokens`
//! (integer), `generated_tokens` (integer), `stop` (string: `"stop"` for a stop token,
//! `"length"` for the token budget, `"context"` for a full context, `"cancelled"`),
//! `prompt_ms` (number), `decode_ms` (number), `prompt_tokens_per_s` (number),
//! `decode_tokens_per_s` (number).
//!
//! ## `tokens`
//! The result of `tokenize`. Fields: `ids` (array of integers).
//!
//! ## `bench.result`
//! One measurement of `bench`. Fields: `test` (string, e.g. `"pp128"`, `"tg64"`,
//! `"tokenize"`, `"sgemm1024"`, `"bf16gemm1024"`), `threads` (integer), `value` (number:
//! mean), `stddev` (number), `unit` (string: `"tokens/s"`, `"MB/s"`, `"GFLOP/s"`, `"ms"`,
//! `"MiB"`), `reps` (integer), `isa` (string, optional: the instruction-set tier the
//! kernels ran on, `"baseline"`, `"avx2"`, `"avx512"`, `"avx512bf16"` or `"amx"`; see
//! `NF_ISA`), `precision` (string, optional: `"f32"` or `"bf16"`, the arithmetic of the
//! matrix products measured; `bench train` and `bench peak` only).
//!
//! ## `train.start`
//! A training run began or resumed. Fields: `run_dir` (string), `method` (`"full"` or
//! `"lora"`), `trainable_params` (integer), `total_params` (integer), `steps` (integer: the
//! step the run ends at), `start_step` (integer: 0, or the checkpoint step when resuming),
//! `batch_size`, `seq_len`, `grad_accum` (integers), `tokens_per_step` (integer),
//! `train_tokens`, `val_tokens` (integers), `resumed` (boolean), `precision` (`"f32"` or
//! `"bf16"`: how the step's matrix products multiply; bf16 rounds both operands to bf16 and
//! sums in f32, while master weights, gradients and optimizer state stay f32; runs from
//! before this field was added trained in f32 and omit it), `isa` (string: the
//! instruction-set tier the kernels run on in this process, `"baseline"`, `"avx2"`,
//! `"avx512"`, `"avx512bf16"` or `"amx"`; bf16 below `"avx512bf16"` is emulated), `kernel`
//! (string, present for bf16 runs: the micro-kernel of the bf16 products, `"vdpbf16ps"`,
//! `"avx512-fma"` (pairs widened to f32 and multiplied with FMA, on AVX-512 without
//! AVX512_BF16 and on CPUs whose `vdpbf16ps` is the slower of the two), `"tdpbf16ps"` (AMX)
//! or `"portable"`).
//!
//! ## `train.plan`
//! What a run would take, from `train --dry-run` (which writes nothing and starts no run).
//! Fields: `method` (`"full"` or `"lora"`), `trainable_params`, `total_params` (integers),
//! `steps` (integer: optimizer steps the run would make), `tokens_per_step` (integer),
//! `memory` (object of integers, in bytes: `weights` (the frozen base as stored; 0 for
//! full fine-tuning, whose weights all train), `trainable` (the trainable parameters as
//! f32), `gradients`, `optimizer` (AdamW's two moments), `activations` (saved activations
//! and gradient scratch for one micro-batch), `total` (their sum; the token data and the
//! program itself come on top)), `flops_per_step` (number), `ms_per_step` (number: one
//! measured forward and backward pass times the gradient accumulation, plus the AdamW
//! update timed on a slice of the parameters and scaled to all), `estimated_s` (number:
//! `ms_per_step` times `steps`, plus the validations at the measured forward-pass speed;
//! checkpoints and samples are not included), `precision`, `isa` (strings, as in
//! `train.start`).
//!
//! ## `train.step`
//! One optimizer step. Fields: `step` (integer, 1-based), `loss` (number: mean training loss
//! of the step), `loss_ema` (number: exponential moving average, factor 0.9), `lr` (number),
//! `grad_norm` (number: global L2 norm before clipping), `tokens_per_s`, `ms_per_step`,
//! `tflops` (numbers), `ms` (object: component → milliseconds this step: `matmul`,
//! `attention`, `norms`, `loss`, `other`, `optimizer`, `data`), `skipped` (boolean: the NaN
//! guard skipped the update).
//!
//! ## `train.eval`
//! Validation. Fields: `step` (integer), `val_loss` (number), `perplexity` (number),
//! `best` (boolean: the best validation loss so far).
//!
//! ## `train.sample`
//! A sample generation. Fields: `step` (integer), `prompt` (string), `text` (string).
//!
//! ## `checkpoint.saved`
//! A checkpoint is complete on disk. Fields: `step` (integer), `path` (string).
//!
//! ## `warning`
//! Something the user should know that does not stop the command (a skipped non-finite
//! step, a rollback, a corrupt checkpoint passed over). Fields: `message` (string).
//!
//! ## `train.done`
//! The run ended. Fields: `reason` (`"completed"`, `"interrupted"`, `"early_stopped"`),
//! `steps` (integer: steps done in this process), `final_step` (integer), `final_loss`
//! (number or null), `val_loss` (number or null), `wall_s`, `ms_per_step`, `tokens_per_s`,
//! `tflops` (numbers), `utilization` (number in [0, 1] or null: the achieved GEMM rate
//! (`tflops`) over `peak_gflops`; null when no peak could be measured), `peak_gflops`
//! (number or null: the GEMM peak of the arithmetic the run used, measured at the start of
//! the run on this machine: the f32 GEMM for `"f32"`, the bf16 GEMM for `"bf16"`),
//! `peak_under_measured` (boolean: the run went faster than the measured peak, even after
//! measuring it again on larger matrices, so the peak is too low; `utilization` is then
//! clamped to 1 and reads "at least"), `precision`, `isa`, `kernel` (strings, as in
//! `train.start`),
//! `ms` (object: component → mean milliseconds per step), `output` (string: the final
//! adapter or model folder). The run folder's `report.json` is this event.
//!
//! ## `ingest.file`
//! What `ingest` made of one source file (one event per file, after it is tokenized).
//! Fields: `path` (string), `status` (`"ok"`, `"error"`, or `"skipped"` for a file with the
//! same bytes as an earlier one or nothing left after de-duplication), `reader` (string or
//! null: `"pdf"`, `"docx"`, `"html"`, `"markdown"`, `"text"`, `"jsonl"`), `size` (integer
//! or null), `sha256` (string or null), `pages`, `paragraphs` (integers or null), `chars`,
//! `tokens`, `windows`, `examples` (integers), `split` (`"train"`, `"val"`, `"both"` or
//! null: the split is made once every file is read, after this event, so `ingest` sends
//! null; the dataset's `manifest.json` has each source's split), `message` (string or null: why it failed or was skipped), `warnings` (array of
//! strings).
//!
//! ## `ingest.done`
//! The dataset is built. Fields: `dataset` (string: its name), `path` (string: its
//! folder), `written` (boolean: false when files failed and an existing dataset was kept),
//! `sources`, `ok`, `errors`, `skipped`, `train_tokens`, `val_tokens`, `windows`,
//! `examples`, `duplicates_removed` (integers).
//!
//! ## `dataset.info`
//! One dataset, from `datasets list` or `datasets show`. Fields: `name`, `path`,
//! `created`, `tokenizer` (strings), `sources`, `errors`, `train_tokens`, `val_tokens`,
//! `windows`, `examples` (integers), `samples` (array of strings: decoded training
//! windows; `show` only, else empty).
//!
//! ## `audit.entry`
//! One entry of the audit log (`audit show`). Fields: `entry` (object: the entry exactly as
//! in `audit/audit.ndjson`: `seq`, `time`, `user`, `host`, `command`, `args`, `event`?,
//! `inputs`, `outputs` (arrays of `{kind, path?, sha256?}`), `result` (`"ok"` or
//! `"error"`), `error`?, `details`?, `prev`, `key`?, `sig`?; see the `nf-audit` crate).
//!
//! ## `audit.verify`
//! The result of `audit verify`. Fields: `intact` (boolean), `entries` (integer: entries
//! checked before the first problem, or all), `signed` (integer), `first_time`,
//! `last_time` (strings or null), `head_seq` (integer or null), `key` (string or null: the
//! device public key signatures were checked against), `problem` (string or null: the
//! first broken entry and why), `problem_kind` (null or one of `"edited"`, `"deleted"`,
//! `"reordered"`, `"truncated"`, `"torn_tail"`, `"bad_signature"`, `"head"`, `"anchor"`:
//! the log or key differs from `--expect-head` / `--expect-key`), `problem_seq` (integer or
//! null: the entry it is reported at), `notes` (array of strings).
//!
//! ## `audit.anchor`
//! `audit anchor`: the newest entry of an intact log, to keep outside the machine and pass
//! back as `audit verify --expect-head SEQ:SHA256`. Fields: `seq` (integer), `sha256`
//! (string, 64 hex digits).
//!
//! ## `audit.exported`
//! `audit export --out FILE` wrote the file. Fields: `path` (string), `format` (`"json"`
//! or `"csv"`), `entries` (integer).
//!
//! ## `lineage`
//! Where an artifact came from (`lineage ARTIFACT`) or what used a document (`lineage
//! --document FILE`). Fields: `artifact` (string: the path asked about), `kind` (string:
//! `"run"`, `"adapter"`, `"model"`, `"checkpoint"`, `"export"`, `"dataset"` or
//! `"document"`), `sha256` (string or null), `runs` (array of `{path, method, base_model,
//! datasets}`), `datasets` (array of `{name, path, manifest_sha256}`), `documents` (array
//! of `{path, sha256, dataset}`), `exports` (array of `{path, sha256, time, command, seq}`
//! from the audit log), `notes` (array of strings: e.g. a dataset re-ingested since the
//! run, whose documents then come from the audit log).
//!
//! ## `model.stored`
//! A model in the store (`models list`, `show`, `import`, `pull`). Fields: `name`, `path`,
//! `format` (`"hf"`, `"gguf"`, `"llama2c"`), `source` (string: where it came from: a path
//! or `hf://REPO@REVISION`), `added` (string, RFC 3339), `bytes` (integer), `files` (array
//! of `{path, size, sha256}`; `show`, `import` and `pull` only, else empty).
//!
//! ## `download.progress`
//! Bytes of one file downloaded by `models pull`. Fields: `file` (string: the path in the
//! repository), `done` (integer: bytes on disk, including a resumed `.partial`), `total`
//! (integer or null when the server did not say).
//! ## `eval.result`
//! `neuralforge eval`'s measurement. Fields: `loss` (number: mean cross-entropy in nats per
//! scored token), `perplexity` (number: `exp(loss)`), `tokens` (integer: tokens scored),
//! `windows` (integer), `seq_len` (integer: tokens of context per window).
//!
//! ## `export.verify`
//! The parity check of an export: the written files read back with NeuralForge's own
//! readers against the in-memory fine-tuned model (see `neuralforge export`). Fields:
//! `format` (string), `quant` (string: the matrices' type), `prompts`, `positions` (integers:
//! prompts run and positions whose logits were compared), `tokens_identical` (boolean:
//! every greedy continuation equal), `tokens_agreeing`, `generated` (integers: generated
//! tokens before the first difference, of all generated), `max_rel_rms` (number: largest
//! RMS of the logit difference relative to the logits' standard deviation), `max_abs_diff`
//! (number), `top1_agreement`, `topk_overlap` (numbers in [0, 1]), `bound` (number: the
//! allowed `max_rel_rms` for this type), `tokens_required` (boolean: whether identical
//! continuations are required), `tokenizer_identical` (boolean: the exported tokenizer
//! encodes the check's texts to the same ids), `file_tokens_identical` and
//! `file_max_rel_rms` (boolean, number: the same comparison against the in-memory model
//! quantized exactly as the file stores it, which must agree to `file_bound`; for f32
//! exports they equal the fields above), `file_bound` (number), `passed` (boolean).
//! The fields without `file_` compare with the fine-tuned model itself, so for quantized
//! exports they measure the quantization error, held to `bound`.
//!
//! ## `export.done`
//! An export is complete at its final path. Fields: `format` (string), `quant` (string),
//! `path` (string), `files` (array of strings: file names, relative to `path` for
//! folders), `bytes` (integer: total size), `wall_s` (number), `verified` (boolean: false
//! with `--no-verify`), `fallbacks` (array of strings: matrices stored as f16 because their
//! rows are not whole blocks of `quant`), `notes` (array of strings: what the user should
//! know, e.g. that a completion model got Ollama's plain `{{ .Prompt }}` template).
//!
//! ## `progress`
//! Progress of a long task. Fields: `task` (string), `done` (integer), `total` (integer or
//! null when unknown), `unit` (string, e.g. `"bytes"`, `"files"`, `"steps"`).
//!
//! ## `studio.ready`
//! `neuralforge studio` is listening. Fields: `url` (string: the address to open, with the
//! session token as `?token=`), `host` (string), `port` (integer).
//!
//! ## `error`
//! The command failed; it is the last event of the stream and the exit code is non-zero.
//! Fields: `code` (string, stable: one of [`ErrorCode`]'s names, e.g. `"bad_input"`, `"not_found"`, `"io"`), `message`
//! (string, one line), `hint` (string or null: what to do about it). A training run that
//! fails once its run folder exists also appends this event to the folder's
//! `events.ndjson`, so a reader of that file learns why the run ended.
//!
//! # Example
//!
//! ```text
//! {"v":1,"type":"model.loaded","ts":"2026-11-23T19:32:03.123Z","path":"stories260K.bin","format":"llama2c","arch":"llama","n_params":260000,"n_layers":5,"context_length":512,"tokenizer":"llama2c-spm","load_ms":3.1}
//! {"v":1,"type":"generate.token","ts":"2026-11-23T19:32:03.130Z","index":0,"id":261,"text":","}
//! {"v":1,"type":"generate.done","ts":"2026-11-23T19:32:03.200Z","text":", there was...","prompt_tokens":5,"generated_tokens":60,"stop":"length","prompt_ms":1.0,"decode_ms":60.0,"prompt_tokens_per_s":5000.0,"decode_tokens_per_s":1000.0}
//! ```

use std::io::{self, BufRead, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub mod digest;
mod error;
mod event;
mod human;
pub use digest::{sha256_file, sha256_hex};
pub use error::{Describe, ErrorCode, Failure, IO_HINT};
pub use event::{Event, IngestFile, ModelInfo, TrainMemory, TrainPlan};
pub use human::{human_bytes, human_count, human_duration};

/// The protocol version this crate writes.
pub const VERSION: u32 = 1;

/// An event on the wire: version, timestamp, and the event's own fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The protocol version ([`VERSION`]).
    pub v: u32,
    /// When the event was written, RFC 3339 UTC with milliseconds.
    pub ts: String,
    #[serde(flatten)]
    /// The event, its `type` and fields flattened into the envelope.
    pub event: Event,
}

/// Writes events as NDJSON, one line each, flushed so a reader sees them at once.
#[derive(Debug)]
pub struct EventWriter<W: Write> {
    out: W,
}

impl<W: Write> EventWriter<W> {
    /// A writer of events to `out`.
    pub fn new(out: W) -> Self {
        EventWriter { out }
    }

    /// Writes `event` as one line, stamped with the version and the time, and flushes.
    pub fn emit(&mut self, event: Event) -> io::Result<()> {
        let env = Envelope {
            v: VERSION,
            ts: rfc3339_now(),
            event,
        };
        serde_json::to_writer(&mut self.out, &env)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Reads NDJSON events. Blank lines are skipped; a line that is not a known event is an
/// error for that line only, so a reader can skip kinds newer than itself.
pub fn read_events<R: BufRead>(input: R) -> impl Iterator<Item = Result<Envelope, String>> {
    input.lines().filter_map(|line| match line {
        Err(e) => Some(Err(e.to_string())),
        Ok(l) if l.trim().is_empty() => None,
        Ok(l) => Some(serde_json::from_str::<Envelope>(&l).map_err(|e| format!("{e}: {l}"))),
    })
}

/// The default name of a run folder, `<date>-<time>-<method>` in UTC (e.g.
/// `20261201-233145-lora`): what `train` and the studio name new runs, so both sort by
/// start time.
pub fn run_id(method: &str) -> String {
    // 2026-12-01T23:31:45.123Z -> 20261201-233145
    let compact: String = rfc3339_now()
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    format!("{}-{}-{method}", &compact[..8], &compact[8..])
}

/// The current time as RFC 3339 UTC with milliseconds.
pub fn rfc3339_now() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

/// Formats seconds since the Unix epoch (UTC) as RFC 3339 with milliseconds.
pub fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests;
