//! HTML: the visible text of a page, without scripts, styles, navigation or markup.
//!
//! A small stripper rather than an HTML engine: tags are dropped, block-level tags end a
//! paragraph, `<br>` ends a line, table cells are joined with tabs, character references
//! are decoded, and the content of `<script>`, `<style>`, `<head>`, `<nav>`, `<aside>`,
//! `<form>`, `<template>`, `<svg>` and `<noscript>` is skipped. Malformed markup degrades
//! to more or less text, never to an error.

use super::Document;
use super::error::Result;
use super::text::{decode_text, paragraphs};

/// Elements whose content is never main text.
const SKIP: &[&str] = &[
    "script", "style", "head", "nav", "aside", "form", "template", "svg", "noscript", "iframe",
    "object", "button", "select", "canvas",
];

/// Elements that start and end a block (a paragraph break around them).
const BLOCK: &[&str] = &[
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "ul",
    "ol",
    "li",
    "dl",
    "dt",
    "dd",
    "table",
    "tr",
    "blockquote",
    "pre",
    "hr",
    "figure",
    "figcaption",
    "caption",
    "address",
    "details",
    "summary",
    "body",
    "html",
];

pub(super) fn read_html(doc: &mut Document, bytes: &[u8]) -> Result<()> {
    let html = decode_text(&doc.source, bytes, &mut doc.warnings)?;
    let text = html_to_text(&html);
    doc.units = paragraphs(&text);
    doc.paragraphs = Some(doc.units.len() as u32);
    Ok(())
}

/// The text of an HTML document, paragraphs separated by blank lines.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        push_text(&mut out, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = after.find("-->").map_or("", |i| &after[i + 3..]);
            continue;
        }
        if rest.starts_with("<!") || rest.starts_with("<?") {
            rest = rest.find('>').map_or("", |i| &rest[i + 1..]);
            continue;
        }
        let (name, closing, self_closing, len) = match parse_tag(rest) {
            Tag::Element(name, closing, self_closing, len) => (name, closing, self_closing, len),
            // A lone `<` (as in `a < b`) is text.
            Tag::Text => {
                push_text(&mut out, "<");
                rest = &rest[1..];
                continue;
            }
            // No `>` anywhere after it: no later `<` can close either, so the rest is text
            // (rescanning from each `<` would take quadratic time).
            Tag::Unterminated => break,
        };
        rest = &rest[len..];
        if !closing && !self_closing && SKIP.contains(&name.as_str()) {
            rest = skip_to_close(rest, &name);
            continue;
        }
        match name.as_str() {
            "br" => out.push('\n'),
            "td" | "th" if !closing => {
                while out.ends_with(' ') {
                    out.pop();
                }
                if !out.ends_with('\n') && !out.is_empty() {
                    out.push('\t');
                }
            }
            n if BLOCK.contains(&n) => out.push_str("\n\n"),
            _ => {}
        }
    }
    push_text(&mut out, rest);
    out
}

/// Appends text content: whitespace runs (newlines included) become one space, and
/// character references are decoded.
fn push_text(out: &mut String, text: &str) {
    let decoded = decode_entities(text);
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            if !out.is_empty() && !out.ends_with([' ', '\n', '\t']) {
                out.push(' ');
            }
        } else {
            out.push(c);
        }
    }
}

/// What starts at a `<`.
enum Tag {
    /// Its lowercase name, whether it is a closing tag, whether it closes itself, and its
    /// length in bytes up to and including `>`.
    Element(String, bool, bool, usize),
    /// No tag name follows: the `<` is text.
    Text,
    /// A name follows but no `>` does, anywhere in the rest of the document.
    Unterminated,
}

/// Parses a tag at the start of `s` (which starts with `<`). Quoted attribute values may
/// contain `>`; a quote never closed ends the tag at its first `>` instead.
fn parse_tag(s: &str) -> Tag {
    let b = s.as_bytes();
    let mut i = 1;
    let closing = b.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'-' || b[i] == b':') {
        i += 1;
    }
    if i == start || !b[start].is_ascii_alphabetic() {
        return Tag::Text;
    }
    let name = s[start..i].to_ascii_lowercase();
    let element = |end: usize| Tag::Element(name.clone(), closing, b[end - 1] == b'/', end + 1);
    let attrs = i;
    let mut quote = None;
    while i < b.len() {
        match (quote, b[i]) {
            (None, b'"' | b'\'') => quote = Some(b[i]),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => return element(i),
            _ => {}
        }
        i += 1;
    }
    // Reached the end inside a quote (or without any `>`): the first `>` ends the tag. A
    // quote char can run to the end only once per kind, so this stays linear overall.
    match s[attrs..].find('>') {
        Some(j) => element(attrs + j),
        None => Tag::Unterminated,
    }
}

