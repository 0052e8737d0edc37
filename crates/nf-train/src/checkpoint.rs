//! Checkpoints: whole or absent, never half-written.
//!
//! A checkpoint is a folder `<checkpoints>/step-N/` (in a run, `runs/<id>/checkpoints/`):
//!
//! | file | contents |
//! |---|---|
//! | `weights.safetensors` | the trainable tensors by name, f32 |
//! | `optimizer.safetensors` | AdamW's moments, `<name>.m` and `<name>.v` for each tensor |
//! | `state.json` | the caller's JSON: step, data position, schedule, hashes of config, base model and data, losses |
//! | `COMPLETE` | written last: the SHA-256 of each other file, in `sha256sum` format |
//!
//! [`save_checkpoint`] writes everything into a staging folder `.step-N.tmp-<pid>` beside
//! the final one, fsyncs each file and the folder, renames it to `step-N` and fsyncs the
//! parent, so a crash leaves either the previous state or the whole checkpoint. Loading
//! checks the marker and every hash, so a checkpoint damaged later (a bad disk, a user
//! editing files) is refused with a message saying which file, rather than resuming from
//! wrong weights. Names starting with `.` are never checkpoints; `sha256sum -c COMPLETE`
//! inside the folder verifies one by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nf_formats::safetensors::{SafeTensors, StDtype, TensorToWrite, write_safetensors};

use crate::error::CheckpointError;
use nf_protocol::sha256_file as sha256_file_io;

type Result<T, E = CheckpointError> = std::result::Result<T, E>;

/// The trainable tensors.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// The optimizer moments.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// The caller's state.
pub const STATE_FILE: &str = "state.json";
/// The completion marker, written last.
pub const MARKER_FILE: &str = "COMPLETE";

const REQUIRED: [&str; 3] = [OPTIMIZER_FILE, STATE_FILE, WEIGHTS_FILE];

/// A tensor to save, borrowed from the trainer's buffers.
#[derive(Clone, Copy, Debug)]
pub struct NamedTensor<'a> {
    /// The tensor's name (the model's parameter name).
    pub name: &'a str,
    /// Its shape.
    pub shape: &'a [usize],
    /// Its values, row-major.
    pub data: &'a [f32],
}

/// A checkpoint read back and verified. Tensors are keyed by name; `m` and `v` by the
/// weight's name (the file's `.m`/`.v` suffixes removed), with the weight's shape, and
/// both are empty when it was saved without optimizer state.
#[derive(Clone, Debug)]
pub struct LoadedCheckpoint {
    /// The step it was saved at.
    pub step: u64,
    /// Its folder.
    pub dir: PathBuf,
    /// The shape of each weight (and of its moments).
    pub shapes: BTreeMap<String, Vec<usize>>,
    /// The trainable tensors' values.
    pub weights: BTreeMap<String, Vec<f32>>,
    /// AdamW's first moments.
    pub m: BTreeMap<String, Vec<f32>>,
    /// AdamW's second moments.
    pub v: BTreeMap<String, Vec<f32>>,
    /// The loop's state (`state.json`).
    pub state: serde_json::Value,
}

/// Checkpoint folders that failed to verify or load, each with what is wrong.
pub type SkippedCheckpoints = Vec<(PathBuf, CheckpointError)>;

/// What [`scan_checkpoints`] found.
#[derive(Debug, Default)]
pub struct CheckpointScan {
    /// The newest checkpoint that verified and loaded, if any.
    pub latest: Option<LoadedCheckpoint>,
    /// Newer checkpoints that did not (newest first), each with what is wrong, for the
    /// caller to warn about; every checkpoint there is when none is valid.
    pub skipped: SkippedCheckpoints,
}

/// `<ckpt_root>/step-<step>`.
pub fn checkpoint_dir(ckpt_root: &Path, step: u64) -> PathBuf {
    ckpt_root.join(format!("step-{step}"))
}

/// The step of a folder named `step-N` (canonical decimal: no sign, no leading zeros).
pub fn parse_step_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    let n: u64 = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())??;
    (n.to_string() == digits).then_some(n)
}

