//! What a run says about itself: the dry run's plan (`train.plan`), the end-of-run report
//! (`train.done`, also `report.json`), and the precision notes of `train.start`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nf_engine::Precision;
use nf_engine::cpu::Isa;
use nf_protocol::{Event, TrainMemory, TrainPlan};

use super::{Prepared, REPORT_FILE, RunConfig};
use crate::efficiency;
use crate::trainer::{RunSummary, Trainer};
use crate::{Result, TrainError};

/// The bf16 micro-kernel a run's products use (`kernel` in `train.start`), empty for f32.
pub fn kernel_of(precision: Precision, isa: Isa) -> String {
    match precision {
        Precision::Bf16 => nf_engine::gemm_bf16::kernel_name(isa).into(),
        Precision::F32 => String::new(),
    }
}

/// The warning for bf16 where it is emulated without AVX-512, if it applies. AVX-512
/// without AVX512_BF16 multiplies the bf16 pairs with FMA (the `avx512-fma` kernel), which
/// measured faster than f32 (BENCHMARKS.md), so it gets no warning.
pub fn precision_warning(precision: Precision, isa: Isa) -> Option<String> {
    (precision == Precision::Bf16 && isa < Isa::Avx512).then(|| {
        format!(
            "bf16 on {isa} is emulated (native bf16 needs avx512bf16 or amx), so it trains slower than f32; --precision f32 (or auto) is faster on this CPU"
        )
    })
}

/// The dry run's plan: one real training micro-batch timed, the memory by part, and the
/// time the whole run would take.
pub fn plan(p: &mut Prepared) -> Result<TrainPlan> {
    let measured = p.trainer.measure_step()?;
    let cfg = &p.cfg;
    let accum = cfg.options.grad_accum.max(1);
    let m = &p.trainer.model;
    let trainable = m.params.len() as u64 * 4;
    let activations = m.activation_bytes() as u64;
    let weights = m.frozen_bytes() as u64;
    // AdamW keeps two f32 moments per trainable parameter; the gradients mirror the
    // parameters.
    let memory = TrainMemory {
        weights,
        trainable,
        gradients: trainable,
        optimizer: 2 * trainable,
        activations,
        total: weights + trainable * 4 + activations,
    };
    let steps = cfg.options.steps;
    let ms_per_step = measured.step_ms(accum);
    let eval_ms =
        p.trainer.evaluations_left() as f64 * p.trainer.eval_batches() as f64 * measured.forward_ms;
    Ok(TrainPlan {
        method: cfg.method.name().into(),
        trainable_params: m.params.len() as u64,
        total_params: p.total_params as u64,
        steps,
        tokens_per_step: (cfg.batch_size * p.seq_len * accum) as u64,
        memory,
        flops_per_step: m.flops_per_batch() * accum as f64,
        ms_per_step,
        estimated_s: (ms_per_step * steps as f64 + eval_ms) / 1e3,
        precision: m.precision.name().into(),
        isa: nf_engine::cpu::isa().name().into(),
    })
}

/// What the training loop returned, and how the run went around it.
pub struct Outcome {
    /// How the loop ended.
    pub summary: RunSummary,
    /// Milliseconds per step by component.
    pub ms: BTreeMap<String, f64>,
    /// Seconds spent in steps (not in evaluation or saving).
    pub compute_s: f64,
    /// Seconds since the run (or this resume) started.
    pub wall_s: f64,
    /// The step this process started from.
    pub start_step: u64,
    /// The final adapter or model.
    pub output: PathBuf,
}

/// The `train.done` report. Utilization is against the GEMM peak of the run's precision:
/// when the run beat the quick peak measurement, the peak is measured again on larger
/// matrices before it is called under-measured.
pub fn done_report(trainer: &mut Trainer, cfg: &RunConfig, seq_len: usize, o: Outcome) -> Event {
    let precision = trainer.model.precision;
    let isa = nf_engine::cpu::isa();
    let accum = cfg.options.grad_accum;
    let steps = o.summary.final_step - o.start_step;
    let tokens = steps as f64 * (cfg.batch_size * seq_len * accum) as f64;
    let flops = trainer.model.flops_per_batch() * accum as f64 * steps as f64;
    let per_s = |x: f64| {
        if o.compute_s > 0.0 {
            x / o.compute_s
        } else {
            0.0
        }
    };
    let tflops = per_s(flops) / 1e12;
    let achieved_gflops = tflops * 1e3;
    if steps > 0 && trainer.peak_gflops.is_some_and(|p| achieved_gflops > p) {
        let again = efficiency::gemm_peak_gflops(precision, efficiency::REMEASURE_SIZE, 3);
        trainer.peak_gflops = match (trainer.peak_gflops, again) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
    let util = efficiency::utilization(achieved_gflops, trainer.peak_gflops).filter(|_| steps > 0);
    Event::TrainDone {
        reason: o.summary.reason.name().into(),
        steps,
        final_step: o.summary.final_step,
        final_loss: o.summary.final_loss,
        val_loss: o.summary.val_loss,
        wall_s: o.wall_s,
        ms_per_step: if steps > 0 {
            o.compute_s * 1e3 / steps as f64
        } else {
            0.0
        },
        tokens_per_s: per_s(tokens),
        tflops,
        utilization: util.map(|u| u.fraction),
        peak_gflops: trainer.peak_gflops,
        peak_under_measured: util.is_some_and(|u| u.peak_under_measured),
        precision: precision.name().into(),
        isa: isa.name().into(),
        kernel: kernel_of(precision, isa),
        ms: o.ms,
        output: o.output.display().to_string(),
    }
}

/// Writes `report.json` (the `train.done` event) into the run folder.
pub fn write_report(run_dir: &Path, report: &Event) -> Result<()> {
    let text = serde_json::to_string_pretty(report).expect("an event serializes");
    nf_formats::atomic::write_atomic(&run_dir.join(REPORT_FILE), |w| {
        std::io::Write::write_all(w, text.as_bytes())
    })
    .map_err(TrainError::from)
}
