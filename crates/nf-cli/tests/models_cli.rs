//! The model store through the real binary: import, list, show, rm; and `models pull`
//! against a hub served on loopback by this test (the hub's URL layout: revision and tree
//! API, resolve with a redirect to a CDN path carrying `X-Linked-Etag`, Range, ETag):
//! success, a connection cut halfway then resumed with Range, a wrong checksum (not
//! installed), 404, and `--offline` / NEURALFORGE_OFFLINE refusing before any connection.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;

use nf_testkit::cli::{p, stderr};
use nf_testkit::hub::{COMMIT, FakeHub, stories_files};
use nf_testkit::{require_assets, temp_dir};

fn bin(home: &Path) -> Command {
    nf_testkit::neuralforge!(home)
}

fn pull(home: &Path, hub: &FakeHub, extra: &[&str]) -> Output {
    bin(home)
        .args([
            "models",
            "pull",
            "org/tiny",
            "--endpoint",
            &hub.url,
            "--include",
            "*.bin",
        ])
        .args(extra)
        .output()
        .unwrap()
}

fn audit_entries(home: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(home.join("audit/audit.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn pull_resumes_after_a_cut_and_verifies() {
    let assets = require_assets!();
    let hub = FakeHub::start(stories_files(&assets));
    let home = temp_dir("models-pull");
    let model_sha = nf_audit::sha256_file(&assets.join("llama2c/stories260K.bin")).unwrap();

    // 1. The connection drops halfway through the first file.
    hub.cut_next.store(true, Ordering::SeqCst);
    let o = pull(&home, &hub, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("broke off") || stderr(&o).contains("bytes"),
        "{}",
        stderr(&o)
    );
    assert!(
        !home.join("models/tiny").exists(),
        "a half download was installed"
    );
    let partial = home.join("models/.pull-tiny/stories260K.bin.partial");
    let half = std::fs::metadata(&partial).unwrap().len();
    let full = std::fs::metadata(assets.join("llama2c/stories260K.bin"))
        .unwrap()
        .len();
    assert!(half > 0 && half < full, "{half} of {full}");

    // 2. Offline refuses, before any connection, and keeps the partial file.
    let before = hub.requests().len();
    let o = pull(&home, &hub, &["--offline"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("error: offline mode"), "{}", stderr(&o));
    let o = bin(&home)
        .env("NEURALFORGE_OFFLINE", "1")
        .args([
            "--json",
            "models",
            "pull",
            "org/tiny",
            "--endpoint",
            &hub.url,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"code\":\"offline\""));
    assert_eq!(hub.requests().len(), before, "offline mode connected");
    assert_eq!(std::fs::metadata(&partial).unwrap().len(), half);

    // 3. The same pull again resumes with a Range request and installs verified files.
    let o = bin(&home)
        .args([
            "--json",
            "models",
            "pull",
            "org/tiny",
            "--endpoint",
            &hub.url,
            "--include",
            "*.bin",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let reqs = hub.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("/cdn/") && r.ends_with(&format!("range=Some({half})"))),
        "no resume request: {reqs:?}"
    );
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let progress: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["type"] == "download.progress")
        .collect();
    assert!(!progress.is_empty());
    let last = progress
        .iter()
        .rev()
        .find(|e| e["file"] == "stories260K.bin")
        .unwrap();
    assert_eq!(
        (last["done"].as_u64(), last["total"].as_u64()),
        (Some(full), Some(full))
    );
    assert_eq!(events.last().unwrap()["type"], "model.stored");
    let dir = home.join("models/tiny");
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("model.json")).unwrap()).unwrap();
    assert_eq!(m["source"], format!("hf://org/tiny@{COMMIT}"));
    assert_eq!(m["model_format"], "llama2c");
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "README.md is not a *.bin: {m}");
    assert_eq!(files[0]["path"], "stories260K.bin");
    assert_eq!(files[0]["sha256"], model_sha.as_str());
    assert_eq!(
        nf_audit::sha256_file(&dir.join("stories260K.bin")).unwrap(),
        model_sha
    );
    assert!(!home.join("models/.pull-tiny").exists());

    // The stored model works by name, with its tokenizer beside it.
    let o = bin(&home)
        .args([
            "generate",
            "--model",
            "tiny",
            "-n",
            "5",
            "--temperature",
            "0",
            "--prompt",
            "Once",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin(&home).args(["models", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&o.stdout);
    assert!(
        list.contains("tiny") && list.contains("llama2c") && list.contains("hf://org/tiny@"),
        "{list}"
    );
    let o = bin(&home)
        .args(["models", "show", "tiny"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains(&model_sha));

    // Pulling again without --force refuses; the audit log has the failed and the good pull.
    let o = pull(&home, &hub, &[]);
    assert!(!o.status.success() && stderr(&o).contains("already stored"));
    let pulls: Vec<serde_json::Value> = audit_entries(&home)
        .into_iter()
        .filter(|e| e["command"] == "models pull")
        .collect();
    let results: Vec<&str> = pulls
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["error", "ok", "error"]);
    assert!(
        pulls[1]["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["sha256"] == model_sha.as_str()
                && i["path"] == format!("hf://org/tiny@{COMMIT}/stories260K.bin").as_str())
    );
    let o = bin(&home).args(["audit", "verify"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_wrong_checksum_is_not_installed_and_404_is_clear() {
    let assets = require_assets!();
    let hub = FakeHub::start(stories_files(&assets));
    let home = temp_dir("models-badsum");
    hub.wrong_sha.store(true, Ordering::SeqCst);
    let o = pull(&home, &hub, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("does not match the hub's") && err.contains("not installed"),
        "{err}"
    );
    assert!(!home.join("models/tiny").exists());
    assert!(
        !home
            .join("models/.pull-tiny/stories260K.bin.partial")
            .exists()
    );
    assert!(!home.join("models/.pull-tiny/stories260K.bin").exists());
    // Fixed upstream: the next pull succeeds.
    hub.wrong_sha.store(false, Ordering::SeqCst);
    let o = pull(&home, &hub, &[]);
    assert!(o.status.success(), "{}", stderr(&o));

    let o = bin(&home)
        .args([
            "--json",
            "models",
            "pull",
            "org/missing",
            "--endpoint",
            &hub.url,
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"code\":\"not_found\""));
    // No matching files.
    let o = bin(&home)
        .args([
            "models",
            "pull",
            "org/tiny",
            "--endpoint",
            &hub.url,
            "--name",
            "t2",
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("no files match"),
        "{}",
        stderr(&o)
    );
    // A server that is not there.
    let o = bin(&home)
        .args([
            "models",
            "pull",
            "org/tiny",
            "--endpoint",
            "http://127.0.0.1:1",
            "--name",
            "t3",
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("error: http://127.0.0.1:1/"),
        "{}",
        stderr(&o)
    );
}

/// A hostile hub whose file list names an absolute path (or one with `..`) must not get a
/// file written outside the store: the pull is refused before anything is downloaded.
#[test]
fn a_hub_listing_paths_outside_the_store_is_refused() {
    let assets = require_assets!();
    let outside = temp_dir("models-outside");
    for evil in [
        format!("{}/owned.bin", outside.display()),
        "../../../owned.bin".to_string(),
    ] {
        let mut files = stories_files(&assets);
        files.push((evil.clone(), b"not a model".to_vec()));
        let hub = FakeHub::start(files);
        let home = temp_dir("models-evil");
        let o = bin(&home)
            .args(["models", "pull", "org/tiny", "--endpoint", &hub.url])
            .args(["--include", "*"])
            .output()
            .unwrap();
        assert!(!o.status.success(), "{evil}: pull succeeded");
        let err = stderr(&o);
        assert!(err.contains("outside the model's folder"), "{err}");
        assert!(!outside.join("owned.bin").exists());
        assert!(!home.join("models/tiny").exists());
    }
}

/// Two pulls of one name would write the same partial files: the second is refused while
/// the first holds the lock (here the test holds it), and goes ahead once it is released.
#[test]
fn a_second_pull_of_the_same_name_waits_its_turn() {
    let assets = require_assets!();
    let hub = FakeHub::start(stories_files(&assets));
    let home = temp_dir("models-busy");
    std::fs::create_dir_all(home.join("models")).unwrap();
    let lock = std::fs::File::create(home.join("models/.pull-tiny.lock")).unwrap();
    lock.lock().unwrap();
    let o = pull(&home, &hub, &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("another `models pull` of tiny is running"),
        "{}",
        stderr(&o)
    );
    assert!(!home.join("models/tiny").exists());
    drop(lock);
    let o = pull(&home, &hub, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(home.join("models/tiny").is_dir());
}

#[test]
fn import_show_and_remove() {
    let assets = require_assets!();
    let home = temp_dir("models-import");
    // A llama2.c checkpoint alone: its tokenizer must be named.
    let lone = temp_dir("models-import-lone").join("lone.bin");
    std::fs::copy(assets.join("llama2c/stories260K.bin"), &lone).unwrap();
    let o = bin(&home)
        .args(["models", "import", p(&lone)])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("--tokenizer"),
        "{}",
        stderr(&o)
    );
    // The shared folder's tokenizer.bin is Llama 2's 32000 tokens: not this model's.
    let o = bin(&home)
        .args([
            "models",
            "import",
            p(&assets.join("llama2c/stories260K.bin")),
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("32000 tokens"),
        "{}",
        stderr(&o)
    );
    let o = bin(&home)
        .args([
            "models",
            "import",
            p(&assets.join("llama2c/stories260K.bin")),
            "--name",
            "s",
        ])
        .args([
            "--tokenizer",
            p(&assets.join("llama2c/tok512.bin")),
            "--link",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert_eq!(dir, home.join("models/s"));
    let o = bin(&home)
        .args(["--json", "models", "show", "s"])
        .output()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(ev["type"], "model.stored");
    let files = ev["files"].as_array().unwrap();
    assert_eq!(files[1]["path"], "tokenizer.bin");
    assert_eq!(
        files[1]["sha256"],
        nf_audit::sha256_file(&assets.join("llama2c/tok512.bin"))
            .unwrap()
            .as_str()
    );
    // Train and ingest find the stored model and its tokenizer by name.
    let o = bin(&home)
        .args(["generate", "--model", "s", "-n", "3", "--prompt", "Hi"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin(&home).args(["models", "rm", "s"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.exists());
    assert!(
        assets.join("llama2c/stories260K.bin").is_file(),
        "rm touched the source"
    );
    let o = bin(&home).args(["models", "rm", "s"]).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("no stored model"));
    let cmds: Vec<String> = audit_entries(&home)
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["command"].as_str().unwrap(),
                e["result"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        cmds,
        [
            "models import error",
            "models import error",
            "models import ok",
            "generate ok",
            "models rm ok",
            "models rm error"
        ]
    );
}

#[test]
fn a_stalled_download_gives_up_and_resumes() {
    let assets = require_assets!();
    let hub = FakeHub::start(stories_files(&assets));
    let home = temp_dir("models-stall");
    // The server sends half of the first file and then nothing, holding the connection.
    hub.stall_next.store(true, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let o = pull(&home, &hub, &["--stall-timeout", "1"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("no data for 1 s"), "{err}");
    assert!(err.contains("resumes"), "{err}");
    // It gave up long before the server's minute of silence ended.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let partial = home.join("models/.pull-tiny/stories260K.bin.partial");
    assert!(std::fs::metadata(&partial).unwrap().len() > 0);
    // The same pull again resumes and installs verified files.
    let o = pull(&home, &hub, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(home.join("models/tiny/stories260K.bin").is_file());
    assert!(
        hub.requests().iter().any(|r| r.contains("range=Some(")),
        "{:?}",
        hub.requests()
    );
    // A timeout that is not a positive number is refused by the parser.
    let o = pull(&home, &hub, &["--stall-timeout", "0"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("seconds"), "{}", stderr(&o));
}
