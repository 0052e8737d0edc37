//! How far a PDF's streams expand, measured with capped decoders before `pdf-extract`
//! (through lopdf) decodes them whole and without limit.
//!
//! lopdf decodes the filter chains FlateDecode, LZWDecode and ASCII85Decode, in any order
//! and repeated (it refuses other filters), so a bomb can hide in a chain: zlib data
//! inside zlib data, zlib under ASCII85, or LZW. Each stream's chain is read from the
//! dictionary right before its `stream` keyword and decoded here stage by stage, every
//! stage's output counted against one budget for the whole file; decoding stops as soon
//! as the budget is spent. Since a file could hide its real `/Filter` from a byte scan
//! (an indirect array, a decoy in a string), every `/Filter` value found in the
//! dictionary is tried, and so are the chains a bomb would use when the value is a
//! reference. Time and memory are bounded by the budget, whatever the file claims.

use std::io::Read;

/// A filter lopdf decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    Flate,
    Lzw,
    Ascii85,
}

/// The chains tried for a stream whose `/Filter` is a reference (`/Filter 5 0 R`).
const UNKNOWN_CHAINS: &[&[Filter]] = &[
    &[Filter::Flate],
    &[Filter::Lzw],
    &[Filter::Flate, Filter::Flate],
    &[Filter::Ascii85, Filter::Flate],
    &[Filter::Ascii85, Filter::Lzw],
];

/// Bytes still allowed, over every stage of every stream.
struct Budget {
    left: u64,
    used: u64,
}

impl Budget {
    /// Counts `n` more bytes; `false` once the budget is exceeded.
    fn spend(&mut self, n: usize) -> bool {
        self.used += n as u64;
        match self.left.checked_sub(n as u64) {
            Some(l) => {
                self.left = l;
                true
            }
            None => false,
        }
    }
}

/// `Some(bytes decoded so far)` when the streams of `pdf` decode to more than `limit`
/// bytes in total, `None` otherwise.
pub(super) fn expands_beyond(pdf: &[u8], limit: u64) -> Option<u64> {
    let mut budget = Budget {
        left: limit,
        used: 0,
    };
    for (dict, data) in streams(pdf) {
        let chains = chains(dict);
        for chain in &chains {
            if !decode(data, chain, &mut budget) {
                return Some(budget.used);
            }
        }
    }
    None
}

/// Each stream's dictionary and data: the data runs from the end of line after `stream`
/// to the next `endstream` (or the end of the file).
fn streams(pdf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        loop {
            let i = find(&pdf[at..], b"stream")?;
            let keyword = at + i;
            at = keyword + 6;
            if keyword >= 3 && &pdf[keyword - 3..keyword] == b"end" {
                continue;
            }
            let mut start = at;
            if pdf.get(start) == Some(&b'\r') {
                start += 1;
            }
            if pdf.get(start) != Some(&b'\n') {
                continue;
            }
            start += 1;
            let end = find(&pdf[start..], b"endstream").map_or(pdf.len(), |e| start + e);
            at = end;
            return Some((dictionary_before(pdf, keyword), &pdf[start..end]));
        }
    })
}

