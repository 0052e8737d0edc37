//! Appending to and reading the log.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::entry::{Entry, Outcome, Record, host_name, os_user};
use crate::key::DeviceKey;
use crate::{AuditError, GENESIS, HEAD_FILE, LOG_FILE, Result, audit_dir, sha256_hex};

/// `audit/audit.head`: the newest entry's `seq` and the sha256 of its canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The sequence number of the last entry.
    pub seq: u64,
    /// The sha256 of its line.
    pub sha256: String,
}

/// The audit log of one NeuralForge home.
#[derive(Debug)]
pub struct AuditLog {
    dir: PathBuf,
    path: PathBuf,
    key: Option<DeviceKey>,
}

impl AuditLog {
    /// The log of `home`, with its device key when there is one. Creates nothing.
    pub fn open(home: &Path) -> Result<AuditLog> {
        let dir = audit_dir(home);
        Ok(AuditLog {
            path: dir.join(LOG_FILE),
            dir,
            key: DeviceKey::load(home)?,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether entries are signed with a device key.
    pub fn is_signing(&self) -> bool {
        self.key.is_some()
    }

    /// Checks that an entry could be appended now (the folder and file can be created,
    /// opened for appending and locked), without writing one: commands call this before
    /// doing work they would then be unable to record.
    pub fn preflight(&self) -> Result<()> {
        let f = self.open_file()?;
        f.lock().map_err(|e| AuditError::io(&self.path, e))?;
        Ok(())
    }

    fn open_file(&self) -> Result<File> {
        // Owner-only, whatever the umask: the log names the documents and models people
        // work with.
        let mut dir = std::fs::DirBuilder::new();
        dir.recursive(true);
        let mut file = File::options();
        file.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            dir.mode(0o700);
            file.mode(0o600);
        }
        dir.create(&self.dir)
            .map_err(|e| AuditError::io(&self.dir, e))?;
        file.open(&self.path)
            .map_err(|e| AuditError::io(&self.path, e))
    }

    /// Appends one entry under the file lock and returns it as written. A torn tail left by
    /// a crash is first moved aside and recorded (see the crate docs).
    pub fn append(&self, record: Record) -> Result<Entry> {
        let mut f = self.open_file()?;
        f.lock().map_err(|e| AuditError::io(&self.path, e))?;
        let tail = read_tail(&mut f).map_err(|e| AuditError::io(&self.path, e))?;
        let (mut seq, mut prev) = match &tail.last {
            None => (1, GENESIS.to_string()),
            Some(line) => {
                let e: Entry = serde_json::from_slice(line).map_err(|err| AuditError::Corrupt {
                    path: self.path.clone(),
                    message: format!(
                        "the last entry is not valid JSON ({err}); nothing can be chained to it"
                    ),
                })?;
                (e.seq + 1, sha256_hex(line))
            }
        };
        if tail.last.is_some() {
            self.catch_up_head(seq - 1, &prev)?;
        }
        if !tail.torn.is_empty() {
            let moved = self.dir.join(format!(
                "torn-{seq}-{}.bin",
                crate::now().replace([':', '.'], "")
            ));
            std::fs::write(&moved, &tail.torn).map_err(|e| AuditError::io(&moved, e))?;
            f.set_len(tail.complete_len)
                .and_then(|_| f.sync_all())
                .map_err(|e| AuditError::io(&self.path, e))?;
            let recover = Record::new("audit.recover", Vec::new())
                .outcome(Outcome::Ok)
                .details(serde_json::json!({
                    "reason": "torn tail: an interrupted write left bytes without a newline after the last entry",
                    "torn_bytes": tail.torn.len(),
                    "torn_sha256": sha256_hex(&tail.torn),
                    "moved_to": moved.display().to_string(),
                }));
            let (_, h) = self.write_entry(&mut f, seq, &prev, recover)?;
            seq += 1;
            prev = h;
        }
        let (entry, _) = self.write_entry(&mut f, seq, &prev, record)?;
        Ok(entry)
    }

    /// Brings the head up to the last entry `last_seq` (whose hash is `last_hash`) when it is
    /// exactly one behind, as a crash between writing an entry and its head leaves it (or
    /// missing after the first entry). Without this a second such crash would leave it two
    /// behind, which `verify` rightly takes for entries added by something else. A head
    /// further behind is left for `verify` to report.
    fn catch_up_head(&self, last_seq: u64, last_hash: &str) -> Result<()> {
        let path = self.dir.join(HEAD_FILE);
        let behind = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str::<Head>(&text).is_ok_and(|h| h.seq + 1 == last_seq),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => last_seq == 1,
            Err(e) => return Err(AuditError::io(&path, e)),
        };
        if behind {
            self.write_head(&Head {
                seq: last_seq,
                sha256: last_hash.to_string(),
            })?;
        }
        Ok(())
    }

    /// Writes one line and the head; returns the entry and its hash.
    fn write_entry(
        &self,
        f: &mut File,
        seq: u64,
        prev: &str,
        r: Record,
    ) -> Result<(Entry, String)> {
        let (result, error) = match r.outcome {
            Outcome::Ok => ("ok".to_string(), None),
            Outcome::Error(m) => ("error".to_string(), Some(m)),
        };
        let mut entry = Entry {
            seq,
            time: crate::now(),
            user: os_user(),
            host: host_name(),
            command: r.command,
            args: r.args,
            event: r.event,
            inputs: r.inputs,
            outputs: r.outputs,
            result,
            error,
            details: r.details,
            prev: prev.to_string(),
            key: self.key.as_ref().map(DeviceKey::public_hex),
            sig: None,
        };
        let mut line = serde_json::to_string(&entry).map_err(|e| AuditError::Corrupt {
            path: self.path.clone(),
            message: format!("serializing an entry: {e}"),
        })?;
        if let Some(k) = &self.key {
            let sig = k.sign(line.as_bytes());
            line.pop(); // the closing brace
            line.push_str(&format!(",\"sig\":\"{sig}\"}}"));
            entry.sig = Some(sig);
        }
        let hash = sha256_hex(line.as_bytes());
        line.push('\n');
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| AuditError::io(&self.path, e))?;
        self.write_head(&Head {
            seq,
            sha256: hash.clone(),
        })?;
        Ok((entry, hash))
    }

