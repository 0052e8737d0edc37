//! Running the `neuralforge` binary: short commands whose events come back whole, and the
//! shared reading of a failed command's `error` event or `error:`/`hint:` lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use axum::http::StatusCode;
use nf_protocol::{Envelope, Event};
use serde_json::Value;
use tokio::process::Command;

use crate::error::ApiError;

/// The CLI binary and the home every command it runs works in.
#[derive(Debug, Clone)]
pub struct Cli {
    pub exe: PathBuf,
    pub home: PathBuf,
}

impl Cli {
    /// `neuralforge --home HOME ARGS...`, with nothing on stdin.
    pub fn plain(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--home")
            .arg(&self.home)
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// The same with `--json`: stdout carries only NDJSON events.
    pub fn command(&self, args: &[String]) -> Command {
        let mut cmd = self.plain(&[]);
        cmd.arg("--json").args(args);
        cmd
    }

    /// Runs a short command to the end and returns its events. A non-zero exit is an
    /// error carrying the CLI's own message and hint, unless `keep_on_failure` names an
    /// event kind that the command reports its verdict with (as `audit verify` does).
    pub async fn collect(
        &self,
        args: &[String],
        limit: Duration,
        keep_on_failure: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let mut cmd = self.command(args);
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| ApiError::internal(format!("cannot run {}: {e}", self.exe.display())))?;
        let output = tokio::time::timeout(limit, child.wait_with_output())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("`{}` took longer than {}s", args.join(" "), limit.as_secs()),
                    "try again, or run the command in a terminal",
                )
            })?
            .map_err(ApiError::internal)?;
        let events = parse_events(&String::from_utf8_lossy(&output.stdout));
        let kept = keep_on_failure.is_some_and(|kind| events.iter().any(|e| e["type"] == kind));
        if !output.status.success() && !kept {
            let (error, hint) = failure(&events, &String::from_utf8_lossy(&output.stderr));
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                error,
                hint,
            });
        }
        Ok(events)
    }
}

impl Cli {
    /// The first event of `kind` a short command reports, if any.
    pub async fn first(
        &self,
        args: &[String],
        limit: Duration,
        kind: &str,
    ) -> Result<Option<Value>, ApiError> {
        let events = self.collect(args, limit, Some(kind)).await?;
        Ok(events.into_iter().find(|e| e["type"] == kind))
    }

    /// Every event of `kind` a short command reports, as a JSON array.
    pub async fn all(&self, args: &[String], kind: &str) -> Result<Value, ApiError> {
        let events = self.collect(args, Duration::from_secs(60), None).await?;
        Ok(Value::Array(
            events.into_iter().filter(|e| e["type"] == kind).collect(),
        ))
    }
}

/// The JSON objects of an NDJSON text; lines that are not JSON are skipped.
pub fn parse_events(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(Value::is_object)
        .collect()
}

/// The message and hint of a failed command: its last `error` event, else the last
/// `error:` and `hint:` lines it wrote to stderr, else a generic line.
pub fn failure(events: &[Value], stderr: &str) -> (String, Option<String>) {
    let last_error = events.iter().rev().find_map(|e| {
        match serde_json::from_value::<Envelope>(e.clone()).ok()?.event {
            Event::Error { message, hint, .. } => Some((message, hint)),
            _ => None,
        }
    });
    last_error
        .or_else(|| stderr_failure(stderr))
        .unwrap_or_else(|| ("the command failed without saying why".to_string(), None))
}

/// The last `error:` line of a command's stderr and the `hint:` line after it.
pub fn stderr_failure(stderr: &str) -> Option<(String, Option<String>)> {
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines.iter().rposition(|l| l.starts_with("error: "))?;
    let error = lines[at].trim_start_matches("error: ").to_string();
    let hint = lines
        .get(at + 1)
        .and_then(|l| l.strip_prefix("hint: "))
        .map(str::to_string);
    Some((error, hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_prefer_the_error_event() {
        let events = parse_events(
            "{\"v\":1,\"ts\":\"t\",\"type\":\"error\",\"code\":\"bad_input\",\"message\":\"bad\",\"hint\":\"fix it\"}\nnot json\n",
        );
        assert_eq!(
            failure(&events, "error: other\n"),
            ("bad".into(), Some("fix it".into()))
        );
        assert_eq!(
            failure(&[], "loading\nerror: no such file\nhint: check the path\n"),
            ("no such file".into(), Some("check the path".into()))
        );
        assert_eq!(failure(&[], "error: x\n").1, None);
        assert!(failure(&[], "").0.contains("without saying why"));
    }
}
