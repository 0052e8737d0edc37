//! `neuralforge ingest` and `datasets` through the real binary: the shared documents, a
//! partial ingest that keeps the old dataset, and training on an ingested dataset.

use std::path::Path;
use std::process::Command;

use nf_testkit::cli::{events, p, stderr, stories_model};
use nf_testkit::{require_assets, temp_dir};

fn bin(home: &Path) -> Command {
    nf_testkit::neuralforge!(home)
}

#[test]
fn shared_documents_ingest_with_events() {
    let assets = require_assets!();
    let home = temp_dir("ingest-cli-docs");
    let o = bin(&home)
        .args([
            "--json",
            "ingest",
            p(&assets.join("docs")),
            "--name",
            "docs",
        ])
        .args(stories_model(&assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ev = events(&o.stdout);
    let files: Vec<&serde_json::Value> = ev.iter().filter(|e| e["type"] == "ingest.file").collect();
    assert_eq!(files.len(), 8);
    for f in &files {
        let empty_tables = f["path"]
            .as_str()
            .unwrap()
            .ends_with("tbl-having-tables.docx");
        let want = if empty_tables { "skipped" } else { "ok" };
        assert_eq!(f["status"], want, "{f}");
    }
    let done = ev.iter().find(|e| e["type"] == "ingest.done").unwrap();
    assert_eq!(done["written"], true);
    assert!(done["train_tokens"].as_u64().unwrap() > 10_000, "{done}");
    assert!(ev.iter().any(|e| e["type"] == "progress"));
    assert!(home.join("datasets/docs/manifest.json").is_file());
}

#[test]
fn partial_ingest_exits_1_and_never_replaces_a_dataset() {
    let assets = require_assets!();
    let home = temp_dir("ingest-cli-partial");
    let src = temp_dir("ingest-cli-partial-src");
    std::fs::write(
        src.join("good.md"),
        "# Notes\n\nThe office opens at nine o'clock sharp.",
    )
    .unwrap();
    let mut bin_bytes = vec![0u8; 2048];
    bin_bytes[..4].copy_from_slice(b"\x7fELF");
    std::fs::write(src.join("program.txt"), &bin_bytes).unwrap();
    let ingest = |force: bool| {
        let mut c = bin(&home);
        c.args(["ingest", p(&src), "--name", "notes"])
            .args(stories_model(&assets));
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    let o = ingest(false);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("program.txt") && err.contains("not a text file"),
        "{err}"
    );
    assert!(err.contains("1 of 2 files could not be ingested"), "{err}");
    let manifest = home.join("datasets/notes/manifest.json");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let bad = m["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "error")
        .unwrap();
    assert!(bad["message"].as_str().unwrap().contains("NUL"), "{bad}");

    // A good dataset, then a forced re-ingest that fails on one file: the old one stays.
    std::fs::remove_file(src.join("program.txt")).unwrap();
    assert!(ingest(true).status.success());
    let before = std::fs::read(&manifest).unwrap();
    std::fs::write(
        src.join("slides.pdf"),
        b"%PDF-1.7\n1 0 obj << /Type /Catalog",
    )
    .unwrap();
    let o = ingest(true);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("was kept"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
    // Without --force nothing is touched at all.
    let o = ingest(false);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
}

#[test]
fn ingest_then_train_on_the_dataset() {
    let assets = require_assets!();
    let home = temp_dir("ingest-cli-train");
    let src = temp_dir("ingest-cli-train-src");
    let stories =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    let chars: Vec<char> = stories.chars().collect();
    let part = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    std::fs::write(src.join("a.txt"), part(0, 6000)).unwrap();
    std::fs::write(src.join("b.md"), part(6000, 9000)).unwrap();
    let html = format!("<html><body><p>{}</p></body></html>", part(9000, 12000));
    std::fs::write(src.join("c.html"), html).unwrap();
    let o = bin(&home)
        .args([
            "ingest",
            p(&src),
            "--name",
            "tiny",
            "--seq-len",
            "64",
            "--val-fraction",
            "0.3",
        ])
        .args(stories_model(&assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    let o = bin(&home).args(["datasets", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && list.contains("tiny"), "{list}");
    let o = bin(&home)
        .args(["datasets", "show", "tiny"])
        .output()
        .unwrap();
    let show = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        show.contains("sample 3:") && show.contains("a.txt"),
        "{show}"
    );
    let o = bin(&home)
        .args(["--json", "datasets", "show", "tiny"])
        .output()
        .unwrap();
    let ev = events(&o.stdout);
    assert_eq!(ev[0]["type"], "dataset.info");
    assert_eq!(ev[0]["samples"].as_array().unwrap().len(), 3);

    let run = home.join("run");
    let o = bin(&home)
        .args([
            "--json",
            "--threads",
            "1",
            "train",
            "--data",
            "tiny",
            "--steps",
            "3",
        ])
        .args([
            "--batch-size",
            "2",
            "--seq-len",
            "32",
            "--eval-every",
            "3",
            "--eval-batches",
            "1",
        ])
        .args(["--out", p(&run)])
        .args(stories_model(&assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ev = events(&o.stdout);
    let start = ev.iter().find(|e| e["type"] == "train.start").unwrap();
    assert!(start["val_tokens"].as_u64().unwrap() > 0, "{start}");
    assert!(ev.iter().any(|e| e["type"] == "train.eval"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("run.json")).unwrap()).unwrap();
    assert!(
        cfg["data"][0]
            .as_str()
            .unwrap()
            .ends_with("datasets/tiny/train.bin"),
        "{cfg}"
    );
    assert!(
        cfg["val_data"][0]
            .as_str()
            .unwrap()
            .ends_with("datasets/tiny/val.bin"),
        "{cfg}"
    );
}

#[test]
fn chat_dataset_trains_with_its_loss_mask() {
    let assets = require_assets!();
    let home = temp_dir("ingest-cli-chat");
    let src = temp_dir("ingest-cli-chat-src");
    let mut lines = String::new();
    for i in 0..40 {
        lines.push_str(&format!(
            "{{\"messages\":[{{\"role\":\"user\",\"content\":\"Tell me story number {i}.\"}},{{\"role\":\"assistant\",\"content\":\"Once upon a time there was a cat called Tom {i}. He liked to play in the sun with his friend.\"}}]}}\n"
        ));
    }
    std::fs::write(src.join("chat.jsonl"), lines).unwrap();
    let o = bin(&home)
        .args([
            "ingest",
            p(&src),
            "--name",
            "chat",
            "--chat-template",
            "chatml",
        ])
        .args(stories_model(&assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ds = home.join("datasets/chat");
    assert!(ds.join("train.mask").is_file(), "ingest wrote no mask");
    let o = bin(&home)
        .args([
            "--json",
            "train",
            "--data",
            "chat",
            "--steps",
            "3",
            "--batch-size",
            "2",
        ])
        .args(["--seq-len", "32", "--out", p(&home.join("run"))])
        .args(stories_model(&assets))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ev = events(&o.stdout);
    assert_eq!(ev.iter().filter(|e| e["type"] == "train.step").count(), 3);
    // The mask is part of the data identity a resume checks.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(home.join("run/run.json")).unwrap()).unwrap();
    let shard = nf_data::TokenShard::open(ds.join("train.bin")).unwrap();
    assert_ne!(
        run["hashes"]["data"].as_str().unwrap(),
        nf_data::tokens_hash(&shard.to_vec())
    );
}
