//! Training runs, read from their folders: `run.json`, `events.ndjson`, `train.lock`
//! and, for runs the studio started, `studio.log` (the process's stderr).
//!
//! Nothing here depends on the studio having started a run: a run started from a
//! terminal, or by an earlier studio, reads the same. A run is running while its process
//! holds `train.lock`; the kernel drops that lock when the process dies however it dies,
//! so a killed run shows as failed at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cli::stderr_failure;

/// What the dashboard shows of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub dir: String,
    /// `running`, `finished`, `interrupted` or `failed`.
    pub status: &'static str,
    pub method: Option<String>,
    pub model: Option<String>,
    pub steps: Option<u64>,
    pub step: Option<u64>,
    pub loss: Option<f64>,
    pub loss_ema: Option<f64>,
    pub val_loss: Option<f64>,
    pub lr: Option<f64>,
    pub tokens_per_s: Option<f64>,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub output: Option<String>,
}

/// Processes the studio spawned, by run id, that have not exited yet. Between spawn and
/// the moment `train` takes its lock (while it loads the model) this is what says the
/// run is alive.
pub type Children = Arc<Mutex<HashMap<String, u32>>>;

/// A run id is a folder name under `<home>/runs/`: no separators, no dot files.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether a process holds the run's lock, and its pid (written into the lock file).
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let path = dir.join("train.lock");
    let file = File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = (&file).read_to_string(&mut text);
            // A holder that has not written its pid yet is still a holder.
            Some(text.trim().parse().unwrap_or(0))
        }
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// The run's summary from its folder; `spawned` says the studio's own child for it has
/// not exited.
pub fn summary(runs: &Path, id: &str, spawned: bool) -> RunSummary {
    let dir = runs.join(id);
    let mut s = RunSummary {
        id: id.to_string(),
        dir: dir.display().to_string(),
        ..RunSummary::default()
    };
    if let Ok(text) = std::fs::read_to_string(dir.join("run.json"))
        && let Ok(cfg) = serde_json::from_str::<Value>(&text)
    {
        s.model = cfg["model"].as_str().map(str::to_string);
        s.method = cfg["method"].as_str().map(str::to_string);
    }
    let mut done_reason = None;
    let mut last_error: Option<(String, Option<String>)> = None;
    if let Ok(text) = std::fs::read_to_string(dir.join("events.ndjson")) {
        for e in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let ts = e["ts"].as_str().map(str::to_string);
            match e["type"].as_str().unwrap_or("") {
                "train.start" => {
                    s.started = s.started.take().or(ts);
                    s.method = e["method"].as_str().map(str::to_string).or(s.method.take());
                    s.steps = e["steps"].as_u64();
                    // A resumed run starts over: an earlier interruption is history.
                    done_reason = None;
                    last_error = None;
                    s.ended = None;
                    s.output = None;
                }
                "train.step" => {
                    s.step = e["step"].as_u64();
                    s.loss = e["loss"].as_f64();
                    s.loss_ema = e["loss_ema"].as_f64();
                    s.lr = e["lr"].as_f64();
                    s.tokens_per_s = e["tokens_per_s"].as_f64();
                }
                "train.eval" => s.val_loss = e["val_loss"].as_f64(),
                "train.done" => {
                    done_reason = e["reason"].as_str().map(str::to_string);
                    s.output = e["output"].as_str().map(str::to_string);
                    s.ended = ts;
                }
                "error" => {
                    last_error = Some((
                        e["message"]
                            .as_str()
                            .unwrap_or("the run failed")
                            .to_string(),
                        e["hint"].as_str().map(str::to_string),
                    ));
                    s.ended = ts;
                }
                _ => {}
            }
        }
    }
    if lock_holder(&dir).is_some() || spawned {
        s.status = "running";
        s.ended = None;
        return s;
    }
    s.status = match (done_reason.as_deref(), &last_error) {
        (Some("interrupted"), None) => "interrupted",
        (Some(_), None) => "finished",
        _ => "failed",
    };
    if s.status == "failed" {
        // A killed process writes no last event; its last write is when it stopped.
        if s.ended.is_none() {
            s.ended = std::fs::metadata(dir.join("events.ndjson"))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| nf_protocol::rfc3339(d.as_secs() as i64, d.subsec_millis()));
        }
        let (error, hint) = last_error
            .or_else(|| {
                std::fs::read_to_string(dir.join("studio.log"))
                    .ok()
                    .and_then(|log| stderr_failure(&log))
            })
            .unwrap_or_else(|| {
                (
                    "the training process ended without finishing (killed or crashed)".into(),
                    Some("resume it to continue from its last checkpoint".into()),
                )
            });
        s.error = Some(error);
        s.hint = hint;
    }
    s
}

/// Every run under `<home>/runs/`, newest first (ids start with their date and time).
pub fn list(runs: &Path, children: &Children) -> Vec<RunSummary> {
    let Ok(entries) = std::fs::read_dir(runs) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|id| valid_id(id))
        .collect();
    ids.sort_by(|a, b| b.cmp(a));
    let alive = children.lock().unwrap_or_else(|p| p.into_inner()).clone();
    ids.iter()
        .map(|id| summary(runs, id, alive.contains_key(id)))
        .collect()
}

