//! `neuralforge train` through the real binary: exact resume after SIGKILL, a corrupt
//! checkpoint passed over, refusal to resume on changed data, and generation with the
//! trained adapter.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nf_testkit::{require_assets, temp_dir};

fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_neuralforge"));
    c.env("NEURALFORGE_HOME", home);
    c
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
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
    let tmp = temp_dir("train-refuse");
    let data = data_file(&assets, &tmp);
    let run = tmp.join("run");
    let mut args = train_args(&assets, &data, &run);
    let steps = args.iter().position(|a| a == "--steps").unwrap();
    args[steps + 1] = "4".into();
    run_ok(bin(&tmp).args(&args));
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
    let tmp = temp_dir("train-sigint");
    let data = data_file(&assets, &tmp);
    let run = tmp.join("run");
    let mut args = train_args(&assets, &data, &run);
    let steps = args.iter().position(|a| a == "--steps").unwrap();
    args[steps + 1] = "100000".into();
    let mut child = bin(&tmp)
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["type"] == "train.step" && v["step"] == 6 {
            let ok = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
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
