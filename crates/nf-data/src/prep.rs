//! From a run's data paths to the token arrays the trainer takes: the tokens, the loss
//! mask and the example starts of the training and validation splits, and the data's
//! identity hash.
//!
//! `ingest` writes two sidecar shards beside a dataset's `train.bin` / `val.bin`: `.mask`
//! (one entry per token, 1 = train on it; chat and completion data mask the prompt) and
//! `.starts` (the offset of each window or example). Plain sources have neither: every
//! token trains, and a text file is one example.

use std::path::{Path, PathBuf};

use nf_tokenizer::Tokenizer;

use crate::{DatasetError, Result, TokenShard, TokenStream, split_train_val, tokens_hash};

/// One split's tokens with their loss mask and example starts, where they apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// The token ids.
    pub tokens: Vec<u32>,
    /// 1 = train on this token; `None` when every token trains.
    pub mask: Option<Vec<u8>>,
    /// Where each example begins; `None` when examples may attend to each other.
    pub starts: Option<Vec<u64>>,
}

impl Split {
    /// The data's identity: its tokens, and the loss mask and example starts where they
    /// apply, since either changes the training as surely as changed tokens. Tokens alone
    /// keep their plain hash ([`tokens_hash`]), as runs on plain token data always recorded.
    pub fn hash(&self) -> String {
        let mut parts = vec![tokens_hash(&self.tokens)];
        if let Some(m) = &self.mask {
            parts.push(nf_protocol::sha256_hex(m));
        }
        if let Some(s) = &self.starts {
            let bytes: Vec<u8> = s.iter().flat_map(|x| x.to_le_bytes()).collect();
            parts.push(nf_protocol::sha256_hex(&bytes));
        }
        match parts.as_slice() {
            [only] => only.clone(),
            _ => nf_protocol::sha256_hex(parts.concat().as_bytes()),
        }
    }

    fn of(stream: TokenStream, isolate_examples: bool) -> Result<Split> {
        let mask = loss_mask(&stream)?;
        let starts = isolate_examples
            .then(|| example_starts(&stream))
            .transpose()?;
        Ok(Split {
            tokens: stream.into_tokens(),
            mask,
            starts,
        })
    }

    /// Holds out the tail as validation ([`split_train_val`]); the mask and the example
    /// starts split at the same place.
    fn split(self, val_fraction: f32) -> (Split, Split) {
        let (train, val) = split_train_val(self.tokens, val_fraction);
        let (mask, val_mask) = match self.mask {
            Some(mut m) => {
                let vm = m.split_off(train.len());
                (Some(m), Some(vm))
            }
            None => (None, None),
        };
        let (starts, val_starts) = match self.starts {
            Some(s) => {
                let (ts, vs) = split_starts(s, train.len() as u64);
                (Some(ts), Some(vs))
            }
            None => (None, None),
        };
        let val = Split {
            tokens: val,
            mask: val_mask,
            starts: val_starts,
        };
        let train = Split {
            tokens: train,
            mask,
            starts,
        };
        (train, val)
    }
}

/// A run's data, loaded and split.
#[derive(Debug, Clone, Default)]
pub struct RunData {
    /// The training split.
    pub train: Split,
    /// Empty when the data gave no validation tokens.
    pub val: Split,
    /// What the token streams warned about (skipped files, replaced bytes), for the user.
    pub warnings: Vec<String>,
}

/// Loads `train_paths` (token shards and text files) and splits off the tail as
/// validation by `val_fraction`, or, when `val_paths` is not empty, validates on those.
/// With `isolate_examples`, each split carries its example starts so that attention stays
/// inside each example.
pub fn load_run_data(
    train_paths: &[PathBuf],
    val_paths: &[PathBuf],
    val_fraction: f32,
    isolate_examples: bool,
    tokenizer: &Tokenizer,
) -> Result<RunData> {
    let stream = TokenStream::from_paths(train_paths, tokenizer)?;
    let mut warnings = stream.warnings().to_vec();
    let all = Split::of(stream, isolate_examples)?;
    let (train, val) = if val_paths.is_empty() {
        all.split(val_fraction)
    } else {
        let vs = TokenStream::from_paths(val_paths, tokenizer)?;
        warnings.extend(vs.warnings().iter().cloned());
        (all, Split::of(vs, isolate_examples)?)
    };
    Ok(RunData {
        train,
        val,
        warnings,
    })
}

