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
use nf_protocol::{Envelope, Event};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::cli::stderr_failure;
use crate::lock;
use nf_train::run::{EVENTS_FILE, LOCK_FILE};

/// What the dashboard shows of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's folder name.
    pub id: String,
    /// Its folder.
    pub dir: String,
    /// `running`, `finished`, `interrupted` or `failed`.
    pub status: &'static str,
    /// `lora` or `full`.
    pub method: Option<String>,
    /// The base model.
    pub model: Option<String>,
    /// `f32` or `bf16`: from the run's `train.start`, else its `run.json` (which reads as
    /// `f32` for runs from before precision was recorded: they trained in f32); null until
    /// either exists.
    pub precision: Option<String>,
    /// The step the run ends at.
    pub steps: Option<u64>,
    /// The last step reported.
    pub step: Option<u64>,
    /// Its training loss.
    pub loss: Option<f64>,
    /// The smoothed training loss.
    pub loss_ema: Option<f64>,
    /// The last validation loss.
    pub val_loss: Option<f64>,
    /// The last learning rate.
    pub lr: Option<f64>,
    /// The last training speed.
    pub tokens_per_s: Option<f64>,
    /// When the run started.
    pub started: Option<String>,
    /// When it ended.
    pub ended: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// What to do about the failure.
    pub hint: Option<String>,
    /// The final adapter or model.
    pub output: Option<String>,
}

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
    let path = dir.join(LOCK_FILE);
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

/// What a run's events have said so far.
#[derive(Debug, Clone, Default)]
struct Facts {
    summary: RunSummary,
    done_reason: Option<String>,
    last_error: Option<(String, Option<String>)>,
}

impl Facts {
    fn fold(&mut self, e: &Envelope) {
        let s = &mut self.summary;
        let ts = Some(e.ts.clone());
        match &e.event {
            Event::TrainStart {
                method,
                precision,
                steps,
                ..
            } => {
                s.started = s.started.take().or(ts);
                s.method = Some(method.clone());
                if !precision.is_empty() {
                    s.precision = Some(precision.clone());
                }
                s.steps = Some(*steps);
                // A resumed run starts over: an earlier interruption is history.
                self.done_reason = None;
                self.last_error = None;
                s.ended = None;
                s.output = None;
            }
            Event::TrainStep {
                step,
                loss,
                loss_ema,
                lr,
                tokens_per_s,
                ..
            } => {
                s.step = Some(*step);
                s.loss = Some(*loss);
                s.loss_ema = Some(*loss_ema);
                s.lr = Some(*lr);
                s.tokens_per_s = Some(*tokens_per_s);
            }
            Event::TrainEval { val_loss, .. } => s.val_loss = Some(*val_loss),
            Event::TrainDone { reason, output, .. } => {
                self.done_reason = Some(reason.clone());
                s.output = Some(output.clone());
                s.ended = ts;
            }
            Event::Error { message, hint, .. } => {
                self.last_error = Some((message.clone(), hint.clone()));
                s.ended = ts;
            }
            _ => {}
        }
    }
}

/// What a summary takes from `run.json`.
#[derive(Debug, Default)]
struct RunJson {
    model: Option<String>,
    method: Option<String>,
    precision: Option<String>,
}

/// How far a run's `events.ndjson` has been read, and what it said up to there.
#[derive(Debug, Default)]
struct Seen {
    offset: u64,
    partial: Vec<u8>,
    facts: Facts,
    /// The model, method and precision of `run.json`, read once it exists (it is written
    /// once, at the start of the run).
    config: Option<RunJson>,
}

/// The runs under `<home>/runs/`. Each run's events are read once, incrementally: a
/// summary costs the bytes appended since the last one, not the whole file.
#[derive(Debug)]
pub struct Runs {
    /// `<home>/runs`.
    pub dir: PathBuf,
    /// Processes this studio spawned that have not exited, by run id. Between spawn and
    /// the moment `train` takes its lock (while it loads the model) this is what says the
    /// run is alive.
    children: Mutex<HashMap<String, u32>>,
    seen: Mutex<HashMap<String, Seen>>,
}

