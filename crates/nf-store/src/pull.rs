//! `models pull`: a revision of a hub repository into the store.
//!
//! It asks the hub for the revision's commit, lists the commit's files
//! (`/api/models/REPO/tree/COMMIT`), and downloads each from `/REPO/resolve/COMMIT/FILE`
//! into a staging folder `models/.pull-<name>/`, as `FILE.partial`. An interrupted download
//! resumes from the partial file with `Range: bytes=N-` and `If-Range: <etag>` (a `200`
//! instead of `206` starts over). A finished file is checked against its size and, for LFS
//! files, the sha256 the tree listing gives (`lfs.oid`, else the `X-Linked-Etag`); a
//! mismatch deletes the partial file and fails, so nothing unverified is installed. Only
//! when every file is complete is `model.json` written and the staging folder renamed into
//! place.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nf_model::ModelFormat;
use nf_protocol::ErrorCode;

use crate::hub::{Hub, RemoteFile, content_range_start, escapes_folder, percent};
use crate::store::{StoredFile, StoredModel, install, model_dir, models_dir, refuse_existing};
use crate::{Result, fail, io_context};

/// `*` matches any run of characters (including `/`), `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The files a model needs when no `--include` is given.
const DEFAULT_INCLUDE: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "*.safetensors",
    "model.safetensors.index.json",
];

/// What `models pull` downloads.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `OWNER/NAME`.
    pub repo: String,
    /// A branch, tag or commit.
    pub revision: String,
    /// Glob patterns of the files to fetch (default: what a model needs).
    pub include: Vec<String>,
    /// The hub's base URL (default `https://huggingface.co`).
    pub endpoint: Option<String>,
    /// The name in the store (default: the repository's name).
    pub name: Option<String>,
    /// Replace a stored model of this name.
    pub force: bool,
    /// The longest wait for the next bytes of a file before the pull gives up.
    pub stall_timeout: Duration,
}

/// The hub's default address.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// How far a pull is, reported about five times a second per file and at each file's
/// start and end.
#[derive(Debug, Clone, Copy)]
pub struct PullProgress<'a> {
    /// The file, relative to the model's folder.
    pub file: &'a str,
    /// Bytes of the file downloaded so far (a resumed file counts what it had).
    pub done: u64,
    /// The file's size, when the hub says.
    pub total: Option<u64>,
    /// Whether this is the file's last report (it downloaded or failed).
    pub finished: bool,
}

/// A model just pulled into the store.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Its `model.json`.
    pub model: StoredModel,
    /// Its folder in the store.
    pub dir: PathBuf,
}

