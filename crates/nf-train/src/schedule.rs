//! Learning-rate schedules: linear warmup, then constant, linear or cosine decay.
//!
//! Warmup follows llm.c and nanoGPT rather than Hugging Face's `get_*_schedule_with_warmup`:
//! during the first `warmup` steps the rate is `base_lr * (step + 1) / warmup`, so step 0
//! already learns (HF's `step / warmup` spends the first update at a rate of zero) and
//! step `warmup - 1` reaches `base_lr`. After warmup, the decay runs over steps `warmup`
//! to `total` and reaches `min_lr` at step `total`; steps at or past `total` stay at
//! `min_lr`. Steps are 0-based: the first optimizer update is step 0.

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// The shape of the learning rate after warmup.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// `base_lr` throughout (after warmup); `min_lr` is unused.
    Constant,
    /// A straight line from `base_lr` down to `min_lr`.
    Linear,
    /// Half a cosine from `base_lr` down to `min_lr` (Loshchilov and Hutter's SGDR, without
    /// restarts), the usual choice for LLM training.
    Cosine,
}

impl std::str::FromStr for Schedule {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, TrainError> {
        match s.to_ascii_lowercase().as_str() {
            "constant" => Ok(Schedule::Constant),
            "linear" => Ok(Schedule::Linear),
            "cosine" => Ok(Schedule::Cosine),
            _ => Err(TrainError::UnknownSchedule(s.to_string())),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        })
    }
}

/// The learning rate at 0-based `step`; see the module documentation for the formula.
pub fn lr_at(
    schedule: Schedule,
    base_lr: f32,
    min_lr: f32,
    warmup: u64,
    total: u64,
    step: u64,
) -> f32 {
    if step < warmup {
        return (base_lr as f64 * (step + 1) as f64 / warmup as f64) as f32;
    }
    if schedule == Schedule::Constant {
        return base_lr;
    }
    if step >= total {
        return min_lr;
    }
    // In [0, 1): how far through the decay phase this step is.
    let progress = (step - warmup) as f64 / (total - warmup) as f64;
    let (base, min) = (base_lr as f64, min_lr as f64);
    let lr = match schedule {
        Schedule::Linear => base + (min - base) * progress,
        Schedule::Cosine => {
            min + 0.5 * (base - min) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
        Schedule::Constant => base,
    };
    lr as f32
}

/// A schedule with its parameters, for a run's resolved configuration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    /// The curve.
    pub schedule: Schedule,
    /// The peak learning rate.
    pub base_lr: f32,
    /// Where cosine and linear schedules end.
    pub min_lr: f32,
    /// Warmup steps.
    pub warmup: u64,
    /// The step at which the decay reaches `min_lr` (usually the run's total steps).
    pub total: u64,
}

impl LrSchedule {
    /// The learning rate at 0-based `step`, as [`lr_at`].
    pub fn at(&self, step: u64) -> f32 {
        lr_at(
            self.schedule,
            self.base_lr,
            self.min_lr,
            self.warmup,
            self.total,
            step,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() <= 1e-7 + 1e-6 * b.abs()
    }

    #[test]
    fn warmup_is_linear_from_the_first_step() {
        for s in [Schedule::Constant, Schedule::Linear, Schedule::Cosine] {
            assert!(close(lr_at(s, 1e-3, 1e-4, 10, 100, 0), 1e-4));
            assert!(close(lr_at(s, 1e-3, 1e-4, 10, 100, 4), 5e-4));
            assert!(close(lr_at(s, 1e-3, 1e-4, 10, 100, 9), 1e-3));
            assert!(close(lr_at(s, 1e-3, 1e-4, 10, 100, 10), 1e-3));
        }
    }

    #[test]
    fn decays_reach_min_lr_at_total() {
        let (b, m) = (1e-3, 1e-4);
        assert!(close(lr_at(Schedule::Constant, b, m, 0, 100, 99), b));
        assert!(close(lr_at(Schedule::Constant, b, m, 0, 100, 500), b));
        // Halfway through the decay both are at the midpoint.
        let mid = (b + m) / 2.0;
        assert!(close(lr_at(Schedule::Linear, b, m, 10, 110, 60), mid));
        assert!(close(lr_at(Schedule::Cosine, b, m, 10, 110, 60), mid));
        // A quarter in, cosine is still higher than linear.
        let lin = lr_at(Schedule::Linear, b, m, 0, 100, 25);
        let cos = lr_at(Schedule::Cosine, b, m, 0, 100, 25);
        assert!(close(lin, b + (m - b) * 0.25) && cos > lin);
        for s in [Schedule::Linear, Schedule::Cosine] {
            assert!(close(lr_at(s, b, m, 10, 110, 110), m));
            assert!(close(lr_at(s, b, m, 10, 110, 1000), m));
            let last = lr_at(s, b, m, 10, 110, 109);
            assert!(last > m && last < m * 1.1, "{s}: {last}");
            // Monotone after warmup.
            let lrs: Vec<f32> = (10..=110).map(|t| lr_at(s, b, m, 10, 110, t)).collect();
            assert!(lrs.windows(2).all(|w| w[1] <= w[0]), "{s}");
        }
    }

    #[test]
    fn degenerate_lengths() {
        // No warmup: step 0 is at base_lr. Total within warmup: min_lr once warmup ends.
        assert!(close(lr_at(Schedule::Cosine, 1.0, 0.1, 0, 10, 0), 1.0));
        assert!(close(lr_at(Schedule::Cosine, 1.0, 0.1, 5, 3, 4), 1.0));
        assert!(close(lr_at(Schedule::Cosine, 1.0, 0.1, 5, 3, 5), 0.1));
        assert!(close(lr_at(Schedule::Linear, 1.0, 0.0, 0, 0, 0), 0.0));
    }

    #[test]
    fn parses_and_serializes_lowercase() {
        assert_eq!("Cosine".parse::<Schedule>().unwrap(), Schedule::Cosine);
        assert_eq!("linear".parse::<Schedule>().unwrap(), Schedule::Linear);
        let e = "step".parse::<Schedule>().unwrap_err().to_string();
        assert!(e.contains("`step`") && e.contains("cosine"), "{e}");
        assert_eq!(
            serde_json::to_string(&Schedule::Constant).unwrap(),
            "\"constant\""
        );
        let s = LrSchedule {
            schedule: Schedule::Linear,
            base_lr: 2.0,
            min_lr: 0.0,
            warmup: 0,
            total: 4,
        };
        assert!(close(s.at(2), 1.0));
        let back: LrSchedule = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
