//! Running the `neuralforge` binary in tests: a command aimed at a test home, and the
//! helpers every CLI test reads its output with.

use std::path::Path;
use std::process::{Command, Output};

/// The `neuralforge` binary of the calling test crate, with `$NEURALFORGE_HOME` at `home`
/// and the user's hub and offline settings removed ([`command`]).
#[macro_export]
macro_rules! neuralforge {
    ($home:expr) => {
        $crate::cli::command(env!("CARGO_BIN_EXE_neuralforge"), $home)
    };
}

/// `exe` with `$NEURALFORGE_HOME` at `home`, and without `HF_ENDPOINT` or
/// `NEURALFORGE_OFFLINE`, so a developer's environment cannot change what a test sees.
pub fn command(exe: &str, home: &Path) -> Command {
    let mut c = Command::new(exe);
    c.env("NEURALFORGE_HOME", home)
        .env_remove("HF_ENDPOINT")
        .env_remove("NEURALFORGE_OFFLINE");
    c
}

/// A path as a `&str` argument.
pub fn p(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A finished command's stderr, lossily decoded.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command's NDJSON stdout, each line parsed (a line that is not JSON fails the test).
pub fn events(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `--model stories260K.bin --tokenizer tok512.bin` from the shared assets: the tiny
/// llama2.c model most CLI tests train and generate with.
pub fn stories_model(assets: &Path) -> [String; 4] {
    [
        "--model".into(),
        p(&assets.join("llama2c/stories260K.bin")).into(),
        "--tokenizer".into(),
        p(&assets.join("llama2c/tok512.bin")).into(),
    ]
}
