//! Token shards (`.bin`): a flat array of token ids behind a small header, written by
//! `neuralforge ingest` (`datasets/<name>/train.bin`, `val.bin`) and read by the trainer.
//!
//! Layout, all little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `NFTK` |
//! | 4 | 4 | `u32` version, 1 |
//! | 8 | 4 | `u32` bytes per id: 2 (`u16` ids) or 4 (`u32` ids) |
//! | 12 | 4 | `u32` reserved, 0 |
//! | 16 | 8 | `u64` count of ids |
//! | 24 | count × bytes per id | the ids |
//!
//! The file length must be exactly `24 + count × bytes_per_id`: a shard cut short by a full
//! disk, or with bytes appended, is reported rather than read as fewer or more tokens. Ids
//! are `u16` whenever the vocabulary fits (Llama 2 and SmolLM do), halving the file and
//! the page cache it occupies; Llama 3's 128K vocabulary needs `u32`.

use std::io::Write;
use std::path::{Path, PathBuf};

use nf_formats::mmap::{MappedFile, map_file};

use super::error::{DatasetError, Result};

/// The first four bytes of every token shard.
pub const SHARD_MAGIC: [u8; 4] = *b"NFTK";
/// The shard format version this code writes and reads.
pub const SHARD_VERSION: u32 = 1;
/// Bytes before the first id.
pub const SHARD_HEADER_LEN: usize = 24;

