//! The studio through the real binary and raw HTTP: every route refuses a request without
//! the token, for another Host, or from another origin; it listens on loopback only by
//! default; jobs carry the CLI's errors; and training runs live in their own processes,
//! so a killed run shows as failed and a restarted studio finds a run still going.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nf_testkit::{require_assets, temp_dir};
use serde_json::{Value, json};

/// `neuralforge --home HOME studio` on a free port, without opening a browser.
fn studio_command(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_neuralforge"));
    c.arg("--home")
        .arg(home)
        .args(["studio", "--no-open", "--port", "0"]);
    c
}

/// A running `neuralforge studio`, killed when dropped.
struct Studio {
    child: Child,
    port: u16,
    token: String,
}

impl Studio {
    fn start(home: &Path, extra: &[&str]) -> Studio {
        Studio::start_env(home, extra, &[])
    }

    /// With extra environment for the studio and the commands it runs.
    fn start_env(home: &Path, extra: &[&str], env: &[(&str, &str)]) -> Studio {
        let mut child = studio_command(home)
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("NEURALFORGE_OFFLINE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the studio");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = &line[line.find("http://").expect("the studio prints its URL")..].trim();
        let (addr, token) = url
            .trim_start_matches("http://")
            .split_once("/?token=")
            .unwrap();
        let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
        Studio {
            child,
            port,
            token: token.to_string(),
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A request with the token as a bearer header and the right Host.
    fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String, Value) {
        let auth = format!("Bearer {}", self.token);
        let body = body.map(|b| b.to_string());
        let (status, head, text) = request(
            self.port,
            method,
            path,
            &[("Host", &self.host()), ("Authorization", &auth)],
            body.as_deref(),
        );
        (
            status,
            head,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Studio {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.1 request on a fresh connection; the answer's status, head and body. A
/// streaming answer (SSE) is read for at most a second.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => break, // a stream that stays open: what came is enough
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer to {method} {path}: {text:?}"));
    (status, head.to_string(), dechunk(head, body))
}

/// Undoes chunked transfer encoding, which axum uses for bodies of unknown length.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            out.push_str(&after[..n.min(after.len())]);
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Pages and their files: no data in them, so no token needed (the Host and Origin checks
/// still apply).
const PAGES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/configure"),
    ("GET", "/ingest"),
    ("GET", "/models"),
    ("GET", "/generate"),
    ("GET", "/audit"),
    ("GET", "/assets/app.js"),
    ("GET", "/assets/app.css"),
];

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/no-such-route"),
    ("GET", "/api/info"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/some-run"),
    ("GET", "/api/runs/some-run/events"),
    ("POST", "/api/runs/some-run/stop"),
    ("POST", "/api/runs/some-run/resume"),
    ("POST", "/api/train"),
    ("POST", "/api/train/estimate"),
    ("GET", "/api/jobs"),
    ("GET", "/api/jobs/1"),
    ("GET", "/api/jobs/1/events"),
    ("PUT", "/api/uploads/u1/a.txt"),
    ("POST", "/api/ingest"),
    ("GET", "/api/datasets"),
    ("GET", "/api/datasets/d"),
    ("GET", "/api/models"),
    ("GET", "/api/models/m"),
    ("POST", "/api/models/import"),
    ("POST", "/api/models/pull"),
    ("POST", "/api/generate"),
    ("GET", "/api/audit"),
    ("POST", "/api/audit/verify"),
    ("GET", "/api/audit/export"),
];

#[test]
fn every_route_needs_the_token_the_host_and_the_origin() {
    let home = temp_dir("studio-sec");
    let studio = Studio::start(&home, &[]);
    let host = studio.host();
    let good = format!("Bearer {}", studio.token);
    let wrong = format!("Bearer {}", "0".repeat(64));
    // A cookie is never accepted, even with the right token: browsers send a host's
    // cookies to all its ports, so the studio neither sets nor reads one.
    let cookie = format!("nf_studio_{}={}", studio.port, studio.token);
    for &(method, path) in ROUTES {
        for headers in [
            vec![("Host", host.as_str())],
            vec![("Host", host.as_str()), ("Authorization", wrong.as_str())],
            vec![("Host", host.as_str()), ("Cookie", cookie.as_str())],
        ] {
            let (status, head, _) = request(studio.port, method, path, &headers, None);
            assert_eq!(status, 401, "{method} {path} with {headers:?}");
            assert!(!head.to_ascii_lowercase().contains("access-control-allow"));
        }
    }
    for &(method, path) in ROUTES.iter().chain(PAGES) {
        // A rebinding attack reaches us under its own host name, token or not.
        let (status, _, _) = request(
            studio.port,
            method,
            path,
            &[("Host", "attacker.example:80"), ("Authorization", &good)],
            None,
        );
        assert_eq!(status, 403, "{method} {path} with a foreign Host");
        let (status, _, _) = request(studio.port, method, path, &[("Authorization", &good)], None);
        assert_eq!(status, 403, "{method} {path} without a Host");
    }
    // Cross-site requests are refused even with the token; the studio's own origin passes.
    for (name, value) in [
        ("Origin", "http://attacker.example"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
    ] {
        let (status, head, _) = request(
            studio.port,
            "POST",
            "/api/audit/verify",
            &[("Host", &host), ("Authorization", &good), (name, value)],
            None,
        );
        assert_eq!(status, 403, "POST with {name}: {value}");
        assert!(!head.to_ascii_lowercase().contains("access-control-allow"));
    }
    let own = format!("http://{host}");
    let (status, _, _) = request(
        studio.port,
        "POST",
        "/api/audit/verify",
        &[("Host", &host), ("Authorization", &good), ("Origin", &own)],
        None,
    );
    assert_eq!(status, 200, "a same-origin POST");
    // Pages load without the token and with it in the address; no cookie is ever set.
    for &(method, path) in PAGES {
        for path in [path.to_string(), format!("{path}?token={}", studio.token)] {
            let (status, head, _) = request(studio.port, method, &path, &[("Host", &host)], None);
            assert_eq!(status, 200, "{method} {path}");
            assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
        }
    }
    let (_, head, body) = request(studio.port, "GET", "/", &[("Host", &host)], None);
    assert!(body.contains("<!doctype html>"));
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(head.contains("referrer-policy: no-referrer"), "{head}");
    // Where a browser cannot send headers (event streams, downloads), `?token=` works.
    let (status, _, _) = request(
        studio.port,
        "GET",
        &format!("/api/audit/export?format=csv&token={}", studio.token),
        &[("Host", &host)],
        None,
    );
    assert_eq!(status, 200);
    let (status, _, info) = studio.api("GET", "/api/info", None);
    assert_eq!(status, 200);
    assert_eq!(info["home"], json!(home));
}

/// The listening sockets on `port`, as (address hex, is IPv6) from /proc/net.
#[cfg(target_os = "linux")]
fn listeners(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else {
                continue;
            };
            let (addr, p) = local.split_once(':').unwrap();
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                found.push(addr.to_string());
            }
        }
    }
    found
}

#[cfg(target_os = "linux")]
#[test]
fn listens_on_loopback_only_unless_told_otherwise() {
    let home = temp_dir("studio-bind");
    let studio = Studio::start(&home, &[]);
    // 127.0.0.1 in /proc/net/tcp's little-endian hex.
    assert_eq!(listeners(studio.port), vec!["0100007F".to_string()]);
    drop(studio);
    let mut open = Studio::start(&home, &["--host", "0.0.0.0"]);
    assert_eq!(listeners(open.port), vec!["00000000".to_string()]);
    open.kill();
    let mut err = String::new();
    open.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains("warning: the studio listens on 0.0.0.0"),
        "{err}"
    );
}

fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn job_result(studio: &Studio, job: &Value) -> Value {
    let path = format!("/api/jobs/{}", job["job"]);
    wait_for("a job to end", Duration::from_secs(120), || {
        let (_, _, j) = studio.api("GET", &path, None);
        (j["status"] != "running").then_some(j)
    })
}

#[test]
fn jobs_report_results_and_the_clis_errors() {
    let assets = require_assets!();
    let home = temp_dir("studio-jobs");
    let studio = Studio::start(&home, &[]);
    let (status, _, job) = studio.api(
        "POST",
        "/api/models/import",
        Some(json!({"path": home.join("missing.bin")})),
    );
    assert_eq!(status, 200);
    let failed = job_result(&studio, &job);
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("missing.bin"),
        "{failed}"
    );
    assert!(failed["hint"].is_string(), "{failed}");
    let (_, _, job) = studio.api(
        "POST",
        "/api/models/import",
        Some(json!({
            "path": assets.join("llama2c/stories260K.bin"),
            "tokenizer": assets.join("llama2c/tok512.bin"),
        })),
    );
    assert_eq!(job_result(&studio, &job)["status"], "ok");
    let (_, _, models) = studio.api("GET", "/api/models", None);
    assert_eq!(models[0]["name"], "stories260K", "{models}");
    let (status, _, detail) = studio.api("GET", "/api/models/stories260K", None);
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["info"]["vocab_size"], 512, "{detail}");
    // A bad request is refused before anything runs, with a hint.
    let (status, _, err) = studio.api(
        "POST",
        "/api/train",
        Some(json!({"model": "stories260K", "dataset": "x", "method": "qlora"})),
    );
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("qlora") && err["hint"].is_string());
    let (status, _, _) = studio.api("PUT", "/api/uploads/u1/..", None);
    assert_eq!(status, 400, "an upload name that climbs out of its folder");
    // A name is kept as the user's, accents and spaces included (it is provenance).
    let (status, _, saved) = studio.api("PUT", "/api/uploads/u2/%C3%9Cbersicht%20Q3.txt", None);
    assert_eq!(status, 200, "{saved}");
    assert!(
        saved["path"]
            .as_str()
            .unwrap()
            .ends_with("/u2/Übersicht Q3.txt"),
        "{saved}"
    );
    // An uploaded document becomes a dataset, and the dataset names it as a source.
    let auth = format!("Bearer {}", studio.token);
    let text = "Once upon a time there was a little dog named Pip. He liked the sun. ".repeat(40);
    let (status, _, body) = request(
        studio.port,
        "PUT",
        "/api/uploads/u1/pip.txt",
        &[("Host", &studio.host()), ("Authorization", &auth)],
        Some(&text),
    );
    assert_eq!(status, 200, "{body}");
    let (_, _, job) = studio.api(
        "POST",
        "/api/ingest",
        Some(json!({"name": "pip", "model": "stories260K", "upload": "u1", "seq_len": 64})),
    );
    let done = job_result(&studio, &job);
    assert_eq!(done["status"], "ok", "{done}");
    let (status, _, ds) = studio.api("GET", "/api/datasets/pip", None);
    assert_eq!(status, 200, "{ds}");
    assert!(ds["info"]["train_tokens"].as_u64() > Some(0), "{ds}");
    assert!(ds["manifest"].to_string().contains("pip.txt"), "{ds}");
    // The estimate is a dry run of the same request: it measures and writes nothing.
    let request = json!({"model": "stories260K", "dataset": "pip", "steps": 50, "seq_len": 32});
    let (status, _, plan) = studio.api("POST", "/api/train/estimate", Some(request));
    assert_eq!(status, 200, "{plan}");
    assert_eq!(plan["type"], "train.plan");
    assert!(plan["memory"]["total"].as_u64() > Some(0) && plan["estimated_s"].as_f64() > Some(0.0));
    assert!(
        !home.join("runs").exists() || std::fs::read_dir(home.join("runs")).unwrap().count() == 0
    );
}

