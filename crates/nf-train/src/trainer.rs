//! The training loop: micro-batches with gradient accumulation, global-norm clipping,
//! AdamW on a schedule, a NaN/Inf guard with rollback, validation with early stopping,
//! sample generations, and checkpoints that resume bit for bit.
//!
//! The trainer never prints: it reports through an event sink (`nf_protocol::Event`), and
//! the binary decides how to show them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nf_data::{Batcher, Sampling};
use nf_engine::optim::{AdamWParams, adamw_step, grad_norm_sq};
use nf_model::train::{BatchLoss, ComponentTimes, ParamStore, StepTimes, TrainModel};
use nf_protocol::Event;

use crate::checkpoint::{self, NamedTensor};
use crate::error::TrainError;
use crate::schedule::lr_at;

mod types;
pub use types::{EndReason, RunHashes, RunSummary, StepMeasure, TrainOptions};
use types::{LoopState, Totals};

/// Parameters the optimizer is timed on in [`Trainer::measure_step`]: enough to swamp
/// timer noise, few enough that the scratch copies cost nothing next to the model.
const OPTIMIZER_PROBE: usize = 1 << 20;

/// A sample generator the caller provides (it owns the tokenizer): gets the model being
/// trained, returns `(prompt, text)`.
pub type SampleFn<'a> = dyn FnMut(&TrainModel) -> Option<(String, String)> + 'a;

/// A run's training loop over its model, data and settings: [`Trainer::run`] trains to the
/// last step (or a stop), [`Trainer::resume`] first restores the newest valid checkpoint.
pub struct Trainer {
    /// The model being trained.
    pub model: TrainModel,
    /// The run's settings.
    pub opts: TrainOptions,
    m: Vec<f32>,
    v: Vec<f32>,
    train: Batcher,
    /// Sequential batches over the validation tokens, rewound before each evaluation so
    /// every evaluation sees the same windows.
    val: Option<Batcher>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    /// Where each position's packed example begins within its window (see
    /// [`Trainer::with_example_starts`]).
    starts: Vec<u32>,
    state: LoopState,
    ckpt_root: PathBuf,
    /// Steps at which to replace the gradient by NaN: fault injection for testing the guard.
    pub inject_nan_at: Vec<u64>,
    /// Measured GEMM peak of this machine in GFLOP/s for the arithmetic the model trains
    /// in (`model.precision`: the f32 or the bf16 GEMM), for the utilization figure; see
    /// [`crate::efficiency`].
    pub peak_gflops: Option<f64>,
    times: StepTimes,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.state.step)
            .finish()
    }
}

impl Trainer {
    /// A fresh run. `train` and `val` are token streams; `run_dir` receives checkpoints.
    pub fn new(
        model: TrainModel,
        opts: TrainOptions,
        train: Vec<u32>,
        val: Option<Vec<u32>>,
        run_dir: &Path,
        hashes: RunHashes,
    ) -> Result<Trainer, TrainError> {
        let (b, t) = (model.shape.batch, model.shape.seq_len);
        let batcher = Batcher::new(train, b, t, opts.sampling, opts.seed)?;
        if let Some(v) = &val
            && v.len() < t + 1
        {
            return Err(TrainError::Config(format!(
                "the validation data has {} tokens, fewer than one window of {} (seq_len + 1)",
                v.len(),
                t + 1
            )));
        }
        let val = val
            .map(|v| Batcher::new(v, b, t, Sampling::Sequential, 0))
            .transpose()?;
        let n = model.params.len();
        let state = LoopState {
            step: 0,
            loss_ema: None,
            last_loss: None,
            best_val: None,
            last_val: None,
            evals_without_improvement: 0,
            lr_scale: 1.0,
            bad_steps: 0,
            batcher: batcher.state(),
            hashes,
        };
        Ok(Trainer {
            model,
            opts,
            m: nf_engine::optim::zeroed_moments(n),
            v: nf_engine::optim::zeroed_moments(n),
            train: batcher,
            val,
            inputs: vec![0; b * t],
            targets: vec![0; b * t],
            starts: vec![0; b * t],
            state,
            ckpt_root: run_dir.join(crate::run::CHECKPOINTS_DIR),
            inject_nan_at: Vec::new(),
            peak_gflops: None,
            times: StepTimes::default(),
        })
    }

