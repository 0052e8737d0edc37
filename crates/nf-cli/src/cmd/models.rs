//! `neuralforge models list | import | pull | show | rm`: the model store
//! (`nf_store::store`), printed and recorded in the audit log.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use nf_audit::Artifact;
use nf_protocol::{ErrorCode, Event, human_bytes};
use nf_store::pull::{DEFAULT_ENDPOINT, PullOptions, PullProgress};
use nf_store::store::{self, ImportOptions, MODEL_FILE, StoredModel};

use crate::cli::{ModelsCommand, ModelsImportArgs, ModelsNameArgs, ModelsPullArgs};
use crate::errors::user_error;
use crate::output::Output;

pub fn run(cmd: &ModelsCommand, home: &Path, offline: bool, out: &mut Output) -> Result<()> {
    match cmd {
        ModelsCommand::List => list(home, out),
        ModelsCommand::Show(a) => show(a, home, out),
        ModelsCommand::Import(a) => {
            crate::audit::scoped(home, "models import", |rec| import(a, home, out, rec))
        }
        ModelsCommand::Pull(a) => {
            if offline {
                return Err(offline_error());
            }
            crate::audit::scoped(home, "models pull", |rec| pull(a, home, out, rec))
        }
        ModelsCommand::Rm(a) => {
            crate::audit::scoped(home, "models rm", |rec| rm(a, home, out, rec))
        }
    }
}

pub fn offline_error() -> anyhow::Error {
    user_error(
        ErrorCode::Offline,
        "offline mode: `models pull` would connect to the network",
        "unset NEURALFORGE_OFFLINE / drop --offline to download, or `neuralforge models import PATH` a local copy",
    )
}

