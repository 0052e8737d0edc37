//! llama2.c checkpoints: the real stories260K, round trips through every layout, bad input.

use nf_formats::FormatError;
use nf_formats::llama2c::{Llama2cFile, write_llama2c};

#[test]
fn stories260k_header_and_tensors() {
    let assets = nf_testkit::require_assets!();
    let f = Llama2cFile::open(assets.join("llama2c/stories260K.bin")).unwrap();
    let c = f.config;
    assert_eq!(f.version, 0);
    assert_eq!(
        (
            c.dim,
            c.hidden_dim,
            c.n_layers,
            c.n_heads,
            c.n_kv_heads,
            c.vocab_size,
            c.seq_len
        ),
        (64, 172, 5, 8, 4, 512, 512)
    );
    assert!(c.shared_classifier);
    assert_eq!(f.tensors["blk.4.attn_k.weight"].0, vec![32, 64]);
    assert_eq!(f.tensors["blk.0.ffn_down.weight"].0, vec![64, 172]);
    assert!(!f.tensors.contains_key("output.weight"));
    // 1 embedding + 9 per layer + final norm.
    assert_eq!(f.tensors.len(), 1 + 9 * 5 + 1);
}

#[test]
fn every_layout_round_trips() {
    let assets = nf_testkit::require_assets!();
    let src = Llama2cFile::open(assets.join("llama2c/stories260K.bin")).unwrap();
    let dir = nf_testkit::temp_dir("llama2c");
    for (version, shared) in [
        (0, true),
        (0, false),
        (1, true),
        (1, false),
        (2, true),
        (2, false),
    ] {
        let mut c = src.config;
        c.shared_classifier = shared;
        let mut tensors = src.tensors.clone();
        if !shared {
            let mut cls = tensors["token_embd.weight"].clone();
            cls.1.iter_mut().for_each(|v| *v *= -0.5);
            tensors.insert("output.weight".into(), cls);
        }
        let path = dir.join(format!("v{version}-{shared}.bin"));
        write_llama2c(&path, version, &c, &tensors, 32).unwrap();
        let back = Llama2cFile::open(&path).unwrap();
        assert_eq!(back.version, version);
        assert_eq!(back.config, c);
        assert_eq!(back.tensors.len(), tensors.len());
        for (name, (shape, values)) in &tensors {
            let (s2, v2) = &back.tensors[name];
            assert_eq!(shape, s2, "{name}");
            let is_norm = name.contains("norm");
            if version < 2 || is_norm {
                assert_eq!(values, v2, "{name} (v{version})");
            } else {
                // int8 groups: error at most half a quantization step of the group's scale.
                for (g, g2) in values.chunks(32).zip(v2.chunks(32)) {
                    let step = g.iter().fold(0.0f32, |m, x| m.max(x.abs())) / 127.0;
                    for (a, b) in g.iter().zip(g2) {
                        assert!((a - b).abs() <= step * 0.5 + 1e-7, "{name}: {a} vs {b}");
                    }
                }
            }
        }
    }
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let assets = nf_testkit::require_assets!();
    let good = std::fs::read(assets.join("llama2c/stories260K.bin")).unwrap();
    let dir = nf_testkit::temp_dir("llama2c-bad");
    let p = dir.join("bad.bin");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("short", good[..20].to_vec()),
        ("header only", good[..28].to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("one byte short", good[..good.len() - 1].to_vec()),
        ("extra bytes", [good.as_slice(), &[0u8; 4]].concat()),
        (
            "absurd dims",
            [&i32::MAX.to_le_bytes()[..], &good[4..]].concat(),
        ),
        (
            "zero heads",
            [&good[..12], &0i32.to_le_bytes()[..], &good[16..]].concat(),
        ),
        (
            "heads do not divide dim",
            [&good[..12], &7i32.to_le_bytes()[..], &good[16..]].concat(),
        ),
        (
            "unknown version",
            [
                &0x616b_3432u32.to_le_bytes()[..],
                &9i32.to_le_bytes()[..],
                &good[8..],
            ]
            .concat(),
        ),
        (
            "text file",
            b"Once upon a time there was a file that was not a model at all.".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&p, &bytes).unwrap();
        let err = Llama2cFile::open(&p).expect_err(what);
        assert!(
            err.to_string().contains("bad.bin"),
            "{what}: message lacks the path: {err}"
        );
    }
    match Llama2cFile::open(dir.join("missing.bin")) {
        Err(FormatError::Io { path, .. }) => assert!(path.ends_with("missing.bin")),
        other => panic!("expected an Io error, got {other:?}"),
    }
}
