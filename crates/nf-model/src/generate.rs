//! The generation loop on token ids: batched prompt processing, then one token at a time
//! until a stop token, the token budget, or the end of the context.

use std::time::Instant;

use crate::error::Result;
use crate::model::{KvCache, Model};
use crate::sampler::Sampler;

/// Prompt tokens are processed in batches of this many: large enough to use matrix-matrix
/// kernels, small enough to bound scratch memory on long prompts.
const PROMPT_BATCH: usize = 256;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token (EOS, end-of-turn) was sampled; it is not part of the output.
    Stop(u32),
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context (KV cache) is full.
    ContextFull,
    /// The token callback asked to stop.
    Cancelled,
}

impl StopReason {
    /// `stop`, `length`, `context` or `cancelled`, as events spell it.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Stop(_) => "stop",
            StopReason::MaxTokens => "length",
            StopReason::ContextFull => "context",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// What a generation produced, and how fast.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, without the prompt and without the stop token.
    pub tokens: Vec<u32>,
    /// Why it stopped.
    pub stop: StopReason,
    /// Prompt tokens processed.
    pub prompt_tokens: usize,
    /// Milliseconds spent on the prompt.
    pub prompt_ms: f64,
    /// Milliseconds spent generating.
    pub decode_ms: f64,
}

/// Feeds `prompt` (appended to whatever `cache` already holds) and samples up to
/// `max_tokens` new tokens. `on_token` sees each new id; returning `false` stops.
pub fn generate(
    model: &Model,
    cache: &mut KvCache,
    prompt: &[u32],
    sampler: &mut Sampler,
    max_tokens: usize,
    stop_ids: &[u32],
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation> {
    let t0 = Instant::now();
    let mut context: Vec<u32> = prompt.to_vec();
    let mut logits = Vec::new();
    for chunk in prompt.chunks(PROMPT_BATCH) {
        logits = model.forward(cache, chunk, false)?;
    }
    let prompt_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let mut tokens = Vec::new();
    let stop = loop {
        if tokens.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        if logits.is_empty() {
            break StopReason::MaxTokens; // empty prompt and empty cache: nothing to condition on
        }
        let next = sampler.sample(&mut logits, &context);
        if stop_ids.contains(&next) {
            break StopReason::Stop(next);
        }
        tokens.push(next);
        context.push(next);
        if !on_token(next) {
            break StopReason::Cancelled;
        }
        if tokens.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        if cache.len >= cache.capacity {
            break StopReason::ContextFull;
        }
        logits = model.forward(cache, &[next], false)?;
    };
    Ok(Generation {
        tokens,
        stop,
        prompt_tokens: prompt.len(),
        prompt_ms,
        decode_ms: t1.elapsed().as_secs_f64() * 1e3,
    })
}

/// Prompt processing speed in tokens/s, as llama-bench's `pp` measures it: one forward
/// pass over `n` valid but arbitrary ids in a fresh cache.
pub fn prompt_rate(m: &Model, n: usize) -> Result<f64> {
    let prompt: Vec<u32> = (0..n)
        .map(|i| (i * 7919 % m.config.vocab_size) as u32)
        .collect();
    let mut cache = m.new_cache(n);
    let t = Instant::now();
    m.forward(&mut cache, &prompt, false)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Decoding speed in tokens/s, as llama-bench's `tg` measures it: `n` greedy one-token
/// steps from an empty cache.
pub fn decode_rate(m: &Model, n: usize) -> Result<f64> {
    let mut cache = m.new_cache(n + 1);
    let mut next = 1u32.min(m.config.vocab_size as u32 - 1);
    let t = Instant::now();
    for _ in 0..n {
        let logits = m.forward(&mut cache, &[next], false)?;
        next = crate::sampler::argmax(&logits);
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}
