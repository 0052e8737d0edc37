//! `neuralforge audit show | verify | export | keygen`.

use nf_protocol::ErrorCode;
use std::path::Path;

use anyhow::Result;
use nf_audit::{Artifact, DeviceKey, Entry, ExportFormat};
use nf_protocol::Event;

use crate::audit::audit_error;
use crate::cli::{AuditCommand, AuditExportArgs, AuditShowArgs, AuditVerifyArgs};
use crate::errors::user_error;
use crate::output::Output;

pub fn run(cmd: &AuditCommand, home: &Path, out: &mut Output) -> Result<()> {
    match cmd {
        AuditCommand::Show(a) => show(a, home, out),
        AuditCommand::Verify(a) => verify(a, home, out),
        AuditCommand::Anchor => anchor(home, out),
        AuditCommand::Export(a) => export(a, home, out),
        AuditCommand::Keygen => keygen(home, out),
    }
}

fn time_arg(t: &Option<String>) -> Result<Option<String>> {
    t.as_deref()
        .map(nf_audit::parse_time)
        .transpose()
        .map_err(|e| {
            user_error(
                ErrorCode::BadInput,
                e.to_string(),
                "e.g. --since 2026-12-01, --since 2026-12-01T09:00:00Z or --since 24h",
            )
        })
}

fn show(a: &AuditShowArgs, home: &Path, out: &mut Output) -> Result<()> {
    let (since, until) = (time_arg(&a.since)?, time_arg(&a.until)?);
    let entries =
        nf_audit::entries_between(home, since.as_deref(), until.as_deref()).map_err(audit_error)?;
    let log = nf_audit::audit_dir(home).join(nf_audit::LOG_FILE);
    if let Ok((_, torn)) = nf_audit::read_entries(&log)
        && torn > 0
    {
        eprintln!(
            "note: the log ends in {torn} bytes without a newline (an interrupted write); `neuralforge audit verify` says more"
        );
    }
    if !out.is_json() && entries.is_empty() {
        eprintln!(
            "no audit entries{} in {}",
            if since.is_some() || until.is_some() {
                " in that time range"
            } else {
                ""
            },
            nf_audit::audit_dir(home).display()
        );
    }
    for e in &entries {
        out.event(|| Event::AuditEntry {
            entry: serde_json::to_value(e).unwrap_or_default(),
        })?;
        out.text(&entry_text(e))?;
    }
    Ok(())
}

/// `#3 2026-12-02T03:04:05.678Z alice@host train finish ok` and one indented line per
/// input and output.
fn entry_text(e: &Entry) -> String {
    let mut s = format!(
        "#{} {} {}@{} {}{} {}{}{}\n",
        e.seq,
        e.time,
        e.user,
        e.host,
        e.command,
        e.event
            .as_deref()
            .map_or(String::new(), |v| format!(" {v}")),
        e.result,
        e.error
            .as_deref()
            .map_or(String::new(), |m| format!(": {m}")),
        if e.sig.is_some() { " (signed)" } else { "" },
    );
    if !e.args.is_empty() {
        s.push_str(&format!("    args: {}\n", e.args.join(" ")));
    }
    for (dir, list) in [("in ", &e.inputs), ("out", &e.outputs)] {
        for a in list {
            s.push_str(&format!(
                "    {dir} {:<10} {} {}\n",
                a.kind,
                a.sha256.as_deref().map_or("-", |h| &h[..h.len().min(16)]),
                a.path.as_deref().unwrap_or("")
            ));
        }
    }
    s
}

/// `SEQ:SHA256` → its parts.
fn parse_anchor(s: &str) -> Result<(u64, String)> {
    let parsed = s.split_once(':').and_then(|(seq, hash)| {
        let ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        Some((seq.trim().parse::<u64>().ok()?, hash.to_string())).filter(|_| ok)
    });
    parsed.ok_or_else(|| {
        user_error(
            ErrorCode::BadInput,
            format!("--expect-head {s:?} is not SEQ:SHA256"),
            "pass the line `neuralforge audit anchor` printed, e.g. 42:9f86d0…(64 hex digits)",
        )
    })
}

fn anchor(home: &Path, out: &mut Output) -> Result<()> {
    let r = nf_audit::verify(home).map_err(audit_error)?;
    if let Some(p) = &r.problem {
        return Err(user_error(
            ErrorCode::AuditBroken,
            p.to_string(),
            "anchor only an intact log: run `neuralforge audit verify` first",
        ));
    }
    let Some(hash) = &r.last_hash else {
        return Err(user_error(
            ErrorCode::NotFound,
            "the audit log has no entries yet".to_string(),
            "anchor after the first recorded command",
        ));
    };
    let anchor = format!("{}:{hash}", r.entries);
    if out.is_json() {
        out.event(|| Event::AuditAnchor {
            seq: r.entries,
            sha256: hash.clone(),
        })?;
    } else {
        out.text(&format!("{anchor}\n"))?;
        eprintln!(
            "keep this line somewhere this machine cannot write (a ticket, an email, paper); `neuralforge audit verify --expect-head {anchor}` checks the log against it"
        );
    }
    Ok(())
}

