//! Mixed precision through the real binary: `train --precision f32|bf16` both train on any
//! machine (bf16 emulated where the CPU lacks it) and say what ran (`train.start`,
//! `report.json`, `train.plan`); `auto` follows the instruction-set tier `NF_ISA` caps;
//! a resume keeps the run's precision and refuses to switch; a bad `NF_ISA` is refused
//! cleanly; `bench peak` and `bench train` report precision and tier.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nf_testkit::cli::{events, p};
use nf_testkit::{require_assets, temp_dir};
use serde_json::Value;

const TIERS: [&str; 5] = ["baseline", "avx2", "avx512", "avx512bf16", "amx"];

/// The binary with an `NF_ISA` the test run has passes it on, so `NF_ISA=avx2 cargo test`
/// checks the emulated bf16 path on a machine with native bf16.
fn bin(home: &Path) -> Command {
    nf_testkit::neuralforge!(home)
}

/// A 4-step LoRA run of stories260K, a checkpoint every 2 steps.
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
        "4",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--save-every",
        "2",
        "--eval-every",
        "4",
        "--lora-rank",
        "4",
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

fn find<'a>(events: &'a [Value], kind: &str) -> &'a Value {
    events
        .iter()
        .find(|v| v["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {events:?}"))
}

fn ok(o: Output) -> Vec<Value> {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    events(&o.stdout)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The user-facing failure shape: exit 1, `error:` and `hint:` lines, no panic, and the
/// `error` event's code.
fn failed(o: &Output) -> (String, String) {
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        err.contains("error:") && err.contains("hint:") && !err.contains("panicked"),
        "{err}"
    );
    let code = events(&o.stdout)
        .iter()
        .find(|v| v["type"] == "error")
        .map(|v| v["code"].as_str().unwrap().to_string())
        .unwrap_or_default();
    (err, code)
}

#[test]
fn f32_and_bf16_both_train_and_say_so() {
    let assets = require_assets!();
    let tmp = temp_dir("precision-both");
    let data = data_file(&assets, &tmp);
    let mut losses = Vec::new();
    for precision in ["f32", "bf16"] {
        let run = tmp.join(precision);
        let mut args = train_args(&assets, &data, &run);
        args.extend(["--precision".into(), precision.into()]);
        let o = bin(&tmp).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let ev = ok(o);
        let start = find(&ev, "train.start");
        assert_eq!(start["precision"], precision, "{start}");
        let isa = start["isa"].as_str().unwrap();
        assert!(TIERS.contains(&isa), "{start}");
        // bf16 below avx512 is emulated slowly and says so, once, on stderr; AVX-512
        // without AVX512_BF16 runs the FMA kernel, which is faster than f32.
        let emulated = precision == "bf16" && TIERS.iter().position(|t| *t == isa) < Some(2);
        assert_eq!(
            stderr.matches("is emulated").count(),
            usize::from(emulated),
            "{stderr}"
        );
        // bf16 runs name their micro-kernel; f32 runs have none.
        let kernels = ["vdpbf16ps", "avx512-fma", "tdpbf16ps", "portable"];
        match precision {
            "bf16" => assert!(
                kernels.contains(&start["kernel"].as_str().unwrap()),
                "{start}"
            ),
            _ => assert!(start.get("kernel").is_none(), "{start}"),
        }
        let done = find(&ev, "train.done");
        assert_eq!(
            (&done["precision"], &done["isa"], done.get("kernel")),
            (&start["precision"], &start["isa"], start.get("kernel"))
        );
        let report = read_json(&run.join("report.json"));
        assert_eq!(report["precision"], precision);
        assert_eq!(report["isa"], isa);
        if let Some(u) = report["utilization"].as_f64() {
            assert!((0.0..=1.0).contains(&u), "{report}");
            assert!(report["peak_gflops"].as_f64().unwrap() > 0.0, "{report}");
        }
        assert!(report["peak_under_measured"].is_boolean(), "{report}");
        assert_eq!(read_json(&run.join("run.json"))["precision"], precision);
        let loss = done["final_loss"].as_f64().unwrap();
        assert!(loss.is_finite(), "{done}");
        losses.push(loss);
    }
    // bf16 rounds the GEMM operands only: the loss stays close to f32's.
    assert!(
        (losses[0] - losses[1]).abs() < 0.05 * losses[0],
        "f32 {} vs bf16 {}",
        losses[0],
        losses[1]
    );

    // The plan names them too.
    let mut args = train_args(&assets, &data, &tmp.join("plan"));
    args.extend(["--precision".into(), "bf16".into(), "--dry-run".into()]);
    let ev = ok(bin(&tmp).args(&args).output().unwrap());
    let plan = find(&ev, "train.plan");
    assert_eq!(plan["precision"], "bf16");
    assert!(TIERS.contains(&plan["isa"].as_str().unwrap()), "{plan}");
}