/// The `<< … >>` ending right before `keyword` (nesting counted), or empty.
fn dictionary_before(pdf: &[u8], keyword: usize) -> &[u8] {
    let mut end = keyword;
    while end > 0 && pdf[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    if end < 2 || &pdf[end - 2..end] != b">>" {
        return &[];
    }
    let mut depth = 0usize;
    let mut i = end;
    while i >= 2 {
        match &pdf[i - 2..i] {
            b">>" => {
                depth += 1;
                i -= 2;
            }
            b"<<" => {
                depth -= 1;
                i -= 2;
                if depth == 0 {
                    return &pdf[i..end];
                }
            }
            _ => i -= 1,
        }
    }
    &[]
}

/// Every chain a `/Filter` in `dict` names; the reference chains for a reference; none
/// when the stream has no filter.
fn chains(dict: &[u8]) -> Vec<Vec<Filter>> {
    let mut out = Vec::new();
    let mut rest = dict;
    while let Some(i) = find(rest, b"/Filter") {
        rest = &rest[i + 7..];
        let value = rest.trim_ascii_start();
        match value.first() {
            Some(b'/') => out.push(name_at(value).into_iter().collect()),
            Some(b'[') => {
                let close = value.iter().position(|&b| b == b']').unwrap_or(value.len());
                let names = value[1..close]
                    .split(|&b| b == b'/')
                    .skip(1)
                    .map(|n| filter(name_end(n)));
                // A filter lopdf does not know stops its decoding there.
                out.push(names.map_while(|f| f).collect());
            }
            Some(b'0'..=b'9') => out.extend(UNKNOWN_CHAINS.iter().map(|c| c.to_vec())),
            _ => {}
        }
    }
    out
}

fn name_at(value: &[u8]) -> Option<Filter> {
    filter(name_end(&value[1..]))
}

/// A name's characters, up to a delimiter.
fn name_end(n: &[u8]) -> &[u8] {
    let len = n
        .iter()
        .position(|b| b.is_ascii_whitespace() || b"/[]<>()%".contains(b))
        .unwrap_or(n.len());
    &n[..len]
}

fn filter(name: &[u8]) -> Option<Filter> {
    match name {
        b"FlateDecode" | b"Fl" => Some(Filter::Flate),
        b"LZWDecode" | b"LZW" => Some(Filter::Lzw),
        b"ASCII85Decode" | b"A85" => Some(Filter::Ascii85),
        _ => None,
    }
}

/// Decodes `data` through `chain`, counting every stage's output; `false` once the budget
/// is exceeded. A stage that fails ends the chain, as it ends lopdf's decoding.
fn decode(data: &[u8], chain: &[Filter], budget: &mut Budget) -> bool {
    let mut input = std::borrow::Cow::Borrowed(data);
    for &f in chain {
        let cap = budget.left.saturating_add(1).min(usize::MAX as u64) as usize;
        let output = match f {
            Filter::Flate => inflate(&input, cap),
            Filter::Lzw => unlzw(&input, cap),
            Filter::Ascii85 => ascii85(&input),
        };
        if !budget.spend(output.len()) {
            return false;
        }
        if output.is_empty() {
            return true;
        }
        input = std::borrow::Cow::Owned(output);
    }
    true
}

/// zlib data inflated, at most `cap` bytes (less if it is damaged or ends).
fn inflate(data: &[u8], cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = flate2::read::ZlibDecoder::new(data)
        .take(cap as u64)
        .read_to_end(&mut out);
    out
}

/// LZW data (PDF's: MSB first, early change) decoded, at most about `cap` bytes.
fn unlzw(data: &[u8], cap: usize) -> Vec<u8> {
    let mut d = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut input = data;
    while out.len() < cap {
        let r = d.decode_bytes(input, &mut buf);
        out.extend_from_slice(&buf[..r.consumed_out]);
        input = &input[r.consumed_in..];
        match r.status {
            Ok(weezl::LzwStatus::Ok) if r.consumed_in + r.consumed_out > 0 => {}
            _ => break,
        }
    }
    out.truncate(cap);
    out
}

/// ASCII85 decoded (it only shrinks, except `z`, which stands for four zero bytes).
fn ascii85(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let (mut group, mut n) = (0u64, 0);
    for &c in data {
        match c {
            b'~' => break,
            b'z' if n == 0 => out.extend_from_slice(&[0; 4]),
            b'!'..=b'u' => {
                group = group * 85 + u64::from(c - b'!');
                n += 1;
                if n == 5 {
                    out.extend_from_slice(&(group as u32).to_be_bytes());
                    (group, n) = (0, 0);
                }
            }
            c if c.is_ascii_whitespace() => {}
            _ => break,
        }
    }
    if n > 1 {
        for _ in n..5 {
            group = group * 85 + 84;
        }
        out.extend_from_slice(&(group as u32).to_be_bytes()[..n - 1]);
    }
    out
}

/// Where `needle` first occurs in `hay`.
pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    fn a85(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in data.chunks(4) {
            let mut b = [0u8; 4];
            b[..chunk.len()].copy_from_slice(chunk);
            let mut v = u32::from_be_bytes(b) as u64;
            let mut digits = [0u8; 5];
            for d in digits.iter_mut().rev() {
                *d = b'!' + (v % 85) as u8;
                v /= 85;
            }
            out.extend_from_slice(&digits[..chunk.len() + 1]);
        }
        out.extend_from_slice(b"~>");
        out
    }

    fn pdf_with(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut pdf = format!("%PDF-1.4\n4 0 obj\n<< {dict} >>\nstream\n").into_bytes();
        pdf.extend_from_slice(data);
        pdf.extend_from_slice(b"\nendstream\nendobj\n%%EOF\n");
        pdf
    }

    /// 64 MiB of zeros, as zlib (about 64 KiB).
    fn bomb() -> Vec<u8> {
        let zeros = vec![0u8; 1 << 20];
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..64 {
            z.write_all(&zeros).unwrap();
        }
        z.finish().unwrap()
    }

    #[test]
    fn bombs_hidden_in_chains_are_measured() {
        let limit = 8 << 20;
        let inner = bomb();
        let cases = [
            ("/Filter /FlateDecode", inner.clone()),
            ("/Filter [/FlateDecode /FlateDecode]", zlib(&inner)),
            ("/Filter [/ASCII85Decode /FlateDecode]", a85(&inner)),
            ("/Filter [/A85 /Fl]", a85(&inner)),
            ("/Filter 9 0 R", zlib(&inner)),
            // A decoy in a nested dictionary before the real value.
            (
                "/DecodeParms << /Filter /ASCIIHexDecode >> /Filter [/FlateDecode /FlateDecode]",
                zlib(&inner),
            ),
        ];
        for (dict, data) in cases {
            let pdf = pdf_with(dict, &data);
            assert!(expands_beyond(&pdf, limit).is_some(), "{dict}");
        }
    }

    #[test]
    fn lzw_bombs_are_measured() {
        let zeros = vec![0u8; 32 << 20];
        let mut enc = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let data = enc.encode(&zeros).unwrap();
        assert!(data.len() < zeros.len() / 20);
        let pdf = pdf_with("/Filter /LZWDecode", &data);
        assert!(expands_beyond(&pdf, 8 << 20).is_some());
        assert!(expands_beyond(&pdf, 64 << 20).is_none());
    }

    #[test]
    fn ordinary_streams_pass_and_decoders_are_right() {
        let text = b"BT /F1 12 Tf (Hello) Tj ET".repeat(100);
        for (dict, data) in [
            ("/Filter /FlateDecode", zlib(&text)),
            ("/Filter [/ASCII85Decode /FlateDecode]", a85(&zlib(&text))),
            ("", text.clone()),
        ] {
            assert_eq!(
                expands_beyond(&pdf_with(dict, &data), 1 << 20),
                None,
                "{dict}"
            );
        }
        assert_eq!(
            ascii85(&a85(b"Man is distinguished")),
            b"Man is distinguished"
        );
        assert_eq!(inflate(&zlib(&text), 1 << 20), text);
        let mut enc = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        assert_eq!(unlzw(&enc.encode(&text).unwrap(), 1 << 20), text);
    }
}