/// Downloads `a.repo` at `a.revision` into the store. `progress` hears about each file's
/// bytes as they arrive.
pub fn pull(
    home: &Path,
    a: &PullOptions,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<Pulled> {
    let repo = a.repo.trim_matches('/');
    if repo.is_empty() || repo.split('/').count() > 2 || repo.contains("..") {
        return Err(fail(
            ErrorCode::BadInput,
            format!("`{}` is not a repository name", a.repo),
            "use OWNER/NAME, e.g. HuggingFaceTB/SmolLM2-135M-Instruct",
        ));
    }
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| repo.rsplit('/').next().unwrap_or(repo).to_string());
    let final_dir = model_dir(home, &name)?;
    refuse_existing(&final_dir, &name, a.force)?;
    let endpoint = a
        .endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let hub = Hub::new(&endpoint, a.stall_timeout);
    let e = &hub.endpoint;
    let info = hub.get_json(
        &format!("{e}/api/models/{repo}/revision/{}", a.revision),
        &format!("{repo}@{}", a.revision),
    )?;
    let commit = info["sha"].as_str().unwrap_or(&a.revision).to_string();
    let tree = hub.get_json(
        &format!("{e}/api/models/{repo}/tree/{commit}?recursive=true"),
        &format!("{repo}@{commit} file list"),
    )?;
    let mut all: Vec<RemoteFile> = tree
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["type"] == "file")
        .filter_map(|f| {
            Some(RemoteFile {
                path: f["path"].as_str()?.to_string(),
                size: f["lfs"]["size"].as_u64().or(f["size"].as_u64()),
                sha256: f["lfs"]["oid"].as_str().map(str::to_string),
            })
        })
        .collect();
    if all.is_empty() {
        // Older mirrors: the revision's sibling list.
        all = info["siblings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                Some(RemoteFile {
                    path: s["rfilename"].as_str()?.to_string(),
                    size: s["lfs"]["size"].as_u64().or(s["size"].as_u64()),
                    sha256: s["lfs"]["sha256"].as_str().map(str::to_string),
                })
            })
            .collect();
    }
    let patterns: Vec<String> = if a.include.is_empty() {
        DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect()
    } else {
        a.include.clone()
    };
    if let Some(bad) = all.iter().find(|f| escapes_folder(&f.path)) {
        return Err(fail(
            ErrorCode::BadInput,
            format!(
                "{repo}@{commit}: the hub lists the path {:?}, which would land outside the model's folder",
                bad.path
            ),
            "this hub or mirror is not trustworthy; nothing was downloaded",
        ));
    }
    let files: Vec<RemoteFile> = all
        .iter()
        .filter(|f| patterns.iter().any(|p| glob_match(p, &f.path)))
        // Hidden files (.gitattributes) are the repository's, not the model's.
        .filter(|f| !f.path.split('/').any(|c| c.starts_with('.')))
        .cloned()
        .collect();
    if files.is_empty() {
        let names: Vec<&str> = all.iter().map(|f| f.path.as_str()).take(12).collect();
        return Err(fail(
            ErrorCode::NotFound,
            format!("{repo}@{commit}: no files match {}", patterns.join(" ")),
            format!(
                "pick files with --include PATTERN; the repository has: {}",
                names.join(" ")
            ),
        ));
    }
    let root = models_dir(home);
    std::fs::create_dir_all(&root)
        .map_err(io_context(|| format!("creating {}", root.display())))?;
    // The staging folder is kept between attempts so partial files resume. A lock beside
    // it (not inside: the folder is renamed into place) keeps a second pull of the same
    // name from writing the same partial files; the OS drops it if this process dies.
    let staging = root.join(format!(".pull-{name}"));
    let lock_path = root.join(format!(".pull-{name}.lock"));
    let lock = std::fs::File::create(&lock_path)
        .map_err(io_context(|| format!("creating {}", lock_path.display())))?;
    if let Err(e) = lock.try_lock() {
        return Err(match e {
            std::fs::TryLockError::WouldBlock => fail(
                ErrorCode::Busy,
                format!("another `models pull` of {name} is running"),
                "wait for it to finish; it installs the same files",
            ),
            std::fs::TryLockError::Error(e) => {
                io_context(|| format!("locking {}", lock_path.display()))(e)
            }
        });
    }
    std::fs::create_dir_all(&staging)
        .map_err(io_context(|| format!("creating {}", staging.display())))?;
    let mut stored = Vec::new();
    for f in &files {
        let dest = staging.join(&f.path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io_context(|| format!("creating {}", parent.display())))?;
        }
        let sha256 = download(&hub, repo, &commit, f, &dest, progress)?;
        let size = std::fs::metadata(&dest)
            .map_err(io_context(|| format!("reading {}", dest.display())))?
            .len();
        stored.push(StoredFile {
            path: f.path.clone(),
            size,
            sha256,
        });
    }
    let format = model_format(&staging, &stored);
    let mut m = StoredModel::new(&name, &format, format!("hf://{repo}@{commit}"), stored);
    m.repo = Some(repo.to_string());
    m.revision = Some(a.revision.clone());
    m.commit = Some(commit.clone());
    m.endpoint = Some(hub.endpoint.clone());
    let keep: BTreeSet<PathBuf> = m.files.iter().map(|f| PathBuf::from(&f.path)).collect();
    remove_strays(&staging, Path::new(""), &keep)?;
    install(&staging, &final_dir, &m)?;
    Ok(Pulled {
        model: m,
        dir: final_dir,
    })
}