/// The loss mask of a token stream: each `.bin` shard's sibling `.mask` shard, all ones
/// for sources without one; `None` when no source has a mask.
pub fn loss_mask(stream: &TokenStream) -> Result<Option<Vec<u8>>> {
    let masks: Vec<Option<PathBuf>> = stream
        .sources()
        .iter()
        .map(|s| sibling_shard(&s.path, "mask"))
        .collect();
    if masks.iter().all(Option::is_none) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(stream.len());
    for (src, mask) in stream.sources().iter().zip(masks) {
        match mask {
            Some(path) => {
                let m = TokenShard::open(&path)?.to_vec();
                if m.len() != src.tokens {
                    return Err(DatasetError::BadSidecar {
                        reason: format!(
                            "{} mask entries for {} tokens in {}",
                            m.len(),
                            src.tokens,
                            src.path.display()
                        ),
                        path,
                    });
                }
                out.extend(m.iter().map(|&v| u8::from(v != 0)));
            }
            None => out.extend(std::iter::repeat_n(1u8, src.tokens)),
        }
    }
    Ok(Some(out))
}

/// The `.mask` or `.starts` shard `ingest` writes beside a `.bin` source, if there is one.
fn sibling_shard(source: &Path, ext: &str) -> Option<PathBuf> {
    let path = source.with_extension(ext);
    (source.extension().is_some_and(|e| e == "bin") && path.is_file()).then_some(path)
}

/// Where each example begins in a token stream: a dataset shard's sibling `.starts`
/// shard (one entry per window or example), else the start of the source itself (a text
/// file is one document).
pub fn example_starts(stream: &TokenStream) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let mut base = 0u64;
    for src in stream.sources() {
        if let Some(path) = sibling_shard(&src.path, "starts") {
            let starts = TokenShard::open(&path)?.to_vec();
            let ok = starts.first() == Some(&0)
                && starts.windows(2).all(|w| w[0] < w[1])
                && starts.last().is_some_and(|&s| (s as usize) < src.tokens);
            if !ok {
                return Err(DatasetError::BadSidecar {
                    reason: format!(
                        "example starts are not ascending offsets below the {} tokens of {}",
                        src.tokens,
                        src.path.display()
                    ),
                    path,
                });
            }
            out.extend(starts.iter().map(|&s| base + s as u64));
        } else if src.tokens > 0 {
            out.push(base);
        }
        base += src.tokens as u64;
    }
    Ok(out)
}

/// Splits ascending example starts at token `at`: those before it, and those from it on
/// relative to it (with one at 0: the example cut by the split continues there).
pub fn split_starts(mut starts: Vec<u64>, at: u64) -> (Vec<u64>, Vec<u64>) {
    let k = starts.partition_point(|&s| s < at);
    let mut val: Vec<u64> = starts.split_off(k).into_iter().map(|s| s - at).collect();
    if val.first() != Some(&0) {
        val.insert(0, 0);
    }
    (starts, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_split_with_the_cut_example_continuing() {
        assert_eq!(split_starts(vec![0, 5, 9], 7), (vec![0, 5], vec![0, 2]));
        assert_eq!(split_starts(vec![0, 5, 7], 7), (vec![0, 5], vec![0]));
        assert_eq!(split_starts(vec![0], 3), (vec![0], vec![0]));
    }

    #[test]
    fn mask_and_starts_split_with_the_tokens() {
        let all = Split {
            tokens: (0..20).collect(),
            mask: Some((0..20).map(|i| (i % 2) as u8).collect()),
            starts: Some(vec![0, 8, 15]),
        };
        let (t, v) = all.clone().split(0.25);
        assert_eq!(t.tokens.len() + v.tokens.len(), 20);
        let n = t.tokens.len();
        assert_eq!(t.mask.as_deref(), Some(&all.mask.as_ref().unwrap()[..n]));
        assert_eq!(v.mask.as_deref(), Some(&all.mask.as_ref().unwrap()[n..]));
        assert_eq!(v.tokens[0], n as u32);
        assert_eq!(v.starts.as_ref().unwrap()[0], 0);
    }

    #[test]
    fn the_hash_of_plain_tokens_is_their_tokens_hash() {
        let s = Split {
            tokens: vec![1, 2, 3],
            mask: None,
            starts: None,
        };
        assert_eq!(s.hash(), tokens_hash(&[1, 2, 3]));
        let masked = Split {
            mask: Some(vec![1, 0, 1]),
            ..s.clone()
        };
        assert_ne!(masked.hash(), s.hash());
    }
}
