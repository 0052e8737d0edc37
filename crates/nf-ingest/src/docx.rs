//! DOCX: the body of `word/document.xml`, walked with `quick-xml`.
//!
//! Paragraphs (`w:p`) are the text of their runs (`w:t`, with `w:tab` and `w:br`);
//! headings (styles `Title`, `Heading1`...) get Markdown `#` marks and list items (`w:numPr`)
//! a `- `, so a model sees the structure; a table row becomes one unit, its cells joined
//! with tabs (a nested table's text stays inside its cell). Deleted text (`w:delText`) and
//! field codes (`w:instrText`) are not text. Headers, footers and footnotes live in other
//! parts and are not read: they are the boilerplate a PDF's header removal strips too.
//!
//! The zip is untrusted: entry count and the expanded size of what we read are capped
//! (declared sizes can lie, so the cap is applied to the bytes actually inflated).

use std::io::{Cursor, Read};

use quick_xml::events::{BytesStart, Event};

use super::clean::normalize;
use super::error::{IngestError, Result};
use super::{Document, ReadOptions, Unit};

pub(super) fn read_docx(doc: &mut Document, bytes: &[u8], opts: &ReadOptions) -> Result<()> {
    let xml = main_part(doc, bytes, opts)?;
    let mut walker = Walker::default();
    walker.walk(doc, &xml)?;
    doc.units = walker.units;
    doc.paragraphs = Some(walker.body_paragraphs);
    Ok(())
}

/// The bytes of `word/document.xml`, within the limits.
fn main_part(doc: &Document, bytes: &[u8], opts: &ReadOptions) -> Result<Vec<u8>> {
    let path = &doc.source;
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| IngestError::corrupt(path, "DOCX", format!("not a zip archive: {e}")))?;
    if zip.len() > opts.max_zip_entries {
        return Err(IngestError::refused(
            path,
            format!(
                "the zip holds {} entries (the limit is {}): not a plausible Word document",
                zip.len(),
                opts.max_zip_entries
            ),
        ));
    }
    let limit = opts.max_uncompressed_bytes;
    let bomb = |size: String| {
        IngestError::refused(
            path,
            format!(
                "word/document.xml expands to {size} (the limit is {limit} bytes): a zip bomb?"
            ),
        )
    };
    let entry = zip.by_name("word/document.xml").map_err(|e| {
        IngestError::corrupt(
            path,
            "DOCX",
            format!("no word/document.xml ({e}): not a Word document"),
        )
    })?;
    if entry.size() > limit {
        return Err(bomb(format!("{} bytes", entry.size())));
    }
    let mut xml = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut xml)
        .map_err(|e| IngestError::corrupt(path, "DOCX", format!("word/document.xml: {e}")))?;
    if xml.len() as u64 > limit {
        return Err(bomb("more bytes than its header says".into()));
    }
    Ok(xml)
}

/// A paragraph being read.
#[derive(Default)]
struct Para {
    text: String,
    /// Its number among the body's paragraphs, when it is one of them.
    number: Option<u32>,
    heading: Option<usize>,
    list: bool,
}

/// A table being read.
#[derive(Default)]
struct Table {
    number: u32,
    row: u32,
    cells: Vec<String>,
    cell: Option<String>,
}

/// Paragraphs nest only inside text boxes, a level or two deep. Deeper ones are read as
/// part of the paragraph at this depth, so a paragraph's text is copied up to its outer
/// one at most this many times: a hostile file nesting thousands deep took quadratic time.
const MAX_PARA_DEPTH: usize = 4;

#[derive(Default)]
struct Walker {
    /// Local names of the open elements.
    stack: Vec<String>,
    /// Open `p` elements past [`MAX_PARA_DEPTH`], read as part of the innermost paragraph.
    flattened: usize,
    paras: Vec<Para>,
    tables: Vec<Table>,
    in_text: bool,
    body_paragraphs: u32,
    table_count: u32,
    units: Vec<Unit>,
}

