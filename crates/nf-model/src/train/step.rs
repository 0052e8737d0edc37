//! One micro-batch: forward with saved activations, fused classifier + cross-entropy in
//! chunks of tokens, and the backward pass, layer by layer in reverse.
//!
//! Every backward kernel accumulates into its outputs, so the residual stream's gradient
//! `dres` flows through a layer by having each branch add its part.

use nf_engine::Precision;
use nf_engine::activation::{swiglu, swiglu_backward};
use nf_engine::attention::{AttnShape, attention_backward, attention_forward_train};
use nf_engine::embedding::embedding_backward;
use nf_engine::loss::{IGNORE, cross_entropy_loss, softmax_cross_entropy_backward};
use nf_engine::rope::Rope;

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::train::acts::{Activations, LayerActs, Scratch};
use crate::train::{Lin, Mat, ParamStore, TrainLayer, TrainModel, splitmix64};

mod ops;
mod times;
use ops::*;
use times::timed;
pub use times::{BatchLoss, ComponentTimes, StepTimes};

/// What every layer function reads.
pub(super) struct Ctx<'a> {
    pub(super) c: &'a Config,
    pub(super) rope: &'a Rope,
    pub(super) batch: usize,
    pub(super) seq: usize,
    pub(super) lora_scale: f32,
    /// Dropout probability in effect (0 in eval mode).
    pub(super) dropout: f32,
    pub(super) seed: u64,
    pub(super) times: &'a StepTimes,
    /// How the GEMMs multiply.
    pub(super) precision: Precision,
    /// Empty, or [batch · seq]: where each token's packed example starts within its
    /// sequence (see [`TrainModel::forward_backward_packed`]).
    pub(super) starts: &'a [u32],
    /// Per sequence, the row ranges of its examples, derived from `starts` once per pass
    /// rather than in every layer.
    pub(super) examples: Vec<Vec<std::ops::Range<usize>>>,
}

/// The row ranges of the examples of each sequence of `seq` rows: one range per sequence
/// when `starts` is empty, else a new example wherever a row's start is the row itself.
fn example_ranges(starts: &[u32], batch: usize, seq: usize) -> Vec<Vec<std::ops::Range<usize>>> {
    (0..batch)
        .map(|b| {
            if starts.is_empty() {
                return std::iter::once(0..seq).collect();
            }
            let row = &starts[b * seq..(b + 1) * seq];
            let mut firsts: Vec<usize> = (0..seq).filter(|&t| row[t] as usize == t).collect();
            firsts.push(seq);
            firsts.windows(2).map(|w| w[0]..w[1]).collect()
        })
        .collect()
}

impl Ctx<'_> {
    /// Sequence `b`'s example starts, for the attention kernels (empty: one causal sequence).
    pub(super) fn starts_of(&self, b: usize) -> &[u32] {
        if self.starts.is_empty() {
            &[]
        } else {
            &self.starts[b * self.seq..(b + 1) * self.seq]
        }
    }

    /// The rows of sequence `b` that form one example each, in order: RoPE positions
    /// restart at 0 in each, as they would for the example alone.
    pub(super) fn examples_of(&self, b: usize) -> &[std::ops::Range<usize>] {
        &self.examples[b]
    }

    pub(super) fn shape(&self) -> AttnShape {
        AttnShape {
            n_heads: self.c.n_heads,
            n_kv_heads: self.c.n_kv_heads,
            head_dim: self.c.head_dim,
        }
    }

    /// The dropout stream of adapter `slot` in layer `l`.
    pub(super) fn dropout_key(&self, l: usize, slot: usize) -> u64 {
        let mut s = self.seed ^ ((l as u64) << 32) ^ ((slot as u64) << 8);
        splitmix64(&mut s)
    }
}