/// The `step-N` folders under `ckpt_root`, by ascending step, whether valid or not. A
/// missing `ckpt_root` has none.
pub fn list_checkpoints(ckpt_root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(ckpt_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointError::io(ckpt_root, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CheckpointError::io(ckpt_root, e))?;
        let Some(step) = entry.file_name().to_str().and_then(parse_step_dir_name) else {
            continue;
        };
        if entry.path().is_dir() {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Saves a checkpoint for `step` under `ckpt_root` (created if needed) and returns its
/// folder, `ckpt_root/step-N`.
///
/// `m` and `v` must each hold exactly the tensors of `weights` (same names and shapes),
/// or both be empty. A `step-N` already there (from a run resumed from an earlier step)
/// is replaced. On any error the staging folder is removed and earlier checkpoints are
/// untouched.
pub fn save_checkpoint(
    ckpt_root: &Path,
    step: u64,
    weights: &[NamedTensor<'_>],
    m: &[NamedTensor<'_>],
    v: &[NamedTensor<'_>],
    state: &serde_json::Value,
) -> Result<PathBuf> {
    check_inputs(weights, m, v)?;
    std::fs::create_dir_all(ckpt_root).map_err(|e| CheckpointError::io(ckpt_root, e))?;
    let pid = std::process::id();
    let staging = ckpt_root.join(format!(".step-{step}.tmp-{pid}"));
    if staging.exists() {
        remove_dir(&staging)?;
    }
    std::fs::create_dir(&staging).map_err(|e| CheckpointError::io(&staging, e))?;
    let result = write_staging(&staging, step, weights, m, v, state)
        .and_then(|()| publish(ckpt_root, &staging, step));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn check_inputs(
    weights: &[NamedTensor<'_>],
    m: &[NamedTensor<'_>],
    v: &[NamedTensor<'_>],
) -> Result<()> {
    let bad = |s: String| Err(CheckpointError::InvalidInput(s));
    let mut names = BTreeSet::new();
    for t in weights.iter().chain(m).chain(v) {
        let n: usize = t.shape.iter().product();
        if n != t.data.len() {
            return bad(format!(
                "tensor `{}` has shape {:?} ({n} values) but {} values",
                t.name,
                t.shape,
                t.data.len()
            ));
        }
    }
    for t in weights {
        if t.name.is_empty() || !names.insert(t.name) {
            return bad(format!("tensor name `{}` is empty or repeated", t.name));
        }
    }
    if m.is_empty() && v.is_empty() {
        return Ok(());
    }
    for (moments, which) in [(m, "m"), (v, "v")] {
        let shapes: BTreeMap<&str, &[usize]> = moments.iter().map(|t| (t.name, t.shape)).collect();
        let matches = moments.len() == weights.len()
            && weights.iter().all(|w| shapes.get(w.name) == Some(&w.shape));
        if !matches {
            return bad(format!(
                "the optimizer's `{which}` tensors do not match the weights one for one \
                 (same names and shapes)"
            ));
        }
    }
    Ok(())
}

/// The little-endian bytes of `data`; borrowed where the machine is little-endian.
fn le_bytes(data: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: f32 has no padding and every byte of it is initialized; u8 has alignment
        // 1; the slice covers exactly the memory of `data` and borrows it for its lifetime.
        std::borrow::Cow::Borrowed(unsafe {
            std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data))
        })
    }
    #[cfg(not(target_endian = "little"))]
    {
        std::borrow::Cow::Owned(nf_formats::safetensors::f32_bytes(data))
    }
}

fn write_tensors(path: &Path, step: u64, tensors: &[(String, &NamedTensor<'_>)]) -> Result<()> {
    let bytes: Vec<_> = tensors.iter().map(|(_, t)| le_bytes(t.data)).collect();
    let to_write: Vec<TensorToWrite<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, t), b)| TensorToWrite {
            name: name.clone(),
            dtype: StDtype::F32,
            shape: t.shape.to_vec(),
            data: b,
        })
        .collect();
    let metadata = BTreeMap::from([
        ("format".to_string(), "neuralforge-checkpoint".to_string()),
        ("step".to_string(), step.to_string()),
    ]);
    write_safetensors(path, &to_write, &metadata)?;
    Ok(())
}

fn write_staging(
    staging: &Path,
    step: u64,
    weights: &[NamedTensor<'_>],
    m: &[NamedTensor<'_>],
    v: &[NamedTensor<'_>],
    state: &serde_json::Value,
) -> Result<()> {
    let w: Vec<_> = weights.iter().map(|t| (t.name.to_string(), t)).collect();
    write_tensors(&staging.join(WEIGHTS_FILE), step, &w)?;
    let opt: Vec<_> = m
        .iter()
        .map(|t| (format!("{}.m", t.name), t))
        .chain(v.iter().map(|t| (format!("{}.v", t.name), t)))
        .collect();
    write_tensors(&staging.join(OPTIMIZER_FILE), step, &opt)?;
    let state_path = staging.join(STATE_FILE);
    let mut json = serde_json::to_vec_pretty(state).expect("a JSON value serializes");
    json.push(b'\n');
    nf_formats::atomic::write_atomic(&state_path, |f| f.write_all(&json))?;

    // The marker last: its presence means every file above is complete and fsynced.
    let mut marker = String::new();
    for name in REQUIRED {
        let path = staging.join(name);
        let hash = sha256_file_io(&path).map_err(|e| CheckpointError::io(&path, e))?;
        marker.push_str(&format!("{hash}  {name}\n"));
    }
    let marker_path = staging.join(MARKER_FILE);
    nf_formats::atomic::write_atomic(&marker_path, |f| f.write_all(marker.as_bytes()))?;
    sync_dir(staging)
}

/// Renames the finished staging folder to `step-N`, replacing an existing one.
fn publish(ckpt_root: &Path, staging: &Path, step: u64) -> Result<PathBuf> {
    let dest = checkpoint_dir(ckpt_root, step);
    let rename =
        |from: &Path, to: &Path| std::fs::rename(from, to).map_err(|e| CheckpointError::io(to, e));
    if dest.exists() {
        // A folder cannot be renamed over a non-empty one: move the old one aside first.
        // A crash between the two renames leaves no step-N, which is what it was becoming.
        let old = ckpt_root.join(format!(".step-{step}.old-{}", std::process::id()));
        if old.exists() {
            remove_dir(&old)?;
        }
        rename(&dest, &old)?;
        rename(staging, &dest)?;
        sync_dir(ckpt_root)?;
        remove_dir(&old)?;
    } else {
        rename(staging, &dest)?;
        sync_dir(ckpt_root)?;
    }
    Ok(dest)
}

fn sync_dir(dir: &Path) -> Result<()> {
    // Directories cannot be opened for syncing on some platforms (Windows); the data files
    // themselves are synced, so this is best effort there.
    match File::open(dir) {
        Ok(d) => d.sync_all().map_err(|e| CheckpointError::io(dir, e)),
        Err(_) if cfg!(not(unix)) => Ok(()),
        Err(e) => Err(CheckpointError::io(dir, e)),
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    std::fs::remove_dir_all(dir).map_err(|e| CheckpointError::io(dir, e))
}

/// The step from a checkpoint folder's name.
fn dir_step(dir: &Path) -> Result<u64> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_step_dir_name)
        .ok_or_else(|| CheckpointError::NotACheckpoint {
            path: dir.to_path_buf(),
        })
}

/// The marker's entries, (file name, sha256), after checking it lists every required file.
fn read_marker(dir: &Path) -> Result<Vec<(String, String)>> {
    let path = dir.join(MARKER_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !dir.is_dir() {
                return Err(CheckpointError::io(dir, e));
            }
            return Err(CheckpointError::Incomplete {
                dir: dir.to_path_buf(),
            });
        }
        Err(e) => return Err(CheckpointError::io(&path, e)),
    };
    let bad = |reason: String| CheckpointError::BadMarker {
        path: path.clone(),
        reason,
    };
    let text = String::from_utf8(text).map_err(|_| bad("not UTF-8 text".into()))?;
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let (hash, name) = line
            .split_once("  ")
            .ok_or_else(|| bad(format!("line {} is not `<sha256>  <file>`", i + 1)))?;
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && name != MARKER_FILE
            && !name.contains(['/', '\\']);
        let hex = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !plain || !hex {
            return Err(bad(format!("line {} is not `<sha256>  <file>`", i + 1)));
        }
        entries.push((name.to_string(), hash.to_string()));
    }
    for name in REQUIRED {
        if !entries.iter().any(|(n, _)| n == name) {
            return Err(bad(format!("no entry for {name}")));
        }
    }
    Ok(entries)
}

/// Checks that `dir` is a whole checkpoint: named `step-N`, with a marker listing every
/// required file, and each file listed present with the hash the marker records. Reads
/// every file once; loads nothing. Returns the step.
pub fn verify_checkpoint(dir: &Path) -> Result<u64> {
    let step = dir_step(dir)?;
    for (name, expected) in read_marker(dir)? {
        let path = dir.join(&name);
        let actual = match sha256_file_io(&path) {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CheckpointError::MissingFile { path });
            }
            Err(e) => return Err(CheckpointError::io(&path, e)),
        };
        if actual != expected {
            return Err(CheckpointError::HashMismatch {
                path,
                expected,
                actual,
            });
        }
    }
    Ok(step)
}

/// Verifies ([`verify_checkpoint`]) and loads the checkpoint in `dir`.
pub fn load_checkpoint(dir: &Path) -> Result<LoadedCheckpoint> {
    let step = verify_checkpoint(dir)?;
    let (shapes, weights) = read_tensors(&dir.join(WEIGHTS_FILE))?;

    let opt_path = dir.join(OPTIMIZER_FILE);
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: opt_path.clone(),
        reason,
    };
    let (mut m, mut v) = (BTreeMap::new(), BTreeMap::new());
    let (opt_shapes, opt) = read_tensors(&opt_path)?;
    let (mut m_shapes, mut v_shapes) = (BTreeMap::new(), BTreeMap::new());
    for (name, t) in opt {
        let (base, map, map_shapes) = if let Some(b) = name.strip_suffix(".m") {
            (b, &mut m, &mut m_shapes)
        } else if let Some(b) = name.strip_suffix(".v") {
            (b, &mut v, &mut v_shapes)
        } else {
            return Err(corrupt(format!(
                "tensor `{name}` is neither `<name>.m` nor `<name>.v`"
            )));
        };
        map.insert(base.to_string(), t);
        map_shapes.insert(base.to_string(), opt_shapes[&name].clone());
    }
    if !(m.is_empty() && v.is_empty()) {
        for (moment_shapes, which) in [(&m_shapes, "m"), (&v_shapes, "v")] {
            let same = *moment_shapes == shapes;
            if !same {
                return Err(corrupt(format!(
                    "the `{which}` moments do not match the weights one for one"
                )));
            }
        }
    }

    let state_path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).map_err(|e| CheckpointError::io(&state_path, e))?;
    let state = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
        path: state_path.clone(),
        reason: format!("not JSON: {e}"),
    })?;
    Ok(LoadedCheckpoint {
        step,
        dir: dir.to_path_buf(),
        shapes,
        weights,
        m,
        v,
        state,
    })
}

