#![warn(missing_docs)]
//! The tamper-evident audit log: `<home>/audit/audit.ndjson`.
//!
//! Every command that reads user data or writes an artifact appends one [`Entry`]: who
//! (OS user, host), when (RFC 3339 UTC), what (command, arguments, an optional event such
//! as `start` or `finish`), which files went in and came out (each with its sha256), and
//! how it ended. Entries are hash-chained and, once `audit keygen` has made a device key,
//! signed.
//!
//! # The file
//!
//! One JSON object per line, each line ending in `\n`, fields in the order of [`Entry`].
//!
//! - **Canonical bytes.** An entry's canonical bytes are exactly the bytes of its line,
//!   without the trailing `\n`. Nothing is re-serialized to check a hash: a verifier
//!   hashes the bytes it reads.
//! - **Chain.** `prev` is the lowercase hex sha256 of the previous entry's canonical
//!   bytes; the first entry (`seq` 1) has `prev` = 64 zeros ([`GENESIS`]), which anchors
//!   the chain. `seq` counts from 1 without gaps.
//! - **Signature.** With a device key, an entry ends in `"key":"<public key hex>",
//!   "sig":"<signature hex>"}`; `sig` is the ed25519 signature of the canonical bytes with
//!   the final `,"sig":"…"` member removed (so the bytes signed are the line up to just
//!   before `,"sig"`, followed by `}`). The chain hash covers the whole line, signature
//!   included.
//! - **Head.** `audit/audit.head` holds the `seq` and hash of the newest entry, written
//!   atomically after each append. Without it, cutting whole lines off the end of the log
//!   would leave a valid chain; with it, [`verify`] reports the truncation (and an edit of
//!   the last entry, which no later `prev` covers).
//!
//! # Writing
//!
//! [`AuditLog::append`] takes an exclusive lock on the log file (`File::lock`, an advisory
//! `flock` on Unix, released when the file closes), reads the last line to get the next
//! `seq` and `prev`, writes the new line with one `write_all`, `fsync`s, then rewrites the
//! head. Two processes appending at once therefore serialize and keep one chain. A head one
//! entry behind (a crash between an entry and its head) is first brought up to date, so a
//! second crash at the same point never leaves it two behind.
//!
//! A crash mid-write can leave a **torn tail**: bytes after the last `\n`. [`verify`]
//! reports it ([`Problem::TornTail`]); the next append moves those bytes to
//! `audit/torn-<seq>-<time>.bin`, truncates the log back to the last complete line, and
//! first appends an `audit.recover` entry naming the moved bytes (length and sha256), so the
//! repair is itself on the record. Nothing is ever dropped silently.
//!
//! The library never prints: it returns [`AuditError`]s (IO errors carry the path).

mod entry;
mod export;
mod hash_cache;
mod key;
mod log;
mod time;
mod verify;

pub use entry::{Artifact, Entry, Outcome, Record, host_name, os_user, redact_args, tree_hash};
pub use export::entries_between;
pub use export::{ExportFormat, export};
pub use hash_cache::{cached_file_hash, model_artifacts};
pub use key::trusted_public_key;
pub use key::{DeviceKey, KEY_FILE, PUBLIC_KEY_FILE, key_path};
pub use log::{AuditLog, Head, read_entries};
pub use time::{now, parse_time};
pub use verify::verify_bytes;
pub use verify::{Problem, Report, verify};

use std::path::{Path, PathBuf};

/// `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The audit folder inside the NeuralForge home.
pub const AUDIT_DIR: &str = "audit";
/// The log file inside [`AUDIT_DIR`].
pub const LOG_FILE: &str = "audit.ndjson";
/// The head file inside [`AUDIT_DIR`].
pub const HEAD_FILE: &str = "audit.head";

/// Errors of the audit library.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The operating system refused an operation on `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A log, head or key file is not what this crate writes.
    #[error("{}: {message}", path.display())]
    Corrupt {
        /// The file (or folder) concerned.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// An argument this crate cannot use (a time it cannot parse, an anchor that is not
    /// `SEQ:SHA256`).
    #[error("{0}")]
    BadInput(String),
    /// `keygen` would replace the device key.
    #[error("{}: a device key already exists", path.display())]
    KeyExists {
        /// The file (or folder) concerned.
        path: PathBuf,
    },
}

impl AuditError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> AuditError {
        AuditError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, AuditError>;

pub use nf_protocol::digest::hex;
pub use nf_protocol::sha256_hex;

/// Lowercase hex sha256 of a file, read in blocks.
pub fn sha256_file(path: &Path) -> Result<String> {
    nf_protocol::sha256_file(path).map_err(|e| AuditError::io(path, e))
}

pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// The audit folder of a NeuralForge home.
pub fn audit_dir(home: &Path) -> PathBuf {
    home.join(AUDIT_DIR)
}

/// Appends `record` to the log in `home`, signing it when the home has a device key.
/// The one call other commands need.
pub fn record(home: &Path, record: Record) -> Result<Entry> {
    AuditLog::open(home)?.append(record)
}