/// The text after the `</name>` that closes an element whose content is skipped (the
/// rest of the document is skipped when it is never closed). Compares case-insensitively
/// in place: lower-casing the rest of the document for every skipped element took
/// quadratic time.
fn skip_to_close<'a>(s: &'a str, name: &str) -> &'a str {
    let (b, n) = (s.as_bytes(), name.as_bytes());
    let mut from = 0;
    while let Some(i) = s[from..].find("</") {
        let at = from + i + 2;
        if b.len() >= at + n.len() && b[at..at + n.len()].eq_ignore_ascii_case(n) {
            return s[at..].find('>').map_or("", |j| &s[at + j + 1..]);
        }
        from = at;
    }
    ""
}

/// Decodes `&amp;`, `&#233;`, `&#xE9;` and the named references common in prose; any
/// other `&` is kept as it is.
pub(super) fn decode_entities(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('&') {
        return text.into();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        // Look no further than a reference can reach, or a run of `&` without `;` would
        // rescan the rest of the text at each one.
        let end = rest.as_bytes()[1..]
            .iter()
            .take(12)
            .position(|&c| c == b';')
            .map(|j| j + 1);
        let decoded = end.and_then(|j| entity(&rest[1..j]).map(|c| (c, j + 1)));
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out.into()
}

fn entity(name: &str) -> Option<char> {
    if let Some(num) = name.strip_prefix('#') {
        let code = match num.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => num.parse().ok()?,
        };
        return char::from_u32(code).filter(|&c| c != '\0');
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "ndash" => '–',
        "mdash" => '—',
        "hellip" => '…',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "deg" => '°',
        "euro" => '€',
        "pound" => '£',
        "sect" => '§',
        "eacute" => 'é',
        "egrave" => 'è',
        "agrave" => 'à',
        "aacute" => 'á',
        "iacute" => 'í',
        "oacute" => 'ó',
        "uacute" => 'ú',
        "ntilde" => 'ñ',
        "ccedil" => 'ç',
        "auml" => 'ä',
        "ouml" => 'ö',
        "uuml" => 'ü',
        "szlig" => 'ß',
        "times" => '×',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hostile pages that used to take quadratic time (2.2 MB of `<svg></svg>` took 11.8 s):
    /// skipped elements, tags that never end, unclosed quotes and `&` runs, 4 MB each. A
    /// linear pass takes milliseconds; the bound only catches a return to quadratic time.
    #[test]
    fn hostile_markup_takes_linear_time() {
        let n = 4 << 20;
        let cases = [
            "<svg></svg>".repeat(n / 11),
            "<SVG>x</Svg >".repeat(n / 13),
            "<a ".repeat(n / 3),
            "<a title=\"x".repeat(n / 12),
            "&".repeat(n),
            "<script>".repeat(n / 8),
        ];
        for html in &cases {
            let started = std::time::Instant::now();
            let _ = html_to_text(html);
            let took = started.elapsed();
            assert!(took.as_secs() < 5, "{:?}…: {took:?}", &html[..20]);
        }
        // Unterminated markup degrades to text.
        assert_eq!(html_to_text("a <b c"), "a <b c");
        assert_eq!(html_to_text("x &&& y"), "x &&& y");
        // A quote never closed ends the tag at its first `>`.
        let t = html_to_text("<a title=\"x>text <b>bold</b>");
        assert!(t.contains("text") && t.contains("bold"), "{t}");
    }

    #[test]
    fn strips_markup_scripts_and_styles() {
        let html = r#"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head>
<body><nav><a href="/">Home</a></nav><!-- note -->
<h1>Hello&nbsp;World</h1><p class="x">Caf&eacute; &amp; cr&#232;me, a &lt; b &#x2014; ok</p>
<script type="text/javascript">if (a < b) { alert("x"); }</script>
<p>Line one<br/>line two</p><table><tr><th>Name</th><th>Age</th></tr><tr> <td>Ann</td> <td>41</td></tr></table>
<p>a < b and AT&T</p></body></html>"#;
        let text = html_to_text(html);
        let paras: Vec<String> = paragraphs(&text).into_iter().map(|u| u.text).collect();
        assert_eq!(
            paras,
            [
                "Hello World",
                "Café & crème, a < b — ok",
                "Line one\nline two",
                "Name\tAge",
                "Ann\t41",
                "a < b and AT&T"
            ]
        );
    }

    #[test]
    fn unclosed_script_and_broken_tags_do_not_fail() {
        assert_eq!(html_to_text("<p>a</p><script>var x").trim(), "a");
        assert_eq!(
            html_to_text("x <b unterminated").trim(),
            "x <b unterminated"
        );
    }
}
