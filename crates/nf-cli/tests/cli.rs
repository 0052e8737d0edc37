//! The `neuralforge` binary end to end: golden outputs of reference implementations, the
//! NDJSON stream, and bad input.

use nf_testkit::cli::p;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_neuralforge"));
    // Keep tests away from the user's real home.
    c.env(
        "NEURALFORGE_HOME",
        std::env::temp_dir().join("nf-cli-test-home"),
    );
    c
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = bin();
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn neuralforge");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            // The command may exit before reading its input (an early error): ignore EPIPE.
            let _ = input.write_all(s.as_bytes());
        }
    }
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    let o = run(args, stdin);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn stories(assets: &Path) -> (PathBuf, PathBuf) {
    (
        assets.join("llama2c/stories260K.bin"),
        assets.join("llama2c/tok512.bin"),
    )
}

#[test]
fn stories260k_matches_run_c_byte_for_byte() {
    let assets = nf_testkit::require_assets!();
    let (model, tok) = stories(&assets);
    let prompt = "Once upon a time";
    // run.c's 64 "steps" count positions from BOS, prompt included.
    let ids = ok(
        &["tokenize", "--model", p(&model), "--tokenizer", p(&tok)],
        Some(prompt),
    );
    let ids: Vec<u32> = ids.split_whitespace().map(|s| s.parse().unwrap()).collect();
    let golden_ids =
        std::fs::read_to_string(assets.join("golden/stories260K_t0_n64_once_upon_a_time.ids"))
            .unwrap();
    let golden_ids: Vec<u32> = golden_ids
        .trim()
        .trim_start_matches("ids")
        .trim()
        .trim_matches(['[', ']'])
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    assert_eq!(ids, golden_ids[..ids.len()], "prompt ids");
    let n = (64 - (ids.len() - 1)).to_string();
    let text = ok(
        &[
            "generate",
            "--model",
            p(&model),
            "--tokenizer",
            p(&tok),
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-tokens",
            &n,
        ],
        None,
    );
    let golden =
        std::fs::read_to_string(assets.join("golden/stories260K_runc_t0_n64_once_upon_a_time.txt"))
            .unwrap();
    assert_eq!(format!("{prompt}{text}"), golden);

    // The same run as NDJSON: the ids of the generated tokens are the reference ids.
    let json = ok(
        &[
            "generate",
            "--json",
            "--model",
            p(&model),
            "--tokenizer",
            p(&tok),
            "--prompt",
            prompt,
            "--temperature",
            "0",
            "--max-tokens",
            &n,
        ],
        None,
    );
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "model.loaded");
    let gen_ids: Vec<u32> = events
        .iter()
        .filter(|e| e["type"] == "generate.token")
        .map(|e| e["id"].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(gen_ids, golden_ids[ids.len()..]);
    let done = events.last().unwrap();
    assert_eq!(done["type"], "generate.done");
    assert_eq!(
        format!("{prompt}{}\n", done["text"].as_str().unwrap()),
        golden
    );
    for e in &events {
        assert_eq!(e["v"], 1);
        assert!(e["ts"].as_str().unwrap().ends_with('Z'));
    }
}

#[test]
fn stories260k_from_bos_only_matches_run_c() {
    let assets = nf_testkit::require_assets!();
    let (model, tok) = stories(&assets);
    let text = ok(
        &[
            "generate",
            "--model",
            p(&model),
            "--tokenizer",
            p(&tok),
            "--prompt",
            "",
            "--temperature",
            "0",
            "--max-tokens",
            "200",
        ],
        None,
    );
    let golden =
        std::fs::read_to_string(assets.join("golden/stories260K_t0_n200_bos_only.txt")).unwrap();
    assert_eq!(text, golden);
}