/// One transformer block: x_out = block(x_in), saving what the backward pass needs in `a`.
#[allow(clippy::too_many_arguments)]
fn layer_forward(
    cx: &Ctx,
    lw: &TrainLayer,
    l: usize,
    x_in: &[f32],
    x_out: &mut [f32],
    a: &mut LayerActs,
    s: &mut Scratch,
    p: &ParamStore,
) {
    let c = cx.c;
    let (t, qd, kvd, hd) = (cx.seq, c.q_dim(), c.kv_dim(), c.head_dim);
    norm_forward(cx, &mut s.xn, x_in, &lw.attn_norm, p);
    let (q_out, k_out) = if c.qk_norm {
        (&mut a.q_lin, &mut a.k_lin)
    } else {
        (&mut a.q, &mut a.k)
    };
    lin_forward(
        cx,
        &lw.q,
        l,
        q_out,
        &s.xn,
        h_of(&mut a.lora_h, &lw.q),
        &mut s.xd,
        &mut s.tmp,
        p,
    );
    lin_forward(
        cx,
        &lw.k,
        l,
        k_out,
        &s.xn,
        h_of(&mut a.lora_h, &lw.k),
        &mut s.xd,
        &mut s.tmp,
        p,
    );
    lin_forward(
        cx,
        &lw.v,
        l,
        &mut a.v,
        &s.xn,
        h_of(&mut a.lora_h, &lw.v),
        &mut s.xd,
        &mut s.tmp,
        p,
    );
    bias_forward(q_out, &lw.bq, p);
    bias_forward(k_out, &lw.bk, p);
    bias_forward(&mut a.v, &lw.bv, p);
    if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
        norm_forward(cx, &mut a.q, &a.q_lin, qn, p);
        norm_forward(cx, &mut a.k, &a.k_lin, kn, p);
    }
    timed(&cx.times.other, || {
        for b in 0..cx.batch {
            for e in cx.examples_of(b).iter().cloned() {
                let rows = b * t + e.start..b * t + e.end;
                let (qs, ks) = (
                    rows.start * qd..rows.end * qd,
                    rows.start * kvd..rows.end * kvd,
                );
                cx.rope.apply(&mut a.q[qs], 0, c.n_heads, hd);
                cx.rope.apply(&mut a.k[ks], 0, c.n_kv_heads, hd);
            }
        }
    });
    timed(&cx.times.attention, || {
        for b in 0..cx.batch {
            let (qs, ks) = (b * t * qd..(b + 1) * t * qd, b * t * kvd..(b + 1) * t * kvd);
            attention_forward_train(
                &mut a.att[qs.clone()],
                &mut a.lse[b * c.n_heads * t..(b + 1) * c.n_heads * t],
                &a.q[qs],
                &a.k[ks.clone()],
                &a.v[ks],
                cx.starts_of(b),
                cx.shape(),
                cx.precision,
            );
        }
    });
    lin_forward(
        cx,
        &lw.o,
        l,
        &mut a.x_mid,
        &a.att,
        h_of(&mut a.lora_h, &lw.o),
        &mut s.xd,
        &mut s.tmp,
        p,
    );
    timed(&cx.times.other, || add_into(&mut a.x_mid, x_in));
    norm_forward(cx, &mut s.xn, &a.x_mid, &lw.ffn_norm, p);
    lin_forward(
        cx,
        &lw.gate,
        l,
        &mut a.gate,
        &s.xn,
        h_of(&mut a.lora_h, &lw.gate),
        &mut s.xd,
        &mut s.tmp,
        p,
    );
    lin_forward(
        cx,
        &lw.up,
        l,
        &mut a.up,
        &s.xn,
        h_of(&mut a.lora_h, &lw.up),
        &mut s.xd,
        &mut s.tmp,
        p,
    );
    timed(&cx.times.other, || swiglu(&mut s.act, &a.gate, &a.up));
    lin_forward(
        cx,
        &lw.down,
        l,
        x_out,
        &s.act,
        h_of(&mut a.lora_h, &lw.down),
        &mut s.xd,
        &mut s.tmp,
        p,
    );
    timed(&cx.times.other, || add_into(x_out, &a.x_mid));
}

/// The LoRA hidden buffer of `lin`'s adapter, read-only.
fn h_ref<'a>(lora_h: &'a [Vec<f32>], lin: &Lin) -> Option<&'a [f32]> {
    lin.adapter.map(|ad| lora_h[ad.slot].as_slice())
}

