//! `neuralforge train` through the real binary: exact resume after SIGKILL, a corrupt
//! checkpoint passed over, refusal to resume on changed data, and generation with the
//! trained adapter; the run lock, failures recorded in `events.ndjson`, and `--dry-run`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nf_testkit::cli::p;
use nf_testkit::{require_assets, temp_dir};

fn bin(home: &Path) -> Command {
    nf_testkit::neuralforge!(home)
}

/// The flags of the small LoRA run every test here uses (stories260K on a TinyStories
/// sample, 16 steps, a checkpoint every 4).
fn train_args(assets: &Path, data: &Path, out: &Path) -> Vec<String> {
    [
        "--json",
        "--threads",
        "1",
        "train",
        "--model",
        p(&assets.join("llama2c/stories260K.bin")),
        "--tokenizer",
        p(&assets.join("llama2c/tok512.bin")),
        "--data",
        p(data),
        "--steps",
        "16",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--save-every",
        "4",
        "--eval-every",
        "8",
        "--keep",
        "10",
        "--lora-rank",
        "4",
        "--lora-dropout",
        "0.1",
        "--out",
        p(out),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Changes the step count of [`train_args`].
fn set_steps(args: &mut [String], steps: u64) {
    let i = args.iter().position(|a| a == "--steps").unwrap();
    args[i + 1] = steps.to_string();
}

/// Sends `signal` (e.g. `-INT`) to a child, as a user's kill would.
fn send_signal(child: &std::process::Child, signal: &str) {
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A finished 4-step run in a fresh temporary home: the home, the data file, the run
/// folder and the flags it ran with.
fn finished_run(assets: &Path, tag: &str) -> (PathBuf, PathBuf, PathBuf, Vec<String>) {
    let tmp = temp_dir(tag);
    let data = data_file(assets, &tmp);
    let run = tmp.join("run");
    let mut args = train_args(assets, &data, &run);
    set_steps(&mut args, 4);
    run_ok(bin(&tmp).args(&args));
    (tmp, data, run, args)
}

/// A child process killed when dropped, so a test that fails halfway does not leave a
/// 100000-step training running on the machine.
struct Running(std::process::Child);

impl std::ops::Deref for Running {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a run of 100000 steps (far more than any test waits for) in a fresh temporary
/// home; returns the home, the run folder and the child.
fn long_train(assets: &Path, tag: &str, stdout: Stdio) -> (PathBuf, PathBuf, Running) {
    let tmp = temp_dir(tag);
    let data = data_file(assets, &tmp);
    let run = tmp.join("run");
    let mut args = train_args(assets, &data, &run);
    set_steps(&mut args, 100000);
    let child = bin(&tmp)
        .args(&args)
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (tmp, run, Running(child))
}

fn data_file(assets: &Path, dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    let f = dir.join("stories.txt");
    std::fs::write(&f, &text[..12_000]).unwrap();
    f
}

/// Loss of each step in a run's events.ndjson (the last report of a step wins, since a
/// resumed run repeats the steps after its checkpoint).
fn step_losses(run: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("events.ndjson")).unwrap();
    let mut by_step = std::collections::BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["type"] == "train.step" {
            by_step.insert(v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap());
        }
    }
    by_step.into_iter().collect()
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn sigkill_and_resume_give_bitwise_identical_training() {
    let assets = require_assets!();
    let tmp = temp_dir("train-resume");
    let data = data_file(&assets, &tmp);
    let straight = tmp.join("straight");
    run_ok(bin(&tmp).args(train_args(&assets, &data, &straight)));

    // Second run: killed with SIGKILL right after its step-8 checkpoint is complete.
    let killed = tmp.join("killed");
    let mut child = bin(&tmp)
        .args(train_args(&assets, &data, &killed))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["type"] == "checkpoint.saved" && v["step"] == 8 {
            child.kill().unwrap(); // SIGKILL: no chance to save anything more
            break;
        }
    }
    child.wait().unwrap();
    assert!(
        !killed.join("adapter").exists(),
        "the killed run must not have finished"
    );

    // Damage the newest checkpoint's weights in place of a half-written one: resume must
    // detect it, say so, and start from the one before.
    let mut ckpts: Vec<PathBuf> = std::fs::read_dir(killed.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("step-")
        })
        .collect();
    ckpts.sort_by_key(|p| {
        p.file_name().unwrap().to_string_lossy()[5..]
            .parse::<u64>()
            .unwrap()
    });
    let newest = ckpts.last().unwrap().clone();
    let newest_step: u64 = newest.file_name().unwrap().to_string_lossy()[5..]
        .parse()
        .unwrap();
    let w = newest.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&w, bytes).unwrap();

    let out = run_ok(bin(&tmp).args(["--json", "--threads", "1", "train", "--resume", p(&killed)]));
    assert!(
        out.lines()
            .any(|l| l.contains("\"type\":\"warning\"") && l.contains("skipped checkpoint")),
        "no warning about the corrupt checkpoint in:\n{out}"
    );
    let start = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["type"] == "train.start")
        .unwrap();
    assert!(
        start["start_step"].as_u64().unwrap() < newest_step,
        "resumed from the corrupt checkpoint"
    );

    // Same losses at every step, and the same adapter bytes.
    assert_eq!(step_losses(&straight), step_losses(&killed));
    assert_eq!(step_losses(&straight).len(), 16);
    let a = std::fs::read(straight.join("adapter/adapter_model.safetensors")).unwrap();
    let b = std::fs::read(killed.join("adapter/adapter_model.safetensors")).unwrap();
    // The metadata names the run folder, which differs; compare the tensor bytes.
    let tail = |v: &[u8]| {
        let n = u64::from_le_bytes(v[..8].try_into().unwrap()) as usize;
        v[8 + n..].to_vec()
    };
    assert!(tail(&a) == tail(&b), "adapters differ after resume");

    // The finished run generates with its adapter, through --model RUN_DIR.
    let text = run_ok(bin(&tmp).args([
        "generate",
        "--model",
        p(&killed),
        "--prompt",
        "Once upon a time",
        "--temperature",
        "0",
        "-n",
        "16",
    ]));
    assert!(!text.trim().is_empty());
    // The same through the base model plus --adapter.
    let via_adapter = run_ok(bin(&tmp).args([
        "generate",
        "--model",
        p(&assets.join("llama2c/stories260K.bin")),
        "--tokenizer",
        p(&assets.join("llama2c/tok512.bin")),
        "--adapter",
        p(&killed),
        "--prompt",
        "Once upon a time",
        "--temperature",
        "0",
        "-n",
        "16",
    ]));
    assert_eq!(text, via_adapter);
}

