//! GGUF: the real SmolLM2 model and llama.cpp's vocab files, writer round trips, and corrupt
//! files (built with the writer, then damaged), each of which must be an error, never a panic.

use std::path::{Path, PathBuf};

use nf_formats::gguf::MetaArray;
use nf_formats::quant::dequantize_to_vec;
use nf_formats::{FormatError, GgmlType, GgufFile, GgufWriteError, GgufWriter, MetaValue};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn array(elem_type: u32, values: Vec<MetaValue>) -> MetaValue {
    MetaValue::Array(MetaArray { elem_type, values })
}

fn string(s: &str) -> MetaValue {
    MetaValue::String(s.to_string())
}

/// Writes `bytes` to a fresh temporary file and opens it as GGUF.
fn open_bytes(tag: &str, bytes: &[u8]) -> (PathBuf, Result<GgufFile, FormatError>) {
    let path = nf_testkit::temp_dir(tag).join("model.gguf");
    std::fs::write(&path, bytes).unwrap();
    let result = GgufFile::open(&path);
    (path, result)
}

/// Opens damaged bytes and returns the error's message, checking that it names the file.
fn open_err(tag: &str, bytes: &[u8]) -> (FormatError, String) {
    let (path, result) = open_bytes(tag, bytes);
    let err = result.expect_err(tag);
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "{tag}: message does not name the file: {msg}"
    );
    (err, msg)
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not found", String::from_utf8_lossy(needle)))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Where a metadata entry's fields are: the key's length prefix, its type id, its value.
struct KeyAt {
    len: usize,
    ty: usize,
    value: usize,
}

fn key_at(bytes: &[u8], key: &str) -> KeyAt {
    let name = find(bytes, key.as_bytes());
    KeyAt {
        len: name - 8,
        ty: name + key.len(),
        value: name + key.len() + 4,
    }
}

/// Where a tensor info's fields are, for a tensor of rank `rank`.
struct TensorAt {
    name_len: usize,
    rank: usize,
    dims: usize,
    ty: usize,
    offset: usize,
}

fn tensor_at(bytes: &[u8], name: &str, rank: usize) -> TensorAt {
    // Search for the length prefix too, so a metadata string that contains the name cannot
    // be mistaken for the tensor info.
    let mut needle = (name.len() as u64).to_le_bytes().to_vec();
    needle.extend(name.as_bytes());
    let at = find(bytes, &needle);
    let rank_at = at + needle.len();
    TensorAt {
        name_len: at,
        rank: rank_at,
        dims: rank_at + 4,
        ty: rank_at + 4 + 8 * rank,
        offset: rank_at + 4 + 8 * rank + 4,
    }
}

/// A small file with every kind of field, whose last tensor ends exactly at the end of the
/// file (its size is a multiple of the alignment), so every strict prefix is truncated.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", string("llama")).unwrap();
    w.set("test.u32", MetaValue::U32(7)).unwrap();
    w.set("test.bool", MetaValue::Bool(true)).unwrap();
    w.set("test.f64", MetaValue::F64(0.5)).unwrap();
    let ints = (1..=3).map(MetaValue::U32).collect();
    w.set("test.ints", array(4, ints)).unwrap();
    w.set("test.strings", array(8, vec![string("a"), string("bc")]))
        .unwrap();
    let f32s: Vec<u8> = (0..16).flat_map(|i| (i as f32).to_le_bytes()).collect();
    w.add_tensor("first", &[8, 2], GgmlType::F32, f32s).unwrap();
    w.add_tensor("second", &[64], GgmlType::Q8_0, vec![0u8; 68])
        .unwrap();
    w.add_tensor("last", &[16], GgmlType::F16, vec![0u8; 32])
        .unwrap();
    w.to_bytes()
}

// ---------------------------------------------------------------------------------------
// (a) The real model
// ---------------------------------------------------------------------------------------

