//! `neuralforge tokenize`: text on stdin, token ids on stdout.

use nf_protocol::ErrorCode;
use std::io::Read;
use std::path::Path;

use anyhow::Result;

use crate::cli::TokenizeArgs;
use crate::errors::user_error;
use crate::output::Output;

pub fn run(args: &TokenizeArgs, home: &Path, out: &mut Output) -> Result<()> {
    // Only the tokenizer is needed: open it without loading the weights.
    let (tok, _) = nf_store::resolve::model_tokenizer(
        &args.model.model,
        args.model.tokenizer.as_deref(),
        home,
    )?;
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        user_error(
            ErrorCode::BadInput,
            format!(
                "stdin is not valid UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ),
            "convert the text to UTF-8 first",
        )
    })?;
    let ids = tok.encode(
        &text,
        !args.no_bos && tok.add_bos_default(),
        !args.no_parse_special,
    )?;
    let line: Vec<String> = ids.iter().map(u32::to_string).collect();
    out.text(&(line.join(" ") + "\n"))?;
    out.event(|| nf_protocol::Event::Tokens { ids })?;
    Ok(())
}
