//! Content hashes of token data, stored in checkpoints so a resume on other data is caught.

use sha2::{Digest, Sha256};

/// The SHA-256 of the ids as little-endian `u32` bytes, in lowercase hex. Equal to
/// `sha256sum` of the ids written as raw `u32` LE, whatever width a shard stores them in.
pub fn tokens_hash(tokens: &[u32]) -> String {
    let mut h = Sha256::new();
    let mut buf = [0u8; 4 * 1024];
    for block in tokens.chunks(buf.len() / 4) {
        for (b, id) in buf.chunks_exact_mut(4).zip(block) {
            b.copy_from_slice(&id.to_le_bytes());
        }
        h.update(&buf[..4 * block.len()]);
    }
    nf_protocol::digest::hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // sha256 of no bytes, and of 01 00 00 00 02 00 00 00 (printf | sha256sum).
        assert_eq!(
            tokens_hash(&[]),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            tokens_hash(&[1, 2]),
            "34fb5c825de7ca4aea6e712f19d439c1da0c92c37b423936c5f618545ca4fa1f"
        );
        assert_ne!(tokens_hash(&[1, 2]), tokens_hash(&[2, 1]));
        let long: Vec<u32> = (0..5000).collect();
        let bytes: Vec<u8> = long.iter().flat_map(|x| x.to_le_bytes()).collect();
        let direct: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(tokens_hash(&long), direct);
    }
}