type Tensors = (BTreeMap<String, Vec<usize>>, BTreeMap<String, Vec<f32>>);

/// Every tensor of a safetensors file as f32, with the shapes.
fn read_tensors(path: &Path) -> Result<Tensors> {
    let st = SafeTensors::open(path)?;
    let (mut shapes, mut data) = (BTreeMap::new(), BTreeMap::new());
    for t in &st.tensors {
        let (shape, values) = st.to_f32(&t.name)?;
        shapes.insert(t.name.clone(), shape);
        data.insert(t.name.clone(), values);
    }
    Ok((shapes, data))
}

/// Looks for the newest checkpoint under `ckpt_root` that verifies and loads, trying
/// newer ones first and recording why each newer one failed. Staging and other
/// dot-folders are ignored. A missing `ckpt_root` has no checkpoints.
pub fn scan_checkpoints(ckpt_root: &Path) -> Result<CheckpointScan> {
    let mut scan = CheckpointScan::default();
    for (_, dir) in list_checkpoints(ckpt_root)?.into_iter().rev() {
        match load_checkpoint(&dir) {
            Ok(c) => {
                scan.latest = Some(c);
                break;
            }
            Err(e) => scan.skipped.push((dir, e)),
        }
    }
    Ok(scan)
}

/// The newest valid checkpoint and the newer invalid ones skipped on the way (newest
/// first, so the caller can warn "skipping step-N: ..."), or `None` when no checkpoint
/// under `ckpt_root` is valid; [`scan_checkpoints`] also says why in that case.
pub fn latest_valid_checkpoint(
    ckpt_root: &Path,
) -> Result<Option<(LoadedCheckpoint, SkippedCheckpoints)>> {
    let scan = scan_checkpoints(ckpt_root)?;
    Ok(scan.latest.map(|c| (c, scan.skipped)))
}

