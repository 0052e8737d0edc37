//! The bounded fuzz pass of every parser: 2,000 seeded inputs per target (the same edits
//! on every run; the audit seeds carry a fresh device key), each required to cause no panic in any thread, no abort, and at most
//! [`PEAK_LIMIT`] of memory live at once. `cargo run -p nf-fuzz --release -- --minutes N`
//! runs the same targets for longer.

use std::sync::Mutex;

use nf_fuzz::{Budget, Setup, run_target, targets, work_dir};

#[global_allocator]
static ALLOC: nf_fuzz::alloc::Counting = nf_fuzz::alloc::Counting;

const INPUTS: u64 = 2000;
const SEED: u64 = 0x5eed;
/// The most memory one input may hold at once. Inputs are at most 2 MiB; a reader may
/// copy, inflate to the DOCX cap and convert, but nothing near a gigabyte.
const PEAK_LIMIT: usize = 256 << 20;

/// The counters are process-wide, so targets run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn fuzz(name: &str) {
    let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let assets = nf_testkit::require_assets!();
    assert!(
        nf_fuzz::alloc::is_installed(),
        "the counting allocator is not in use"
    );
    nf_fuzz::alloc::set_cap(1 << 30);
    let (index, target) = targets::ALL
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == name)
        .expect("a target of that name");
    let root = std::env::temp_dir().join(format!("nf-fuzz-test-{}", std::process::id()));
    let setup = Setup {
        assets,
        work: work_dir(&root, name).unwrap(),
    };
    let budget = Budget {
        inputs: INPUTS,
        time: None,
        max_len: 2 << 20,
        keep_current: false,
    };
    let r = run_target(index, target, &setup, SEED, budget).unwrap();
    eprintln!("{}", r.line());
    assert_eq!(r.inputs, INPUTS);
    assert_eq!(r.panics, 0, "{name}: first panic: {:?}", r.first_panic);
    assert!(
        r.peak_bytes <= PEAK_LIMIT,
        "{name}: input {} held {} bytes at once",
        r.peak_input,
        r.peak_bytes
    );
    // Mutated inputs must not all be refused at the first check: some get deep.
    assert!(
        r.accepted > r.inputs / 100,
        "{name}: only {} accepted",
        r.accepted
    );
    let _ = std::fs::remove_dir_all(&setup.work);
}

macro_rules! targets {
    ($($test:ident => $name:literal),* $(,)?) => {
        $(#[test] fn $test() { fuzz($name) })*

        #[test]
        fn every_target_has_a_test() {
            let tested = [$($name),*];
            for t in targets::ALL {
                assert!(tested.contains(&t.name), "{} has no test", t.name);
            }
        }
    };
}

targets! {
    gguf => "gguf",
    safetensors => "safetensors",
    llama2c => "llama2c",
    tokenizer_json => "tokenizer-json",
    gguf_vocab => "gguf-vocab",
    llama2c_tokenizer => "llama2c-tokenizer",
    docx => "docx",
    pdf => "pdf",
    html => "html",
    jsonl => "jsonl",
    checkpoint => "checkpoint",
    audit => "audit",
    studio => "studio",
}
