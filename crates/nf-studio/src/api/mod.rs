//! The routes: pages, assets, and the JSON API documented at the crate root.

mod audit;
mod data;
mod generate;
mod training;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
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

/// The studio's routes: pages, assets and the JSON/SSE API, each behind the token check.
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
        .route("/api/runs", get(training::list_runs))
        .route("/api/runs/{id}", get(training::run_detail))
        .route("/api/runs/{id}/events", get(training::run_events))
        .route("/api/runs/{id}/stop", post(training::stop_run))
        .route("/api/runs/{id}/resume", post(training::resume_run))
        .route("/api/train", post(training::start_train))
        .route("/api/train/estimate", post(training::estimate))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}", get(job_detail))
        .route("/api/jobs/{id}/events", get(job_events))
        .route("/api/jobs/{id}/cancel", post(cancel_job))
        .route("/api/uploads/{upload}/{name}", put(data::upload))
        .route("/api/ingest", post(data::ingest))
        .route("/api/datasets", get(data::list_datasets))
        .route("/api/datasets/{name}", get(data::dataset_detail))
        .route("/api/models", get(data::list_models))
        .route("/api/models/import", post(data::import_model))
        .route("/api/models/pull", post(data::pull_model))
        .route("/api/models/{name}", get(data::model_detail))
        .route("/api/generate", post(generate::generate))
        .route("/api/audit", get(audit::audit_entries))
        .route("/api/audit/verify", post(audit::audit_verify))
        .route("/api/audit/export", get(audit::audit_export))
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

/// The version and home, and the runtime's live task count, which a load test compares
/// before and after its clients leave to show that no task outlives its connection.
async fn info(State(app): State<Arc<App>>) -> Json<Value> {
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    Json(json!({ "version": env!("CARGO_PKG_VERSION"), "home": app.cli.home, "tasks": tasks }))
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

pub use training::TrainRequest;
