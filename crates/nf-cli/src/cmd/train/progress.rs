//! What a run shows while it trains: every event to `events.ndjson` and the user's
//! output, a live status line on a terminal, and the plan and report summaries.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::time::Instant;

use nf_protocol::{Event, EventWriter, human_count as human, human_duration as duration};

use crate::flags::isa_and_kernel;
use crate::output::Output;

/// Writes every event to `events.ndjson` in the run folder and to the user's output.
pub(super) struct RunSink<'a> {
    pub(super) file: EventWriter<File>,
    pub(super) out: &'a mut Output,
    pub(super) progress: Progress,
}

impl RunSink<'_> {
    pub(super) fn emit(&mut self, e: Event) {
        // A full disk must not kill a run mid-step; the checkpoint writer reports real
        // I/O failures.
        let _ = self.file.emit(e.clone());
        self.progress.show(&e, self.out.is_json());
        let _ = self.out.event(|| e);
    }
}

/// The human view: a live status line on a terminal, a line per eval and every 10 steps
/// otherwise.
pub(super) struct Progress {
    pub(super) tty: bool,
    pub(super) total: u64,
    pub(super) start: Instant,
    pub(super) start_step: u64,
    pub(super) last_val: Option<f64>,
}

impl Progress {
    fn show(&mut self, e: &Event, json: bool) {
        if json {
            return;
        }
        let mut err = std::io::stderr().lock();
        match e {
            Event::TrainStart {
                run_dir,
                method,
                trainable_params,
                total_params,
                start_step,
                train_tokens,
                val_tokens,
                tokens_per_step,
                precision,
                isa,
                kernel,
                ..
            } => {
                self.start_step = *start_step;
                let isa = isa_and_kernel(isa, kernel);
                let _ = writeln!(
                    err,
                    "training {method}: {} trainable of {} parameters, {train_tokens} train / {val_tokens} val tokens, {tokens_per_step} tokens/step, {precision} on {isa}{}\nrun: {run_dir}",
                    human(*trainable_params as f64),
                    human(*total_params as f64),
                    if *start_step > 0 {
                        format!(", resuming at step {start_step}")
                    } else {
                        String::new()
                    },
                );
            }
            Event::TrainStep {
                step,
                loss,
                loss_ema,
                lr,
                tokens_per_s,
                ..
            } => {
                let done = step - self.start_step;
                let per = self.start.elapsed().as_secs_f64() / done.max(1) as f64;
                let eta = per * (self.total.saturating_sub(*step)) as f64;
                let val = self
                    .last_val
                    .map_or(String::new(), |v| format!(" val {v:.4}"));
                let line = format!(
                    "step {step}/{} loss {loss:.4} ema {loss_ema:.4}{val} lr {lr:.2e} {} tok/s ETA {}",
                    self.total,
                    human(*tokens_per_s),
                    duration(eta)
                );
                if self.tty {
                    let _ = write!(err, "\r\x1b[2K{line}");
                } else if step % 10 == 0 || *step == self.total {
                    let _ = writeln!(err, "{line}");
                }
            }
            Event::TrainEval {
                step,
                val_loss,
                perplexity,
                best,
            } => {
                self.last_val = Some(*val_loss);
                let nl = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(
                    err,
                    "{nl}eval step {step}: val loss {val_loss:.4} (perplexity {perplexity:.2}){}",
                    if *best { " best" } else { "" }
                );
            }
            Event::TrainSample { step, prompt, text } => {
                let nl = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(err, "{nl}sample step {step}: {prompt}{text}");
            }
            Event::Warning { message } => {
                let nl = if self.tty { "\r\x1b[2K" } else { "" };
                let _ = writeln!(err, "{nl}warning: {message}");
            }
            _ => {}
        }
    }
}

pub(super) fn print_plan(p: &nf_protocol::TrainPlan) {
    let b = nf_protocol::human_bytes;
    let m = &p.memory;
    eprintln!(
        "plan {}: {} trainable of {} parameters, {} steps of {} tokens, {} on {}\nmemory: {} total = {} weights + {} trainable + {} gradients + {} optimizer + {} activations\ntime: {:.1} ms/step ({:.2} GFLOP/step), about {} in all",
        p.method,
        human(p.trainable_params as f64),
        human(p.total_params as f64),
        p.steps,
        p.tokens_per_step,
        p.precision,
        p.isa,
        b(m.total),
        b(m.weights),
        b(m.trainable),
        b(m.gradients),
        b(m.optimizer),
        b(m.activations),
        p.ms_per_step,
        p.flops_per_step / 1e9,
        duration(p.estimated_s),
    );
}

pub(super) fn print_report(r: &Event, ms: &BTreeMap<String, f64>) {
    let Event::TrainDone {
        reason,
        steps,
        final_step,
        final_loss,
        val_loss,
        wall_s,
        ms_per_step,
        tokens_per_s,
        tflops,
        utilization,
        peak_gflops,
        peak_under_measured,
        precision,
        isa,
        kernel,
        output,
        ..
    } = r
    else {
        return;
    };
    let isa = isa_and_kernel(isa, kernel);
    let mut err = std::io::stderr().lock();
    if std::io::stderr().is_terminal() {
        // Clear the live status line before the report.
        let _ = write!(err, "\r\x1b[2K");
    }
    let util = match utilization {
        Some(_) if *peak_under_measured => format!(
            " (at least this machine's measured {precision} GEMM peak on {isa}: peak under-measured)"
        ),
        Some(u) => format!(
            " ({:.0}% of this machine's {precision} GEMM peak on {isa})",
            u * 100.0
        ),
        None if peak_gflops.is_none() => {
            format!(" ({precision} on {isa}; no {precision} GEMM peak measured)")
        }
        None => format!(" ({precision} on {isa})"),
    };
    let _ = writeln!(
        err,
        "{reason} at step {final_step}: {steps} steps in {wall_s:.1} s, {ms_per_step:.1} ms/step, {} tokens/s, {:.1} GFLOP/s{util}",
        human(*tokens_per_s),
        tflops * 1e3
    );
    if let Some(l) = final_loss {
        let _ = write!(err, "final loss {l:.4}");
    }
    if let Some(v) = val_loss {
        let _ = write!(err, ", val loss {v:.4} (perplexity {:.2})", v.exp());
    }
    let _ = writeln!(err);
    let parts: Vec<String> = ms.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
    let _ = writeln!(err, "ms/step by component: {}", parts.join(", "));
    let _ = writeln!(err, "saved: {output}");
}
