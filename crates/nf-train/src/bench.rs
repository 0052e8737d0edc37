//! `bench train`'s measurement: full training steps (forward, backward, AdamW) on a fixed
//! batch, timed one by one, with the time by component and the memory by part.

use std::time::Instant;

use nf_engine::Precision;
use nf_engine::optim::{AdamWParams, zeroed_moments};
use nf_model::Model;
use nf_model::train::{
    BatchShape, ComponentTimes, LoraConfig, Method, StepTimes, Target, TrainModel,
};

use crate::Result;

/// What to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchTrain {
    /// 0 trains every weight; otherwise LoRA of this rank on every projection.
    pub lora_rank: usize,
    /// Batch size, window and recomputation.
    pub shape: BatchShape,
    /// The arithmetic of the step's products.
    pub precision: Precision,
    /// The type a LoRA run holds its frozen f32 matrices in (`--base-dtype`).
    pub base: Option<nf_formats::GgmlType>,
    /// Timed steps, after one warm-up step.
    pub steps: usize,
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct TrainBenchResult {
    /// Seconds of each timed step.
    pub step_secs: Vec<f64>,
    /// Time by component over the timed steps.
    pub components: ComponentTimes,
    /// FLOPs of one step.
    pub flops_per_step: f64,
    /// Memory by part in bytes: weights, trainable, gradients, optimizer, activations.
    pub memory: Vec<(&'static str, usize)>,
}

/// Times `b.steps` training steps of `model` on a fixed batch of valid token ids.
pub fn bench_train(model: Model, b: &BenchTrain) -> Result<TrainBenchResult> {
    let c = model.config.clone();
    let method = if b.lora_rank > 0 {
        Method::Lora(LoraConfig {
            rank: b.lora_rank,
            alpha: 2.0 * b.lora_rank as f32,
            dropout: 0.0,
            targets: Target::ALL.to_vec(),
        })
    } else {
        Method::Full
    };
    let mut tm = TrainModel::new(model, method, b.shape, 0);
    if let Some(ty) = b.base {
        // A model file's f32 matrices convert as `train --base-dtype` converts them (a
        // random model made in this type already has nothing to convert).
        crate::run::store_frozen_as(&mut tm, ty)?;
    }
    tm.set_precision(b.precision);
    let n = b.shape.batch * b.shape.seq_len;
    let inputs: Vec<u32> = (0..n).map(|i| (i * 7919 % c.vocab_size) as u32).collect();
    let targets: Vec<u32> = (0..n)
        .map(|i| ((i + 1) * 7919 % c.vocab_size) as u32)
        .collect();
    let n_params = tm.params.len();
    let (mut m, mut v) = (zeroed_moments(n_params), zeroed_moments(n_params));
    let times = StepTimes::default();
    let h = AdamWParams {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut step = |tm: &mut TrainModel, k: u64| -> Result<f64> {
        let t = Instant::now();
        tm.params.zero_grad();
        tm.forward_backward(&inputs, &targets, 1.0, &times)?;
        tm.params.adamw_step(&mut m, &mut v, k, |_| h);
        Ok(t.elapsed().as_secs_f64())
    };
    step(&mut tm, 1)?;
    times.take();
    let step_secs = (0..b.steps.max(1))
        .map(|k| step(&mut tm, k as u64 + 2))
        .collect::<Result<Vec<_>>>()?;
    let trainable = tm.params.len() * 4;
    Ok(TrainBenchResult {
        step_secs,
        components: times.take(),
        flops_per_step: tm.flops_per_batch(),
        memory: vec![
            ("weights", tm.frozen_bytes()),
            ("trainable", trainable),
            ("gradients", trainable),
            ("optimizer", 2 * trainable),
            ("activations", tm.activation_bytes()),
        ],
    })
}
