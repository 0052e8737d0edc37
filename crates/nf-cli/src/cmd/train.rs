//! `neuralforge train`: fine-tune a model (LoRA or full) on token shards or text files.
//!
//! A run lives in one folder (`<home>/runs/<id>/` or `--out`), laid out as
//! `nf_train::run` describes: `run.json` written first, `events.ndjson` (every event, in
//! text mode too), checkpoints, `train.lock` (a second `train` on the same folder fails
//! with code `running`), and at the end `adapter/` or `model/`. `--resume RUN_DIR`
//! continues from the newest valid checkpoint with the configuration in its `run.json`.
//!
//! A run that fails once its folder exists appends the `error` event (code, message,
//! hint, as printed) to `events.ndjson`, so whoever tails the file sees why it ended.
//!
//! `--dry-run` prepares the run as a real one would (configuration, model, data, trainer),
//! times one real forward and backward pass, and reports the plan as a `train.plan` event
//! (see `nf_protocol`); it writes nothing, not even an audit entry.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use anyhow::{Context, Result};
use nf_data::Sampling;
use nf_model::train::TrainModel;
use nf_protocol::{ErrorCode, Event};
use nf_train::schedule::Schedule;
use nf_train::trainer::TrainOptions;

use crate::cli::{PrecisionArg, TrainArgs};
use crate::errors::user_error;
use crate::flags::base_dtype;
use crate::output::Output;

mod progress;
use nf_audit::{Artifact, Record};
use nf_store::ModelSpec;
use nf_store::resolve::{Loaded, hash_model_files, load};
use nf_train::run::{self, RunConfig, RunLock, RunMethod};
use progress::{Progress, RunSink, print_plan, print_report};

/// Audited: a `start` (or `resume`) entry before the first step, naming the base model's
/// files, tokenizer, datasets/data files and the run; and a last entry when the run ends
/// (`finish`, `interrupt`, `early_stop`, or `end` with the error), naming the final
/// adapter or model and the newest checkpoint. A `--dry-run` writes nothing and is not
/// audited.
pub fn run(args: &TrainArgs, home: &Path, out: &mut Output) -> Result<()> {
    if args.dry_run {
        return plan(args, home, out);
    }
    crate::audit::scoped(home, "train", |rec| {
        let mut lock = None;
        let result = run_inner(args, home, out, rec, &mut lock);
        // Once the run folder is ours, whoever tails its events learns why the run ended.
        if let (Err(e), Some(lock)) = (&result, &lock) {
            lock.record_failure(crate::errors::error_event(e));
        }
        result
    })
}

