//! NeuralForge needs no network: ingest, train and generate run inside a network namespace
//! with no usable interface (`unshare -rn`, a user + network namespace; as root `unshare
//! -n`). A server listening outside the namespace is unreachable from inside it, which the
//! test checks first, so a pass means the commands really had no network. Skips with a
//! message where namespaces cannot be created, except when `NF_REQUIRE_NETNS=1` says they
//! can: `.ci/run` sets it after checking that `unshare` works on the CI machine, so there
//! the test must run.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

use nf_testkit::cli::{p, stderr};
use nf_testkit::{require_assets, temp_dir};

/// The `unshare` flags that work here, if any.
fn unshare_flags() -> Option<&'static [&'static str]> {
    for flags in [&["-rn"][..], &["-n"][..]] {
        let ok = Command::new("unshare")
            .args(flags)
            .arg("true")
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(flags);
        }
    }
    None
}

fn isolated(flags: &[&str], home: &Path, args: &[&str]) -> Output {
    Command::new("unshare")
        .args(flags)
        .arg(env!("CARGO_BIN_EXE_neuralforge"))
        .args(args)
        .env("NEURALFORGE_HOME", home)
        .env_remove("HF_ENDPOINT")
        .env_remove("NEURALFORGE_OFFLINE")
        .output()
        .unwrap()
}

#[test]
fn ingest_train_generate_need_no_network() {
    let assets = require_assets!();
    let Some(flags) = unshare_flags() else {
        if std::env::var("NF_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
            panic!("NF_REQUIRE_NETNS=1 but `unshare -rn true` and `unshare -n true` both failed");
        }
        eprintln!("skipping: cannot create a network namespace here (`unshare -rn true` failed)");
        return;
    };
    let home = temp_dir("offline");
    let src = temp_dir("offline-docs");
    let text =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    std::fs::write(src.join("story.txt"), &text[..8000]).unwrap();
    let (m, t) = (
        assets.join("llama2c/stories260K.bin"),
        assets.join("llama2c/tok512.bin"),
    );
    let model = ["--model", p(&m), "--tokenizer", p(&t)];

    // A server outside the namespace: reachable from here, not from inside.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let o = isolated(
        flags,
        &home,
        &["models", "pull", "org/x", "--endpoint", &endpoint],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("error: http://127.0.0.1:"),
        "{}",
        stderr(&o)
    );
    listener.set_nonblocking(true).unwrap();
    assert!(
        listener.accept().is_err(),
        "the namespace reached the outside"
    );

    let mut ingest = vec!["ingest", p(&src), "--name", "offline", "--seq-len", "64"];
    ingest.extend(model);
    let o = isolated(flags, &home, &ingest);
    assert!(o.status.success(), "ingest: {}", stderr(&o));
    let run = home.join("runs/offline");
    let mut train = vec![
        "--threads",
        "1",
        "train",
        "--data",
        "offline",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "32",
        "--lora-rank",
        "2",
        "--out",
        p(&run),
    ];
    train.extend(model);
    let o = isolated(flags, &home, &train);
    assert!(o.status.success(), "train: {}", stderr(&o));
    let o = isolated(
        flags,
        &home,
        &[
            "generate",
            "--model",
            p(&run),
            "-n",
            "6",
            "--prompt",
            "Once upon",
        ],
    );
    assert!(o.status.success(), "generate: {}", stderr(&o));
    assert!(!o.stdout.is_empty());
    let o = isolated(flags, &home, &["audit", "verify"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = isolated(flags, &home, &["lineage", p(&run)]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("story.txt"),
        "{}",
        stderr(&o)
    );
}