/// The format of a pulled folder: a model folder, else the single .gguf or .bin among its
/// files, else `unknown` (the files are kept; loading them will say what is wrong).
fn model_format(staging: &Path, stored: &[StoredFile]) -> String {
    if let Ok(f) = ModelFormat::detect(staging) {
        return f.name().to_string();
    }
    stored
        .iter()
        .find(|f| {
            f.path.ends_with(".gguf") || (f.path.ends_with(".bin") && f.path != "tokenizer.bin")
        })
        .and_then(|f| ModelFormat::detect(&staging.join(&f.path)).ok())
        .map_or_else(|| "unknown".into(), |f| f.name().to_string())
}

/// Removes from a pull's staging folder every file that is not one of `keep` (paths relative
/// to it), and folders left empty. The folder is kept between attempts so downloads resume,
/// so it can hold what an interrupted attempt left (a temporary `model.json`, partial files
/// of another `--include`), none of which belongs in the model about to be installed.
fn remove_strays(dir: &Path, rel: &Path, keep: &BTreeSet<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(io_context(|| format!("reading {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_context(|| format!("reading {}", dir.display())))?;
        let (path, rel) = (entry.path(), rel.join(entry.file_name()));
        let reading = || format!("reading {}", path.display());
        let removed = if entry.file_type().map_err(io_context(reading))?.is_dir() {
            remove_strays(&path, &rel, keep)?;
            match std::fs::read_dir(&path)
                .map_err(io_context(reading))?
                .next()
            {
                None => std::fs::remove_dir(&path),
                Some(_) => Ok(()),
            }
        } else if keep.contains(&rel) {
            Ok(())
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io_context(|| format!("removing {}", path.display())))?;
    }
    Ok(())
}

/// Downloads one file to `dest` via `dest.partial` (resuming it), verifies it, and returns
/// its sha256. A file already complete in the staging folder is verified, not fetched.
fn download(
    hub: &Hub,
    repo: &str,
    commit: &str,
    f: &RemoteFile,
    dest: &Path,
    progress: &mut dyn FnMut(PullProgress),
) -> Result<String> {
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    let etag_file = PathBuf::from(format!("{}.partial.etag", dest.display()));
    if dest.is_file() {
        let sha = nf_protocol::sha256_file(dest)
            .map_err(io_context(|| format!("reading {}", dest.display())))?;
        let size_ok = f
            .size
            .is_none_or(|s| std::fs::metadata(dest).map(|m| m.len()).ok() == Some(s));
        if size_ok && f.sha256.as_ref().is_none_or(|h| *h == sha) {
            return Ok(sha);
        }
        std::fs::remove_file(dest)
            .map_err(io_context(|| format!("removing {}", dest.display())))?;
    }
    let url = format!(
        "{}/{repo}/resolve/{commit}/{}",
        hub.endpoint,
        f.path.split('/').map(percent).collect::<Vec<_>>().join("/")
    );
    let have = std::fs::metadata(&partial).map_or(0, |m| m.len());
    let etag = std::fs::read_to_string(&etag_file).ok();
    let mut headers = Vec::new();
    if have > 0 {
        headers.push(("Range", format!("bytes={have}-")));
        if let Some(e) = &etag {
            headers.push(("If-Range", format!("\"{}\"", e.trim())));
        }
    }
    let fetched = hub.get(&url, &headers)?;
    let resume = match fetched.status {
        206 => {
            // The part must start where the partial file ends, or appending it would splice
            // the wrong bytes in (the checksum would then fail, after the whole download).
            let range = fetched
                .response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if content_range_start(range.as_deref()) != Some(have) {
                if have == 0 {
                    return Err(fail(
                        ErrorCode::Network,
                        format!(
                            "{url}: a partial answer ({}) to a whole-file request",
                            range.as_deref().unwrap_or("no Content-Range")
                        ),
                        "the server is not a Hugging Face hub; check --endpoint",
                    ));
                }
                let _ = std::fs::remove_file(&partial);
                return download(hub, repo, commit, f, dest, progress);
            }
            true
        }
        200 => false,
        416 if have > 0 => {
            // The partial file is already whole (or the server disagrees): start over once.
            let _ = std::fs::remove_file(&partial);
            return download(hub, repo, commit, f, dest, progress);
        }
        404 => {
            return Err(fail(
                ErrorCode::NotFound,
                format!("{}: not found (HTTP 404)", f.path),
                "the file list and the files disagree; try another --revision",
            ));
        }
        s => {
            return Err(fail(
                ErrorCode::Network,
                format!("{url}: HTTP {s}"),
                "try again later; the download resumes where it stopped",
            ));
        }
    };
    let expected = f.sha256.clone().or_else(|| {
        fetched
            .linked_etag
            .clone()
            .filter(|e| e.len() == 64 && e.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    let header = |n: &str| {
        fetched
            .response
            .headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let new_etag = fetched.linked_etag.clone().or_else(|| {
        header("etag").map(|v| v.trim_start_matches("W/").trim_matches('"').to_string())
    });
    let len: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let total = f.size.or(len.map(|l| if resume { l + have } else { l }));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resume)
        .truncate(!resume)
        .open(&partial)
        .map_err(io_context(|| format!("opening {}", partial.display())))?;
    if let Some(e) = &new_etag {
        let _ = std::fs::write(&etag_file, e);
    }
    let mut done = if resume { have } else { 0 };
    let body = fetched.response.into_body().into_reader();
    let mut reader = crate::stall::StallGuard::new(body, hub.stall).map_err(io_context(|| {
        "starting the download's reader thread".to_string()
    }))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut last = Instant::now();
    let mut report = |done: u64, finished: bool| {
        progress(PullProgress {
            file: &f.path,
            done,
            total,
            finished,
        })
    };
    report(done, false);
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = file.sync_all();
                report(done, true);
                return Err(fail(
                    ErrorCode::Network,
                    format!(
                        "{}: the download broke off after {} ({e})",
                        f.path,
                        nf_protocol::human_bytes(done)
                    ),
                    "run the same command again: it resumes from the partial file",
                ));
            }
        };
        file.write_all(&buf[..n])
            .map_err(io_context(|| format!("writing {}", partial.display())))?;
        done += n as u64;
        if last.elapsed() >= Duration::from_millis(200) {
            last = Instant::now();
            report(done, false);
        }
    }
    file.sync_all()
        .map_err(io_context(|| format!("writing {}", partial.display())))?;
    drop(file);
    report(done, true);
    if let Some(t) = total.filter(|t| *t != done) {
        return Err(fail(
            ErrorCode::Network,
            format!("{}: got {done} of {t} bytes", f.path),
            "run the same command again: it resumes from the partial file",
        ));
    }
    let sha = nf_protocol::sha256_file(&partial)
        .map_err(io_context(|| format!("reading {}", partial.display())))?;
    if let Some(want) = &expected
        && *want != sha
    {
        let _ = std::fs::remove_file(&partial);
        let _ = std::fs::remove_file(&etag_file);
        return Err(fail(
            ErrorCode::Checksum,
            format!(
                "{}: sha256 {sha} does not match the hub's {want}; the file was not installed",
                f.path
            ),
            "run the command again to download it afresh; if it keeps failing, the mirror serves a wrong file",
        ));
    }
    std::fs::rename(&partial, dest)
        .map_err(io_context(|| format!("renaming into {}", dest.display())))?;
    let _ = std::fs::remove_file(&etag_file);
    Ok(sha)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "*.safetensors",
            "model-00001-of-00002.safetensors"
        ));
        assert!(glob_match("config.json", "config.json"));
        assert!(!glob_match("config.json", "xconfig.json"));
        assert!(glob_match("*q4_0*", "smol-q4_0.gguf"));
        assert!(glob_match("tok?n.bin", "token.bin"));
        assert!(!glob_match("*.gguf", "model.bin"));
        assert!(glob_match("*", "a/b"));
    }
}
