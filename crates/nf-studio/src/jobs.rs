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
/// Jobs running at once; one more is refused until one ends, so a page (or a script with
/// the token) cannot fork without bound.
const MAX_RUNNING: usize = 8;
/// Output lines kept per job: the newest ones (a page opened late replays from the
/// oldest kept), so a chatty job's memory stays bounded.
const KEEP_LINES: usize = 20_000;

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
    /// Lines `dropped..dropped + lines.len()` of the output.
    lines: std::collections::VecDeque<String>,
    dropped: usize,
}

impl JobState {
    fn push(&mut self, line: String) {
        if self.lines.len() == KEEP_LINES {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    fn text(&self) -> String {
        self.lines
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n")
    }
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
        v["events"] = Value::Array(parse_events(&s.text()));
        v
    }

    /// Lines from `from` on (from the oldest kept, when older ones were dropped), the
    /// number of the first one, and the summary when the job has ended and all were read.
    fn since(&self, from: usize) -> (Vec<String>, usize, Option<JobSummary>) {
        let s = lock(&self.state);
        let first = from.max(s.dropped);
        let lines = s.lines.iter().skip(first - s.dropped).cloned().collect();
        let done = (s.summary.status != "running").then(|| s.summary.clone());
        (lines, first, done)
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
        let running = lock(&self.list)
            .iter()
            .filter(|j| j.summary().status == "running")
            .count();
        if running >= MAX_RUNNING {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!("{running} jobs are running, the most the studio runs at once"),
                "wait for one to finish, or stop one",
            ));
        }
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
                lines: std::collections::VecDeque::new(),
                dropped: 0,
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
                // Only the tail is kept, however much the command writes.
                let mut tail = Vec::new();
                if let Some(mut e) = stderr {
                    let mut buf = vec![0u8; 8192];
                    while let Ok(n) = e.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        tail.extend_from_slice(&buf[..n]);
                        if tail.len() > 2 * STDERR_TAIL {
                            tail.drain(..tail.len() - STDERR_TAIL);
                        }
                    }
                }
                let start = tail.len().saturating_sub(STDERR_TAIL);
                String::from_utf8_lossy(&tail[start..]).into_owned()
            });
            let reader_job = Arc::clone(&job);
            let stdout_task = tokio::spawn(async move {
                if let Some(out) = stdout {
                    let mut lines = BufReader::new(out).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        lock(&reader_job.state).push(line);
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
                    let events = parse_events(&s.text());
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
            let (lines, first, done) = job.since(next);
            next = first;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_keeps_its_newest_lines_only() {
        let mut s = JobState {
            summary: JobSummary {
                id: 1,
                kind: "t".into(),
                args: Vec::new(),
                status: "running",
                exit_code: None,
                error: None,
                hint: None,
                started: String::new(),
                ended: None,
            },
            lines: std::collections::VecDeque::new(),
            dropped: 0,
        };
        for i in 0..KEEP_LINES + 5 {
            s.push(i.to_string());
        }
        assert_eq!((s.lines.len(), s.dropped), (KEEP_LINES, 5));
        let job = Job {
            state: Mutex::new(s),
            changed: Notify::new(),
            cancel: Notify::new(),
            cancelled: AtomicBool::new(false),
        };
        // A reader from line 0 starts at the oldest kept one and is told its number.
        let (lines, first, done) = job.since(0);
        assert_eq!(
            (lines.len(), first, lines[0].as_str()),
            (KEEP_LINES, 5, "5")
        );
        assert!(done.is_none());
        let (lines, first, _) = job.since(KEEP_LINES + 3);
        assert_eq!(
            (lines, first),
            (
                vec![(KEEP_LINES + 3).to_string(), (KEEP_LINES + 4).to_string()],
                KEEP_LINES + 3
            )
        );
    }

    /// At most MAX_RUNNING jobs run at once; one more is refused with 429.
    #[cfg(unix)]
    #[test]
    fn running_jobs_are_capped() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("nf-studio-jobs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join("slow");
        std::fs::write(&exe, "#!/bin/sh\nexec sleep 30\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cli = Cli {
            exe,
            home: dir.clone(),
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let jobs = Jobs::default();
            for _ in 0..MAX_RUNNING {
                jobs.start(&cli, "t", Vec::new(), None).unwrap();
            }
            let err = jobs.start(&cli, "t", Vec::new(), None).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::TOO_MANY_REQUESTS);
            for j in jobs.summaries() {
                jobs.get(j.id).unwrap().cancel();
            }
        });
        drop(rt);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
