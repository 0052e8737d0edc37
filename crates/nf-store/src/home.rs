//! The NeuralForge home: the one folder that holds everything NeuralForge stores (models,
//! datasets, uploads, runs, the audit log).

use std::path::{Path, PathBuf};

use crate::{Result, io_context};

/// The NeuralForge home: `--home`, else `$NEURALFORGE_HOME` (the CLI reads both into
/// `flag`), else the platform data dir (`$XDG_DATA_HOME/neuralforge` or
/// `~/.local/share/neuralforge`).
pub fn home_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(h) = flag {
        return h.to_path_buf();
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("neuralforge");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/neuralforge")
}

/// Makes the home owner-only (0700) before any command writes to it: created so when it
/// is missing, and tightened when it exists with group or other access (homes made by
/// earlier versions took the umask, often leaving uploaded documents readable by every
/// local user). Everything NeuralForge stores lives under it, so this one folder's mode
/// guards datasets, uploads, runs and the audit log alike.
pub fn private_home(home: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
        match std::fs::metadata(home) {
            Ok(m) if m.is_dir() => {
                // Only a folder this user owns; someone else's is theirs to set.
                let mine = m.uid() == current_uid();
                if mine && m.mode() & 0o077 != 0 {
                    let perms = std::fs::Permissions::from_mode(m.mode() & 0o7700);
                    std::fs::set_permissions(home, perms).map_err(io_context(|| {
                        format!("making {} owner-only", home.display())
                    }))?;
                }
            }
            Ok(_) => {}
            Err(_) => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(home)
                    .map_err(io_context(|| format!("creating {}", home.display())))?;
            }
        }
    }
    Ok(())
}

/// This process's user id, read from `/proc/self` (no libc call needed).
#[cfg(unix)]
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// `<home>/runs`: a run's default parent folder.
pub fn runs_dir(home: &Path) -> PathBuf {
    home.join("runs")
}

/// The folders in `dir`, sorted, without hidden ones (staging folders start with a dot);
/// none when `dir` cannot be read. The home's collections (models, datasets, runs) are
/// listed with it.
pub fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    v
}

/// Whether `name` is one plain folder name (a model's or a dataset's in the home): not
/// empty, not hidden, no separators, no control characters.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && name.chars().all(|c| !c.is_control())
}
