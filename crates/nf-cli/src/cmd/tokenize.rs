//! `neuralforge tokenize`: text on stdin, token ids on stdout.

use nf_protocol::ErrorCode;
use std::io::Read;
use std::path::Path;

use anyhow::Result;

use crate::cli::TokenizeArgs;
use crate::errors::user_error;
use crate::output::Output;
use nf_store::resolve::{load_tokenizer, resolve_model_path};

pub fn run(args: &TokenizeArgs, home: &Path, out: &mut Output) -> Result<()> {
    // Only the tokenizer is needed: open it without loading the weights.
    let model_path = resolve_model_path(&args.model.model, home)?;
    let tok = match &args.model.tokenizer {
        Some(t) => load_tokenizer(t, None)?,
        None if model_path.is_dir() || is_gguf(&model_path) => load_tokenizer(&model_path, None)?,
        None => {
            return Err(user_error(
                ErrorCode::BadInput,
                format!("{} carries no tokenizer", model_path.display()),
                "pass --tokenizer PATH (for llama2.c checkpoints: the tokenizer.bin that goes with it)",
            ));
        }
    };
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

fn is_gguf(p: &Path) -> bool {
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == nf_formats::gguf::GGUF_MAGIC
}