fn stored_event(m: &StoredModel, dir: &Path, with_files: bool) -> Event {
    Event::ModelStored {
        name: m.name.clone(),
        path: dir.display().to_string(),
        format: m.model_format.clone(),
        source: m.source.clone(),
        added: m.added.clone(),
        bytes: m.bytes(),
        files: if with_files {
            m.files
                .iter()
                .map(|f| serde_json::to_value(f).unwrap_or_default())
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn list(home: &Path, out: &mut Output) -> Result<()> {
    let models = store::list(home);
    if models.is_empty() && !out.is_json() {
        eprintln!(
            "no models in {} (`neuralforge models import PATH` or `models pull REPO`)",
            store::models_dir(home).display()
        );
    }
    for (d, m) in models {
        match m {
            Ok(m) => {
                out.event(|| stored_event(&m, &d, false))?;
                out.text(&format!(
                    "{:<28} {:<8} {:>10}  {}\n",
                    m.name,
                    m.model_format,
                    human_bytes(m.bytes()),
                    m.source
                ))?;
            }
            Err(_) => {
                if !out.is_json() {
                    eprintln!(
                        "note: {} has no readable {MODEL_FILE} (not imported by NeuralForge)",
                        d.display()
                    );
                }
            }
        }
    }
    Ok(())
}

fn show(a: &ModelsNameArgs, home: &Path, out: &mut Output) -> Result<()> {
    let dir = store::model_dir(home, &a.name)?;
    let m = store::read_stored(&dir)?;
    out.event(|| stored_event(&m, &dir, true))?;
    let mut s = format!(
        "name:    {}\nformat:  {}\nsource:  {}\nadded:   {}\npath:    {}\n",
        m.name,
        m.model_format,
        m.source,
        m.added,
        dir.display()
    );
    if let Some(c) = &m.commit {
        s.push_str(&format!("commit:  {c}\n"));
    }
    s.push_str("files:\n");
    for f in &m.files {
        s.push_str(&format!(
            "  {}  {:>10}  {}\n",
            f.sha256,
            human_bytes(f.size),
            f.path
        ));
    }
    out.text(&s)?;
    Ok(())
}

fn import(
    a: &ModelsImportArgs,
    home: &Path,
    out: &mut Output,
    rec: &mut nf_audit::Record,
) -> Result<()> {
    let imported = store::import(
        home,
        &ImportOptions {
            path: a.path.clone(),
            name: a.name.clone(),
            tokenizer: a.tokenizer.clone(),
            link: a.link,
            force: a.force,
        },
    )?;
    let (m, dir) = (&imported.model, &imported.dir);
    for (from, sha256) in &imported.sources {
        rec.inputs
            .push(Artifact::new("model-file", from, Some(sha256.clone())));
    }
    rec.outputs
        .push(Artifact::file("model", dir.join(MODEL_FILE))?);
    rec.details = Some(serde_json::json!({"name": m.name, "linked": a.link}));
    out.event(|| stored_event(m, dir, true))?;
    if !out.is_json() {
        eprintln!(
            "stored {} ({}, {} files, {})",
            m.name,
            m.model_format,
            m.files.len(),
            human_bytes(m.bytes())
        );
    }
    out.text(&format!("{}\n", dir.display()))?;
    Ok(())
}

fn rm(a: &ModelsNameArgs, home: &Path, out: &mut Output, rec: &mut nf_audit::Record) -> Result<()> {
    // The record names what was removed, so its model.json is hashed before it goes.
    let json = store::model_dir(home, &a.name)?.join(MODEL_FILE);
    if json.is_file() {
        rec.inputs.push(Artifact::file("model", &json)?);
    }
    let dir = store::remove(home, &a.name)?;
    rec.details = Some(serde_json::json!({"name": a.name}));
    if !out.is_json() {
        eprintln!("removed {}", dir.display());
    }
    Ok(())
}

fn pull(
    a: &ModelsPullArgs,
    home: &Path,
    out: &mut Output,
    rec: &mut nf_audit::Record,
) -> Result<()> {
    let opts = PullOptions {
        repo: a.repo.clone(),
        revision: a.revision.clone(),
        include: a.include.clone(),
        endpoint: a.endpoint.clone(),
        name: a.name.clone(),
        force: a.force,
        stall_timeout: Duration::from_secs_f64(a.stall_timeout),
    };
    let tty = std::io::stderr().is_terminal() && !out.is_json();
    let pulled = nf_store::pull(home, &opts, &mut |p: PullProgress| {
        // Progress is advisory: a reader that stopped listening does not stop the download.
        let _ = out.event(|| Event::DownloadProgress {
            file: p.file.to_string(),
            done: p.done,
            total: p.total,
        });
        if tty {
            progress_line(&p);
        }
    })?;
    let (m, dir) = (&pulled.model, &pulled.dir);
    let (repo, commit) = (
        m.repo.clone().unwrap_or_default(),
        m.commit.clone().unwrap_or_default(),
    );
    for f in &m.files {
        rec.inputs.push(Artifact {
            kind: "remote-file".into(),
            path: Some(format!("hf://{repo}@{commit}/{}", f.path)),
            sha256: Some(f.sha256.clone()),
        });
    }
    rec.outputs
        .push(Artifact::file("model", dir.join(MODEL_FILE))?);
    rec.details = Some(serde_json::json!({
        "name": m.name, "repo": repo, "revision": a.revision, "commit": commit,
        "endpoint": m.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT),
    }));
    out.event(|| stored_event(m, dir, true))?;
    if !out.is_json() {
        eprintln!(
            "stored {} from {repo}@{} ({} files, {})",
            m.name,
            &commit[..commit.len().min(12)],
            m.files.len(),
            human_bytes(m.bytes())
        );
    }
    out.text(&format!("{}\n", dir.display()))?;
    Ok(())
}

/// One file's progress on stderr, redrawn in place; its last report ends the line.
fn progress_line(p: &PullProgress) {
    let pct = p.total.map_or(String::new(), |t| {
        format!(" {:>3}%", p.done * 100 / t.max(1))
    });
    eprint!(
        "\r\x1b[2K{}{pct} {}{}",
        p.file,
        human_bytes(p.done),
        p.total
            .map_or(String::new(), |t| format!(" / {}", human_bytes(t)))
    );
    if p.finished {
        eprintln!();
    }
    let _ = std::io::stderr().flush();
}