#[test]
fn resume_refuses_changed_data_and_bad_flags_fail_cleanly() {
    let assets = require_assets!();
    let (tmp, data, run, args) = finished_run(&assets, "train-refuse");
    std::fs::write(
        &data,
        "Different text now. Once upon a time there was a cat.",
    )
    .unwrap();
    let o = bin(&tmp)
        .args(["train", "--resume", p(&run)])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error:") && err.contains("hint:"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Same run folder again without --resume: refused, nothing overwritten.
    let before = std::fs::read(run.join("run.json")).unwrap();
    let o = bin(&tmp).args(&args).output().unwrap();
    assert!(!o.status.success());
    assert_eq!(before, std::fs::read(run.join("run.json")).unwrap());

    // An empty data file and a too-long window: one error line, no panic.
    let empty = tmp.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let o = bin(&tmp)
        .args([
            "train",
            "--model",
            p(&assets.join("llama2c/stories260K.bin")),
            "--tokenizer",
            p(&assets.join("llama2c/tok512.bin")),
            "--data",
            p(&empty),
            "--out",
            p(&tmp.join("r2")),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("error:") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn sigint_saves_a_checkpoint_and_exits_cleanly() {
    let assets = require_assets!();
    let (_tmp, _run, mut child) = long_train(&assets, "train-sigint", Stdio::piped());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["type"] == "train.step" && v["step"] == 6 {
            send_signal(&child, "-INT");
            break;
        }
    }
    let rest: Vec<serde_json::Value> = lines
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "interrupted run exited with {status}");
    let done = rest
        .iter()
        .find(|v| v["type"] == "train.done")
        .expect("train.done");
    assert_eq!(done["reason"], "interrupted");
    let last = done["final_step"].as_u64().unwrap();
    assert!((6..100000).contains(&last));
    let saved = rest
        .iter()
        .any(|v| v["type"] == "checkpoint.saved" && v["step"].as_u64() == Some(last));
    assert!(saved, "no checkpoint at the interrupted step {last}");
}

/// The events of a run's events.ndjson, parsed: its complete lines (a running trainer may
/// be halfway through writing the last one).
fn run_events(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("events.ndjson")).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |i| &text[..i]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Entries in the home's audit log (0 when it has none yet).
fn audit_entries(home: &Path) -> usize {
    std::fs::read_to_string(nf_audit::audit_dir(home).join(nf_audit::LOG_FILE))
        .map_or(0, |t| t.lines().filter(|l| !l.trim().is_empty()).count())
}

#[test]
fn a_running_train_holds_its_run_lock() {
    use std::fs::{File, TryLockError};
    let assets = require_assets!();
    // Output to /dev/null: a pipe nobody reads would fill and block the child, which then
    // could not act on SIGTERM; the test watches the run folder instead, as the studio does.
    let (tmp, run, mut child) = long_train(&assets, "train-lock", Stdio::null());
    let pid = child.id().to_string();
    let lock = run.join("train.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let has_pid = std::fs::read_to_string(&lock).is_ok_and(|t| t == format!("{pid}\n"));
        if has_pid && run_events(&run).iter().any(|v| v["type"] == "train.step") {
            break;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the run never showed its pid in train.lock and a train.step");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A reader's liveness check: a shared lock on a read-only handle would block.
    let reader = File::open(&lock).unwrap();
    assert!(matches!(
        reader.try_lock_shared(),
        Err(TryLockError::WouldBlock)
    ));

    // A second process refuses the running run, naming the pid, and leaves it alone.
    let o = bin(&tmp)
        .args(["--json", "train", "--resume", p(&run)])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("is being trained by another process (pid {pid})")),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("\"code\":\"running\""), "{stdout}");
    assert!(
        !run_events(&run).iter().any(|v| v["type"] == "error"),
        "the refused process wrote into the running run's events"
    );

    send_signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "terminated run exited with {status}");
    // The process is gone, and with it the lock.
    reader
        .try_lock_shared()
        .expect("the lock is free after exit");
    reader.unlock().unwrap();
    File::open(&lock)
        .unwrap()
        .try_lock()
        .expect("an exclusive lock is free after exit");
}