/// Refuses a new run in a folder that already holds one.
fn refuse_existing_run(dir: &Path) -> Result<()> {
    if dir.join(run::RUN_FILE).exists() {
        return Err(user_error(
            ErrorCode::Exists,
            format!("{} already holds a run", dir.display()),
            format!(
                "continue it with --resume {}, or pick another --out",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// The run's configuration and folder: read back from `run.json` for `--resume`, else
/// resolved from the flags (the folder must not hold a run yet). True when resuming.
fn target(args: &TrainArgs, home: &Path) -> Result<(RunConfig, PathBuf, bool)> {
    if let Some(dir) = &args.resume {
        let cfg = RunConfig::read(dir)?;
        check_resume_precision(args, &cfg)?;
        return Ok((cfg, dir.clone(), true));
    }
    let cfg = resolve(args, home)?;
    let dir = args.out.clone().unwrap_or_else(|| {
        nf_store::home::runs_dir(home).join(nf_protocol::run_id(cfg.method.name()))
    });
    refuse_existing_run(&dir)?;
    Ok((cfg, dir, false))
}

/// A resume trains in the run's own precision. An explicit `--precision f32|bf16` that
/// differs is refused rather than ignored (`auto` means "whatever the run uses").
fn check_resume_precision(args: &TrainArgs, cfg: &RunConfig) -> Result<()> {
    let run = cfg.precision;
    match args.precision {
        Some(p) if p != PrecisionArg::Auto && p.resolve(nf_engine::cpu::isa()) != run => {
            Err(user_error(
                ErrorCode::Mismatch,
                format!(
                    "the run trains in {run}; resuming it in {} would change its results",
                    p.resolve(nf_engine::cpu::isa())
                ),
                format!(
                    "drop --precision to resume in {run}, or start a new run with --precision {}",
                    p.resolve(nf_engine::cpu::isa())
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// A run made ready in memory (`nf_train::run::prepare`), with what the CLI records and
/// says about it. Nothing is written yet.
struct Prepared {
    run: run::Prepared,
    /// The base model's files with their sha256, for the audit entry.
    base_files: Vec<(PathBuf, String)>,
    /// The adapter a fresh LoRA run starts from, as an audit input.
    init_adapter: Option<Artifact>,
    sample: SampleCtx,
    /// Said once the run's events exist (bf16 emulated on this CPU).
    precision_warning: Option<String>,
}

fn prepare(
    cfg: RunConfig,
    run_dir: &Path,
    resume: bool,
    epochs: Option<f32>,
    home: &Path,
) -> Result<Prepared> {
    let spec = ModelSpec {
        model: cfg.model.clone(),
        tokenizer: cfg.tokenizer.clone(),
        adapter: None,
    };
    let Loaded {
        model, tokenizer, ..
    } = load(&spec, home)?;
    let (base_hash, base_files) = hash_model_files(&model.path)?;
    let mut init_artifact = None;
    let init = match cfg.init_adapter.clone().filter(|_| !resume) {
        Some(path) => {
            let adapter = nf_store::resolve::load_adapter(&path, &model.config)?;
            let artifact =
                nf_audit::Artifact::path("adapter", &path).map_err(crate::audit::audit_error)?;
            let sha256 = artifact.sha256.clone().unwrap_or_default();
            init_artifact = Some(artifact);
            Some(run::InitAdapter { adapter, sha256 })
        }
        None => None,
    };
    let epochs = epochs.filter(|_| !resume);
    let p = run::prepare(cfg, model, &tokenizer, base_hash, init, epochs, run_dir)?;
    for w in &p.warnings {
        eprintln!("warning: {w}");
    }
    let precision_warning = run::precision_warning(p.cfg.precision, nf_engine::cpu::isa());
    Ok(Prepared {
        sample: SampleCtx {
            tokenizer,
            prompt: p.cfg.sample_prompt.clone(),
        },
        run: p,
        base_files,
        init_adapter: init_artifact,
        precision_warning,
    })
}

fn run_inner(
    args: &TrainArgs,
    home: &Path,
    out: &mut Output,
    rec: &mut Record,
    lock: &mut Option<RunLock>,
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    // SIGTERM (what the studio's Stop and service managers send) asks the loop to stop
    // after the current step and save a checkpoint. It is installed first, so a stop that
    // comes while the model loads ends the run as interrupted at step 0 instead of killing
    // it half-started. Ctrl-C is taken over only once training begins (below): while the
    // model and data load there is nothing to save, and it should act at once.
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop))
        .context("installing the interrupt handler")?;
    let (cfg, run_dir, resume) = target(args, home)?;
    if resume {
        // The folder exists already: lock it before anything else, so a second process
        // never loads, let alone trains, a run that is running.
        *lock = Some(RunLock::acquire(&run_dir)?);
    }
    // A run stopped before its first checkpoint has nothing to resume from, but run.json
    // holds all it needs to start again: from step 0, in the same folder, saying so.
    // (Checkpoints that exist but fail to load still refuse, below: they may be the
    // user's only copy of the work.)
    let restart = resume
        && nf_train::checkpoint::list_checkpoints(&run_dir.join(run::CHECKPOINTS_DIR))?.is_empty();
    let Prepared {
        run:
            run::Prepared {
                cfg,
                mut trainer,
                total_params,
                seq_len,
                ..
            },
        base_files,
        init_adapter,
        sample: sample_model_ctx,
        precision_warning,
    } = prepare(cfg, &run_dir, resume && !restart, args.epochs, home)?;
    rec.inputs.extend(init_adapter);
    if !resume {
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("creating {}", run_dir.display()))?;
        let new_lock = RunLock::acquire(&run_dir)?;
        // Another process may have started a run here since `target` looked; the folder is
        // ours (and its events ours to append to) only when it still holds none.
        refuse_existing_run(&run_dir)?;
        *lock = Some(new_lock);
        cfg.write(&run_dir)?;
    }
    // A quick GEMM measurement (a few milliseconds) so the report can say what fraction of
    // this machine's peak the run achieved, in the arithmetic it trains in.
    let precision = trainer.model.precision;
    let isa = nf_engine::cpu::isa();
    trainer.peak_gflops =
        nf_train::efficiency::gemm_peak_gflops(precision, nf_train::efficiency::QUICK_SIZE, 3);
    let mut warnings = Vec::new();
    let mut resumed_from = None;
    if restart {
        warnings.push(format!(
            "{} has no checkpoint yet (it stopped before the first save): training again from step 0 in the same folder",
            run_dir.display()
        ));
        resumed_from = Some(0);
    } else if resume {
        let (step, w) = trainer.resume().map_err(|e| match e {
            nf_train::error::TrainError::Mismatch { .. } => user_error(
                ErrorCode::Mismatch,
                e.to_string(),
                "resume with the same model, data and settings, or start a new run",
            ),
            e => user_error(
                ErrorCode::BadCheckpoint,
                e.to_string(),
                "start a new run, or restore the checkpoint folder",
            ),
        })?;
        warnings = w;
        resumed_from = Some(step);
    }
    // On the record before the first step.
    let mut start = rec.clone().event(if resume { "resume" } else { "start" });
    start.inputs = base_files
        .iter()
        .map(|(p, h)| Artifact::new("model", p, Some(h.clone())))
        .collect();
    if let Some(t) = cfg.tokenizer.as_ref().filter(|t| t.is_file()) {
        start.inputs.push(Artifact::file("tokenizer", t)?);
    }
    for d in &cfg.datasets {
        start.inputs.push(Artifact::new(
            "dataset",
            &d.path,
            Some(d.manifest_sha256.clone()),
        ));
    }
    let in_dataset = |p: &Path| {
        cfg.datasets
            .iter()
            .any(|d| p.parent() == Some(d.path.as_path()))
    };
    for (kind, list) in [("data", &cfg.data), ("val-data", &cfg.val_data)] {
        for p in list.iter().filter(|p| !in_dataset(p)) {
            start.inputs.push(Artifact::file(kind, p)?);
        }
    }
    if let Some(step) = resumed_from.filter(|s| *s > 0) {
        start.inputs.push(checkpoint_artifact(&run_dir, step)?);
    }
    start.outputs = vec![Artifact::file("run", run_dir.join(run::RUN_FILE))?];
    let details = serde_json::json!({
        "run_dir": run_dir.display().to_string(),
        "method": cfg.method,
        "steps": cfg.options.steps,
        "start_step": trainer.step(),
        "config_sha256": hashes_for_audit(&cfg).0,
        "base_model_sha256": hashes_for_audit(&cfg).1,
        "data_sha256": hashes_for_audit(&cfg).2,
    });
    start.details = Some(details.clone());
    crate::audit::append(home, start)?;
    rec.inputs = vec![Artifact::file("run", run_dir.join(run::RUN_FILE))?];
    rec.event = Some("end".into());
    rec.details = Some(details);
    let mut sink = RunSink {
        file: run::open_events(&run_dir)?,
        out,
        progress: Progress {
            tty: std::io::stderr().is_terminal(),
            total: cfg.options.steps,
            start: Instant::now(),
            start_step: trainer.step(),
            last_val: None,
        },
    };
    if let Some(w) = precision_warning {
        // In text mode the event itself is printed on stderr; with --json stderr gets it
        // too, as the logs' one line.
        if sink.out.is_json() {
            eprintln!("warning: {w}");
        }
        warnings.insert(0, w);
    }
    for w in warnings {
        sink.emit(Event::Warning { message: w });
    }
    let p = &trainer.model.params;
    sink.emit(Event::TrainStart {
        run_dir: run_dir.display().to_string(),
        method: cfg.method.name().into(),
        trainable_params: p.len() as u64,
        total_params: total_params as u64,
        steps: cfg.options.steps,
        start_step: trainer.step(),
        batch_size: cfg.batch_size as u64,
        seq_len: seq_len as u64,
        grad_accum: cfg.options.grad_accum as u64,
        tokens_per_step: (cfg.batch_size * seq_len * cfg.options.grad_accum) as u64,
        train_tokens: trainer.train_tokens() as u64,
        val_tokens: trainer.val_tokens() as u64,
        resumed: resume,
        precision: precision.name().into(),
        isa: isa.name().into(),
        kernel: run::kernel_of(precision, isa),
    });
    // SIGINT now stops after the current step with a checkpoint, like SIGTERM; a second
    // SIGINT kills the process as usual.
    signal_hook::flag::register_conditional_shutdown(
        signal_hook::consts::SIGINT,
        130,
        Arc::clone(&stop),
    )
    .context("installing the interrupt handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("installing the interrupt handler")?;
    let start = Instant::now();
    let start_step = trainer.step();
    let mut sample = |m: &TrainModel| sample_model_ctx.sample(m);
    let result = trainer.run(&stop, &mut |e| sink.emit(e), Some(&mut sample));
    let (summary, ms, compute_s) = result.map_err(|e| train_failed(e, &run_dir))?;
    rec.event = Some(
        match summary.reason.name() {
            "completed" => "finish",
            "interrupted" => "interrupt",
            "early_stopped" => "early_stop",
            other => other,
        }
        .into(),
    );
    let output = run::save_final(&trainer, &cfg, &run_dir)?;
    rec.outputs.push(Artifact::tree(
        if output.ends_with("adapter") {
            "adapter"
        } else {
            "model"
        },
        &output,
    )?);
    if summary.final_step > 0
        && let Ok(c) = checkpoint_artifact(&run_dir, summary.final_step)
    {
        rec.outputs.push(c);
    }
    if let Some(d) = rec.details.as_mut() {
        d["final_step"] = summary.final_step.into();
        d["final_loss"] = summary.final_loss.into();
        d["val_loss"] = summary.val_loss.into();
    }
    let report = run::done_report(
        &mut trainer,
        &cfg,
        seq_len,
        run::Outcome {
            summary,
            ms: ms.clone(),
            compute_s,
            wall_s: start.elapsed().as_secs_f64(),
            start_step,
            output,
        },
    );
    run::write_report(&run_dir, &report)?;
    rec.outputs
        .push(Artifact::file("report", run_dir.join(run::REPORT_FILE))?);
    if !sink.out.is_json() {
        print_report(&report, &ms);
    }
    sink.emit(report);
    Ok(())
}

/// `--dry-run`: prepares the run exactly as a real one would, times one real training
/// micro-batch, and reports the plan (`train.plan`; a summary on stderr in text mode).
/// Nothing is written: no run folder, no events file, no audit entry.
fn plan(args: &TrainArgs, home: &Path, out: &mut Output) -> Result<()> {
    let (cfg, run_dir, _) = target(args, home)?;
    let mut p = prepare(cfg, &run_dir, false, args.epochs, home)?;
    if let Some(w) = &p.precision_warning {
        eprintln!("warning: {w}");
    }
    let plan = run::plan(&mut p.run).map_err(|e| {
        user_error(
            ErrorCode::TrainFailed,
            e.to_string(),
            "check the data and settings; a real run would fail the same way",
        )
    })?;
    if !out.is_json() {
        print_plan(&plan);
    }
    out.event(|| Event::TrainPlan(Box::new(plan)))?;
    Ok(())
}

struct SampleCtx {
    tokenizer: nf_tokenizer::Tokenizer,
    prompt: String,
}

impl SampleCtx {
    /// A short greedy continuation of the sample prompt with the current weights.
    fn sample(&self, m: &TrainModel) -> Option<(String, String)> {
        let text = run::sample_text(m, &self.tokenizer, &self.prompt)?;
        Some((self.prompt.clone(), text))
    }
}

/// The config, base-model and data hashes of a run, for its audit details.
fn hashes_for_audit(cfg: &RunConfig) -> (String, String, String) {
    cfg.hashes.as_ref().map_or_else(Default::default, |h| {
        (h.config.clone(), h.base_model.clone(), h.data.clone())
    })
}

/// A checkpoint as an artifact: its folder, hashed by its `COMPLETE` marker (which lists
/// the sha256 of every file in it).
fn checkpoint_artifact(run_dir: &Path, step: u64) -> Result<Artifact> {
    let dir = run_dir
        .join(run::CHECKPOINTS_DIR)
        .join(format!("step-{step}"));
    let marker = dir.join(nf_train::checkpoint::MARKER_FILE);
    Ok(Artifact::new(
        "checkpoint",
        &dir,
        Some(nf_audit::sha256_file(&marker)?),
    ))
}

fn resolve(a: &TrainArgs, home: &Path) -> Result<RunConfig> {
    if a.data.is_empty() {
        return Err(user_error(
            ErrorCode::BadInput,
            "no training data given",
            "pass --data FILE... (text files or .bin token shards)",
        ));
    }
    // A dataset made by `ingest` trains on its train.bin and validates on its val.bin
    // (unless --val says otherwise).
    let (data, dataset_val, datasets) = nf_store::datasets::expand_datasets(&a.data, home)?;
    let val = if a.val.is_empty() {
        dataset_val
    } else {
        a.val.clone()
    };
    for p in data.iter().chain(&val) {
        if !p.exists() {
            return Err(user_error(
                ErrorCode::NotFound,
                format!("data not found: {}", p.display()),
                "check the path given to --data / --val",
            ));
        }
    }
    let model = a
        .model
        .as_deref()
        .ok_or_else(|| user_error(ErrorCode::BadInput, "no --model given", "pass --model PATH"))?;
    let model = nf_store::resolve::resolve_model_path(model, home)?;
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let method = if a.full {
        RunMethod::Full
    } else {
        RunMethod::Lora
    };
    let lr = a.lr.unwrap_or(if a.full { 1e-4 } else { 2e-3 });
    let cfg = RunConfig {
        neuralforge_version: env!("CARGO_PKG_VERSION").into(),
        model: abs(&model),
        tokenizer: a.tokenizer.as_deref().map(abs),
        data: data.iter().map(|p| abs(p)).collect(),
        val_data: val.iter().map(|p| abs(p)).collect(),
        datasets,
        val_fraction: a.val_fraction,
        method,
        lora_rank: a.lora_rank,
        lora_alpha: a.lora_alpha.unwrap_or(2.0 * a.lora_rank as f32),
        lora_dropout: a.lora_dropout,
        lora_targets: a.lora_targets.clone(),
        batch_size: a.batch_size,
        seq_len: a.seq_len,
        recompute: a.recompute,
        cross_example_attention: a.cross_example_attention,
        init_adapter: a.adapter.as_deref().map(abs),
        init_adapter_sha256: None,
        // `f32` keeps an f32 base as loaded: recorded as such, so both spell one run.
        base_dtype: base_dtype(&a.base_dtype)?,
        precision: a
            .precision
            .unwrap_or(PrecisionArg::Auto)
            .resolve(nf_engine::cpu::isa()),
        sample_prompt: a.sample_prompt.clone(),
        options: TrainOptions {
            steps: a.steps,
            grad_accum: a.grad_accum,
            lr,
            min_lr: a.min_lr.unwrap_or(lr * 0.1),
            warmup: a.warmup,
            schedule: a.schedule.parse::<Schedule>().map_err(|e| {
                user_error(
                    ErrorCode::BadInput,
                    e.to_string(),
                    "--schedule is cosine, linear or constant",
                )
            })?,
            weight_decay: a.weight_decay,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            clip: a.clip,
            eval_every: a.eval_every,
            eval_batches: a.eval_batches,
            sample_every: a.sample_every,
            save_every: a.save_every,
            keep_last: a.keep,
            seed: a.seed,
            patience: a.patience,
            max_bad_steps: 3,
            sampling: a.sampling.parse::<Sampling>().map_err(|e| {
                user_error(ErrorCode::BadInput, e, "--sampling is random or sequential")
            })?,
        },
        hashes: None,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// The error a failed training loop ends with. A file it could not write (a full disk while
/// saving a checkpoint) says so, and that the run resumes from its last checkpoint; any
/// other failure (divergence, bad data) points at the warnings printed before it.
fn train_failed(e: nf_train::TrainError, run_dir: &Path) -> anyhow::Error {
    use nf_train::{CheckpointError, TrainError};
    let io = matches!(
        e,
        TrainError::Io { .. }
            | TrainError::Format(nf_formats::FormatError::Io { .. })
            | TrainError::Checkpoint(
                CheckpointError::Io { .. }
                    | CheckpointError::Format(nf_formats::FormatError::Io { .. })
            )
    );
    if io {
        user_error(
            ErrorCode::Io,
            e.to_string(),
            format!(
                "free disk space (or fix permissions) where the run writes, then `neuralforge train --resume {}` continues from its last checkpoint",
                run_dir.display()
            ),
        )
    } else {
        user_error(
            ErrorCode::TrainFailed,
            e.to_string(),
            "see the warnings above; lower --lr or check the data",
        )
    }
}
