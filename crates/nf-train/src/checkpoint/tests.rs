use super::*;

struct Fixture {
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    w: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

fn fixture(seed: f32) -> Fixture {
    let shapes = vec![vec![4, 3], vec![3], vec![2, 2, 2]];
    let names = vec![
        "blk.0.attn_q.lora_a".to_string(),
        "output_norm.weight".to_string(),
        "x".to_string(),
    ];
    let fill = |k: f32| -> Vec<Vec<f32>> {
        shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (0..s.iter().product::<usize>())
                    .map(|j| seed + k + i as f32 * 0.5 + j as f32 * 0.001)
                    .collect()
            })
            .collect()
    };
    Fixture {
        w: fill(0.0),
        m: fill(10.0),
        v: fill(20.0),
        names,
        shapes,
    }
}

fn named<'a>(f: &'a Fixture, data: &'a [Vec<f32>]) -> Vec<NamedTensor<'a>> {
    f.names
        .iter()
        .zip(&f.shapes)
        .zip(data)
        .map(|((name, shape), data)| NamedTensor { name, shape, data })
        .collect()
}

fn save(root: &Path, step: u64) -> PathBuf {
    let f = fixture(step as f32);
    let state = serde_json::json!({"step": step, "loss": [3.5, 3.25], "batcher": {"cursor": 7}});
    save_checkpoint(
        root,
        step,
        &named(&f, &f.w),
        &named(&f, &f.m),
        &named(&f, &f.v),
        &state,
    )
    .unwrap()
}

fn root() -> PathBuf {
    nf_testkit::temp_dir("ckpt").join("checkpoints")
}

