//! The parity check of an export: the exported file, read back with our own readers, must
//! compute what the in-memory model computes.
//!
//! For each prompt the reference model continues greedily; the exported model continues
//! greedily too (the two continuations must be identical for lossless types), and then both
//! score the reference's sequence (teacher forcing, so one early difference does not
//! cascade) and their logits are compared position by position: the RMS of the difference
//! relative to the spread (standard deviation) of the reference logits, the largest
//! absolute difference, and how often the top-1 token and the top-k set agree.

use nf_engine::ggml::GgmlType;
use serde::Serialize;

use crate::error::Result;
use crate::model::Model;

/// How far an export of a given type may stray from the model it was made from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerance {
    /// Largest allowed `rms(Δlogits) / std(reference logits)` at any position.
    pub max_rel_rms: f32,
    /// Whether the greedy continuations must be identical.
    pub identical_tokens: bool,
}

/// The documented bound per stored type on the deviation from the fine-tuned f32 model
/// (README's export section lists them): the quantization error budget. f32 exports
/// differ only by summation order (HF's rotate-half RoPE is a permutation of the same
/// pairs); f16 keeps 11 significant bits; the other types were measured on stories260K
/// (the smallest model) and SmolLM2-135M fine-tuned from its Q4_1 GGUF (re-quantizing
/// 4-bit weights to 4 bits is the worst case), and the bound is about twice the larger
/// deviation seen. Whether the file holds what was meant is checked separately and
/// strictly: against the in-memory model quantized the same way, with the f32 bound
/// ([`file_tolerance`]).
pub fn tolerance(ty: GgmlType) -> Tolerance {
    let (max_rel_rms, identical_tokens) = match ty {
        GgmlType::F32 => (1e-4, true),
        GgmlType::F16 => (2e-2, true),
        GgmlType::BF16 => (0.1, false),
        GgmlType::Q8_0 => (0.3, false),
        GgmlType::Q4_1 => (3.0, false),
        _ => (4.0, false),
    };
    Tolerance {
        max_rel_rms,
        identical_tokens,
    }
}

/// The bound between an export and the in-memory model with the same stored types: only
/// summation order may differ.
pub fn file_tolerance() -> Tolerance {
    tolerance(GgmlType::F32)
}

/// What the comparison measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Parity {
    /// Prompts compared.
    pub prompts: usize,
    /// Positions compared (each prompt's last token and every generated one).
    pub positions: usize,
    /// Every greedy continuation of the export equals the reference's.
    pub tokens_identical: bool,
    /// Generated tokens (over all prompts) before the first difference, of `generated`.
    pub tokens_agreeing: usize,
    /// Generated tokens compared, over all prompts.
    pub generated: usize,
    /// The largest `rms(Δlogits) / std(reference logits)` over positions.
    pub max_rel_rms: f32,
    /// The largest absolute logit difference.
    pub max_abs_diff: f32,
    /// Fraction of positions whose most likely token agrees.
    pub top1_agreement: f32,
    /// Mean overlap of the two top-k sets, as a fraction of k.
    pub topk_overlap: f32,
}

impl Parity {
    /// `None` when within `tol`, else what was out of bounds.
    pub fn violation(&self, tol: Tolerance) -> Option<String> {
        if tol.identical_tokens && !self.tokens_identical {
            return Some(format!(
                "greedy continuations differ ({} of {} tokens agree before the first difference)",
                self.tokens_agreeing, self.generated
            ));
        }
        if self.max_rel_rms.is_nan() || self.max_rel_rms > tol.max_rel_rms {
            return Some(format!(
                "logit deviation {:.3e} (rms relative to the logits' spread) exceeds the bound {:.1e}",
                self.max_rel_rms, tol.max_rel_rms
            ));
        }
        None
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// `n_new` greedy tokens after `prompt` (stop tokens included: the check wants a fixed
/// length).
fn greedy(model: &Model, prompt: &[u32], n_new: usize) -> Result<Vec<u32>> {
    let mut cache = model.new_cache(prompt.len() + n_new);
    let n_new = n_new.min(cache.capacity.saturating_sub(prompt.len()));
    let mut logits = model.forward(&mut cache, prompt, false)?;
    let mut out = Vec::with_capacity(n_new);
    for i in 0..n_new {
        let t = argmax(&logits);
        out.push(t);
        if i + 1 < n_new {
            logits = model.forward(&mut cache, &[t], false)?;
        }
    }
    Ok(out)
}

fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(k);
    idx
}

/// Compares `exported` against `reference` on `prompts` (token ids, non-empty).
pub fn compare(
    reference: &Model,
    exported: &Model,
    prompts: &[Vec<u32>],
    n_new: usize,
    k: usize,
) -> Result<Parity> {
    let vocab = reference.config.vocab_size;
    let mut p = Parity {
        tokens_identical: true,
        ..Parity::default()
    };
    let (mut top1, mut overlap) = (0usize, 0f32);
    for prompt in prompts.iter().filter(|p| !p.is_empty()) {
        p.prompts += 1;
        let want = greedy(reference, prompt, n_new)?;
        let got = greedy(exported, prompt, n_new)?;
        p.generated += want.len();
        let agree = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
        p.tokens_agreeing += agree;
        p.tokens_identical &= want == got;
        let mut seq = prompt.clone();
        seq.extend(&want);
        let mut ca = reference.new_cache(seq.len());
        let mut cb = exported.new_cache(seq.len());
        let la = reference.forward(&mut ca, &seq, true)?;
        let lb = exported.forward(&mut cb, &seq, true)?;
        // Positions from the prompt's last token on predict the continuation.
        for pos in prompt.len() - 1..seq.len() {
            let a = &la[pos * vocab..(pos + 1) * vocab];
            let b = &lb[pos * vocab..(pos + 1) * vocab];
            let mean = a.iter().map(|&x| x as f64).sum::<f64>() / vocab as f64;
            let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / vocab as f64;
            let diff2 = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                .sum::<f64>()
                / vocab as f64;
            let rel = (diff2.sqrt() / var.sqrt().max(1e-12)) as f32;
            p.max_rel_rms = p.max_rel_rms.max(rel);
            if rel.is_nan() {
                p.max_rel_rms = f32::NAN;
            }
            for (&x, &y) in a.iter().zip(b) {
                p.max_abs_diff = p.max_abs_diff.max((x - y).abs());
            }
            top1 += usize::from(argmax(a) == argmax(b));
            let (ta, tb) = (top_k(a, k), top_k(b, k));
            overlap += ta.iter().filter(|i| tb.contains(i)).count() as f32 / k.max(1) as f32;
            p.positions += 1;
        }
    }
    if p.positions > 0 {
        p.top1_agreement = top1 as f32 / p.positions as f32;
        p.topk_overlap = overlap / p.positions as f32;
    }
    Ok(p)
}
