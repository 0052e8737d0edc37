//! A training run as a folder on disk, and its configuration.
//!
//! A run lives in one folder (`<home>/runs/<id>/` or wherever the user put it):
//!
//! | path | what |
//! |---|---|
//! | `run.json` ([`RUN_FILE`]) | the resolved [`RunConfig`], written before the first step and read back to resume |
//! | `events.ndjson` ([`EVENTS_FILE`]) | every event of the run (`nf_protocol`), appended across resumes |
//! | `train.lock` ([`LOCK_FILE`]) | the training process's pid; locked while it runs ([`RunLock`]) |
//! | `checkpoints/step-N/` ([`CHECKPOINTS_DIR`]) | checkpoints (`crate::checkpoint`) |
//! | `adapter/` ([`ADAPTER_DIR`]) | the final LoRA adapter, PEFT layout |
//! | `model/` ([`MODEL_DIR`]) | the final fully fine-tuned model, HF layout |
//! | `report.json` | the end-of-run report (`train.done`) |

mod config;
mod finish;
mod lock;
mod prepare;
mod report;

pub use config::{BaseDtype, DatasetRef, RunConfig, RunMethod};
pub use finish::save_final;
pub use lock::{RunLock, open_events};
pub use prepare::{InitAdapter, Prepared, prepare, sample_text, store_frozen_as};
pub use report::{Outcome, done_report, kernel_of, plan, precision_warning, write_report};

/// The run's configuration.
pub const RUN_FILE: &str = "run.json";
/// Every event of the run, one JSON object per line.
pub const EVENTS_FILE: &str = "events.ndjson";
/// The file the training process holds an exclusive lock on while it runs.
pub const LOCK_FILE: &str = "train.lock";
/// The folder of checkpoints.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The final adapter of a LoRA run.
pub const ADAPTER_DIR: &str = "adapter";
/// The final model of a full fine-tuning run.
pub const MODEL_DIR: &str = "model";
/// The end-of-run report.
pub const REPORT_FILE: &str = "report.json";

/// Whether `dir` holds a run (its `run.json` exists).
pub fn is_run(dir: &std::path::Path) -> bool {
    dir.join(RUN_FILE).is_file()
}
