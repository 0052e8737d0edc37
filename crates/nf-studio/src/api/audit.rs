//! The audit log: entries with filters, verify, export.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
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

pub(super) async fn audit_entries(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
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

pub(super) async fn audit_verify(State(app): State<Arc<App>>) -> ApiResult {
    let args = ["audit".into(), "verify".into()];
    let verdict = app
        .cli
        .first(&args, SHORT, "audit.verify")
        .await?
        .ok_or_else(|| ApiError::internal("`audit verify` reported no result"))?;
    Ok(Json(verdict).into_response())
}

pub(super) async fn audit_export(
    State(app): State<Arc<App>>,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let format = q.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv") {
        return Err(ApiError::bad_request(
            format!("unknown format `{format}`"),
            "use json or csv",
        ));
    }
    // `audit export` writes the document to stdout when not given --out; run it without
    // --json so stdout is the document itself.
    let mut args = vec![
        "audit".to_string(),
        "export".to_string(),
        flag("format", format),
    ];
    args.extend(time_flags(&q));
    let mut cmd = app.cli.plain(&args);
    cmd.kill_on_drop(true);
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
