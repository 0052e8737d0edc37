//! Saved activations and backward-pass scratch, sized once for a [`BatchShape`] so a
//! training step allocates nothing.

use crate::config::Config;
use crate::train::BatchShape;

/// What one layer's forward pass saves for its backward pass. `N = batch · seq_len`.
///
/// The two norm outputs and `swiglu(gate, up)` are not saved: the backward recomputes them
/// from what is (see [`Scratch`]), which costs two norms and a SwiGLU per layer and saves
/// a third of the activation memory (82 MiB for SmolLM2-135M at 256 tokens).
#[derive(Debug)]
pub(crate) struct LayerActs {
    pub q_lin: Vec<f32>, // [N, q_dim] q projection (+bias) before q-norm (Qwen3 only)
    pub k_lin: Vec<f32>, // [N, kv_dim] likewise for k
    pub q: Vec<f32>,     // [N, q_dim] q after norm and RoPE
    pub k: Vec<f32>,     // [N, kv_dim]
    pub v: Vec<f32>,     // [N, kv_dim]
    pub att: Vec<f32>,   // [N, q_dim] attention output
    pub lse: Vec<f32>,   // [batch, n_heads, seq_len] softmax log-normalizers
    pub x_mid: Vec<f32>, // [N, dim] residual after attention
    pub gate: Vec<f32>,  // [N, hidden]
    pub up: Vec<f32>,    // [N, hidden]
    /// Per adapter: `scale · dropout(x) · Aᵀ`, `[N, rank]`.
    pub lora_h: Vec<Vec<f32>>,
}

impl LayerActs {
    fn new(c: &Config, n: usize, batch: usize, seq: usize, slots: usize, rank: usize) -> Self {
        let (d, h, qd, kvd) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim());
        let qk = if c.qk_norm { 1 } else { 0 };
        LayerActs {
            q_lin: vec![0.0; qk * n * qd],
            k_lin: vec![0.0; qk * n * kvd],
            q: vec![0.0; n * qd],
            k: vec![0.0; n * kvd],
            v: vec![0.0; n * kvd],
            att: vec![0.0; n * qd],
            lse: vec![0.0; batch * c.n_heads * seq],
            x_mid: vec![0.0; n * d],
            gate: vec![0.0; n * h],
            up: vec![0.0; n * h],
            lora_h: (0..slots).map(|_| vec![0.0; n * rank]).collect(),
        }
    }
}

/// Gradient buffers reused by every layer of the backward pass.
#[derive(Debug)]
pub(crate) struct Grads {
    pub dres: Vec<f32>,   // [N, dim] gradient of the residual stream
    pub dxn: Vec<f32>,    // [N, dim]
    pub dq: Vec<f32>,     // [N, q_dim]
    pub dk: Vec<f32>,     // [N, kv_dim]
    pub dv: Vec<f32>,     // [N, kv_dim]
    pub dq_lin: Vec<f32>, // [N, q_dim] (Qwen3)
    pub dk_lin: Vec<f32>, // [N, kv_dim] (Qwen3)
    pub datt: Vec<f32>,   // [N, q_dim]
    pub dgate: Vec<f32>,  // [N, hidden]
    pub dup: Vec<f32>,    // [N, hidden]
    pub dact: Vec<f32>,   // [N, hidden]
    pub dh: Vec<f32>,     // [3, N, rank] adapter hidden gradients (q, k, v share x)
    pub attn: Vec<f32>,   // attention backward scratch (one sequence)
}

/// Buffers every layer reuses, in the forward and again in the backward.
#[derive(Debug)]
pub(crate) struct Scratch {
    /// The input to an adapter after dropout, `[N, max in]`.
    pub xd: Vec<f32>,
    /// A projection's output before it is added, `[N, max out]`.
    pub tmp: Vec<f32>,
    /// A norm's output, `[N, dim]`: the attention norm's, then the FFN norm's.
    pub xn: Vec<f32>,
    /// `swiglu(gate, up)`, `[N, hidden]`.
    pub act: Vec<f32>,
}

impl Scratch {
    fn len(&self) -> usize {
        self.xd.len() + self.tmp.len() + self.xn.len() + self.act.len()
    }
}

/// Every buffer a step needs, allocated up front.
#[derive(Debug)]
pub struct Activations {
    /// Residual stream entering each layer, `[n_layers][N, dim]`; entry `n_layers` is the
    /// final residual before the output norm.
    pub(crate) layer_in: Vec<Vec<f32>>,
    /// One entry per layer, or a single reused entry under recompute.
    pub(crate) saved: Vec<LayerActs>,
    pub(crate) xnf: Vec<f32>, // [N, dim] output-norm output
    pub(crate) scratch: Scratch,
    /// Logits of one chunk of tokens, `[chunk, vocab]`.
    pub(crate) logits: Vec<f32>,
    pub(crate) chunk: usize,
    pub(crate) g: Grads,
}

