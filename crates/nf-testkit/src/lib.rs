#![warn(missing_docs)]
//! Test support shared by the workspace's test suites.
//!
//! Real-model tests read `../shared/assets` (beside the repository; CI always has it). Every
//! test finds it through [`assets`], which honours `NF_ASSETS` and otherwise looks beside the
//! workspace root.

use std::path::PathBuf;

pub mod cli;
pub mod hub;

/// The shared assets folder, or `None` (after saying so on stderr) when it is absent.
///
/// With `NF_REQUIRE_ASSETS` set (CI sets it when the assets are there), a missing folder
/// fails the test instead: a real-model test that skipped would otherwise count as passed.
pub fn assets() -> Option<PathBuf> {
    let dir = match std::env::var_os("NF_ASSETS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets"),
    };
    if dir.join("README.md").is_file() {
        Some(dir)
    } else if std::env::var_os("NF_REQUIRE_ASSETS").is_some() {
        panic!(
            "shared assets not found at {} and NF_REQUIRE_ASSETS is set (set NF_ASSETS)",
            dir.display()
        );
    } else {
        eprintln!(
            "skipping: shared assets not found at {} (set NF_ASSETS)",
            dir.display()
        );
        None
    }
}

/// Returns the assets folder or returns early from the calling test (skipping it).
#[macro_export]
macro_rules! require_assets {
    () => {
        match $crate::assets() {
            Some(dir) => dir,
            None => return,
        }
    };
}

/// A fresh, empty temporary directory under the target folder, unique per call.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nf-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