    /// Restricts the loss to the tokens whose mask entry is 1 (chat and completion data:
    /// the assistant's tokens), one entry per training / validation token.
    pub fn with_loss_masks(
        mut self,
        train: Option<Vec<u8>>,
        val: Option<Vec<u8>>,
    ) -> Result<Trainer, TrainError> {
        if let Some(m) = train {
            self.train = self.train.with_mask(m)?;
        }
        if let Some(m) = val {
            if m.len() != self.val_tokens() {
                return Err(TrainError::Config(format!(
                    "the validation loss mask has {} entries for {} tokens",
                    m.len(),
                    self.val_tokens()
                )));
            }
            self.val = self.val.map(|b| b.with_mask(m)).transpose()?;
        }
        Ok(self)
    }

    /// Keeps attention inside packed examples: `train` and `val` are the offsets where
    /// each example begins in the training / validation tokens (as `ingest` writes
    /// `train.starts`). Each example then trains exactly as it would alone.
    pub fn with_example_starts(
        mut self,
        train: Option<Vec<u64>>,
        val: Option<Vec<u64>>,
    ) -> Result<Trainer, TrainError> {
        if let Some(s) = train {
            self.train = self.train.with_example_starts(s)?;
        }
        if let Some(s) = val {
            self.val = self.val.map(|b| b.with_example_starts(s)).transpose()?;
        }
        Ok(self)
    }

    /// The next step to run (the steps done so far).
    pub fn step(&self) -> u64 {
        self.state.step
    }

    /// Training tokens.
    pub fn train_tokens(&self) -> usize {
        self.train.tokens().len()
    }

    /// Validation tokens (0 without validation).
    pub fn val_tokens(&self) -> usize {
        self.val.as_ref().map_or(0, |b| b.tokens().len())
    }

    /// Times one real training micro-batch (forward and backward) and one forward pass on
    /// it, and the optimizer update, without changing the trainer: the data position is
    /// restored, the gradients are zeroed again, and the update runs on scratch buffers
    /// (a slice of the parameters' size, scaled linearly, since AdamW is one pass over
    /// memory), so the weights and optimizer moments stay untouched. For planning a run
    /// (`train --dry-run`); the first pass includes first-touch costs of the buffers, so
    /// the figure errs on the slow side.
    pub fn measure_step(&mut self) -> Result<StepMeasure, TrainError> {
        let accum = self.opts.grad_accum.max(1);
        let before = self.train.state();
        let packed = self.train.next_batch_with_starts(
            &mut self.inputs,
            &mut self.targets,
            &mut self.starts,
        );
        self.train.restore(before)?;
        let starts: &[u32] = if packed { &self.starts } else { &[] };
        self.model.params.zero_grad();
        // The seed the next step's first micro-batch uses, so dropout costs what it will.
        self.model.dropout_seed = self.dropout_seed(0);
        let t = Instant::now();
        self.model.forward_backward_packed(
            &self.inputs,
            &self.targets,
            starts,
            1.0 / accum as f32,
            &self.times,
        )?;
        let forward_backward_ms = t.elapsed().as_secs_f64() * 1e3;
        self.times.take();
        self.model.params.zero_grad();
        let t = Instant::now();
        self.model
            .eval_loss_packed(&self.inputs, &self.targets, starts)?;
        let forward_ms = t.elapsed().as_secs_f64() * 1e3;
        let n = self.model.params.len();
        let k = n.min(OPTIMIZER_PROBE);
        let (mut p, mut m, mut v, g) = (vec![0.5; k], vec![0.0; k], vec![0.0; k], vec![1e-3; k]);
        let t = Instant::now();
        std::hint::black_box(grad_norm_sq(&g));
        adamw_step(
            &mut p,
            &mut m,
            &mut v,
            &g,
            1,
            AdamWParams {
                lr: self.opts.lr,
                beta1: self.opts.beta1,
                beta2: self.opts.beta2,
                eps: self.opts.adam_eps,
                weight_decay: self.opts.weight_decay,
            },
        );
        let probe_ms = t.elapsed().as_secs_f64() * 1e3;
        let optimizer_ms = if k == 0 {
            0.0
        } else {
            probe_ms * n as f64 / k as f64
        };
        Ok(StepMeasure {
            forward_backward_ms,
            forward_ms,
            optimizer_ms,
        })
    }

