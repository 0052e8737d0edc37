//! The routes: pages, assets, and the JSON API documented at the crate root.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::App;
use crate::error::ApiError;
use crate::runs::{self, valid_id};
use crate::{assets, jobs};

type ApiResult = Result<Response, ApiError>;

/// How long a command answered inline (listings, verify, estimates) may take.
const SHORT: Duration = Duration::from_secs(60);
/// An estimate loads the model and measures a real step.
const ESTIMATE: Duration = Duration::from_secs(300);
/// The largest single upload (a document, not a model).
const MAX_UPLOAD: u64 = 2 << 30;

pub fn router(app: Arc<App>) -> Router {
    let pages = [
        "/",
        "/configure",
        "/ingest",
        "/models",
        "/generate",
        "/audit",
    ];
    let mut r = Router::new();
    for p in pages {
        r = r.route(p, get(page));
    }
    r.route("/assets/{*name}", get(asset))
        .route("/api/info", get(info))
        .route("/api/runs", get(list_runs))
        .route("/api/runs/{id}", get(run_detail))
        .route("/api/runs/{id}/events", get(run_events))
        .route("/api/runs/{id}/stop", post(stop_run))
        .route("/api/runs/{id}/resume", post(resume_run))
        .route("/api/train", post(start_train))
        .route("/api/train/estimate", post(estimate))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}", get(job_detail))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/uploads/{upload}/{name}", put(upload))
        .route("/api/ingest", post(ingest))
        .route("/api/datasets", get(list_datasets))
        .route("/api/datasets/{name}", get(dataset_detail))
        .route("/api/models", get(list_models))
        .route("/api/models/import", post(import_model))
        .route("/api/models/pull", post(pull_model))
        .route("/api/models/{name}", get(model_detail))
        .route("/api/generate", post(generate))
        .route("/api/audit", get(audit_entries))
        .route("/api/audit/verify", post(audit_verify))
        .route("/api/audit/export", get(audit_export))
        .fallback(|| async { ApiError::not_found("no such page or route") })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            crate::auth::guard,
        ))
        .with_state(app)
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        assets::INDEX_HTML,
    )
        .into_response()
}

async fn asset(UrlPath(name): UrlPath<String>) -> ApiResult {
    let (bytes, ty) = assets::asset(&name).ok_or_else(|| ApiError::not_found("no such asset"))?;
    Ok(([(header::CONTENT_TYPE, ty)], bytes).into_response())
}

async fn info(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION"), "home": app.cli.home }))
}

// ---- runs -------------------------------------------------------------------------------

fn run_id(id: &str) -> Result<&str, ApiError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no run `{id}`")))
    }
}

fn existing_run(app: &App, id: &str) -> Result<PathBuf, ApiError> {
    let dir = app.runs_dir().join(run_id(id)?);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(ApiError::not_found(format!("no run `{id}`")))
    }
}

async fn list_runs(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!(app.runs.list()))
}

