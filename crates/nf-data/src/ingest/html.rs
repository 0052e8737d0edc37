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
        let Some((name, closing, self_closing, len)) = parse_tag(rest) else {
            // A lone `<` (as in `a < b`) is text.
            push_text(&mut out, "<");
            rest = &rest[1..];
            continue;
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

/// Parses a tag at the start of `s` (which starts with `<`): its lowercase name, whether
/// it is a closing tag, whether it closes itself, and its length in bytes up to and
/// including `>`. Quoted attribute values may contain `>`.
fn parse_tag(s: &str) -> Option<(String, bool, bool, usize)> {
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
        return None;
    }
    let name = s[start..i].to_ascii_lowercase();
    let mut quote = None;
    while i < b.len() {
        match (quote, b[i]) {
            (None, b'"' | b'\'') => quote = Some(b[i]),
            (Some(q), c) if c == q => quote = None,
            (None, b'>') => {
                let self_closing = b[i - 1] == b'/';
                return Some((name, closing, self_closing, i + 1));
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The text after the `</name>` that closes an element whose content is skipped (the
/// rest of the document is skipped when it is never closed).
fn skip_to_close<'a>(s: &'a str, name: &str) -> &'a str {
    let lower = s.to_ascii_lowercase();
    let pat = format!("</{name}");
    match lower.find(&pat) {
        Some(i) => s[i..].find('>').map_or("", |j| &s[i + j + 1..]),
        None => "",
    }
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
        let end = rest[1..].find(';').map(|j| j + 1).filter(|&j| j <= 12);
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