fn smollm(assets: &Path) -> GgufFile {
    GgufFile::open(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap()
}

#[test]
fn smollm2_header_metadata_and_tensor_types() {
    let assets = nf_testkit::require_assets!();
    let f = smollm(&assets);
    assert_eq!(f.version, 3);
    assert_eq!(f.architecture(), Some("llama"));
    assert_eq!(f.get_u64("llama.block_count"), Some(30));
    assert_eq!(f.get_u64("llama.embedding_length"), Some(576));
    assert_eq!(f.alignment, 32);
    let q4_1 = f
        .tensors
        .iter()
        .filter(|t| t.ggml_type == GgmlType::Q4_1)
        .count();
    assert_eq!(q4_1, 210);
    let embd = f.tensor_info("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.dims, vec![576, 49152]);
    assert_eq!(embd.shape(), vec![49152, 576]);
}

#[test]
fn smollm2_attn_q_dequantizes_to_plausible_weights() {
    let assets = nf_testkit::require_assets!();
    let f = smollm(&assets);
    let (info, data) = f.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(info.ggml_type, GgmlType::Q4_1);
    assert_eq!(info.dims, vec![576, 576]);
    let w = dequantize_to_vec(info.ggml_type, data, info.n_elements() as usize).unwrap();
    assert!(w.iter().all(|v| v.is_finite()));
    let n = w.len() as f64;
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = w
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    assert!((0.005..1.0).contains(&std), "std {std}");
    assert!(mean.abs() < std, "mean {mean} vs std {std}");
}

#[test]
fn smollm2_every_tensor_dequantizes_to_finite_values() {
    let assets = nf_testkit::require_assets!();
    let f = smollm(&assets);
    assert_eq!(f.tensors.len(), 272);
    for info in &f.tensors {
        let w = dequantize_to_vec(
            info.ggml_type,
            f.tensor_data(info),
            info.n_elements() as usize,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", info.name));
        assert!(w.iter().all(|v| v.is_finite()), "{}", info.name);
    }
}

#[test]
fn smollm2_rewritten_by_our_writer_is_byte_identical() {
    // The model was written by llama.cpp's converter; writing its metadata and tensors back
    // out with our writer must reproduce the file exactly, padding included.
    let assets = nf_testkit::require_assets!();
    let f = smollm(&assets);
    let mut w = GgufWriter::new();
    for (k, v) in &f.metadata {
        w.set(k.clone(), v.clone()).unwrap();
    }
    for t in &f.tensors {
        w.add_tensor(t.name.clone(), &t.dims, t.ggml_type, f.tensor_data(t))
            .unwrap();
    }
    let original = std::fs::read(f.path()).unwrap();
    let ours = w.to_bytes();
    assert_eq!(ours.len(), original.len());
    assert!(ours == original, "first difference at byte {}", {
        ours.iter()
            .zip(&original)
            .position(|(a, b)| a != b)
            .unwrap()
    });
}

// ---------------------------------------------------------------------------------------
// (b) llama.cpp's vocab-only files
// ---------------------------------------------------------------------------------------

#[test]
fn llamacpp_vocab_files_open_with_tokenizer_metadata() {
    let assets = nf_testkit::require_assets!();
    let expected_tokens = [
        ("ggml-vocab-llama-spm.gguf", 32000),
        ("ggml-vocab-phi-3.gguf", 32064),
        ("ggml-vocab-llama-bpe.gguf", 128256),
        ("ggml-vocab-qwen2.gguf", 151936),
        ("ggml-vocab-qwen35.gguf", 151936),
        ("ggml-vocab-gpt-2.gguf", 50257),
    ];
    let mut opened = 0;
    for entry in std::fs::read_dir(assets.join("llamacpp-vocab")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        let f = GgufFile::open(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(f.tensors.is_empty(), "{name} has tensors");
        let model = f.get_str("tokenizer.ggml.model");
        assert!(model.is_some_and(|m| !m.is_empty()), "{name}: no model");
        let tokens = f.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array);
        let n = tokens.map_or(0, <[MetaValue]>::len);
        if let Some(&(_, want)) = expected_tokens.iter().find(|(f, _)| *f == name) {
            assert_eq!(n, want, "{name}: token count");
        }
        assert!(n > 0, "{name}: no tokens");
        opened += 1;
    }
    assert!(opened >= expected_tokens.len(), "only {opened} vocab files");
}

#[test]
fn llamacpp_vocab_files_rewritten_match_up_to_final_padding() {
    // These files were written by gguf-py without padding after the header when there are
    // no tensors; ours pads to the alignment, as llama.cpp's own writer does. Everything
    // before that padding must be identical.
    let assets = nf_testkit::require_assets!();
    for entry in std::fs::read_dir(assets.join("llamacpp-vocab")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "gguf") {
            continue;
        }
        let f = GgufFile::open(&path).unwrap();
        let mut w = GgufWriter::new();
        for (k, v) in &f.metadata {
            w.set(k.clone(), v.clone()).unwrap();
        }
        let original = std::fs::read(&path).unwrap();
        let ours = w.to_bytes();
        assert_eq!(
            ours.len() as u64,
            (original.len() as u64).next_multiple_of(32)
        );
        assert!(ours[..original.len()] == original[..], "{}", path.display());
        assert!(ours[original.len()..].iter().all(|&b| b == 0));
    }
}

// ---------------------------------------------------------------------------------------
// Writer round trips
// ---------------------------------------------------------------------------------------

/// One value of every metadata type, arrays of every element type, and empty arrays.
fn every_metadata_type() -> Vec<(String, MetaValue)> {
    let scalars = vec![
        MetaValue::U8(200),
        MetaValue::I8(-5),
        MetaValue::U16(60000),
        MetaValue::I16(-30000),
        MetaValue::U32(4_000_000_000),
        MetaValue::I32(-2_000_000_000),
        MetaValue::F32(1.5),
        MetaValue::Bool(true),
        string("héllo, wörld ✓"),
        MetaValue::U64(u64::MAX),
        MetaValue::I64(i64::MIN),
        MetaValue::F64(-2.25e300),
    ];
    let mut out: Vec<(String, MetaValue)> = Vec::new();
    for (i, v) in scalars.iter().enumerate() {
        out.push((format!("scalar.{i}"), v.clone()));
        // An array of each element type, holding this value and a second one.
        let second = match v {
            MetaValue::Bool(_) => MetaValue::Bool(false),
            MetaValue::String(_) => string(""),
            other => other.clone(),
        };
        let elem_type = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12][i];
        out.push((
            format!("array.{i}"),
            array(elem_type, vec![v.clone(), second]),
        ));
    }
    out.push(("empty.u8".into(), array(0, vec![])));
    out.push(("empty.string".into(), array(8, vec![])));
    out.push(("string.empty".into(), string("")));
    out
}

fn sample_tensors() -> Vec<(&'static str, Vec<u64>, GgmlType, Vec<u8>)> {
    let pattern = |n: usize| (0..n).map(|i| (i * 7 + 3) as u8).collect::<Vec<u8>>();
    vec![
        ("a.f32", vec![3, 2], GgmlType::F32, pattern(24)),
        ("b.q8_0", vec![32, 2], GgmlType::Q8_0, pattern(68)),
        ("c.q4_k", vec![256], GgmlType::Q4K, pattern(144)),
        ("d.bf16", vec![5], GgmlType::BF16, pattern(10)),
        ("e.q4_1", vec![32, 1, 1, 2], GgmlType::Q4_1, pattern(40)),
    ]
}

fn write_and_read(alignment: Option<u32>) -> (GgufFile, Vec<(String, MetaValue)>) {
    let mut meta = every_metadata_type();
    if let Some(a) = alignment {
        meta.push(("general.alignment".into(), MetaValue::U32(a)));
    }
    let mut w = GgufWriter::new();
    for (k, v) in &meta {
        w.set(k.clone(), v.clone()).unwrap();
    }
    for (name, dims, ty, data) in sample_tensors() {
        w.add_tensor(name, &dims, ty, data).unwrap();
    }
    let path = nf_testkit::temp_dir("gguf-roundtrip").join("out.gguf");
    w.write(&path).unwrap();
    (GgufFile::open(&path).unwrap(), meta)
}

#[test]
fn writer_round_trips_every_metadata_type_and_tensors() {
    for alignment in [None, Some(64), Some(1)] {
        let (f, meta) = write_and_read(alignment);
        let align = u64::from(alignment.unwrap_or(32));
        assert_eq!(f.version, 3);
        assert_eq!(f.alignment, align);
        assert_eq!(f.metadata, meta, "metadata, in order");
        let expected = sample_tensors();
        assert_eq!(f.tensors.len(), expected.len());
        for (info, (name, dims, ty, data)) in f.tensors.iter().zip(&expected) {
            assert_eq!(info.name, *name);
            assert_eq!(info.dims, *dims);
            assert_eq!(info.ggml_type, *ty);
            assert_eq!(info.offset % align, 0, "{name} offset {}", info.offset);
            assert_eq!(f.tensor_data(info), &data[..], "{name} data");
        }
        let len = std::fs::metadata(f.path()).unwrap().len();
        assert_eq!(len % align, 0, "file ends padded to the alignment");
    }
}

#[test]
fn writer_replaces_an_existing_file_and_leaves_no_temporary() {
    let dir = nf_testkit::temp_dir("gguf-replace");
    let path = dir.join("model.gguf");
    std::fs::write(&path, b"old contents").unwrap();
    let mut w = GgufWriter::new();
    w.set("general.name", string("new")).unwrap();
    w.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.get_str("general.name"), Some("new"));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.gguf")]);
}

