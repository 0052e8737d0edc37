//! `neuralforge lineage`.
use std::path::Path;

use anyhow::Result;

use crate::cli::LineageArgs;
use crate::output::Output;

pub fn run(_a: &LineageArgs, _home: &Path, _out: &mut Output) -> Result<()> {
    Err(crate::errors::user_error(
        "unsupported",
        "lineage is not built yet",
        "see the README",
    ))
}
