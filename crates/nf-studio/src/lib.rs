#![warn(missing_docs)]
//! `nf-studio`: the local web app behind `neuralforge studio`.
//!
//! The studio does no compute. It serves embedded pages, spawns `neuralforge` subprocesses
//! for every piece of work, and shows what they write: a training run's
//! `runs/<id>/events.ndjson` (tailed from disk, so runs started from a terminal show up
//! too and a restarted studio reattaches), or a short job's NDJSON stdout.
//!
//! # Security
//!
//! - The server binds 127.0.0.1 unless `--host` names another address (then it warns).
//! - A random 256-bit token is made at each start and printed in the URL
//!   (`http://127.0.0.1:PORT/?token=T`). Every `/api/` route needs it, as
//!   `Authorization: Bearer T` or a `?token=T` query (event streams and download links,
//!   where a browser cannot set headers); without it: 401. The pages and their scripts hold
//!   no data and are served without it. The page script moves the token from the address
//!   bar into `localStorage` (per origin, so per port) and removes it from the address. No
//!   cookie is ever set: browsers send a host's cookies to all its ports, so another
//!   program on another localhost port would receive the token.
//! - `Host` must name the bound address (or `localhost` / `127.0.0.1` / `[::1]` with the
//!   bound port when bound to loopback; any IP literal with the port when bound to
//!   0.0.0.0 or ::, never another name): otherwise 403, which stops DNS rebinding.
//! - An `Origin` header, when present, must be the studio's own origin, and
//!   `Sec-Fetch-Site`, when present, must be `same-origin` or `none` (`same-site` is
//!   another port of this host, another program): otherwise 403. No CORS headers are ever
//!   sent.
//! - Every answer carries a Content-Security-Policy allowing only the studio's own scripts,
//!   styles and connections, and no framing.
//!
//! # HTTP API
//!
//! JSON in and out. A failure is a 4xx/5xx with `{"error": "...", "hint": "..."|null}`;
//! when it comes from the CLI these are its `error:` and `hint:` lines.
//!
//! Pages (`GET`, all the same `index.html` shell; `app.js` routes on the path): `/`
//! (dashboard), `/configure`, `/ingest`, `/models`, `/generate`, `/audit`. Assets:
//! `/assets/<file>` for the files in `assets/`.
//!
//! | route | what it does |
//! |---|---|
//! | `GET /api/info` | `{version, home, tasks}`; `tasks` is the number of live tokio tasks (connections, event streams, job readers), so a load test can see that none outlives its client |
//! | `GET /api/runs` | run summaries, newest first (see below) |
//! | `GET /api/runs/{id}` | one summary plus `config` (its `run.json`, or null) |
//! | `GET /api/runs/{id}/events` | SSE: every line of `events.ndjson` as `event: ndjson`, then new lines as they are written; `event: status` with the summary at the start and whenever the status changes. A reconnect (`Last-Event-ID`) resumes after the last line seen |
//! | `POST /api/runs/{id}/stop` | SIGTERM to the run's process (it saves a checkpoint and ends `interrupted`; a run still loading is signalled once it holds its lock); 409 when not running |
//! | `POST /api/runs/{id}/resume` | spawns `train --resume`; `{id}`; 409 when running |
//! | `POST /api/train` | body: a [`TrainRequest`](api::TrainRequest); spawns `train --out runs/<id>`; `{id}` |
//! | `POST /api/train/estimate` | the same body; runs `train --dry-run`; the `train.plan` event's fields |
//! | `GET /api/jobs` | job summaries, newest first (every `POST` that starts a job answers 429 while 8 are running; a job keeps its newest 20,000 output lines) |
//! | `GET /api/jobs/{id}` | one job summary plus `events` (the NDJSON lines parsed) |
//! | `GET /api/jobs/{id}/events` | SSE: each stdout line as `event: ndjson`; at the end `event: done` with the job summary; a reconnect resumes after the last line seen |
//! | `POST /api/jobs/{id}/cancel` | SIGTERM to the job's command: `generate` ends there normally (stop reason `cancelled`); others end `cancelled`; 409 when it has ended |
//! | `PUT /api/uploads/{upload}/{name}` | raw file body, saved as `<home>/uploads/<upload>/<name>`; `{upload, path}` |
//! | `POST /api/ingest` | `{name, model, tokenizer?, paths?: [server paths], upload?: id, seq_len?, force?}`; job |
//! | `GET /api/datasets` | the `dataset.info` events of `datasets list` |
//! | `GET /api/datasets/{name}` | `{info: dataset.info of datasets show, manifest: its manifest.json}` |
//! | `GET /api/models` | the `model.stored` events of `models list` |
//! | `GET /api/models/{name}` | `{stored: model.stored, info: model.info of inspect}` |
//! | `POST /api/models/import` | `{path, name?, tokenizer?}`; job |
//! | `POST /api/models/pull` | `{repo, revision?, include?: [globs]}`; job (emits `download.progress`) |
//! | `POST /api/generate` | `{model, tokenizer?, run?: run id (its adapter), prompt, chat?, system?, history?: [{role, content}], chat_template?, max_tokens?, temperature?, top_p?, seed?}`; job (emits `generate.token`, then `generate.done`); the prompt and conversation reach the CLI on stdin, never in its arguments |
//! | `GET /api/audit?since=&until=&command=&result=` | `audit.entry` entries, newest first |
//! | `POST /api/audit/verify` | the `audit.verify` event's fields |
//! | `GET /api/audit/export?format=json\|csv` | the `audit export` document as a download |
//!
//! A job answer is `{job: id}`. A job summary: `{id, kind, args, status: "running" | "ok" |
//! "failed" | "cancelled", exit_code, error, hint, started, ended}`.
//!
//! A run summary: `{id, dir, status: "running" | "finished" | "interrupted" | "failed",
//! method, model, precision ("f32" or "bf16"; f32 for runs from before it was recorded,
//! null until the run has a run.json), steps, step, loss, loss_ema, val_loss, lr,
//! tokens_per_s, started, ended, error, hint, output}` (fields unknown yet are null). A run
//! is running while its process holds the lock on `train.lock`; one that stopped without
//! `train.done` failed, with the last `error` event, else the last `error:` line of its
//! `studio.log`, as its error.