#[test]
fn writer_failure_names_the_path() {
    let path = nf_testkit::temp_dir("gguf-nodir").join("missing/dir/model.gguf");
    let err = GgufWriter::new().write(&path).unwrap_err();
    assert!(matches!(err, FormatError::Io { .. }), "{err}");
    assert!(err.to_string().contains("missing/dir/model.gguf"), "{err}");
}

#[test]
fn writer_set_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.set("a", MetaValue::U32(1)).unwrap();
    w.set("b", MetaValue::U32(2)).unwrap();
    w.set("a", string("again")).unwrap();
    let (_, f) = open_bytes("gguf-set", &w.to_bytes());
    let f = f.unwrap();
    assert_eq!(
        f.metadata,
        vec![
            ("a".into(), string("again")),
            ("b".into(), MetaValue::U32(2))
        ]
    );
}

#[test]
fn writer_refuses_invalid_metadata_and_tensors() {
    let meta_err = |key: &str, v: MetaValue| GgufWriter::new().set(key, v).unwrap_err();
    let nested = array(9, vec![array(0, vec![])]);
    let mixed = array(4, vec![MetaValue::U32(1), MetaValue::I32(2)]);
    for (key, value, says) in [
        ("x", nested, "nested"),
        ("x", mixed, "element 1"),
        ("x", array(13, vec![]), "unknown array element type"),
        ("", MetaValue::U8(0), "empty"),
        ("general.alignment", MetaValue::U32(48), "power of two"),
        ("general.alignment", MetaValue::U32(0), "power of two"),
        ("general.alignment", MetaValue::U64(64), "u32"),
    ] {
        let err = meta_err(key, value);
        assert!(matches!(err, GgufWriteError::Metadata { .. }));
        assert!(err.to_string().contains(says), "{err}");
    }

    let mut w = GgufWriter::new();
    w.add_tensor("t", &[32], GgmlType::F32, vec![0u8; 128])
        .unwrap();
    let long = "n".repeat(64);
    let cases: Vec<(&str, Vec<u64>, GgmlType, usize, &str)> = vec![
        ("t", vec![32], GgmlType::F32, 128, "already"),
        (&long, vec![32], GgmlType::F32, 128, "names must be"),
        ("", vec![32], GgmlType::F32, 128, "names must be"),
        ("u", vec![32], GgmlType::F32, 127, "127 were given"),
        ("u", vec![], GgmlType::F32, 0, "rank 0"),
        ("u", vec![1, 1, 1, 1, 1], GgmlType::F32, 4, "rank 5"),
        ("u", vec![16, 2], GgmlType::Q4_0, 18, "whole number"),
        ("u", vec![1 << 32, 1 << 32], GgmlType::F32, 0, "overflow"),
        ("u", vec![1 << 62], GgmlType::F32, 0, "overflow"),
    ];
    for (name, dims, ty, len, says) in cases {
        let err = w.add_tensor(name, &dims, ty, vec![0u8; len]).unwrap_err();
        assert!(matches!(err, GgufWriteError::Tensor { .. }));
        assert!(err.to_string().contains(says), "{err}");
    }
}

