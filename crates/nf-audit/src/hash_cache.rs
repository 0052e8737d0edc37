//! The sha256 of model files, cached: `generate` and `chat` record the model they read in
//! every audit entry, and a multi-gigabyte model must not be read through each time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Artifact, AuditError, Result, audit_dir};

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheEntry {
    size: u64,
    mtime_ns: u128,
    /// The inode's identity and its change time (unset in caches of earlier versions,
    /// which then hash again). Unlike the modification time, the change time cannot be
    /// set back by the file's owner: any write or rename moves it.
    #[serde(default)]
    dev: u64,
    #[serde(default)]
    ino: u64,
    #[serde(default)]
    ctime_ns: i128,
    sha256: String,
}

impl CacheEntry {
    /// Whether both describe the same unchanged file (everything but the hash agrees).
    fn same_file(&self, other: &CacheEntry) -> bool {
        (self.size, self.mtime_ns, self.dev, self.ino, self.ctime_ns)
            == (
                other.size,
                other.mtime_ns,
                other.dev,
                other.ino,
                other.ctime_ns,
            )
    }

    /// Everything but the hash, from the file's metadata.
    fn stamp(meta: &std::fs::Metadata) -> CacheEntry {
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        #[cfg(unix)]
        let (dev, ino, ctime_ns) = {
            use std::os::unix::fs::MetadataExt;
            let ctime = meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128;
            (meta.dev(), meta.ino(), ctime)
        };
        #[cfg(not(unix))]
        let (dev, ino, ctime_ns) = (0, 0, 0);
        CacheEntry {
            size: meta.len(),
            mtime_ns,
            dev,
            ino,
            ctime_ns,
            sha256: String::new(),
        }
    }
}

/// The sha256 of a (possibly large) model file, cached in `<home>/audit/hash-cache.json`
/// by path, size, modification and change times and inode, so `generate` does not re-read
/// gigabytes each time. The cache is only a speed-up: a missing or unreadable cache means
/// hashing.
pub fn cached_file_hash(home: &Path, path: &Path) -> Result<String> {
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(&abs).map_err(|e| AuditError::Io {
        path: abs.clone(),
        source: e,
    })?;
    let stamp = CacheEntry::stamp(&meta);
    let cache_path = audit_dir(home).join("hash-cache.json");
    let mut cache: BTreeMap<String, CacheEntry> = std::fs::read_to_string(&cache_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let key = abs.display().to_string();
    if let Some(c) = cache.get(&key)
        && c.same_file(&stamp)
    {
        return Ok(c.sha256.clone());
    }
    let sha256 = crate::sha256_file(&abs)?;
    cache.insert(
        key,
        CacheEntry {
            sha256: sha256.clone(),
            ..stamp
        },
    );
    // Written beside and renamed over, so a reader never sees half a cache; a failure
    // only costs the next command a hash.
    if let Ok(text) = serde_json::to_string(&cache) {
        let tmp = cache_path.with_extension(format!("json.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, text).is_err() || std::fs::rename(&tmp, &cache_path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(sha256)
}

/// The files of a model path as artifacts: a single file, or a folder's files (weights,
/// config, tokenizer), each with its sha256 (cached).
pub fn model_artifacts(home: &Path, kind: &str, path: &Path) -> Result<Vec<Artifact>> {
    let mut files: Vec<PathBuf> = Vec::new();
    if path.is_dir() {
        let read = |e| AuditError::io(path, e);
        for e in std::fs::read_dir(path).map_err(read)? {
            let p = e.map_err(read)?.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if p.is_file() && !name.starts_with('.') {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    files
        .iter()
        .map(|f| Ok(Artifact::new(kind, f, Some(cached_file_hash(home, f)?))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Contents replaced at the same size with the modification time set back (as `touch
    /// -d` or a hostile tool would) must not be answered from the cache.
    #[test]
    fn the_hash_cache_sees_contents_swapped_under_an_old_mtime() {
        let home = nf_testkit::temp_dir("hash-cache");
        let f = home.join("model.bin");
        std::fs::write(&f, b"weights-A").unwrap();
        let first = cached_file_hash(&home, &f).unwrap();
        assert_eq!(cached_file_hash(&home, &f).unwrap(), first);
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        // Let the clock move on, so the new change time differs from the cached one.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"weights-B").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), mtime);
        assert_eq!(
            cached_file_hash(&home, &f).unwrap(),
            crate::sha256_hex(b"weights-B")
        );
    }
}
