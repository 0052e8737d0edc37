//! Documents, through `read_document` as `ingest` reads them: DOCX (the zip, and the XML
//! inside it), PDF, HTML, JSONL.

use std::io::{Cursor, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use nf_ingest::{ReadOptions, read_document};

use super::{put, read, tagged, untag};
use crate::{Harness, Setup, Target, Verdict, refused};

pub const DOCX: Target = Target {
    name: "docx",
    what: "a Word file: the zip itself, or word/document.xml re-zipped with the other parts",
    setup: docx_setup,
};

pub const PDF: Target = Target {
    name: "pdf",
    what: "a PDF: objects, streams, Flate data, fonts, text operators",
    setup: pdf_setup,
};

pub const HTML: Target = Target {
    name: "html",
    what: "a web page: tags, attributes, comments, scripts, entities, tables",
    setup: html_setup,
};

pub const JSONL: Target = Target {
    name: "jsonl",
    what: "JSONL rows: text, completion and chat records",
    setup: jsonl_setup,
};

/// One document reader: a file with the right extension, read with options whose PDF
/// timeout is short enough for many inputs.
struct DocHarness {
    seeds: Vec<Vec<u8>>,
    dictionary: &'static [&'static [u8]],
    file: PathBuf,
    opts: ReadOptions,
    /// For DOCX: the parts of the first seed, to re-zip around a mutated document.xml.
    parts: Vec<(String, Vec<u8>)>,
}

impl DocHarness {
    fn new(
        s: &Setup,
        ext: &str,
        seeds: Vec<Vec<u8>>,
        dictionary: &'static [&'static [u8]],
    ) -> Self {
        DocHarness {
            seeds,
            dictionary,
            file: s.work.join(format!("input.{ext}")),
            opts: ReadOptions {
                pdf_timeout: Duration::from_secs(10),
                ..ReadOptions::default()
            },
            parts: Vec::new(),
        }
    }
}

impl Harness for DocHarness {
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn dictionary(&self) -> &[&'static [u8]] {
        self.dictionary
    }
    fn run(&mut self, input: &[u8]) -> Verdict {
        if self.parts.is_empty() {
            put(&self.file, input);
        } else {
            match untag(input, 2) {
                (0, zip) => put(&self.file, zip),
                (_, xml) => put(&self.file, &rezip(&self.parts, xml)),
            }
        }
        match read_document(&self.file, &self.opts) {
            Ok(_) => Verdict::Accepted,
            Err(e) => refused(e),
        }
    }
}

const DOCUMENT_XML: &str = "word/document.xml";

/// Every entry of a zip, in order.
fn unzip(bytes: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).map_err(|e| e.to_string())?;
            let mut data = Vec::new();
            f.read_to_end(&mut data).map_err(|e| e.to_string())?;
            Ok((f.name().to_string(), data))
        })
        .collect()
}

/// `parts` zipped again (stored, not deflated: fast) with `document` as document.xml.
fn rezip(parts: &[(String, Vec<u8>)], document: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in parts {
        let data = if name == DOCUMENT_XML { document } else { data };
        w.start_file(name.as_str(), opts)
            .expect("harness: zip entry");
        w.write_all(data).expect("harness: zip write");
    }
    w.finish().expect("harness: zip finish").into_inner()
}

fn docx_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let docs = s.assets.join("docs");
    let files: Vec<Vec<u8>> = ["par-known-paragraphs.docx", "poi_IllustrativeCases.docx"]
        .iter()
        .map(|n| read(&docs.join(n)))
        .collect::<Result<_, _>>()?;
    let parts = unzip(&files[0])?;
    let mut seeds: Vec<Vec<u8>> = files.iter().map(|f| tagged(0, f)).collect();
    for f in &files {
        let xml = unzip(f)?
            .into_iter()
            .find(|(n, _)| n == DOCUMENT_XML)
            .ok_or("a seed without word/document.xml")?
            .1;
        seeds.push(tagged(1, &xml));
    }
    let mut h = DocHarness::new(s, "docx", seeds, DOCX_TOKENS);
    h.parts = parts;
    Ok(Box::new(h))
}

