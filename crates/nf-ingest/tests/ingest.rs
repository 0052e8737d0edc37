//! Ingestion on the shared documents and on hostile input: readers, provenance, cleaning,
//! the dataset folder, masks from a real chat template, and an old dataset that survives
//! a failed ingest.

use std::io::Write;
use std::path::{Path, PathBuf};

use nf_data::TokenShard;
use nf_ingest::manifest::{DocumentLine, read_documents};
use nf_ingest::{
    BuildOptions, Document, IngestError, Manifest, ReadOptions, build_dataset, collect_sources,
    read_document,
};
use nf_testkit::{require_assets, temp_dir};
use nf_tokenizer::Tokenizer;

fn read(path: &Path) -> nf_ingest::Result<Document> {
    read_document(path, &ReadOptions::default())
}

/// The unit holding `phrase`, with its (page, paragraph).
fn find(doc: &Document, phrase: &str) -> (Option<u32>, Option<u32>) {
    let u = doc
        .units
        .iter()
        .find(|u| u.text.contains(phrase))
        .unwrap_or_else(|| panic!("{}: no unit contains {phrase:?}", doc.source.display()));
    (u.page, u.paragraph)
}

fn tok512(assets: &Path) -> Tokenizer {
    Tokenizer::from_llama2c(assets.join("llama2c/tok512.bin"), None).unwrap()
}

fn options(out: &Path) -> BuildOptions {
    BuildOptions {
        name: "test".into(),
        out_dir: out.to_path_buf(),
        force: false,
        val_fraction: 0.2,
        seed: 0,
        seq_len: 64,
        overlap: 8,
        mask: true,
        threads: 2,
        read: ReadOptions::default(),
        chat_template: None,
        tokenizer_source: "tok512.bin".into(),
        tokenizer_sha256: None,
        created: "2026-12-02T00:00:00Z".into(),
    }
}

fn build(
    files: &[PathBuf],
    tok: &Tokenizer,
    opts: &BuildOptions,
) -> nf_ingest::Result<nf_ingest::BuildOutcome> {
    build_dataset(files, tok, opts, &mut |_| {})
}

#[test]
fn docx_paragraphs_headings_and_tables() {
    let assets = require_assets!();
    let docs = assets.join("docs");
    let d = read(&docs.join("par-known-paragraphs.docx")).unwrap();
    assert_eq!(d.reader, "docx");
    let texts: Vec<(&str, Option<u32>)> = d
        .units
        .iter()
        .map(|u| (u.text.as_str(), u.paragraph))
        .collect();
    assert_eq!(
        texts,
        [
            ("# Heading Paragraph", Some(1)),
            ("Normal paragraph", Some(2))
        ]
    );

    let d = read(&docs.join("poi_IllustrativeCases.docx")).unwrap();
    assert_eq!(find(&d, "(V) ILLUSTRATIVE CASES"), (None, Some(2)));
    assert_eq!(
        find(&d, "Patrick is single, employed as a waiter"),
        (None, Some(10))
    );
    assert_eq!(
        find(&d, "Eddie is single and self employed"),
        (None, Some(57))
    );
    // Table cells come through as tab-separated rows, with their table and row.
    let header = d
        .units
        .iter()
        .find(|u| u.table == Some(1) && u.row == Some(1))
        .unwrap();
    assert_eq!(header.text, "\t2006\t2007");
    let row = d
        .units
        .iter()
        .find(|u| u.table == Some(1) && u.row == Some(2))
        .unwrap();
    let cells: Vec<&str> = row.text.split('\t').collect();
    assert_eq!(cells.len(), 3, "{:?}", row.text);
    assert!(
        cells[0].starts_with("Gross Income Standard Rate Band"),
        "{:?}",
        cells[0]
    );
    // The cell's paragraphs ("€", "17,542", ...) joined with spaces.
    assert!(cells[1].starts_with("€ 17,542 32,000"), "{:?}", cells[1]);

    let d = read(&docs.join("poi_bug59058.docx")).unwrap();
    assert!(
        d.units
            .iter()
            .any(|u| u.text == "United States\t122\tMissouri\t122")
    );
    assert_eq!(
        find(
            &d,
            "Plasma Levels of Polychlorinated Biphenyls, Non-Hodgkin Lymphoma"
        ),
        (None, Some(49))
    );

    // Tables without a word in them: nothing to train on, reported as empty.
    let e = read(&docs.join("tbl-having-tables.docx")).unwrap_err();
    assert!(matches!(e, IngestError::Empty { .. }), "{e}");
}