async fn run_detail(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let dir = existing_run(&app, &id)?;
    let mut v = json!(app.runs.summary(&id));
    v["config"] = std::fs::read_to_string(dir.join("run.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Ok(Json(v).into_response())
}

fn sse(
    start: impl FnOnce(mpsc::Sender<Result<SseEvent, Infallible>>),
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let (tx, rx) = mpsc::channel(256);
    start(tx);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Sse::new(stream.boxed()).keep_alive(KeepAlive::default())
}

/// Where a reconnecting EventSource left off: the id of the last event it saw.
fn last_event_id(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("last-event-id")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

async fn run_events(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    existing_run(&app, &id)?;
    let runs = Arc::clone(&app.runs);
    let from = last_event_id(&headers).unwrap_or(0);
    Ok(sse(move |tx| runs::follow(runs, id, from, tx)).into_response())
}

async fn stop_run(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let dir = existing_run(&app, &id)?;
    // The pid comes from the lock its holder still holds, so it is that process and not a
    // recycled pid. A run the studio just started may still be loading, before it takes
    // the lock: wait for the lock, since `train` takes it only once SIGTERM means "stop
    // and save" rather than "die".
    let mut pid = runs::lock_holder(&dir).filter(|pid| *pid > 0);
    let deadline = tokio::time::Instant::now() + ESTIMATE;
    while pid.is_none()
        && app.runs.spawned_pid(&id).is_some()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pid = runs::lock_holder(&dir).filter(|pid| *pid > 0);
    }
    let pid = pid.ok_or_else(|| {
        ApiError::conflict(format!("run `{id}` is not running"), "reload the page")
    })?;
    // SIGTERM asks train to stop after the step and save a checkpoint.
    let pid = libc::pid_t::try_from(pid).map_err(ApiError::internal)?;
    // SAFETY: kill(2) with a positive pid and a valid signal has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    if rc != 0 {
        return Err(ApiError::internal(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(Json(json!({ "ok": true, "pid": pid })).into_response())
}

async fn resume_run(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let dir = existing_run(&app, &id)?;
    if app.runs.summary(&id).status == "running" {
        return Err(ApiError::conflict(
            format!("run `{id}` is already running"),
            "stop it first",
        ));
    }
    let args = vec!["train".into(), format!("--resume={}", dir.display())];
    app.spawn_run(&id, args)?;
    Ok(Json(json!({ "id": id })).into_response())
}

/// What the Configure page sends to start a run or ask for its estimate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRequest {
    pub model: String,
    pub tokenizer: Option<String>,
    pub dataset: String,
    /// `lora` (default) or `full`.
    pub method: Option<String>,
    pub lora_rank: Option<u32>,
    pub steps: Option<u64>,
    pub lr: Option<f64>,
    /// `cosine`, `linear` or `constant`.
    pub schedule: Option<String>,
    pub warmup: Option<u64>,
    pub batch_size: Option<u32>,
    pub seq_len: Option<u32>,
    pub eval_every: Option<u64>,
    pub sample_every: Option<u64>,
    pub save_every: Option<u64>,
    pub sample_prompt: Option<String>,
    pub seed: Option<u64>,
}

impl TrainRequest {
    /// The `train` arguments, each value attached to its flag with `=` so that no value
    /// can be taken for a flag.
    fn args(&self) -> Result<Vec<String>, ApiError> {
        let mut a = vec![
            "train".to_string(),
            flag("model", non_empty("model", &self.model)?),
        ];
        a.push(flag("data", non_empty("dataset", &self.dataset)?));
        if let Some(t) = self.tokenizer.as_deref().filter(|t| !t.is_empty()) {
            a.push(flag("tokenizer", t));
        }
        match self.method.as_deref().unwrap_or("lora") {
            "lora" => {
                if let Some(r) = self.lora_rank {
                    a.push(flag("lora-rank", r));
                }
            }
            "full" => a.push("--full".into()),
            other => {
                return Err(ApiError::bad_request(
                    format!("unknown method `{other}`"),
                    "use lora or full",
                ));
            }
        }
        let numbers = [
            ("steps", self.steps.map(|v| v.to_string())),
            ("lr", self.lr.map(|v| v.to_string())),
            ("warmup", self.warmup.map(|v| v.to_string())),
            ("batch-size", self.batch_size.map(|v| v.to_string())),
            ("seq-len", self.seq_len.map(|v| v.to_string())),
            ("eval-every", self.eval_every.map(|v| v.to_string())),
            ("sample-every", self.sample_every.map(|v| v.to_string())),
            ("save-every", self.save_every.map(|v| v.to_string())),
            ("seed", self.seed.map(|v| v.to_string())),
        ];
        push_set(&mut a, numbers);
        if let Some(s) = &self.schedule {
            a.push(flag("schedule", s));
        }
        if let Some(p) = &self.sample_prompt {
            a.push(flag("sample-prompt", p));
        }
        Ok(a)
    }
}

fn flag(name: &str, value: impl std::fmt::Display) -> String {
    format!("--{name}={value}")
}

/// The flags whose value was given; the CLI's defaults stand for the rest.
fn push_set<const N: usize>(args: &mut Vec<String>, flags: [(&str, Option<String>); N]) {
    args.extend(
        flags
            .into_iter()
            .filter_map(|(name, v)| v.map(|v| flag(name, v))),
    );
}

fn non_empty<'a>(what: &str, v: &'a str) -> Result<&'a str, ApiError> {
    if v.trim().is_empty() {
        Err(ApiError::bad_request(
            format!("no {what} given"),
            format!("pick a {what}"),
        ))
    } else {
        Ok(v)
    }
}

async fn start_train(State(app): State<Arc<App>>, Json(req): Json<TrainRequest>) -> ApiResult {
    let mut args = req.args()?;
    let id = app.new_run_id(req.method.as_deref().unwrap_or("lora"))?;
    args.push(flag("out", app.runs_dir().join(&id).display()));
    app.spawn_run(&id, args)?;
    Ok(Json(json!({ "id": id })).into_response())
}

async fn estimate(State(app): State<Arc<App>>, Json(req): Json<TrainRequest>) -> ApiResult {
    let mut args = req.args()?;
    args.push("--dry-run".into());
    let plan = app
        .cli
        .first(&args, ESTIMATE, "train.plan")
        .await?
        .ok_or_else(|| ApiError::internal("`train --dry-run` reported no plan"))?;
    Ok(Json(plan).into_response())
}

// ---- jobs -------------------------------------------------------------------------------

fn job(app: &App, id: &str) -> Result<Arc<jobs::Job>, ApiError> {
    id.parse()
        .ok()
        .and_then(|id| app.jobs.get(id))
        .ok_or_else(|| ApiError::not_found(format!("no job `{id}`")))
}

async fn list_jobs(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!(app.jobs.summaries()))
}