/// Writes `ids` to a token shard at `path`, atomically (a temporary file in the same
/// folder, fsynced, renamed over `path`), so a failed write never replaces a good shard.
///
/// Ids are stored as `u16` when `vocab_size <= 65536`, else as `u32`. Every id must be
/// below `vocab_size`; one that is not is an error ([`DatasetError::IdOutOfVocab`]) rather
/// than a silently truncated `u16`.
pub fn write_shard(path: &Path, ids: &[u32], vocab_size: usize) -> Result<()> {
    if let Some((position, &id)) = ids
        .iter()
        .enumerate()
        .find(|&(_, &id)| id as usize >= vocab_size)
    {
        return Err(DatasetError::IdOutOfVocab {
            path: path.to_path_buf(),
            id,
            position,
            vocab_size,
        });
    }
    let bpi: u32 = if vocab_size <= 1 << 16 { 2 } else { 4 };
    nf_formats::atomic::write_atomic(path, |w| {
        w.write_all(&SHARD_MAGIC)?;
        w.write_all(&SHARD_VERSION.to_le_bytes())?;
        w.write_all(&bpi.to_le_bytes())?;
        w.write_all(&0u32.to_le_bytes())?;
        w.write_all(&(ids.len() as u64).to_le_bytes())?;
        // Encode in blocks: one write call per id would dominate the time for big shards.
        let mut buf = Vec::with_capacity(8192 * bpi as usize);
        for block in ids.chunks(8192) {
            buf.clear();
            if bpi == 2 {
                buf.extend(block.iter().flat_map(|&id| (id as u16).to_le_bytes()));
            } else {
                buf.extend(block.iter().flat_map(|&id| id.to_le_bytes()));
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// A memory-mapped, validated token shard. Opening checks the header and the exact file
/// length; reading ids is then infallible.
pub struct TokenShard {
    path: PathBuf,
    map: MappedFile,
    bytes_per_id: usize,
    len: usize,
}

impl std::fmt::Debug for TokenShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenShard")
            .field("path", &self.path)
            .field("bytes_per_id", &self.bytes_per_id)
            .field("len", &self.len)
            .finish()
    }
}

impl TokenShard {
    /// Maps and validates the shard at `path`: magic, version, id width, and that the file
    /// length is exactly what the header's count implies.
    pub fn open(path: impl AsRef<Path>) -> Result<TokenShard> {
        let path = path.as_ref();
        let map = map_file(path)?;
        let (bytes_per_id, len) = parse_header(path, map.bytes())?;
        Ok(TokenShard {
            path: path.to_path_buf(),
            map,
            bytes_per_id,
            len,
        })
    }

    /// The file this shard was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of token ids.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the shard holds no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// 2 (`u16` ids) or 4 (`u32` ids).
    pub fn bytes_per_id(&self) -> usize {
        self.bytes_per_id
    }

    fn data(&self) -> &[u8] {
        &self.map.bytes()[SHARD_HEADER_LEN..]
    }

    /// The id at position `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn get(&self, i: usize) -> u32 {
        assert!(
            i < self.len,
            "token {i} out of range (shard has {})",
            self.len
        );
        let d = self.data();
        let b = self.bytes_per_id;
        if b == 2 {
            u16::from_le_bytes([d[2 * i], d[2 * i + 1]]) as u32
        } else {
            u32::from_le_bytes(d[4 * i..4 * i + 4].try_into().expect("4 bytes"))
        }
    }

    /// Copies the ids `start..start + out.len()` into `out`.
    ///
    /// # Panics
    /// If the window reaches past the end of the shard.
    pub fn read_window(&self, start: usize, out: &mut [u32]) {
        let end = start.checked_add(out.len()).filter(|&e| e <= self.len);
        assert!(
            end.is_some(),
            "window {start}..+{} out of range (shard has {})",
            out.len(),
            self.len
        );
        let b = self.bytes_per_id;
        let bytes = &self.data()[start * b..(start + out.len()) * b];
        if b == 2 {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = u16::from_le_bytes([c[0], c[1]]) as u32;
            }
        } else {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }

    /// All ids, copied out.
    pub fn to_vec(&self) -> Vec<u32> {
        let mut out = vec![0; self.len];
        self.read_window(0, &mut out);
        out
    }

    /// Checks that every id is below `vocab_size`. A shard made with another tokenizer
    /// would otherwise index past the embedding table, or silently train on wrong tokens.
    pub fn check_vocab(&self, vocab_size: usize) -> Result<()> {
        if self.bytes_per_id == 2 && vocab_size > u16::MAX as usize {
            return Ok(()); // every u16 id fits
        }
        let mut buf = vec![0u32; 1 << 16];
        let mut start = 0;
        while start < self.len {
            let n = buf.len().min(self.len - start);
            self.read_window(start, &mut buf[..n]);
            if let Some(k) = buf[..n].iter().position(|&id| id as usize >= vocab_size) {
                return Err(DatasetError::IdOutOfVocab {
                    path: self.path.clone(),
                    id: buf[k],
                    position: start + k,
                    vocab_size,
                });
            }
            start += n;
        }
        Ok(())
    }
}

/// Validates the header against the file length; returns (bytes per id, count).
fn parse_header(path: &Path, bytes: &[u8]) -> Result<(usize, usize)> {
    let not_a_shard = |reason: String| DatasetError::NotAShard {
        path: path.to_path_buf(),
        reason,
    };
    let corrupt = |reason: String| DatasetError::CorruptShard {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(not_a_shard("the file is empty".into()));
    }
    if bytes.len() < 4 || bytes[..4] != SHARD_MAGIC {
        let n = bytes.len().min(4);
        return Err(not_a_shard(format!(
            "starts with {:?}, expected {:?}",
            String::from_utf8_lossy(&bytes[..n]),
            "NFTK"
        )));
    }
    if bytes.len() < SHARD_HEADER_LEN {
        return Err(corrupt(format!(
            "truncated header: {} bytes, expected {SHARD_HEADER_LEN}",
            bytes.len()
        )));
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let version = u32_at(4);
    if version != SHARD_VERSION {
        return Err(corrupt(format!(
            "version {version}; this build reads version {SHARD_VERSION}"
        )));
    }
    let bpi = u32_at(8);
    if bpi != 2 && bpi != 4 {
        return Err(corrupt(format!("{bpi} bytes per id; expected 2 or 4")));
    }
    let count = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    let data_len = (bytes.len() - SHARD_HEADER_LEN) as u64;
    let expected = count.checked_mul(bpi as u64);
    if expected != Some(data_len) {
        let why = if expected.is_none_or(|e| e > data_len) {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err(corrupt(format!(
            "{why}: the header says {count} ids of {bpi} bytes, but the file holds {data_len} \
             bytes after the header"
        )));
    }
    // `count * bpi` equals a length that fits in memory, so it fits in usize.
    Ok((bpi as usize, count as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        nf_testkit::temp_dir("shard")
    }

    fn header(bpi: u32, count: u64) -> Vec<u8> {
        let mut h = b"NFTK".to_vec();
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&bpi.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&count.to_le_bytes());
        h
    }

    #[test]
    fn round_trip_u16() {
        let p = dir().join("train.bin");
        let ids: Vec<u32> = (0..20_000u32).map(|i| (i * 7) % 32000).collect();
        write_shard(&p, &ids, 32000).unwrap();
        let len = std::fs::metadata(&p).unwrap().len();
        assert_eq!(len, 24 + 2 * ids.len() as u64);
        let s = TokenShard::open(&p).unwrap();
        assert_eq!(s.bytes_per_id(), 2);
        assert_eq!(s.len(), ids.len());
        assert_eq!(s.to_vec(), ids);
        assert_eq!(s.get(3), 21);
        let mut w = [0u32; 5];
        s.read_window(10, &mut w);
        assert_eq!(w, ids[10..15]);
        s.check_vocab(32000).unwrap();
    }

    #[test]
    fn round_trip_u32_at_the_u16_boundary() {
        let d = dir();
        // 65536 ids still fit in u16 (max id 65535).
        let p = d.join("a.bin");
        write_shard(&p, &[0, 65535], 65536).unwrap();
        let s = TokenShard::open(&p).unwrap();
        assert_eq!((s.bytes_per_id(), s.to_vec()), (2, vec![0, 65535]));

        let p = d.join("b.bin");
        let ids = vec![128_000, 1, 65536, 128_255];
        write_shard(&p, &ids, 128_256).unwrap();
        let s = TokenShard::open(&p).unwrap();
        assert_eq!(s.bytes_per_id(), 4);
        assert_eq!(s.to_vec(), ids);
        assert_eq!(s.get(2), 65536);
    }

    #[test]
    fn empty_shard_is_valid() {
        let p = dir().join("e.bin");
        write_shard(&p, &[], 100).unwrap();
        let s = TokenShard::open(&p).unwrap();
        assert!(s.is_empty());
        assert!(s.to_vec().is_empty());
    }

    #[test]
    fn writer_rejects_ids_outside_the_vocabulary() {
        let p = dir().join("x.bin");
        let e = write_shard(&p, &[1, 2, 300], 256).unwrap_err();
        assert!(matches!(
            e,
            DatasetError::IdOutOfVocab {
                id: 300,
                position: 2,
                ..
            }
        ));
        assert!(!p.exists());
    }

    #[test]
    fn check_vocab_names_the_file_and_position() {
        let p = dir().join("big.bin");
        write_shard(&p, &[5, 40_000, 7], 50_000).unwrap();
        let e = TokenShard::open(&p)
            .unwrap()
            .check_vocab(32_000)
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(
            e,
            DatasetError::IdOutOfVocab {
                id: 40_000,
                position: 1,
                ..
            }
        ));
        assert!(
            msg.contains("big.bin") && msg.contains("another tokenizer"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_and_oversized_files_are_corrupt() {
        let d = dir();
        let p = d.join("t.bin");
        write_shard(&p, &[1, 2, 3, 4], 10).unwrap();
        let full = std::fs::read(&p).unwrap();

        std::fs::write(&p, &full[..full.len() - 1]).unwrap();
        let e = TokenShard::open(&p).unwrap_err();
        assert!(matches!(e, DatasetError::CorruptShard { .. }), "{e}");
        assert!(e.to_string().contains("t.bin") && e.to_string().contains("truncated"));

        let mut more = full.clone();
        more.extend_from_slice(&[0, 0]);
        std::fs::write(&p, &more).unwrap();
        let e = TokenShard::open(&p).unwrap_err();
        assert!(e.to_string().contains("trailing bytes"), "{e}");

        std::fs::write(&p, &full[..10]).unwrap();
        let e = TokenShard::open(&p).unwrap_err();
        assert!(e.to_string().contains("truncated header"), "{e}");
    }

    #[test]
    fn wrong_magic_and_empty_file_are_not_shards() {
        let d = dir();
        let p = d.join("m.bin");
        let mut bytes = header(2, 0);
        bytes[..4].copy_from_slice(b"ak42");
        std::fs::write(&p, &bytes).unwrap();
        let e = TokenShard::open(&p).unwrap_err();
        assert!(matches!(e, DatasetError::NotAShard { .. }), "{e}");

        std::fs::write(&p, b"").unwrap();
        let e = TokenShard::open(&p).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");

        let e = TokenShard::open(d.join("missing.bin")).unwrap_err();
        assert!(e.to_string().contains("missing.bin"), "{e}");
    }

    #[test]
    fn absurd_count_bad_version_and_width() {
        let d = dir();
        let p = d.join("a.bin");
        for count in [u64::MAX, u64::MAX / 2, 1 << 40] {
            std::fs::write(&p, header(4, count)).unwrap();
            let e = TokenShard::open(&p).unwrap_err();
            assert!(matches!(e, DatasetError::CorruptShard { .. }), "{e}");
        }
        let mut h = header(3, 0);
        std::fs::write(&p, &h).unwrap();
        assert!(
            TokenShard::open(&p)
                .unwrap_err()
                .to_string()
                .contains("bytes per id")
        );
        h = header(2, 0);
        h[4] = 9;
        std::fs::write(&p, &h).unwrap();
        assert!(
            TokenShard::open(&p)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
    }
}
