#![warn(missing_docs)]
//! Fuzzing on stable Rust, without cargo-fuzz or a nightly toolchain.
//!
//! Every parser that reads a file or a request from outside gets a [`Target`]: seeds (real
//! files from `../shared/assets`, and small files made from them), a dictionary of tokens
//! its format is built from, and a `run` that feeds one input through the same entry point
//! a user's file takes (`Model::open`, `read_document`, `load_checkpoint`, the studio over
//! loopback HTTP). The [`mutate`] module makes inputs from the seeds; [`run_target`] runs
//! them one by one inside `catch_unwind`, with a panic hook that counts every panic in
//! every thread, and the counting allocator of [`alloc`] measuring the peak memory of each
//! input.
//!
//! Two ways to run it:
//! - `cargo test -p nf-fuzz --release` runs a bounded, seeded pass: 2,000 inputs per
//!   target, the same edits every time (the audit target's seeds hold a freshly made
//!   device key and times, so its inputs vary with them).
//! - `cargo run -p nf-fuzz --release -- --minutes N [--target NAME] [--seed S]` runs for
//!   as long as asked, printing a line per target; a failing input is written to the
//!   work folder to replay.
//!
//! What counts as a failure: a panic reaching the runner or escaping any thread (a panic a
//! reader catches by design, in the PDF extraction thread, is counted apart as contained),
//! an abort (the allocator refuses single requests over 1 GiB), or an input whose peak
//! memory exceeds the bound the caller sets.

pub mod alloc;
pub mod mutate;
pub mod targets;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use mutate::Rng;

/// What a target did with one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The parser accepted it (and whatever the target does next with it succeeded).
    Accepted,
    /// The parser refused it with an error.
    Refused,
}

/// [`Verdict::Refused`], printing why when `NF_FUZZ_VERBOSE` is set (to see how deep a
/// target's inputs get).
pub fn refused(why: impl std::fmt::Display) -> Verdict {
    if std::env::var_os("NF_FUZZ_VERBOSE").is_some() {
        eprintln!("refused: {why}");
    }
    Verdict::Refused
}

/// One parser under test, set up and ready to take inputs.
pub trait Harness {
    /// Valid inputs to start from; each must be accepted as it is.
    fn seeds(&self) -> &[Vec<u8>];
    /// Tokens of the format, inserted by the mutator.
    fn dictionary(&self) -> &[&'static [u8]] {
        &[]
    }
    /// Feeds one input through the parser's real entry point.
    fn run(&mut self, input: &[u8]) -> Verdict;
}

/// A fuzz target: a name and how to build its harness in a fresh work folder.
#[derive(Clone, Copy)]
pub struct Target {
    /// The name `--target` takes.
    pub name: &'static str,
    /// What it parses, for reports.
    pub what: &'static str,
    /// Builds the harness in a work folder.
    pub setup: fn(&Setup) -> Result<Box<dyn Harness>, String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Where a harness finds its seeds and keeps its files.
#[derive(Debug, Clone)]
pub struct Setup {
    /// `../shared/assets`.
    pub assets: PathBuf,
    /// An empty folder of the target's own.
    pub work: PathBuf,
}

/// How many inputs, or for how long.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Inputs to run (at most, with a time limit).
    pub inputs: u64,
    /// How long to run, instead of a count.
    pub time: Option<Duration>,
    /// The largest input made, in bytes.
    pub max_len: usize,
    /// Write each input to `<work>/current.bin` before running it, so an input that
    /// aborts the process (which no hook sees) is left there to replay.
    pub keep_current: bool,
}

/// What one target's run showed.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run.
    pub inputs: u64,
    /// Inputs the parser accepted (returned `Ok`).
    pub accepted: u64,
    /// Panics outside the threads that catch them by design, with the first input's index
    /// and message.
    pub panics: u64,
    /// The first such panic: its input's index and message.
    pub first_panic: Option<(u64, String)>,
    /// Panics caught by design (the PDF reader's extraction thread).
    pub contained: u64,
    /// The most memory live at once during one input, above what was live before it.
    pub peak_bytes: usize,
    /// The input that reached `peak_bytes`.
    pub peak_input: u64,
    /// The largest single allocation.
    pub largest_alloc: usize,
    /// The slowest input and its index.
    pub slowest: Duration,
    /// Its index.
    pub slowest_input: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}