async fn job_detail(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    Ok(Json(job(&app, &id)?.detail()).into_response())
}

async fn job_events(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    let job = job(&app, &id)?;
    let from = last_event_id(&headers).unwrap_or(0) as usize;
    Ok(sse(move |tx| jobs::follow(job, from, tx)).into_response())
}

async fn cancel_job(State(app): State<Arc<App>>, UrlPath(id): UrlPath<String>) -> ApiResult {
    if !job(&app, &id)?.cancel() {
        return Err(ApiError::conflict(
            format!("job {id} has already ended"),
            "reload the page",
        ));
    }
    Ok(Json(json!({ "ok": true })).into_response())
}

fn start_job(app: &App, kind: &str, args: Vec<String>) -> ApiResult {
    let id = app.jobs.start(&app.cli, kind, args, None)?;
    Ok(Json(json!({ "job": id })).into_response())
}

// ---- uploads and ingest -----------------------------------------------------------------

/// An upload id or file name that is one plain path component.
fn plain_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            format!("`{name}` is not a usable {what}"),
            "use a plain name without slashes or a leading dot",
        ))
    }
}

async fn upload(
    State(app): State<Arc<App>>,
    UrlPath((upload, name)): UrlPath<(String, String)>,
    body: Body,
) -> ApiResult {
    plain_name(&upload, "upload id")?;
    plain_name(&name, "file name")?;
    let dir = app.cli.home.join("uploads").join(&upload);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
    let path = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let result = write_body(&partial, body).await;
    match result {
        Ok(()) => tokio::fs::rename(&partial, &path)
            .await
            .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?,
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
    }
    Ok(Json(json!({ "upload": upload, "path": path })).into_response())
}

/// Streams a request body to a file, refusing one larger than [`MAX_UPLOAD`].
async fn write_body(path: &Path, body: Body) -> Result<(), ApiError> {
    let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("upload cut off: {e}"), "try again"))?;
        written += chunk.len() as u64;
        if written > MAX_UPLOAD {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the file is larger than 2 GiB",
                "give its server-side path instead of uploading it",
            ));
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRequest {
    name: String,
    model: String,
    tokenizer: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    upload: Option<String>,
    seq_len: Option<u32>,
    #[serde(default)]
    force: bool,
}

async fn ingest(State(app): State<Arc<App>>, Json(req): Json<IngestRequest>) -> ApiResult {
    let mut args = vec![
        "ingest".to_string(),
        flag("name", non_empty("dataset name", &req.name)?),
        flag("model", non_empty("model", &req.model)?),
    ];
    if let Some(t) = req.tokenizer.as_deref().filter(|t| !t.is_empty()) {
        args.push(flag("tokenizer", t));
    }
    if let Some(n) = req.seq_len {
        args.push(flag("seq-len", n));
    }
    if req.force {
        args.push("--force".into());
    }
    args.push("--".into());
    let mut any = false;
    for p in req.paths.iter().filter(|p| !p.trim().is_empty()) {
        args.push(p.trim().to_string());
        any = true;
    }
    if let Some(u) = &req.upload {
        plain_name(u, "upload id")?;
        args.push(app.cli.home.join("uploads").join(u).display().to_string());
        any = true;
    }
    if !any {
        return Err(ApiError::bad_request(
            "no documents given",
            "upload files or type a server-side path",
        ));
    }
    start_job(&app, "ingest", args)
}

