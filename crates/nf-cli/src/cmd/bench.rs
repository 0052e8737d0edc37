//! `neuralforge bench`: the numbers BENCHMARKS.md reports, measured the way llama.cpp's
//! `llama-bench` measures them so the two can be compared run for run.

use nf_protocol::ErrorCode;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use nf_engine::Precision;
use nf_protocol::Event;

use crate::cli::{
    BenchCommand, BenchIngestArgs, BenchModelArgs, BenchPeakArgs, BenchTokenizerArgs,
    BenchTrainArgs,
};
use crate::errors::user_error;
use crate::output::Output;
use nf_store::resolve::{load, load_tokenizer};

pub fn run(cmd: &BenchCommand, home: &Path, out: &mut Output) -> Result<()> {
    match cmd {
        BenchCommand::Model(a) => model(a, home, out),
        BenchCommand::Tokenizer(a) => tokenizer(a, out),
        BenchCommand::Ingest(a) => ingest(a, out),
        BenchCommand::Train(a) => train(a, home, out),
        BenchCommand::Peak(a) => peak(a, out),
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len().max(2) - 1) as f64;
    (m, var.sqrt())
}

fn report(out: &mut Output, test: &str, values: &[f64], unit: &str) -> Result<()> {
    report_in(out, test, values, unit, None)
}

/// [`report`] for a measurement of matrix products in `precision` (train, peak): the event
/// names the precision besides the instruction-set tier every result names.
fn report_in(
    out: &mut Output,
    test: &str,
    values: &[f64],
    unit: &str,
    precision: Option<Precision>,
) -> Result<()> {
    let (m, s) = mean_std(values);
    let threads = nf_engine::cpu::threads();
    out.text(&format!(
        "{test:<12} {threads:>2} threads  {m:>10.2} ± {s:<8.2} {unit}\n"
    ))?;
    bench_event(out, test, m, s, unit, values.len(), precision)
}

/// The `bench.result` event of one measurement (in `--json` mode only).
fn bench_event(
    out: &mut Output,
    test: &str,
    m: f64,
    s: f64,
    unit: &str,
    reps: usize,
    precision: Option<Precision>,
) -> Result<()> {
    let threads = nf_engine::cpu::threads();
    out.event(|| Event::BenchResult {
        test: test.into(),
        threads: threads as u64,
        value: m,
        stddev: s,
        unit: unit.into(),
        reps: reps as u64,
        isa: Some(nf_engine::cpu::isa().name().into()),
        precision: precision.map(|p| p.name().into()),
    })?;
    Ok(())
}