#[test]
fn json_mode_announces_the_address_as_an_event() {
    let home = temp_dir("studio-json");
    let mut child = studio_command(&home)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let e: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(e["type"], "studio.ready", "{line}");
    assert_eq!(e["host"], "127.0.0.1");
    let url = e["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("http://127.0.0.1:{}/?token=", e["port"])),
        "{url}"
    );
}

/// Kills, when dropped, every process whose command line names this home: a test that
/// fails half-way must not leave a million-step run behind.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.filter_map(|p| p.ok()) {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32
                && String::from_utf8_lossy(&cmdline).contains(&self.0)
            {
                signal(pid, libc::SIGKILL);
            }
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[test]
fn pull_reports_progress_and_lands_in_the_store() {
    let assets = require_assets!();
    let hub = nf_testkit::hub::FakeHub::start(nf_testkit::hub::stories_files(&assets));
    let home = temp_dir("studio-pull");
    let studio = Studio::start_env(&home, &[], &[("HF_ENDPOINT", &hub.url)]);
    let (status, _, job) = studio.api(
        "POST",
        "/api/models/pull",
        Some(json!({"repo": "org/tiny", "include": ["*.bin"]})),
    );
    assert_eq!(status, 200, "{job}");
    let done = job_result(&studio, &job);
    assert_eq!(done["status"], "ok", "{done}");
    let (_, _, detail) = studio.api("GET", &format!("/api/jobs/{}", job["job"]), None);
    let events = detail["events"].as_array().unwrap();
    let progress: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "download.progress")
        .collect();
    assert!(!progress.is_empty(), "{detail}");
    let last = progress.last().unwrap();
    assert_eq!(
        last["done"], last["total"],
        "the last progress event is the whole download"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "model.stored" && e["name"] == "tiny"),
        "{detail}"
    );
    let (_, _, models) = studio.api("GET", "/api/models", None);
    assert_eq!(models[0]["name"], "tiny", "{models}");
    // A repository the hub does not have fails with the CLI's message.
    let (_, _, job) = studio.api(
        "POST",
        "/api/models/pull",
        Some(json!({"repo": "org/none"})),
    );
    let failed = job_result(&studio, &job);
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["error"].as_str().unwrap().contains("org/none"),
        "{failed}"
    );
}