async fn list_datasets(State(app): State<Arc<App>>) -> ApiResult {
    let args = ["datasets".into(), "list".into()];
    Ok(Json(app.cli.all(&args, "dataset.info").await?).into_response())
}

async fn dataset_detail(State(app): State<Arc<App>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    plain_name(&name, "dataset name")?;
    let args = ["datasets".into(), "show".into(), "--".into(), name.clone()];
    let info = app
        .cli
        .first(&args, SHORT, "dataset.info")
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dataset `{name}`")))?;
    let folder = info["path"].as_str().map(PathBuf::from).unwrap_or_default();
    let manifest = std::fs::read_to_string(folder.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null);
    Ok(Json(json!({ "info": info, "manifest": manifest })).into_response())
}

// ---- models -----------------------------------------------------------------------------

async fn list_models(State(app): State<Arc<App>>) -> ApiResult {
    let args = ["models".into(), "list".into()];
    Ok(Json(app.cli.all(&args, "model.stored").await?).into_response())
}

async fn model_detail(State(app): State<Arc<App>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    plain_name(&name, "model name")?;
    let show = ["models".into(), "show".into(), "--".into(), name.clone()];
    let stored = app
        .cli
        .first(&show, SHORT, "model.stored")
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no model `{name}`")))?;
    // `inspect` resolves a store name itself, with a llama2.c model's tokenizer.bin.
    let inspect = ["inspect".into(), "--".into(), name];
    let info = app.cli.first(&inspect, SHORT, "model.info").await?;
    Ok(Json(json!({ "stored": stored, "info": info })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportRequest {
    path: String,
    name: Option<String>,
    tokenizer: Option<String>,
    #[serde(default)]
    force: bool,
}

async fn import_model(State(app): State<Arc<App>>, Json(req): Json<ImportRequest>) -> ApiResult {
    let mut args = vec!["models".to_string(), "import".to_string()];
    if let Some(n) = req.name.as_deref().filter(|n| !n.is_empty()) {
        args.push(flag("name", n));
    }
    if let Some(t) = req.tokenizer.as_deref().filter(|t| !t.is_empty()) {
        args.push(flag("tokenizer", t));
    }
    if req.force {
        args.push("--force".into());
    }
    args.extend(["--".into(), non_empty("path", &req.path)?.to_string()]);
    start_job(&app, "import", args)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    repo: String,
    revision: Option<String>,
    /// Globs of the files to fetch (default: what a model needs).
    #[serde(default)]
    include: Vec<String>,
}

async fn pull_model(State(app): State<Arc<App>>, Json(req): Json<PullRequest>) -> ApiResult {
    let mut args = vec!["models".to_string(), "pull".to_string()];
    if let Some(r) = req.revision.as_deref().filter(|r| !r.is_empty()) {
        args.push(flag("revision", r));
    }
    args.extend(req.include.iter().map(|p| flag("include", p)));
    args.extend(["--".into(), non_empty("repository", &req.repo)?.to_string()]);
    start_job(&app, "pull", args)
}

// ---- generate ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GenerateRequest {
    model: String,
    tokenizer: Option<String>,
    run: Option<String>,
    /// The text to continue, or with `chat` the user's new message.
    prompt: String,
    #[serde(default)]
    chat: bool,
    /// With `chat`: the system message.
    system: Option<String>,
    /// With `chat`: the turns so far, oldest first (`{role, content}`).
    #[serde(default)]
    history: Vec<Message>,
    /// With `chat`: a built-in template (chatml, llama2, llama3) instead of the model's.
    chat_template: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    role: String,
    content: String,
}

/// The prompt (or the whole conversation) goes to the command's stdin, never its
/// arguments: arguments are visible to every user of the machine in the process list.
async fn generate(State(app): State<Arc<App>>, Json(req): Json<GenerateRequest>) -> ApiResult {
    let mut args = vec![
        "generate".to_string(),
        flag("model", non_empty("model", &req.model)?),
    ];
    if let Some(t) = req.tokenizer.as_deref().filter(|t| !t.is_empty()) {
        args.push(flag("tokenizer", t));
    }
    if let Some(run) = req.run.as_deref().filter(|r| !r.is_empty()) {
        args.push(flag("adapter", existing_run(&app, run)?.display()));
    }
    let stdin = if req.chat {
        args.extend(["--chat".into(), "--messages=-".into()]);
        if let Some(t) = req.chat_template.as_deref().filter(|t| !t.is_empty()) {
            args.push(flag("chat-template", t));
        }
        let system = req
            .system
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| Message {
                role: "system".into(),
                content: s.clone(),
            });
        let user = Message {
            role: "user".into(),
            content: req.prompt.clone(),
        };
        let messages: Vec<Message> = system
            .chain(req.history.iter().cloned())
            .chain([user])
            .collect();
        serde_json::to_vec(&messages).map_err(ApiError::internal)?
    } else {
        args.push("--prompt=-".into());
        req.prompt.clone().into_bytes()
    };
    let numbers = [
        ("max-tokens", req.max_tokens.map(|v| v.to_string())),
        ("temperature", req.temperature.map(|v| v.to_string())),
        ("top-p", req.top_p.map(|v| v.to_string())),
        ("seed", req.seed.map(|v| v.to_string())),
    ];
    push_set(&mut args, numbers);
    let id = app.jobs.start(&app.cli, "generate", args, Some(stdin))?;
    Ok(Json(json!({ "job": id })).into_response())
}

// ---- audit ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct AuditQuery {
    since: Option<String>,
    until: Option<String>,
    command: Option<String>,
    result: Option<String>,
    format: Option<String>,
}

