//! SHA-256 of a file as the trainer reports it: `nf_protocol::sha256_file` with the path in
//! the error.

use std::path::Path;

use crate::error::{Result, TrainError};

/// The SHA-256 of the file at `path`, read in blocks (a multi-gigabyte file is never held
/// in memory). An IO error names the file.
pub fn sha256_file(path: &Path) -> Result<String> {
    nf_protocol::sha256_file(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum() {
        // printf 'abc' | sha256sum
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(nf_protocol::sha256_hex(b"abc"), abc);
        let d = nf_testkit::temp_dir("hash");
        let p = d.join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), abc);
        // Larger than one read block.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        std::fs::write(&p, &big).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), nf_protocol::sha256_hex(&big));
        let e = sha256_file(&d.join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