#[test]
fn auto_follows_the_tier_nf_isa_allows() {
    let assets = require_assets!();
    let tmp = temp_dir("precision-auto");
    let data = data_file(&assets, &tmp);
    let run = tmp.join("run");
    let mut args = train_args(&assets, &data, &run);
    let i = args.iter().position(|a| a == "--steps").unwrap();
    args[i + 1] = "1".into();
    // Baseline never multiplies bf16 natively, so auto (the default) trains in f32.
    let ev = ok(bin(&tmp)
        .env("NF_ISA", "baseline")
        .args(&args)
        .output()
        .unwrap());
    let start = find(&ev, "train.start");
    assert_eq!(
        (&start["precision"], &start["isa"]),
        (&"f32".into(), &"baseline".into())
    );
    assert_eq!(read_json(&run.join("run.json"))["precision"], "f32");
}

#[test]
fn a_resume_keeps_the_runs_precision() {
    let assets = require_assets!();
    let tmp = temp_dir("precision-resume");
    let data = data_file(&assets, &tmp);
    let run = tmp.join("bf16");
    let mut args = train_args(&assets, &data, &run);
    args.extend(["--precision".into(), "bf16".into()]);
    ok(bin(&tmp).args(&args).output().unwrap());

    // Without --precision (or with auto) the run goes on in bf16, whatever this CPU's
    // auto would pick.
    for extra in [&[][..], &["--precision", "auto"][..]] {
        let ev = ok(bin(&tmp)
            .env("NF_ISA", "baseline")
            .args(["--json", "train", "--resume", p(&run)])
            .args(extra)
            .output()
            .unwrap());
        assert_eq!(find(&ev, "train.start")["precision"], "bf16");
    }
    // An explicit other precision is refused, not ignored.
    let o = bin(&tmp)
        .args(["--json", "train", "--resume", p(&run), "--precision", "f32"])
        .output()
        .unwrap();
    let (err, code) = failed(&o);
    assert_eq!(code, "mismatch");
    assert!(err.contains("trains in bf16"), "{err}");
    // A run.json edited to another precision no longer matches its checkpoints.
    let cfg = std::fs::read_to_string(run.join("run.json")).unwrap();
    std::fs::write(
        run.join("run.json"),
        cfg.replace("\"precision\": \"bf16\"", "\"precision\": \"f32\""),
    )
    .unwrap();
    let o = bin(&tmp)
        .args(["--json", "train", "--resume", p(&run)])
        .output()
        .unwrap();
    assert_eq!(failed(&o).1, "mismatch");

    // A run from before precision was recorded (no field: it trained in f32) still
    // resumes, in f32.
    let old = tmp.join("old");
    let mut args = train_args(&assets, &data, &old);
    args.extend(["--precision".into(), "f32".into()]);
    ok(bin(&tmp).args(&args).output().unwrap());
    let mut cfg = read_json(&old.join("run.json"));
    cfg.as_object_mut().unwrap().remove("precision");
    std::fs::write(old.join("run.json"), cfg.to_string()).unwrap();
    let ev = ok(bin(&tmp)
        .args(["--json", "train", "--resume", p(&old)])
        .output()
        .unwrap());
    assert_eq!(find(&ev, "train.start")["precision"], "f32");
}

