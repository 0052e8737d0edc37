//! What one audit entry holds.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{AuditError, Result, sha256_file};

/// One line of the log. Field order is the order on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, 3, … without gaps.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds, taken under the lock (so times never go backwards
    /// between processes unless the clock does).
    pub time: String,
    /// The OS user (`$USER`, `$LOGNAME`, else `uid:N`).
    pub user: String,
    /// The host name.
    pub host: String,
    /// The command, e.g. `ingest`, `train`, `models pull`.
    pub command: String,
    /// Its arguments as given (the CLI replaces prompts by their sha256 unless asked not to).
    pub args: Vec<String>,
    /// A step of a long command: `start`, `resume`, `finish`, `interrupt`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// What the command read, each with its sha256.
    pub inputs: Vec<Artifact>,
    /// What the command wrote, each with its sha256.
    pub outputs: Vec<Artifact>,
    /// `ok` or `error`.
    pub result: String,
    /// The error message when `result` is `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Command-specific facts (step reached, prompt hashes, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
    /// sha256 of the previous entry's canonical bytes ([`crate::GENESIS`] for the first).
    pub prev: String,
    /// The signing device key (ed25519 public key, hex), when signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// ed25519 signature (hex) of the line without this member; always the last member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// A file or folder that a command read or wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `document`, `dataset`, `model`, `tokenizer`, `run`, `checkpoint`, `adapter`,
    /// `export`, `prompt`, `key`, …
    pub kind: String,
    /// The artifact's absolute path (or `hf://REPO@COMMIT/FILE` for a remote file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// sha256 of the file; for a folder the tree hash ([`Artifact::tree`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl Artifact {
    /// An artifact whose hash the caller already knows (or `None`).
    pub fn new(kind: &str, path: impl AsRef<Path>, sha256: Option<String>) -> Artifact {
        Artifact {
            kind: kind.into(),
            path: Some(absolute(path.as_ref())),
            sha256,
        }
    }

    /// A file, hashed now.
    pub fn file(kind: &str, path: impl AsRef<Path>) -> Result<Artifact> {
        let path = path.as_ref();
        Ok(Artifact::new(kind, path, Some(sha256_file(path)?)))
    }

    /// A file or a folder, hashed now: a file's sha256, or a folder's tree hash.
    pub fn path(kind: &str, path: impl AsRef<Path>) -> Result<Artifact> {
        let path = path.as_ref();
        if path.is_dir() {
            Artifact::tree(kind, path)
        } else {
            Artifact::file(kind, path)
        }
    }

    /// A folder, hashed as a tree: every regular file below it, by relative path with `/`
    /// separators in byte order, contributes the line `<sha256>  <relative path>\n` (the
    /// format of `sha256sum`); the tree hash is the sha256 of those lines. Symlinks are
    /// followed; hidden files (a name starting with `.`) are left out, as staging folders are.
    pub fn tree(kind: &str, dir: impl AsRef<Path>) -> Result<Artifact> {
        let dir = dir.as_ref();
        Ok(Artifact::new(kind, dir, Some(tree_hash(dir)?)))
    }

    /// Text that must not be stored (a prompt): only its sha256.
    pub fn text_hash(kind: &str, text: &str) -> Artifact {
        Artifact {
            kind: kind.into(),
            path: None,
            sha256: Some(crate::sha256_hex(text.as_bytes())),
        }
    }
}

/// [`Artifact::tree`]'s hash of a folder.
pub fn tree_hash(dir: &Path) -> Result<String> {
    let mut files = Vec::new();
    walk(dir, "", &mut files)?;
    files.sort();
    let mut lines = String::new();
    for rel in files {
        let h = sha256_file(&dir.join(&rel))?;
        lines.push_str(&format!("{h}  {rel}\n"));
    }
    Ok(crate::sha256_hex(lines.as_bytes()))
}

/// Folders deeper than this are not walked: without links a tree has no cycles, so this
/// only bounds the stack.
const MAX_DEPTH: usize = 64;

