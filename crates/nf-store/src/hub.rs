//! The Hugging Face hub's HTTP API as `models pull` uses it: GET with redirects followed
//! by hand (to see `X-Linked-Etag` on the hub's redirect to its CDN and to keep the token
//! from other hosts), JSON answers, and the URL checks a hostile mirror must not get past.

use std::time::Duration;

use nf_protocol::ErrorCode;

use crate::{Result, StoreError, fail};

/// A file of the repository to download.
#[derive(Debug, Clone)]
pub(crate) struct RemoteFile {
    pub(crate) path: String,
    pub(crate) size: Option<u64>,
    /// From the tree listing's `lfs.oid`.
    pub(crate) sha256: Option<String>,
}

pub(crate) struct Hub {
    agent: ureq::Agent,
    /// The longest wait for the next bytes of a file before the pull gives up.
    pub(crate) stall: Duration,
    pub(crate) endpoint: String,
    token: Option<String>,
}

/// What a GET returned, redirects followed.
pub(crate) struct Fetched {
    pub(crate) status: u16,
    pub(crate) response: ureq::http::Response<ureq::Body>,
    /// `X-Linked-Etag` seen on a redirect or the final response (unquoted).
    pub(crate) linked_etag: Option<String>,
}

fn net_error(url: &str, e: ureq::Error) -> StoreError {
    fail(
        ErrorCode::Network,
        format!("{url}: {e}"),
        "check the connection and --endpoint / HF_ENDPOINT; an interrupted download resumes when you run the same pull again",
    )
}

impl Hub {
    pub(crate) fn new(endpoint: &str, stall: Duration) -> Hub {
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
    pub(crate) fn get(&self, url: &str, headers: &[(&str, String)]) -> Result<Fetched> {
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
                    return Err(fail(
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
        Err(fail(
            ErrorCode::Network,
            format!("{url}: too many redirects"),
            "check --endpoint",
        ))
    }

    pub(crate) fn get_json(&self, url: &str, what: &str) -> Result<serde_json::Value> {
        let mut f = self.get(url, &[])?;
        match f.status {
            200 => {}
            401 | 403 => {
                return Err(fail(
                    ErrorCode::Forbidden,
                    format!("{what}: the hub refused access ({})", f.status),
                    "the repository may be gated or private: accept its terms on the hub and set HF_TOKEN",
                ));
            }
            404 => {
                return Err(fail(
                    ErrorCode::NotFound,
                    format!("{what}: not found on {}", self.endpoint),
                    "check the repository name and --revision (e.g. HuggingFaceTB/SmolLM2-135M-Instruct)",
                ));
            }
            s => {
                return Err(fail(
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
            fail(
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
        return Err(fail(
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
pub(crate) fn content_range_start(value: Option<&str>) -> Option<u64> {
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
pub(crate) fn escapes_folder(path: &str) -> bool {
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

pub(crate) fn percent(s: &str) -> String {
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