    fn write_head(&self, head: &Head) -> Result<()> {
        let path = self.dir.join(HEAD_FILE);
        let tmp = self.dir.join(format!(".{HEAD_FILE}.tmp"));
        let text = serde_json::to_string(head).unwrap_or_default() + "\n";
        (|| -> std::io::Result<()> {
            let mut t = File::create(&tmp)?;
            t.write_all(text.as_bytes())?;
            t.sync_all()?;
            std::fs::rename(&tmp, &path)
        })()
        .map_err(|e| AuditError::io(&path, e))
    }
}

/// The end of the log: the last complete line (without its newline), and bytes after it.
struct Tail {
    last: Option<Vec<u8>>,
    torn: Vec<u8>,
    /// Length of the file up to and including the last newline.
    complete_len: u64,
}

/// Reads backwards from the end in blocks, so appending stays cheap on a long log.
fn read_tail(f: &mut File) -> std::io::Result<Tail> {
    let len = f.seek(SeekFrom::End(0))?;
    let mut buf: Vec<u8> = Vec::new(); // the file's bytes from `start` to the end
    let mut start = len;
    const BLOCK: u64 = 64 * 1024;
    // Find the last newline, then the one before it.
    let mut newlines: Vec<u64> = Vec::new();
    while start > 0 && newlines.len() < 2 {
        let n = BLOCK.min(start);
        start -= n;
        let mut block = vec![0u8; n as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        newlines = buf
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, b)| **b == b'\n')
            .take(2)
            .map(|(i, _)| start + i as u64)
            .collect();
    }
    let at = |pos: u64| (pos - start) as usize;
    Ok(match newlines.as_slice() {
        [] => Tail {
            last: None,
            torn: buf,
            complete_len: 0,
        },
        [last_nl, rest @ ..] => {
            let line_start = rest.first().map_or(0, |p| p + 1);
            Tail {
                last: Some(buf[at(line_start)..at(*last_nl)].to_vec()),
                torn: buf[at(*last_nl) + 1..].to_vec(),
                complete_len: last_nl + 1,
            }
        }
    })
}

/// Every complete entry of a log file in order (none when the file does not exist), and
/// the torn tail's length. A line that is not an entry is an error naming its line number
/// (`audit verify` says more).
pub fn read_entries(path: &Path) -> Result<(Vec<Entry>, usize)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(AuditError::io(path, e)),
    };
    let (lines, torn) = split_lines(&bytes);
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let e: Entry = serde_json::from_slice(line).map_err(|e| AuditError::Corrupt {
            path: path.to_path_buf(),
            message: format!("line {} is not an audit entry: {e}", i + 1),
        })?;
        out.push(e);
    }
    Ok((out, torn.len()))
}

/// Complete lines (without newlines) and the torn tail.
pub(crate) fn split_lines(bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
    let lines = if complete == 0 {
        Vec::new()
    } else {
        bytes[..complete - 1].split(|b| *b == b'\n').collect()
    };
    (lines, &bytes[complete..])
}