pub mod api;
pub mod assets;
mod auth;
mod cli;
pub mod error;
mod jobs;
pub mod runs;

use std::fs::OpenOptions;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};

pub use crate::error::{ApiError, Error};

/// Threads for blocking file reads (run followers, uploads), at most, however many
/// clients are connected.
const BLOCKING_THREADS: usize = 8;

/// How to start the studio.
#[derive(Debug, Clone)]
pub struct Options {
    /// The address to bind; the CLI passes 127.0.0.1 unless told otherwise.
    pub host: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// The NeuralForge home every spawned command works in.
    pub home: PathBuf,
    /// The `neuralforge` binary to spawn.
    pub cli: PathBuf,
}

/// The server is listening: where, and the URL (with its token) to open.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The address listened on.
    pub addr: SocketAddr,
    /// The address to open, with the session token.
    pub url: String,
}

/// The state every request handler shares.
#[derive(Debug)]
pub struct App {
    access: auth::Access,
    cli: cli::Cli,
    jobs: jobs::Jobs,
    /// The runs in `<home>/runs/`, and the training processes this studio spawned.
    runs: Arc<runs::Runs>,
}

impl App {
    fn runs_dir(&self) -> PathBuf {
        self.runs.dir.clone()
    }

    /// A fresh run id in the CLI's own style (`<date>-<time>-<method>`), made unique.
    fn new_run_id(&self, method: &str) -> Result<String, ApiError> {
        let base = nf_protocol::run_id(method);
        let runs = self.runs_dir();
        std::fs::create_dir_all(&runs)
            .map_err(|e| ApiError::internal(format!("{}: {e}", runs.display())))?;
        for n in 0..1000 {
            let id = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            // create_dir fails on an existing folder, so two requests never share one.
            match std::fs::create_dir(runs.join(&id)) {
                Ok(()) => return Ok(id),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ApiError::internal(format!("{}: {e}", runs.display()))),
            }
        }
        Err(ApiError::internal("cannot find a free run id"))
    }

    /// Starts `train` for run `id` as a process of its own: its own process group (a
    /// Ctrl-C in the studio's terminal does not reach it), stdout discarded (events go to
    /// the run's `events.ndjson`), stderr appended to the run's `studio.log`. Nothing ties
    /// it to the studio, so it runs on when the studio stops.
    fn spawn_run(&self, id: &str, args: Vec<String>) -> Result<(), ApiError> {
        let dir = self.runs_dir().join(id);
        let log_path = dir.join("studio.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ApiError::internal(format!("{}: {e}", log_path.display())))?;
        let mut cmd = self.cli.plain(&args);
        cmd.stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| {
            ApiError::internal(format!("cannot run {}: {e}", self.cli.exe.display()))
        })?;
        let pid = child.id().unwrap_or(0);
        self.runs.spawned(id, pid);
        let (runs, id) = (Arc::clone(&self.runs), id.to_string());
        // Reap the child so it does not linger as a zombie, and forget it once it is gone.
        tokio::spawn(async move {
            let _ = child.wait().await;
            runs.exited(&id);
        });
        Ok(())
    }
}

/// Binds, calls `ready` once listening, and serves until the process is stopped.
pub fn serve(opts: Options, ready: impl FnOnce(&Ready)) -> Result<(), Error> {
    let token = auth::new_token().map_err(Error::Random)?;
    // Every run's event stream reads its files on the blocking pool every poll, so by
    // default (up to 512 threads) the thread count grew with the number of open pages:
    // 200 streams held 29 extra threads. The reads are short, so a few threads serve any
    // number of streams, and the rest wait their turn.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .map_err(Error::Serve)?;
    runtime.block_on(async move {
        let wanted = SocketAddr::new(opts.host, opts.port);
        let listener = tokio::net::TcpListener::bind(wanted)
            .await
            .map_err(|source| Error::Bind {
                addr: wanted.to_string(),
                source,
            })?;
        let addr = listener.local_addr().map_err(Error::Serve)?;
        ensure_dir(&opts.home)?;
        let app = Arc::new(App {
            access: auth::Access::new(token.clone(), addr),
            runs: Arc::new(runs::Runs::new(opts.home.join("runs"))),
            cli: cli::Cli {
                exe: opts.cli,
                home: opts.home,
            },
            jobs: jobs::Jobs::default(),
        });
        let shown = if addr.ip().is_loopback() && addr.ip().is_ipv4() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            app.access.hosts[0].clone()
        };
        ready(&Ready {
            addr,
            url: format!("http://{shown}/?token={token}"),
        });
        axum::serve(listener, api::router(app))
            .await
            .map_err(Error::Serve)
    })
}

/// A poisoned lock only means a panic elsewhere; the data is still whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ensure_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })
}