/// Whether `dir` looks finished: a marker listing every required file, and those files
/// present. Cheap (no hashing), for pruning.
fn looks_complete(dir: &Path) -> bool {
    read_marker(dir).is_ok_and(|entries| entries.iter().all(|(n, _)| dir.join(n).is_file()))
}

/// Removes old checkpoints, keeping the newest `keep_last` complete ones (at least one:
/// a run resumes from the newest) and `best_step`'s. Returns the folders removed.
///
/// "Complete" here means a marker that lists files which all exist; files are not
/// re-hashed, since that would read every checkpoint at every save. Incomplete or damaged
/// folders are left alone for the user to inspect ([`latest_valid_checkpoint`] reports
/// them). Each folder is renamed to a dot-name before it is deleted, so a crash mid-delete
/// never leaves a partial `step-N`.
pub fn prune_checkpoints(
    ckpt_root: &Path,
    keep_last: usize,
    best_step: Option<u64>,
) -> Result<Vec<PathBuf>> {
    let mut kept = 0usize;
    let mut removed = Vec::new();
    for (step, dir) in list_checkpoints(ckpt_root)?.into_iter().rev() {
        if !looks_complete(&dir) {
            continue;
        }
        if kept < keep_last.max(1) {
            kept += 1;
            continue;
        }
        if Some(step) == best_step {
            continue;
        }
        let doomed = ckpt_root.join(format!(".step-{step}.del-{}", std::process::id()));
        std::fs::rename(&dir, &doomed).map_err(|e| CheckpointError::io(&dir, e))?;
        remove_dir(&doomed)?;
        removed.push(dir);
    }
    Ok(removed)
}

/// Removes leftover staging folders (`.step-N.tmp-<pid>`, and the `.old-`/`.del-` folders
/// of interrupted replacements and prunes) left by processes that are gone. Folders of
/// this process, and (where `/proc` exists) of live processes, are kept: they may be a
/// save in progress. Returns the folders removed.
pub fn clean_staging(ckpt_root: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(ckpt_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CheckpointError::io(ckpt_root, e)),
    };
    let me = std::process::id();
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| CheckpointError::io(ckpt_root, e))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(staging_pid) else {
            continue;
        };
        let alive = pid == me || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && entry.path().is_dir() {
            remove_dir(&entry.path())?;
            removed.push(entry.path());
        }
    }
    Ok(removed)
}

/// The pid in `.step-N.{tmp,old,del}-<pid>`.
fn staging_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(".step-")?;
    let (step, tail) = rest.split_once('.')?;
    parse_step_dir_name(&format!("step-{step}"))?;
    let pid = ["tmp-", "old-", "del-"]
        .iter()
        .find_map(|p| tail.strip_prefix(p))?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests;
