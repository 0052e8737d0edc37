//! The trainer on real models: validation loss falls when fine-tuning stories260K (full)
//! and SmolLM2-135M (LoRA on its quantized GGUF base), and the NaN guard skips a poisoned
//! step and rolls back after repeated ones.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use nf_data::{Sampling, TokenStream, split_train_val};
use nf_model::Model;
use nf_model::train::{BatchShape, LoraConfig, Method, Target, TrainModel};
use nf_protocol::Event;
use nf_testkit::{require_assets, temp_dir};
use nf_tokenizer::Tokenizer;
use nf_train::schedule::Schedule;
use nf_train::trainer::{RunHashes, TrainOptions, Trainer};

fn hashes() -> RunHashes {
    RunHashes {
        config: "test".into(),
        base_model: "test".into(),
        data: "test".into(),
        datasets: Vec::new(),
    }
}

fn stories(assets: &Path) -> (Model, Tokenizer) {
    let model = Model::open(assets.join("llama2c/stories260K.bin")).unwrap();
    let tok = Tokenizer::from_llama2c(assets.join("llama2c/tok512.bin"), Some(512)).unwrap();
    (model, tok)
}

/// The tokens of one corpus file of the shared assets.
fn corpus_tokens(assets: &Path, tok: &Tokenizer, file: &str) -> Vec<u32> {
    TokenStream::from_paths(&[assets.join("corpus").join(file)], tok)
        .unwrap()
        .into_tokens()
}

fn opts(steps: u64) -> TrainOptions {
    TrainOptions {
        steps,
        lr: 3e-3,
        min_lr: 3e-4,
        warmup: 5,
        schedule: Schedule::Cosine,
        eval_every: 0,
        eval_batches: 4,
        save_every: 0,
        ..TrainOptions::default()
    }
}

#[test]
fn stories260k_full_finetune_lowers_validation_loss() {
    let assets = require_assets!();
    let (model, tok) = stories(&assets);
    let train = corpus_tokens(&assets, &tok, "tinystories_sample_197k.txt");
    let val = corpus_tokens(&assets, &tok, "tinystories_valid_sample_30k.txt");
    // stories260K was trained on TinyStories: fine-tuning on more of it can only gain a
    // little, and a high learning rate makes it worse, so this is a gentle full fine-tune.
    let shape = BatchShape {
        batch: 8,
        seq_len: 128,
        recompute: false,
    };
    let tm = TrainModel::new(model, Method::Full, shape, 1);
    let dir = temp_dir("stories-full");
    let o = TrainOptions {
        lr: 1e-4,
        min_lr: 1e-5,
        ..opts(200)
    };
    let mut t = Trainer::new(tm, o, train, Some(val), &dir, hashes()).unwrap();
    let before = t.validate().unwrap().unwrap();
    let mut losses = Vec::new();
    let stop = AtomicBool::new(false);
    let (summary, _, _) = t
        .run(
            &stop,
            &mut |e| {
                if let Event::TrainStep { loss, .. } = e {
                    losses.push(loss)
                }
            },
            None,
        )
        .unwrap();
    let after = summary.val_loss.unwrap();
    assert_eq!(summary.final_step, 200);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        after < before - 0.005,
        "validation loss {before:.4} -> {after:.4} did not fall"
    );
}

