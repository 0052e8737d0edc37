//! Jobs: short CLI commands started from the studio (ingest, import, pull, generate),
//! kept in memory with their NDJSON output so a page can replay and follow them.

use std::convert::Infallible;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::Event as SseEvent;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{Notify, mpsc};

use crate::cli::{Cli, failure, parse_events};
use crate::error::ApiError;
use crate::lock;

/// How much of a job's stderr is kept for its error message.
const STDERR_TAIL: usize = 16 * 1024;
/// Finished jobs kept in memory; older ones are forgotten (their work is on disk and in
/// the audit log).
const KEEP_JOBS: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    pub id: u64,
    pub kind: String,
    pub args: Vec<String>,
    /// `running`, `ok`, `failed` or `cancelled` (stopped on request without finishing).
    pub status: &'static str,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub started: String,
    pub ended: Option<String>,
}

#[derive(Debug)]
pub struct Job {
    state: Mutex<JobState>,
    changed: Notify,
    /// Asks the task that owns the child to send it SIGTERM.
    cancel: Notify,
    cancelled: AtomicBool,
}

#[derive(Debug)]
struct JobState {
    summary: JobSummary,
    lines: Vec<String>,
}

impl Job {
    /// Asks a running job's command to stop (SIGTERM: `generate` ends its text there;
    /// other commands end as killed). False when it has already ended.
    pub fn cancel(&self) -> bool {
        if lock(&self.state).summary.status != "running" {
            return false;
        }
        self.cancelled.store(true, Ordering::SeqCst);
        // `notify_one` keeps the wake-up for a task not yet waiting.
        self.cancel.notify_one();
        true
    }

    pub fn summary(&self) -> JobSummary {
        lock(&self.state).summary.clone()
    }

    /// The summary plus every event so far.
    pub fn detail(&self) -> Value {
        let s = lock(&self.state);
        let mut v = serde_json::to_value(&s.summary).unwrap_or_default();
        v["events"] = Value::Array(parse_events(&s.lines.join("\n")));
        v
    }

    /// Lines from `from` on, and the summary when the job has ended and all were read.
    fn since(&self, from: usize) -> (Vec<String>, Option<JobSummary>) {
        let s = lock(&self.state);
        let lines = s.lines.get(from..).unwrap_or_default().to_vec();
        let done = (s.summary.status != "running").then(|| s.summary.clone());
        (lines, done)
    }
}

#[derive(Debug, Default)]
pub struct Jobs {
    list: Mutex<Vec<Arc<Job>>>,
    next: AtomicU64,
}

impl Jobs {
    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        lock(&self.list)
            .iter()
            .find(|j| lock(&j.state).summary.id == id)
            .cloned()
    }

    pub fn summaries(&self) -> Vec<JobSummary> {
        lock(&self.list).iter().rev().map(|j| j.summary()).collect()
    }

    /// Starts `neuralforge --json ARGS`, feeds it `stdin` when given, and records its
    /// output as it comes.
    pub fn start(
        &self,
        cli: &Cli,
        kind: &str,
        args: Vec<String>,
        stdin: Option<Vec<u8>>,
    ) -> Result<u64, ApiError> {
        let mut cmd = cli.command(&args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| ApiError::internal(format!("cannot run {}: {e}", cli.exe.display())))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let job = Arc::new(Job {
            state: Mutex::new(JobState {
                summary: JobSummary {
                    id,
                    kind: kind.to_string(),
                    args,
                    status: "running",
                    exit_code: None,
                    error: None,
                    hint: None,
                    started: nf_protocol::rfc3339_now(),
                    ended: None,
                },
                lines: Vec::new(),
            }),
            changed: Notify::new(),
            cancel: Notify::new(),
            cancelled: AtomicBool::new(false),
        });
        {
            let mut list = lock(&self.list);
            if list.len() >= KEEP_JOBS
                && let Some(old) = list.iter().position(|j| j.summary().status != "running")
            {
                list.remove(old);
            }
            list.push(Arc::clone(&job));
        }
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Written from a task of its own so a large input cannot block the reader of
            // stdout; the pipe closes when it is dropped, which ends the command's input.
            tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
            });
        }
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        tokio::spawn(async move {
            let stderr_task = tokio::spawn(async move {
                let mut text = String::new();
                if let Some(mut e) = stderr {
                    let mut buf = Vec::new();
                    let _ = e.read_to_end(&mut buf).await;
                    let start = buf.len().saturating_sub(STDERR_TAIL);
                    text = String::from_utf8_lossy(&buf[start..]).into_owned();
                }
                text
            });
            let reader_job = Arc::clone(&job);
            let stdout_task = tokio::spawn(async move {
                if let Some(out) = stdout {
                    let mut lines = BufReader::new(out).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        lock(&reader_job.state).lines.push(line);
                        reader_job.changed.notify_waiters();
                    }
                }
            });
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    () = job.cancel.notified() => {
                        // `id()` is None once the child is reaped, so this never signals
                        // a recycled pid.
                        if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                            // SAFETY: kill(2) has no memory effects.
                            unsafe { libc::kill(pid, libc::SIGTERM) };
                        }
                    }
                }
            };
            let _ = stdout_task.await;
            let stderr = stderr_task.await.unwrap_or_default();
            {
                let mut s = lock(&job.state);
                let code = status.as_ref().ok().and_then(|s| s.code());
                let ok = status.as_ref().is_ok_and(|s| s.success());
                s.summary.exit_code = code;
                let cancelled = job.cancelled.load(Ordering::SeqCst);
                s.summary.status = match (ok, cancelled) {
                    (true, _) => "ok",
                    (false, true) => "cancelled",
                    (false, false) => "failed",
                };
                s.summary.ended = Some(nf_protocol::rfc3339_now());
                if !ok && !cancelled {
                    let events = parse_events(&s.lines.join("\n"));
                    let (error, hint) = failure(&events, &stderr);
                    s.summary.error = Some(error);
                    s.summary.hint = hint;
                }
            }
            job.changed.notify_waiters();
        });
        Ok(id)
    }
}

/// Feeds a job's lines (`ndjson` events) and then its summary (`done`) to an SSE client,
/// from line `from` (0 for a page opened late, which then sees the whole job). Each
/// line's SSE id is its number plus one, so a reconnecting client resumes after it.
pub fn follow(job: Arc<Job>, from: usize, tx: mpsc::Sender<Result<SseEvent, Infallible>>) {
    tokio::spawn(async move {
        let mut next = from;
        loop {
            // A client that left is noticed here, not only when a send fails.
            if tx.is_closed() {
                return;
            }
            // Register for the wake-up before reading, so a line pushed in between is
            // not missed; the timeout is a second guard.
            let changed = job.changed.notified();
            let (lines, done) = job.since(next);
            for line in lines {
                next += 1;
                let event = SseEvent::default().event("ndjson").id(next.to_string());
                if tx.send(Ok(event.data(line))).await.is_err() {
                    return;
                }
            }
            if let Some(summary) = done {
                let data = serde_json::to_string(&summary).unwrap_or_default();
                let _ = tx
                    .send(Ok(SseEvent::default().event("done").data(data)))
                    .await;
                return;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), changed).await;
        }
    });
}
