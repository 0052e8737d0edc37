//! The trainer's settings and reports, and the loop state a checkpoint saves.

use nf_data::{BatcherState, Sampling};
use nf_model::train::ComponentTimes;
use serde::{Deserialize, Serialize};

use crate::schedule::Schedule;

/// Hyperparameters and cadence of a run. Everything here that changes the computation is
/// part of the configuration hash a resume is checked against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// The step the run ends at.
    pub steps: u64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// The peak learning rate.
    pub lr: f32,
    /// Where cosine and linear schedules end.
    pub min_lr: f32,
    /// Steps of linear warmup.
    pub warmup: u64,
    /// The learning-rate curve after warmup.
    pub schedule: Schedule,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// AdamW's first-moment decay.
    pub beta1: f32,
    /// AdamW's second-moment decay.
    pub beta2: f32,
    /// AdamW's epsilon.
    pub adam_eps: f32,
    /// Global gradient-norm clip (0 = off).
    pub clip: f32,
    /// Validate every N steps (0 = only at the end).
    pub eval_every: u64,
    /// Validation batches per evaluation.
    pub eval_batches: usize,
    /// Sample every N steps (0 = never).
    pub sample_every: u64,
    /// Checkpoint every N steps (0 = only at the end).
    pub save_every: u64,
    /// Checkpoints kept besides the best.
    pub keep_last: usize,
    /// Seeds LoRA's initialization, dropout and random batches.
    pub seed: u64,
    /// Stop after this many evaluations without a better validation loss (0 = never).
    pub patience: u32,
    /// Consecutive non-finite steps after which the run rolls back to the last good
    /// checkpoint with half the learning rate.
    pub max_bad_steps: u32,
    /// How training windows are drawn.
    pub sampling: Sampling,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            steps: 200,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: 0.0,
            warmup: 10,
            schedule: Schedule::Cosine,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            clip: 1.0,
            eval_every: 50,
            eval_batches: 8,
            sample_every: 0,
            save_every: 100,
            keep_last: 2,
            seed: 0,
            patience: 0,
            max_bad_steps: 3,
            sampling: Sampling::Random,
        }
    }
}

/// Identities a checkpoint is bound to; `--resume` refuses when any differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHashes {
    /// Model configuration, method and hyperparameters.
    pub config: String,
    /// The base model's files.
    pub base_model: String,
    /// The training tokens.
    pub data: String,
    /// Lineage: the sha256 of each dataset's `manifest.json` the tokens came from (empty
    /// for plain files). Recorded in every checkpoint; not compared on resume (the tokens'
    /// hash already is), so re-ingesting the same documents does not block a resume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datasets: Vec<String>,
}

/// The loop's own state, saved in every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct LoopState {
    pub(super) step: u64,
    pub(super) loss_ema: Option<f64>,
    pub(super) last_loss: Option<f64>,
    pub(super) best_val: Option<(u64, f64)>,
    pub(super) last_val: Option<f64>,
    pub(super) evals_without_improvement: u32,
    /// Multiplier on the schedule's learning rate, halved by each rollback.
    pub(super) lr_scale: f32,
    pub(super) bad_steps: u32,
    pub(super) batcher: BatcherState,
    pub(super) hashes: RunHashes,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// It reached its last step.
    Completed,
    /// It was asked to stop (SIGINT, SIGTERM) and saved a checkpoint.
    Interrupted,
    /// Validation stopped improving for `patience` evaluations.
    EarlyStopped,
}

impl EndReason {
    /// `completed`, `interrupted` or `early_stopped`, as events spell it.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::Completed => "completed",
            EndReason::Interrupted => "interrupted",
            EndReason::EarlyStopped => "early_stopped",
        }
    }
}

/// Totals for the efficiency report.
#[derive(Debug, Clone, Default)]
pub(super) struct Totals {
    pub(super) steps: u64,
    pub(super) compute_s: f64,
    pub(super) model: ComponentTimes,
    pub(super) optimizer_s: f64,
    pub(super) data_s: f64,
}

/// What a finished `run` reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Why it ended.
    pub reason: EndReason,
    /// The step it ended at.
    pub final_step: u64,
    /// The last step's training loss.
    pub final_loss: Option<f64>,
    /// The last validation loss.
    pub val_loss: Option<f64>,
    /// The best validation loss and its step.
    pub best_val: Option<(u64, f64)>,
}

/// Wall times of a training step's parts, from [`super::Trainer::measure_step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMeasure {
    /// Forward and backward pass over one micro-batch.
    pub forward_backward_ms: f64,
    /// Forward pass alone over the same micro-batch, as a validation batch runs.
    pub forward_ms: f64,
    /// Gradient norm and AdamW update over every trainable parameter.
    pub optimizer_ms: f64,
}

impl StepMeasure {
    /// One optimizer step: `grad_accum` micro-batches, then the update.
    pub fn step_ms(&self, grad_accum: usize) -> f64 {
        self.forward_backward_ms * grad_accum.max(1) as f64 + self.optimizer_ms
    }
}