static PANICS: AtomicUsize = AtomicUsize::new(0);
/// Whether an input is running: only then are panics counted instead of reported.
static RUNNING: AtomicBool = AtomicBool::new(false);
static CONTAINED: AtomicUsize = AtomicUsize::new(0);
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Installs the hook that counts panics while inputs run (once per process); outside an
/// input (a failed assertion of the caller's) the previous hook reports as usual.
fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !RUNNING.load(Relaxed) {
                return previous(info);
            }
            let thread = std::thread::current();
            if thread.name() == Some(nf_ingest::PDF_THREAD_NAME) {
                CONTAINED.fetch_add(1, Relaxed);
                return;
            }
            PANICS.fetch_add(1, Relaxed);
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            *LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{msg}{at} (thread {:?})", thread.name()));
        }));
    });
}

/// Runs `target` on `budget` inputs made from seed `seed`. The seeds themselves go first,
/// unchanged, and each must be accepted: a harness that refuses valid files would pass
/// every input without reaching the parser's depths. A panicking input is written to
/// `<work>/panic-<index>.bin`.
pub fn run_target(
    index: usize,
    target: &Target,
    setup: &Setup,
    seed: u64,
    budget: Budget,
) -> Result<Report, String> {
    count_panics();
    let mut harness = (target.setup)(setup).map_err(|e| format!("{}: setup: {e}", target.name))?;
    let seeds = harness.seeds().to_vec();
    let dictionary = harness.dictionary().to_vec();
    if seeds.is_empty() {
        return Err(format!("{}: no seeds", target.name));
    }
    let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9));
    let mut r = Report {
        target: target.name,
        ..Report::default()
    };
    let start = Instant::now();
    let contained_before = CONTAINED.load(Relaxed);
    for i in 0..budget.inputs {
        if budget.time.is_some_and(|t| start.elapsed() >= t) {
            break;
        }
        let input = match seeds.get(i as usize) {
            Some(s) => s.clone(),
            None => mutate::mutate(&mut rng, &seeds, &dictionary, budget.max_len),
        };
        if budget.keep_current {
            let _ = std::fs::write(setup.work.join("current.bin"), &input);
        }
        alloc::set_running(index, i as usize);
        let panics_before = PANICS.load(Relaxed);
        let base = alloc::reset();
        let t = Instant::now();
        RUNNING.store(true, Relaxed);
        let verdict = std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(&input)));
        RUNNING.store(false, Relaxed);
        let took = t.elapsed();
        let (peak, largest) = alloc::measured();
        r.inputs += 1;
        if peak.saturating_sub(base) > r.peak_bytes {
            r.peak_bytes = peak.saturating_sub(base);
            r.peak_input = i;
        }
        r.largest_alloc = r.largest_alloc.max(largest);
        if took > r.slowest {
            r.slowest = took;
            r.slowest_input = i;
        }
        match verdict {
            Ok(Verdict::Accepted) => r.accepted += 1,
            Ok(Verdict::Refused) if (i as usize) < seeds.len() => {
                return Err(format!(
                    "{}: seed #{i} is refused; the harness does not reach the parser",
                    target.name
                ));
            }
            Ok(Verdict::Refused) => {}
            Err(_) => {}
        }
        let new_panics = PANICS.load(Relaxed) - panics_before;
        if new_panics > 0 {
            r.panics += new_panics as u64;
            if r.first_panic.is_none() {
                let msg = LAST_PANIC
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_default();
                let saved = setup.work.join(format!("panic-{i}.bin"));
                let _ = std::fs::write(&saved, &input);
                r.first_panic = Some((i, format!("{msg}; input saved to {}", saved.display())));
            }
        }
    }
    r.contained = (CONTAINED.load(Relaxed) - contained_before) as u64;
    r.elapsed = start.elapsed();
    Ok(r)
}

impl Report {
    /// One line: counts, memory and time.
    pub fn line(&self) -> String {
        format!(
            "{:<18} {:>7} inputs {:>6} accepted {:>3} panics {:>4} contained  peak {:>7.1} MiB (input {})  largest alloc {:>7.1} MiB  slowest {:>7.1} ms  {:>6.1} s",
            self.target,
            self.inputs,
            self.accepted,
            self.panics,
            self.contained,
            self.peak_bytes as f64 / (1 << 20) as f64,
            self.peak_input,
            self.largest_alloc as f64 / (1 << 20) as f64,
            self.slowest.as_secs_f64() * 1e3,
            self.elapsed.as_secs_f64(),
        )
    }
}

/// Runs one input on `target` (to replay a saved failure), with the panic reported as usual.
pub fn replay(target: &Target, setup: &Setup, input: &[u8]) -> Result<Verdict, String> {
    let mut harness = (target.setup)(setup).map_err(|e| format!("{}: setup: {e}", target.name))?;
    Ok(harness.run(input))
}

/// A fresh work folder for `name` under `root`.
pub fn work_dir(root: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
