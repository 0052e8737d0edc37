//! A tiny Hugging Face hub on 127.0.0.1 for `models pull` tests: the revision and tree
//! API, `resolve` answered with a redirect to a CDN path carrying `X-Linked-Etag` (as the
//! real hub does for LFS files), Range and If-Range, and switches to cut a download
//! halfway or to advertise a wrong checksum.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nf_protocol::sha256_hex;

/// The commit every revision of the fake repository resolves to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct HubFile {
    path: String,
    bytes: Vec<u8>,
    sha256: String,
}

/// A tiny Hugging Face hub on 127.0.0.1 serving one repository, `org/tiny`.
pub struct FakeHub {
    /// The hub's address, `http://127.0.0.1:PORT`.
    pub url: String,
    /// Cut the next full download of an LFS file after half its bytes.
    pub cut_next: Arc<AtomicBool>,
    /// Advertise a wrong sha256 for LFS files.
    pub wrong_sha: Arc<AtomicBool>,
    /// Stall the next full download of an LFS file after half its bytes: the connection
    /// stays open and silent (for a minute).
    pub stall_next: Arc<AtomicBool>,
    /// Every request line and its Range header.
    log: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    /// Serves `files` (path, bytes) as the one commit of a repository, on a free loopback port.
    pub fn start(files: Vec<(String, Vec<u8>)>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let files: Arc<Vec<HubFile>> = Arc::new(
            files
                .into_iter()
                .map(|(path, bytes)| HubFile {
                    sha256: sha256_hex(&bytes),
                    path,
                    bytes,
                })
                .collect(),
        );
        let hub = FakeHub {
            url,
            cut_next: Arc::new(AtomicBool::new(false)),
            wrong_sha: Arc::new(AtomicBool::new(false)),
            stall_next: Arc::new(AtomicBool::new(false)),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        let (cut, wrong, stall, log) = (
            Arc::clone(&hub.cut_next),
            Arc::clone(&hub.wrong_sha),
            Arc::clone(&hub.stall_next),
            Arc::clone(&hub.log),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (files, cut, wrong, stall, log) = (
                    Arc::clone(&files),
                    Arc::clone(&cut),
                    Arc::clone(&wrong),
                    Arc::clone(&stall),
                    Arc::clone(&log),
                );
                std::thread::spawn(move || {
                    let switches = Switches {
                        cut: &cut,
                        wrong: &wrong,
                        stall: &stall,
                    };
                    serve(conn, &files, &switches, &log)
                });
            }
        });
        hub
    }

    /// The request lines received so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

/// Promises the whole of `bytes` (a 200 with its length) and sends the first half.
fn send_half(conn: &mut TcpStream, bytes: &[u8], etag: &str) {
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: {etag}\r\nConnection: close\r\n\r\n",
        bytes.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(&bytes[..bytes.len() / 2]);
    let _ = conn.flush();
}

/// The hub's fault switches (see [`FakeHub`]).
struct Switches<'a> {
    cut: &'a AtomicBool,
    wrong: &'a AtomicBool,
    stall: &'a AtomicBool,
}

fn serve(
    mut conn: TcpStream,
    files: &[HubFile],
    switches: &Switches<'_>,
    log: &Mutex<Vec<String>>,
) {
    let Switches { cut, wrong, stall } = *switches;
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range: Option<u64> = None;
    let mut if_range: Option<String> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((&h, ""));
        let v = v.trim().to_string();
        match k.to_ascii_lowercase().as_str() {
            "range" => {
                range = v
                    .strip_prefix("bytes=")
                    .and_then(|r| r.trim_end_matches('-').parse().ok())
            }
            "if-range" => if_range = Some(v),
            _ => {}
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    log.lock().unwrap().push(format!("{path} range={range:?}"));
    let lfs_sha = |f: &HubFile| {
        if wrong.load(Ordering::SeqCst) {
            "f".repeat(64)
        } else {
            f.sha256.clone()
        }
    };
    if path == "/api/models/org/tiny/revision/main" {
        let body = serde_json::json!({"id": "org/tiny", "sha": COMMIT,
            "siblings": files.iter().map(|f| serde_json::json!({"rfilename": f.path})).collect::<Vec<_>>()});
        return respond(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            body.to_string().as_bytes(),
        );
    }
    if path == format!("/api/models/org/tiny/tree/{COMMIT}?recursive=true") {
        let body: Vec<serde_json::Value> = files
            .iter()
            .map(|f| serde_json::json!({"type": "file", "path": f.path, "size": f.bytes.len(),
                "oid": "abc", "lfs": {"oid": lfs_sha(f), "size": f.bytes.len(), "pointerSize": 134}}))
            .chain(std::iter::once(serde_json::json!({"type": "directory", "path": "sub", "oid": "d"})))
            .collect();
        return respond(
            &mut conn,
            "200 OK",
            &[],
            serde_json::Value::from(body).to_string().as_bytes(),
        );
    }
    if let Some(name) = path.strip_prefix(&format!("/org/tiny/resolve/{COMMIT}/"))
        && let Some(f) = files.iter().find(|f| f.path == name)
    {
        // As the hub does for LFS files: a redirect to the CDN with the sha256 as etag.
        return respond(
            &mut conn,
            "302 Found",
            &[
                ("Location", format!("/cdn/{}", f.sha256)),
                ("X-Linked-Etag", format!("\"{}\"", lfs_sha(f))),
                ("X-Linked-Size", f.bytes.len().to_string()),
                ("X-Repo-Commit", COMMIT.into()),
            ],
            b"",
        );
    }
    if let Some(sha) = path.strip_prefix("/cdn/")
        && let Some(f) = files.iter().find(|f| f.sha256 == sha)
    {
        let etag = format!("\"{}\"", f.sha256);
        let start = match (range, &if_range) {
            (Some(r), None) => r,
            (Some(r), Some(e)) if *e == etag => r,
            _ => 0,
        };
        let len = f.bytes.len() as u64;
        if start > 0 {
            let body = &f.bytes[start as usize..];
            return respond(
                &mut conn,
                "206 Partial Content",
                &[
                    ("ETag", etag),
                    ("Content-Range", format!("bytes {start}-{}/{len}", len - 1)),
                ],
                body,
            );
        }
        if stall.swap(false, Ordering::SeqCst) {
            // Then say nothing while holding the line.
            send_half(&mut conn, &f.bytes, &etag);
            std::thread::sleep(std::time::Duration::from_secs(60));
            return;
        }
        if cut.swap(false, Ordering::SeqCst) {
            // Then hang up.
            send_half(&mut conn, &f.bytes, &etag);
            let _ = conn.shutdown(std::net::Shutdown::Both);
            return;
        }
        return respond(&mut conn, "200 OK", &[("ETag", etag)], &f.bytes);
    }
    respond(
        &mut conn,
        "404 Not Found",
        &[("X-Error-Code", "RepoNotFound".into())],
        b"{\"error\":\"Repository not found\"}",
    )
}

/// The files of `org/tiny`: stories260K with its tokenizer, and a README.
pub fn stories_files(assets: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "stories260K.bin".into(),
            std::fs::read(assets.join("llama2c/stories260K.bin")).unwrap(),
        ),
        (
            "tokenizer.bin".into(),
            std::fs::read(assets.join("llama2c/tok512.bin")).unwrap(),
        ),
        ("README.md".into(), b"# tiny".to_vec()),
    ]
}
