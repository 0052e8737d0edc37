//! The mutator: seeded, dependency-free, in the spirit of AFL's havoc stage. Each input is
//! a seed with one to sixteen edits stacked: bit flips, bytes and integers set to values
//! that break parsers (0, -1, 2³¹, lengths near the file's), ranges deleted, repeated or
//! spliced from another seed, truncation, and tokens from the target's dictionary
//! (`<script`, `obj`, `"\u`). Half the edits land in the first 4 KiB, where headers are.
//! Half the inputs get only edits that keep the length, since formats with fixed layouts
//! (llama2.c, tensor data after a header) refuse almost any file whose size changed.

use serde_json::{Value, json};

/// splitmix64: tiny, fast, and the same stream on every machine for a given seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
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
    // A quarter of the inputs holding JSON get edits of its values instead of its bytes:
    // byte edits mostly break the syntax, so they rarely reach what reads the values.
    if rng.below(4) == 0
        && let Some(mut j) = json_edit(rng, &d)
    {
        for _ in 0..rng.below(3) {
            j = json_edit(rng, &j).unwrap_or(j);
        }
        j.truncate(max_len);
        return j;
    }
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

/// The JSON in `d` (from its first `{` or `[` to the end, after a tag byte or a request
/// line; or, in NDJSON, one line of it) with one value changed, or `None` when there is
/// none that parses.
fn json_edit(rng: &mut Rng, d: &[u8]) -> Option<Vec<u8>> {
    let start = d.iter().position(|&b| b == b'{' || b == b'[')?;
    let (lo, hi, mut v) = match serde_json::from_slice::<Value>(&d[start..]) {
        Ok(v) => (start, d.len(), v),
        Err(_) => {
            // NDJSON: a random line that is an object.
            let lines: Vec<(usize, usize)> = line_spans(d)
                .filter(|&(a, b)| d[a..b].first() == Some(&b'{'))
                .collect();
            let (a, b) = *lines.get(rng.below(lines.len().max(1)))?;
            (a, b, serde_json::from_slice(&d[a..b]).ok()?)
        }
    };
    let n = count(&v);
    let donor = nth_mut(&mut v, &mut rng.below(n))?.clone();
    let node = nth_mut(&mut v, &mut rng.below(n))?;
    change(rng, node, donor);
    let mut out = d[..lo].to_vec();
    out.extend_from_slice(&serde_json::to_vec(&v).ok()?);
    out.extend_from_slice(&d[hi..]);
    Some(out)
}

fn line_spans(d: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    d.split(|&b| b == b'\n').map(move |l| {
        let span = (at, at + l.len());
        at += l.len() + 1;
        span
    })
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The `k`-th node in pre-order.
fn nth_mut<'a>(v: &'a mut Value, k: &mut usize) -> Option<&'a mut Value> {
    if *k == 0 {
        return Some(v);
    }
    *k -= 1;
    let children: Vec<&'a mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => return None,
    };
    for c in children {
        if let Some(found) = nth_mut(c, k) {
            return Some(found);
        }
    }
    None
}

/// Replaces `node` with a value that breaks assumptions, a copy of another node, or
/// changes its elements.
fn change(rng: &mut Rng, node: &mut Value, donor: Value) {
    let odd = || -> [Value; 16] {
        [
            Value::Null,
            json!(true),
            json!(0),
            json!(-1),
            json!(1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(0.5),
            json!(1e300),
            json!(""),
            json!("\u{0}"),
            json!("../../../etc/passwd"),
            json!("x".repeat(70_000)),
            json!([]),
            json!({}),
            json!([[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]),
        ]
    };
    match (rng.below(4), &mut *node) {
        (0, Value::Array(a)) if !a.is_empty() => {
            let i = rng.below(a.len());
            if rng.below(2) == 0 {
                a.remove(i);
            } else {
                let copy = a[i].clone();
                let times = 1 + rng.below(64);
                a.extend(std::iter::repeat_n(copy, times));
            }
        }
        (0, Value::Object(o)) if !o.is_empty() => {
            let key = o
                .keys()
                .nth(rng.below(o.len()))
                .cloned()
                .unwrap_or_default();
            if rng.below(2) == 0 {
                o.remove(&key);
            } else {
                o.insert(format!("{key}_"), donor);
            }
        }
        (1, _) => *node = donor,
        _ => {
            let values = odd();
            *node = values[rng.below(values.len())].clone();
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
    fn json_edits_change_values_and_keep_the_framing() {
        let seed = b"POST /api/x\n{\"a\":[1,2],\"b\":{\"c\":\"d\"}}".to_vec();
        let mut r = Rng::new(3);
        let mut changed = 0;
        for _ in 0..200 {
            let out = json_edit(&mut r, &seed).expect("the seed holds JSON");
            assert!(out.starts_with(b"POST /api/x\n"));
            let v: Value = serde_json::from_slice(&out[12..]).expect("still JSON");
            changed += usize::from(v != serde_json::from_slice::<Value>(&seed[12..]).unwrap());
        }
        assert!(changed > 150, "{changed}");
        // NDJSON: one line changes, the others stay.
        let log = b"{\"seq\":1}\n{\"seq\":2}\n".to_vec();
        let out = json_edit(&mut r, &log).unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
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
