//! Training runs: list, detail, the live event stream, stop, resume, start, estimate.

use super::*;

fn run_id(id: &str) -> Result<&str, ApiError> {
    if valid_id(id) {
        Ok(id)
    } else {
        Err(ApiError::not_found(format!("no run `{id}`")))
    }
}

pub(super) fn existing_run(app: &App, id: &str) -> Result<PathBuf, ApiError> {
    let dir = app.runs_dir().join(run_id(id)?);
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(ApiError::not_found(format!("no run `{id}`")))
    }
}

pub(super) async fn list_runs(State(app): State<Arc<App>>) -> Json<Value> {
    Json(json!(app.runs.list()))
}

pub(super) async fn run_detail(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
    let dir = existing_run(&app, &id)?;
    let mut v = json!(app.runs.summary(&id));
    v["config"] = std::fs::read_to_string(dir.join(nf_train::run::RUN_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    Ok(Json(v).into_response())
}

pub(super) async fn run_events(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> ApiResult {
    existing_run(&app, &id)?;
    let runs = Arc::clone(&app.runs);
    let from = last_event_id(&headers).unwrap_or(0);
    Ok(sse(move |tx| {
        runs::follow(runs, id, from, tx);
    })
    .into_response())
}

pub(super) async fn stop_run(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
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

pub(super) async fn resume_run(
    State(app): State<Arc<App>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult {
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
    /// The base model: a path or a stored model's name.
    pub model: String,
    /// A tokenizer instead of the model's own.
    pub tokenizer: Option<String>,
    /// The dataset's name under `<home>/datasets`.
    pub dataset: String,
    /// `lora` (default) or `full`.
    pub method: Option<String>,
    /// LoRA's rank.
    pub lora_rank: Option<u32>,
    /// Optimizer steps.
    pub steps: Option<u64>,
    /// Peak learning rate.
    pub lr: Option<f64>,
    /// `cosine`, `linear` or `constant`.
    pub schedule: Option<String>,
    /// Warmup steps.
    pub warmup: Option<u64>,
    /// Sequences per micro-batch.
    pub batch_size: Option<u32>,
    /// Tokens per sequence.
    pub seq_len: Option<u32>,
    /// Validate every N steps.
    pub eval_every: Option<u64>,
    /// Sample every N steps.
    pub sample_every: Option<u64>,
    /// Checkpoint every N steps.
    pub save_every: Option<u64>,
    /// The prompt samples continue.
    pub sample_prompt: Option<String>,
    /// The run's seed.
    pub seed: Option<u64>,
    /// `auto` (default), `f32` or `bf16`: `train --precision`.
    pub precision: Option<String>,
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
        match self.precision.as_deref() {
            None | Some("") => {}
            Some(p @ ("auto" | "f32" | "bf16")) => a.push(flag("precision", p)),
            Some(other) => {
                return Err(ApiError::bad_request(
                    format!("unknown precision `{other}`"),
                    "use auto, f32 or bf16",
                ));
            }
        }
        Ok(a)
    }
}

pub(super) async fn start_train(
    State(app): State<Arc<App>>,
    Json(req): Json<TrainRequest>,
) -> ApiResult {
    let mut args = req.args()?;
    let id = app.new_run_id(req.method.as_deref().unwrap_or("lora"))?;
    args.push(flag("out", app.runs_dir().join(&id).display()));
    app.spawn_run(&id, args)?;
    Ok(Json(json!({ "id": id })).into_response())
}

pub(super) async fn estimate(
    State(app): State<Arc<App>>,
    Json(req): Json<TrainRequest>,
) -> ApiResult {
    let mut args = req.args()?;
    args.push("--dry-run".into());
    let plan = app
        .cli
        .first(&args, ESTIMATE, "train.plan")
        .await?
        .ok_or_else(|| ApiError::internal("`train --dry-run` reported no plan"))?;
    Ok(Json(plan).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(precision: Option<&str>) -> TrainRequest {
        serde_json::from_value(json!({
            "model": "m", "dataset": "d", "precision": precision,
        }))
        .unwrap()
    }

    #[test]
    fn precision_reaches_the_train_command() {
        let args = request(Some("bf16")).args().unwrap();
        assert!(args.contains(&"--precision=bf16".to_string()), "{args:?}");
        let args = request(None).args().unwrap();
        assert!(
            !args.iter().any(|a| a.starts_with("--precision")),
            "{args:?}"
        );
        let err = request(Some("fp8")).args().unwrap_err();
        assert!(format!("{err:?}").contains("fp8"), "{err:?}");
    }
}