fn time_flags(q: &AuditQuery) -> Vec<String> {
    let mut a = Vec::new();
    if let Some(s) = q.since.as_deref().filter(|s| !s.is_empty()) {
        a.push(flag("since", s));
    }
    if let Some(u) = q.until.as_deref().filter(|u| !u.is_empty()) {
        a.push(flag("until", u));
    }
    a
}

async fn audit_entries(State(app): State<Arc<App>>, Query(q): Query<AuditQuery>) -> ApiResult {
    let mut args = vec!["audit".to_string(), "show".to_string()];
    args.extend(time_flags(&q));
    let wanted = |e: &Value, field: &str, want: &Option<String>| {
        want.as_deref()
            .filter(|w| !w.is_empty())
            .is_none_or(|w| e[field].as_str() == Some(w))
    };
    let mut entries: Vec<Value> = app
        .cli
        .collect(&args, SHORT, None)
        .await?
        .into_iter()
        .filter(|e| e["type"] == "audit.entry")
        .map(|mut e| e["entry"].take())
        .filter(|e| wanted(e, "command", &q.command) && wanted(e, "result", &q.result))
        .collect();
    entries.reverse();
    Ok(Json(entries).into_response())
}

async fn audit_verify(State(app): State<Arc<App>>) -> ApiResult {
    let args = ["audit".into(), "verify".into()];
    let verdict = app
        .cli
        .first(&args, SHORT, "audit.verify")
        .await?
        .ok_or_else(|| ApiError::internal("`audit verify` reported no result"))?;
    Ok(Json(verdict).into_response())
}

async fn audit_export(State(app): State<Arc<App>>, Query(q): Query<AuditQuery>) -> ApiResult {
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::bad_request(
            format!("unknown format `{format}`"),
            "use json or csv",
        ));
    }
    // `audit export` writes the document to stdout when not given --out; run it without
    // --json so stdout is the document itself.
    let mut cmd = tokio::process::Command::new(&app.cli.exe);
    cmd.arg("--home")
        .arg(&app.cli.home)
        .args(["audit", "export"])
        .arg(flag("format", format))
        .args(time_flags(&q))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SHORT, cmd.output())
        .await
        .map_err(|_| ApiError::internal("`audit export` took too long"))?
        .map_err(ApiError::internal)?;
    if !out.status.success() {
        let (error, hint) = crate::cli::failure(&[], &String::from_utf8_lossy(&out.stderr));
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            error,
            hint,
        });
    }
    let ty = if format == "csv" {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    let disposition = format!("attachment; filename=\"neuralforge-audit.{format}\"");
    Ok((
        [
            (header::CONTENT_TYPE, ty.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        out.stdout,
    )
        .into_response())
}
