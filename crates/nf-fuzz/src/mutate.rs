//! The mutator: seeded, dependency-free, in the spirit of AFL's havoc stage. Each input is
//! a seed with one to sixteen edits stacked: bit flips, bytes and integers set to values
//! that break parsers (0, -1, 2³¹, lengths near the file's), ranges deleted, repeated or
//! spliced from another seed, truncation, and tokens from the target's dictionary
//! (`<script`, `obj`, `"\u`). Half the edits land in the first 4 KiB, where headers are.
//! Half the inputs get only edits that keep the length, since formats with fixed layouts
//! (llama2.c, tensor data after a header) refuse almost any file whose size changed.

/// splitmix64: tiny, fast, and the same stream on every machine for a given seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Integers that sit on the edges parsers get wrong.
const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    u64::MAX,
];

/// One mutated input from `seeds`, at most `max_len` bytes.
pub fn mutate(rng: &mut Rng, seeds: &[Vec<u8>], dictionary: &[&[u8]], max_len: usize) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    let edits = 1 << rng.below(5);
    let in_place = rng.below(2) == 0;
    for _ in 0..edits {
        if in_place {
            overwrite(rng, &mut d);
        } else {
            edit(rng, &mut d, seeds, dictionary, max_len);
        }
        d.truncate(max_len);
    }
    d
}

/// A position in `0..=len`: half the time within the first 4 KiB.
fn position(rng: &mut Rng, len: usize) -> usize {
    if rng.below(2) == 0 {
        rng.below(len.min(4096) + 1)
    } else {
        rng.below(len + 1)
    }
}

/// A range length: mostly short, sometimes long.
fn span(rng: &mut Rng, room: usize) -> usize {
    let max = if rng.below(4) == 0 {
        room
    } else {
        room.min(64)
    };
    rng.below(max + 1)
}

/// An edit that keeps the length: a bit, a byte, an integer or a copied range overwritten.
fn overwrite(rng: &mut Rng, d: &mut [u8]) {
    if d.is_empty() {
        return;
    }
    let at = position(rng, d.len() - 1);
    match rng.below(5) {
        0 => d[at] ^= 1 << rng.below(8),
        1 => d[at] = rng.next_u64() as u8,
        2 => {
            let value = INTERESTING[rng.below(INTERESTING.len())].to_le_bytes();
            let n = (1 << rng.below(4)).min(d.len() - at);
            d[at..at + n].copy_from_slice(&value[..n]);
        }
        3 => {
            let from = rng.below(d.len());
            let n = span(rng, (d.len() - from).min(d.len() - at));
            d.copy_within(from..from + n, at);
        }
        _ => d[at] = d[at].wrapping_add(rng.below(35) as u8).wrapping_sub(17),
    }
}

fn edit(rng: &mut Rng, d: &mut Vec<u8>, seeds: &[Vec<u8>], dictionary: &[&[u8]], max_len: usize) {
    let at = position(rng, d.len());
    match rng.below(10) {
        0 if at < d.len() => d[at] ^= 1 << rng.below(8),
        1 if at < d.len() => d[at] = rng.next_u64() as u8,
        2 => {
            let value = INTERESTING[rng.below(INTERESTING.len())];
            let value = if rng.below(4) == 0 {
                value.wrapping_neg()
            } else {
                value
            };
            let width = 1 << rng.below(4);
            let bytes = &value.to_le_bytes()[..width];
            let end = (at + width).min(d.len());
            d.splice(at..end, bytes.iter().copied());
        }
        3 => {
            let n = span(rng, d.len() - at);
            d.drain(at..at + n);
        }
        4 if !d.is_empty() => {
            let from = rng.below(d.len());
            let n = span(rng, d.len() - from);
            let piece = d[from..from + n].to_vec();
            let most = if rng.below(8) == 0 { 256 } else { 4 };
            // Repeats stop at the length cap: the input, not the mutator, is under test.
            let room = max_len.saturating_sub(d.len()) / n.max(1);
            let times = (1 + rng.below(most)).min(room);
            for _ in 0..times {
                d.splice(at..at, piece.iter().copied());
            }
        }
        5 if !dictionary.is_empty() => {
            let token = dictionary[rng.below(dictionary.len())];
            d.splice(at..at, token.iter().copied());
        }
        6 => {
            let other = &seeds[rng.below(seeds.len())];
            let from = rng.below(other.len() + 1);
            d.truncate(at);
            d.extend_from_slice(&other[from..]);
        }
        7 => d.truncate(at),
        8 if at < d.len() => {
            let delta = rng.below(35) as u8;
            d[at] = if rng.below(2) == 0 {
                d[at].wrapping_add(delta)
            } else {
                d[at].wrapping_sub(delta)
            };
        }
        _ => {
            // Random bytes inserted: short runs of noise.
            let n = 1 + rng.below(16);
            let noise: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            d.splice(at..at, noise);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_fixed_by_the_seed() {
        let seeds = vec![b"<html><p>hello</p></html>".to_vec()];
        let a: Vec<Vec<u8>> = {
            let mut r = Rng::new(7);
            (0..50)
                .map(|_| mutate(&mut r, &seeds, &[b"<p>"], 1 << 20))
                .collect()
        };
        let mut r = Rng::new(7);
        for x in &a {
            assert_eq!(*x, mutate(&mut r, &seeds, &[b"<p>"], 1 << 20));
        }
        // And the inputs differ from the seed and from each other.
        let distinct: std::collections::BTreeSet<_> = a.iter().collect();
        assert!(distinct.len() > 40, "{}", distinct.len());
    }

    #[test]
    fn inputs_respect_the_length_cap() {
        let seeds = vec![vec![1u8; 1000]];
        let mut r = Rng::new(1);
        for _ in 0..500 {
            assert!(mutate(&mut r, &seeds, &[], 1500).len() <= 1500);
        }
    }
}