/// Tails a run for an SSE client: every line of `events.ndjson` from the start as
/// `ndjson` events, then new ones as they are appended; a `status` event with the
/// summary first and whenever the status changes. Each line's SSE id is the file offset
/// after it, so a client that reconnects (sending `Last-Event-ID`) resumes at `from`
/// instead of seeing the run twice.
pub fn follow(
    runs: PathBuf,
    id: String,
    children: Children,
    from: u64,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    tokio::spawn(async move {
        let path = runs.join(&id).join("events.ndjson");
        let mut offset = from;
        let mut partial = Vec::new();
        let mut last_status: Option<(&'static str, Option<String>)> = None;
        loop {
            let (lines, read_to) = read_new_lines(&path, offset, &mut partial);
            offset = read_to;
            for (line, end) in lines {
                let event = SseEvent::default().event("ndjson").id(end.to_string());
                if tx.send(Ok(event.data(line))).await.is_err() {
                    return;
                }
            }
            let spawned = children
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&id);
            let s = summary(&runs, &id, spawned);
            let key = (s.status, s.error.clone());
            if last_status.as_ref() != Some(&key) {
                let data = serde_json::to_string(&s).unwrap_or_default();
                if tx
                    .send(Ok(SseEvent::default().event("status").data(data)))
                    .await
                    .is_err()
                {
                    return;
                }
                last_status = Some(key);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
}

/// The complete lines appended to `path` since `offset`, each with the file offset just
/// after it; an incomplete last line waits in `partial` for its end. Returns the new
/// offset.
fn read_new_lines(path: &Path, offset: u64, partial: &mut Vec<u8>) -> (Vec<(String, u64)>, u64) {
    let Ok(mut file) = File::open(path) else {
        return (Vec::new(), offset);
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len < offset {
        // The file was replaced: start again from its beginning.
        partial.clear();
        return read_new_lines(path, 0, partial);
    }
    let mut buf = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut buf).is_err() {
        return (Vec::new(), offset);
    }
    let new_offset = offset + buf.len() as u64;
    // The offset where `partial` begins, so each line knows where it ends in the file.
    let mut line_end = offset - partial.len() as u64;
    partial.extend_from_slice(&buf);
    let mut lines = Vec::new();
    while let Some(at) = partial.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = partial.drain(..=at).collect();
        line_end += line.len() as u64;
        let text = String::from_utf8_lossy(&line[..line.len() - 1])
            .trim()
            .to_string();
        if !text.is_empty() {
            lines.push((text, line_end));
        }
    }
    (lines, new_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_folder_names() {
        assert!(valid_id("20261202-051500-lora"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b", "a b"] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn tails_only_complete_lines() {
        let dir = std::env::temp_dir().join(format!("nf-studio-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.ndjson");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let mut partial = Vec::new();
        let (lines, off) = read_new_lines(&path, 0, &mut partial);
        assert_eq!(lines, vec![("{\"a\":1}".to_string(), 8)]);
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n").unwrap();
        let (lines, _) = read_new_lines(&path, off, &mut partial);
        assert_eq!(lines, vec![("{\"b\":2}".to_string(), 16)]);
        // A reconnecting reader starts at a line's end offset and sees only what follows.
        let (lines, _) = read_new_lines(&path, 8, &mut Vec::new());
        assert_eq!(lines, vec![("{\"b\":2}".to_string(), 16)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_without_a_holder_or_an_end_failed() {
        let runs = std::env::temp_dir().join(format!("nf-studio-runs-{}", std::process::id()));
        let dir = runs.join("r1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("events.ndjson"),
            "{\"type\":\"train.start\",\"ts\":\"t0\",\"method\":\"lora\",\"steps\":10}\n\
             {\"type\":\"train.step\",\"step\":3,\"loss\":2.5,\"loss_ema\":2.6,\"lr\":0.001}\n",
        )
        .unwrap();
        let s = summary(&runs, "r1", false);
        assert_eq!((s.status, s.step, s.steps), ("failed", Some(3), Some(10)));
        assert!(
            s.ended.is_some(),
            "a failed run ended when its events stopped"
        );
        assert!(s.error.unwrap().contains("without finishing"));
        assert_eq!(summary(&runs, "r1", true).status, "running");
        // A lock held by someone means running, whatever the events say.
        let lock = File::create(dir.join("train.lock")).unwrap();
        lock.lock().unwrap();
        assert_eq!(summary(&runs, "r1", false).status, "running");
        drop(lock);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("events.ndjson"))
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    b"{\"type\":\"train.done\",\"ts\":\"t1\",\"reason\":\"completed\",\"output\":\"o\"}\n",
                )
            })
            .unwrap();
        assert_eq!(summary(&runs, "r1", false).status, "finished");
        std::fs::remove_dir_all(&runs).unwrap();
    }
}
