//! User-facing failures: one `error:` line, an optional `hint:` line, a stable code for the
//! NDJSON `error` event, and the exit code.

use nf_data::DatasetError;
use nf_formats::FormatError;
use nf_ingest::IngestError;
use nf_model::ModelError;
use nf_protocol::{Describe, ErrorCode, Event};
use nf_tokenizer::TokenizerError;

/// An error raised by the CLI itself with a hint for the user.
pub use nf_protocol::Failure as UserError;

/// Builds an error with a hint: `return Err(user_error(ErrorCode::BadInput, "...", "..."))`.
pub fn user_error(
    code: ErrorCode,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> anyhow::Error {
    UserError::new(code, message, hint).into()
}

/// Code and hint for any error the libraries return: those of the outermost error in the
/// chain (contexts, library error enums wrapping others) that has them.
pub fn describe(err: &anyhow::Error) -> (ErrorCode, Option<String>) {
    err.chain()
        .find_map(describe_one)
        .unwrap_or((ErrorCode::Other, None))
}

fn describe_one(err: &(dyn std::error::Error + 'static)) -> Option<(ErrorCode, Option<String>)> {
    // `Other` is an error's way of saying it has no code of its own (a dataset error
    // wrapping a tokenizer's, say): the chain goes on to its cause.
    fn of(d: &dyn Describe) -> Option<(ErrorCode, Option<String>)> {
        (d.code() != ErrorCode::Other).then(|| (d.code(), d.hint()))
    }
    if let Some(e) = err.downcast_ref::<UserError>() {
        return of(e);
    }
    if let Some(e) = err.downcast_ref::<ModelError>() {
        return of(e);
    }
    if let Some(e) = err.downcast_ref::<FormatError>() {
        return of(e);
    }
    if let Some(e) = err.downcast_ref::<IngestError>() {
        return of(e);
    }
    if let Some(e) = err.downcast_ref::<DatasetError>() {
        return of(e);
    }
    if let Some(e) = err.downcast_ref::<TokenizerError>() {
        return of(e);
    }
    err.downcast_ref::<std::io::Error>().and_then(|e| of(e))
}

/// The error and its causes on one line (`a: b: c`), without repeating a cause that the
/// outer message already contains.
pub fn one_line(err: &anyhow::Error) -> String {
    let mut msg = err.to_string();
    for cause in err.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg.replace('\n', " ")
}

/// The `error` event for a failure: its code and hint ([`describe`]) and its one-line
/// message ([`one_line`]), as the command's last event on stdout and in a failed run's
/// `events.ndjson`.
pub fn error_event(err: &anyhow::Error) -> Event {
    let (code, hint) = describe(err);
    Event::Error {
        code,
        message: one_line(err),
        hint,
    }
}