// ---------------------------------------------------------------------------------------
// (c) Bad input: each is an error naming the file, never a panic
// ---------------------------------------------------------------------------------------

#[test]
fn small_file_is_valid() {
    let (_, f) = open_bytes("gguf-small", &small_file());
    let f = f.unwrap();
    assert_eq!(f.tensors.len(), 3);
    assert_eq!(f.get_u64("test.u32"), Some(7));
}

#[test]
fn empty_file() {
    let (err, msg) = open_err("gguf-empty", &[]);
    assert!(matches!(err, FormatError::WrongFormat { .. }), "{msg}");
    assert!(msg.contains("empty"), "{msg}");
}

#[test]
fn wrong_magic() {
    let mut b = small_file();
    b[..4].copy_from_slice(b"GGML");
    let (err, msg) = open_err("gguf-magic", &b);
    assert!(matches!(err, FormatError::WrongFormat { .. }), "{msg}");
    assert!(msg.contains("expected \"GGUF\""), "{msg}");
}

#[test]
fn every_truncation_is_an_error() {
    let full = small_file();
    assert_eq!(full.len() % 32, 0);
    let dir = nf_testkit::temp_dir("gguf-trunc");
    let path = dir.join("cut.gguf");
    for cut in 0..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let err = GgufFile::open(&path)
            .map(|f| f.tensors.len())
            .expect_err(&format!("prefix of {cut} bytes opened"));
        let msg = err.to_string();
        assert!(
            [
                "empty",
                "truncated",
                "magic",
                "more than the file",
                "past the end",
                "cannot fit"
            ]
            .iter()
            .any(|s| msg.contains(s)),
            "cut {cut}: unhelpful message: {msg}"
        );
    }
}