#[test]
fn pdf_pages_paragraphs_and_running_headers() {
    let assets = require_assets!();
    let docs = assets.join("docs");
    let d = read(&docs.join("crazyones.pdf")).unwrap();
    assert_eq!((d.reader, d.pages), ("pdf", Some(1)));
    assert_eq!(
        find(&d, "The round pegs in the square holes"),
        (Some(1), Some(3))
    );
    assert_eq!(
        find(&d, "We make tools for these kinds of people."),
        (Some(1), Some(8))
    );

    let d = read(&docs.join("GeoBase_NHNC1_Data_Model_UML_EN.pdf")).unwrap();
    assert_eq!(d.pages, Some(19));
    assert_eq!(find(&d, "REVISION HISTORY"), (Some(3), Some(2)));
    assert_eq!(find(&d, "LRS Linear Reference System").0, Some(5));
    assert_eq!(find(&d, "«spatialDescriptiveEvol» Bank").0, Some(10));
    // The running footer of every page is gone, and the reader says so.
    let footer = "National Hydro Network, Data Model – Edition 1.0 2004-06";
    assert!(d.units.iter().all(|u| !u.text.contains(footer)));
    assert!(
        d.warnings.iter().any(|w| w.contains(footer)),
        "{:?}",
        d.warnings
    );

    let d = read(&docs.join("practical_intro_to_llms_slides.pdf")).unwrap();
    assert_eq!(d.pages, Some(76));
    assert_eq!(find(&d, "GPT-2 has 50,257 tokens").0, Some(10));
    assert_eq!(find(&d, "Tiktoken implements BPE").0, Some(11));
    assert_eq!(find(&d, "Attention is all you need").0, Some(20));

    // A scan: the words come from its OCR text layer.
    let d = read(&docs.join("Seige_of_Vicksburg_Sample_OCR.pdf")).unwrap();
    assert_eq!(d.pages, Some(6));
    assert_eq!(find(&d, "Stayed in camp to-day").0, Some(1));
    assert_eq!(find(&d, "We expect to be paid off soon").0, Some(2));
}

