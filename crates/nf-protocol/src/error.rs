//! The stable error codes of the `error` event, and [`Failure`]: an error that carries its
//! code and a hint for the user, raised by libraries and the binary alike.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` event: what kind of failure it was, stable across versions so
/// that scripts and the studio can branch on it. Serialized in snake case (`"bad_input"`).
/// A reader meets [`ErrorCode::Other`] for a code this version does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// An argument or input file is malformed or out of range.
    BadInput,
    /// A path, stored model, run, adapter or remote file does not exist.
    NotFound,
    /// A file exists but its contents are damaged or inconsistent.
    Corrupt,
    /// The operating system refused a read or a write (permissions, a full disk).
    Io,
    /// The target already exists and `--force` was not given.
    Exists,
    /// Two inputs do not belong together (a tokenizer and a model, an adapter and a base).
    Mismatch,
    /// The input is valid but asks for something not implemented.
    Unsupported,
    /// Another process holds the lock on this model, run or dataset.
    Busy,
    /// The run is still running.
    Running,
    /// The run has not finished (no final model yet).
    Unfinished,
    /// Offline mode forbids the network this command needs.
    Offline,
    /// The network failed or a server answered something unexpected.
    Network,
    /// A server refused access (a gated or private repository).
    Forbidden,
    /// A downloaded file's sha256 differs from the one its server lists.
    Checksum,
    /// A prompt does not fit the model's context.
    ContextFull,
    /// A training run failed after it started.
    TrainFailed,
    /// The data holds too few tokens to train on.
    NoData,
    /// A checkpoint cannot be resumed from.
    BadCheckpoint,
    /// An export's read-back differs from the model it was made from.
    Parity,
    /// Only part of a multi-file operation succeeded.
    Partial,
    /// The audit log could not be written.
    Audit,
    /// The audit log's chain or signatures do not verify.
    AuditBroken,
    /// A tokenizer failed to load or to encode.
    Tokenizer,
    /// A document could not be ingested.
    Ingest,
    /// A model could not be exported in the requested format.
    Export,
    /// The reader of this command's output went away (`| head`).
    BrokenPipe,
    /// Anything else (`"error"` on the wire), and any code a newer version added.
    #[serde(rename = "error", other)]
    Other,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 27] = [
        ErrorCode::BadInput,
        ErrorCode::NotFound,
        ErrorCode::Corrupt,
        ErrorCode::Io,
        ErrorCode::Exists,
        ErrorCode::Mismatch,
        ErrorCode::Unsupported,
        ErrorCode::Busy,
        ErrorCode::Running,
        ErrorCode::Unfinished,
        ErrorCode::Offline,
        ErrorCode::Network,
        ErrorCode::Forbidden,
        ErrorCode::Checksum,
        ErrorCode::ContextFull,
        ErrorCode::TrainFailed,
        ErrorCode::NoData,
        ErrorCode::BadCheckpoint,
        ErrorCode::Parity,
        ErrorCode::Partial,
        ErrorCode::Audit,
        ErrorCode::AuditBroken,
        ErrorCode::Tokenizer,
        ErrorCode::Ingest,
        ErrorCode::Export,
        ErrorCode::BrokenPipe,
        ErrorCode::Other,
    ];

    /// The code as it appears on the wire, e.g. `"bad_input"`.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            BadInput => "bad_input",
            NotFound => "not_found",
            Corrupt => "corrupt",
            Io => "io",
            Exists => "exists",
            Mismatch => "mismatch",
            Unsupported => "unsupported",
            Busy => "busy",
            Running => "running",
            Unfinished => "unfinished",
            Offline => "offline",
            Network => "network",
            Forbidden => "forbidden",
            Checksum => "checksum",
            ContextFull => "context_full",
            TrainFailed => "train_failed",
            NoData => "no_data",
            BadCheckpoint => "bad_checkpoint",
            Parity => "parity",
            Partial => "partial",
            Audit => "audit",
            AuditBroken => "audit_broken",
            Tokenizer => "tokenizer",
            Ingest => "ingest",
            Export => "export",
            BrokenPipe => "broken_pipe",
            Other => "error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure to report to the user as it is: one line saying what went wrong, its code,
/// and what to do about it. Libraries return it (inside their own error types) where the
/// cause is the user's input or environment rather than a bug; the binary prints it as
/// `error:` and `hint:` lines or as the `error` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The `error` event's code.
    pub code: ErrorCode,
    /// One line saying what went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Failure {
    /// A failure with this code, message and hint.
    pub fn new(code: ErrorCode, message: impl Into<String>, hint: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The code and the hint an error gives the user: each library's error type says what
/// its variants mean, so the binary needs no table of other crates' errors.
pub trait Describe {
    /// The `error` event's code; [`ErrorCode::Other`] when the error has none of its own,
    /// so that a reader of an error chain takes its cause's.
    fn code(&self) -> ErrorCode;
    /// What the user can do about it, where there is something to say.
    fn hint(&self) -> Option<String> {
        None
    }
}

impl Describe for Failure {
    fn code(&self) -> ErrorCode {
        self.code
    }
    fn hint(&self) -> Option<String> {
        self.hint.clone()
    }
}

/// The hint for an operating-system error on a path.
pub const IO_HINT: &str = "check the path, its permissions and the free disk space";

impl Describe for std::io::Error {
    fn code(&self) -> ErrorCode {
        match self.kind() {
            std::io::ErrorKind::BrokenPipe => ErrorCode::BrokenPipe,
            _ => ErrorCode::Io,
        }
    }
    fn hint(&self) -> Option<String> {
        (self.kind() != std::io::ErrorKind::BrokenPipe).then(|| IO_HINT.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names_and_unknown_ones_read_as_other() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        let later: ErrorCode = serde_json::from_str("\"quota_exceeded\"").unwrap();
        assert_eq!(later, ErrorCode::Other);
    }
}
