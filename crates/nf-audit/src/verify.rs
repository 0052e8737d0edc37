//! Checking a log: sequence, chain, head and signatures, stopping at the first problem.
//!
//! For each line in order:
//! 1. it must parse as an [`Entry`] (else **edited**);
//! 2. its `seq` must be the previous one plus 1: a higher `seq` whose missing number
//!    appears later in the file, or a lower one, is **reordered**; a higher one whose
//!    missing number appears nowhere is **deleted**;
//! 3. the first entry's `prev` must be [`GENESIS`] (else **edited**);
//! 4. its canonical bytes must hash to the next entry's `prev` (or, for the newest entry,
//!    the head's hash) — else the entry was **edited**. When the next entry is itself
//!    broken the same way, the fault is in the next entry (its `prev` was edited), and it
//!    is that entry that is reported;
//! 5. when it carries a signature, the signature must verify with the home's device key
//!    (else **bad signature**); entries after signing began (the first signed entry, or an
//!    `audit keygen` entry) must be signed.
//!
//! Then the head: a head `seq` beyond the last entry means whole entries were cut off the
//! end (**truncated**); a head one behind the last entry is what a crash between writing
//! an entry and its head leaves, and is noted, not failed. Finally bytes after the last
//! newline are a **torn tail** (the next append moves them aside and records that).

use std::path::Path;

use crate::entry::Entry;
use crate::key::{check_signature, trusted_public_key};
use crate::log::{Head, split_lines};
use crate::{AuditError, GENESIS, HEAD_FILE, LOG_FILE, Result, audit_dir, sha256_hex};

/// The first thing found wrong. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// An entry's content does not hash to what the next entry recorded (or does not parse).
    Edited {
        /// The entry's sequence number, when it can be read.
        seq: Option<u64>,
        /// Its line in the log.
        line: usize,
        /// What gave it away.
        why: String,
    },
    /// An entry is missing: the sequence numbers skip.
    Deleted {
        /// The sequence number that is missing.
        seq: u64,
        /// The line where it should be.
        line: usize,
    },
    /// Entries are out of order.
    Reordered {
        /// The sequence number found.
        seq: u64,
        /// The one expected there.
        expected: u64,
        /// Its line in the log.
        line: usize,
    },
    /// The log ends before the entry its head file names.
    Truncated {
        /// The last entry in the log.
        last_seq: u64,
        /// The last entry the head file names.
        head_seq: u64,
    },
    /// The log ends in a partial line (a write cut off by a crash).
    TornTail {
        /// The last complete entry.
        after_seq: u64,
        /// Bytes of the partial line.
        bytes: usize,
    },
    /// An entry's signature does not verify with its device key.
    BadSignature {
        /// The entry's sequence number.
        seq: u64,
        /// Its line in the log.
        line: usize,
        /// What failed.
        why: String,
    },
    /// The head file disagrees with the log.
    Head {
        /// How.
        why: String,
    },
    /// The log does not match an anchor or key held outside the home.
    Anchor {
        /// How.
        why: String,
    },
}

impl Problem {
    /// `edited`, `deleted`, `reordered`, `truncated`, `torn_tail`, `bad_signature`, `head`,
    /// `anchor`.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Edited { .. } => "edited",
            Problem::Deleted { .. } => "deleted",
            Problem::Reordered { .. } => "reordered",
            Problem::Truncated { .. } => "truncated",
            Problem::TornTail { .. } => "torn_tail",
            Problem::BadSignature { .. } => "bad_signature",
            Problem::Head { .. } => "head",
            Problem::Anchor { .. } => "anchor",
        }
    }

    /// The entry the problem is reported at, when it is one.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Problem::Edited { seq, .. } => *seq,
            Problem::Deleted { seq, .. }
            | Problem::Reordered { seq, .. }
            | Problem::BadSignature { seq, .. } => Some(*seq),
            Problem::Truncated { last_seq, .. } => Some(last_seq + 1),
            Problem::TornTail { after_seq, .. } => Some(after_seq + 1),
            Problem::Head { .. } | Problem::Anchor { .. } => None,
        }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Edited {
                seq: Some(s),
                line,
                why,
            } => write!(f, "entry {s} (line {line}) was edited: {why}"),
            Problem::Edited {
                seq: None,
                line,
                why,
            } => write!(f, "line {line} was edited: {why}"),
            Problem::Deleted { seq, line } => {
                write!(f, "entry {seq} was deleted (missing before line {line})")
            }
            Problem::Reordered {
                seq,
                expected,
                line,
            } => write!(
                f,
                "entries were reordered: line {line} holds entry {seq} where entry {expected} belongs"
            ),
            Problem::Truncated { last_seq, head_seq } => write!(
                f,
                "the log was truncated: it ends at entry {last_seq} but {head_seq} entries were written"
            ),
            Problem::TornTail { after_seq, bytes } => write!(
                f,
                "torn tail: {bytes} bytes after entry {after_seq} without a newline (an interrupted write)"
            ),
            Problem::BadSignature { seq, line, why } => {
                write!(f, "entry {seq} (line {line}) has a bad signature: {why}")
            }
            Problem::Head { why } => write!(f, "the head file does not match the log: {why}"),
            Problem::Anchor { why } => write!(f, "the log does not match the anchor: {why}"),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Entries read.
    pub entries: u64,
    /// Entries with a signature that verified.
    pub signed: u64,
    /// The time of the first entry.
    pub first_time: Option<String>,
    /// The time of the last entry.
    pub last_time: Option<String>,
    /// The sha256 of the last entry's line (what `audit anchor` prints).
    pub last_hash: Option<String>,
    /// The head file, when there is one.
    pub head: Option<Head>,
    /// The trusted device key (hex) signatures were checked against.
    pub key: Option<String>,
    /// The first thing found wrong, if anything.
    pub problem: Option<Problem>,
    /// Things worth knowing that are not failures.
    pub notes: Vec<String>,
    /// The sha256 of every entry that checked out, in order (entry `seq` at `seq - 1`):
    /// what an anchor kept elsewhere is compared with.
    pub hashes: Vec<String>,
}

