//! `neuralforge studio`: serves the local web app until stopped (Ctrl-C). The studio runs
//! every piece of work by spawning this same binary, so a training run it starts goes on
//! when the studio stops.

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
            open_browser(&ready.url);
        }
    });
    result.map_err(|e| match e {
        nf_studio::Error::Bind { .. } => user_error(
            "io",
            e.to_string(),
            "another program uses that port: pass --port 0 for a free one, or another --port",
        ),
        other => anyhow::Error::new(other),
    })
}

/// Best effort: a missing opener only means the user opens the printed address.
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let _ = Command::new(opener)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}