#[test]
fn absurd_counts() {
    for (at, what) in [(8, "tensor count"), (16, "metadata count")] {
        for v in [u64::MAX, 1 << 40] {
            let mut b = small_file();
            put_u64(&mut b, at, v);
            let (err, msg) = open_err("gguf-count", &b);
            assert!(matches!(err, FormatError::Corrupt { .. }), "{what}: {msg}");
            assert!(msg.contains("cannot fit"), "{what}: {msg}");
        }
    }
}

#[test]
fn absurd_string_lengths() {
    // A key's length, a string value's length, and a tensor name's length.
    let b = small_file();
    let positions = [
        key_at(&b, "test.u32").len,
        key_at(&b, "general.architecture").value,
        tensor_at(&b, "second", 1).name_len,
    ];
    for at in positions {
        for v in [u64::MAX, u64::MAX / 2, 1 << 32] {
            let mut b = b.clone();
            put_u64(&mut b, at, v);
            let (_, msg) = open_err("gguf-strlen", &b);
            assert!(msg.contains("more than the file can hold"), "{msg}");
        }
    }
}

#[test]
fn absurd_array_length() {
    let b = small_file();
    for key in ["test.ints", "test.strings"] {
        // The array value is its element type (u32), then its length (u64).
        let at = key_at(&b, key).value + 4;
        for v in [u64::MAX, 1 << 61, 1000] {
            let mut b = b.clone();
            put_u64(&mut b, at, v);
            let (err, msg) = open_err("gguf-arrlen", &b);
            assert!(matches!(err, FormatError::Corrupt { .. }), "{msg}");
            assert!(msg.contains(key), "{msg}");
        }
    }
}

#[test]
fn unknown_value_types() {
    let b = small_file();
    let mut scalar = b.clone();
    put_u32(&mut scalar, key_at(&b, "test.u32").ty, 13);
    let (_, msg) = open_err("gguf-vtype", &scalar);
    assert!(msg.contains("unknown metadata value type 13"), "{msg}");

    let mut elem = b.clone();
    put_u32(&mut elem, key_at(&b, "test.ints").value, 99);
    let (_, msg) = open_err("gguf-etype", &elem);
    assert!(msg.contains("unknown array element type 99"), "{msg}");

    let mut boolean = b.clone();
    boolean[key_at(&b, "test.bool").value] = 2;
    let (_, msg) = open_err("gguf-bool", &boolean);
    assert!(msg.contains("bool value 2"), "{msg}");
}

