#![warn(missing_docs)]
//! Training: the loop ([`trainer`]), the run folder and its `run.json` ([`run`]),
//! learning-rate schedules ([`schedule`]), atomic checkpoints that verify on load for exact
//! resume ([`checkpoint`]), the efficiency report's GEMM peak and utilization
//! ([`efficiency`]), `bench train`'s timed steps ([`mod@bench`]), and SHA-256 hashing ([`hash`]).
//! Like every library in the workspace, it never prints: errors are typed
//! ([`TrainError`], [`CheckpointError`]) and results are returned to the caller.

pub mod bench;
pub mod checkpoint;
pub mod efficiency;
pub mod error;
pub mod hash;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use error::{CheckpointError, Result, TrainError};
pub use schedule::{LrSchedule, Schedule, lr_at};
