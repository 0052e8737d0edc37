//! The studio's pages and assets, embedded in the binary (no CDN, nothing fetched).

/// The page shell served for every page path; `app.js` renders the page the path names.
pub const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");

/// An embedded file under `/assets/`: its bytes and content type.
pub fn asset(name: &str) -> Option<(&'static [u8], &'static str)> {
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    const TEXT: &str = "text/plain; charset=utf-8";
    Some(match name {
        "app.js" => (include_bytes!("../assets/app.js"), JS),
        "app.css" => (include_bytes!("../assets/app.css"), CSS),
        "pages/dashboard.js" => (include_bytes!("../assets/pages/dashboard.js"), JS),
        "pages/configure.js" => (include_bytes!("../assets/pages/configure.js"), JS),
        "pages/ingest.js" => (include_bytes!("../assets/pages/ingest.js"), JS),
        "pages/models.js" => (include_bytes!("../assets/pages/models.js"), JS),
        "pages/generate.js" => (include_bytes!("../assets/pages/generate.js"), JS),
        "pages/audit.js" => (include_bytes!("../assets/pages/audit.js"), JS),
        "vendor/uPlot.iife.min.js" => (include_bytes!("../assets/vendor/uPlot.iife.min.js"), JS),
        "vendor/uPlot.min.css" => (include_bytes!("../assets/vendor/uPlot.min.css"), CSS),
        "vendor/uPlot.LICENSE" => (include_bytes!("../assets/vendor/uPlot.LICENSE"), TEXT),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the page shell loads is in the table.
    #[test]
    fn index_references_only_embedded_assets() {
        let html = std::str::from_utf8(INDEX_HTML).unwrap();
        let mut n = 0;
        for part in html.split("/assets/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(
                asset(name).is_some(),
                "index.html loads /assets/{name}, not embedded"
            );
            n += 1;
        }
        assert!(n >= 9, "{n}");
        assert!(asset("nope.js").is_none());
    }
}
