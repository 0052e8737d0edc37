//! `neuralforge export` through the real binary: stories260K fine-tuned with LoRA and in
//! full, exported to every format, read back by `generate` with the same greedy output;
//! provenance in the files; refusals (missing run, unfinished run, a format the model
//! cannot express, an unwritable destination) that leave nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nf_testkit::cli::p;
use nf_testkit::{require_assets, temp_dir};

fn bin(home: &Path) -> Command {
    let mut c = nf_testkit::neuralforge!(home);
    c.args(["--threads", "1"]);
    c
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A 6-step stories260K run (LoRA, or full with `full`) in `dir/run`.
fn train(assets: &Path, dir: &Path, full: bool) -> PathBuf {
    let text =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    let data = dir.join("stories.txt");
    std::fs::write(&data, &text[..8_000]).unwrap();
    let run = dir.join("run");
    let mut c = bin(dir);
    c.args(["--json", "train", "--model"])
        .arg(assets.join("llama2c/stories260K.bin"))
        .arg("--tokenizer")
        .arg(assets.join("llama2c/tok512.bin"))
        .arg("--data")
        .arg(&data)
        .args(["--steps", "6", "--batch-size", "2", "--seq-len", "32"])
        .args(["--eval-every", "0", "--save-every", "100"])
        .arg("--out")
        .arg(&run);
    if full {
        c.args(["--full", "--lr", "1e-3", "--warmup", "1"]);
    } else {
        c.args(["--lora-rank", "4", "--lr", "5e-2", "--warmup", "1"]);
    }
    ok(c.output().unwrap());
    run
}

/// The events of a `--json` export, which must succeed.
fn export(
    home: &Path,
    src: &Path,
    format: &str,
    quant: Option<&str>,
    out: &Path,
) -> Vec<serde_json::Value> {
    let mut c = bin(home);
    c.args(["--json", "export"])
        .arg(src)
        .args(["--format", format, "--out"])
        .arg(out);
    if let Some(q) = quant {
        c.args(["--quant", q]);
    }
    ok(c.output().unwrap())
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn event<'a>(events: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
}

/// Greedy text of `args` (model flags) for a fixed prompt.
fn greedy(home: &Path, args: &[&str]) -> String {
    let mut c = bin(home);
    c.arg("generate").args(args).args([
        "--prompt",
        "Once upon a time",
        "--temperature",
        "0",
        "-n",
        "24",
    ]);
    ok(c.output().unwrap())
}

/// The `__metadata__` of a safetensors file.
fn st_metadata(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"].clone()
}

fn failing(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(!o.status.success(), "succeeded unexpectedly");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("error: ") && err.contains("hint: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Nothing but `keep` in `dir` (no staging leftovers, no partial output).
fn only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "in {}", dir.display());
}

#[test]
fn lora_run_round_trips_through_every_format() {
    let assets = require_assets!();
    let dir = temp_dir("export-lora");
    let run = train(&assets, &dir, false);
    let base = assets.join("llama2c/stories260K.bin");
    let tok = assets.join("llama2c/tok512.bin");
    let want = greedy(&dir, &["--model", p(&run)]);
    let untuned = greedy(&dir, &["--model", p(&base), "--tokenizer", p(&tok)]);
    assert_ne!(want, untuned, "the run should have changed the model");
    let out = dir.join("out");
    let run_id = "run";

    // Lossless formats: identical greedy continuations, from the exported files alone.
    for (format, quant, file) in [
        ("hf", None, "hf"),
        ("gguf", Some("f32"), "m-f32.gguf"),
        ("gguf", Some("f16"), "m-f16.gguf"),
    ] {
        let path = out.join(file);
        let ev = export(&dir, &run, format, quant, &path);
        let v = event(&ev, "export.verify");
        assert_eq!(v["passed"], true, "{v}");
        assert_eq!(v["tokens_identical"], true, "{v}");
        assert_eq!(v["tokenizer_identical"], true, "{v}");
        assert!(v["max_rel_rms"].as_f64().unwrap() <= v["bound"].as_f64().unwrap());
        assert_eq!(
            greedy(&dir, &["--model", p(&path)]),
            want,
            "{format} {quant:?}"
        );
    }
    // `eval` agrees: the f32 GGUF scores what the run scores. (This run's learning rate is
    // set to change the greedy output in 6 steps, not to improve it, so it scores worse
    // than the base; the base scores TinyStories text as a TinyStories model should.)
    let text = dir.join("stories.txt");
    let eval = |model_flags: &[&str]| -> f64 {
        let o = ok(bin(&dir)
            .args(["--json", "eval"])
            .args(model_flags)
            .args(["--data", p(&text), "--seq-len", "32", "--max-windows", "8"])
            .output()
            .unwrap());
        let v: serde_json::Value = serde_json::from_str(o.lines().last().unwrap()).unwrap();
        assert_eq!(v["type"], "eval.result", "{v}");
        assert_eq!(v["tokens"], 8 * 32);
        v["loss"].as_f64().unwrap()
    };
    let tuned = eval(&["--model", p(&run)]);
    let f32_gguf = eval(&["--model", p(&out.join("m-f32.gguf"))]);
    let untuned_loss = eval(&["--model", p(&base), "--tokenizer", p(&tok)]);
    assert!((tuned - f32_gguf).abs() < 1e-4, "{tuned} vs {f32_gguf}");
    assert!(
        (tuned - untuned_loss).abs() > 1e-3,
        "{tuned} vs base {untuned_loss}"
    );
    assert!(
        (1.0..3.0).contains(&untuned_loss),
        "stories260K on TinyStories: loss {untuned_loss}"
    );
    let short = dir.join("short.txt");
    std::fs::write(&short, "Hi.").unwrap();
    let o = bin(&dir)
        .args(["eval", "--model", p(&run), "--data", p(&short)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fewer than one window") && err.contains("hint:"),
        "{err}"
    );

    // Each export is in the audit log, so lineage follows the file back to its run.
    let lineage = ok(bin(&dir)
        .args(["--json", "lineage"])
        .arg(out.join("m-f16.gguf"))
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_str(lineage.lines().last().unwrap()).unwrap();
    assert_eq!(v["kind"], "export", "{v}");
    assert_eq!(v["exports"][0]["command"], "export", "{v}");
    let run_dir = std::fs::canonicalize(&run).unwrap();
    assert!(
        v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.to_string().contains(run_dir.to_str().unwrap())),
        "{v}"
    );
    ok(bin(&dir).args(["audit", "verify"]).output().unwrap());
    let meta = st_metadata(&out.join("hf/model.safetensors"));
    assert_eq!(meta["run_id"], run_id, "{meta}");
    assert_eq!(meta["neuralforge_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["base_model_sha256"].as_str().unwrap().len(), 64);
    assert_eq!(meta["data_sha256"].as_str().unwrap().len(), 64);
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        assert!(out.join("hf").join(f).is_file(), "{f}");
    }
    let g = nf_formats::GgufFile::open(out.join("m-f16.gguf")).unwrap();
    assert_eq!(g.get_str("neuralforge.run_id"), Some(run_id));
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("llama"));
    assert_eq!(g.get_str("general.architecture"), Some("llama"));
    assert!(g.get("tokenizer.ggml.scores").is_some());

    // Quantized: within the bound the verify event reports (stories260K is tiny, so its
    // deviation is the largest of the models we measured).
    for q in ["bf16", "q8_0", "q4_1", "q4_0"] {
        let ev = export(
            &dir,
            &run,
            "gguf",
            Some(q),
            &out.join(format!("m-{q}.gguf")),
        );
        let v = event(&ev, "export.verify");
        assert_eq!(v["passed"], true, "{q}: {v}");
        assert!(v["max_rel_rms"].as_f64().unwrap() > 0.0, "{q}: {v}");
        // The file holds exactly the in-memory model quantized the same way.
        assert_eq!(v["file_tokens_identical"], true, "{q}: {v}");
        assert!(v["file_max_rel_rms"].as_f64().unwrap() <= 1e-4, "{q}: {v}");
        let done = event(&ev, "export.done");
        // The 172-wide FFN rows are not whole 32-element blocks: those matrices stay f16.
        if q.starts_with('q') {
            assert_eq!(done["fallbacks"].as_array().unwrap().len(), 5, "{done}");
        }
    }

    // The adapter alone, in PEFT's layout and llama.cpp's GGUF LoRA: on the base model
    // they give the run's output.
    let ev = export(&dir, &run, "peft", None, &out.join("peft"));
    assert_eq!(event(&ev, "export.verify")["tokens_identical"], true);
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("peft/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(
        st_metadata(&out.join("peft/adapter_model.safetensors"))["run_id"],
        run_id
    );
    let base_flags = ["--model", p(&base), "--tokenizer", p(&tok)];
    let peft = out.join("peft");
    let mut with = base_flags.to_vec();
    with.extend(["--adapter", p(&peft)]);
    assert_eq!(greedy(&dir, &with), want);

    let lora = out.join("lora.gguf");
    let ev = export(&dir, &run, "gguf-lora", None, &lora);
    assert_eq!(event(&ev, "export.verify")["tokens_identical"], true);
    let g = nf_formats::GgufFile::open(&lora).unwrap();
    assert_eq!(g.get_str("general.type"), Some("adapter"));
    assert_eq!(g.get_str("adapter.type"), Some("lora"));
    assert_eq!(g.get_f64("adapter.lora.alpha"), Some(8.0));
    assert!(g.tensor_info("blk.0.attn_q.weight.lora_a").is_some());
    let mut with = base_flags.to_vec();
    with.extend(["--adapter", p(&lora)]);
    assert_eq!(greedy(&dir, &with), want);

    // Ollama: a completion model gets the plain prompt template and its EOS as stop.
    let ev = export(&dir, &run, "ollama", Some("f16"), &out.join("ollama"));
    assert_eq!(event(&ev, "export.verify")["passed"], true);
    let mf = std::fs::read_to_string(out.join("ollama/Modelfile")).unwrap();
    assert!(mf.contains("FROM ./model.gguf"), "{mf}");
    assert!(mf.contains("TEMPLATE \"\"\"{{ .Prompt }}\"\"\""), "{mf}");
    assert!(mf.contains("PARAMETER stop \"</s>\""), "{mf}");
    assert_eq!(
        greedy(&dir, &["--model", p(&out.join("ollama/model.gguf"))]),
        want
    );

    // No staging leftovers beside the exports.
    only(
        &out,
        &[
            "hf",
            "m-f32.gguf",
            "m-f16.gguf",
            "m-bf16.gguf",
            "m-q8_0.gguf",
            "m-q4_1.gguf",
            "m-q4_0.gguf",
            "peft",
            "lora.gguf",
            "ollama",
        ],
    );

    // The exported HF folder trains again (import closes the round trip).
    let again = dir.join("again");
    let text = dir.join("stories.txt");
    let mut c = bin(&dir);
    c.args(["--json", "train", "--model"])
        .arg(out.join("hf"))
        .arg("--data")
        .arg(&text)
        .args([
            "--steps",
            "1",
            "--batch-size",
            "1",
            "--seq-len",
            "16",
            "--eval-every",
            "0",
        ])
        .arg("--out")
        .arg(&again);
    ok(c.output().unwrap());
    assert!(again.join("adapter/adapter_model.safetensors").is_file());

    // Training continues from the exported PEFT adapter (and from the GGUF LoRA): the new
    // run takes the adapter's rank (4, not the default 8), and with a learning rate too
    // small to move a weight it still generates exactly what the source run did.
    for (name, adapter) in [("cont-peft", &peft), ("cont-gguf", &lora)] {
        let cont = dir.join(name);
        let mut c = bin(&dir);
        c.args(["train"])
            .args(base_flags)
            .args(["--adapter", p(adapter), "--data", p(&text)])
            .args(["--steps", "1", "--batch-size", "1", "--seq-len", "16"])
            .args(["--lr", "1e-30", "--warmup", "1", "--eval-every", "0"])
            .arg("--out")
            .arg(&cont);
        ok(c.output().unwrap());
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(cont.join("run.json")).unwrap()).unwrap();
        assert_eq!(cfg["lora_rank"], 4, "{name}");
        assert_eq!(cfg["init_adapter_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(greedy(&dir, &["--model", p(&cont)]), want, "{name}");
    }
}

#[test]
fn full_run_exports_whole_model_and_refuses_adapter_formats() {
    let assets = require_assets!();
    let dir = temp_dir("export-full");
    let run = train(&assets, &dir, true);
    let want = greedy(&dir, &["--model", p(&run)]);
    let out = dir.join("out");
    for (format, file) in [("hf", "hf"), ("gguf", "m.gguf")] {
        let path = out.join(file);
        let ev = export(
            &dir,
            &run,
            format,
            Some("f32").filter(|_| format == "gguf"),
            &path,
        );
        assert_eq!(event(&ev, "export.verify")["tokens_identical"], true);
        assert_eq!(greedy(&dir, &["--model", p(&path)]), want);
    }
    for format in ["peft", "gguf-lora"] {
        let mut c = bin(&dir);
        c.args(["export"])
            .arg(&run)
            .args(["--format", format, "--out"])
            .arg(out.join(format));
        let err = failing(&mut c);
        assert!(err.contains("trained every weight"), "{err}");
    }
    only(&out, &["hf", "m.gguf"]);
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let assets = require_assets!();
    let dir = temp_dir("export-bad");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let export_cmd = |src: &Path, format: &str, dest: &Path| {
        let mut c = bin(&dir);
        c.arg("export")
            .arg(src)
            .args(["--format", format, "--out"])
            .arg(dest);
        c
    };

    let err = failing(&mut export_cmd(
        &dir.join("no-such-run"),
        "gguf",
        &out.join("x.gguf"),
    ));
    assert!(err.contains("no run or model"), "{err}");

    // An unfinished run: run.json written, no report (killed mid-training).
    let run = train(&assets, &dir, false);
    let unfinished = dir.join("unfinished");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::copy(run.join("run.json"), unfinished.join("run.json")).unwrap();
    let err = failing(&mut export_cmd(&unfinished, "gguf", &out.join("x.gguf")));
    assert!(
        err.contains("has not finished") && err.contains("--resume"),
        "{err}"
    );

    // A plain model has no adapter to export alone.
    let mut c = export_cmd(
        &assets.join("llama2c/stories260K.bin"),
        "peft",
        &out.join("p"),
    );
    c.arg("--tokenizer").arg(assets.join("llama2c/tok512.bin"));
    let err = failing(&mut c);
    assert!(err.contains("no LoRA adapter"), "{err}");

    // Unknown format, and --quant where it does not apply.
    failing(&mut export_cmd(&run, "onnx", &out.join("x")));
    let mut c = export_cmd(&run, "hf", &out.join("hf"));
    c.args(["--quant", "q4_0"]);
    failing(&mut c);

    // An existing export is not replaced without --force.
    std::fs::write(out.join("keep.gguf"), b"precious").unwrap();
    let err = failing(&mut export_cmd(&run, "gguf", &out.join("keep.gguf")));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(out.join("keep.gguf")).unwrap(), b"precious");
    only(&out, &["keep.gguf"]);

    // A destination that cannot be written (a read-only folder; root ignores permissions,
    // so a path under a regular file stands in when running as root).
    let ro = dir.join("ro");
    std::fs::create_dir_all(&ro).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let writable = std::fs::write(ro.join("probe"), b"").is_ok();
    let dest = if writable {
        let _ = std::fs::remove_file(ro.join("probe"));
        out.join("keep.gguf").join("sub").join("x.gguf")
    } else {
        ro.join("x.gguf")
    };
    let err = failing(&mut export_cmd(&run, "gguf", &dest));
    assert!(err.contains("error: "), "{err}");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    only(&ro, &[]);
    only(&out, &["keep.gguf"]);

    // A full disk mid-write: a file-size limit makes write(2) fail with EFBIG after 64 KiB
    // (SIGXFSZ ignored, as the shell passes it on), like ENOSPC would.
    let script = format!(
        "trap '' XFSZ; ulimit -f 128; exec {} --threads 1 export {} --format gguf --quant f32 --out {}",
        env!("CARGO_BIN_EXE_neuralforge"),
        p(&run),
        p(&out.join("big.gguf"))
    );
    let mut c = Command::new("sh");
    c.args(["-c", &script]).env("NEURALFORGE_HOME", &dir);
    let err = failing(&mut c);
    assert!(err.contains("big.gguf"), "{err}");
    only(&out, &["keep.gguf"]);
}

#[test]
fn smollm2_exports_to_ollama_with_its_chat_template() {
    let assets = require_assets!();
    let dir = temp_dir("export-smol");
    let model = assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let dest = dir.join("ollama");
    let ev = export(&dir, &model, "ollama", Some("q8_0"), &dest);
    let v = event(&ev, "export.verify");
    assert_eq!(v["passed"], true, "{v}");
    assert_eq!(v["tokenizer_identical"], true, "{v}");
    let mf = std::fs::read_to_string(dest.join("Modelfile")).unwrap();
    assert!(
        mf.contains(
            "{{ else if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n{{ else if"
        ),
        "{mf}"
    );
    // SmolLM2's BOS is `<|im_start|>`, which opens every turn: it stays in the template.
    assert!(
        mf.contains("{{ if eq .Role \"system\" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n"),
        "{mf}"
    );
    // SmolLM2's template inserts its own system message when there is none.
    assert!(
        mf.contains("SYSTEM \"\"\"You are a helpful AI assistant named SmolLM"),
        "{mf}"
    );
    assert!(mf.contains("PARAMETER stop \"<|im_end|>\""), "{mf}");
    let g = nf_formats::GgufFile::open(dest.join("model.gguf")).unwrap();
    assert_eq!(g.get_str("tokenizer.ggml.model"), Some("gpt2"));
    assert_eq!(g.get_str("tokenizer.ggml.pre"), Some("smollm"));
    assert!(
        g.get_str("tokenizer.chat_template")
            .unwrap()
            .contains("<|im_start|>")
    );
    assert_eq!(g.get_u64("general.file_type"), Some(7));
}