#[test]
fn smollm2_q4_1_answers_the_capital_of_france() {
    let assets = nf_testkit::require_assets!();
    let model = assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let golden =
        std::fs::read_to_string(assets.join("golden/smollm2_q41_chat_capital_france.txt")).unwrap();
    // The golden file lists the prompt ids, then the answer text, then prompt + answer ids.
    let lists: Vec<Vec<u32>> = golden
        .lines()
        .filter_map(|l| l.find('[').map(|i| &l[i..]))
        .filter(|l| !l.contains(':'))
        .map(|l| {
            l.trim_matches(['[', ']'])
                .split(',')
                .map(|s| s.trim().parse().unwrap())
                .collect()
        })
        .collect();
    let (prompt_ids, all_ids) = (&lists[0], &lists[1]);
    let answer_ids = &all_ids[prompt_ids.len()..];
    // The golden run formatted the turn with llama.cpp's built-in ChatML, which (unlike the
    // template inside this GGUF) adds no default system message; `--chat-template chatml`
    // is that formatting.
    let json = ok(
        &[
            "generate",
            "--json",
            "--model",
            p(&model),
            "--chat",
            "--chat-template",
            "chatml",
            "--prompt",
            "What is the capital of France?",
            "--temperature",
            "0",
            "--max-tokens",
            "32",
        ],
        None,
    );
    let events: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let gen_ids: Vec<u32> = events
        .iter()
        .filter(|e| e["type"] == "generate.token")
        .map(|e| e["id"].as_u64().unwrap() as u32)
        .collect();
    let done = events.last().unwrap();
    assert_eq!(
        done["prompt_tokens"].as_u64().unwrap() as usize,
        prompt_ids.len()
    );
    // The answer ends with <|im_end|>, which stops generation and is not output.
    assert_eq!(done["stop"], "stop");
    assert_eq!(gen_ids, answer_ids[..answer_ids.len() - 1]);
    assert_eq!(done["text"], "The capital of France is Paris.");

    // The model's own template adds its default system message (38 more tokens); the answer
    // stays the same.
    let json = ok(
        &[
            "generate",
            "--json",
            "--model",
            p(&model),
            "--chat",
            "--prompt",
            "What is the capital of France?",
            "--temperature",
            "0",
            "--max-tokens",
            "32",
        ],
        None,
    );
    let done: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
    assert!(done["prompt_tokens"].as_u64().unwrap() as usize > prompt_ids.len());
    assert_eq!(done["text"], "The capital of France is Paris.");
}

#[test]
fn inspect_describes_the_gguf() {
    let assets = nf_testkit::require_assets!();
    let model = assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let json = ok(&["inspect", "--json", p(&model)], None);
    let e: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(e["type"], "model.info");
    assert_eq!(e["arch"], "llama");
    assert_eq!(e["n_layers"], 30);
    assert_eq!(e["dim"], 576);
    assert_eq!(e["n_kv_heads"], 3);
    assert_eq!(e["tensor_types"]["q4_1"], 210);
    assert_eq!(e["tensor_types"]["q8_0"], 1);
    assert_eq!(e["chat_template"], true);
    assert_eq!(e["tied_embeddings"], true);
    let n = e["n_params"].as_u64().unwrap();
    assert!((130_000_000..140_000_000).contains(&n), "{n}");
    let text = ok(&["inspect", p(&model)], None);
    assert!(text.contains("architecture    llama"));
    let (stories, tok) = stories(&assets);
    let text = ok(&["inspect", p(&stories), "--tokenizer", p(&tok)], None);
    assert!(
        text.contains("heads           8 query, 4 key/value"),
        "{text}"
    );
}

/// Runs a command that must fail cleanly: non-zero exit, one `error:` line, a `hint:`, no
/// panic; returns stderr.
fn fails(args: &[&str]) -> String {
    let o = run(args, Some("hello"));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "{args:?} succeeded");
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("\nhint: "), "{args:?} has no hint: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    err
}

#[test]
fn bad_input_fails_with_error_and_hint() {
    let assets = nf_testkit::require_assets!();
    let (stories, tok) = stories(&assets);
    let dir = nf_testkit::temp_dir("cli-bad");
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    let gguf = std::fs::read(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let truncated = dir.join("truncated.gguf");
    std::fs::write(&truncated, &gguf[..1_000_000]).unwrap();
    let text = dir.join("notes.bin");
    std::fs::write(&text, "These are meeting notes, not a model.\n".repeat(10)).unwrap();
    let half = dir.join("half.bin");
    std::fs::write(&half, &std::fs::read(&stories).unwrap()[..500_000]).unwrap();
    let no_config = nf_testkit::temp_dir("cli-noconfig");
    let spm = assets.join("llamacpp-vocab/ggml-vocab-llama-spm.gguf");

    assert!(
        fails(&[
            "generate",
            "--model",
            "/no/such/model.gguf",
            "--prompt",
            "x"
        ])
        .contains("not found")
    );
    fails(&["generate", "--model", p(&empty), "--prompt", "x"]);
    assert!(
        fails(&["generate", "--model", p(&truncated), "--prompt", "x"]).contains("truncated.gguf")
    );
    fails(&[
        "generate",
        "--model",
        p(&text),
        "--tokenizer",
        p(&tok),
        "--prompt",
        "x",
    ]);
    fails(&[
        "generate",
        "--model",
        p(&half),
        "--tokenizer",
        p(&tok),
        "--prompt",
        "x",
    ]);
    fails(&["generate", "--model", p(&no_config), "--prompt", "x"]);
    assert!(fails(&["generate", "--model", p(&stories), "--prompt", "x"]).contains("--tokenizer"));
    assert!(
        fails(&[
            "generate",
            "--model",
            p(&stories),
            "--tokenizer",
            p(&spm),
            "--prompt",
            "x"
        ])
        .contains("do not belong together")
    );
    assert!(
        fails(&[
            "generate",
            "--model",
            p(&stories),
            "--tokenizer",
            p(&text),
            "--prompt",
            "x"
        ])
        .contains("notes.bin")
    );
    assert!(
        fails(&[
            "generate",
            "--model",
            p(&stories),
            "--tokenizer",
            p(&tok),
            "--chat",
            "--prompt",
            "x"
        ])
        .contains("chat template")
    );
    fails(&["inspect", p(&truncated)]);
    assert!(
        fails(&["generate", "--model", p(&spm), "--prompt", "x"]).contains("token_embd.weight")
    ); // vocab-only GGUF
    assert!(
        fails(&[
            "generate",
            "--model",
            p(&stories),
            "--tokenizer",
            p(&tok),
            "--chat",
            "--chat-template",
            "nope",
            "--prompt",
            "x"
        ])
        .contains("nope")
    );
    fails(&["tokenize", "--model", p(&stories)]);

    // With --json the failure is also an `error` event on stdout.
    let o = run(
        &["generate", "--json", "--model", p(&empty), "--prompt", "x"],
        None,
    );
    let last: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "error");
    assert!(last["hint"].is_string());
}

