//! Shared helpers for the tokenizer tests: llama.cpp's test-vector files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// One test case: input text and expected ids (no BOS).
pub struct Case {
    pub text: String,
    pub ids: Vec<u32>,
}

/// Reads `<vocab>.gguf.inp` / `.out` as llama.cpp's tests/test-tokenizer-0.cpp does: cases
/// are separated by `\n__ggml_vocab_test__\n` (the file ends with one, which leaves no
/// empty case after it), and each `.out` line holds space-separated ids.
pub fn read_cases(gguf: &Path) -> Vec<Case> {
    let inp = std::fs::read_to_string(with_suffix(gguf, ".inp")).expect("read .inp");
    let out = std::fs::read_to_string(with_suffix(gguf, ".out")).expect("read .out");
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(SEP) {
            Some(i) => {
                texts.push(inp[pos..pos + i].to_string());
                pos += i + SEP.len();
            }
            None => {
                texts.push(inp[pos..].to_string());
                break;
            }
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(texts.len(), lines.len(), "{}: case count", gguf.display());
    texts
        .into_iter()
        .zip(lines)
        .map(|(text, line)| Case {
            text,
            ids: line
                .split_whitespace()
                .map(|t| t.parse().expect("id"))
                .collect(),
        })
        .collect()
}

pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Every vocab GGUF with test vectors beside it, sorted by name.
pub fn vocab_files(assets: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(assets.join("llamacpp-vocab"))
        .expect("llamacpp-vocab folder")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") && with_suffix(p, ".inp").is_file())
        .collect();
    v.sort();
    v
}

/// Compares every case and panics with all mismatches listed.
pub fn check_cases(name: &str, cases: &[Case], encode: impl Fn(&str) -> Vec<u32>) {
    let mut failures = Vec::new();
    for c in cases {
        let got = encode(&c.text);
        if got != c.ids {
            failures.push(format!(
                "  {:?}\n    expected {:?}\n    got      {:?}",
                c.text, c.ids, got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
