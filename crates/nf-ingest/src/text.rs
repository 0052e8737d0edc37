//! Plain text and Markdown: decoding bytes to text, then one unit per paragraph.
//!
//! Markdown is kept as written (headings, lists and emphasis marks are text a model can
//! learn from); only its paragraphs are found.

use std::path::Path;

use super::clean::{dehyphenate, normalize};
use super::error::{IngestError, Result};
use super::{Document, Unit};

/// Above this fraction of NUL or other control bytes a file is binary, not text.
const MAX_CONTROL_FRACTION: f64 = 0.01;
/// Above this fraction of invalid UTF-8 the file is taken to be Windows-1252 (Latin-1)
/// rather than UTF-8 with a few damaged bytes.
const MAX_INVALID_UTF8_FRACTION: f64 = 0.01;

pub(super) fn read_text(doc: &mut Document, bytes: &[u8]) -> Result<()> {
    let text = decode_text(&doc.source, bytes, &mut doc.warnings)?;
    doc.units = paragraphs(&text);
    doc.paragraphs = Some(doc.units.len() as u32);
    Ok(())
}

/// Splits text on blank lines into cleaned paragraphs numbered from 1.
pub(super) fn paragraphs(text: &str) -> Vec<Unit> {
    let text = normalize(text);
    text.split("\n\n")
        .map(|p| dehyphenate(p.trim()))
        .filter(|p| !p.is_empty())
        .enumerate()
        .map(|(i, p)| Unit::paragraph(p, i as u32 + 1))
        .collect()
}

/// Decodes a text file: UTF-8 (a BOM is dropped), UTF-16 with a BOM, and, for files that
/// are not UTF-8, Windows-1252, the usual encoding of older Western text files. A few
/// invalid UTF-8 bytes are replaced with U+FFFD and reported in `warnings`. Files with
/// NUL or other control bytes above 1% are binary: [`IngestError::NotText`].
pub(super) fn decode_text(path: &Path, bytes: &[u8], warnings: &mut Vec<String>) -> Result<String> {
    if let Some(rest) = bytes.strip_prefix(b"\xef\xbb\xbf") {
        return decode_text(path, rest, warnings);
    }
    if let Some(s) = decode_utf16_bom(bytes) {
        return Ok(s);
    }
    let control = bytes
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
        .count();
    if control as f64 > bytes.len() as f64 * MAX_CONTROL_FRACTION {
        let nul = bytes.iter().filter(|&&b| b == 0).count();
        return Err(IngestError::NotText {
            path: path.to_path_buf(),
            reason: format!(
                "{control} of its {} bytes are control bytes ({nul} NUL): a binary file \
                 with a text extension",
                bytes.len()
            ),
        });
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Ok(s.to_string());
    }
    let (invalid, first_bad) = nf_data::invalid_utf8(bytes);
    if invalid as f64 > bytes.len() as f64 * MAX_INVALID_UTF8_FRACTION {
        warnings.push(format!(
            "{}: not UTF-8 ({invalid} invalid bytes, the first at byte {first_bad}); \
             decoded as Windows-1252",
            path.display()
        ));
        return Ok(bytes.iter().map(|&b| cp1252(b)).collect());
    }
    warnings.push(format!(
        "{}: {invalid} bytes are not valid UTF-8 (the first at byte {first_bad}); they were \
         replaced with U+FFFD",
        path.display()
    ));
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// UTF-16 text announced by its byte-order mark, decoded lossily.
fn decode_utf16_bom(bytes: &[u8]) -> Option<String> {
    let le = match bytes.get(..2)? {
        [0xff, 0xfe] => true,
        [0xfe, 0xff] => false,
        _ => return None,
    };
    let units = bytes[2..].chunks_exact(2).map(|c| {
        if le {
            u16::from_le_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], c[1]])
        }
    });
    Some(
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
    )
}

/// Windows-1252: Latin-1 with printable characters in 0x80..0xA0.
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    match b {
        0x80..=0x9f => HIGH[(b - 0x80) as usize],
        _ => b as char,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (Result<String>, Vec<String>) {
        let mut w = Vec::new();
        (decode_text(Path::new("x.txt"), bytes, &mut w), w)
    }

    #[test]
    fn encodings() {
        assert_eq!(decode(b"\xef\xbb\xbfhi").0.unwrap(), "hi");
        assert_eq!(decode(b"\xff\xfeh\0i\0").0.unwrap(), "hi");
        assert_eq!(decode(b"\xfe\xff\0h\0i").0.unwrap(), "hi");
        let (s, w) = decode(b"caf\xe9 cr\xe8me \x93quoted\x94");
        assert_eq!(s.unwrap(), "café crème “quoted”");
        assert!(w[0].contains("Windows-1252"), "{w:?}");
        let mut long = "hello ".repeat(100).into_bytes();
        long.push(0xff);
        let (s, w) = decode(&long);
        assert!(s.unwrap().ends_with('\u{fffd}'));
        assert!(w[0].contains("byte 600"), "{w:?}");
    }

    #[test]
    fn binary_is_refused() {
        let mut bin = vec![0u8; 100];
        bin.extend_from_slice(b"some text");
        let e = decode(&bin).0.unwrap_err();
        assert!(matches!(e, IngestError::NotText { .. }), "{e}");
        assert!(e.to_string().contains("NUL"), "{e}");
    }

    #[test]
    fn paragraphs_are_numbered_and_cleaned() {
        let u = paragraphs("Title\r\n\r\n\r\nA long exam-\nple  line\nhere.\n\n  \n\nLast");
        let t: Vec<(&str, Option<u32>)> =
            u.iter().map(|u| (u.text.as_str(), u.paragraph)).collect();
        assert_eq!(
            t,
            [
                ("Title", Some(1)),
                ("A long example line\nhere.", Some(2)),
                ("Last", Some(3))
            ]
        );
    }
}