/// Backward of [`layer_forward`]: on entry `acts.g.dres` holds dL/dx_out; on exit dL/dx_in.
#[allow(clippy::too_many_arguments)]
fn layer_backward(
    cx: &Ctx,
    lw: &TrainLayer,
    l: usize,
    x_in: &[f32],
    a: &LayerActs,
    s: &mut Scratch,
    g: &mut crate::train::acts::Grads,
    p: &mut ParamStore,
) {
    let c = cx.c;
    let (t, qd, kvd, hd) = (cx.seq, c.q_dim(), c.kv_dim(), c.head_dim);
    // Recompute what the forward did not save: the FFN norm's output and SwiGLU's.
    norm_forward(cx, &mut s.xn, &a.x_mid, &lw.ffn_norm, p);
    timed(&cx.times.other, || swiglu(&mut s.act, &a.gate, &a.up));
    // Feed-forward: x_out = x_mid + down(swiglu(gate(xn2), up(xn2))).
    g.dact.fill(0.0);
    lin_backward(
        cx,
        &lw.down,
        l,
        &mut g.dact,
        &g.dres,
        &s.act,
        h_ref(&a.lora_h, &lw.down),
        &mut s.xd,
        &mut g.dh,
        p,
    );
    timed(&cx.times.other, || {
        swiglu_backward(&mut g.dgate, &mut g.dup, &g.dact, &a.gate, &a.up)
    });
    g.dxn.fill(0.0);
    let ffn_in = [
        (&lw.gate, &g.dgate[..], h_ref(&a.lora_h, &lw.gate)),
        (&lw.up, &g.dup[..], h_ref(&a.lora_h, &lw.up)),
    ];
    lins_backward(cx, l, &ffn_in, &mut g.dxn, &s.xn, &mut s.xd, &mut g.dh, p);
    norm_backward(cx, &mut g.dres, &g.dxn, &a.x_mid, &lw.ffn_norm, p);
    // Attention: x_mid = x_in + o(attention(rope(q), rope(k), v)).
    g.datt.fill(0.0);
    lin_backward(
        cx,
        &lw.o,
        l,
        &mut g.datt,
        &g.dres,
        &a.att,
        h_ref(&a.lora_h, &lw.o),
        &mut s.xd,
        &mut g.dh,
        p,
    );
    g.dq.fill(0.0);
    g.dk.fill(0.0);
    g.dv.fill(0.0);
    timed(&cx.times.attention, || {
        for b in 0..cx.batch {
            let (qs, ks) = (b * t * qd..(b + 1) * t * qd, b * t * kvd..(b + 1) * t * kvd);
            attention_backward(
                &mut g.dq[qs.clone()],
                &mut g.dk[ks.clone()],
                &mut g.dv[ks.clone()],
                &mut g.attn,
                &g.datt[qs.clone()],
                &a.att[qs.clone()],
                &a.lse[b * c.n_heads * t..(b + 1) * c.n_heads * t],
                &a.q[qs],
                &a.k[ks.clone()],
                &a.v[ks],
                cx.starts_of(b),
                cx.shape(),
                cx.precision,
            );
        }
    });
    timed(&cx.times.other, || {
        for b in 0..cx.batch {
            for e in cx.examples_of(b).iter().cloned() {
                let rows = b * t + e.start..b * t + e.end;
                let (qs, ks) = (
                    rows.start * qd..rows.end * qd,
                    rows.start * kvd..rows.end * kvd,
                );
                cx.rope.apply_backward(&mut g.dq[qs], 0, c.n_heads, hd);
                cx.rope.apply_backward(&mut g.dk[ks], 0, c.n_kv_heads, hd);
            }
        }
    });
    if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
        g.dq_lin.fill(0.0);
        g.dk_lin.fill(0.0);
        norm_backward(cx, &mut g.dq_lin, &g.dq, &a.q_lin, qn, p);
        norm_backward(cx, &mut g.dk_lin, &g.dk, &a.k_lin, kn, p);
    }
    let (dq, dk) = if c.qk_norm {
        (&g.dq_lin, &g.dk_lin)
    } else {
        (&g.dq, &g.dk)
    };
    bias_grad(dq, &lw.bq, p);
    bias_grad(dk, &lw.bk, p);
    bias_grad(&g.dv, &lw.bv, p);
    // And the attention norm's output.
    norm_forward(cx, &mut s.xn, x_in, &lw.attn_norm, p);
    g.dxn.fill(0.0);
    let attn_in = [
        (&lw.q, &dq[..], h_ref(&a.lora_h, &lw.q)),
        (&lw.k, &dk[..], h_ref(&a.lora_h, &lw.k)),
        (&lw.v, &g.dv[..], h_ref(&a.lora_h, &lw.v)),
    ];
    lins_backward(cx, l, &attn_in, &mut g.dxn, &s.xn, &mut s.xd, &mut g.dh, p);
    norm_backward(cx, &mut g.dres, &g.dxn, x_in, &lw.attn_norm, p);
}

