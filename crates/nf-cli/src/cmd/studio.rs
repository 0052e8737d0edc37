//! `neuralforge studio`: serves the local web app until stopped (Ctrl-C). The studio runs
//! every piece of work by spawning this same binary, so a training run it starts goes on
//! when the studio stops.

use nf_protocol::ErrorCode;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use nf_protocol::Event;

use crate::cli::StudioArgs;
use crate::errors::user_error;
use crate::output::Output;

pub fn run(args: &StudioArgs, home: &Path, out: &mut Output) -> Result<()> {
    if !args.host.is_loopback() {
        eprintln!(
            "warning: the studio listens on {} and can be reached from the network; anyone \
             with its token can use it",
            args.host
        );
    }
    let cli = std::env::current_exe().context("finding the neuralforge binary")?;
    let opts = nf_studio::Options {
        host: args.host,
        port: args.port,
        home: home.to_path_buf(),
        cli,
    };
    let result = nf_studio::serve(opts, |ready| {
        if out.is_json() {
            let _ = out.event(|| Event::StudioReady {
                url: ready.url.clone(),
                host: ready.addr.ip().to_string(),
                port: ready.addr.port(),
            });
        } else {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "NeuralForge Studio: {}", ready.url);
            let _ = stdout.flush();
            eprintln!("Open that address in a browser (it carries this session's token).");
            eprintln!("Ctrl-C stops the studio; training runs it started keep going.");
        }
        if !args.no_open {
            open_browser(home, &ready.url);
        }
    });
    result.map_err(|e| match e {
        nf_studio::Error::Bind { .. } => user_error(
            ErrorCode::Io,
            e.to_string(),
            "another program uses that port: pass --port 0 for a free one, or another --port",
        ),
        other => anyhow::Error::new(other),
    })
}

/// Best effort: a missing opener only means the user opens the printed address. The
/// opener gets a launcher page's path, never the URL: another local user can read any
/// process's arguments in /proc, and the URL carries the session's token.
fn open_browser(home: &Path, url: &str) {
    let Ok(page) = write_launcher(home, url) else {
        return;
    };
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = Command::new(opener)
        .arg(&page)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// `<home>/studio-open.html`, owner-only (0600): a page that sends the browser on to `url`.
fn write_launcher(home: &Path, url: &str) -> std::io::Result<std::path::PathBuf> {
    let escaped = url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let html = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>NeuralForge Studio</title>\
         <meta http-equiv=\"refresh\" content=\"0;url={escaped}\">\
         <a href=\"{escaped}\">Open NeuralForge Studio</a>\n"
    );
    let path = home.join("studio-open.html");
    let _ = std::fs::remove_file(&path);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&path)?.write_all(html.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_is_private_and_carries_the_url() {
        let home = nf_testkit::temp_dir("studio-launcher");
        let url = "http://127.0.0.1:8000/?token=abc&x=\"1\"";
        let page = write_launcher(&home, url).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert!(html.contains("url=http://127.0.0.1:8000/?token=abc&amp;x=&quot;1&quot;"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&page).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second studio replaces it.
        write_launcher(&home, "http://127.0.0.1:9/?token=new").unwrap();
        assert!(
            std::fs::read_to_string(&page)
                .unwrap()
                .contains("token=new")
        );
    }
}
