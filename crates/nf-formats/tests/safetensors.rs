//! safetensors: write/read round trips (single and sharded) and bad input.

use std::collections::BTreeMap;

use half::{bf16, f16};
use nf_formats::safetensors::{
    SafeTensors, SafeTensorsDir, StDtype, TensorToWrite, f32_bytes, write_safetensors,
};

fn sample() -> Vec<f32> {
    (0..24).map(|i| i as f32 * 0.25 - 3.0).collect()
}

#[test]
fn f32_f16_bf16_round_trip_with_metadata() {
    let dir = nf_testkit::temp_dir("st");
    let v = sample();
    let f16b: Vec<u8> = v
        .iter()
        .flat_map(|x| f16::from_f32(*x).to_le_bytes())
        .collect();
    let bf16b: Vec<u8> = v
        .iter()
        .flat_map(|x| bf16::from_f32(*x).to_le_bytes())
        .collect();
    let f32b = f32_bytes(&v);
    let tensors = [
        TensorToWrite {
            name: "a".into(),
            dtype: StDtype::F32,
            shape: vec![4, 6],
            data: &f32b,
        },
        TensorToWrite {
            name: "b".into(),
            dtype: StDtype::F16,
            shape: vec![24],
            data: &f16b,
        },
        TensorToWrite {
            name: "c".into(),
            dtype: StDtype::BF16,
            shape: vec![2, 3, 4],
            data: &bf16b,
        },
    ];
    let meta = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("run".to_string(), "x".to_string()),
    ]);
    let path = dir.join("model.safetensors");
    write_safetensors(&path, &tensors, &meta).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    assert_eq!(st.metadata, meta);
    for name in ["a", "b", "c"] {
        // These values are exactly representable in all three dtypes.
        assert_eq!(st.to_f32(name).unwrap().1, v, "{name}");
    }
    assert_eq!(st.get("c").unwrap().shape, vec![2, 3, 4]);
    let d = SafeTensorsDir::open(&dir).unwrap();
    assert_eq!(d.tensor_names().count(), 3);
}

#[test]
fn sharded_index_is_followed() {
    let dir = nf_testkit::temp_dir("st-shard");
    let v = f32_bytes(&sample());
    for (file, name) in [
        ("model-00001-of-00002.safetensors", "x"),
        ("model-00002-of-00002.safetensors", "y"),
    ] {
        let t = [TensorToWrite {
            name: name.into(),
            dtype: StDtype::F32,
            shape: vec![24],
            data: &v,
        }];
        write_safetensors(&dir.join(file), &t, &BTreeMap::new()).unwrap();
    }
    let index = r#"{"metadata":{},"weight_map":{"x":"model-00001-of-00002.safetensors","y":"model-00002-of-00002.safetensors"}}"#;
    std::fs::write(dir.join("model.safetensors.index.json"), index).unwrap();
    let d = SafeTensorsDir::open(&dir).unwrap();
    assert_eq!(d.files.len(), 2);
    assert_eq!(d.to_f32("y").unwrap().1, sample());
    assert!(d.to_f32("z").is_err());
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        r#"{"weight_map":{"x":"../etc/passwd"}}"#,
    )
    .unwrap();
    assert!(SafeTensorsDir::open(&dir).is_err());
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let dir = nf_testkit::temp_dir("st-bad");
    let good_path = dir.join("good.safetensors");
    let v = f32_bytes(&sample());
    write_safetensors(
        &good_path,
        &[TensorToWrite {
            name: "a".into(),
            dtype: StDtype::F32,
            shape: vec![24],
            data: &v,
        }],
        &BTreeMap::new(),
    )
    .unwrap();
    let good = std::fs::read(&good_path).unwrap();
    let header = |json: &str, data: usize| -> Vec<u8> {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend(json.as_bytes());
        b.extend(vec![0u8; data]);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        (
            "absurd header length",
            [&u64::MAX.to_le_bytes()[..], &good[8..]].concat(),
        ),
        (
            "header past end",
            [&1000u64.to_le_bytes()[..], b"{}"].concat(),
        ),
        ("not json", header("not json at all", 0)),
        (
            "offsets past end",
            header(
                r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                8,
            ),
        ),
        (
            "shape mismatch",
            header(
                r#"{"a":{"dtype":"F32","shape":[5],"data_offsets":[0,16]}}"#,
                16,
            ),
        ),
        (
            "reversed offsets",
            header(
                r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#,
                16,
            ),
        ),
        (
            "unknown dtype",
            header(
                r#"{"a":{"dtype":"Q9","shape":[4],"data_offsets":[0,16]}}"#,
                16,
            ),
        ),
        (
            "overflowing shape",
            header(
                r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}}"#,
                16,
            ),
        ),
        ("truncated", good[..good.len() - 4].to_vec()),
    ];
    let p = dir.join("bad.safetensors");
    for (what, bytes) in cases {
        std::fs::write(&p, &bytes).unwrap();
        let err = SafeTensors::open(&p).expect_err(what);
        assert!(err.to_string().contains("bad.safetensors"), "{what}: {err}");
    }
    // A non-float dtype opens but refuses conversion.
    std::fs::write(
        &p,
        header(
            r#"{"a":{"dtype":"I32","shape":[4],"data_offsets":[0,16]}}"#,
            16,
        ),
    )
    .unwrap();
    assert!(SafeTensors::open(&p).unwrap().to_f32("a").is_err());
}
