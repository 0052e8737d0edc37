//! The loop on a tiny random model, without any asset: it learns, it stops when asked, and
//! a resume continues bit for bit.

use std::sync::atomic::AtomicBool;

use nf_engine::rope::RopeStyle;
use nf_model::random::{random_model_uniform, tiny_config};
use nf_model::train::{BatchShape, Method, TrainModel};
use nf_protocol::Event;

use super::{RunHashes, TrainOptions, Trainer};

/// A trainer for a tiny model on a sequence that repeats every five tokens.
fn trainer(dir: &std::path::Path, steps: u64) -> Trainer {
    let c = tiny_config(RopeStyle::Interleaved, true, false, false);
    let shape = BatchShape {
        batch: 2,
        seq_len: 8,
        recompute: false,
    };
    let tm = TrainModel::new(random_model_uniform(&c, 3, 0.4), Method::Full, shape, 0);
    let tokens: Vec<u32> = (0..400).map(|i| (i % 5) as u32).collect();
    let opts = TrainOptions {
        steps,
        lr: 1e-2,
        warmup: 0,
        eval_every: 0,
        save_every: 10,
        ..TrainOptions::default()
    };
    let hashes = RunHashes {
        config: "c".into(),
        base_model: "b".into(),
        data: "d".into(),
        datasets: Vec::new(),
    };
    Trainer::new(tm, opts, tokens, None, dir, hashes).unwrap()
}

/// The training loss of every step `t` reports; with `stop_after`, the run is asked to
/// stop (as SIGINT does) once that step is done.
fn run_until(t: &mut Trainer, stop_after: Option<u64>) -> Vec<f64> {
    let mut losses = Vec::new();
    let stop = AtomicBool::new(false);
    t.run(
        &stop,
        &mut |e| {
            if let Event::TrainStep { step, loss, .. } = e {
                losses.push(loss);
                if Some(step) == stop_after {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        },
        None,
    )
    .unwrap();
    losses
}

fn run(t: &mut Trainer) -> Vec<f64> {
    run_until(t, None)
}

#[test]
fn a_tiny_model_learns_a_repeating_sequence() {
    let dir = nf_testkit::temp_dir("trainer-learns");
    let mut t = trainer(&dir, 30);
    let losses = run(&mut t);
    assert_eq!(losses.len(), 30);
    assert!(losses.iter().all(|l| l.is_finite()));
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(last < first * 0.5, "loss went from {first} to {last}");
}

/// Twenty steps in one go, and a run stopped after step 10 then resumed from the
/// checkpoint it saved, end with the same weights, bit for bit.
#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let whole = nf_testkit::temp_dir("trainer-whole");
    let mut a = trainer(&whole, 20);
    run(&mut a);

    let split = nf_testkit::temp_dir("trainer-split");
    let mut b = trainer(&split, 20);
    let losses = run_until(&mut b, Some(10));
    assert_eq!(
        losses.len(),
        10,
        "the stop request ends the run after step 10"
    );
    let mut c = trainer(&split, 20);
    let (step, _) = c.resume().unwrap();
    assert_eq!(step, 10);
    run(&mut c);
    assert_eq!(a.step(), 20);
    assert_eq!(c.step(), 20);
    let bits =
        |t: &Trainer| -> Vec<u32> { t.model.params.data().iter().map(|x| x.to_bits()).collect() };
    assert!(bits(&a) == bits(&c), "the resumed run's weights differ");
}
