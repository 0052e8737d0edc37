//! Generation and chat: the prompt or conversation goes to the CLI on stdin.

use super::training::existing_run;
use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GenerateRequest {
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
pub(super) struct Message {
    role: String,
    content: String,
}

/// The prompt (or the whole conversation) goes to the command's stdin, never its
/// arguments: arguments are visible to every user of the machine in the process list.
pub(super) async fn generate(
    State(app): State<Arc<App>>,
    Json(req): Json<GenerateRequest>,
) -> ApiResult {
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