impl Report {
    /// Whether nothing was found wrong.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }

    /// Checks an anchor kept outside the home (`audit anchor` printed it): entry `seq` must
    /// still be in the log with this sha256. Entries after it may have been added since.
    /// The log itself may be entirely rewritten by someone with write access to the home;
    /// an anchor held elsewhere is what catches that.
    pub fn check_anchor(&mut self, seq: u64, sha256: &str) {
        if self.problem.is_some() {
            return;
        }
        let why = match self.hashes.get((seq as usize).wrapping_sub(1)) {
            Some(h) if h.eq_ignore_ascii_case(sha256) => return,
            Some(_) => format!("entry {seq} no longer has the anchored sha256"),
            None => format!(
                "the log holds {} entries, fewer than the anchored {seq}",
                self.entries
            ),
        };
        self.problem = Some(Problem::Anchor { why });
    }

    /// Checks the device key signatures were verified against, against one held outside
    /// the home: a replaced key (and log re-signed with it) fails here.
    pub fn check_key(&mut self, public_key: &str) {
        if self.problem.is_some() {
            return;
        }
        let why = match &self.key {
            Some(k) if k.eq_ignore_ascii_case(public_key.trim()) => return,
            Some(k) => format!("the device key is {k}, not the expected one"),
            None => "there is no device key, but one was expected".into(),
        };
        self.problem = Some(Problem::Anchor { why });
    }
}

