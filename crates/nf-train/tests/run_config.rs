//! `run.json` compatibility: a run created before the config hash was versioned (the
//! fixture is the `run.json` of a stories260K LoRA run made by that build) reads back, and
//! its recorded hash is recognised, so its checkpoints still resume.

use nf_train::run::{BaseDtype, RunConfig, RunMethod};

const LEGACY: &str = include_str!("fixtures/run_v1_hash.json");

#[test]
fn a_run_from_before_the_versioned_hash_keeps_its_hash() {
    let assets = nf_testkit::require_assets!();
    let cfg: RunConfig = serde_json::from_str(LEGACY).unwrap();
    assert_eq!(cfg.method, RunMethod::Lora);
    assert_eq!(cfg.base_dtype, BaseDtype::AsLoaded);
    assert_eq!(cfg.precision, nf_engine::Precision::Bf16);
    let model = nf_model::Model::open(assets.join("llama2c/stories260K.bin")).unwrap();
    let recorded = cfg.hashes.as_ref().unwrap().config.clone();
    assert_eq!(cfg.config_hash_v1(&model.config), recorded);
    assert_eq!(cfg.config_hash(&model.config), recorded);

    // A new run with the same settings gets the versioned hash, which differs.
    let mut fresh = cfg.clone();
    fresh.hashes = None;
    let v2 = fresh.config_hash(&model.config);
    assert_ne!(v2, recorded);
    // An edited run.json matches neither and gets the new hash (its checkpoints then
    // refuse to resume, as they must).
    let mut edited = cfg.clone();
    edited.lora_rank = 4;
    assert_ne!(edited.config_hash(&model.config), recorded);
}

/// The versioned hash ignores what does not change the computation, and sees what does.
#[test]
fn the_config_hash_covers_the_computation_only() {
    let assets = nf_testkit::require_assets!();
    let mut cfg: RunConfig = serde_json::from_str(LEGACY).unwrap();
    cfg.hashes = None;
    let model = nf_model::Model::open(assets.join("llama2c/stories260K.bin")).unwrap();
    let h = cfg.config_hash(&model.config);
    let mut cadence = cfg.clone();
    cadence.options.sample_every = 7;
    cadence.options.keep_last = 9;
    cadence.sample_prompt = "Hello".into();
    assert_eq!(cadence.config_hash(&model.config), h);
    for change in [
        |c: &mut RunConfig| c.options.lr *= 2.0,
        |c: &mut RunConfig| c.seq_len += 1,
        |c: &mut RunConfig| c.precision = nf_engine::Precision::F32,
        |c: &mut RunConfig| c.base_dtype = BaseDtype::Q4_0,
        |c: &mut RunConfig| c.cross_example_attention = true,
    ] {
        let mut c = cfg.clone();
        change(&mut c);
        assert_ne!(c.config_hash(&model.config), h);
    }
}

/// The typed fields write what the strings did.
#[test]
fn run_json_round_trips() {
    let cfg: RunConfig = serde_json::from_str(LEGACY).unwrap();
    let text = serde_json::to_string_pretty(&cfg).unwrap();
    let back: serde_json::Value = serde_json::from_str(&text).unwrap();
    let orig: serde_json::Value = serde_json::from_str(LEGACY).unwrap();
    assert_eq!(back, orig);
    let bad = LEGACY.replace("\"bf16\"", "\"fp8\"");
    let e = serde_json::from_str::<RunConfig>(&bad).unwrap_err();
    assert!(e.to_string().contains("unknown precision `fp8`"), "{e}");
}