const DOCX_TOKENS: &[&[u8]] = &[
    b"<w:p>",
    b"</w:p>",
    b"<w:r>",
    b"<w:t>",
    b"</w:t>",
    b"<w:tbl>",
    b"<w:tr>",
    b"<w:tc>",
    b"<w:br/>",
    b"<w:tab/>",
    b"<w:sym w:char=\"F0B7\"/>",
    b"&amp;",
    b"&#x10FFFF;",
    b"&#0;",
    b"<![CDATA[",
    b"]]>",
    b"<!DOCTYPE x [<!ENTITY a \"aaaa\">]>",
    b"&a;",
    b"xmlns:w=",
    b"PK\x03\x04",
];

/// A one-page PDF with an uncompressed text stream and a correct cross-reference table.
fn small_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 712 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_string(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_string(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{o}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for o in offsets {
        out.extend_from_slice(format!("{o:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn pdf_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let seeds = vec![
        read(&s.assets.join("docs/crazyones.pdf"))?,
        small_pdf("Here's to the crazy ones, the misfits, the rebels."),
    ];
    Ok(Box::new(DocHarness::new(s, "pdf", seeds, PDF_TOKENS)))
}

const PDF_TOKENS: &[&[u8]] = &[
    b"obj",
    b"endobj",
    b"stream\n",
    b"endstream",
    b"<<",
    b">>",
    b"[",
    b"]",
    b" R",
    b"/Length 999999999",
    b"/Filter /FlateDecode",
    b"/Filter /LZWDecode",
    b"/Filter /ASCIIHexDecode",
    b"/Type /Page",
    b"/Kids [",
    b"/Parent 2 0 R",
    b"BT",
    b"ET",
    b"Tj",
    b"TJ",
    b"Tf",
    b"(",
    b")",
    b"\\",
    b"<FEFF>",
    b"xref",
    b"trailer",
    b"startxref",
    b"%%EOF",
    b"/Encoding",
    b"/ToUnicode",
    b"-2147483648",
];

fn html_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let story = std::fs::read_to_string(s.assets.join("corpus/wizard_of_oz.txt"))
        .map_err(|e| e.to_string())?;
    let paragraphs: Vec<&str> = story.split("\n\n").skip(20).take(12).collect();
    let body: String = paragraphs.iter().map(|p| format!("<p>{p}</p>\n")).collect();
    let seeds = vec![
        format!("<!DOCTYPE html><html><head><title>Oz</title><style>p {{ color: red }}</style><script>var a = '</p>';</script></head><body><h1>The Wizard</h1>{body}</body></html>").into_bytes(),
        b"<html><body><table><tr><th>Name</th><th>Dose</th></tr><tr><td>A &amp; B</td><td>5&nbsp;mg &lt;daily&gt;</td></tr></table><ul><li>one</li><li>two<br>three</li></ul><!-- note --><pre>  keep\n  this</pre></body></html>".to_vec(),
    ];
    Ok(Box::new(DocHarness::new(s, "html", seeds, HTML_TOKENS)))
}

const HTML_TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"</",
    b"/>",
    b"<p>",
    b"</p>",
    b"<script>",
    b"</script>",
    b"<style>",
    b"<!--",
    b"-->",
    b"<table>",
    b"<tr>",
    b"<td>",
    b"<br>",
    b"<pre>",
    b"<svg>",
    b"</svg>",
    b"<![CDATA[",
    b"&amp;",
    b"&#x1F600;",
    b"&#99999999999;",
    b"&",
    b"\"",
    b"'",
    b"=",
    b"<!DOCTYPE",
    b"<title>",
];

fn jsonl_setup(s: &Setup) -> Result<Box<dyn Harness>, String> {
    let seeds = vec![
        b"{\"text\": \"The patient was seen on Monday.\"}\n{\"text\": \"Follow-up in two weeks.\\nNo change.\"}\n".to_vec(),
        b"{\"prompt\": \"Summarize: the board met.\", \"completion\": \"It met.\"}\n{\"prompt\": \"Q\", \"completion\": \"A\"}\n".to_vec(),
        b"{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}]}\n".to_vec(),
    ];
    Ok(Box::new(DocHarness::new(s, "jsonl", seeds, JSONL_TOKENS)))
}

const JSONL_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"\n",
    b"\\u0000",
    b"\\ud83d",
    b"\"text\"",
    b"\"prompt\"",
    b"\"completion\"",
    b"\"messages\"",
    b"\"role\"",
    b"\"content\"",
    b"\"user\"",
    b"\"assistant\"",
    b"null",
    b"1e999",
    b"\xef\xbb\xbf",
];