/// Verifies the log of `home` against its head file and device key.
pub fn verify(home: &Path) -> Result<Report> {
    let dir = audit_dir(home);
    let path = dir.join(LOG_FILE);
    let key = trusted_public_key(home)?;
    // Under a shared lock, so an append (which holds the exclusive one while it writes the
    // entry and then the head) is never seen half done: log and head read as one state.
    let (bytes, _lock) = match std::fs::File::open(&path) {
        Ok(mut f) => {
            f.lock_shared().map_err(|e| AuditError::io(&path, e))?;
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut b).map_err(|e| AuditError::io(&path, e))?;
            (b, Some(f))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), None),
        Err(e) => return Err(AuditError::io(&path, e)),
    };
    let head_path = dir.join(HEAD_FILE);
    let head: Option<Head> = match std::fs::read_to_string(&head_path) {
        Ok(t) => Some(serde_json::from_str(&t).map_err(|e| AuditError::Corrupt {
            path: head_path.clone(),
            message: format!("not a head record: {e}"),
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(AuditError::io(&head_path, e)),
    };
    Ok(verify_bytes(&bytes, head, key))
}

/// [`verify`] on a log's bytes, head and trusted key.
pub fn verify_bytes(bytes: &[u8], head: Option<Head>, key: Option<String>) -> Report {
    let (lines, torn) = split_lines(bytes);
    let mut r = Report {
        head: head.clone(),
        key: key.clone(),
        ..Report::default()
    };
    let hashes: Vec<String> = lines.iter().map(|l| sha256_hex(l)).collect();
    let mut entries: Vec<Entry> = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_slice::<Entry>(l) {
            Ok(e) => entries.push(e),
            Err(e) => {
                r.problem = Some(Problem::Edited {
                    seq: entries.last().map(|p| p.seq + 1),
                    line: i + 1,
                    why: format!("not a valid entry ({e})"),
                });
                r.entries = entries.len() as u64;
                return r;
            }
        }
    }
    // The hash the entry at index i must have: the next entry's prev, or the head's.
    let successor_prev = |i: usize| -> Option<&str> {
        match entries.get(i + 1) {
            Some(n) => Some(n.prev.as_str()),
            None => head
                .as_ref()
                .filter(|h| h.seq == entries[i].seq)
                .map(|h| h.sha256.as_str()),
        }
    };
    let intact = |i: usize| successor_prev(i).is_none_or(|p| p == hashes[i]);
    let mut signing = false;
    for (i, e) in entries.iter().enumerate() {
        let line = i + 1;
        // Every earlier entry was in order, so this one must be number `line`.
        let expected = line as u64;
        if e.seq != expected {
            r.problem = Some(if e.seq > expected {
                if entries[i + 1..].iter().any(|x| x.seq == expected) {
                    Problem::Reordered {
                        seq: e.seq,
                        expected,
                        line,
                    }
                } else {
                    Problem::Deleted {
                        seq: expected,
                        line,
                    }
                }
            } else {
                Problem::Reordered {
                    seq: e.seq,
                    expected,
                    line,
                }
            });
            break;
        }
        if i == 0 && e.prev != GENESIS {
            r.problem = Some(Problem::Edited {
                seq: Some(e.seq),
                line,
                why: "the first entry's prev is not the chain anchor".into(),
            });
            break;
        }
        // A sequence fault in the next entry is reported at that entry, not as an edit.
        let next_in_order = entries.get(i + 1).is_none_or(|n| n.seq == e.seq + 1);
        if next_in_order && !intact(i) && (i + 1 >= entries.len() || intact(i + 1)) {
            let sig_note = match (&e.key, &e.sig) {
                (Some(k), Some(s)) if !signed_ok(lines[i], k, s) => "; its signature fails too",
                _ => "",
            };
            let against = if i + 1 < entries.len() {
                format!("entry {}'s prev", entries[i + 1].seq)
            } else {
                "the head file".to_string()
            };
            r.problem = Some(Problem::Edited {
                seq: Some(e.seq),
                line,
                why: format!("its sha256 no longer matches {against}{sig_note}"),
            });
            break;
        }
        // Signatures.
        let began = e.command == "audit keygen";
        match (&e.key, &e.sig) {
            (Some(k), Some(s)) => {
                if let Some(trusted) = &key
                    && k != trusted
                {
                    r.problem = Some(Problem::BadSignature {
                        seq: e.seq,
                        line,
                        why: "signed by a key that is not this home's device key".into(),
                    });
                    break;
                }
                if !signed_ok(lines[i], k, s) {
                    r.problem = Some(Problem::BadSignature {
                        seq: e.seq,
                        line,
                        why: "the signature does not verify".into(),
                    });
                    break;
                }
                signing = true;
                r.signed += 1;
            }
            (None, None) if signing && key.is_some() => {
                r.problem = Some(Problem::BadSignature {
                    seq: e.seq,
                    line,
                    why: "unsigned, but every entry after signing began must be signed".into(),
                });
                break;
            }
            (None, None) => {}
            _ => {
                r.problem = Some(Problem::BadSignature {
                    seq: e.seq,
                    line,
                    why: "a key without a signature, or a signature without a key".into(),
                });
                break;
            }
        }
        signing |= began;
        r.entries += 1;
        r.first_time.get_or_insert_with(|| e.time.clone());
        r.last_time = Some(e.time.clone());
        r.last_hash = Some(hashes[i].clone());
        r.hashes.push(hashes[i].clone());
    }
    if r.problem.is_some() {
        return r;
    }
    let last_seq = entries.last().map_or(0, |e| e.seq);
    match &head {
        Some(h) if h.seq > last_seq => {
            r.problem = Some(Problem::Truncated {
                last_seq,
                head_seq: h.seq,
            });
            return r;
        }
        Some(h) if h.seq + 1 == last_seq => {
            let i = entries.len() - 2;
            if h.sha256 != hashes[i] {
                r.problem = Some(Problem::Edited {
                    seq: Some(entries[i].seq),
                    line: i + 1,
                    why: "its sha256 no longer matches the head file".into(),
                });
                return r;
            }
            r.notes.push(format!(
                "the head file is one entry behind (a crash after writing entry {last_seq}); the next append brings it up to date"
            ));
        }
        Some(h) if h.seq < last_seq => {
            r.problem = Some(Problem::Head {
                why: format!(
                    "it names entry {} but the log goes on to entry {last_seq}: entries were added by something other than NeuralForge",
                    h.seq
                ),
            });
            return r;
        }
        Some(_) => {}
        // The first append writes its entry before the head: a crash between the two
        // leaves one entry and no head, which is only a note.
        None if entries.len() == 1 => r.notes.push(
            "no head file after the first entry (a crash before it was written); the next append writes it".into(),
        ),
        None if !entries.is_empty() => {
            r.problem = Some(Problem::Head {
                why: format!(
                    "the head file is missing while the log holds {} entries, so entries cut off the end would go unnoticed",
                    entries.len()
                ),
            });
            return r;
        }
        None => {}
    }
    if !torn.is_empty() {
        r.problem = Some(Problem::TornTail {
            after_seq: last_seq,
            bytes: torn.len(),
        });
    }
    if key.is_some() && r.signed == 0 && r.entries > 0 {
        r.notes
            .push("a device key exists but no entry is signed yet".into());
    }
    r
}

/// Checks `sig` over the line without its final `,"sig":"…"` member.
fn signed_ok(line: &[u8], key: &str, sig: &str) -> bool {
    let suffix = format!(",\"sig\":\"{sig}\"}}");
    let Some(body) = line.strip_suffix(suffix.as_bytes()) else {
        return false;
    };
    let mut signed = body.to_vec();
    signed.push(b'}');
    check_signature(key, sig, &signed)
}
