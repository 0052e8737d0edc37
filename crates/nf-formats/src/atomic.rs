//! Atomic file writes: a half-written file never replaces a good one.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{FormatError, Result};

/// Writes `path` by streaming into a temporary file in the same folder, fsyncing it, and
/// renaming it over `path`. If `write` fails (or the process dies), `path` keeps whatever
/// it held before and the temporary file is removed (or left with a `.tmp` suffix).
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
{
    let dir = folder_of(path);
    let name = path.file_name().ok_or_else(|| {
        FormatError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    // Process id plus a per-process counter: unique even for concurrent writes of one path.
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tmp_name.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let file = File::create(&tmp)?;
        let mut w = BufWriter::new(file);
        write(&mut w)?;
        w.flush()?;
        w.get_ref().sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is durable only once the directory entry is; best effort on platforms
        // where directories cannot be opened.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        FormatError::io(path, e)
    })
}

/// Puts the complete file or folder `staging` at `target` (beside it, on the same file
/// system), replacing whatever `target` holds, so that a crash at any moment leaves either
/// the old `target` or the new one. When `target` exists the two are exchanged in one step
/// (Linux `renameat2` with `RENAME_EXCHANGE`) and the old one, now at `staging`, is removed;
/// a crash before that removal leaves it under the staging name, which callers keep hidden.
/// Where the exchange is not available (another OS, a file system without it) a file is
/// renamed over the old one, which is atomic too, and a folder is moved aside first, which
/// leaves a moment without `target`.
pub fn replace(staging: &Path, target: &Path) -> std::io::Result<()> {
    let Ok(old) = std::fs::symlink_metadata(target) else {
        return std::fs::rename(staging, target);
    };
    match exchange(staging, target) {
        Ok(()) => {}
        Err(e) if exchange_unsupported(&e) => {
            if old.is_dir() {
                return replace_in_two_steps(staging, target);
            }
            std::fs::rename(staging, target)?;
        }
        Err(e) => return Err(e),
    }
    // The old artifact, now at `staging`: removing it is tidying, not part of the swap.
    let _ = remove_any(staging);
    Ok(())
}

/// The folder holding `path`; `.` for a bare name.
fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Removes `path`, a folder (with its contents) or anything else.
fn remove_any(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        _ => std::fs::remove_file(path),
    }
}

/// Moves the folder `target` aside, renames `staging` to it, then deletes the old one.
fn replace_in_two_steps(staging: &Path, target: &Path) -> std::io::Result<()> {
    let mut aside = staging.as_os_str().to_os_string();
    aside.push(".old");
    let aside = std::path::PathBuf::from(aside);
    std::fs::rename(target, &aside)?;
    if let Err(e) = std::fs::rename(staging, target) {
        let _ = std::fs::rename(&aside, target);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&aside);
    Ok(())
}

/// Whether a failed exchange means only that this kernel or file system cannot do it.
fn exchange_unsupported(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(code) if is_unsupported_errno(code))
}

#[cfg(target_os = "linux")]
fn is_unsupported_errno(code: i32) -> bool {
    code == libc::EINVAL || code == libc::ENOSYS || code == libc::EOPNOTSUPP
}

#[cfg(not(target_os = "linux"))]
fn is_unsupported_errno(_code: i32) -> bool {
    false
}

/// Swaps the directory entries `a` and `b` atomically.
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes())?;
    let b = std::ffi::CString::new(b.as_os_str().as_bytes())?;
    // The raw system call rather than libc's wrapper, which older C libraries lack.
    // SAFETY: both pointers are NUL-terminated strings that outlive the call, which only
    // reads them; the other arguments are plain integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Removes what killed runs left beside `target`: entries of its folder named
/// `.<target name>.<tag>-<pid>` whose process no longer exists (a staging copy, or the old
/// artifact an exchange moved there before the kill). Entries of live processes, and any
/// other name, are left alone. Returns how many were removed. Only on Linux, where
/// `/proc/<pid>` says whether a process exists; elsewhere nothing is removed.
pub fn remove_stale(target: &Path, tag: &str) -> usize {
    let Some(name) = target.file_name() else {
        return 0;
    };
    let prefix = format!(".{}.{tag}-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(folder_of(target)) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let file_name = e.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !cfg!(target_os = "linux") || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        removed += usize::from(remove_any(&e.path()).is_ok());
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).unwrap_or_default())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replace_swaps_folders_and_files_and_removes_the_old() {
        let dir = nf_testkit::temp_dir("atomic-replace");
        // A folder over a folder, then over nothing.
        let (target, staging) = (dir.join("data"), dir.join(".data.staging"));
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("old.txt"), b"old").unwrap();
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("new.txt"), b"new").unwrap();
        replace(&staging, &target).unwrap();
        assert_eq!(
            read_tree(&target),
            [("new.txt".to_string(), b"new".to_vec())]
        );
        assert_eq!(read_tree(&dir), [("data".to_string(), Vec::new())]);
        // A file over a file.
        let (file, tmp) = (dir.join("m.gguf"), dir.join(".m.gguf.staging"));
        std::fs::write(&file, b"old").unwrap();
        std::fs::write(&tmp, b"new").unwrap();
        replace(&tmp, &file).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert!(!tmp.exists());
        // A missing staging path fails and leaves the target alone.
        assert!(replace(&tmp, &file).is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
    }

    #[test]
    fn stale_leftovers_of_dead_processes_are_removed() {
        let dir = nf_testkit::temp_dir("atomic-stale");
        let target = dir.join("notes");
        // No process has this id (Linux's pid_max is at most 2^22).
        let dead = dir.join(".notes.staging-999999999");
        let live = dir.join(format!(".notes.staging-{}", std::process::id()));
        let other = dir.join(".other.staging-999999999");
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).unwrap();
            std::fs::write(d.join("f"), b"x").unwrap();
        }
        std::fs::write(dir.join(".notes.staging-999999998"), b"a file").unwrap();
        let removed = remove_stale(&target, "staging");
        if cfg!(target_os = "linux") {
            assert_eq!(removed, 2);
            assert!(!dead.exists());
        }
        assert!(live.exists() && other.exists());
    }
}
