//! The audit log through the real binary: ingest, keygen, train and generate leave a
//! chain that verifies, with the right inputs and outputs; every kind of tampering makes
//! `audit verify` fail naming the entry; concurrent commands keep one chain; a log that
//! cannot be written stops a command before it does anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use nf_audit::Entry;
use nf_testkit::cli::{p, stderr, stories_model};
use nf_testkit::{require_assets, temp_dir};

fn bin(home: &Path) -> Command {
    nf_testkit::neuralforge!(home)
}

fn log(home: &Path) -> PathBuf {
    home.join("audit/audit.ndjson")
}

fn entries(home: &Path) -> Vec<Entry> {
    std::fs::read_to_string(log(home))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const PROMPT: &str = "Once upon a time, a secret dragon";

/// Two documents ingested, a device key made, a 3-step LoRA run on the dataset, and a
/// generation with the run: returns (home, the documents, the run folder).
fn session(tag: &str, assets: &Path) -> (PathBuf, Vec<PathBuf>, PathBuf) {
    let home = temp_dir(tag);
    let src = temp_dir(&format!("{tag}-docs"));
    let stories =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    let chars: Vec<char> = stories.chars().collect();
    let part = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    let docs = vec![src.join("a.txt"), src.join("b.md")];
    std::fs::write(&docs[0], part(0, 6000)).unwrap();
    std::fs::write(&docs[1], part(6000, 10000)).unwrap();
    let o = bin(&home)
        .args(["ingest", p(&src), "--name", "tiny", "--seq-len", "64"])
        .args(["--val-fraction", "0.3"])
        .args(stories_model(assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin(&home).args(["audit", "keygen"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let run = home.join("run");
    let o = bin(&home)
        .args(["--threads", "1", "train", "--data", "tiny", "--steps", "3"])
        .args(["--batch-size", "2", "--seq-len", "32", "--eval-every", "3"])
        .args(["--lora-rank", "2", "--out", p(&run)])
        .args(stories_model(assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin(&home)
        .args([
            "generate",
            "--model",
            p(&run),
            "-n",
            "8",
            "--prompt",
            PROMPT,
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    (home, docs, run)
}

fn verify(home: &Path) -> (bool, String, serde_json::Value) {
    let o = bin(home).args(["audit", "verify"]).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    let j = bin(home)
        .args(["--json", "audit", "verify"])
        .output()
        .unwrap();
    let ev: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&j.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(o.status.success(), j.status.success());
    (o.status.success(), text, ev)
}

/// Copies the audit folder of `home` into a fresh home for one tampering experiment.
fn copy_home(home: &Path, tag: &str) -> PathBuf {
    let h = temp_dir(tag);
    std::fs::create_dir_all(h.join("audit")).unwrap();
    for e in std::fs::read_dir(home.join("audit")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), h.join("audit").join(e.file_name())).unwrap();
    }
    h
}

fn lines(home: &Path) -> Vec<String> {
    std::fs::read_to_string(log(home))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(home: &Path, ls: &[String]) {
    std::fs::write(log(home), ls.join("\n") + "\n").unwrap();
}

#[test]
fn a_session_leaves_a_verified_chain_and_tampering_is_caught() {
    let assets = require_assets!();
    let (home, docs, run) = session("audit-cli", &assets);
    let es = entries(&home);
    let kinds: Vec<(String, Option<String>, String)> = es
        .iter()
        .map(|e| (e.command.clone(), e.event.clone(), e.result.clone()))
        .collect();
    let k = |c: &str, e: Option<&str>| (c.to_string(), e.map(str::to_string), "ok".to_string());
    assert_eq!(
        kinds,
        vec![
            k("ingest", None),
            k("audit keygen", None),
            k("train", Some("start")),
            k("train", Some("finish")),
            k("generate", None),
        ]
    );
    // Ingest names each document with its real sha256, and the dataset's manifest.
    let ingest = &es[0];
    for d in &docs {
        let want = nf_audit::sha256_file(d).unwrap();
        assert!(
            ingest
                .inputs
                .iter()
                .any(|a| a.kind == "document" && a.sha256.as_deref() == Some(want.as_str())),
            "{d:?} not in {:?}",
            ingest.inputs
        );
    }
    let ds = home.join("datasets/tiny");
    let manifest_sha = nf_audit::sha256_file(&ds.join("manifest.json")).unwrap();
    assert_eq!(ingest.outputs[0].kind, "dataset");
    assert_eq!(
        ingest.outputs[0].sha256.as_deref(),
        Some(manifest_sha.as_str())
    );
    assert!(ingest.args.contains(&"ingest".to_string()));
    assert!(ingest.sig.is_none(), "before keygen: unsigned");
    // Train: base model file, dataset by manifest hash, the run; then the adapter.
    let start = &es[2];
    let model_sha = nf_audit::sha256_file(&assets.join("llama2c/stories260K.bin")).unwrap();
    assert!(
        start
            .inputs
            .iter()
            .any(|a| a.kind == "model" && a.sha256.as_deref() == Some(model_sha.as_str()))
    );
    assert!(
        start
            .inputs
            .iter()
            .any(|a| a.kind == "dataset" && a.sha256.as_deref() == Some(manifest_sha.as_str()))
    );
    assert!(start.sig.is_some(), "after keygen: signed");
    let finish = &es[3];
    let adapter = finish.outputs.iter().find(|a| a.kind == "adapter").unwrap();
    assert_eq!(
        adapter.sha256,
        Some(nf_audit::tree_hash(&run.join("adapter")).unwrap())
    );
    assert!(finish.outputs.iter().any(|a| a.kind == "checkpoint"));
    assert_eq!(finish.details.as_ref().unwrap()["final_step"], 3);
    // Generate: the prompt's hash, never the prompt.
    let g = &es[4];
    let prompt_sha = nf_audit::sha256_hex(PROMPT.as_bytes());
    assert!(
        g.inputs
            .iter()
            .any(|a| a.kind == "prompt" && a.sha256.as_deref() == Some(prompt_sha.as_str()))
    );
    assert!(
        g.args.contains(&format!("sha256:{prompt_sha}")),
        "{:?}",
        g.args
    );
    let raw = std::fs::read_to_string(log(&home)).unwrap();
    assert!(
        !raw.contains("secret dragon"),
        "the prompt leaked into the log"
    );

    let (ok, text, ev) = verify(&home);
    assert!(ok, "{text}");
    assert!(text.contains("audit log intact: 5 entries"), "{text}");
    assert_eq!(ev["type"], "audit.verify");
    assert_eq!(
        (ev["intact"].as_bool(), ev["signed"].as_u64()),
        (Some(true), Some(4))
    );

    // `show` in both forms.
    let o = bin(&home).args(["audit", "show"]).output().unwrap();
    let show = String::from_utf8_lossy(&o.stdout);
    assert!(
        show.contains("#3 ") && show.contains("train start ok (signed)"),
        "{show}"
    );
    let o = bin(&home)
        .args(["--json", "audit", "show", "--since", "1h"])
        .output()
        .unwrap();
    let shown: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(shown.len(), 5);
    assert_eq!(shown[4]["type"], "audit.entry");
    assert_eq!(shown[4]["entry"]["command"], "generate");
    let o = bin(&home)
        .args(["audit", "show", "--since", "2999-01-01"])
        .output()
        .unwrap();
    assert!(o.status.success() && o.stdout.is_empty());

    // Tampering, each on a copy: (what, expected kind, expected entry).
    let broken = |tag: &str, f: &dyn Fn(&Path)| -> (String, serde_json::Value) {
        let h = copy_home(&home, tag);
        f(&h);
        let (ok, text, ev) = verify(&h);
        assert!(!ok, "{tag}: verify passed");
        (text, ev)
    };
    let (text, ev) = broken("edit", &|h| {
        let mut ls = lines(h);
        ls[1] = ls[1].replacen("keygen", "keygeN", 1);
        write_lines(h, &ls);
    });
    assert_eq!(
        (ev["problem_kind"].as_str(), ev["problem_seq"].as_u64()),
        (Some("edited"), Some(2))
    );
    assert!(
        text.contains("error: entry 2 (line 2) was edited"),
        "{text}"
    );
    assert!(text.contains("hint: "), "{text}");
    let (_, ev) = broken("delete", &|h| {
        let mut ls = lines(h);
        ls.remove(2);
        write_lines(h, &ls);
    });
    assert_eq!(
        (ev["problem_kind"].as_str(), ev["problem_seq"].as_u64()),
        (Some("deleted"), Some(3))
    );
    let (_, ev) = broken("swap", &|h| {
        let mut ls = lines(h);
        ls.swap(3, 4);
        write_lines(h, &ls);
    });
    assert_eq!(
        (ev["problem_kind"].as_str(), ev["problem_seq"].as_u64()),
        (Some("reordered"), Some(5))
    );
    let (_, ev) = broken("truncate", &|h| {
        let ls = lines(h);
        write_lines(h, &ls[..3]);
    });
    assert_eq!(
        (ev["problem_kind"].as_str(), ev["problem_seq"].as_u64()),
        (Some("truncated"), Some(4))
    );
    // Cut inside the newest entry: the head says it was complete, so this is truncation
    // (a crash mid-write leaves the head behind instead: see the torn-tail test).
    let (text, ev) = broken("cut", &|h| {
        let bytes = std::fs::read(log(h)).unwrap();
        std::fs::write(log(h), &bytes[..bytes.len() - 40]).unwrap();
    });
    assert_eq!(
        (ev["problem_kind"].as_str(), ev["problem_seq"].as_u64()),
        (Some("truncated"), Some(5))
    );
    assert!(text.contains("truncated"), "{text}");
    // Forgery: edit the train finish entry and rebuild the whole chain and head, keeping
    // the now-invalid signature (without the device's secret key no valid one can be made).
    let (text, ev) = broken("forge", &|h| {
        let mut es = entries(h);
        es[3].details.as_mut().unwrap()["final_step"] = 9999.into();
        let mut prev = nf_audit::GENESIS.to_string();
        let mut out = Vec::new();
        for e in es.iter_mut() {
            e.prev = prev.clone();
            let l = serde_json::to_string(&e).unwrap();
            prev = nf_audit::sha256_hex(l.as_bytes());
            out.push(l);
        }
        write_lines(h, &out);
        let head = format!("{{\"seq\":{},\"sha256\":\"{prev}\"}}\n", es.len());
        std::fs::write(h.join("audit/audit.head"), head).unwrap();
    });
    assert_eq!(
        (ev["problem_kind"].as_str(), ev["problem_seq"].as_u64()),
        (Some("bad_signature"), Some(4)),
        "{text}"
    );
    // Entries cut off the end and the head deleted: used to pass as intact.
    let (text, ev) = broken("cut-unhead", &|h| {
        let ls = lines(h);
        write_lines(h, &ls[..3]);
        std::fs::remove_file(h.join("audit/audit.head")).unwrap();
    });
    assert_eq!(ev["problem_kind"].as_str(), Some("head"), "{text}");

    // An anchor kept elsewhere: it holds on the intact log (and after appends), and fails on
    // a log cut back before it even with a head rewritten to match.
    let o = bin(&home).args(["audit", "anchor"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let anchor = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(anchor.starts_with("5:") && anchor.len() == 66, "{anchor}");
    let expect = |h: &Path, extra: &[&str]| {
        bin(h)
            .args(["--json", "audit", "verify", "--expect-head", &anchor])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(expect(&home, &[]).status.success());
    let h = copy_home(&home, "anchor-cut");
    let es = entries(&h);
    write_lines(&h, &lines(&h)[..4]);
    let prev4 = nf_audit::sha256_hex(serde_json::to_string(&es[3]).unwrap().as_bytes());
    let head = format!("{{\"seq\":4,\"sha256\":\"{prev4}\"}}\n");
    std::fs::write(h.join("audit/audit.head"), head).unwrap();
    let o = expect(&h, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"problem_kind\":\"anchor\""));
    // The key held elsewhere must be the one signatures were checked against.
    let o = expect(&home, &["--expect-key", &"ab".repeat(32)]);
    assert!(!o.status.success() && stderr(&o).contains("not the expected one"));
    let o = bin(&home)
        .args(["audit", "verify", "--expect-head", "5:xyz"])
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("is not SEQ:SHA256"));
}

#[test]
fn a_torn_tail_is_recovered_by_the_next_command() {
    let home = temp_dir("audit-cli-torn");
    let out = home.join("export.csv");
    let export = |h: &Path| {
        bin(h)
            .args(["audit", "export", "--format", "csv", "--out", p(&out)])
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        assert!(export(&home).status.success());
    }
    let mut bytes = std::fs::read(log(&home)).unwrap();
    bytes.extend_from_slice(b"{\"seq\":3,\"ti");
    std::fs::write(log(&home), bytes).unwrap();
    let (ok, text, _) = verify(&home);
    assert!(
        !ok && text.contains("torn tail: 12 bytes after entry 2"),
        "{text}"
    );
    let o = bin(&home).args(["audit", "show"]).output().unwrap();
    assert!(o.status.success() && stderr(&o).contains("12 bytes without a newline"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("#2 "));
    let o = export(&home);
    assert!(o.status.success(), "{}", stderr(&o));
    let (ok, text, _) = verify(&home);
    assert!(ok, "{text}");
    let es = entries(&home);
    assert_eq!(es.len(), 4);
    assert_eq!(es[2].command, "audit.recover");
    assert_eq!(es[2].details.as_ref().unwrap()["torn_bytes"], 12);
    // The export that command wrote was made before its own entry (and the repair, which
    // happens on append): the two complete entries, not the torn bytes.
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(csv.lines().count(), 1 + 2, "{csv}");
    assert!(csv.lines().nth(2).unwrap().starts_with("2,"), "{csv}");
}

#[test]
fn concurrent_commands_keep_one_chain() {
    let assets = require_assets!();
    let home = temp_dir("audit-cli-concurrent");
    let children: Vec<_> = (0..6)
        .map(|i| {
            bin(&home)
                .args([
                    "--threads",
                    "1",
                    "generate",
                    "-n",
                    "4",
                    "--temperature",
                    "0",
                ])
                .args(["--prompt", &format!("Tom had {i} apples")])
                .args(stories_model(&assets))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (ok, text, ev) = verify(&home);
    assert!(ok, "{text}");
    assert_eq!(ev["entries"], 6);
    let es = entries(&home);
    let mut prompts: Vec<String> = es
        .iter()
        .map(|e| {
            e.inputs
                .iter()
                .find(|a| a.kind == "prompt")
                .unwrap()
                .sha256
                .clone()
                .unwrap()
        })
        .collect();
    prompts.sort();
    prompts.dedup();
    assert_eq!(prompts.len(), 6);
}

#[test]
fn an_unwritable_log_stops_the_command_before_it_starts() {
    let assets = require_assets!();
    let home = temp_dir("audit-cli-unwritable");
    // A file where the audit folder belongs (root ignores permission bits, not this).
    std::fs::write(home.join("audit"), "not a folder").unwrap();
    let src = temp_dir("audit-cli-unwritable-docs");
    std::fs::write(
        src.join("a.txt"),
        "Once upon a time there was a cat. ".repeat(50),
    )
    .unwrap();
    let o = bin(&home)
        .args(["--json", "ingest", p(&src), "--name", "d"])
        .args(stories_model(&assets))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("error: audit log:"), "{err}");
    assert!(
        err.contains("hint: NeuralForge does not work unrecorded"),
        "{err}"
    );
    let ev = String::from_utf8_lossy(&o.stdout);
    assert!(ev.contains("\"code\":\"audit\""), "{ev}");
    assert!(!home.join("datasets/d").exists(), "ingest ran unrecorded");
}

#[test]
fn failures_are_recorded_and_prompts_kept_only_when_asked() {
    let assets = require_assets!();
    let home = temp_dir("audit-cli-failures");
    let o = bin(&home)
        .args([
            "train",
            "--data",
            "no-such-data",
            "--model",
            "no-such-model",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = bin(&home)
        .args([
            "generate",
            "-n",
            "2",
            "--prompt",
            "keep me",
            "--audit-prompts",
        ])
        .args(stories_model(&assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let es = entries(&home);
    assert_eq!(es.len(), 2);
    assert_eq!(es[0].command, "train");
    assert_eq!(es[0].result, "error");
    assert!(
        es[0].error.as_deref().unwrap().contains("not found"),
        "{:?}",
        es[0].error
    );
    assert_eq!(es[1].details.as_ref().unwrap()["prompt"], "keep me");
    assert!(es[1].args.contains(&"keep me".to_string()));
    // JSON export for an auditor, with a time window.
    let out = home.join("audit.json");
    let o = bin(&home)
        .args([
            "audit",
            "export",
            "--out",
            p(&out),
            "--since",
            "2000-01-01",
            "--until",
            "2999-01-01",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["format"], "neuralforge-audit-export");
    assert_eq!(doc["verify"]["intact"], true);
    assert_eq!(doc["entries"].as_array().unwrap().len(), 2);
    let o = bin(&home)
        .args(["audit", "show", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("is not a time"), "{}", stderr(&o));
}

#[test]
fn chat_records_each_turn_by_hash() {
    let assets = require_assets!();
    let home = temp_dir("audit-cli-chat");
    let mut c = bin(&home)
        .args([
            "chat",
            "-n",
            "4",
            "--temperature",
            "0",
            "--chat-template",
            "chatml",
        ])
        .args(stories_model(&assets))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = c.stdin.take().unwrap();
        stdin
            .write_all(b"hello there\nmy password is hunter2\n")
            .unwrap();
    }
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let es = entries(&home);
    let events: Vec<&str> = es
        .iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(events, ["start", "turn", "turn", "end"]);
    assert_eq!(
        es[2].inputs[0].sha256.as_deref(),
        Some(nf_audit::sha256_hex(b"my password is hunter2").as_str())
    );
    assert_eq!(es[3].details.as_ref().unwrap()["turns"], 2);
    let raw = std::fs::read_to_string(log(&home)).unwrap();
    assert!(!raw.contains("hunter2"));
}

#[test]
fn train_interrupt_and_resume_are_on_the_record() {
    use std::io::{BufRead, BufReader};
    let assets = require_assets!();
    let home = temp_dir("audit-cli-interrupt");
    let data = home.join("stories.txt");
    let text =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    std::fs::write(&data, &text[..12_000]).unwrap();
    let run = home.join("run");
    let mut child = bin(&home)
        .args([
            "--json",
            "--threads",
            "1",
            "train",
            "--data",
            p(&data),
            "--steps",
            "100000",
        ])
        .args([
            "--batch-size",
            "2",
            "--seq-len",
            "32",
            "--lora-rank",
            "2",
            "--out",
            p(&run),
        ])
        .args(["--eval-every", "1000000"])
        .args(stories_model(&assets))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("\"type\":\"train.step\"") && line.contains("\"step\":3,") {
            let ok = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
            break;
        }
    }
    assert!(
        child.wait().unwrap().success(),
        "an interrupted run saves and exits 0"
    );
    // Resume, and interrupt again once it has taken a step (the config says 100000).
    let mut o = bin(&home)
        .args(["--json", "--threads", "1", "train", "--resume", p(&run)])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = o.stdout.take().unwrap();
    for line in BufReader::new(stdout).lines() {
        if line.unwrap().contains("\"type\":\"train.step\"") {
            let _ = Command::new("kill")
                .args(["-INT", &o.id().to_string()])
                .status();
            break;
        }
    }
    assert!(o.wait().unwrap().success());
    let es = entries(&home);
    let events: Vec<&str> = es
        .iter()
        .map(|e| e.event.as_deref().unwrap_or(""))
        .collect();
    assert_eq!(events, ["start", "interrupt", "resume", "interrupt"]);
    let resume = &es[2];
    assert!(
        resume.inputs.iter().any(|a| a.kind == "checkpoint"),
        "{:?}",
        resume.inputs
    );
    assert!(resume.args.contains(&"--resume".to_string()));
    let step = es[1].details.as_ref().unwrap()["final_step"]
        .as_u64()
        .unwrap();
    assert!(step >= 3);
    assert!(
        es[3].details.as_ref().unwrap()["final_step"]
            .as_u64()
            .unwrap()
            >= step
    );
    let (ok, text, _) = verify(&home);
    assert!(ok, "{text}");
}
