//! `neuralforge`: the command-line front end. It parses arguments, runs a command, and
//! decides what goes to stdout (text or NDJSON events) and stderr (errors, hints, stats).

mod audit;
mod cli;
mod cmd;
mod errors;
mod flags;
mod output;

use std::process::ExitCode;

use clap::Parser;
use nf_protocol::{ErrorCode, Event};

use crate::cli::{Cli, Command};
use crate::output::Output;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cmd::ingest::quiet_pdf_panics();
    nf_engine::cpu::set_threads(cli.global.threads);
    let home = nf_store::home_dir(cli.global.home.as_deref());
    let mut out = Output::new(cli.global.json);
    let result = check_isa_override()
        .and_then(|()| nf_store::private_home(&home).map_err(anyhow::Error::from))
        .and_then(|()| match &cli.command {
            Command::Generate(a) => cmd::generate::run(a, &home, &mut out),
            Command::Chat(a) => cmd::chat::run(a, &home, &mut out),
            Command::Tokenize(a) => cmd::tokenize::run(a, &home, &mut out),
            Command::Inspect(a) => cmd::inspect::run(a, &home, &mut out),
            Command::Train(a) => cmd::train::run(a, &home, &mut out),
            Command::Ingest(a) => cmd::ingest::run(a, &home, &mut out),
            Command::Export(a) => cmd::export::run(a, &home, &mut out),
            Command::Eval(a) => cmd::eval::run(a, &home, &mut out),
            Command::Datasets(d) => cmd::datasets::run(d, &home, &mut out),
            Command::Bench(b) => cmd::bench::run(b, &home, &mut out),
            Command::Audit(a) => cmd::audit::run(a, &home, &mut out),
            Command::Lineage(a) => cmd::lineage::run(a, &home, &mut out),
            Command::Models(m) => cmd::models::run(m, &home, cli.global.offline, &mut out),
            Command::Studio(a) => cmd::studio::run(a, &home, &mut out),
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let event = errors::error_event(&err);
            if let Event::Error {
                code,
                message,
                hint,
            } = &event
            {
                if *code == ErrorCode::BrokenPipe {
                    return ExitCode::SUCCESS; // the reader went away (`| head`): not a failure
                }
                eprintln!("error: {message}");
                if let Some(h) = hint {
                    eprintln!("hint: {h}");
                }
            }
            let _ = out.event(|| event);
            ExitCode::FAILURE
        }
    }
}

/// Refuses an `NF_ISA` that names no instruction-set tier before any kernel runs (the
/// engine would otherwise ignore it silently).
fn check_isa_override() -> anyhow::Result<()> {
    match nf_engine::cpu::isa_override() {
        Ok(_) => Ok(()),
        Err(bad) => {
            let names: Vec<&str> = nf_engine::cpu::Isa::ALL.iter().map(|i| i.name()).collect();
            Err(errors::user_error(
                ErrorCode::BadInput,
                format!("NF_ISA=`{bad}` is not an instruction-set tier"),
                format!(
                    "set NF_ISA to one of {} (it caps the detected tier), or unset it",
                    names.join(", ")
                ),
            ))
        }
    }
}
