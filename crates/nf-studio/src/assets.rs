//! The studio's pages and assets, embedded in the binary (no CDN, nothing fetched).

/// The page shell served for every page path; `app.js` renders the page the path names.
pub const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");

/// An embedded file under `/assets/`: its bytes and content type.
pub fn asset(name: &str) -> Option<(&'static [u8], &'static str)> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    Some(match name {
        "app.js" => (include_bytes!("../assets/app.js"), JS),
        "app.css" => (include_bytes!("../assets/app.css"), CSS),
        _ => return None,
    })
}