    /// Validation batches each evaluation runs (0 without validation data).
    pub fn eval_batches(&self) -> usize {
        self.val.as_ref().map_or(0, |b| eval_batches(b, &self.opts))
    }

    /// Evaluations [`Trainer::run`] makes from here to the last step if it runs to the end:
    /// the base model's at step 0, one every `eval_every` steps, and one at the last step
    /// (0 without validation data).
    pub fn evaluations_left(&self) -> u64 {
        if self.val.is_none() {
            return 0;
        }
        let (from, to) = (self.state.step, self.opts.steps);
        let base = u64::from(from == 0 && self.state.best_val.is_none());
        let every = self.opts.eval_every;
        let periodic = to
            .checked_div(every)
            .map_or(0, |n| n - from.min(to) / every);
        let last = u64::from(to > from && (every == 0 || !to.is_multiple_of(every)));
        base + periodic + last
    }

    /// Continues from the newest valid checkpoint under the run folder, refusing when it
    /// belongs to another configuration, base model or dataset. Returns the step resumed
    /// at, and a warning for each newer checkpoint that was corrupt or incomplete.
    pub fn resume(&mut self) -> Result<(u64, Vec<String>), TrainError> {
        let found = checkpoint::latest_valid_checkpoint(&self.ckpt_root)?;
        let Some((ckpt, skipped)) = found else {
            return Err(TrainError::Config(format!(
                "no complete checkpoint under {}",
                self.ckpt_root.display()
            )));
        };
        let warnings = skipped
            .iter()
            .map(|(p, e)| format!("skipped checkpoint {}: {e}", p.display()))
            .collect();
        let saved: LoopState = serde_json::from_value(ckpt.state.clone()).map_err(|e| {
            TrainError::Config(format!(
                "{}: unreadable state.json: {e}",
                ckpt.dir.display()
            ))
        })?;
        let mine = &self.state.hashes;
        for (what, a, b) in [
            ("training configuration", &saved.hashes.config, &mine.config),
            ("base model", &saved.hashes.base_model, &mine.base_model),
            ("training data", &saved.hashes.data, &mine.data),
        ] {
            if a != b {
                return Err(TrainError::Mismatch {
                    what: what.into(),
                    dir: ckpt.dir.clone(),
                });
            }
        }
        self.load(&ckpt, saved)?;
        Ok((self.state.step, warnings))
    }

    fn load(
        &mut self,
        ckpt: &checkpoint::LoadedCheckpoint,
        saved: LoopState,
    ) -> Result<(), TrainError> {
        let p = &mut self.model.params;
        let tensors = p.tensors.clone();
        let data = p.data_mut();
        for t in &tensors {
            let r = t.range();
            for (buf, map, kind) in [
                (&mut *data, &ckpt.weights, "weights"),
                (&mut self.m, &ckpt.m, "optimizer m"),
                (&mut self.v, &ckpt.v, "optimizer v"),
            ] {
                let src = map
                    .get(&t.name)
                    .filter(|s| s.len() == t.len())
                    .ok_or_else(|| {
                        TrainError::Config(format!(
                            "{}: {kind} lack tensor `{}` of {} values",
                            ckpt.dir.display(),
                            t.name,
                            t.len()
                        ))
                    })?;
                buf[r.clone()].copy_from_slice(src);
            }
        }
        self.train.restore(saved.batcher.clone())?;
        self.state = saved;
        Ok(())
    }

