//! `neuralforge lineage ARTIFACT` and `neuralforge lineage --document FILE`
//! (`nf_store::lineage`), printed.

use std::path::Path;

use anyhow::Result;
use nf_store::lineage::{self, Lineage};

use crate::cli::LineageArgs;
use crate::output::Output;

pub fn run(a: &LineageArgs, home: &Path, out: &mut Output) -> Result<()> {
    let log = lineage::audit_log(home);
    let l = match (&a.artifact, &a.document) {
        (_, Some(doc)) => lineage::forwards(doc, home, &log)?,
        (Some(art), None) => lineage::backwards(art, home, &log)?,
        (None, None) => unreachable!("clap requires one"),
    };
    emit(out, &l)
}

fn emit(out: &mut Output, l: &Lineage) -> Result<()> {
    let kind = l.kind;
    if !out.is_json() {
        let mut s = format!(
            "{kind} {}{}\n",
            l.artifact.display(),
            l.sha256
                .as_deref()
                .map_or(String::new(), |h| format!(" sha256 {h}"))
        );
        for e in &l.exports {
            s.push_str(&format!(
                "  export {} (by `{}` at {}, audit entry {})\n",
                e["path"].as_str().unwrap_or(""),
                e["command"].as_str().unwrap_or(""),
                e["time"].as_str().unwrap_or(""),
                e["seq"]
            ));
        }
        for r in &l.runs {
            s.push_str(&format!(
                "  run {} ({}, base {})\n",
                r["path"].as_str().unwrap_or(""),
                r["method"].as_str().unwrap_or("?"),
                r["base_model"].as_str().unwrap_or("?")
            ));
        }
        for d in &l.datasets {
            s.push_str(&format!(
                "    dataset {} {} manifest sha256 {}\n",
                d["name"].as_str().unwrap_or("?"),
                d["path"].as_str().unwrap_or(""),
                d["manifest_sha256"].as_str().unwrap_or("?")
            ));
        }
        if kind != "document" {
            for d in &l.documents {
                s.push_str(&format!(
                    "      document {} sha256 {}\n",
                    d["path"].as_str().unwrap_or(""),
                    d["sha256"].as_str().unwrap_or("?")
                ));
            }
        } else if l.datasets.is_empty() && l.runs.is_empty() && l.exports.is_empty() {
            s.push_str("  used by nothing NeuralForge knows of\n");
        }
        out.text(&s)?;
    }
    for n in &l.notes {
        eprintln!("note: {n}");
    }
    out.event(|| l.event())?;
    Ok(())
}
