//! `neuralforge lineage`: documents → ingest → train → export, then lineage from the run,
//! the adapter, a checkpoint and the exported file names the source documents with their
//! sha256, and `--document` finds the dataset, the run and the export.

use std::path::{Path, PathBuf};
use std::process::Command;

use nf_testkit::cli::{p, stderr};
use nf_testkit::{require_assets, temp_dir};

fn bin(home: &Path) -> Command {
    nf_testkit::neuralforge!(home)
}

fn lineage_json(home: &Path, args: &[&str]) -> serde_json::Value {
    let o = bin(home)
        .args(["--json", "lineage"])
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let line = String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    serde_json::from_str(&line).unwrap()
}

fn doc_shas(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut d: Vec<(String, String)> = v["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                Path::new(d["path"].as_str().unwrap())
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                d["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    d.sort();
    d
}

#[test]
fn lineage_from_artifacts_to_documents_and_back() {
    let assets = require_assets!();
    let home = temp_dir("lineage");
    let src = temp_dir("lineage-docs");
    let stories =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    let chars: Vec<char> = stories.chars().collect();
    let part = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    let docs: Vec<PathBuf> = vec![src.join("a.txt"), src.join("b.md")];
    std::fs::write(&docs[0], part(0, 6000)).unwrap();
    std::fs::write(&docs[1], part(6000, 10000)).unwrap();
    let unused = src.join("unused.txt");
    let model = [
        "--model".to_string(),
        p(&assets.join("llama2c/stories260K.bin")).to_string(),
        "--tokenizer".to_string(),
        p(&assets.join("llama2c/tok512.bin")).to_string(),
    ];
    let o = bin(&home)
        .args(["ingest", p(&src), "--name", "tiny", "--seq-len", "64"])
        .args(["--val-fraction", "0.3"])
        .args(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(&unused, "never ingested").unwrap();
    let run = home.join("runs/r1");
    let o = bin(&home)
        .args(["--threads", "1", "train", "--data", "tiny", "--steps", "2"])
        .args(["--batch-size", "2", "--seq-len", "32", "--save-every", "1"])
        .args(["--lora-rank", "2", "--out", p(&run)])
        .args(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let want: Vec<(String, String)> = vec![
        ("a.txt".into(), nf_audit::sha256_file(&docs[0]).unwrap()),
        ("b.md".into(), nf_audit::sha256_file(&docs[1]).unwrap()),
    ];
    // The manifest hash flows into run.json, the checkpoints and the adapter metadata.
    let manifest_sha = nf_audit::sha256_file(&home.join("datasets/tiny/manifest.json")).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert_eq!(cfg["datasets"][0]["manifest_sha256"], manifest_sha.as_str());
    assert_eq!(cfg["hashes"]["datasets"][0], manifest_sha.as_str());
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoints/step-2/state.json")).unwrap(),
    )
    .unwrap();
    assert!(
        state.to_string().contains(&manifest_sha),
        "checkpoint state lacks the manifest hash: {state}"
    );
    let st = std::fs::read(run.join("adapter/adapter_model.safetensors")).unwrap();
    let n = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&st[8..8 + n]).unwrap();
    assert_eq!(
        header["__metadata__"]["datasets"],
        format!("tiny:{manifest_sha}").as_str(),
        "adapter metadata: {}",
        header["__metadata__"]
    );

    // Backwards from the run, its adapter and a checkpoint.
    for art in [
        run.clone(),
        run.join("adapter"),
        run.join("checkpoints/step-1"),
    ] {
        let v = lineage_json(&home, &[p(&art)]);
        assert_eq!(doc_shas(&v), want, "{v}");
        assert_eq!(v["runs"][0]["method"], "lora");
        assert_eq!(v["datasets"][0]["manifest_sha256"], manifest_sha.as_str());
    }
    let o = bin(&home).args(["lineage", p(&run)]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("run ") && text.contains("dataset tiny"),
        "{text}"
    );
    assert!(
        text.contains(&format!("b.md sha256 {}", want[1].1)),
        "{text}"
    );

    // A real export of the run (f32 GGUF), which records itself in the audit log.
    let export = home.join("exports/merged.gguf");
    let o = bin(&home)
        .args(["--threads", "1", "export"])
        .arg(&run)
        .args(["--format", "gguf", "--quant", "f32", "--out"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = lineage_json(&home, &[p(&export)]);
    assert_eq!(v["kind"], "export");
    assert_eq!(doc_shas(&v), want, "{v}");
    assert_eq!(v["exports"][0]["command"], "export");

    // Forwards from a document: the dataset, the run and the export.
    let v = lineage_json(&home, &["--document", p(&docs[1])]);
    assert_eq!(v["datasets"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["datasets"][0]["name"], "tiny");
    let runs: Vec<&str> = v["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        runs,
        [std::fs::canonicalize(&run).unwrap().to_str().unwrap()]
    );
    let exports: Vec<&str> = v["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        exports,
        [std::fs::canonicalize(&export).unwrap().to_str().unwrap()]
    );
    // A document nothing used.
    let v = lineage_json(&home, &["--document", p(&unused)]);
    assert!(v["datasets"].as_array().unwrap().is_empty());
    assert!(v["runs"].as_array().unwrap().is_empty());
    let o = bin(&home)
        .args(["lineage", "--document", p(&unused)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("used by nothing"));

    // Re-ingesting changes the manifest; lineage of the run still names the documents it
    // trained on, from the audit log.
    std::fs::write(
        &docs[0],
        "a different text now, long enough to ingest. ".repeat(40),
    )
    .unwrap();
    let o = bin(&home)
        .args([
            "ingest",
            p(&src),
            "--name",
            "tiny",
            "--seq-len",
            "64",
            "--force",
        ])
        .args(&model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = bin(&home)
        .args(["--json", "lineage", p(&run)])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(doc_shas(&v), want, "{v}");
    assert!(
        stderr(&o).contains("re-ingested after the run"),
        "{}",
        stderr(&o)
    );
    // Nothing to trace.
    let o = bin(&home)
        .args(["lineage", p(&src.join("nope"))])
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("does not exist"));
}
