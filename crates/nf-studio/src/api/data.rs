//! Documents and models: uploads, ingest, datasets, the model store (import, pull, inspect).

use super::*;

/// The largest single upload (a document, not a model).
const MAX_UPLOAD: u64 = 2 << 30;

pub(super) async fn upload(
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
pub(super) struct IngestRequest {
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

pub(super) async fn ingest(
    State(app): State<Arc<App>>,
    Json(req): Json<IngestRequest>,
) -> ApiResult {
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

pub(super) async fn list_datasets(State(app): State<Arc<App>>) -> ApiResult {
    let args = ["datasets".into(), "list".into()];
    Ok(Json(app.cli.all(&args, "dataset.info").await?).into_response())
}

pub(super) async fn dataset_detail(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
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

pub(super) async fn list_models(State(app): State<Arc<App>>) -> ApiResult {
    let args = ["models".into(), "list".into()];
    Ok(Json(app.cli.all(&args, "model.stored").await?).into_response())
}

pub(super) async fn model_detail(
    State(app): State<Arc<App>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
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
pub(super) struct ImportRequest {
    path: String,
    name: Option<String>,
    tokenizer: Option<String>,
    #[serde(default)]
    force: bool,
}

pub(super) async fn import_model(
    State(app): State<Arc<App>>,
    Json(req): Json<ImportRequest>,
) -> ApiResult {
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
pub(super) struct PullRequest {
    repo: String,
    revision: Option<String>,
    /// Globs of the files to fetch (default: what a model needs).
    #[serde(default)]
    include: Vec<String>,
}

pub(super) async fn pull_model(
    State(app): State<Arc<App>>,
    Json(req): Json<PullRequest>,
) -> ApiResult {
    let mut args = vec!["models".to_string(), "pull".to_string()];
    if let Some(r) = req.revision.as_deref().filter(|r| !r.is_empty()) {
        args.push(flag("revision", r));
    }
    args.extend(req.include.iter().map(|p| flag("include", p)));
    args.extend(["--".into(), non_empty("repository", &req.repo)?.to_string()]);
    start_job(&app, "pull", args)
}