/// The regular files under `dir`, relative, hidden entries skipped. A link to a file counts
/// as that file (a Hugging Face cache snapshot is all links to blobs); a link to a folder
/// is not followed (one to `..` would never end), nor are devices, pipes and sockets read.
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    if prefix.matches('/').count() >= MAX_DEPTH {
        return Ok(());
    }
    let rd = std::fs::read_dir(dir).map_err(|e| AuditError::io(dir, e))?;
    for e in rd {
        let e = e.map_err(|e| AuditError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let p = e.path();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let own = e.file_type().map_err(|err| AuditError::io(&p, err))?;
        if own.is_dir() {
            walk(&p, &rel, out)?;
        } else if (own.is_file() || own.is_symlink()) && p.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

fn absolute(p: &Path) -> String {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command succeeded.
    Ok,
    /// The command failed, with its error message.
    Error(String),
}

/// What a caller asks to append; the log fills in seq, time, user, host, prev, key, sig.
#[derive(Debug, Clone)]
pub struct Record {
    /// The command, e.g. `ingest`, `train`, `models pull`.
    pub command: String,
    /// Its arguments, prompts already redacted by the caller.
    pub args: Vec<String>,
    /// A step of a long command (`start`, `finish`, …).
    pub event: Option<String>,
    /// What it read.
    pub inputs: Vec<Artifact>,
    /// What it wrote.
    pub outputs: Vec<Artifact>,
    /// How it ended.
    pub outcome: Outcome,
    /// Anything else worth keeping, as JSON.
    pub details: Option<serde_json::Value>,
}

impl Record {
    /// A record of `command` run with `args`, successful until said otherwise.
    pub fn new(command: &str, args: Vec<String>) -> Record {
        Record {
            command: command.into(),
            args,
            event: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            outcome: Outcome::Ok,
            details: None,
        }
    }

    /// The same record for step `event` of the command.
    pub fn event(mut self, event: &str) -> Record {
        self.event = Some(event.into());
        self
    }

    /// Adds an input.
    pub fn input(mut self, a: Artifact) -> Record {
        self.inputs.push(a);
        self
    }

    /// Adds an output.
    pub fn output(mut self, a: Artifact) -> Record {
        self.outputs.push(a);
        self
    }

    /// Sets how the command ended.
    pub fn outcome(mut self, o: Outcome) -> Record {
        self.outcome = o;
        self
    }

    /// Sets the details.
    pub fn details(mut self, d: serde_json::Value) -> Record {
        self.details = Some(d);
        self
    }
}

/// The OS user running this process.
pub fn os_user() -> String {
    for v in ["USER", "LOGNAME", "USERNAME"] {
        if let Some(u) = std::env::var_os(v).filter(|u| !u.is_empty()) {
            return u.to_string_lossy().into_owned();
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self") {
            return format!("uid:{}", m.uid());
        }
    }
    "unknown".into()
}

/// The host name.
pub fn host_name() -> String {
    for f in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        if let Ok(s) = std::fs::read_to_string(f) {
            let s = s.trim();
            if !s.is_empty() {
                return s.to_string();
            }
        }
    }
    for v in ["HOSTNAME", "COMPUTERNAME"] {
        if let Some(h) = std::env::var_os(v).filter(|h| !h.is_empty()) {
            return h.to_string_lossy().into_owned();
        }
    }
    "unknown".into()
}

/// `args` with the value of every flag in `flags` replaced by `sha256:<hex>` of it, in each
/// spelling a command line may use: `--flag VALUE`, `--flag=VALUE`, and for a one-letter
/// flag `-pVALUE`. What a user typed as a prompt then never reaches the log, while the log
/// can still show that two commands had the same prompt.
pub fn redact_args(args: Vec<String>, flags: &[&str]) -> Vec<String> {
    let hash = |v: &str| format!("sha256:{}", crate::sha256_hex(v.as_bytes()));
    let short = |f: &&&str| f.len() == 2 && f.starts_with('-') && !f.starts_with("--");
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if flags.contains(&a.as_str()) {
            out.push(a);
            if let Some(v) = it.next() {
                out.push(hash(&v));
            }
        } else if let Some((flag, v)) = a.split_once('=')
            && flags.contains(&flag)
        {
            out.push(format!("{flag}={}", hash(v)));
        } else if let Some((f, v)) = flags.iter().filter(short).find_map(|f| {
            a.strip_prefix(*f)
                .filter(|v| !v.is_empty() && !a.starts_with("--"))
                .map(|v| (*f, v))
        }) {
            out.push(format!("{f}{}", hash(v)));
        } else {
            out.push(a);
        }
    }
    out
}
