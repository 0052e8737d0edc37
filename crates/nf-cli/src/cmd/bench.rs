//! `neuralforge bench`: the numbers BENCHMARKS.md reports, measured the way llama.cpp's
//! `llama-bench` measures them so the two can be compared run for run.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use nf_model::sampler::argmax;
use nf_protocol::Event;

use crate::cli::{BenchCommand, BenchModelArgs, BenchTokenizerArgs};
use crate::errors::user_error;
use crate::load::{load, load_tokenizer};
use crate::output::Output;

pub fn run(cmd: &BenchCommand, home: &Path, out: &mut Output) -> Result<()> {
    match cmd {
        BenchCommand::Model(a) => model(a, home, out),
        BenchCommand::Tokenizer(a) => tokenizer(a, out),
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

fn report(out: &mut Output, test: &str, values: &[f64], unit: &str) -> Result<()> {
    let (m, s) = mean_std(values);
    let threads = nf_engine::cpu::threads();
    out.text(&format!(
        "{test:<10} {threads:>2} threads  {m:>10.2} ± {s:<8.2} {unit}\n"
    ))?;
    out.event(|| Event::BenchResult {
        test: test.into(),
        threads: threads as u64,
        value: m,
        stddev: s,
        unit: unit.into(),
        reps: values.len() as u64,
    })?;
    Ok(())
}

fn model(a: &BenchModelArgs, home: &Path, out: &mut Output) -> Result<()> {
    if a.reps == 0 || a.prompt_tokens + a.gen_tokens == 0 {
        return Err(user_error(
            "bad_input",
            "nothing to measure",
            "use --reps ≥ 1 and a non-zero --prompt-tokens or --gen-tokens",
        ));
    }
    let l = load(&a.model, home)?;
    let m = &l.model;
    if a.prompt_tokens.max(a.gen_tokens + 1) > m.config.max_seq_len {
        return Err(user_error(
            "bad_input",
            format!("the model's context holds {} tokens", m.config.max_seq_len),
            "lower --prompt-tokens / --gen-tokens",
        ));
    }
    out.text(&format!(
        "model {} ({}, {:.1}M params), cpu: {}\n",
        m.path.display(),
        m.config.arch,
        m.config.n_params() as f64 / 1e6,
        nf_engine::cpu::CpuFeatures::detect().summary()
    ))?;
    // As llama-bench does: random-ish but valid ids, one warm-up run, then timed repetitions.
    let prompt: Vec<u32> = (0..a.prompt_tokens)
        .map(|i| (i * 7919 % m.config.vocab_size) as u32)
        .collect();
    let run_pp = || -> Result<f64> {
        let mut cache = m.new_cache(a.prompt_tokens);
        let t = Instant::now();
        m.forward(&mut cache, &prompt, false)?;
        Ok(a.prompt_tokens as f64 / t.elapsed().as_secs_f64())
    };
    let run_tg = || -> Result<f64> {
        let mut cache = m.new_cache(a.gen_tokens + 1);
        let mut next = 1u32.min(m.config.vocab_size as u32 - 1);
        let t = Instant::now();
        for _ in 0..a.gen_tokens {
            let logits = m.forward(&mut cache, &[next], false)?;
            next = argmax(&logits);
        }
        Ok(a.gen_tokens as f64 / t.elapsed().as_secs_f64())
    };
    if a.prompt_tokens > 0 {
        run_pp()?;
        let v = (0..a.reps).map(|_| run_pp()).collect::<Result<Vec<_>>>()?;
        report(out, &format!("pp{}", a.prompt_tokens), &v, "tokens/s")?;
    }
    if a.gen_tokens > 0 {
        run_tg()?;
        let v = (0..a.reps).map(|_| run_tg()).collect::<Result<Vec<_>>>()?;
        report(out, &format!("tg{}", a.gen_tokens), &v, "tokens/s")?;
    }
    Ok(())
}

fn tokenizer(a: &BenchTokenizerArgs, out: &mut Output) -> Result<()> {
    let tok = load_tokenizer(&a.tokenizer, None)?;
    let mut texts = Vec::new();
    for f in &a.files {
        let bytes = std::fs::read(f).map_err(|e| nf_formats::FormatError::io(f, e))?;
        texts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    let mut tokens = 0;
    let mut rates = Vec::new();
    for _ in 0..a.reps.max(1) {
        let t = Instant::now();
        tokens = 0;
        for text in &texts {
            tokens += tok.encode(text, false, false)?.len();
        }
        rates.push(bytes as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    out.text(&format!(
        "{} ({}): {:.2} MB, {tokens} tokens\n",
        a.tokenizer.display(),
        tok.kind(),
        bytes as f64 / 1e6
    ))?;
    report(out, "tokenize", &rates, "MB/s")
}