/// Bound on the logits scratch (floats): 64 MiB, whatever the vocabulary. Each chunk
/// multiplies by the whole classifier (and in bf16 packs it again), so fewer, larger chunks
/// are faster: 256 tokens of a 32k or 49k vocabulary are one chunk.
const LOGITS_BUDGET: usize = 1 << 24;

impl Activations {
    pub(crate) fn new(c: &Config, s: BatchShape, slots: usize, rank: usize) -> Activations {
        let n = s.batch * s.seq_len;
        let (d, h, qd, kvd) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim());
        let n_saved = if s.recompute { 1 } else { c.n_layers };
        let widest = d.max(h).max(qd);
        let chunk = (LOGITS_BUDGET / c.vocab_size).clamp(1, n.max(1));
        let shape = nf_engine::attention::AttnShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
        };
        let qk = if c.qk_norm { 1 } else { 0 };
        Activations {
            layer_in: (0..=c.n_layers).map(|_| vec![0.0; n * d]).collect(),
            saved: (0..n_saved)
                .map(|_| LayerActs::new(c, n, s.batch, s.seq_len, slots, rank))
                .collect(),
            xnf: vec![0.0; n * d],
            scratch: Scratch {
                xd: vec![0.0; if slots > 0 { n * widest } else { 0 }],
                tmp: vec![0.0; if slots > 0 { n * widest } else { 0 }],
                xn: vec![0.0; n * d],
                act: vec![0.0; n * h],
            },
            logits: vec![0.0; chunk * c.vocab_size],
            chunk,
            g: Grads {
                dres: vec![0.0; n * d],
                dxn: vec![0.0; n * d],
                dq: vec![0.0; n * qd],
                dk: vec![0.0; n * kvd],
                dv: vec![0.0; n * kvd],
                dq_lin: vec![0.0; qk * n * qd],
                dk_lin: vec![0.0; qk * n * kvd],
                datt: vec![0.0; n * qd],
                dgate: vec![0.0; n * h],
                dup: vec![0.0; n * h],
                dact: vec![0.0; n * h],
                dh: vec![0.0; 3 * n * rank],
                attn: vec![
                    0.0;
                    nf_engine::attention::attention_backward_scratch_len(s.seq_len, shape)
                ],
            },
        }
    }

    /// Bytes held, for the memory estimate in the run report.
    pub fn bytes(&self) -> usize {
        let la = |a: &LayerActs| {
            a.q_lin.len()
                + a.k_lin.len()
                + a.q.len()
                + a.k.len()
                + a.v.len()
                + a.att.len()
                + a.lse.len()
                + a.x_mid.len()
                + a.gate.len()
                + a.up.len()
                + a.lora_h.iter().map(Vec::len).sum::<usize>()
        };
        let g = &self.g;
        let grads = g.dres.len()
            + g.dxn.len()
            + g.dq.len()
            + g.dk.len()
            + g.dv.len()
            + g.dq_lin.len()
            + g.dk_lin.len()
            + g.datt.len()
            + g.dgate.len()
            + g.dup.len()
            + g.dact.len()
            + g.dh.len()
            + g.attn.len();
        4 * (self.layer_in.iter().map(Vec::len).sum::<usize>()
            + self.saved.iter().map(la).sum::<usize>()
            + self.xnf.len()
            + self.scratch.len()
            + self.logits.len()
            + grads)
    }
}

impl Activations {
    /// A placeholder holding nothing, swapped in while the real buffers are borrowed apart
    /// from the model.
    pub(crate) fn empty() -> Activations {
        Activations {
            layer_in: Vec::new(),
            saved: Vec::new(),
            xnf: Vec::new(),
            scratch: Scratch {
                xd: Vec::new(),
                tmp: Vec::new(),
                xn: Vec::new(),
                act: Vec::new(),
            },
            logits: Vec::new(),
            chunk: 1,
            g: Grads {
                dres: Vec::new(),
                dxn: Vec::new(),
                dq: Vec::new(),
                dk: Vec::new(),
                dv: Vec::new(),
                dq_lin: Vec::new(),
                dk_lin: Vec::new(),
                datt: Vec::new(),
                dgate: Vec::new(),
                dup: Vec::new(),
                dact: Vec::new(),
                dh: Vec::new(),
                attn: Vec::new(),
            },
        }
    }
}