#[test]
fn a_run_started_from_a_terminal_shows_up() {
    let assets = require_assets!();
    let home = temp_dir("studio-cli-run");
    let _cleanup = KillOnDrop(home.display().to_string());
    let studio = Studio::start(&home, &[]);
    let dir = home.join("runs").join("from-the-terminal");
    let status = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .args([
            "--home",
            home.to_str().unwrap(),
            "train",
            "--steps",
            "5",
            "--seq-len",
            "32",
        ])
        .arg("--model")
        .arg(assets.join("llama2c/stories260K.bin"))
        .arg("--tokenizer")
        .arg(assets.join("llama2c/tok512.bin"))
        .arg("--data")
        .arg(assets.join("corpus/tinystories_valid_sample_30k.txt"))
        .arg("--out")
        .arg(&dir)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (_, _, runs) = studio.api("GET", "/api/runs", None);
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "from-the-terminal")
        .unwrap_or_else(|| panic!("the terminal's run is not listed: {runs}"));
    assert_eq!(run["status"], "finished", "{run}");
    assert_eq!(run["step"], 5);
    assert!(
        run["output"].as_str().unwrap().ends_with("adapter"),
        "{run}"
    );
}

#[test]
fn a_run_stopped_while_it_loads_ends_interrupted() {
    let assets = require_assets!();
    let home = temp_dir("studio-early-stop");
    let _cleanup = KillOnDrop(home.display().to_string());
    let studio = Studio::start(&home, &[]);
    let (_, _, started) = studio.api(
        "POST",
        "/api/train",
        Some(json!({
            "model": assets.join("llama2c/stories260K.bin"),
            "tokenizer": assets.join("llama2c/tok512.bin"),
            "dataset": assets.join("corpus/tinystories_sample_197k.txt"),
            "steps": 1_000_000,
        })),
    );
    let id = started["id"].as_str().unwrap().to_string();
    // At once: the process is still starting up and loading.
    let (status, _, stopped) = studio.api("POST", &format!("/api/runs/{id}/stop"), None);
    assert_eq!(status, 200, "{stopped}");
    let s = wait_for("the run to end", Duration::from_secs(120), || {
        let s = run_status(&studio, &id);
        (s["status"] != "running").then_some(s)
    });
    assert_eq!(s["status"], "interrupted", "{s}");
    assert!(s["step"].as_u64() < Some(5), "{s}");
}