    fn save(&mut self, emit: &mut dyn FnMut(Event)) -> Result<(), TrainError> {
        self.state.batcher = self.train.state();
        let p = &self.model.params;
        let state = serde_json::to_value(&self.state).expect("state serializes");
        let dir = checkpoint::save_checkpoint(
            &self.ckpt_root,
            self.state.step,
            &as_named(p, p.data()),
            &as_named(p, &self.m),
            &as_named(p, &self.v),
            &state,
        )?;
        checkpoint::prune_checkpoints(
            &self.ckpt_root,
            self.opts.keep_last.max(1),
            self.state.best_val.map(|(s, _)| s),
        )?;
        emit(Event::CheckpointSaved {
            step: self.state.step,
            path: dir.display().to_string(),
        });
        Ok(())
    }

    /// Mean loss over up to `eval_batches` sequential windows of the validation data.
    pub fn validate(&mut self) -> Result<Option<f64>, TrainError> {
        let Some(batcher) = &mut self.val else {
            return Ok(None);
        };
        batcher.reset(0);
        let n_batches = eval_batches(batcher, &self.opts);
        let mut total = BatchLoss {
            loss_sum: 0.0,
            n_targets: 0,
        };
        for _ in 0..n_batches {
            let packed = batcher.next_batch_with_starts(
                &mut self.inputs,
                &mut self.targets,
                &mut self.starts,
            );
            let starts: &[u32] = if packed { &self.starts } else { &[] };
            let l = self
                .model
                .eval_loss_packed(&self.inputs, &self.targets, starts)?;
            total.loss_sum += l.loss_sum;
            total.n_targets += l.n_targets;
        }
        Ok(Some(total.mean()))
    }

    /// One optimizer step at learning rate `lr`; returns (mean loss, gradient norm, whether
    /// the update was skipped).
    fn train_step(&mut self, lr: f32, totals: &mut Totals) -> Result<(f64, f64, bool), TrainError> {
        let accum = self.opts.grad_accum.max(1);
        self.model.params.zero_grad();
        // The step's loss is the mean of the micro-batch means, the quantity whose gradient
        // the accumulated gradient is.
        let mut mean_sum = 0.0;
        for micro in 0..accum {
            let t = Instant::now();
            let packed = self.train.next_batch_with_starts(
                &mut self.inputs,
                &mut self.targets,
                &mut self.starts,
            );
            totals.data_s += t.elapsed().as_secs_f64();
            self.model.dropout_seed = self.dropout_seed(micro);
            let l = self.model.forward_backward_packed(
                &self.inputs,
                &self.targets,
                if packed { &self.starts } else { &[] },
                1.0 / accum as f32,
                &self.times,
            )?;
            mean_sum += l.mean();
        }
        let t = Instant::now();
        let loss_mean = mean_sum / accum as f64;
        if let Some(i) = self
            .inject_nan_at
            .iter()
            .position(|&s| s == self.state.step + 1)
        {
            // One-shot, so a rollback past this step does not meet it again.
            self.inject_nan_at.remove(i);
            self.model.params.grad[0] = f32::NAN;
        }
        let g = &mut self.model.params.grad;
        let norm = grad_norm_sq(g).sqrt();
        let skipped = !loss_mean.is_finite() || !norm.is_finite();
        if !skipped {
            if self.opts.clip > 0.0 && norm > self.opts.clip as f64 {
                let s = (self.opts.clip as f64 / norm) as f32;
                g.iter_mut().for_each(|x| *x *= s);
            }
            let step = self.state.step + 1;
            let (opts, m, v) = (&self.opts, &mut self.m, &mut self.v);
            self.model.params.adamw_step(m, v, step, |t| AdamWParams {
                lr,
                beta1: opts.beta1,
                beta2: opts.beta2,
                eps: opts.adam_eps,
                weight_decay: if t.decay { opts.weight_decay } else { 0.0 },
            });
        }
        totals.optimizer_s += t.elapsed().as_secs_f64();
        Ok((loss_mean, norm, skipped))
    }

