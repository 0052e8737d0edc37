//! `neuralforge models list | import | pull | show | rm`: the model store,
//! `<home>/models/<name>/`.
//!
//! A stored model is a folder holding the model's files as imported (an HF folder's files,
//! a `.gguf`, or a llama2.c `.bin` with its `tokenizer.bin`) and `model.json`, written last:
//! a folder without it is not a stored model. `model.json`:
//!
//! ```json
//! {"format":"neuralforge-model","version":1,"name":"smol","model_format":"hf",
//!  "source":"hf://HuggingFaceTB/SmolLM2-135M@<commit>","added":"2026-12-02T03:00:00.000Z",
//!  "repo":"HuggingFaceTB/SmolLM2-135M","revision":"main","commit":"<sha>","endpoint":"https://huggingface.co",
//!  "files":[{"path":"config.json","size":704,"sha256":"…"}, …]}
//! ```
//!
//! `pull` is the only code in NeuralForge that opens a network connection. It asks the
//! hub for the revision's commit, lists the commit's files (`/api/models/REPO/tree/COMMIT`),
//! and downloads each from `/REPO/resolve/COMMIT/FILE` (following redirects itself, so it
//! sees `X-Linked-Etag` on the hub's redirect to its CDN) into a staging folder
//! `models/.pull-<name>/`, as `FILE.partial`. An interrupted download resumes from the
//! partial file with `Range: bytes=N-` and `If-Range: <etag>` (a `200` instead of `206`
//! starts over). A finished file is checked against its size and, for LFS files, the
//! sha256 the tree listing gives (`lfs.oid`, else the `X-Linked-Etag`); a mismatch deletes
//! the partial file and fails, so nothing unverified is installed. Only when every file is
//! complete is `model.json` written and the staging folder renamed into place.

use nf_protocol::ErrorCode;
use std::collections::BTreeSet;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nf_audit::Artifact;
use nf_model::ModelFormat;
use nf_protocol::Event;
use serde::{Deserialize, Serialize};

use crate::cli::{ModelsCommand, ModelsImportArgs, ModelsNameArgs, ModelsPullArgs};
use crate::errors::user_error;
use crate::output::Output;

