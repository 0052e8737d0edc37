//! A micro-batch's loss and the time its parts took.

use std::cell::Cell;
use std::time::Instant;

/// Loss over one micro-batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchLoss {
    /// Sum of `-log p(target)` over the counted targets.
    pub loss_sum: f64,
    /// Targets counted (those not [`nf_engine::loss::IGNORE`]d).
    pub n_targets: usize,
}

impl BatchLoss {
    /// Mean loss per counted target (0 when nothing was counted).
    pub fn mean(&self) -> f64 {
        if self.n_targets == 0 {
            0.0
        } else {
            self.loss_sum / self.n_targets as f64
        }
    }
}

/// Seconds spent per component since the last [`StepTimes::take`].
#[derive(Debug, Default)]
pub struct StepTimes {
    /// Seconds in matrix products.
    pub matmul: Cell<f64>,
    /// Seconds in attention.
    pub attention: Cell<f64>,
    /// Seconds in RMSNorm.
    pub norms: Cell<f64>,
    /// Seconds in the classifier's softmax cross-entropy.
    pub loss: Cell<f64>,
    /// Embedding, RoPE, SwiGLU, residual adds, dropout.
    pub other: Cell<f64>,
}

/// A snapshot of [`StepTimes`], in seconds.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ComponentTimes {
    /// Seconds in matrix products.
    pub matmul: f64,
    /// Seconds in attention.
    pub attention: f64,
    /// Seconds in RMSNorm.
    pub norms: f64,
    /// Seconds in the classifier's softmax cross-entropy.
    pub loss: f64,
    /// Seconds in everything else.
    pub other: f64,
}

impl StepTimes {
    /// Returns the totals and resets them.
    pub fn take(&self) -> ComponentTimes {
        ComponentTimes {
            matmul: self.matmul.take(),
            attention: self.attention.take(),
            norms: self.norms.take(),
            loss: self.loss.take(),
            other: self.other.take(),
        }
    }

    /// Adds a snapshot taken elsewhere (on the pool thread that ran a step).
    pub fn add(&self, t: ComponentTimes) {
        self.matmul.set(self.matmul.get() + t.matmul);
        self.attention.set(self.attention.get() + t.attention);
        self.norms.set(self.norms.get() + t.norms);
        self.loss.set(self.loss.get() + t.loss);
        self.other.set(self.other.get() + t.other);
    }
}

pub(super) fn timed<T>(cell: &Cell<f64>, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    cell.set(cell.get() + t.elapsed().as_secs_f64());
    r
}