fn verify(a: &AuditVerifyArgs, home: &Path, out: &mut Output) -> Result<()> {
    let expect_head = a.expect_head.as_deref().map(parse_anchor).transpose()?;
    let mut r = nf_audit::verify(home).map_err(audit_error)?;
    if let Some((seq, hash)) = &expect_head {
        r.check_anchor(*seq, hash);
    }
    if let Some(key) = &a.expect_key {
        r.check_key(key);
    }
    out.event(|| Event::AuditVerify {
        intact: r.is_intact(),
        entries: r.entries,
        signed: r.signed,
        first_time: r.first_time.clone(),
        last_time: r.last_time.clone(),
        head_seq: r.head.as_ref().map(|h| h.seq),
        key: r.key.clone(),
        problem: r.problem.as_ref().map(ToString::to_string),
        problem_kind: r.problem.as_ref().map(|p| p.kind().to_string()),
        problem_seq: r.problem.as_ref().and_then(|p| p.seq()),
        notes: r.notes.clone(),
    })?;
    if !out.is_json() {
        for n in &r.notes {
            eprintln!("note: {n}");
        }
    }
    match &r.problem {
        None => {
            let span = match (&r.first_time, &r.last_time) {
                (Some(a), Some(b)) => format!(" from {a} to {b}"),
                _ => String::new(),
            };
            let key = match &r.key {
                Some(k) => format!(", {} signed by device key {}", r.signed, &k[..16]),
                None => ", unsigned (no device key; `neuralforge audit keygen` makes one)".into(),
            };
            out.text(&format!(
                "audit log intact: {} entries{span}{key}\n",
                r.entries
            ))?;
            Ok(())
        }
        Some(p) => {
            let hint = match p.kind() {
                "torn_tail" => "an interrupted write; the next command moves the torn bytes aside and records that".to_string(),
                _ => format!(
                    "the log was changed after it was written; keep {} as evidence and compare it with a backup",
                    nf_audit::audit_dir(home).display()
                ),
            };
            Err(user_error(ErrorCode::AuditBroken, p.to_string(), hint))
        }
    }
}

fn export(a: &AuditExportArgs, home: &Path, out: &mut Output) -> Result<()> {
    let format: ExportFormat = a
        .format
        .parse()
        .map_err(|e: String| user_error(ErrorCode::BadInput, e, "--format is json or csv"))?;
    let (since, until) = (time_arg(&a.since)?, time_arg(&a.until)?);
    match &a.out {
        None => {
            if out.is_json() {
                return Err(user_error(
                    ErrorCode::BadInput,
                    "audit export writes the export itself to stdout, which --json reserves for events",
                    "pass --out FILE with --json",
                ));
            }
            let mut stdout = std::io::stdout().lock();
            nf_audit::export(
                home,
                format,
                since.as_deref(),
                until.as_deref(),
                &mut stdout,
            )
            .map_err(audit_error)?;
            Ok(())
        }
        Some(path) => crate::audit::scoped(home, "audit export", |rec| {
            let mut n = 0;
            nf_formats::atomic::write_atomic(path, |w| {
                n = nf_audit::export(home, format, since.as_deref(), until.as_deref(), w)
                    .map_err(std::io::Error::other)?;
                Ok(())
            })?;
            rec.outputs.push(Artifact::file("audit-export", path)?);
            rec.details = Some(serde_json::json!({"entries": n}));
            out.event(|| Event::AuditExported {
                path: path.display().to_string(),
                format: a.format.clone(),
                entries: n as u64,
            })?;
            if !out.is_json() {
                eprintln!("exported {n} entries to {}", path.display());
            }
            Ok(())
        }),
    }
}

fn keygen(home: &Path, out: &mut Output) -> Result<()> {
    crate::audit::preflight(home)?;
    let key = DeviceKey::generate(home).map_err(|e| match e {
        nf_audit::AuditError::KeyExists { path } => user_error(
            ErrorCode::Exists,
            format!("a device key already exists at {}", path.display()),
            "entries signed with it would no longer verify with a new one; keep it",
        ),
        e => audit_error(e),
    })?;
    // The key's public half goes on the record: from here on every entry must be signed.
    let public = nf_audit::audit_dir(home).join(nf_audit::PUBLIC_KEY_FILE);
    crate::audit::append(
        home,
        crate::audit::record("audit keygen")
            .output(Artifact::file("key", &public).map_err(audit_error)?)
            .details(serde_json::json!({"public_key": key.public_hex()})),
    )?;
    if !out.is_json() {
        eprintln!(
            "device key written to {} (mode 0600); entries are signed from now on",
            nf_audit::key_path(home).display()
        );
    }
    out.text(&format!("{}\n", key.public_hex()))?;
    Ok(())
}
