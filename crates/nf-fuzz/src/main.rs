//! `nf-fuzz`: the long mode. Without `--target`, runs every target in a child process of
//! its own, one after another, each for an equal share of the minutes given, so an input
//! that aborts one target (an allocation refused, a stack overflow) is reported and the
//! others still run. Exits non-zero if any target failed; the failing input is left in
//! the target's work folder (`panic-N.bin`, or `current.bin` after an abort) to replay.
//!
//! ```text
//! cargo run -p nf-fuzz --release -- --minutes 30 [--target pdf] [--seed 7] [--work DIR]
//! cargo run -p nf-fuzz --release -- --target pdf --replay DIR/pdf/current.bin
//! ```

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use nf_fuzz::{Budget, Setup, run_target, targets, work_dir};

#[global_allocator]
static ALLOC: nf_fuzz::alloc::Counting = nf_fuzz::alloc::Counting;

struct Args {
    minutes: f64,
    target: Option<String>,
    seed: u64,
    work: PathBuf,
    replay: Option<PathBuf>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: nf-fuzz [--minutes N] [--target NAME] [--seed S] [--work DIR] [--replay FILE] [--list]"
    );
    ExitCode::from(2)
}

fn parse() -> Option<Args> {
    let mut a = Args {
        minutes: 10.0,
        target: None,
        seed: 1,
        work: std::env::temp_dir().join("nf-fuzz"),
        replay: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next();
        match flag.as_str() {
            "--minutes" => a.minutes = value?.parse().ok()?,
            "--target" => a.target = Some(value?),
            "--seed" => a.seed = value?.parse().ok()?,
            "--work" => a.work = PathBuf::from(value?),
            "--replay" => a.replay = Some(PathBuf::from(value?)),
            _ => return None,
        }
    }
    Some(a)
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--list") {
        for t in targets::ALL {
            println!("{:<18} {}", t.name, t.what);
        }
        return ExitCode::SUCCESS;
    }
    let Some(args) = parse() else {
        return usage();
    };
    match &args.target {
        None => every_target(&args),
        Some(name) => match targets::ALL.iter().position(|t| t.name == name) {
            Some(i) => one_target(i, &args),
            None => {
                eprintln!("error: no target named `{name}`; --list shows them");
                ExitCode::from(2)
            }
        },
    }
}

/// Each target in a child process, one after another.
fn every_target(args: &Args) -> ExitCode {
    let share = args.minutes / targets::ALL.len() as f64;
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("error: cannot find this program's path to run the targets");
        return ExitCode::FAILURE;
    };
    let mut failed = Vec::new();
    for t in targets::ALL {
        let status = Command::new(&exe)
            .args(["--target", t.name, "--minutes", &share.to_string()])
            .args(["--seed", &args.seed.to_string()])
            .arg("--work")
            .arg(&args.work)
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            println!("{:<18} FAILED ({status:?})", t.name);
            failed.push(t.name);
        }
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

fn one_target(index: usize, args: &Args) -> ExitCode {
    let t = &targets::ALL[index];
    let Some(assets) = nf_testkit::assets() else {
        eprintln!("error: the shared assets hold the seeds; set NF_ASSETS");
        return ExitCode::FAILURE;
    };
    let work = match args.replay {
        // A replay keeps the work folder and the failing input in it.
        Some(_) => args.work.join(format!("{}-replay", t.name)),
        None => args.work.join(t.name),
    };
    let setup = match work_dir(
        &args.work,
        work.file_name().and_then(|n| n.to_str()).unwrap_or(t.name),
    ) {
        Ok(w) => Setup { assets, work: w },
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    nf_fuzz::alloc::set_cap(1 << 30);
    if let Some(file) = &args.replay {
        let input = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                return ExitCode::FAILURE;
            }
        };
        return match nf_fuzz::replay(t, &setup, &input) {
            Ok(v) => {
                println!("{}: {v:?}", t.name);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let budget = Budget {
        inputs: u64::MAX,
        time: Some(Duration::from_secs_f64(args.minutes * 60.0)),
        max_len: 4 << 20,
        keep_current: true,
    };
    match run_target(index, t, &setup, args.seed, budget) {
        Ok(r) => {
            println!("{}", r.line());
            match &r.first_panic {
                Some((_, msg)) => {
                    println!("  first panic: {msg}");
                    ExitCode::FAILURE
                }
                None => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