#[test]
fn a_failed_run_records_its_error_in_events() {
    let assets = require_assets!();
    let (tmp, data, run, _) = finished_run(&assets, "train-failed");
    // The data shrinks below one window: the resume loads it and fails after taking the
    // run folder over.
    std::fs::write(&data, "Once upon a time there was a cat.").unwrap();
    let o = bin(&tmp)
        .args(["--json", "train", "--resume", p(&run)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let events = run_events(&run);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["code"], "bad_input");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("fewer than one window"),
        "{last}"
    );
    assert!(last["hint"].is_string());
    // The same event reaches stdout once, from main, not a second time from the run.
    let stdout = String::from_utf8(o.stdout).unwrap();
    let errors: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{stdout}");
    assert_eq!(errors[0]["message"], last["message"]);
}

#[test]
fn dry_run_plans_without_writing_anything() {
    let assets = require_assets!();
    let tmp = temp_dir("train-plan");
    let data = data_file(&assets, &tmp);
    let run = tmp.join("run");
    let mut args = train_args(&assets, &data, &run);
    args.push("--dry-run".into());
    let audit_before = audit_entries(&tmp);
    let out = run_ok(bin(&tmp).args(&args));
    let plan = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["type"] == "train.plan")
        .unwrap_or_else(|| panic!("no train.plan in:\n{out}"));
    assert_eq!(plan["method"], "lora");
    let trainable = plan["trainable_params"].as_u64().unwrap();
    assert!(trainable > 0 && trainable < plan["total_params"].as_u64().unwrap());
    assert_eq!(plan["steps"], 16);
    assert_eq!(plan["tokens_per_step"], 2 * 32);
    let mem = &plan["memory"];
    let part = |k: &str| mem[k].as_u64().unwrap();
    assert!(part("weights") > 0 && part("activations") > 0);
    assert_eq!(part("trainable"), trainable * 4);
    assert_eq!(
        part("total"),
        part("weights")
            + part("trainable")
            + part("gradients")
            + part("optimizer")
            + part("activations")
    );
    assert!(plan["flops_per_step"].as_f64().unwrap() > 0.0);
    let ms = plan["ms_per_step"].as_f64().unwrap();
    assert!(ms > 0.0);
    assert!(plan["estimated_s"].as_f64().unwrap() >= ms * 16.0 / 1e3);
    assert!(!run.exists(), "a dry run created its run folder");
    assert_eq!(audit_entries(&tmp), audit_before, "a dry run was audited");

    // Text mode: a short summary on stderr, and still nothing written.
    args.retain(|a| a != "--json");
    let o = bin(&tmp).args(&args).output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("plan lora:") && err.contains("ms/step"),
        "{err}"
    );
    assert!(!run.exists());
    assert_eq!(audit_entries(&tmp), audit_before);

    // A dry run is never a resume.
    let o = bin(&tmp)
        .args(["train", "--dry-run", "--resume", p(&run)])
        .output()
        .unwrap();
    assert!(!o.status.success());
}

/// A run stopped before its first checkpoint resumes by starting again from step 0 in the
/// same folder (it used to refuse: "no complete checkpoint"), says so, and trains exactly
/// as the original did. Checkpoints that exist but are damaged still refuse.
#[test]
fn resume_before_the_first_checkpoint_starts_again_from_step_0() {
    let assets = require_assets!();
    let (tmp, _data, run, _args) = finished_run(&assets, "train-restart");
    let first = step_losses(&run);
    std::fs::remove_dir_all(run.join("checkpoints")).unwrap();
    std::fs::remove_file(run.join("events.ndjson")).unwrap();
    let out = run_ok(bin(&tmp).args(["--json", "train", "--resume", p(&run)]));
    assert!(
        out.contains("no checkpoint yet") && out.contains("from step 0"),
        "{out}"
    );
    assert_eq!(step_losses(&run), first);
    // A damaged checkpoint is not silently trained over.
    let ckpts = nf_train::checkpoint::list_checkpoints(&run.join("checkpoints")).unwrap();
    for (_, dir) in &ckpts {
        for f in std::fs::read_dir(dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension()
                .is_some_and(|e| e == "safetensors" || e == "bin")
            {
                std::fs::write(&f, b"damaged").unwrap();
            }
        }
    }
    let o = bin(&tmp)
        .args(["train", "--resume", p(&run)])
        .output()
        .unwrap();
    assert!(!o.status.success(), "resumed over damaged checkpoints");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no complete checkpoint"), "{err}");
}
