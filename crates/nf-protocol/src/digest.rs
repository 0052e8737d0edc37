//! The one SHA-256 helper: content hashes appear in events, manifests, run folders and the
//! audit log as lowercase hex, the way `sha256sum` prints them.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// The SHA-256 of the file at `path`, read in 1 MiB blocks (a multi-gigabyte file is never
/// held in memory). Callers attach the path to the error in their own error type.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum() {
        // printf 'abc' | sha256sum
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), abc);
        let d = std::env::temp_dir().join(format!("nf-digest-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), abc);
        // Larger than one read block.
        let big: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        std::fs::write(&p, &big).unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(&big));
        assert!(sha256_file(&d.join("missing")).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
