//! `train.lock`: one training process per run folder.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nf_protocol::{ErrorCode, Event, EventWriter, Failure};

use super::{EVENTS_FILE, LOCK_FILE};
use crate::{Result, TrainError};

/// The exclusive lock on a run folder's `train.lock`, held (by keeping the file open)
/// until the process exits, so two processes never train one run at once.
///
/// The file holds the training process's pid (decimal text and a newline). To tell whether
/// a run is live, open the file read-only and try `try_lock_shared`: `WouldBlock` means it
/// is running. The file stays behind when the run ends, so its pid alone proves nothing.
#[derive(Debug)]
pub struct RunLock {
    dir: PathBuf,
    _file: File,
}

impl RunLock {
    /// Takes the lock of the run in `dir`, failing with code `running` when another process
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let io = |source| TrainError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: while another process holds the lock, its pid is what
        // the error below reports.
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let pid = std::fs::read_to_string(&path).unwrap_or_default();
                let pid = match pid.trim() {
                    "" => "unknown".to_string(),
                    p => p.to_string(),
                };
                return Err(TrainError::Failure(Failure::new(
                    ErrorCode::Running,
                    format!(
                        "{} is being trained by another process (pid {pid})",
                        dir.display()
                    ),
                    "wait for it to finish, or stop it first",
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .and_then(|()| file.flush())
            .map_err(io)?;
        Ok(RunLock {
            dir: dir.to_path_buf(),
            _file: file,
        })
    }

    /// Appends `event` (the failure's `error` event) to the run's `events.ndjson`. Best
    /// effort: the error itself still reaches the user, which matters more.
    pub fn record_failure(&self, event: Event) {
        if let Ok(mut events) = open_events(&self.dir) {
            let _ = events.emit(event);
        }
    }
}

/// The run folder's `events.ndjson`, opened for appending (a resume continues it).
pub fn open_events(run_dir: &Path) -> Result<EventWriter<File>> {
    let path = run_dir.join(EVENTS_FILE);
    let file = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| TrainError::Io { path, source })?;
    Ok(EventWriter::new(file))
}
