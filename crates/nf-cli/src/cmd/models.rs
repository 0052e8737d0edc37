//! `neuralforge models`.
use std::path::Path;

use anyhow::Result;

use crate::cli::ModelsCommand;
use crate::output::Output;

pub fn run(_m: &ModelsCommand, _home: &Path, _offline: bool, _out: &mut Output) -> Result<()> {
    Err(crate::errors::user_error(
        "unsupported",
        "models is not built yet",
        "see the README",
    ))
}