impl TrainModel {
    fn ctx<'a>(&'a self, times: &'a StepTimes, starts: &'a [u32]) -> Ctx<'a> {
        Ctx {
            c: &self.config,
            rope: &self.rope,
            batch: self.shape.batch,
            seq: self.shape.seq_len,
            lora_scale: self.lora().map_or(0.0, |l| l.scale()),
            dropout: if self.train_mode {
                self.lora().map_or(0.0, |l| l.dropout)
            } else {
                0.0
            },
            seed: self.dropout_seed,
            times,
            precision: self.precision,
            starts,
            examples: example_ranges(starts, self.shape.batch, self.shape.seq_len),
        }
    }

    fn check_batch(&self, inputs: &[u32], targets: &[u32], starts: &[u32]) -> Result<()> {
        let n = self.tokens_per_batch();
        if !starts.is_empty() {
            let t = self.shape.seq_len;
            let bad = starts.len() != n
                || starts.chunks(t).any(|seq| {
                    seq[0] != 0
                        || seq
                            .windows(2)
                            .enumerate()
                            .any(|(i, w)| w[0] > w[1] || (w[1] != w[0] && w[1] as usize != i + 1))
                });
            if bad {
                return Err(ModelError::Config {
                    path: self.source.path.clone(),
                    reason: format!(
                        "example starts must be [batch · seq_len] = {n} positions, each the \
                         first row of its example (0 at each sequence's start, then \
                         unchanged or the row itself)"
                    ),
                });
            }
        }
        if inputs.len() != n || targets.len() != n {
            return Err(ModelError::Config {
                path: self.source.path.clone(),
                reason: format!(
                    "batch of {} inputs / {} targets, the model was sized for {n}",
                    inputs.len(),
                    targets.len()
                ),
            });
        }
        let vocab = self.config.vocab_size;
        if let Some(&id) = inputs
            .iter()
            .chain(targets.iter().filter(|&&t| t != IGNORE))
            .find(|&&t| t as usize >= vocab)
        {
            return Err(ModelError::BadToken { id, vocab });
        }
        Ok(())
    }

    /// Forward pass over `inputs` ([batch · seq_len]), leaving the final normed hidden
    /// states in `acts.xnf` and every layer's saved activations.
    fn forward(&mut self, inputs: &[u32], starts: &[u32], times: &StepTimes) {
        // Packed bf16 copies are current after an optimizer step; anything else that wrote
        // the values (a checkpoint, a test) is caught here.
        timed(&times.other, || self.params.refresh_packs());
        let mut acts = std::mem::replace(&mut self.acts, Activations::empty());
        {
            let cx = self.ctx(times, starts);
            let d = self.config.dim;
            let Activations {
                layer_in,
                saved,
                xnf,
                scratch,
                ..
            } = &mut acts;
            timed(&times.other, || {
                for (row, &tok) in layer_in[0].chunks_exact_mut(d).zip(inputs) {
                    match &self.embed {
                        Mat::Param(id) => row.copy_from_slice(
                            &self.params.value(*id)[tok as usize * d..(tok as usize + 1) * d],
                        ),
                        Mat::Frozen(w) => w.rows_to_f32(tok as usize, row),
                    }
                }
            });
            let n_saved = saved.len();
            for (l, lw) in self.layers.iter().enumerate() {
                let (ins, outs) = layer_in.split_at_mut(l + 1);
                let a = &mut saved[l % n_saved];
                layer_forward(&cx, lw, l, &ins[l], &mut outs[0], a, scratch, &self.params);
            }
            norm_forward(
                &cx,
                xnf,
                &layer_in[self.layers.len()],
                &self.output_norm,
                &self.params,
            );
        }
        self.acts = acts;
    }

    /// Forward, loss and backward over one micro-batch. `inputs`, `targets`:
    /// [batch · seq_len]; targets equal to [`IGNORE`] are masked out. Adds
    /// `grad_scale · ∂(mean loss)/∂θ` to [`ParamStore::grad`] (the caller zeroes it once
    /// per optimizer step; with gradient accumulation over K micro-batches, pass `1/K`).
    pub fn forward_backward(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        grad_scale: f32,
        times: &StepTimes,
    ) -> Result<BatchLoss> {
        self.forward_backward_packed(inputs, targets, &[], grad_scale, times)
    }

    /// [`TrainModel::forward_backward`] over sequences that each pack several examples.
    /// `starts`: [batch · seq_len], for each token the position within its sequence where
    /// its example begins (0 for the first example; a new example at row t has `starts[t] =
    /// t`). Attention stays inside each example and RoPE positions restart at each, so every
    /// example trains exactly as it would alone. Empty `starts` is one example per sequence.
    pub fn forward_backward_packed(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        starts: &[u32],
        grad_scale: f32,
        times: &StepTimes,
    ) -> Result<BatchLoss> {
        // The step runs as one job on the kernel pool (see `on_pool`); its component times
        // are kept on that thread and added to the caller's afterwards.
        let (loss, spent) = nf_engine::cpu::on_pool(|| {
            let local = StepTimes::default();
            let loss = self.forward_backward_on_pool(inputs, targets, starts, grad_scale, &local);
            (loss, local.take())
        });
        times.add(spent);
        loss
    }

    fn forward_backward_on_pool(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        starts: &[u32],
        grad_scale: f32,
        times: &StepTimes,
    ) -> Result<BatchLoss> {
        self.check_batch(inputs, targets, starts)?;
        self.forward(inputs, starts, times);
        let n_targets = targets.iter().filter(|&&t| t != IGNORE).count();
        let scale = if n_targets == 0 {
            0.0
        } else {
            grad_scale / n_targets as f32
        };
        let mut acts = std::mem::replace(&mut self.acts, Activations::empty());
        let mut params = std::mem::take(&mut self.params);
        let loss_sum = {
            let cx = self.ctx(times, starts);
            let (d, v) = (self.config.dim, self.config.vocab_size);
            let Activations {
                layer_in,
                saved,
                xnf,
                scratch,
                logits,
                chunk,
                g,
            } = &mut acts;
            // Classifier + softmax + cross-entropy, a chunk of tokens at a time, so the
            // [tokens, vocab] logits never exist whole.
            let cls = self.output.as_ref().unwrap_or(&self.embed);
            g.dxn.fill(0.0);
            let mut loss_sum = 0.0;
            for ((x, dx), tg) in xnf
                .chunks(*chunk * d)
                .zip(g.dxn.chunks_mut(*chunk * d))
                .zip(targets.chunks(*chunk))
            {
                let lg = &mut logits[..tg.len() * v];
                timed(&times.loss, || {
                    mat_forward(cx.precision, lg, x, cls, &params, v, d)
                });
                loss_sum += timed(&times.loss, || {
                    softmax_cross_entropy_backward(lg, tg, v, scale)
                });
                timed(&times.loss, || {
                    mat_backward(cx.precision, Some(dx), lg, x, cls, &mut params, v, d)
                });
            }
            let n_layers = self.layers.len();
            g.dres.fill(0.0);
            norm_backward(
                &cx,
                &mut g.dres,
                &g.dxn,
                &layer_in[n_layers],
                &self.output_norm,
                &mut params,
            );
            let n_saved = saved.len();
            for l in (0..n_layers).rev() {
                let lw = &self.layers[l];
                if self.shape.recompute {
                    let (ins, outs) = layer_in.split_at_mut(l + 1);
                    layer_forward(
                        &cx,
                        lw,
                        l,
                        &ins[l],
                        &mut outs[0],
                        &mut saved[0],
                        scratch,
                        &params,
                    );
                }
                layer_backward(
                    &cx,
                    lw,
                    l,
                    &layer_in[l],
                    &saved[l % n_saved],
                    scratch,
                    g,
                    &mut params,
                );
            }
            if let Mat::Param(id) = &self.embed {
                let (_, ge) = params.value_and_grad(*id);
                timed(&times.other, || embedding_backward(ge, &g.dres, inputs, d));
            }
            loss_sum
        };
        self.params = params;
        self.acts = acts;
        Ok(BatchLoss {
            loss_sum,
            n_targets,
        })
    }

    /// Loss without gradients (validation): no dropout, parameters and gradients untouched.
    pub fn eval_loss(&mut self, inputs: &[u32], targets: &[u32]) -> Result<BatchLoss> {
        self.eval_loss_packed(inputs, targets, &[])
    }

    /// [`TrainModel::eval_loss`] with packed examples (`starts` as in
    /// [`TrainModel::forward_backward_packed`]).
    pub fn eval_loss_packed(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        starts: &[u32],
    ) -> Result<BatchLoss> {
        nf_engine::cpu::on_pool(|| self.eval_loss_on_pool(inputs, targets, starts))
    }

    fn eval_loss_on_pool(
        &mut self,
        inputs: &[u32],
        targets: &[u32],
        starts: &[u32],
    ) -> Result<BatchLoss> {
        self.check_batch(inputs, targets, starts)?;
        let was = self.train_mode;
        self.train_mode = false;
        let times = StepTimes::default();
        self.forward(inputs, starts, &times);
        self.train_mode = was;
        let (d, v) = (self.config.dim, self.config.vocab_size);
        let cls = self.output.as_ref().unwrap_or(&self.embed);
        let acts = &mut self.acts;
        let mut loss_sum = 0.0;
        for (x, tg) in acts
            .xnf
            .chunks(acts.chunk * d)
            .zip(targets.chunks(acts.chunk))
        {
            let lg = &mut acts.logits[..tg.len() * v];
            mat_forward(self.precision, lg, x, cls, &self.params, v, d);
            loss_sum += cross_entropy_loss(lg, tg, v);
        }
        Ok(BatchLoss {
            loss_sum,
            n_targets: targets.iter().filter(|&&t| t != IGNORE).count(),
        })
    }
}