impl Runs {
    /// The runs under `dir`.
    pub fn new(dir: PathBuf) -> Runs {
        Runs {
            dir,
            children: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Records a training process the studio spawned for run `id`.
    pub fn spawned(&self, id: &str, pid: u32) {
        lock(&self.children).insert(id.to_string(), pid);
    }

    /// The spawned process for run `id` has exited (and was reaped).
    pub fn exited(&self, id: &str) {
        lock(&self.children).remove(id);
    }

    /// The pid of the process the studio spawned for run `id`, while it lives.
    pub fn spawned_pid(&self, id: &str) -> Option<u32> {
        lock(&self.children).get(id).copied()
    }

    /// The run's summary from its folder.
    pub fn summary(&self, id: &str) -> RunSummary {
        let dir = self.dir.join(id);
        let facts = {
            let mut seen = lock(&self.seen);
            let seen = seen.entry(id.to_string()).or_default();
            let path = dir.join(EVENTS_FILE);
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len < seen.offset {
                // The file was replaced (or removed): read it again from the start.
                *seen = Seen::default();
            }
            let (lines, offset) = read_new_lines(&path, seen.offset, &mut seen.partial);
            seen.offset = offset;
            for (line, _) in lines {
                // Kinds this version does not know (and damaged lines) say nothing.
                if let Ok(e) = serde_json::from_str::<Envelope>(&line) {
                    seen.facts.fold(&e);
                }
            }
            // Read as the trainer writes it; a run.json that is missing (not written yet)
            // or unreadable says nothing, and is tried again next time.
            if seen.config.is_none()
                && let Ok(cfg) = nf_train::run::RunConfig::read(&dir)
            {
                seen.config = Some(RunJson {
                    model: Some(cfg.model.display().to_string()),
                    method: Some(cfg.method.name().into()),
                    precision: Some(cfg.precision.name().into()),
                });
            }
            let mut facts = seen.facts.clone();
            if let Some(cfg) = &seen.config {
                facts.summary.model.clone_from(&cfg.model);
                if facts.summary.method.is_none() {
                    facts.summary.method.clone_from(&cfg.method);
                }
                if facts.summary.precision.is_none() {
                    facts.summary.precision.clone_from(&cfg.precision);
                }
            }
            facts
        };
        let spawned = self.spawned_pid(id).is_some();
        finish(facts, id, &dir, spawned)
    }

    /// Every run, newest first (ids start with their date and time).
    pub fn list(&self) -> Vec<RunSummary> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|id| valid_id(id))
            .collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids.iter().map(|id| self.summary(id)).collect()
    }
}