impl Walker {
    fn walk(&mut self, doc: &Document, xml: &[u8]) -> Result<()> {
        let mut reader = quick_xml::Reader::from_reader(xml);
        let mut buf = Vec::new();
        loop {
            let event = reader.read_event_into(&mut buf).map_err(|e| {
                IngestError::corrupt(
                    &doc.source,
                    "DOCX",
                    format!(
                        "word/document.xml at byte {}: {e}",
                        reader.buffer_position()
                    ),
                )
            })?;
            match event {
                Event::Start(e) => {
                    let name = local_name(&e);
                    self.start(&name, &e);
                    self.stack.push(name);
                }
                Event::Empty(e) => {
                    let name = local_name(&e);
                    self.start(&name, &e);
                    self.end(&name);
                }
                Event::End(_) => {
                    if let Some(name) = self.stack.pop() {
                        self.end(&name);
                    }
                }
                Event::Text(t) if self.in_text => self.push_text(&t),
                Event::GeneralRef(r) if self.in_text => {
                    if let Some(c) = resolve_ref(&r) {
                        self.push_text(&c);
                    }
                }
                Event::CData(c) if self.in_text => self.push_text(&c),
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        Ok(())
    }

    fn push_text(&mut self, s: &str) {
        if let Some(p) = self.paras.last_mut() {
            p.text.push_str(s);
        }
    }

    fn start(&mut self, name: &str, e: &BytesStart) {
        match name {
            "p" if self.paras.len() >= MAX_PARA_DEPTH => {
                self.flattened += 1;
                self.push_text("\n");
            }
            "p" => {
                let number = (self.stack.last().map(String::as_str) == Some("body")).then(|| {
                    self.body_paragraphs += 1;
                    self.body_paragraphs
                });
                self.paras.push(Para {
                    number,
                    ..Para::default()
                });
            }
            "t" => self.in_text = true,
            "tab" if self.stack.last().map(String::as_str) == Some("r") => self.push_text("\t"),
            "br" | "cr" => self.push_text("\n"),
            "noBreakHyphen" => self.push_text("-"),
            "pStyle" => {
                let style = attr(e, "val").unwrap_or_default();
                if let Some(p) = self.paras.last_mut() {
                    p.heading = heading_level(&style);
                }
            }
            "numPr" => {
                if let Some(p) = self.paras.last_mut() {
                    p.list = true;
                }
            }
            "tbl" => {
                if self.tables.is_empty() {
                    self.table_count += 1;
                }
                self.tables.push(Table {
                    number: self.table_count,
                    ..Table::default()
                });
            }
            "tr" => {
                if let Some(t) = self.tables.last_mut() {
                    t.row += 1;
                    t.cells.clear();
                }
            }
            "tc" => {
                if let Some(t) = self.tables.last_mut() {
                    t.cell = Some(String::new());
                }
            }
            _ => {}
        }
    }

    fn end(&mut self, name: &str) {
        match name {
            "t" => self.in_text = false,
            // The innermost open paragraph is a flattened one while any is open.
            "p" if self.flattened > 0 => self.flattened -= 1,
            "p" => {
                let Some(p) = self.paras.pop() else { return };
                let body = normalize(&p.text);
                if body.is_empty() {
                    return;
                }
                let text = match (p.heading, p.list) {
                    (Some(level), _) => format!("{} {body}", "#".repeat(level)),
                    (None, true) => format!("- {body}"),
                    (None, false) => body,
                };
                if let Some(outer) = self.paras.last_mut() {
                    // A paragraph inside a paragraph: a text box's content.
                    outer.text.push('\n');
                    outer.text.push_str(&text);
                } else if let Some(cell) = self.tables.last_mut().and_then(|t| t.cell.as_mut()) {
                    if !cell.is_empty() {
                        cell.push(' ');
                    }
                    cell.push_str(&text.replace('\n', " "));
                } else {
                    self.units.push(Unit {
                        text,
                        page: None,
                        paragraph: p.number,
                        table: None,
                        row: None,
                    });
                }
            }
            "tc" => {
                if let Some(t) = self.tables.last_mut() {
                    let cell = t.cell.take().unwrap_or_default();
                    t.cells.push(cell.replace('\t', " "));
                }
            }
            "tr" => {
                let depth = self.tables.len();
                let Some(t) = self.tables.last_mut() else {
                    return;
                };
                if t.cells.iter().all(|c| c.trim().is_empty()) {
                    return;
                }
                if depth == 1 {
                    let unit = Unit {
                        text: t.cells.join("\t"),
                        page: None,
                        paragraph: None,
                        table: Some(t.number),
                        row: Some(t.row),
                    };
                    self.units.push(unit);
                } else {
                    let row = t.cells.join(" ");
                    if let Some(cell) = self.tables[depth - 2].cell.as_mut() {
                        if !cell.is_empty() {
                            cell.push(' ');
                        }
                        cell.push_str(&row);
                    }
                }
            }
            "tbl" => {
                self.tables.pop();
            }
            _ => {}
        }
    }
}

/// `Title` is a level-1 heading, `HeadingN` (and `heading N`) level N.
fn heading_level(style: &str) -> Option<usize> {
    if style.eq_ignore_ascii_case("title") {
        return Some(1);
    }
    let lower = style.to_ascii_lowercase();
    let n = lower.strip_prefix("heading")?.trim();
    n.parse::<usize>().ok().filter(|n| (1..=9).contains(n))
}

fn local_name(e: &BytesStart) -> String {
    e.local_name().as_ref().to_string()
}

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find_map(|a| (a.key.local_name().as_ref() == name).then(|| a.value.into_owned()))
}

/// The character an entity or character reference stands for (quick-xml reports `&amp;`
/// and `&#233;` as their own events).
fn resolve_ref(r: &quick_xml::events::BytesRef) -> Option<String> {
    if let Ok(Some(c)) = r.resolve_char_ref() {
        return Some(c.to_string());
    }
    quick_xml::escape::resolve_xml_entity(r).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn units(body: &str) -> (Vec<Unit>, u32) {
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
        );
        let doc = Document::new(Path::new("t.docx"), b"", "docx");
        let mut w = Walker::default();
        w.walk(&doc, xml.as_bytes()).unwrap();
        (w.units, w.body_paragraphs)
    }

