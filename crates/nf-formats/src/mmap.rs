//! Read-only memory maps of model files.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::error::{FormatError, Result};

/// Maps `path` read-only. An empty file maps to an empty slice (mmap of length 0 is an error
/// on Linux, and an empty model file deserves a format error, not an OS error).
pub fn map_file(path: &Path) -> Result<MappedFile> {
    let file = File::open(path).map_err(|e| FormatError::io(path, e))?;
    let len = file.metadata().map_err(|e| FormatError::io(path, e))?.len();
    if len == 0 {
        return Ok(MappedFile { map: None });
    }
    // SAFETY: the map is read-only. If another process truncates the file while we hold the
    // map, reads fault; that is the accepted contract of every mmap-based model loader
    // (llama.cpp, safetensors) and model files are not edited in place.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| FormatError::io(path, e))?;
    Ok(MappedFile { map: Some(map) })
}

/// A read-only memory-mapped file, possibly empty.
pub struct MappedFile {
    map: Option<Mmap>,
}

impl MappedFile {
    /// The file's bytes (empty for an empty file, which cannot be mapped).
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }
}

impl std::fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedFile({} bytes)", self.bytes().len())
    }
}