/// The summary from what the events and `run.json` said, the lock, and `studio.log`.
fn finish(facts: Facts, id: &str, dir: &Path, spawned: bool) -> RunSummary {
    let Facts {
        summary: mut s,
        done_reason,
        last_error,
    } = facts;
    s.id = id.to_string();
    s.dir = dir.display().to_string();
    if lock_holder(dir).is_some() || spawned {
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
            s.ended = std::fs::metadata(dir.join(EVENTS_FILE))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| nf_protocol::rfc3339(d.as_secs() as i64, d.subsec_millis()));
        }
        let (error, hint) = last_error
            .or_else(|| {
                read_tail(&dir.join("studio.log"), 64 << 10).and_then(|log| stderr_failure(&log))
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

/// The last `max` bytes of a file as text (a log may grow without bound; its end says why
/// the process stopped).
fn read_tail(path: &Path, max: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(max))).ok()?;
    let mut bytes = Vec::new();
    f.take(max).read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Tails a run for an SSE client: every line of `events.ndjson` from the start as
/// `ndjson` events, then new ones as they are appended; a `status` event with the
/// summary first and whenever the status changes. Each line's SSE id is the file offset
/// after it, so a client that reconnects (sending `Last-Event-ID`) resumes at `from`
/// instead of seeing the run twice.
pub fn follow(
    runs: Arc<Runs>,
    id: String,
    from: u64,
    tx: mpsc::Sender<Result<SseEvent, Infallible>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let path = runs.dir.join(&id).join(EVENTS_FILE);
        let mut offset = from;
        let mut partial = Vec::new();
        let mut last_status: Option<(&'static str, Option<String>)> = None;
        loop {
            // A client that left is noticed here, not only when a send fails: a finished
            // run sends nothing more, and its task would otherwise poll forever.
            if tx.is_closed() {
                return;
            }
            // The file reads block, so they run off the async workers. The status is taken
            // before the lines: a run seen ended has written all its events, so the lines
            // read next include its last ones and a client never gets the end's status
            // before the end's events (a run ending between the two reads used to).
            let (runs2, id2, path2) = (Arc::clone(&runs), id.clone(), path.clone());
            let Ok((lines, read_to, s, p)) = tokio::task::spawn_blocking(move || {
                let summary = runs2.summary(&id2);
                let mut partial = partial;
                let (lines, read_to) = read_new_lines(&path2, offset, &mut partial);
                (lines, read_to, summary, partial)
            })
            .await
            else {
                return;
            };
            partial = p;
            offset = read_to;
            for (line, end) in lines {
                let event = SseEvent::default().event("ndjson").id(end.to_string());
                if tx.send(Ok(event.data(line))).await.is_err() {
                    return;
                }
            }
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
            // A run that is not running changes only if someone resumes it: look less often.
            let pause = if s.status == "running" { 300 } else { 2000 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    })
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
    use serde_json::Value;

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
    fn logs_are_read_from_their_end_only() {
        let dir = std::env::temp_dir().join(format!("nf-studio-logtail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("studio.log");
        std::fs::write(&path, "x".repeat(1 << 20) + "error: the end\n").unwrap();
        let tail = read_tail(&path, 64).unwrap();
        assert_eq!(tail.len(), 64);
        assert!(tail.ends_with("error: the end\n"));
        assert_eq!(read_tail(&path, 1 << 30).unwrap().len(), (1 << 20) + 15);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A follower of a finished run ends once its client leaves, though nothing more is
    /// sent (it used to poll the disk forever).
    #[test]
    fn a_follower_ends_when_its_client_leaves() {
        let runs = std::env::temp_dir().join(format!("nf-studio-follow-{}", std::process::id()));
        let dir = runs.join("r1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("events.ndjson"),
            "{\"type\":\"train.start\",\"ts\":\"t0\",\"method\":\"lora\",\"steps\":1}\n\
             {\"type\":\"train.done\",\"reason\":\"finished\",\"final_step\":1}\n",
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, mut rx) = mpsc::channel(16);
            let task = follow(Arc::new(Runs::new(runs.clone())), "r1".into(), 0, tx);
            // Both lines and the status arrive; then the client goes away.
            for _ in 0..3 {
                let _event = rx.recv().await.unwrap().unwrap();
            }
            drop(rx);
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the follower still runs after its client left")
                .unwrap();
        });
        std::fs::remove_dir_all(&runs).unwrap();
    }

    /// One `events.ndjson` line as `train` writes it.
    fn line(ts: &str, event: Event) -> String {
        let e = nf_protocol::Envelope {
            v: nf_protocol::VERSION,
            ts: ts.into(),
            event,
        };
        serde_json::to_string(&e).unwrap() + "\n"
    }

    fn start(steps: u64, precision: &str) -> Event {
        Event::TrainStart {
            run_dir: "r".into(),
            method: "lora".into(),
            trainable_params: 1,
            total_params: 2,
            steps,
            start_step: 0,
            batch_size: 1,
            seq_len: 8,
            grad_accum: 1,
            tokens_per_step: 8,
            train_tokens: 100,
            val_tokens: 10,
            resumed: false,
            precision: precision.into(),
            isa: "avx2".into(),
            kernel: String::new(),
        }
    }

    fn step(step: u64) -> Event {
        Event::TrainStep {
            step,
            loss: 2.5,
            loss_ema: 2.6,
            lr: 0.001,
            grad_norm: 1.0,
            tokens_per_s: 100.0,
            ms_per_step: 10.0,
            tflops: 0.1,
            ms: Default::default(),
            skipped: false,
        }
    }

    fn done(output: &str) -> Event {
        Event::TrainDone {
            reason: "completed".into(),
            steps: 3,
            final_step: 3,
            final_loss: Some(2.5),
            val_loss: None,
            wall_s: 1.0,
            ms_per_step: 10.0,
            tokens_per_s: 100.0,
            tflops: 0.1,
            utilization: None,
            peak_gflops: None,
            peak_under_measured: false,
            precision: "f32".into(),
            isa: "avx2".into(),
            kernel: String::new(),
            ms: Default::default(),
            output: output.into(),
        }
    }

    #[test]
    fn a_run_without_a_holder_or_an_end_failed() {
        let runs = std::env::temp_dir().join(format!("nf-studio-runs-{}", std::process::id()));
        let dir = runs.join("r1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("events.ndjson"),
            line("t0", start(10, "f32")) + &line("t0", step(3)),
        )
        .unwrap();
        let registry = Runs::new(runs.clone());
        let s = registry.summary("r1");
        assert_eq!((s.status, s.step, s.steps), ("failed", Some(3), Some(10)));
        assert!(
            s.ended.is_some(),
            "a failed run ended when its events stopped"
        );
        assert!(s.error.unwrap().contains("without finishing"));
        registry.spawned("r1", 1);
        assert_eq!(registry.summary("r1").status, "running");
        registry.exited("r1");
        // A lock held by someone means running, whatever the events say.
        let lock = File::create(dir.join("train.lock")).unwrap();
        lock.lock().unwrap();
        assert_eq!(registry.summary("r1").status, "running");
        drop(lock);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join("events.ndjson"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, line("t1", done("o")).as_bytes()))
            .unwrap();
        // Only the appended line is read now, and it finishes the run.
        let s = registry.summary("r1");
        assert_eq!(
            (s.status, s.step, s.output.as_deref()),
            ("finished", Some(3), Some("o"))
        );
        std::fs::remove_dir_all(&runs).unwrap();
    }

    #[test]
    fn precision_comes_from_the_start_event_or_run_json() {
        let runs = std::env::temp_dir().join(format!("nf-studio-prec-{}", std::process::id()));
        let (old, new) = (runs.join("old"), runs.join("new"));
        for d in [&old, &new] {
            std::fs::create_dir_all(d).unwrap();
        }
        // run.json as the trainer writes it (a stories260K LoRA run's), from before precision
        // was recorded (such runs trained in f32) and from a bf16 run.
        let mut run_json: Value = serde_json::from_str(include_str!(
            "../../nf-train/tests/fixtures/run_v1_hash.json"
        ))
        .unwrap();
        run_json.as_object_mut().unwrap().remove("precision");
        std::fs::write(old.join("run.json"), run_json.to_string()).unwrap();
        // (train.start of that time had no precision field.)
        std::fs::write(
            old.join("events.ndjson"),
            "{\"v\":1,\"type\":\"train.start\",\"ts\":\"t0\",\"run_dir\":\"r\",\"method\":\"lora\",\"trainable_params\":1,\"total_params\":2,\"steps\":1,\"start_step\":0,\"batch_size\":1,\"seq_len\":8,\"grad_accum\":1,\"tokens_per_step\":8,\"train_tokens\":100,\"val_tokens\":10,\"resumed\":false}\n",
        )
        .unwrap();
        run_json["precision"] = "bf16".into();
        std::fs::write(new.join("run.json"), run_json.to_string()).unwrap();
        let registry = Runs::new(runs.clone());
        // The old run's train.start does not say; its run.json means f32.
        assert_eq!(registry.summary("old").precision.as_deref(), Some("f32"));
        assert_eq!(registry.summary("new").precision.as_deref(), Some("bf16"));
        assert_eq!(registry.summary("new").method.as_deref(), Some("lora"));
        assert!(
            registry
                .summary("new")
                .model
                .unwrap()
                .ends_with("stories260K.bin")
        );
        // Once a run starts, its train.start says what it trains in, over run.json.
        std::fs::write(new.join("events.ndjson"), line("t0", start(1, "f32"))).unwrap();
        let registry = Runs::new(runs.clone());
        assert_eq!(registry.summary("new").precision.as_deref(), Some("f32"));
        std::fs::remove_dir_all(&runs).unwrap();
    }
}
