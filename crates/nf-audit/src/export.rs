//! Exports for an auditor: one JSON document, or CSV with one row per entry.

use std::io::Write;
use std::path::Path;

use crate::entry::{Artifact, Entry};
use crate::{AuditError, LOG_FILE, Result, audit_dir, log::read_entries, verify};

/// The format of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON array of entries.
    Json,
    /// CSV, one row per entry.
    Csv,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "json" => Ok(ExportFormat::Json),
            "csv" => Ok(ExportFormat::Csv),
            o => Err(format!("unknown export format `{o}` (json or csv)")),
        }
    }
}

/// The entries of `home`'s log with `since <= time < until` (times normalized by
/// [`crate::parse_time`]), in log order.
pub fn entries_between(
    home: &Path,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<Vec<Entry>> {
    let (all, _) = read_entries(&audit_dir(home).join(LOG_FILE))?;
    Ok(all
        .into_iter()
        .filter(|e| since.is_none_or(|s| e.time.as_str() >= s))
        .filter(|e| until.is_none_or(|u| e.time.as_str() < u))
        .collect())
}

/// Writes the entries between `since` and `until` to `out`; returns how many.
///
/// JSON: `{"format":"neuralforge-audit-export","version":1,"exported":T,"log":PATH,
/// "verify":{"intact":bool,"entries":N,"problem":STRING|null},"since":T|null,
/// "until":T|null,"entries":[entry, …]}` where each entry is exactly as in the log.
///
/// CSV (RFC 4180, header row): `seq,time,user,host,command,event,args,inputs,outputs,
/// result,error,prev,signed`; `args` joined by spaces, `inputs`/`outputs` as
/// `kind path sha256` items joined by `; `.
pub fn export(
    home: &Path,
    format: ExportFormat,
    since: Option<&str>,
    until: Option<&str>,
    out: &mut dyn Write,
) -> Result<usize> {
    let entries = entries_between(home, since, until)?;
    let log = audit_dir(home).join(LOG_FILE);
    let io = |e: std::io::Error| AuditError::io(Path::new("<output>"), e);
    match format {
        ExportFormat::Json => {
            let report = verify(home)?;
            let doc = serde_json::json!({
                "format": "neuralforge-audit-export",
                "version": 1,
                "exported": crate::now(),
                "log": log.display().to_string(),
                "verify": {
                    "intact": report.is_intact(),
                    "entries": report.entries,
                    "signed": report.signed,
                    "problem": report.problem.as_ref().map(|p| p.to_string()),
                },
                "since": since,
                "until": until,
                "entries": entries,
            });
            serde_json::to_writer_pretty(&mut *out, &doc).map_err(|e| io(e.into()))?;
            out.write_all(b"\n").map_err(io)?;
        }
        ExportFormat::Csv => {
            out.write_all(
                b"seq,time,user,host,command,event,args,inputs,outputs,result,error,prev,signed\r\n",
            )
            .map_err(io)?;
            for e in &entries {
                let row = [
                    e.seq.to_string(),
                    e.time.clone(),
                    e.user.clone(),
                    e.host.clone(),
                    e.command.clone(),
                    e.event.clone().unwrap_or_default(),
                    e.args.join(" "),
                    artifacts(&e.inputs),
                    artifacts(&e.outputs),
                    e.result.clone(),
                    e.error.clone().unwrap_or_default(),
                    e.prev.clone(),
                    e.sig.is_some().to_string(),
                ];
                let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
                out.write_all(format!("{}\r\n", cells.join(",")).as_bytes())
                    .map_err(io)?;
            }
        }
    }
    out.flush().map_err(io)?;
    Ok(entries.len())
}

fn artifacts(a: &[Artifact]) -> String {
    a.iter()
        .map(|a| {
            format!(
                "{} {} {}",
                a.kind,
                a.path.as_deref().unwrap_or("-"),
                a.sha256.as_deref().unwrap_or("-")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