fn names_in(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip() {
    let root = root();
    let dir = save(&root, 100);
    assert_eq!(dir, root.join("step-100"));
    assert_eq!(names_in(&root), ["step-100"], "no staging folder left");
    assert_eq!(
        names_in(&dir),
        [
            "COMPLETE",
            "optimizer.safetensors",
            "state.json",
            "weights.safetensors"
        ]
    );
    let c = load_checkpoint(&dir).unwrap();
    let f = fixture(100.0);
    assert_eq!(c.step, 100);
    assert_eq!(c.state["loss"][1], 3.25);
    for (i, name) in f.names.iter().enumerate() {
        assert_eq!(c.shapes[name], f.shapes[i]);
        assert_eq!(c.weights[name], f.w[i]);
        assert_eq!(c.m[name], f.m[i]);
        assert_eq!(c.v[name], f.v[i]);
    }
    assert_eq!(c.weights.len(), 3);
    // The marker is sha256sum's format, one line per file.
    let marker = std::fs::read_to_string(dir.join(MARKER_FILE)).unwrap();
    let hash = crate::hash::sha256_file(&dir.join(WEIGHTS_FILE)).unwrap();
    assert!(
        marker.contains(&format!("{hash}  weights.safetensors\n")),
        "{marker}"
    );
    assert_eq!(marker.lines().count(), 3);
}

#[test]
fn saving_without_optimizer_state_and_replacing_a_step() {
    let root = root();
    let f = fixture(1.0);
    let w = named(&f, &f.w);
    save_checkpoint(&root, 5, &w, &[], &[], &serde_json::json!({"n": 1})).unwrap();
    let dir = save_checkpoint(&root, 5, &w, &[], &[], &serde_json::json!({"n": 2})).unwrap();
    let c = load_checkpoint(&dir).unwrap();
    assert!(c.m.is_empty() && c.v.is_empty());
    assert_eq!(c.state["n"], 2);
    assert_eq!(names_in(&root), ["step-5"]);
}

#[test]
fn inconsistent_inputs_are_refused() {
    let root = root();
    let f = fixture(0.0);
    let (w, m) = (named(&f, &f.w), named(&f, &f.m));
    let state = serde_json::Value::Null;
    let e = save_checkpoint(&root, 1, &w, &m[..2], &m, &state).unwrap_err();
    assert!(matches!(e, CheckpointError::InvalidInput(_)), "{e}");
    let bad = [NamedTensor {
        name: "a",
        shape: &[2, 2],
        data: &[1.0; 3],
    }];
    let e = save_checkpoint(&root, 1, &bad, &[], &[], &state).unwrap_err();
    assert!(e.to_string().contains("`a`"), "{e}");
    let dup = [w[0], w[0]];
    assert!(save_checkpoint(&root, 1, &dup, &[], &[], &state).is_err());
    assert!(!root.join("step-1").exists());
}

#[test]
fn a_corrupted_byte_is_detected_and_the_previous_checkpoint_used() {
    let root = root();
    save(&root, 10);
    let dir = save(&root, 20);
    let path = dir.join(WEIGHTS_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 5;
    bytes[last] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let e = load_checkpoint(&dir).unwrap_err();
    assert!(matches!(e, CheckpointError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains("weights.safetensors"), "{e}");

    let (found, skipped) = latest_valid_checkpoint(&root).unwrap().unwrap();
    assert_eq!(found.step, 10);
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].0, dir);
    assert!(matches!(skipped[0].1, CheckpointError::HashMismatch { .. }));
}

#[test]
fn half_written_checkpoints_are_ignored() {
    let root = root();
    save(&root, 10);
    // A save that died before its marker: a step folder without COMPLETE.
    let dir = save(&root, 20);
    std::fs::remove_file(dir.join(MARKER_FILE)).unwrap();
    // A save that died while staging.
    let staging = root.join(".step-30.tmp-999999999");
    std::fs::create_dir(&staging).unwrap();
    std::fs::write(staging.join(STATE_FILE), b"{").unwrap();

    let (found, skipped) = latest_valid_checkpoint(&root).unwrap().unwrap();
    assert_eq!(found.step, 10);
    assert_eq!(skipped.len(), 1);
    let e = &skipped[0].1;
    assert!(matches!(e, CheckpointError::Incomplete { .. }), "{e}");
    assert!(e.to_string().contains("step-20"), "{e}");

    assert_eq!(
        clean_staging(&root).unwrap(),
        std::slice::from_ref(&staging)
    );
    assert!(!staging.exists());
}

#[test]
fn truncated_state_and_missing_files() {
    let root = root();
    let dir = save(&root, 3);
    let state = dir.join(STATE_FILE);
    let text = std::fs::read(&state).unwrap();
    std::fs::write(&state, &text[..text.len() / 2]).unwrap();
    let e = load_checkpoint(&dir).unwrap_err();
    assert!(matches!(e, CheckpointError::HashMismatch { .. }), "{e}");
    assert!(e.to_string().contains("state.json"), "{e}");

    std::fs::remove_file(dir.join(OPTIMIZER_FILE)).unwrap();
    let e = load_checkpoint(&dir).unwrap_err();
    assert!(matches!(e, CheckpointError::MissingFile { .. }), "{e}");

    std::fs::write(dir.join(MARKER_FILE), "garbage\n").unwrap();
    let e = load_checkpoint(&dir).unwrap_err();
    assert!(matches!(e, CheckpointError::BadMarker { .. }), "{e}");

    assert!(latest_valid_checkpoint(&root).unwrap().is_none());
    // With nothing valid, the scan still says what was wrong.
    let scan = scan_checkpoints(&root).unwrap();
    assert!(scan.latest.is_none());
    assert!(matches!(
        scan.skipped[..],
        [(_, CheckpointError::BadMarker { .. })]
    ));
    let none = scan_checkpoints(&root.join("absent")).unwrap();
    assert!(none.latest.is_none() && none.skipped.is_empty());
    let e = load_checkpoint(&root.join("step-77")).unwrap_err();
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    let e = load_checkpoint(&root.join("best")).unwrap_err();
    assert!(matches!(e, CheckpointError::NotACheckpoint { .. }), "{e}");
}

#[test]
fn prune_keeps_the_last_k_and_the_best() {
    let root = root();
    for step in [10, 20, 30, 40, 50, 60] {
        save(&root, step);
    }
    // An incomplete one is left alone, and does not count among the kept.
    std::fs::remove_file(root.join("step-60").join(MARKER_FILE)).unwrap();
    let removed = prune_checkpoints(&root, 2, Some(20)).unwrap();
    assert_eq!(removed, [root.join("step-30"), root.join("step-10")]);
    assert_eq!(
        names_in(&root),
        ["step-20", "step-40", "step-50", "step-60"]
    );
    // keep_last 0 still keeps the newest.
    prune_checkpoints(&root, 0, None).unwrap();
    assert_eq!(names_in(&root), ["step-50", "step-60"]);
    assert_eq!(latest_valid_checkpoint(&root).unwrap().unwrap().0.step, 50);
}

#[test]
fn step_folder_names() {
    assert_eq!(parse_step_dir_name("step-0"), Some(0));
    assert_eq!(parse_step_dir_name("step-1200"), Some(1200));
    for bad in [
        "step-",
        "step-+1",
        "step-01",
        "step-1a",
        "Step-1",
        ".step-1.tmp-5",
    ] {
        assert_eq!(parse_step_dir_name(bad), None, "{bad}");
    }
    assert_eq!(staging_pid(".step-30.tmp-123"), Some(123));
    assert_eq!(staging_pid(".step-30.del-9"), Some(9));
    assert_eq!(staging_pid(".step-30.tmp-x"), None);
    assert_eq!(staging_pid("step-30"), None);
}