    /// The dropout seed of micro-batch `micro` of the next step: a function of the seed
    /// and the position alone, so a resumed run draws the masks it would have.
    fn dropout_seed(&self, micro: usize) -> u64 {
        let accum = self.opts.grad_accum.max(1) as u64;
        self.opts
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(self.state.step * accum + micro as u64)
    }

    fn lr_now(&self) -> f32 {
        let o = &self.opts;
        lr_at(
            o.schedule,
            o.lr,
            o.min_lr,
            o.warmup,
            o.steps,
            self.state.step,
        ) * self.state.lr_scale
    }

    /// Runs until `opts.steps`, an interrupt (`stop` set: saves a checkpoint first), or early
    /// stopping. `emit` receives every event; `sample` (optional) makes sample generations.
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        emit: &mut dyn FnMut(Event),
        mut sample: Option<&mut SampleFn<'_>>,
    ) -> Result<(RunSummary, BTreeMap<String, f64>, f64), TrainError> {
        let mut totals = Totals::default();
        let tokens_per_step = (self.model.tokens_per_batch() * self.opts.grad_accum.max(1)) as f64;
        let flops_per_step = self.model.flops_per_batch() * self.opts.grad_accum.max(1) as f64;
        let mut reason = EndReason::Completed;
        let mut last_saved = None;
        if self.state.step == 0 && self.state.best_val.is_none() {
            // The base model's validation loss: the reference every later eval is read against.
            self.evaluate(emit)?;
        }
        while self.state.step < self.opts.steps {
            if stop.load(Ordering::SeqCst) {
                reason = EndReason::Interrupted;
                break;
            }
            let t0 = Instant::now();
            let lr = self.lr_now();
            let (opt0, data0) = (totals.optimizer_s, totals.data_s);
            let (loss, norm, skipped) = self.train_step(lr, &mut totals)?;
            let step_s = t0.elapsed().as_secs_f64();
            let comp = self.times.take();
            add_times(&mut totals.model, &comp);
            if skipped {
                self.state.bad_steps += 1;
                emit(Event::Warning {
                    message: format!(
                        "step {}: non-finite loss or gradient (loss {loss}, grad norm {norm}); update skipped",
                        self.state.step + 1
                    ),
                });
                if self.state.bad_steps >= self.opts.max_bad_steps.max(1) {
                    self.rollback(emit)?;
                    continue;
                }
            } else {
                self.state.bad_steps = 0;
                self.state.last_loss = Some(loss);
                self.state.loss_ema = Some(match self.state.loss_ema {
                    None => loss,
                    Some(e) => 0.9 * e + 0.1 * loss,
                });
            }
            self.state.step += 1;
            totals.steps += 1;
            totals.compute_s += step_s;
            let mut ms = ms_map(&comp, 1.0);
            ms.insert("optimizer".into(), (totals.optimizer_s - opt0) * 1e3);
            ms.insert("data".into(), (totals.data_s - data0) * 1e3);
            emit(Event::TrainStep {
                step: self.state.step,
                loss,
                loss_ema: self.state.loss_ema.unwrap_or(loss),
                lr: lr as f64,
                grad_norm: norm,
                tokens_per_s: tokens_per_step / step_s,
                ms_per_step: step_s * 1e3,
                tflops: flops_per_step / step_s / 1e12,
                ms,
                skipped,
            });
            let last = self.state.step == self.opts.steps;
            let eval_due =
                self.opts.eval_every > 0 && self.state.step.is_multiple_of(self.opts.eval_every);
            if (eval_due || last) && self.evaluate(emit)? {
                reason = EndReason::EarlyStopped;
            }
            if let Some(f) = sample.as_deref_mut()
                && self.opts.sample_every > 0
                && (self.state.step.is_multiple_of(self.opts.sample_every) || last)
                && let Some((prompt, text)) = f(&self.model)
            {
                emit(Event::TrainSample {
                    step: self.state.step,
                    prompt,
                    text,
                });
            }
            let due =
                self.opts.save_every > 0 && self.state.step.is_multiple_of(self.opts.save_every);
            if due || last || reason == EndReason::EarlyStopped {
                self.save(emit)?;
                last_saved = Some(self.state.step);
            }
            if reason == EndReason::EarlyStopped {
                break;
            }
        }
        if last_saved != Some(self.state.step) && self.state.step > 0 {
            self.save(emit)?;
        }
        let summary = RunSummary {
            reason,
            final_step: self.state.step,
            final_loss: self.state.last_loss,
            val_loss: self.state.last_val,
            best_val: self.state.best_val,
        };
        let steps = totals.steps.max(1) as f64;
        let mut ms = ms_map(&totals.model, steps);
        ms.insert("optimizer".into(), totals.optimizer_s * 1e3 / steps);
        ms.insert("data".into(), totals.data_s * 1e3 / steps);
        Ok((summary, ms, totals.compute_s))
    }

    /// Validates, records the best loss, and says whether patience ran out.
    fn evaluate(&mut self, emit: &mut dyn FnMut(Event)) -> Result<bool, TrainError> {
        let Some(vl) = self.validate()? else {
            return Ok(false);
        };
        let best = self.state.best_val.is_none_or(|(_, b)| vl < b);
        if best {
            self.state.best_val = Some((self.state.step, vl));
            self.state.evals_without_improvement = 0;
        } else {
            self.state.evals_without_improvement += 1;
        }
        self.state.last_val = Some(vl);
        emit(Event::TrainEval {
            step: self.state.step,
            val_loss: vl,
            perplexity: vl.exp(),
            best,
        });
        Ok(self.opts.patience > 0 && self.state.evals_without_improvement >= self.opts.patience)
    }

    /// Restores the newest good checkpoint after repeated non-finite steps, at half the
    /// learning rate; with no checkpoint yet, restarts from the initial weights is not
    /// possible, so the run fails with a clear error.
    fn rollback(&mut self, emit: &mut dyn FnMut(Event)) -> Result<(), TrainError> {
        let bad = self.state.bad_steps;
        let Some((ckpt, _)) = checkpoint::latest_valid_checkpoint(&self.ckpt_root)? else {
            return Err(TrainError::Diverged { steps: bad });
        };
        let saved: LoopState = serde_json::from_value(ckpt.state.clone())
            .map_err(|e| TrainError::Config(format!("{}: {e}", ckpt.dir.display())))?;
        let lr_scale = self.state.lr_scale * 0.5;
        self.load(&ckpt, saved)?;
        self.state.lr_scale = lr_scale;
        self.state.bad_steps = 0;
        emit(Event::Warning {
            message: format!(
                "{bad} non-finite steps in a row: rolled back to step {} and halved the learning rate (now ×{lr_scale})",
                self.state.step
            ),
        });
        Ok(())
    }
}

