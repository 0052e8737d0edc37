//! `nf-fuzz`: the long mode. Runs every target (or one) for the minutes given, each in
//! turn with an equal share, and prints a report line per target. Exits non-zero if any
//! input panicked; the input is saved in the work folder to replay.
//!
//! ```text
//! cargo run -p nf-fuzz --release -- --minutes 30 [--target pdf] [--seed 7] [--work DIR]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use nf_fuzz::{Budget, Setup, run_target, targets, work_dir};

#[global_allocator]
static ALLOC: nf_fuzz::alloc::Counting = nf_fuzz::alloc::Counting;

fn usage() -> ExitCode {
    eprintln!("usage: nf-fuzz [--minutes N] [--target NAME] [--seed S] [--work DIR] [--list]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut minutes = 10.0f64;
    let mut only: Option<String> = None;
    let mut seed = 1u64;
    let mut work = std::env::temp_dir().join("nf-fuzz");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next();
        match a.as_str() {
            "--minutes" => match value().and_then(|v| v.parse().ok()) {
                Some(m) => minutes = m,
                None => return usage(),
            },
            "--target" => only = value(),
            "--seed" => match value().and_then(|v| v.parse().ok()) {
                Some(s) => seed = s,
                None => return usage(),
            },
            "--work" => match value() {
                Some(w) => work = PathBuf::from(w),
                None => return usage(),
            },
            "--list" => {
                for t in targets::ALL {
                    println!("{:<18} {}", t.name, t.what);
                }
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let Some(assets) = nf_testkit::assets() else {
        eprintln!("error: the shared assets hold the seeds; set NF_ASSETS");
        return ExitCode::FAILURE;
    };
    let chosen: Vec<_> = targets::ALL
        .iter()
        .enumerate()
        .filter(|(_, t)| only.as_deref().is_none_or(|o| o == t.name))
        .collect();
    if chosen.is_empty() {
        eprintln!("error: no target named {only:?}; --list shows them");
        return ExitCode::from(2);
    }
    nf_fuzz::alloc::set_cap(1 << 30);
    let share = Duration::from_secs_f64(minutes * 60.0 / chosen.len() as f64);
    let mut failed = false;
    for (i, t) in chosen {
        let setup = match work_dir(&work, t.name) {
            Ok(w) => Setup {
                assets: assets.clone(),
                work: w,
            },
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let budget = Budget {
            inputs: u64::MAX,
            time: Some(share),
            max_len: 4 << 20,
        };
        match run_target(i, t, &setup, seed, budget) {
            Ok(r) => {
                println!("{}", r.line());
                if let Some((_, msg)) = &r.first_panic {
                    println!("  first panic: {msg}");
                    failed = true;
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
