//! How commands write to the audit log (`nf_audit`).
//!
//! Policy: **no unrecorded work.** A command that reads user data or writes an artifact
//! first checks that the log can be written ([`scoped`] calls `preflight`) and refuses to
//! start otherwise; when it ends, its entry (ok or error) is appended, and a failure to
//! append fails the command (exit 1, code `audit`), even though its artifacts exist, so a
//! script never takes an unrecorded artifact for a recorded one.
//!
//! The one call for another command (e.g. `export`):
//!
//! ```ignore
//! crate::audit::append(home, crate::audit::record("export")
//!     .input(nf_audit::Artifact::path("run", &run_dir)?)
//!     .output(nf_audit::Artifact::path("export", &out_file)?))?;
//! ```
//!
//! or, to record failures too, wrap the command's body:
//! `crate::audit::scoped(home, "export", |rec| { ...; rec.outputs.push(..); Ok(()) })`.

use std::path::Path;

use anyhow::Result;
use nf_audit::{Artifact, AuditError, Outcome, Record};

use crate::errors::UserError;
use nf_protocol::ErrorCode;
use nf_train::run;

/// Flags whose value is a prompt or system message: stored as `sha256:<hex>` unless the
/// command line says `--audit-prompts`.
const PROMPT_FLAGS: &[&str] = &["--prompt", "-p", "--system", "--sample-prompt"];

/// This process's arguments (without the program name), prompts replaced by their hashes.
pub fn args() -> Vec<String> {
    redact(std::env::args().skip(1).collect())
}

/// `args` with the values of [`PROMPT_FLAGS`] replaced by their hashes, unless
/// `--audit-prompts` is among them (`nf_audit::redact_args`).
pub fn redact(args: Vec<String>) -> Vec<String> {
    if args.iter().any(|a| a == "--audit-prompts") {
        return args;
    }
    nf_audit::redact_args(args, PROMPT_FLAGS)
}

/// A record of `command` with this process's (redacted) arguments.
pub fn record(command: &str) -> Record {
    Record::new(command, args())
}

/// Appends a record; an audit failure becomes a user-facing error.
pub fn append(home: &Path, r: Record) -> Result<()> {
    nf_audit::record(home, r).map_err(audit_error)?;
    Ok(())
}

/// Fails when the log could not take an entry now.
pub fn preflight(home: &Path) -> Result<()> {
    nf_audit::AuditLog::open(home)
        .and_then(|l| l.preflight())
        .map_err(audit_error)
}

/// Runs `body` with a record to fill in (inputs, outputs, event, details) and appends it
/// when `body` ends, with the error message when it failed.
pub fn scoped<T>(
    home: &Path,
    command: &str,
    body: impl FnOnce(&mut Record) -> Result<T>,
) -> Result<T> {
    preflight(home)?;
    let mut rec = record(command);
    let result = body(&mut rec);
    match &result {
        Ok(_) => rec.outcome = Outcome::Ok,
        Err(e) => rec.outcome = Outcome::Error(crate::errors::one_line(e)),
    }
    if let Err(audit) = append(home, rec) {
        return match result {
            Ok(_) => Err(audit),
            Err(e) => {
                eprintln!(
                    "warning: the failure could not be recorded: {}",
                    crate::errors::one_line(&audit)
                );
                Err(e)
            }
        };
    }
    result
}

pub fn audit_error(e: AuditError) -> anyhow::Error {
    let hint = match &e {
        AuditError::Corrupt { .. } => {
            "run `neuralforge audit verify`; to start a new chain, move the audit folder aside (keep it for the auditor)"
        }
        _ => {
            "NeuralForge does not work unrecorded: make <home>/audit writable (permissions, disk space), then run again"
        }
    };
    UserError::new(ErrorCode::Audit, format!("audit log: {e}"), hint).into()
}

/// What `--model/--tokenizer/--adapter` read, as artifacts: the base model's files (the
/// loaded model's path), a run folder's `run.json` and final adapter, an `--adapter`
/// folder, a `--tokenizer` file.
pub fn model_inputs(
    home: &Path,
    args: &crate::cli::ModelArgs,
    loaded_path: &Path,
) -> Result<Vec<Artifact>> {
    let mut v = nf_audit::model_artifacts(home, "model", loaded_path)?;
    if let Ok(given) = nf_store::resolve::resolve_model_path(&args.model, home)
        && run::is_run(&given)
    {
        v.push(Artifact::file("run", given.join(run::RUN_FILE))?);
        if given.join(run::ADAPTER_DIR).is_dir() && args.adapter.is_none() {
            v.push(Artifact::tree("adapter", given.join(run::ADAPTER_DIR))?);
        }
    }
    if let Some(a) = &args.adapter {
        // A run folder's adapter is its adapter/ (not its checkpoints).
        let dir = if a.join(run::ADAPTER_DIR).is_dir() {
            a.join(run::ADAPTER_DIR)
        } else {
            a.clone()
        };
        v.push(Artifact::path("adapter", dir)?);
    }
    if let Some(t) = args.tokenizer.as_ref().filter(|t| t.is_file()) {
        v.push(Artifact::new(
            "tokenizer",
            t,
            Some(nf_audit::cached_file_hash(home, t)?),
        ));
    }
    Ok(v)
}

/// A prompt (or message) as an input: its sha256 only, and the text in `details` only with
/// `--audit-prompts`.
pub fn prompt_input(kind: &str, text: &str) -> Artifact {
    Artifact::text_hash(kind, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_are_replaced_by_hashes() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let h = format!("sha256:{}", nf_audit::sha256_hex(b"secret"));
        assert_eq!(
            redact(v(&["generate", "-m", "x", "--prompt", "secret", "-n", "5"])),
            v(&["generate", "-m", "x", "--prompt", &h, "-n", "5"])
        );
        assert_eq!(
            redact(v(&["generate", "-psecret", "--system=secret"])),
            v(&["generate", &format!("-p{h}"), &format!("--system={h}")])
        );
        assert_eq!(redact(v(&["generate", "-p", "secret"]))[2], h);
        // train's sample prompt is a prompt too.
        assert_eq!(
            redact(v(&[
                "train",
                "--sample-prompt",
                "secret",
                "--sample-prompt=secret"
            ])),
            v(&[
                "train",
                "--sample-prompt",
                &h,
                &format!("--sample-prompt={h}")
            ])
        );
        let kept = v(&["generate", "--prompt", "secret", "--audit-prompts"]);
        assert_eq!(redact(kept.clone()), kept);
    }
}