/// Batches per evaluation: `eval_batches`, at most the validation data's, at least one.
fn eval_batches(val: &Batcher, opts: &TrainOptions) -> usize {
    (val.batches_per_epoch() as usize).clamp(1, opts.eval_batches.max(1))
}

/// `buf` (the values, or an AdamW moment, laid out like the parameters) as named tensors
/// borrowed in place, in the parameter table's order.
fn as_named<'a>(p: &'a ParamStore, buf: &'a [f32]) -> Vec<NamedTensor<'a>> {
    p.tensors
        .iter()
        .map(|t| NamedTensor {
            name: &t.name,
            shape: &t.shape,
            data: &buf[t.range()],
        })
        .collect()
}

fn add_times(acc: &mut ComponentTimes, t: &ComponentTimes) {
    acc.matmul += t.matmul;
    acc.attention += t.attention;
    acc.norms += t.norms;
    acc.loss += t.loss;
    acc.other += t.other;
}

/// Component times as milliseconds per step.
fn ms_map(t: &ComponentTimes, steps: f64) -> BTreeMap<String, f64> {
    [
        ("matmul", t.matmul),
        ("attention", t.attention),
        ("norms", t.norms),
        ("loss", t.loss),
        ("other", t.other),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v * 1e3 / steps))
    .collect()
}

#[cfg(test)]
mod tests;