pub const MODEL_FILE: &str = "model.json";
const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredModel {
    pub format: String,
    pub version: u32,
    pub name: String,
    /// `hf`, `gguf` or `llama2c`.
    pub model_format: String,
    pub source: String,
    pub added: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub files: Vec<StoredFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

pub fn run(cmd: &ModelsCommand, home: &Path, offline: bool, out: &mut Output) -> Result<()> {
    match cmd {
        ModelsCommand::List => list(home, out),
        ModelsCommand::Show(a) => show(a, home, out),
        ModelsCommand::Import(a) => {
            crate::audit::scoped(home, "models import", |rec| import(a, home, out, rec))
        }
        ModelsCommand::Pull(a) => {
            if offline {
                return Err(offline_error());
            }
            crate::audit::scoped(home, "models pull", |rec| pull(a, home, out, rec))
        }
        ModelsCommand::Rm(a) => {
            crate::audit::scoped(home, "models rm", |rec| rm(a, home, out, rec))
        }
    }
}

pub fn offline_error() -> anyhow::Error {
    user_error(
        ErrorCode::Offline,
        "offline mode: `models pull` would connect to the network",
        "unset NEURALFORGE_OFFLINE / drop --offline to download, or `neuralforge models import PATH` a local copy",
    )
}

fn models_dir(home: &Path) -> PathBuf {
    home.join("models")
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && name.chars().all(|c| !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(user_error(
            ErrorCode::BadInput,
            format!("`{name}` is not a model name"),
            "use a plain name such as `smollm2-135m` (letters, digits, - _ .), or --name",
        ))
    }
}

fn read_stored(dir: &Path) -> Result<StoredModel> {
    let path = dir.join(MODEL_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        user_error(
            ErrorCode::NotFound,
            format!("{}: {e}", path.display()),
            "`neuralforge models list` shows the stored models",
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        user_error(
            ErrorCode::Corrupt,
            format!("{}: {e}", path.display()),
            "import or pull the model again with --force",
        )
    })
}

fn stored_event(m: &StoredModel, dir: &Path, with_files: bool) -> Event {
    Event::ModelStored {
        name: m.name.clone(),
        path: dir.display().to_string(),
        format: m.model_format.clone(),
        source: m.source.clone(),
        added: m.added.clone(),
        bytes: m.files.iter().map(|f| f.size).sum(),
        files: if with_files {
            m.files
                .iter()
                .map(|f| serde_json::to_value(f).unwrap_or_default())
                .collect()
        } else {
            Vec::new()
        },
    }
}

use nf_protocol::human_bytes;

fn list(home: &Path, out: &mut Output) -> Result<()> {
    let dirs = crate::cmd::lineage::subdirs(&models_dir(home));
    if dirs.is_empty() && !out.is_json() {
        eprintln!(
            "no models in {} (`neuralforge models import PATH` or `models pull REPO`)",
            models_dir(home).display()
        );
    }
    for d in dirs {
        match read_stored(&d) {
            Ok(m) => {
                out.event(|| stored_event(&m, &d, false))?;
                out.text(&format!(
                    "{:<28} {:<8} {:>10}  {}\n",
                    m.name,
                    m.model_format,
                    human_bytes(m.files.iter().map(|f| f.size).sum()),
                    m.source
                ))?;
            }
            Err(_) => {
                if !out.is_json() {
                    eprintln!(
                        "note: {} has no readable {MODEL_FILE} (not imported by NeuralForge)",
                        d.display()
                    );
                }
            }
        }
    }
    Ok(())
}

fn show(a: &ModelsNameArgs, home: &Path, out: &mut Output) -> Result<()> {
    check_name(&a.name)?;
    let dir = models_dir(home).join(&a.name);
    let m = read_stored(&dir)?;
    out.event(|| stored_event(&m, &dir, true))?;
    let mut s = format!(
        "name:    {}\nformat:  {}\nsource:  {}\nadded:   {}\npath:    {}\n",
        m.name,
        m.model_format,
        m.source,
        m.added,
        dir.display()
    );
    if let Some(c) = &m.commit {
        s.push_str(&format!("commit:  {c}\n"));
    }
    s.push_str("files:\n");
    for f in &m.files {
        s.push_str(&format!(
            "  {}  {:>10}  {}\n",
            f.sha256,
            human_bytes(f.size),
            f.path
        ));
    }
    out.text(&s)?;
    Ok(())
}

/// Replaces `final_dir` by the complete `staging` folder in one step, so a crash leaves the
/// old model or the new one (`nf_formats::atomic::replace`).
fn install(staging: &Path, final_dir: &Path) -> Result<()> {
    nf_formats::atomic::replace(staging, final_dir)
        .with_context(|| format!("renaming into {}", final_dir.display()))
}

fn write_model_json(dir: &Path, m: &StoredModel) -> Result<()> {
    let text = serde_json::to_string_pretty(m)?;
    nf_formats::atomic::write_atomic(&dir.join(MODEL_FILE), |w| w.write_all(text.as_bytes()))?;
    Ok(())
}

fn import(
    a: &ModelsImportArgs,
    home: &Path,
    out: &mut Output,
    rec: &mut nf_audit::Record,
) -> Result<()> {
    let src = &a.path;
    if !src.exists() {
        return Err(user_error(
            ErrorCode::NotFound,
            format!("{} does not exist", src.display()),
            "pass a model folder (config.json + *.safetensors), a .gguf or a llama2.c .bin",
        ));
    }
    let format = ModelFormat::detect(src)?;
    let name = match &a.name {
        Some(n) => n.clone(),
        None => src
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    check_name(&name)?;
    let final_dir = models_dir(home).join(&name);
    if final_dir.exists() && !a.force {
        return Err(user_error(
            ErrorCode::Exists,
            format!("a model named {name} is already stored"),
            "pass --force to replace it, or choose another --name",
        ));
    }
    // (source file, name in the store)
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    match format {
        ModelFormat::HfDir => {
            for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
                let p = e?.path();
                let n = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                if p.is_file() && !n.starts_with('.') {
                    files.push((p, n));
                }
            }
        }
        ModelFormat::Gguf => files.push((
            src.clone(),
            src.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        )),
        ModelFormat::Llama2c => {
            files.push((
                src.clone(),
                src.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            ));
            let tok = a.tokenizer.clone().or_else(|| {
                let t = src.with_file_name("tokenizer.bin");
                t.is_file().then_some(t)
            });
            match tok {
                Some(t) => {
                    // The tokenizer must fit the model (llama2.c folders often hold the
                    // 32000-token Llama 2 tokenizer.bin beside a small model).
                    let model = nf_model::Model::open(src)?;
                    let tk = crate::load::load_tokenizer(&t, None)?;
                    if tk.vocab_size() > model.config.vocab_size {
                        return Err(user_error(
                            ErrorCode::Mismatch,
                            format!(
                                "{} has {} tokens but the model's vocabulary has {}",
                                t.display(),
                                tk.vocab_size(),
                                model.config.vocab_size
                            ),
                            "pass the tokenizer that belongs to this checkpoint with --tokenizer",
                        ));
                    }
                    files.push((t, "tokenizer.bin".into()))
                }
                None => {
                    return Err(user_error(
                        ErrorCode::BadInput,
                        format!(
                            "{} is a llama2.c checkpoint, which carries no tokenizer",
                            src.display()
                        ),
                        "pass --tokenizer PATH (its tokenizer.bin) to store it with the model",
                    ));
                }
            }
        }
    }
    files.sort_by(|a, b| a.1.cmp(&b.1));
    std::fs::create_dir_all(models_dir(home))?;
    let staging = models_dir(home).join(format!(".import-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    let mut stored = Vec::new();
    for (from, to) in &files {
        let dest = staging.join(to);
        let linked = a.link && std::fs::hard_link(from, &dest).is_ok();
        if !linked {
            std::fs::copy(from, &dest)
                .with_context(|| format!("copying {} to {}", from.display(), dest.display()))?;
        }
        let sha256 = nf_audit::sha256_file(&dest).map_err(crate::audit::audit_error)?;
        rec.inputs
            .push(Artifact::new("model-file", from, Some(sha256.clone())));
        stored.push(StoredFile {
            path: to.clone(),
            size: std::fs::metadata(&dest)?.len(),
            sha256,
        });
    }
    let abs = std::fs::canonicalize(src).unwrap_or_else(|_| src.clone());
    let m = StoredModel {
        format: "neuralforge-model".into(),
        version: 1,
        name: name.clone(),
        model_format: format.name().into(),
        source: abs.display().to_string(),
        added: nf_protocol::rfc3339_now(),
        repo: None,
        revision: None,
        commit: None,
        endpoint: None,
        files: stored,
    };
    write_model_json(&staging, &m)?;
    install(&staging, &final_dir)?;
    rec.outputs
        .push(Artifact::file("model", final_dir.join(MODEL_FILE))?);
    rec.details = Some(serde_json::json!({"name": name, "linked": a.link}));
    out.event(|| stored_event(&m, &final_dir, true))?;
    if !out.is_json() {
        eprintln!(
            "stored {name} ({}, {} files, {})",
            m.model_format,
            m.files.len(),
            human_bytes(m.files.iter().map(|f| f.size).sum())
        );
    }
    out.text(&format!("{}\n", final_dir.display()))?;
    Ok(())
}

fn rm(a: &ModelsNameArgs, home: &Path, out: &mut Output, rec: &mut nf_audit::Record) -> Result<()> {
    check_name(&a.name)?;
    let dir = models_dir(home).join(&a.name);
    if !dir.is_dir() {
        return Err(user_error(
            ErrorCode::NotFound,
            format!("no stored model named {}", a.name),
            "`neuralforge models list` shows the stored models",
        ));
    }
    if dir.join(MODEL_FILE).is_file() {
        rec.inputs
            .push(Artifact::file("model", dir.join(MODEL_FILE))?);
    }
    let trash = models_dir(home).join(format!(".rm-{}-{}", a.name, std::process::id()));
    std::fs::rename(&dir, &trash).with_context(|| format!("removing {}", dir.display()))?;
    std::fs::remove_dir_all(&trash).with_context(|| format!("removing {}", trash.display()))?;
    rec.details = Some(serde_json::json!({"name": a.name}));
    if !out.is_json() {
        eprintln!("removed {}", dir.display());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// pull

/// A file of the repository to download.
#[derive(Debug, Clone)]
struct RemoteFile {
    path: String,
    size: Option<u64>,
    /// From the tree listing's `lfs.oid`.
    sha256: Option<String>,
}

struct Hub {
    agent: ureq::Agent,
    /// The longest wait for the next bytes of a file before the pull gives up.
    stall: Duration,
    endpoint: String,
    token: Option<String>,
}

/// What a GET returned, redirects followed.
struct Fetched {
    status: u16,
    response: ureq::http::Response<ureq::Body>,
    /// `X-Linked-Etag` seen on a redirect or the final response (unquoted).
    linked_etag: Option<String>,
}

fn net_error(url: &str, e: ureq::Error) -> anyhow::Error {
    user_error(
        ErrorCode::Network,
        format!("{url}: {e}"),
        "check the connection and --endpoint / HF_ENDPOINT; an interrupted download resumes when you run the same pull again",
    )
}

impl Hub {
    fn new(endpoint: &str, stall: Duration) -> Hub {
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(format!("neuralforge/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Hub {
            agent: config.into(),
            stall,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()),
        }
    }

    /// GET with our own redirect handling (at most 5), keeping `X-Linked-Etag`.
    fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<Fetched> {
        let mut url = url.to_string();
        let mut linked_etag = None;
        for _ in 0..6 {
            let mut req = self.agent.get(&url);
            // Credentials go only to the hub itself (the same scheme, host and port), never
            // to a host it redirects to: a prefix test would let `https://hf.co.evil` pass.
            if let Some(t) = &self.token
                && same_origin(&url, &self.endpoint)
            {
                req = req.header("Authorization", format!("Bearer {t}"));
            }
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let response = req.call().map_err(|e| net_error(&url, e))?;
            let status = response.status().as_u16();
            let header = |n: &str| {
                response
                    .headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(|v| {
                        v.trim()
                            .trim_start_matches("W/")
                            .trim_matches('"')
                            .to_string()
                    })
            };
            if let Some(e) = header("x-linked-etag") {
                linked_etag = Some(e);
            }
            if (300..400).contains(&status) {
                let Some(loc) = header("location") else {
                    return Err(user_error(
                        ErrorCode::Network,
                        format!("{url}: redirect without a Location"),
                        "the server is not a Hugging Face hub",
                    ));
                };
                url = redirect_target(&url, &loc)?;
                continue;
            }
            return Ok(Fetched {
                status,
                response,
                linked_etag,
            });
        }
        Err(user_error(
            ErrorCode::Network,
            format!("{url}: too many redirects"),
            "check --endpoint",
        ))
    }

    fn get_json(&self, url: &str, what: &str) -> Result<serde_json::Value> {
        let mut f = self.get(url, &[])?;
        match f.status {
            200 => {}
            401 | 403 => {
                return Err(user_error(
                    ErrorCode::Forbidden,
                    format!("{what}: the hub refused access ({})", f.status),
                    "the repository may be gated or private: accept its terms on the hub and set HF_TOKEN",
                ));
            }
            404 => {
                return Err(user_error(
                    ErrorCode::NotFound,
                    format!("{what}: not found on {}", self.endpoint),
                    "check the repository name and --revision (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)",
                ));
            }
            s => {
                return Err(user_error(
                    ErrorCode::Network,
                    format!("{what}: the hub answered HTTP {s}"),
                    "try again later, or use another --endpoint",
                ));
            }
        }
        let text = f
            .response
            .body_mut()
            .read_to_string()
            .map_err(|e| net_error(url, e))?;
        serde_json::from_str(&text).map_err(|e| {
            user_error(
                ErrorCode::Network,
                format!("{what}: not the hub's JSON: {e}"),
                "check --endpoint: it must serve the Hugging Face hub API",
            )
        })
    }
}

/// Where a redirect from `url` to `Location: loc` leads: absolute, or resolved against
/// `url`. A redirect from https to plain http is refused: the rest of the download would
/// travel unencrypted.
fn redirect_target(url: &str, loc: &str) -> Result<String> {
    let lower = loc.to_ascii_lowercase();
    if url.starts_with("https://") && lower.starts_with("http://") {
        return Err(user_error(
            ErrorCode::Network,
            format!("{url}: refusing a redirect from https to plain http ({loc})"),
            "the download would no longer be encrypted; check --endpoint or the network",
        ));
    }
    Ok(
        if lower.starts_with("http://") || lower.starts_with("https://") {
            loc.to_string()
        } else if loc.starts_with('/') {
            format!("{}{loc}", origin(url))
        } else {
            format!("{}/{loc}", url.rsplit_once('/').map_or(url, |(a, _)| a))
        },
    )
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` answer.
fn content_range_start(value: Option<&str>) -> Option<u64> {
    let rest = value?.trim().strip_prefix("bytes")?.trim_start();
    rest.split_once('-')?.0.trim().parse().ok()
}

/// Whether two URLs have the same scheme, host and port (compared case-insensitively).
fn same_origin(a: &str, b: &str) -> bool {
    origin(a).eq_ignore_ascii_case(&origin(b))
}

fn origin(url: &str) -> String {
    let after = url.find("://").map_or(0, |i| i + 3);
    match url[after..].find('/') {
        Some(i) => url[..after + i].to_string(),
        None => url.to_string(),
    }
}

/// Whether a path from a hub's file list could resolve outside the folder it is joined
/// to: empty, absolute, with an empty, `.` or `..` component, or with a backslash or NUL
/// (a Windows separator, or the end of a C string).
fn escapes_folder(path: &str) -> bool {
    use std::path::{Component, Path};
    path.is_empty()
        || path.contains(['\\', '\0'])
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || !Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// `*` matches any run of characters (including `/`), `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The files a model needs when no `--include` is given.
const DEFAULT_INCLUDE: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "*.safetensors",
    "model.safetensors.index.json",
];

fn pull(
    a: &ModelsPullArgs,
    home: &Path,
    out: &mut Output,
    rec: &mut nf_audit::Record,
) -> Result<()> {
    let repo = a.repo.trim_matches('/');
    if repo.is_empty() || repo.split('/').count() > 2 || repo.contains("..") {
        return Err(user_error(
            ErrorCode::BadInput,
            format!("`{}` is not a repository name", a.repo),
            "use OWNER/NAME, e.g. HuggingFaceTB/SmolLM2-135M-Instruct",
        ));
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| repo.rsplit('/').next().unwrap_or(repo).to_string());
    check_name(&name)?;
    let final_dir = models_dir(home).join(&name);
    if final_dir.exists() && !a.force {
        return Err(user_error(
            ErrorCode::Exists,
            format!("a model named {name} is already stored"),
            "pass --force to replace it, or choose another --name",
        ));
    }
    let endpoint = a
        .endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let hub = Hub::new(&endpoint, Duration::from_secs_f64(a.stall_timeout));
    let e = &hub.endpoint;
    let info = hub.get_json(
        &format!("{e}/api/models/{repo}/revision/{}", a.revision),
        &format!("{repo}@{}", a.revision),
    )?;
    let commit = info["sha"].as_str().unwrap_or(&a.revision).to_string();
    let tree = hub.get_json(
        &format!("{e}/api/models/{repo}/tree/{commit}?recursive=true"),
        &format!("{repo}@{commit} file list"),
    )?;
    let mut all: Vec<RemoteFile> = tree
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["type"] == "file")
        .filter_map(|f| {
            Some(RemoteFile {
                path: f["path"].as_str()?.to_string(),
                size: f["lfs"]["size"].as_u64().or(f["size"].as_u64()),
                sha256: f["lfs"]["oid"].as_str().map(str::to_string),
            })
        })
        .collect();
    if all.is_empty() {
        // Older mirrors: the revision's sibling list.
        all = info["siblings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(RemoteFile {
                    path: s["rfilename"].as_str()?.to_string(),
                    size: s["lfs"]["size"].as_u64().or(s["size"].as_u64()),
                    sha256: s["lfs"]["sha256"].as_str().map(str::to_string),
                })
            })
            .collect();
    }
    let patterns: Vec<String> = if a.include.is_empty() {
        DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect()
    } else {
        a.include.clone()
    };
    if let Some(bad) = all.iter().find(|f| escapes_folder(&f.path)) {
        return Err(user_error(
            ErrorCode::BadInput,
            format!(
                "{repo}@{commit}: the hub lists the path {:?}, which would land outside the model's folder",
                bad.path
            ),
            "this hub or mirror is not trustworthy; nothing was downloaded",
        ));
    }
    let files: Vec<RemoteFile> = all
        .iter()
        .filter(|f| patterns.iter().any(|p| glob_match(p, &f.path)))
        // Hidden files (.gitattributes) are the repository's, not the model's.
        .filter(|f| !f.path.split('/').any(|c| c.starts_with('.')))
        .cloned()
        .collect();
    if files.is_empty() {
        let names: Vec<&str> = all.iter().map(|f| f.path.as_str()).take(12).collect();
        return Err(user_error(
            ErrorCode::NotFound,
            format!("{repo}@{commit}: no files match {}", patterns.join(" ")),
            format!(
                "pick files with --include PATTERN; the repository has: {}",
                names.join(" ")
            ),
        ));
    }
    std::fs::create_dir_all(models_dir(home))?;
    // The staging folder is kept between attempts so partial files resume. A lock beside
    // it (not inside: the folder is renamed into place) keeps a second pull of the same
    // name from writing the same partial files; the OS drops it if this process dies.
    let staging = models_dir(home).join(format!(".pull-{name}"));
    let lock_path = models_dir(home).join(format!(".pull-{name}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    if let Err(e) = lock.try_lock() {
        return Err(match e {
            std::fs::TryLockError::WouldBlock => user_error(
                ErrorCode::Busy,
                format!("another `models pull` of {name} is running"),
                "wait for it to finish; it installs the same files",
            ),
            std::fs::TryLockError::Error(e) => {
                anyhow::Error::new(e).context(format!("locking {}", lock_path.display()))
            }
        });
    }
    std::fs::create_dir_all(&staging)?;
    let tty = std::io::stderr().is_terminal() && !out.is_json();
    let mut stored = Vec::new();
    for f in &files {
        let dest = staging.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let sha256 = download(&hub, repo, &commit, f, &dest, out, tty)?;
        rec.inputs.push(Artifact {
            kind: "remote-file".into(),
            path: Some(format!("hf://{repo}@{commit}/{}", f.path)),
            sha256: Some(sha256.clone()),
        });
        stored.push(StoredFile {
            path: f.path.clone(),
            size: std::fs::metadata(&dest)?.len(),
            sha256,
        });
    }
    let format = ModelFormat::detect(&staging)
        .or_else(|_| {
            // A single-file model: the .gguf or .bin among the files.
            let one = stored
                .iter()
                .find(|f| {
                    f.path.ends_with(".gguf")
                        || (f.path.ends_with(".bin") && f.path != "tokenizer.bin")
                })
                .map(|f| staging.join(&f.path))
                .ok_or_else(|| anyhow::anyhow!("no model file"))?;
            ModelFormat::detect(&one).map_err(anyhow::Error::from)
        })
        .map(|f| f.name().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let m = StoredModel {
        format: "neuralforge-model".into(),
        version: 1,
        name: name.clone(),
        model_format: format,
        source: format!("hf://{repo}@{commit}"),
        added: nf_protocol::rfc3339_now(),
        repo: Some(repo.to_string()),
        revision: Some(a.revision.clone()),
        commit: Some(commit.clone()),
        endpoint: Some(hub.endpoint.clone()),
        files: stored,
    };
    let keep: BTreeSet<PathBuf> = m.files.iter().map(|f| PathBuf::from(&f.path)).collect();
    remove_strays(&staging, Path::new(""), &keep)?;
    write_model_json(&staging, &m)?;
    install(&staging, &final_dir)?;
    rec.outputs
        .push(Artifact::file("model", final_dir.join(MODEL_FILE))?);
    rec.details = Some(serde_json::json!({
        "name": name, "repo": repo, "revision": a.revision, "commit": commit, "endpoint": hub.endpoint,
    }));
    out.event(|| stored_event(&m, &final_dir, true))?;
    if !out.is_json() {
        eprintln!(
            "stored {name} from {repo}@{} ({} files, {})",
            &commit[..commit.len().min(12)],
            m.files.len(),
            human_bytes(m.files.iter().map(|f| f.size).sum())
        );
    }
    out.text(&format!("{}\n", final_dir.display()))?;
    Ok(())
}

/// Removes from a pull's staging folder every file that is not one of `keep` (paths relative
/// to it), and folders left empty. The folder is kept between attempts so downloads resume,
/// so it can hold what an interrupted attempt left (a temporary `model.json`, partial files
/// of another `--include`), none of which belongs in the model about to be installed.
fn remove_strays(dir: &Path, rel: &Path, keep: &BTreeSet<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let (path, rel) = (entry.path(), rel.join(entry.file_name()));
        let removed = if entry.file_type()?.is_dir() {
            remove_strays(&path, &rel, keep)?;
            match std::fs::read_dir(&path)?.next() {
                None => std::fs::remove_dir(&path),
                Some(_) => Ok(()),
            }
        } else if keep.contains(&rel) {
            Ok(())
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Downloads one file to `dest` via `dest.partial` (resuming it), verifies it, and returns
/// its sha256. A file already complete in the staging folder is verified, not fetched.
fn download(
    hub: &Hub,
    repo: &str,
    commit: &str,
    f: &RemoteFile,
    dest: &Path,
    out: &mut Output,
    tty: bool,
) -> Result<String> {
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    let etag_file = PathBuf::from(format!("{}.partial.etag", dest.display()));
    if dest.is_file() {
        let sha = nf_audit::sha256_file(dest).map_err(crate::audit::audit_error)?;
        let size_ok = f
            .size
            .is_none_or(|s| std::fs::metadata(dest).map(|m| m.len()).ok() == Some(s));
        if size_ok && f.sha256.as_ref().is_none_or(|h| *h == sha) {
            return Ok(sha);
        }
        std::fs::remove_file(dest)?;
    }
    let url = format!(
        "{}/{repo}/resolve/{commit}/{}",
        hub.endpoint,
        f.path.split('/').map(percent).collect::<Vec<_>>().join("/")
    );
    let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
    let etag = std::fs::read_to_string(&etag_file).ok();
    let mut headers = Vec::new();
    if have > 0 {
        headers.push(("Range", format!("bytes={have}-")));
        if let Some(e) = &etag {
            headers.push(("If-Range", format!("\"{}\"", e.trim())));
        }
    }
    let fetched = hub.get(&url, &headers)?;
    let resume = match fetched.status {
        206 => {
            // The part must start where the partial file ends, or appending it would splice
            // the wrong bytes in (the checksum would then fail, after the whole download).
            let range = fetched
                .response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if content_range_start(range.as_deref()) != Some(have) {
                if have == 0 {
                    return Err(user_error(
                        ErrorCode::Network,
                        format!(
                            "{url}: a partial answer ({}) to a whole-file request",
                            range.as_deref().unwrap_or("no Content-Range")
                        ),
                        "the server is not a Hugging Face hub; check --endpoint",
                    ));
                }
                let _ = std::fs::remove_file(&partial);
                return download(hub, repo, commit, f, dest, out, tty);
            }
            true
        }
        200 => false,
        416 if have > 0 => {
            // The partial file is already whole (or the server disagrees): start over once.
            let _ = std::fs::remove_file(&partial);
            return download(hub, repo, commit, f, dest, out, tty);
        }
        404 => {
            return Err(user_error(
                ErrorCode::NotFound,
                format!("{}: not found (HTTP 404)", f.path),
                "the file list and the files disagree; try another --revision",
            ));
        }
        s => {
            return Err(user_error(
                ErrorCode::Network,
                format!("{url}: HTTP {s}"),
                "try again later; the download resumes where it stopped",
            ));
        }
    };
    let expected = f.sha256.clone().or_else(|| {
        fetched
            .linked_etag
            .clone()
            .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    let header = |n: &str| {
        fetched
            .response
            .headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let new_etag = fetched.linked_etag.clone().or_else(|| {
        header("etag").map(|v| v.trim_start_matches("W/").trim_matches('"').to_string())
    });
    let len: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let total = f.size.or(len.map(|l| if resume { l + have } else { l }));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resume)
        .truncate(!resume)
        .open(&partial)
        .with_context(|| format!("opening {}", partial.display()))?;
    if let Some(e) = &new_etag {
        let _ = std::fs::write(&etag_file, e);
    }
    let mut done = if resume { have } else { 0 };
    let body = fetched.response.into_body().into_reader();
    let mut reader = crate::stall::StallGuard::new(body, hub.stall)
        .context("starting the download's reader thread")?;
    let mut buf = vec![0u8; 1 << 16];
    let mut last = Instant::now();
    let mut report = |done: u64, out: &mut Output, force: bool| {
        if !force && last.elapsed() < Duration::from_millis(200) {
            return;
        }
        last = Instant::now();
        let _ = out.event(|| Event::DownloadProgress {
            file: f.path.clone(),
            done,
            total,
        });
        if tty {
            let pct = total.map_or(String::new(), |t| format!(" {:>3}%", done * 100 / t.max(1)));
            eprint!(
                "\r\x1b[2K{}{pct} {}{}",
                f.path,
                human_bytes(done),
                total.map_or(String::new(), |t| format!(" / {}", human_bytes(t)))
            );
            let _ = std::io::stderr().flush();
        }
    };
    report(done, out, true);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.sync_all();
                if tty {
                    eprintln!();
                }
                return Err(user_error(
                    ErrorCode::Network,
                    format!(
                        "{}: the download broke off after {} ({e})",
                        f.path,
                        human_bytes(done)
                    ),
                    "run the same command again: it resumes from the partial file",
                ));
            }
        };
        file.write_all(&buf[..n])
            .with_context(|| format!("writing {}", partial.display()))?;
        done += n as u64;
        report(done, out, false);
    }
    file.sync_all()?;
    drop(file);
    report(done, out, true);
    if tty {
        eprintln!();
    }
    if let Some(t) = total.filter(|t| *t != done) {
        return Err(user_error(
            ErrorCode::Network,
            format!("{}: got {done} of {t} bytes", f.path),
            "run the same command again: it resumes from the partial file",
        ));
    }
    let sha = nf_audit::sha256_file(&partial).map_err(crate::audit::audit_error)?;
    if let Some(want) = &expected
        && *want != sha
    {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&etag_file);
        return Err(user_error(
            ErrorCode::Checksum,
            format!(
                "{}: sha256 {sha} does not match the hub's {want}; the file was not installed",
                f.path
            ),
            "run the command again to download it afresh; if it keeps failing, the mirror serves a wrong file",
        ));
    }
    std::fs::rename(&partial, dest).with_context(|| format!("renaming into {}", dest.display()))?;
    let _ = std::fs::remove_file(&etag_file);
    Ok(sha)
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(glob_match("config.json", "config.json"));
        assert!(!glob_match("config.json", "xconfig.json"));
        assert!(glob_match("*q4_0*", "smol-q4_0.gguf"));
        assert!(glob_match("tok?n.bin", "token.bin"));
        assert!(!glob_match("*.gguf", "model.bin"));
        assert!(glob_match("*", "a/b"));
    }

    #[test]
    fn hub_paths_that_leave_the_folder_are_caught() {
        for bad in [
            "",
            "/etc/passwd",
            "//x",
            "../up.bin",
            "a/../../b",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(escapes_folder(bad), "{bad:?} passed");
        }
        for good in ["model.gguf", "onnx/model.bin", ".gitattributes", "a/b.c/d"] {
            assert!(!escapes_folder(good), "{good:?} refused");
        }
    }

    #[test]
    fn redirects_resolve_and_never_downgrade() {
        let r = |u, l| redirect_target(u, l).map_err(|e| e.to_string());
        assert_eq!(
            r("https://a.io/x/y", "https://b.io/z").unwrap(),
            "https://b.io/z"
        );
        assert_eq!(r("https://a.io/x/y", "/z").unwrap(), "https://a.io/z");
        assert_eq!(r("https://a.io/x/y", "z").unwrap(), "https://a.io/x/z");
        assert_eq!(
            r("http://a.io/x", "https://b.io/").unwrap(),
            "https://b.io/"
        );
        for loc in ["http://b.io/z", "HTTP://b.io/z"] {
            let e = r("https://a.io/x", loc).unwrap_err();
            assert!(e.contains("from https to plain http"), "{e}");
        }
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(content_range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(content_range_start(Some(" bytes 0-9/*")), Some(0));
        for bad in [
            None,
            Some(""),
            Some("bytes */200"),
            Some("items 1-2/3"),
            Some("bytes x-1/2"),
        ] {
            assert_eq!(content_range_start(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn origins() {
        assert_eq!(origin("http://127.0.0.1:8080/a/b"), "http://127.0.0.1:8080");
        assert_eq!(origin("https://hf.co"), "https://hf.co");
        // The token's host check: whole origins, not prefixes.
        assert!(same_origin("https://hf.co/api/x", "https://hf.co"));
        assert!(same_origin("https://HF.co/x", "https://hf.co/"));
        assert!(!same_origin("https://hf.co.evil.com/x", "https://hf.co"));
        assert!(!same_origin("https://hf.co:8443/x", "https://hf.co"));
        assert!(!same_origin("http://hf.co/x", "https://hf.co"));
    }
}