    /// Paragraphs nested 60,000 deep (a hostile file): read in linear time, every word kept
    /// (unflattened, the copies up took about 40 s).
    #[test]
    fn deeply_nested_paragraphs_take_linear_time() {
        let depth = 60_000;
        let body = "<w:p><w:r><w:t>word</w:t></w:r>".repeat(depth) + &"</w:p>".repeat(depth);
        let started = std::time::Instant::now();
        let (u, _) = units(&body);
        assert!(started.elapsed().as_secs() < 5, "{:?}", started.elapsed());
        let words: usize = u.iter().map(|u| u.text.matches("word").count()).sum();
        assert_eq!(words, depth);
    }

    #[test]
    fn paragraphs_headings_lists_and_tables() {
        let (u, n) = units(concat!(
            r#"<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Pay &amp; leave</w:t></w:r></w:p>"#,
            r#"<w:p/>"#,
            r#"<w:p><w:r><w:t xml:space="preserve">Tom </w:t></w:r><w:r><w:tab/><w:t>&#233;t&#xE9;</w:t></w:r>"#,
            r#"<w:r><w:delText>gone</w:delText><w:instrText>PAGE</w:instrText></w:r></w:p>"#,
            r#"<w:p><w:pPr><w:numPr><w:ilvl w:val="0"/></w:numPr></w:pPr><w:r><w:t>item</w:t></w:r></w:p>"#,
            r#"<w:tbl><w:tr><w:tc><w:p><w:r><w:t>a</w:t></w:r></w:p><w:p><w:r><w:t>b</w:t></w:r></w:p></w:tc>"#,
            r#"<w:tc><w:tbl><w:tr><w:tc><w:p><w:r><w:t>inner</w:t></w:r></w:p></w:tc></w:tr></w:tbl></w:tc></w:tr>"#,
            r#"<w:tr><w:tc><w:p/></w:tc><w:tc><w:p/></w:tc></w:tr></w:tbl>"#,
            r#"<w:p><w:r><w:t>after</w:t></w:r></w:p>"#,
        ));
        type Row<'a> = (&'a str, Option<u32>, Option<u32>, Option<u32>);
        let got: Vec<Row> = u
            .iter()
            .map(|u| (u.text.as_str(), u.paragraph, u.table, u.row))
            .collect();
        assert_eq!(
            got,
            [
                ("## Pay & leave", Some(1), None, None),
                ("Tom \tété", Some(3), None, None),
                ("- item", Some(4), None, None),
                ("a b\tinner", None, Some(1), Some(1)),
                ("after", Some(5), None, None),
            ]
        );
        assert_eq!(n, 5);
    }

    #[test]
    fn malformed_xml_is_corrupt() {
        let doc = Document::new(Path::new("t.docx"), b"", "docx");
        let e = Walker::default()
            .walk(&doc, b"<w:document><w:body><w:p></w:r></w:body>")
            .unwrap_err();
        assert!(matches!(e, IngestError::Corrupt { .. }), "{e}");
    }
}