fn model(a: &BenchModelArgs, home: &Path, out: &mut Output) -> Result<()> {
    if a.reps == 0 || a.prompt_tokens + a.gen_tokens == 0 {
        return Err(user_error(
            ErrorCode::BadInput,
            "nothing to measure",
            "use --reps ≥ 1 and a non-zero --prompt-tokens or --gen-tokens",
        ));
    }
    let l = load(&a.model.spec(), home)?;
    let m = &l.model;
    if a.prompt_tokens.max(a.gen_tokens + 1) > m.config.max_seq_len {
        return Err(user_error(
            ErrorCode::BadInput,
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
    // As llama-bench does: one warm-up run, then timed repetitions.
    let run_pp = || nf_model::generate::prompt_rate(m, a.prompt_tokens);
    let run_tg = || nf_model::generate::decode_rate(m, a.gen_tokens);
    if a.prompt_tokens > 0 {
        run_pp()?;
        let v = (0..a.reps)
            .map(|_| run_pp())
            .collect::<Result<Vec<_>, _>>()?;
        report(out, &format!("pp{}", a.prompt_tokens), &v, "tokens/s")?;
    }
    if a.gen_tokens > 0 {
        run_tg()?;
        let v = (0..a.reps)
            .map(|_| run_tg())
            .collect::<Result<Vec<_>, _>>()?;
        report(out, &format!("tg{}", a.gen_tokens), &v, "tokens/s")?;
    }
    Ok(())
}

fn tokenizer(a: &BenchTokenizerArgs, out: &mut Output) -> Result<()> {
    let tok = load_tokenizer(&a.tokenizer, None)?;
    let mut text = String::new();
    for f in &a.files {
        let bytes = std::fs::read(f).map_err(|e| nf_formats::FormatError::io(f, e))?;
        text.push_str(&String::from_utf8_lossy(&bytes));
        text.push_str("\n\n");
    }
    if text.trim().is_empty() {
        return Err(user_error(
            ErrorCode::BadInput,
            "the files hold no text to encode",
            "pass text files such as ../shared/assets/corpus/*.txt",
        ));
    }
    out.text(&format!(
        "{} ({}): {:.2} MB\n",
        a.tokenizer.display(),
        tok.kind(),
        text.len() as f64 / 1e6
    ))?;
    match a.scaling {
        Some(max_mb) => tokenizer_scaling(&tok, &text, max_mb, out),
        None => tokenizer_throughput(&tok, &text, a.reps, out),
    }
}

/// Encodes the text as ingestion does (`nf_ingest::bench::encode_pieces`).
fn tokenizer_throughput(
    tok: &nf_tokenizer::Tokenizer,
    text: &str,
    reps: usize,
    out: &mut Output,
) -> Result<()> {
    let pieces = nf_ingest::bench::paragraph_pieces(text, 64 << 10);
    let threads = nf_engine::cpu::threads();
    let mut tokens = 0;
    let mut rates = Vec::new();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        tokens = nf_ingest::bench::encode_pieces(tok, &pieces, threads)?;
        rates.push(text.len() as f64 / 1e6 / t.elapsed().as_secs_f64());
    }
    out.text(&format!("{tokens} tokens in {} pieces\n", pieces.len()))?;
    report(out, "tokenize", &rates, "MB/s")
}

/// One thread, inputs of 1 kB, 10 kB, ... `max_mb` MB (decimal units) made by repeating the
/// text (`nf_ingest::bench::scaling`): if the encoder is linear, every size reports the
/// same MB/s.
fn tokenizer_scaling(
    tok: &nf_tokenizer::Tokenizer,
    text: &str,
    max_mb: usize,
    out: &mut Output,
) -> Result<()> {
    for m in nf_ingest::bench::scaling(tok, text, max_mb)? {
        let mb_s = m.bytes as f64 / 1e6 / m.secs;
        out.text(&format!(
            "{:>9} bytes {:>10} tokens {:>10.3} ms {mb_s:>7.2} MB/s\n",
            m.bytes,
            m.tokens,
            m.secs * 1e3
        ))?;
        out.event(|| Event::BenchResult {
            test: format!("tokenize-{}B", m.bytes),
            threads: 1,
            value: mb_s,
            stddev: 0.0,
            unit: "MB/s".into(),
            reps: m.reps as u64,
            isa: Some(nf_engine::cpu::isa().name().into()),
            precision: None,
        })?;
    }
    Ok(())
}

/// Extraction only (the reader, without cleaning or tokenizing), per file.
fn ingest(a: &BenchIngestArgs, out: &mut Output) -> Result<()> {
    let opts = nf_ingest::ReadOptions::default();
    for f in &a.files {
        let mut secs = Vec::new();
        let mut doc = None;
        let name = f.file_name().map_or_else(
            || f.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for _ in 0..a.reps.max(1) {
            let t = Instant::now();
            // A file ingest would skip (empty, unreadable) is reported and the rest go on.
            match nf_ingest::read_document(f, &opts) {
                Ok(d) => doc = Some(d),
                Err(e) => {
                    out.text(&format!("{name}: not measured: {e}\n"))?;
                    break;
                }
            }
            secs.push(t.elapsed().as_secs_f64());
        }
        let Some(doc) = doc else { continue };
        let mb = doc.size as f64 / 1e6;
        out.text(&format!(
            "{name} ({}, {:.2} MB{})\n",
            doc.reader,
            mb,
            doc.pages.map_or(String::new(), |p| format!(", {p} pages"))
        ))?;
        let mb_s: Vec<f64> = secs.iter().map(|s| mb / s).collect();
        report(out, &format!("{}-MB/s", doc.reader), &mb_s, "MB/s")?;
        if let Some(pages) = doc.pages {
            let pages_s: Vec<f64> = secs.iter().map(|s| f64::from(pages) / s).collect();
            report(out, "pdf-pages/s", &pages_s, "pages/s")?;
        }
    }
    Ok(())
}

/// f32 and bf16 GEMM GFLOP/s on square matrices with the active instruction set: the
/// references for the utilization of f32 and of bf16 training.
fn peak(a: &BenchPeakArgs, out: &mut Output) -> Result<()> {
    let isa = nf_engine::cpu::isa();
    out.text(&format!(
        "cpu: {}; isa: {isa}\n",
        nf_engine::cpu::features().summary()
    ))?;
    let n = a.size.max(16);
    // (name, the GEMM peak of one precision at n³ in GFLOP/s, the precision)
    type Peak = (&'static str, fn(usize, usize) -> f64, Precision);
    let peaks: [Peak; 2] = [
        (
            "sgemm",
            nf_engine::matmul::sgemm_peak_gflops,
            Precision::F32,
        ),
        (
            "bf16gemm",
            nf_engine::gemm_bf16::peak_gflops,
            Precision::Bf16,
        ),
    ];
    for (name, peak, precision) in peaks {
        let rates: Vec<f64> = (0..a.reps.max(1)).map(|_| peak(n, 1)).collect();
        report_in(
            out,
            &format!("{name}{n}"),
            &rates,
            "GFLOP/s",
            Some(precision),
        )?;
    }
    out.text(&format!(
        "bf16 kernel on {isa}: {}{}\n",
        nf_engine::gemm_bf16::kernel_name(isa),
        if isa.has_native_bf16() {
            ""
        } else {
            " (emulated: native bf16 needs avx512bf16 or amx)"
        }
    ))?;
    Ok(())
}

/// Training steps per second on a real or random model, reported as tokens/s, with the
/// memory the model holds.
fn train(a: &BenchTrainArgs, home: &Path, out: &mut Output) -> Result<()> {
    let isa = nf_engine::cpu::isa();
    let precision = a.precision.resolve(isa);
    let base_ty = crate::flags::base_dtype(&a.base_dtype)?.ggml();
    if base_ty.is_some() && a.lora_rank == 0 {
        return Err(user_error(
            ErrorCode::BadInput,
            "--base-dtype applies to LoRA: full fine-tuning trains every weight in f32",
            "add --lora-rank R, or drop --base-dtype",
        ));
    }
    if let Some(w) = nf_train::run::precision_warning(precision, isa) {
        eprintln!("warning: {w}");
    }
    let model = match &a.model {
        Some(m) => {
            let args = nf_store::ModelSpec {
                model: m.clone(),
                tokenizer: a.tokenizer.clone(),
                adapter: None,
            };
            load(&args, home)?.model
        }
        None => random_model(a, base_ty)?,
    };
    if a.seq_len > model.config.max_seq_len || a.batch_size == 0 || a.seq_len == 0 {
        return Err(user_error(
            ErrorCode::BadInput,
            format!("--seq-len must be 1..={}", model.config.max_seq_len),
            "lower --seq-len",
        ));
    }
    let c = model.config.clone();
    let shape = nf_model::train::BatchShape {
        batch: a.batch_size,
        seq_len: a.seq_len,
        recompute: a.recompute,
    };
    let r = nf_train::bench::bench_train(
        model,
        &nf_train::bench::BenchTrain {
            lora_rank: a.lora_rank,
            shape,
            precision,
            base: base_ty,
            steps: a.steps,
        },
    )?;
    let (secs, comp, n) = (&r.step_secs, &r.components, shape.batch * shape.seq_len);
    let steps = secs.len() as f64;
    let base = match (a.lora_rank, base_ty) {
        (0, _) => String::new(),
        (_, Some(ty)) => format!(", base {}", ty.name()),
        (_, None) => ", base as loaded".into(),
    };
    out.text(&format!(
        "train {} dim {} layers {} heads {}/{} hidden {} vocab {}, {} params, batch {} × {} tokens{base}, precision {precision} on {}, cpu: {}\n",
        if a.lora_rank > 0 { format!("lora r{}", a.lora_rank) } else { "full".into() },
        c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size,
        c.n_params(), a.batch_size, a.seq_len,
        crate::flags::isa_and_kernel(isa.name(), &nf_train::run::kernel_of(precision, isa)),
        nf_engine::cpu::features().summary()
    ))?;
    let p = Some(precision);
    let tok_s: Vec<f64> = secs.iter().map(|s| n as f64 / s).collect();
    report_in(
        out,
        &format!("train_b{}_t{}", a.batch_size, a.seq_len),
        &tok_s,
        "tokens/s",
        p,
    )?;
    let ms: Vec<f64> = secs.iter().map(|s| s * 1e3).collect();
    report_in(out, "ms_per_step", &ms, "ms", p)?;
    let gflops: Vec<f64> = secs.iter().map(|s| r.flops_per_step / s / 1e9).collect();
    report_in(out, "train_flops", &gflops, "GFLOP/s", p)?;
    out.text(&format!(
        "ms/step: matmul {:.1}, attention {:.1}, norms {:.1}, loss {:.1}, other {:.1}\n",
        comp.matmul * 1e3 / steps,
        comp.attention * 1e3 / steps,
        comp.norms * 1e3 / steps,
        comp.loss * 1e3 / steps,
        comp.other * 1e3 / steps,
    ))?;
    // Memory by part, as `train --dry-run` counts it, and what the process really peaked
    // at (one line of text; an event per part with --json).
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let mut parts = r.memory.clone();
    parts.extend(peak_rss_bytes().map(|b| ("peak_rss", b)));
    let line: Vec<String> = parts
        .iter()
        .map(|(k, b)| format!("{} {:.1}", k.replace('_', " "), mib(*b)))
        .collect();
    out.text(&format!("memory MiB: {}\n", line.join(", ")))?;
    for (part, bytes) in parts {
        bench_event(out, &format!("mem_{part}"), mib(bytes), 0.0, "MiB", 1, p)?;
    }
    Ok(())
}

/// The process's peak resident memory (Linux `VmHWM`), where the system says.
fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A randomly initialized Llama model of the dimensions the flags give
/// (`nf_model::random::random_model`), its matrices made in `ty` when given.
fn random_model(a: &BenchTrainArgs, ty: Option<nf_formats::GgmlType>) -> Result<nf_model::Model> {
    let kv = a.kv_heads.unwrap_or(a.heads);
    if a.heads == 0 || !a.dim.is_multiple_of(a.heads) || kv == 0 || !a.heads.is_multiple_of(kv) {
        return Err(user_error(
            ErrorCode::BadInput,
            "--dim must divide into --heads, and --heads into --kv-heads",
            "e.g. --dim 768 --heads 12 --kv-heads 4",
        ));
    }
    let c = nf_model::random::llama_config(
        a.dim,
        a.hidden,
        a.layers,
        a.heads,
        kv,
        a.vocab,
        a.seq_len.max(256),
    );
    nf_model::random::random_model(&c, ty, 0x1234_5678).map_err(|e| {
        user_error(
            ErrorCode::Unsupported,
            format!(
                "cannot make the model in {}: {e}",
                ty.map_or("f32", |t| t.name())
            ),
            "pick dimensions that are multiples of 32, or another --base-dtype",
        )
    })
}
