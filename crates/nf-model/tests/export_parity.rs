//! The export parity check on stories260K: a GGUF written and read back passes, the same
//! quantization done in memory matches the file exactly, and a wrong layout (q rows left
//! in the other RoPE order) is caught even in f32.

use nf_engine::linear::Weight;
use nf_formats::GgmlType;
use nf_model::Model;
use nf_model::export::gguf::{export_gguf, quantized_like_export};
use nf_model::export::interleaved_rows_to_rotate_half;
use nf_model::export::parity::{compare, file_tolerance, tolerance};
use nf_testkit::{require_assets, temp_dir};

fn prompts() -> Vec<Vec<u32>> {
    vec![vec![1, 403, 407, 261, 378], vec![1, 67, 85, 300]]
}

#[test]
fn gguf_round_trip_passes_and_a_wrong_layout_fails() {
    let assets = require_assets!();
    let dir = temp_dir("parity");
    let model = Model::open(assets.join("llama2c/stories260K.bin")).unwrap();

    let path = dir.join("m.gguf");
    export_gguf(&model, &path, GgmlType::F32, Vec::new()).unwrap();
    let back = Model::open(&path).unwrap();
    let p = compare(&model, &back, &prompts(), 8, 5).unwrap();
    assert!(p.tokens_identical, "{p:?}");
    assert_eq!(p.violation(tolerance(GgmlType::F32)), None);
    assert_eq!(p.positions, 2 * 9);

    // q rows in rotate-half order while the model computes interleaved RoPE: the kind of
    // mistake the check exists for.
    let mut wrong = model.clone();
    let c = &model.config;
    for lw in &mut wrong.weights.layers {
        let q = interleaved_rows_to_rotate_half(&lw.wq.to_f32(), c.n_heads, c.head_dim, c.dim);
        lw.wq = Weight::from_f32(lw.wq.rows, lw.wq.cols, q);
    }
    let p = compare(&model, &wrong, &prompts(), 8, 5).unwrap();
    assert!(p.max_rel_rms > 0.05, "{p:?}");
    assert!(p.violation(tolerance(GgmlType::F32)).is_some());

    // q8_0: the file computes exactly what the same quantization in memory computes, and
    // deviates from the f32 model by quantization error only.
    let path = dir.join("m-q8.gguf");
    let summary = export_gguf(&model, &path, GgmlType::Q8_0, Vec::new()).unwrap();
    assert_eq!(
        summary.fallbacks.len(),
        5,
        "stories260K's ffn_down rows are 172 wide"
    );
    let back = Model::open(&path).unwrap();
    let same = quantized_like_export(&model, GgmlType::Q8_0).unwrap();
    let exact = compare(&same, &back, &prompts(), 8, 5).unwrap();
    assert!(
        exact.tokens_identical && exact.max_rel_rms == 0.0,
        "{exact:?}"
    );
    assert_eq!(exact.violation(file_tolerance()), None);
    let q = compare(&model, &back, &prompts(), 8, 5).unwrap();
    assert!(q.max_rel_rms > 0.0, "{q:?}");
    assert_eq!(q.violation(tolerance(GgmlType::Q8_0)), None, "{q:?}");
}