#[test]
fn a_generation_stops_on_request_and_keeps_its_text() {
    let assets = require_assets!();
    let home = temp_dir("studio-cancel");
    let studio = Studio::start(&home, &[]);
    let (_, _, job) = studio.api(
        "POST",
        "/api/generate",
        Some(json!({
            "model": assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf"),
            "prompt": "Tell me a very long story about a lighthouse.",
            "chat": true,
            "max_tokens": 4000,
        })),
    );
    let path = format!("/api/jobs/{}", job["job"]);
    wait_for("the first tokens", Duration::from_secs(120), || {
        let (_, _, j) = studio.api("GET", &path, None);
        assert_eq!(j["status"], "running", "{j}");
        let tokens = j["events"]
            .as_array()?
            .iter()
            .filter(|e| e["type"] == "generate.token")
            .count();
        (tokens >= 3).then_some(())
    });
    let (status, _, _) = studio.api("POST", &format!("{path}/cancel"), None);
    assert_eq!(status, 200);
    let ended = job_result(&studio, &job);
    assert_eq!(
        ended["status"], "ok",
        "generation ends normally when stopped: {ended}"
    );
    let (_, _, detail) = studio.api("GET", &path, None);
    let done = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "generate.done")
        .cloned()
        .unwrap_or_else(|| panic!("no generate.done: {detail}"));
    assert_eq!(done["stop"], "cancelled", "{done}");
    assert!(
        done["generated_tokens"].as_u64() < Some(4000)
            && !done["text"].as_str().unwrap().is_empty()
    );
    let (status, _, _) = studio.api("POST", &format!("{path}/cancel"), None);
    assert_eq!(status, 409, "a job that has ended cannot be stopped");
    let (_, _, entries) = studio.api("GET", "/api/audit?command=generate", None);
    assert_eq!(entries[0]["details"]["stop"], "cancelled", "{entries}");
}

