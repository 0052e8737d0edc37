//! State on disk that the product reads back: a checkpoint (weights, optimizer moments,
//! the run's state, the completion marker) and the audit log (entries, head, device keys).

use std::path::PathBuf;

use nf_audit::{
    Artifact, AuditLog, DeviceKey, ExportFormat, HEAD_FILE, KEY_FILE, LOG_FILE, Outcome,
    PUBLIC_KEY_FILE, Record, audit_dir, sha256_hex,
};
use nf_train::checkpoint::{
    MARKER_FILE, NamedTensor, load_checkpoint, save_checkpoint, scan_checkpoints,
};
use serde_json::json;

use super::{FileSet, put, verdict};
use crate::{Harness, Setup, Target, Verdict};

pub const CHECKPOINT: Target = Target {
    name: "checkpoint",
    what: "a checkpoint folder: weights and optimizer safetensors, state.json, the COMPLETE marker (hashes kept valid so the parsers behind them are reached)",
    setup: checkpoint_setup,
};

pub const AUDIT: Target = Target {
    name: "audit",
    what: "an audit log's lines, its head and its device keys; verify, export, then append",
    setup: audit_setup,
};

/// The files of a checkpoint; the marker last.
const CKPT_FILES: &[&str] = &[
    "weights.safetensors",
    "optimizer.safetensors",
    "state.json",
    MARKER_FILE,
];

struct CheckpointHarness {
    seeds: Vec<Vec<u8>>,
    files: FileSet,
    root: PathBuf,
    dir: PathBuf,
}

fn checkpoint_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let seed_root = s.work.join("seed");
    let (a, b): (Vec<f32>, Vec<f32>) = ((0..32).map(|i| i as f32 * 0.25).collect(), vec![1.0; 8]);
    let t = |name, shape, data| NamedTensor { name, shape, data };
    let weights = [
        t("layers.0.wq.lora_a", &[4usize, 8][..], &a[..]),
        t("norm.weight", &[8], &b),
    ];
    // The state as the trainer writes it: step, data position, schedule, hashes, losses.
    let state = json!({
        "step": 3, "tokens_seen": 768, "best_val": [2, 2.5],
        "batcher": {"epoch": 0, "position": 3, "order_seed": 42},
        "hashes": {"config": "ab", "base": "cd", "data": "ef"},
        "losses": [3.1, 2.9, 2.8], "rng": [1, 2, 3, 4],
    });
    let dir = save_checkpoint(&seed_root, 3, &weights, &weights, &weights, &state)
        .map_err(|e| e.to_string())?;
    let files = FileSet::read(&dir, CKPT_FILES)?;
    let root = s.work.join("checkpoints");
    let dir = root.join("step-3");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(Box::new(CheckpointHarness {
        seeds: files.seeds(),
        files,
        root,
        dir,
    }))
}

impl Harness for CheckpointHarness {
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        &[
            b"{",
            b"}",
            b"\"",
            b"  ",
            b"\n",
            b"step",
            b"\"dtype\"",
            b"\"F32\"",
            b"\"shape\"",
            b".m",
            b".v",
            b"../",
            b"COMPLETE",
        ]
    }
    fn run(&mut self, input: &[u8]) -> Verdict {
        let (pick, files) = self.files.contents(input);
        let (marker_file, data_files) = files.split_last().expect("the marker is last");
        let mut marker = String::new();
        for &(name, bytes) in data_files {
            put(&self.dir.join(name), bytes);
            marker.push_str(&format!("{}  {name}\n", sha256_hex(bytes)));
        }
        // Unless the input is the marker itself, a marker matching the (possibly mutated)
        // files, so the loader goes on to parse them instead of stopping at a hash mismatch.
        let marker = if pick == data_files.len() {
            marker_file.1
        } else {
            marker.as_bytes()
        };
        put(&self.dir.join(marker_file.0), marker);
        let loaded = load_checkpoint(&self.dir);
        std::hint::black_box(scan_checkpoints(&self.root).map(|s| s.skipped.len()).ok());
        verdict(&loaded)
    }
}

/// The audit files a home holds; the keys live in the audit folder too.
const AUDIT_FILES: &[&str] = &[LOG_FILE, HEAD_FILE, KEY_FILE, PUBLIC_KEY_FILE];

struct AuditHarness {
    seeds: Vec<Vec<u8>>,
    files: FileSet,
    home: PathBuf,
}

fn audit_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let seed_home = s.work.join("seed-home");
    DeviceKey::generate(&seed_home).map_err(|e| e.to_string())?;
    let log = AuditLog::open(&seed_home).map_err(|e| e.to_string())?;
    for (i, command) in ["ingest", "train", "export", "generate"].iter().enumerate() {
        let rec = Record::new(
            command,
            vec![format!("--name=n{i}"), "--".into(), "/data/docs".into()],
        )
        .input(Artifact::text_hash("prompt", "what is the dose?"))
        .output(Artifact::new(
            "dataset",
            "/home/u/.neuralforge/datasets/n",
            Some("ab".repeat(32)),
        ))
        .outcome(if i == 2 {
            Outcome::Error("no space left".into())
        } else {
            Outcome::Ok
        });
        log.append(rec).map_err(|e| e.to_string())?;
    }
    let files = FileSet::read(&audit_dir(&seed_home), AUDIT_FILES)?;
    let home = s.work.join("home");
    std::fs::create_dir_all(audit_dir(&home)).map_err(|e| e.to_string())?;
    Ok(Box::new(AuditHarness {
        seeds: files.seeds(),
        files,
        home,
    }))
}

impl Harness for AuditHarness {
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        &[
            b"{",
            b"}",
            b"\"",
            b"\n",
            b"\"seq\"",
            b"\"prev\"",
            b"\"sig\"",
            b"\"time\"",
            b"\"sha256\"",
            b"18446744073709551615",
            b"-1",
            b"null",
            b"\\u0000",
        ]
    }
    fn run(&mut self, input: &[u8]) -> Verdict {
        self.files.write(input, &audit_dir(&self.home));
        let report = nf_audit::verify(&self.home);
        let mut out = Vec::new();
        std::hint::black_box(
            nf_audit::export(&self.home, ExportFormat::Csv, None, None, &mut out).ok(),
        );
        // The next command appends to whatever log is there, tampered or not.
        let appended =
            AuditLog::open(&self.home).and_then(|l| l.append(Record::new("fuzz", Vec::new())));
        std::hint::black_box(appended.ok());
        match report {
            Ok(r) if r.is_intact() => Verdict::Accepted,
            _ => Verdict::Refused,
        }
    }
}
