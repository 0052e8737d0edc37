//! The guard in front of every route: Host and Origin checks, then the token.
//!
//! The order matters for what a caller learns: a request for another host (DNS rebinding)
//! or from another site is refused with 403 before the token is even looked at, and an
//! API request without the token gets 401.
//!
//! The token never travels in a cookie: browsers send a host's cookies to every port of
//! it, so any program listening on another localhost port would receive it. The pages
//! and their scripts hold no data and are served without the token; the page script keeps
//! the token in `localStorage` (which is per origin, port included) and sends it as
//! `Authorization: Bearer` on each API call, or as `?token=` where a browser cannot set
//! headers (event streams, download links).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::App;
use crate::error::ApiError;

/// Who may talk to the server: the token, the `Host` values naming it, and its origins.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: String,
    /// `host:port` spellings that name this server (lower case).
    pub hosts: Vec<String>,
    /// Bound to every interface (0.0.0.0 or ::): the server has no one name, so any IP
    /// literal with our port names it. Host names other than localhost still do not:
    /// DNS rebinding needs a name, never an address.
    any_ip: Option<u16>,
}

impl Access {
    pub fn new(token: String, addr: SocketAddr) -> Access {
        let port = addr.port();
        let mut hosts = vec![host_port(addr.ip(), port)];
        if addr.ip().is_loopback() {
            for h in ["127.0.0.1", "localhost", "[::1]"] {
                hosts.push(format!("{h}:{port}"));
            }
        }
        hosts.dedup();
        Access {
            token,
            hosts,
            any_ip: addr.ip().is_unspecified().then_some(port),
        }
    }

    /// Whether `host:port` (lower case, as in a Host header) names this server.
    fn names_us(&self, host: &str) -> bool {
        if self.hosts.iter().any(|h| h == host) {
            return true;
        }
        let Some(port) = self.any_ip else {
            return false;
        };
        host.parse::<SocketAddr>().is_ok_and(|a| a.port() == port)
            || host == format!("localhost:{port}")
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        self.names_us(&host.to_ascii_lowercase())
    }

    /// A browser names the page that sent a request in `Origin` (always on POST, on
    /// cross-origin GETs, and on EventSource); it must be one of ours. Requests without it
    /// come from scripts and tools, which still need the token.
    fn origin_ok(&self, headers: &HeaderMap) -> bool {
        // Only our own pages (`same-origin`) and the user's own navigation (`none`: typed,
        // bookmarked). `same-site` is another port or subdomain of this host, which is
        // another program, not us.
        if headers
            .get("sec-fetch-site")
            .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"))
        {
            return false;
        }
        match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            None => true,
            Some(origin) => origin
                .to_ascii_lowercase()
                .strip_prefix("http://")
                .is_some_and(|h| self.names_us(h)),
        }
    }

    fn presented_token<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Vec<&'a str> {
        let mut found = Vec::new();
        if let Some(b) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        {
            found.push(b.trim());
        }
        if let Some(t) = query.and_then(query_token) {
            found.push(t);
        }
        found
    }
}

fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn query_token(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// Compares without an early exit, so the time taken says nothing about a guess.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A fresh 256-bit token, hex-encoded.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The middleware: 403 for a foreign Host or Origin; 401 for an API call without the
/// token. Pages and assets need no token (they hold no data; see the module docs).
pub async fn guard(State(app): State<std::sync::Arc<App>>, req: Request, next: Next) -> Response {
    let access = &app.access;
    let headers = req.headers();
    if !access.host_ok(headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "this Host is not the studio's address",
            "open the studio by the URL it printed (127.0.0.1 or localhost)",
        )
        .into_response();
    }
    if !access.origin_ok(headers) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-origin requests are refused",
            "use the studio's own pages",
        )
        .into_response();
    }
    if req.uri().path().starts_with("/api/") {
        let tokens = access.presented_token(headers, req.uri().query());
        if !tokens.iter().any(|t| same_secret(t, &access.token)) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong studio token",
                "open the address `neuralforge studio` printed (it ends in ?token=…), or send `Authorization: Bearer TOKEN`",
            )
            .into_response();
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    // The pages load only their own embedded files and talk only to this server, so a
    // document's text that somehow reached the page as markup could not run or phone out.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn loopback_binding_accepts_its_names_only() {
        let a = Access::new("t".into(), "127.0.0.1:8000".parse().unwrap());
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("127.0.0.1:8000", true),
            ("localhost:8000", true),
            ("LOCALHOST:8000", true),
            ("[::1]:8000", true),
            ("localhost:8001", false),
            ("evil.example:8000", false),
            ("127.0.0.1", false),
        ] {
            h.insert(header::HOST, host.parse().unwrap());
            assert_eq!(a.host_ok(&h), ok, "{host}");
        }
        h.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!a.origin_ok(&h));
        h.insert(header::ORIGIN, "http://localhost:8000".parse().unwrap());
        assert!(a.origin_ok(&h));
        for (site, ok) in [
            ("same-origin", true),
            ("none", true),
            ("same-site", false),
            ("cross-site", false),
            ("something-new", false),
        ] {
            h.insert("sec-fetch-site", site.parse().unwrap());
            assert_eq!(a.origin_ok(&h), ok, "{site}");
        }
    }

    #[test]
    fn an_all_interfaces_binding_accepts_addresses_not_names() {
        let a = Access::new("t".into(), "0.0.0.0:8000".parse().unwrap());
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("192.168.1.5:8000", true),
            ("127.0.0.1:8000", true),
            ("[fe80::1]:8000", true),
            ("localhost:8000", true),
            ("192.168.1.5:8001", false),
            ("studio.example:8000", false),
            ("192.168.1.5", false),
        ] {
            h.insert(header::HOST, host.parse().unwrap());
            assert_eq!(a.host_ok(&h), ok, "{host}");
        }
        h.insert(header::ORIGIN, "http://192.168.1.5:8000".parse().unwrap());
        assert!(a.origin_ok(&h));
        h.insert(
            header::ORIGIN,
            "http://rebound.example:8000".parse().unwrap(),
        );
        assert!(!a.origin_ok(&h));
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let (a, b) = (new_token().unwrap(), new_token().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