fn done_event(json: &str) -> serde_json::Value {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["type"] == "generate.done")
        .expect("a generate.done event")
}

#[test]
fn prompts_and_conversations_come_from_stdin() {
    let assets = nf_testkit::require_assets!();
    let (model, tok) = stories(&assets);
    let greedy = ["--temperature", "0", "--max-tokens", "16"];
    let base = ["generate", "--model", p(&model), "--tokenizer", p(&tok)];
    let from_arg = ok(
        &[&base[..], &["--prompt", "Once upon a time"], &greedy].concat(),
        None,
    );
    let from_stdin = ok(
        &[&base[..], &["--prompt", "-"], &greedy].concat(),
        Some("Once upon a time"),
    );
    assert_eq!(from_stdin, from_arg);

    // A conversation of one system and one user message is exactly --system + --prompt.
    let model = assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    let chat = ["--json", "generate", "--model", p(&model), "--chat"];
    let flags = ok(
        &[
            &chat[..],
            &[
                "--system",
                "Be brief.",
                "--prompt",
                "What is the capital of France?",
            ],
            &greedy,
        ]
        .concat(),
        None,
    );
    let conversation = r#"[{"role":"system","content":"Be brief."},
        {"role":"user","content":"What is the capital of France?"}]"#;
    let messages = ok(
        &[&chat[..], &["--messages", "-"], &greedy].concat(),
        Some(conversation),
    );
    let (a, b) = (done_event(&flags), done_event(&messages));
    assert_eq!(
        (a["text"].clone(), a["prompt_tokens"].clone()),
        (b["text"].clone(), b["prompt_tokens"].clone())
    );
    // Earlier turns are part of the prompt.
    let longer = r#"[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello! How can I help?"},
        {"role":"user","content":"What is the capital of France?"}]"#;
    let turns = done_event(&ok(
        &[&chat[..], &["--messages", "-"], &greedy].concat(),
        Some(longer),
    ));
    assert!(
        turns["prompt_tokens"].as_u64() > b["prompt_tokens"].as_u64(),
        "{turns}"
    );

    for (bad, why) in [
        ("not json", "not a conversation"),
        (
            r#"[{"role":"user","content":"Hi"},{"role":"assistant","content":"Hello"}]"#,
            "end with a user message",
        ),
    ] {
        let o = run(&[&chat[..], &["--messages", "-"]].concat(), Some(bad));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(why) && err.contains("hint:"),
            "{err}"
        );
    }
}

/// The home is owner-only: created 0700 when missing, tightened when it exists with group
/// or other access (homes used to take the umask), and the audit log is 0600.
#[cfg(unix)]
#[test]
fn the_home_and_the_audit_log_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let tmp = nf_testkit::temp_dir("private-home");
    let fresh = tmp.join("a/home");
    let loose = tmp.join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    for home in [&fresh, &loose] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_neuralforge"))
            .env("NEURALFORGE_HOME", home)
            .args(["audit", "keygen"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(mode(home), 0o700, "{}", home.display());
        assert_eq!(mode(&home.join("audit/audit.ndjson")), 0o600);
        assert_eq!(mode(&home.join("audit")), 0o700);
    }
}