#[test]
fn smollm2_lora_on_quantized_base_lowers_validation_loss() {
    let assets = require_assets!();
    let g =
        nf_formats::GgufFile::open(assets.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let model = Model::from_gguf(&g).unwrap();
    let tok = Tokenizer::from_gguf(&g).unwrap();
    let text = std::fs::read_to_string(assets.join("corpus/wizard_of_oz.txt")).unwrap();
    let dir = temp_dir("smollm-lora");
    let src = dir.join("oz.txt");
    std::fs::write(&src, &text[..40_000]).unwrap();
    let tokens = TokenStream::from_paths(&[src], &tok).unwrap().into_tokens();
    let (train, val) = split_train_val(tokens, 0.15);
    let shape = BatchShape {
        batch: 1,
        seq_len: 64,
        recompute: false,
    };
    let lora = LoraConfig {
        rank: 8,
        alpha: 16.0,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
    };
    let tm = TrainModel::new(model, Method::Lora(lora), shape, 1);
    let o = TrainOptions {
        lr: 2e-3,
        eval_batches: 4,
        sampling: Sampling::Random,
        ..opts(20)
    };
    let mut t = Trainer::new(tm, o, train, Some(val), &dir, hashes()).unwrap();
    let before = t.validate().unwrap().unwrap();
    let stop = AtomicBool::new(false);
    let (summary, _, _) = t.run(&stop, &mut |_| {}, None).unwrap();
    let after = summary.val_loss.unwrap();
    assert!(
        after < before - 0.02,
        "validation loss {before:.4} -> {after:.4} did not fall"
    );
}

#[test]
fn nan_guard_skips_then_rolls_back() {
    let assets = require_assets!();
    let (model, tok) = stories(&assets);
    let train = corpus_tokens(&assets, &tok, "tinystories_valid_sample_30k.txt");
    let shape = BatchShape {
        batch: 2,
        seq_len: 32,
        recompute: false,
    };
    let tm = TrainModel::new(model, Method::Full, shape, 1);
    let dir = temp_dir("nan-guard");
    let o = TrainOptions {
        save_every: 4,
        max_bad_steps: 3,
        ..opts(12)
    };
    let mut t = Trainer::new(tm, o, train, None, &dir, hashes()).unwrap();
    // One poisoned step is skipped; three in a row (6, 7, 8) roll back to step 4's
    // checkpoint at half the learning rate.
    t.inject_nan_at = vec![2, 6, 7, 8];
    let mut warnings = Vec::new();
    let mut skipped = Vec::new();
    let stop = AtomicBool::new(false);
    let (summary, _, _) = t
        .run(
            &stop,
            &mut |e| match e {
                Event::Warning { message } => warnings.push(message),
                Event::TrainStep {
                    step,
                    skipped: true,
                    ..
                } => skipped.push(step),
                _ => {}
            },
            None,
        )
        .unwrap();
    assert_eq!(summary.final_step, 12);
    assert_eq!(skipped, vec![2, 6, 7], "steps whose update was skipped");
    assert!(
        warnings.iter().any(|w| w.contains("rolled back to step 4")),
        "{warnings:?}"
    );
    let weights_finite = t.model.params.data().iter().all(|v| v.is_finite());
    assert!(weights_finite, "a non-finite gradient reached the weights");
}

#[test]
fn early_stopping_ends_the_run_when_validation_stops_improving() {
    let assets = require_assets!();
    let (model, tok) = stories(&assets);
    let train = corpus_tokens(&assets, &tok, "tinystories_sample_197k.txt");
    let val = corpus_tokens(&assets, &tok, "tinystories_valid_sample_30k.txt");
    let shape = BatchShape {
        batch: 2,
        seq_len: 64,
        recompute: false,
    };
    let tm = TrainModel::new(model, Method::Full, shape, 1);
    let dir = temp_dir("early-stop");
    // A learning rate far too high for a pretrained model: validation gets worse at once.
    let o = TrainOptions {
        lr: 2e-2,
        warmup: 1,
        schedule: Schedule::Constant,
        eval_every: 5,
        patience: 2,
        ..opts(500)
    };
    let mut t = Trainer::new(tm, o, train, Some(val), &dir, hashes()).unwrap();
    let stop = AtomicBool::new(false);
    let (summary, _, _) = t.run(&stop, &mut |_| {}, None).unwrap();
    assert_eq!(summary.reason, nf_train::trainer::EndReason::EarlyStopped);
    assert!(summary.final_step < 500, "ran to {}", summary.final_step);
    let (best_step, _) = summary.best_val.unwrap();
    // The best checkpoint is kept by pruning.
    assert!(
        dir.join(format!("checkpoints/step-{best_step}")).is_dir() || best_step == 0,
        "best checkpoint step-{best_step} was pruned"
    );
}

#[test]
fn masked_tokens_teach_nothing() {
    assert_eq!(nf_data::MASKED_TARGET, nf_engine::loss::IGNORE);
    let assets = require_assets!();
    let (model, tok) = stories(&assets);
    let train = corpus_tokens(&assets, &tok, "tinystories_valid_sample_30k.txt");
    let shape = BatchShape {
        batch: 2,
        seq_len: 32,
        recompute: false,
    };
    let run = |mask: Vec<u8>| {
        let tm = TrainModel::new(stories(&assets).0, Method::Full, shape, 1);
        let dir = temp_dir("mask");
        let mut t = Trainer::new(tm, opts(3), train.clone(), None, &dir, hashes())
            .unwrap()
            .with_loss_masks(Some(mask), None)
            .unwrap();
        t.run(&AtomicBool::new(false), &mut |_| {}, None).unwrap();
        t.model.params.data().to_vec()
    };
    let before = TrainModel::new(model, Method::Full, shape, 1)
        .params
        .data()
        .to_vec();
    // Every target masked: no gradient, so AdamW leaves every weight as it was.
    assert_eq!(run(vec![0; train.len()]), before);
    // Half masked: the model does learn.
    let half: Vec<u8> = (0..train.len()).map(|i| (i % 2) as u8).collect();
    assert_ne!(run(half), before);
}