#[test]
fn tensor_offset_past_the_end() {
    let b = small_file();
    let at = tensor_at(&b, "first", 2).offset;
    for v in [1 << 40, u64::MAX - 31, 4096] {
        let mut b = b.clone();
        put_u64(&mut b, at, v);
        let (err, msg) = open_err("gguf-offset", &b);
        assert!(matches!(err, FormatError::Corrupt { .. }), "{msg}");
        assert!(msg.contains("past the end"), "{msg}");
    }
}

#[test]
fn misaligned_tensor_offset() {
    let mut b = small_file();
    let at = tensor_at(&b, "second", 1).offset;
    put_u64(&mut b, at, 72);
    let (_, msg) = open_err("gguf-misaligned", &b);
    assert!(msg.contains("not aligned to 32"), "{msg}");
}

#[test]
fn unknown_ggml_type_id() {
    // 4 and 5 are the retired Q4_2/Q4_3; 39 is beyond every type this crate knows.
    let b = small_file();
    let at = tensor_at(&b, "last", 1).ty;
    for id in [4, 5, 39, u32::MAX] {
        let mut b = b.clone();
        put_u32(&mut b, at, id);
        let (err, msg) = open_err("gguf-ggmltype", &b);
        assert!(matches!(err, FormatError::Unsupported { .. }), "{msg}");
        assert!(msg.contains(&format!("ggml type id {id}")), "{msg}");
    }
}

#[test]
fn dims_overflow_and_bad_rank() {
    let b = small_file();
    let first = tensor_at(&b, "first", 2);
    // 2^32 * 2^32 overflows u64; 2^62 * 2 elements of 4 bytes overflow the byte count.
    for (d0, d1) in [(1u64 << 32, 1u64 << 32), (1 << 62, 2), (u64::MAX, u64::MAX)] {
        let mut b = b.clone();
        put_u64(&mut b, first.dims, d0);
        put_u64(&mut b, first.dims + 8, d1);
        let (err, msg) = open_err("gguf-dims", &b);
        assert!(matches!(err, FormatError::Corrupt { .. }), "{msg}");
        assert!(msg.contains("`first`") && msg.contains("overflow"), "{msg}");
    }
    for rank in [0, 5, u32::MAX] {
        let mut b = b.clone();
        put_u32(&mut b, first.rank, rank);
        let (_, msg) = open_err("gguf-rank", &b);
        assert!(msg.contains(&format!("rank {rank}")), "{msg}");
    }
}

#[test]
fn bad_alignment_metadata() {
    let mut w = GgufWriter::new();
    w.set("general.alignment", MetaValue::U32(64)).unwrap();
    let good = w.to_bytes();
    for bad in [0, 3, 48, 1 << 30] {
        let mut b = good.clone();
        put_u32(&mut b, key_at(&good, "general.alignment").value, bad);
        let (_, msg) = open_err("gguf-align", &b);
        assert!(msg.contains("general.alignment"), "{msg}");
    }
}

#[test]
fn unsupported_versions() {
    for (version, says) in [
        (1u32, "v1"),
        (4, "version 4"),
        (0x0300_0000, "big-endian"),
        (0, "version 0"),
    ] {
        let mut b = small_file();
        put_u32(&mut b, 4, version);
        let (err, msg) = open_err("gguf-version", &b);
        assert!(matches!(err, FormatError::Unsupported { .. }), "{msg}");
        assert!(msg.contains(says), "{msg}");
    }
}

#[test]
fn nonexistent_path_is_an_io_error_naming_it() {
    let path = nf_testkit::temp_dir("gguf-missing").join("no-such-model.gguf");
    let err = GgufFile::open(&path).unwrap_err();
    assert!(matches!(err, FormatError::Io { .. }), "{err}");
    assert!(err.to_string().contains("no-such-model.gguf"), "{err}");
}

#[test]
fn directory_is_an_error() {
    let dir = nf_testkit::temp_dir("gguf-dir");
    assert!(GgufFile::open(&dir).is_err());
}