#[test]
fn a_bad_nf_isa_is_refused_cleanly() {
    let tmp = temp_dir("precision-isa");
    let o = bin(&tmp)
        .env("NF_ISA", "pentium4")
        .args(["--json", "bench", "peak", "--size", "32", "--reps", "1"])
        .output()
        .unwrap();
    let (err, code) = failed(&o);
    assert_eq!(code, "bad_input");
    assert!(err.starts_with("error: NF_ISA=`pentium4`"), "{err}");
    for tier in TIERS {
        assert!(err.contains(tier), "the hint should list {tier}: {err}");
    }
    assert!(
        !events(&o.stdout)
            .iter()
            .any(|v| v["type"] == "bench.result"),
        "nothing ran"
    );
    // A valid one (any case) is taken.
    let o = bin(&tmp)
        .env("NF_ISA", "BASELINE")
        .args(["--json", "bench", "peak", "--size", "32", "--reps", "1"])
        .output()
        .unwrap();
    assert!(ok(o).iter().all(|v| v["isa"] == "baseline"));
}

#[test]
fn bench_peak_measures_both_peaks() {
    let tmp = temp_dir("precision-peak");
    let ev = ok(bin(&tmp)
        .args(["--json", "bench", "peak", "--size", "64", "--reps", "2"])
        .output()
        .unwrap());
    let results: Vec<&Value> = ev.iter().filter(|v| v["type"] == "bench.result").collect();
    assert_eq!(results.len(), 2, "{ev:?}");
    let by = |precision: &str| {
        *results
            .iter()
            .find(|v| v["precision"] == precision)
            .unwrap_or_else(|| panic!("no {precision} peak in {results:?}"))
    };
    let (f32_peak, bf16_peak) = (by("f32"), by("bf16"));
    assert_eq!(f32_peak["test"], "sgemm64");
    assert_eq!(bf16_peak["test"], "bf16gemm64");
    for r in [f32_peak, bf16_peak] {
        assert_eq!(r["unit"], "GFLOP/s");
        assert!(r["value"].as_f64().unwrap() > 0.0, "{r}");
        assert!(TIERS.contains(&r["isa"].as_str().unwrap()), "{r}");
    }
    // Text mode names the tier and both.
    let o = bin(&tmp)
        .args(["bench", "peak", "--size", "32", "--reps", "1"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("isa: ") && text.contains("sgemm32") && text.contains("bf16gemm32"),
        "{text}"
    );
}

#[test]
fn bench_train_holds_a_lora_base_in_the_asked_type() {
    let tmp = temp_dir("precision-bench-train");
    let bench = |extra: &[&str]| -> Vec<Value> {
        let o = bin(&tmp)
            .args([
                "--json",
                "--threads",
                "1",
                "bench",
                "train",
                "--dim",
                "64",
                "--layers",
                "2",
                "--heads",
                "2",
                "--hidden",
                "128",
                "--vocab",
                "256",
                "--seq-len",
                "16",
                "--steps",
                "1",
                "--lora-rank",
                "4",
            ])
            .args(extra)
            .output()
            .unwrap();
        ok(o)
    };
    let part = |ev: &[Value], test: &str| -> f64 {
        ev.iter()
            .find(|v| v["test"] == test)
            .and_then(|v| v["value"].as_f64())
            .unwrap_or_else(|| panic!("no {test} in {ev:?}"))
    };
    let f32_base = bench(&["--precision", "f32"]);
    let q4_base = bench(&["--precision", "bf16", "--base-dtype", "q4_0"]);
    for (ev, precision) in [(&f32_base, "f32"), (&q4_base, "bf16")] {
        let results: Vec<&Value> = ev.iter().filter(|v| v["type"] == "bench.result").collect();
        assert!(!results.is_empty());
        for r in results {
            assert_eq!(r["precision"], precision, "{r}");
            assert!(TIERS.contains(&r["isa"].as_str().unwrap()), "{r}");
        }
        assert!(part(ev, "train_b1_t16") > 0.0);
    }
    // q4_0 holds 18 bytes per 32 weights where f32 holds 128.
    let ratio = part(&q4_base, "mem_weights") / part(&f32_base, "mem_weights");
    assert!((0.13..0.15).contains(&ratio), "{ratio}");
    // Full fine-tuning has no frozen base to store otherwise.
    let o = bin(&tmp)
        .args([
            "--json",
            "bench",
            "train",
            "--dim",
            "64",
            "--layers",
            "1",
            "--heads",
            "2",
            "--hidden",
            "128",
            "--vocab",
            "256",
            "--seq-len",
            "16",
            "--steps",
            "1",
            "--base-dtype",
            "q4_0",
        ])
        .output()
        .unwrap();
    assert_eq!(failed(&o).1, "bad_input");
}