#[test]
fn every_shared_document_is_read() {
    let assets = require_assets!();
    let (files, skipped) = collect_sources(&[assets.join("docs")]);
    assert_eq!(files.len(), 8, "{files:?}");
    assert!(skipped.is_empty());
    for f in &files {
        match read(f) {
            Ok(d) => assert!(d.chars() > 0, "{}", f.display()),
            Err(IngestError::Empty { .. }) if f.ends_with("tbl-having-tables.docx") => {}
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn text_markdown_html_and_jsonl_files() {
    let d = temp_dir("ingest-text");
    let p = |n: &str| d.join(n);
    std::fs::write(
        p("a.txt"),
        "\u{feff}First para-\ngraph here.\r\n\r\nSecond one.",
    )
    .unwrap();
    std::fs::write(p("b.md"), "# Title\n\nSome *markdown* text.\n").unwrap();
    std::fs::write(p("c.html"), "<html><head><style>x{}</style></head><body><p>Hello &amp; bye</p><script>evil()</script></body></html>").unwrap();
    std::fs::write(
        p("d.jsonl"),
        "{\"text\": \"line one\"}\n{\"text\": \"line two\"}\n",
    )
    .unwrap();
    let a = read(&p("a.txt")).unwrap();
    assert_eq!(a.units[0].text, "First paragraph here.");
    assert_eq!(a.units[1].paragraph, Some(2));
    assert_eq!(read(&p("b.md")).unwrap().units[0].text, "# Title");
    let c = read(&p("c.html")).unwrap();
    assert_eq!(
        c.units.iter().map(|u| u.text.as_str()).collect::<Vec<_>>(),
        ["Hello & bye"]
    );
    let j = read(&p("d.jsonl")).unwrap();
    assert_eq!(j.units[1].paragraph, Some(2));
}

/// A zip holding `word/document.xml` of `size` zero bytes, deflated (a few KB per MB).
fn zip_bomb(path: &Path, size: usize) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(size > u32::MAX as usize);
    z.start_file("word/document.xml", opts).unwrap();
    let block = vec![b' '; 1 << 20];
    for _ in 0..size >> 20 {
        z.write_all(&block).unwrap();
    }
    z.finish().unwrap();
}

#[test]
fn hostile_inputs_are_per_file_errors() {
    let assets = require_assets!();
    let d = temp_dir("ingest-bad");
    let p = |n: &str| d.join(n);

    zip_bomb(&p("bomb.docx"), 100 << 20);
    assert!(std::fs::metadata(p("bomb.docx")).unwrap().len() < 1 << 20);
    let e = read(&p("bomb.docx")).unwrap_err();
    assert!(
        matches!(e, IngestError::Refused { .. }) && e.to_string().contains("zip bomb"),
        "{e}"
    );

    std::fs::write(p("fake.docx"), "this is not a zip file at all").unwrap();
    let e = read(&p("fake.docx")).unwrap_err();
    assert!(e.to_string().contains("not a zip"), "{e}");

    let pdf = std::fs::read(assets.join("docs/crazyones.pdf")).unwrap();
    std::fs::write(p("truncated.pdf"), &pdf[..pdf.len() / 2]).unwrap();
    match read(&p("truncated.pdf")) {
        Err(e) => assert!(e.to_string().contains("truncated.pdf"), "{e}"),
        Ok(doc) => assert!(!doc.units.is_empty()),
    }
    // An /Encrypt dictionary whose password is not empty: refused, not misread.
    let marker = b"/Type/XRef";
    let at = pdf
        .windows(marker.len())
        .rposition(|w| w == marker)
        .unwrap()
        + marker.len();
    let mut enc = pdf[..at].to_vec();
    enc.extend_from_slice(b"/Encrypt<</Filter/Standard/V 1/R 2/Length 40/P -4/O(0123456789abcdef0123456789abcdef)/U(0123456789abcdef0123456789abcdef)>>");
    enc.extend_from_slice(&pdf[at..]);
    std::fs::write(p("encrypted.pdf"), &enc).unwrap();
    let e = read(&p("encrypted.pdf")).unwrap_err();
    assert!(matches!(e, IngestError::Refused { .. }), "{e}");
    assert!(e.to_string().contains("encrypted PDF"), "{e}");

    std::fs::write(p("notpdf.pdf"), "hello").unwrap();
    assert!(matches!(
        read(&p("notpdf.pdf")).unwrap_err(),
        IngestError::Corrupt { .. }
    ));

    let mut binary = vec![0u8; 4096];
    binary[100..110].copy_from_slice(b"some bytes");
    std::fs::write(p("binary.txt"), &binary).unwrap();
    assert!(matches!(
        read(&p("binary.txt")).unwrap_err(),
        IngestError::NotText { .. }
    ));

    std::fs::write(p("empty.txt"), "").unwrap();
    assert!(matches!(
        read(&p("empty.txt")).unwrap_err(),
        IngestError::Empty { .. }
    ));
    std::fs::write(p("blank.md"), " \n\n\t\n").unwrap();
    assert!(matches!(
        read(&p("blank.md")).unwrap_err(),
        IngestError::Empty { .. }
    ));

    // A 1 GB file (sparse: no disk used) is refused before it is read.
    let big = std::fs::File::create(p("huge.txt")).unwrap();
    big.set_len(1 << 30).unwrap();
    let e = read(&p("huge.txt")).unwrap_err();
    assert!(matches!(e, IngestError::TooLarge { .. }), "{e}");

    std::fs::write(p("notes.xyz"), "x").unwrap();
    assert!(matches!(
        read(&p("notes.xyz")).unwrap_err(),
        IngestError::Unsupported { .. }
    ));
}

fn lines(dir: &Path) -> Vec<DocumentLine> {
    read_documents(dir).unwrap()
}

#[test]
fn dataset_folder_split_by_document_and_old_dataset_survives() {
    let assets = require_assets!();
    let tok = tok512(&assets);
    let src = temp_dir("ingest-src");
    let stories =
        std::fs::read_to_string(assets.join("corpus/tinystories_valid_sample_30k.txt")).unwrap();
    // One story per line; the sample repeats a few, which must not count here.
    let mut paras: Vec<&str> = Vec::new();
    for l in stories.lines().filter(|l| !l.trim().is_empty()) {
        if !paras.contains(&l) {
            paras.push(l);
        }
    }
    assert!(paras.len() >= 10);
    for k in 0..5 {
        let text = paras[k * 2..k * 2 + 2].join("\n\n");
        std::fs::write(src.join(format!("story{k}.txt")), text).unwrap();
    }
    // A duplicate file, and a paragraph repeated in another file.
    std::fs::copy(src.join("story0.txt"), src.join("zcopy.txt")).unwrap();
    std::fs::write(
        src.join("zrepeat.md"),
        format!("{}\n\nA new closing paragraph of this file.", paras[3]),
    )
    .unwrap();
    let home = temp_dir("ingest-home");
    let out = home.join("datasets/stories");
    let (files, _) = collect_sources(std::slice::from_ref(&src));
    let opts = options(&out);
    let o = build(&files, &tok, &opts).unwrap();
    assert!(o.written);
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.counts.sources, 7);
    assert_eq!((m.counts.ok, m.counts.errors, m.counts.skipped), (6, 0, 1));
    assert_eq!(m.counts.duplicates_removed, 1);
    let copy = m
        .sources
        .iter()
        .find(|s| s.path.ends_with("zcopy.txt"))
        .unwrap();
    assert_eq!(copy.status, "skipped");
    assert!(m.split.val_documents >= 1 && m.split.train_documents >= 1);
    let train = TokenShard::open(out.join("train.bin")).unwrap();
    let val = TokenShard::open(out.join("val.bin")).unwrap();
    assert_eq!(train.len(), m.split.train_tokens);
    assert_eq!(val.len(), m.split.val_tokens);
    assert!(!out.join("train.mask").exists(), "no examples, no mask");
    // Split by document: every window of a source is on the side its entry says.
    let ls = lines(&out);
    for s in m.sources.iter().filter(|s| s.status == "ok") {
        let sides: Vec<&str> = ls
            .iter()
            .filter(|l| l.source == s.path)
            .map(|l| l.split.as_str())
            .collect();
        assert!(!sides.is_empty());
        assert!(
            sides.iter().all(|x| Some(*x) == s.split.as_deref()),
            "{}: {sides:?}",
            s.path
        );
    }
    // Windows fit the budget, and tokens add up.
    assert!(
        ls.iter().all(|l| l.tokens <= 64 + 16),
        "{:?}",
        ls.iter().map(|l| l.tokens).max()
    );
    assert_eq!(
        ls.iter().map(|l| l.tokens).sum::<usize>(),
        train.len() + val.len()
    );
    // Same inputs, more threads: the same bytes.
    let out2 = home.join("datasets/stories2");
    let mut opts2 = options(&out2);
    opts2.threads = 1;
    build(&files, &tok, &opts2).unwrap();
    assert_eq!(
        std::fs::read(out.join("train.bin")).unwrap(),
        std::fs::read(out2.join("train.bin")).unwrap()
    );

    // Without --force an existing dataset is not replaced.
    let before = std::fs::read(out.join("manifest.json")).unwrap();
    let e = build(&files, &tok, &opts).unwrap_err();
    assert!(matches!(e, IngestError::Exists { .. }), "{e}");
    // With --force but a failing file, the old dataset is kept.
    std::fs::write(src.join("broken.docx"), "not a zip").unwrap();
    let (files_bad, _) = collect_sources(std::slice::from_ref(&src));
    let mut force = options(&out);
    force.force = true;
    let o = build(&files_bad, &tok, &force).unwrap();
    assert!(!o.written);
    assert_eq!(o.manifest.counts.errors, 1);
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    // Nothing usable at all: an error, the old dataset still there.
    let e = build(&[src.join("broken.docx")], &tok, &force).unwrap_err();
    assert!(matches!(e, IngestError::NothingIngested(_)), "{e}");
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), before);
    // No staging folders left behind.
    let leftovers: Vec<_> = std::fs::read_dir(home.join("datasets"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // With --force and good files, it is replaced.
    std::fs::remove_file(src.join("broken.docx")).unwrap();
    std::fs::write(
        src.join("extra.txt"),
        "One more story about a cat who liked to sing.",
    )
    .unwrap();
    let (files, _) = collect_sources(std::slice::from_ref(&src));
    assert!(build(&files, &tok, &force).unwrap().written);
    assert_eq!(Manifest::read(&out).unwrap().counts.sources, 8);
}

#[test]
fn chat_mask_covers_exactly_the_assistant_tokens() {
    let assets = require_assets!();
    let g =
        nf_formats::GgufFile::open(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let template = tok.chat_template().unwrap().to_string();
    let src = temp_dir("ingest-chat");
    let chat = src.join("chat.jsonl");
    std::fs::write(
        &chat,
        concat!(
            r#"{"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"}, {"role": "assistant", "content": "Rome."}]}"#,
            "\n",
        ),
    )
    .unwrap();
    // One shape per file: completions go in their own.
    let completions = src.join("completions.jsonl");
    std::fs::write(
        &completions,
        "{\"prompt\": \"2+2=\", \"completion\": \"4\"}\n",
    )
    .unwrap();
    let out = temp_dir("ingest-chat-out").join("ds");
    let mut opts = options(&out);
    opts.chat_template = Some(template.clone());
    opts.val_fraction = 0.0;
    build(&[chat.clone(), completions], &tok, &opts).unwrap();
    let ids = TokenShard::open(out.join("train.bin")).unwrap().to_vec();
    let mask = TokenShard::open(out.join("train.mask")).unwrap().to_vec();
    assert_eq!(ids.len(), mask.len());
    let targets: Vec<u32> = ids
        .iter()
        .zip(&mask)
        .filter(|(_, m)| **m == 1)
        .map(|(i, _)| *i)
        .collect();
    let expect: Vec<u32> = ["Paris.<|im_end|>\n", "Rome.<|im_end|>\n", "4<|im_end|>\n"]
        .iter()
        .flat_map(|t| tok.encode(t, false, true).unwrap())
        .collect();
    assert_eq!(targets, expect, "{:?}", tok.decode(&targets));
    // The whole rendering is there, in order: prompts as context.
    let text = tok.decode(&ids);
    assert!(
        text.contains("What is the capital of France?") && text.contains("2+2="),
        "{text}"
    );
    let m = Manifest::read(&out).unwrap();
    assert_eq!(m.counts.examples, 2);
    assert!(m.settings.mask && m.tokenizer.chat_template);

    // --no-mask: no mask files.
    let out2 = temp_dir("ingest-chat-out").join("ds");
    let mut o2 = options(&out2);
    o2.chat_template = Some(template);
    o2.mask = false;
    build(&[chat], &tok, &o2).unwrap();
    assert!(!out2.join("train.mask").exists());
}

#[test]
fn completions_without_a_template_mask_the_prompt() {
    let assets = require_assets!();
    let tok = tok512(&assets);
    let src = temp_dir("ingest-comp");
    let f = src.join("c.jsonl");
    std::fs::write(
        &f,
        "{\"prompt\": \"Once upon\", \"completion\": \"a time\"}\n",
    )
    .unwrap();
    let out = src.join("ds");
    let mut opts = options(&out);
    opts.val_fraction = 0.0;
    build(&[f], &tok, &opts).unwrap();
    let ids = TokenShard::open(out.join("train.bin")).unwrap().to_vec();
    let mask = TokenShard::open(out.join("train.mask")).unwrap().to_vec();
    let prompt = tok.encode("Once upon", false, false).unwrap();
    let completion = tok.encode("a time", false, false).unwrap();
    assert_eq!(ids[0], tok.bos_id().unwrap());
    assert_eq!(&ids[1..1 + prompt.len()], prompt.as_slice());
    assert!(mask[..1 + prompt.len()].iter().all(|&m| m == 0));
    assert!(mask[1 + prompt.len()..].iter().all(|&m| m == 1));
    assert_eq!(ids.len(), 1 + prompt.len() + completion.len() + 1);
    assert_eq!(*ids.last().unwrap(), tok.eos_id().unwrap());
}

/// The location of the paragraph holding `phrase` in documents.jsonl: the window whose
/// text holds it, and the entry of `units` for the paragraph (windows join their units
/// with blank lines).
fn locate(lines: &[DocumentLine], file: &str, phrase: &str) -> nf_ingest::manifest::Location {
    for l in lines.iter().filter(|l| l.source.ends_with(file)) {
        let Some(text) = &l.text else { continue };
        if let Some(k) = text.split("\n\n").position(|p| p.contains(phrase)) {
            assert_eq!(
                text.split("\n\n").count(),
                l.units.len(),
                "{file}: window {}",
                l.index
            );
            return l.units[k].clone();
        }
    }
    panic!("{file}: {phrase:?} is in no window of documents.jsonl");
}

#[test]
fn shared_documents_keep_their_provenance_in_the_dataset() {
    let assets = require_assets!();
    let tok = tok512(&assets);
    let (files, _) = collect_sources(&[assets.join("docs")]);
    let out = temp_dir("ingest-docs").join("docs");
    let o = build(&files, &tok, &options(&out)).unwrap();
    let c = &o.manifest.counts;
    assert_eq!((c.sources, c.ok, c.errors, c.skipped), (8, 7, 0, 1));
    let ls = lines(&out);
    let page = |f: &str, p: &str| locate(&ls, f, p).page;
    let para = |f: &str, p: &str| locate(&ls, f, p).paragraph;
    assert_eq!(
        page("crazyones.pdf", "The round pegs in the square holes"),
        Some(1)
    );
    assert_eq!(
        page("GeoBase_NHNC1_Data_Model_UML_EN.pdf", "REVISION HISTORY"),
        Some(3)
    );
    assert_eq!(
        page(
            "practical_intro_to_llms_slides.pdf",
            "Tiktoken implements BPE"
        ),
        Some(11)
    );
    assert_eq!(
        page(
            "Seige_of_Vicksburg_Sample_OCR.pdf",
            "We expect to be paid off soon"
        ),
        Some(2)
    );
    assert_eq!(
        para("par-known-paragraphs.docx", "Normal paragraph"),
        Some(2)
    );
    assert_eq!(
        para(
            "poi_IllustrativeCases.docx",
            "Patrick is single, employed as a waiter"
        ),
        Some(10)
    );
    assert_eq!(
        para(
            "poi_bug59058.docx",
            "Plasma Levels of Polychlorinated Biphenyls"
        ),
        Some(49)
    );
    let row = locate(
        &ls,
        "poi_bug59058.docx",
        "United States\t122\tMissouri\t122",
    );
    assert!(row.table.is_some() && row.row == Some(3), "{row:?}");
    // Every source that gave text is identified by its sha256 in each of its windows.
    for s in o.manifest.sources.iter().filter(|s| s.status == "ok") {
        let sha = s.sha256.as_deref().unwrap();
        assert!(
            ls.iter()
                .filter(|l| l.source == s.path)
                .all(|l| l.sha256 == sha)
        );
    }
}

/// The handbook the README's main job trains on: each of its facts must reach the dataset
/// from the right page, table row or paragraph, or the demo would be asking about text the
/// model never saw.
#[test]
fn shipped_handbook_ingests_with_its_facts() {
    let assets = require_assets!();
    let tok = tok512(&assets);
    let handbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/handbook");
    let (files, _) = collect_sources(&[handbook]);
    let out = temp_dir("ingest-handbook").join("handbook");
    let mut opts = options(&out);
    opts.val_fraction = 0.0;
    let o = build(&files, &tok, &opts).unwrap();
    let c = &o.manifest.counts;
    assert_eq!((c.sources, c.ok, c.errors, c.skipped), (3, 3, 0, 0));
    let ls = lines(&out);
    assert!(ls.iter().all(|l| l.split == "train"));
    // train.starts holds where each window begins in train.bin, in documents.jsonl order.
    let starts = TokenShard::open(out.join("train.starts")).unwrap().to_vec();
    let mut expected = vec![0u32];
    for l in &ls[..ls.len() - 1] {
        expected.push(expected.last().unwrap() + l.tokens as u32);
    }
    assert_eq!(starts, expected);
    assert_eq!(
        TokenShard::open(out.join("train.bin")).unwrap().len(),
        ls.iter().map(|l| l.tokens).sum::<usize>()
    );
    let at = |f: &str, p: &str| locate(&ls, f, p);
    assert_eq!(at("policies.pdf", "27 days of paid").page, Some(1));
    assert_eq!(at("policies.pdf", "teal lanyards").page, Some(2));
    let security = at("contacts.docx", "Security desk\t4471");
    assert_eq!((security.table, security.row), (Some(1), Some(2)));
    assert!(
        at("contacts.docx", "Dr. Ansel Marrowby")
            .paragraph
            .is_some()
    );
    assert!(at("welcome.md", "The Copper Kettle").paragraph.is_some());
    assert!(
        at("welcome.md", "Dr. Ottilie Farrowmere")
            .paragraph
            .is_some()
    );
    // Every fact the demo asks about is somewhere in the training text.
    let questions = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/handbook/questions.tsv"),
    )
    .unwrap();
    let text: String = ls.iter().filter_map(|l| l.text.clone()).collect();
    for line in questions.lines() {
        let (q, fact) = line.split_once('\t').unwrap();
        assert!(
            text.contains(fact),
            "{q}: {fact:?} is not in the handbook's text"
        );
    }
}

/// A documents folder holding links back up (`up -> ..`, `self -> .`), a link to a device
/// (`zero.txt -> /dev/zero`) and a FIFO: the walk follows none of them and ends at once
/// (it used to recurse through the loops for minutes and then read /dev/zero forever), and
/// a device or FIFO named directly is refused with a clear error instead of being read.
#[cfg(unix)]
#[test]
fn links_and_special_files_are_not_followed_or_read() {
    use std::os::unix::fs::symlink;
    let dir = temp_dir("ingest-links");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(
        dir.join("a/notes.txt"),
        "A real note about hostile folders.\n",
    )
    .unwrap();
    symlink("..", dir.join("a/up")).unwrap();
    symlink(".", dir.join("a/self")).unwrap();
    symlink("/dev/zero", dir.join("zero.txt")).unwrap();
    symlink(dir.join("a/notes.txt"), dir.join("link.txt")).unwrap();
    let fifo = dir.join("pipe.txt");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    let started = std::time::Instant::now();
    let (files, skipped) = collect_sources(std::slice::from_ref(&dir));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(files, vec![dir.join("a/notes.txt")]);
    for name in ["a/up", "a/self", "zero.txt", "link.txt"] {
        assert!(
            skipped.contains(&dir.join(name)),
            "{name} not skipped: {skipped:?}"
        );
    }
    let mut special = vec![dir.join("zero.txt")];
    if made.is_ok_and(|s| s.success()) {
        assert!(skipped.contains(&fifo));
        special.push(fifo);
    } else {
        eprintln!("note: mkfifo is not available; the FIFO case is not checked");
    }
    for path in special {
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
}

/// A PDF whose one content stream inflates far beyond the limit (here 16 MiB of zeros in a
/// few KiB, against a 1 MiB limit) is refused before extraction, which would inflate it
/// whole with no cap: with a real limit of 512 MiB, a few MB of file used to take GBs.
#[test]
fn a_pdf_decompression_bomb_is_refused() {
    use flate2::{Compression, write::ZlibEncoder};
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..16 {
        z.write_all(&zeros).unwrap();
    }
    let data = z.finish().unwrap();
    let mut pdf = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n".to_vec();
    pdf.extend_from_slice(
        format!(
            "4 0 obj\n<< /Length {} /Filter /FlateDecode >>\nstream\n",
            data.len()
        )
        .as_bytes(),
    );
    pdf.extend_from_slice(&data);
    pdf.extend_from_slice(b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n");
    let dir = temp_dir("ingest-pdf-bomb");
    let path = dir.join("bomb.pdf");
    std::fs::write(&path, &pdf).unwrap();
    let opts = ReadOptions {
        pdf_max_inflated_bytes: 1 << 20,
        ..ReadOptions::default()
    };
    let err = read_document(&path, &opts).unwrap_err().to_string();
    assert!(err.contains("decompression bomb"), "{err}");
    // Within the limit the same file goes on to extraction (and fails there: it has no
    // pages), so the check does not refuse what it should let through.
    let opts = ReadOptions {
        pdf_max_inflated_bytes: 32 << 20,
        ..ReadOptions::default()
    };
    let err = read_document(&path, &opts).unwrap_err().to_string();
    assert!(!err.contains("decompression bomb"), "{err}");
}
