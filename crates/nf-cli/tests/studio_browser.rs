//! The studio in a real browser: starts `neuralforge studio` on a fresh home and runs
//! `tests/browser/studio.mjs` (Playwright driving the system's headless Chromium) against it:
//! import a model, pull one from a hub served on loopback, ingest the shared documents, estimate and train a short run, watch its
//! charts, generate with its adapter, verify the audit log, and see a killed training
//! process marked failed. Screenshots go to `target/studio-screenshots/`.
//!
//! Skips (saying why) when node, Chromium, `tests/browser/node_modules` or the shared assets
//! are missing, unless `NF_REQUIRE_BROWSER=1` (CI sets it once it installed them): then those
//! fail the test.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nf_testkit::temp_dir;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// What the browser test needs that is missing here.
fn missing(root: &Path) -> Vec<String> {
    let mut m = Vec::new();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !matches!(node, Ok(s) if s.success()) {
        m.push("node (install Node.js 18 or newer)".to_string());
    }
    let chromium = chromium();
    if !chromium.is_file() {
        m.push(format!(
            "Chromium at {} (apt-get install chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .is_dir()
    {
        m.push("tests/browser/node_modules (run `npm ci` in tests/browser)".to_string());
    }
    m
}

/// The studio child process: stopped (SIGTERM, then SIGKILL) when dropped, also when the
/// test fails; training runs it left running in its home are stopped too.
struct Studio {
    child: Child,
    home: PathBuf,
    stderr_path: PathBuf,
}

impl Studio {
    fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` is (still) a `neuralforge train` process: the pid in a `train.lock` stays
/// behind when its run ends, and may name another process by now.
fn is_training(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|&b| b == 0).collect();
        args.first().is_some_and(|a| a.ends_with(b"neuralforge"))
            && args.iter().any(|a| *a == b"train")
    })
}

impl Drop for Studio {
    fn drop(&mut self) {
        signal(self.child.id(), "-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Training processes the test started through the studio keep going without it: stop
        // those still running (each run's lock file holds its pid).
        if let Ok(runs) = std::fs::read_dir(self.home.join("runs")) {
            for run in runs.flatten() {
                let pid = std::fs::read_to_string(run.path().join("train.lock"))
                    .ok()
                    .and_then(|t| t.trim().parse::<u32>().ok());
                if let Some(pid) = pid.filter(|&p| p > 1 && is_training(p)) {
                    signal(pid, "-TERM");
                }
            }
        }
    }
}

/// Starts the studio on a free port; returns it and the URL it printed (with the token).
fn start_studio(home: &Path, hub: &str) -> (Studio, String) {
    let stderr_path = home.join("studio.stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_neuralforge"))
        .args(["studio", "--no-open", "--port", "0", "--home"])
        .arg(home)
        .env("NEURALFORGE_HOME", home)
        .env("HF_ENDPOINT", hub)
        .env_remove("NEURALFORGE_OFFLINE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&stderr_path).expect("studio stderr file"))
        .spawn()
        .expect("spawn neuralforge studio");
    let stdout = child.stdout.take().unwrap();
    let studio = Studio {
        child,
        home: home.to_path_buf(),
        stderr_path,
    };
    let (tx, rx) = mpsc::channel();
    // Reads the URL line, then keeps draining stdout so the studio never blocks on it.
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            println!("studio: {line}");
            if let Some(i) = line.find("http://").filter(|_| !sent) {
                let _ = tx.send(line[i..].trim().to_string());
                sent = true;
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(url) => (studio, url),
        Err(_) => panic!(
            "the studio printed no http:// URL (it exited, or 120 s passed); its stderr:\n{}",
            studio.stderr_tail()
        ),
    }
}

#[test]
fn studio_in_a_real_browser() {
    let required = std::env::var("NF_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let root = workspace();
    let mut missing = missing(&root);
    let assets = nf_testkit::assets();
    if assets.is_none() {
        missing.push("the shared assets (../shared/assets, or NF_ASSETS)".to_string());
    }
    if !missing.is_empty() {
        let what = missing.join("; ");
        if required {
            panic!("NF_REQUIRE_BROWSER=1 but the browser test cannot run: missing {what}");
        }
        eprintln!(
            "skipping the studio browser test: missing {what} (NF_REQUIRE_BROWSER=1 makes this fail)"
        );
        return;
    }
    let assets = assets.unwrap().canonicalize().expect("assets path");
    let home = temp_dir("studio-browser");
    let shots = root.join("target/studio-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshots folder");

    // The Models page pulls from a hub on loopback (no network in tests).
    let hub = nf_testkit::hub::FakeHub::start(nf_testkit::hub::stories_files(&assets));
    let (studio, url) = start_studio(&home, &hub.url);
    println!("studio at {url}, home {}", home.display());

    let mut node = Command::new("node")
        .arg("tests/browser/studio.mjs")
        .current_dir(&root)
        .env("STUDIO_URL", &url)
        .env("NF_HOME", &home)
        .env("NF_ASSETS", &assets)
        .env("NF_SCREENSHOTS", &shots)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn node");
    let limit = std::env::var("NF_BROWSER_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800u64);
    let deadline = Instant::now() + Duration::from_secs(limit);
    let status = loop {
        if let Some(s) = node.try_wait().expect("wait for node") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = node.kill();
            let _ = node.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    match status {
        Some(s) if s.success() => {
            println!("browser test passed; screenshots in {}", shots.display());
        }
        Some(s) => panic!(
            "the browser test failed ({s}; its output above says which step); screenshots in {}; the studio's stderr ends:\n{}",
            shots.display(),
            studio.stderr_tail()
        ),
        None => panic!(
            "the browser test ran past {limit} s (NF_BROWSER_TIMEOUT_S); the studio's stderr ends:\n{}",
            studio.stderr_tail()
        ),
    }
    drop(studio);
}