fn run_status(studio: &Studio, id: &str) -> Value {
    studio.api("GET", &format!("/api/runs/{id}"), None).2
}

#[test]
fn runs_outlive_the_studio_and_a_killed_run_shows_failed() {
    let assets = require_assets!();
    let home = temp_dir("studio-runs");
    let _cleanup = KillOnDrop(home.display().to_string());
    let mut first = Studio::start(&home, &[]);
    let (status, _, started) = first.api(
        "POST",
        "/api/train",
        Some(json!({
            "model": assets.join("llama2c/stories260K.bin"),
            "tokenizer": assets.join("llama2c/tok512.bin"),
            "dataset": assets.join("corpus/tinystories_valid_sample_30k.txt"),
            "steps": 1_000_000,
            "batch_size": 1,
            "seq_len": 32,
            "eval_every": 1_000_000,
            "save_every": 5,
        })),
    );
    assert_eq!(status, 200, "{started}");
    let id = started["id"].as_str().unwrap().to_string();
    wait_for("the run's first steps", Duration::from_secs(120), || {
        let s = run_status(&first, &id);
        assert_ne!(s["status"], "failed", "{s}");
        (s["step"].as_u64() > Some(2)).then_some(())
    });
    // The studio goes away hard; the run does not notice.
    first.kill();
    let second = Studio::start(&home, &[]);
    let s = run_status(&second, &id);
    assert_eq!(s["status"], "running", "{s}");
    let step = s["step"].as_u64().unwrap();
    let events = home.join("runs").join(&id).join("events.ndjson");
    wait_for(
        "the run to go on and save a checkpoint",
        Duration::from_secs(120),
        || {
            let saved = std::fs::read_to_string(&events)
                .ok()?
                .contains("\"checkpoint.saved\"");
            (saved && run_status(&second, &id)["step"].as_u64() > Some(step)).then_some(())
        },
    );
    let pid: i32 = std::fs::read_to_string(home.join("runs").join(&id).join("train.lock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(pid, libc::SIGKILL);
    let s = wait_for("the run to show failed", Duration::from_secs(30), || {
        let s = run_status(&second, &id);
        (s["status"] == "failed").then_some(s)
    });
    assert!(
        s["error"].as_str().unwrap().contains("without finishing"),
        "{s}"
    );
    // The event stream says so too: its status event carries the failure.
    let (status, head, body) = request(
        second.port,
        "GET",
        &format!("/api/runs/{id}/events"),
        &[
            ("Host", &second.host()),
            ("Authorization", &format!("Bearer {}", second.token)),
        ],
        None,
    );
    assert_eq!(status, 200);
    assert!(head.contains("text/event-stream"), "{head}");
    assert!(body.contains("event: ndjson") && body.contains("\"train.step\""));
    assert!(body.contains("event: status") && body.contains("\"status\":\"failed\""));
    // Stop is refused for a run that is not running; resume picks it up again, and stop
    // then ends it cleanly as interrupted.
    let (status, _, _) = second.api("POST", &format!("/api/runs/{id}/stop"), None);
    assert_eq!(status, 409);
    let (status, _, resumed) = second.api("POST", &format!("/api/runs/{id}/resume"), None);
    assert_eq!(status, 200, "{resumed}");
    wait_for("the resumed run to step", Duration::from_secs(120), || {
        let text = std::fs::read_to_string(&events).unwrap();
        let (_, after) = text.rsplit_once("\"train.start\"")?;
        (text.matches("\"train.start\"").count() == 2 && after.contains("\"train.step\""))
            .then_some(())
    });
    assert_eq!(run_status(&second, &id)["status"], "running");
    let (status, _, again) = second.api("POST", &format!("/api/runs/{id}/resume"), None);
    assert_eq!(status, 409, "resuming a running run: {again}");
    let (status, _, stopped) = second.api("POST", &format!("/api/runs/{id}/stop"), None);
    assert_eq!(status, 200, "{stopped}");
    let s = wait_for("the run to stop", Duration::from_secs(120), || {
        let s = run_status(&second, &id);
        (s["status"] != "running").then_some(s)
    });
    assert_eq!(s["status"], "interrupted", "{s}");
}
