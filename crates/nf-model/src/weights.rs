//! Model weights in f32, loaded from any of the three sources under GGUF tensor names.
//!
//! Shapes follow the engine's convention: matrices are `[out, in]` row-major. Matrices are
//! [`Weight`]s, kept in the file's quantized blocks when it has them (a Q4_1 GGUF stays a
//! sixth of its f32 size in memory); norms and biases are always f32.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nf_engine::linear::Weight;
use nf_formats::GgufFile;
use nf_formats::llama2c::Llama2cFile;
use nf_formats::quant::dequantize_to_vec;
use nf_formats::safetensors::SafeTensorsDir;

use crate::config::Config;
use crate::error::{ModelError, Result};

/// One transformer block.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// RMSNorm weight before attention, `[dim]`.
    pub attn_norm: Vec<f32>,
    /// Query projection, `[n_heads * head_dim, dim]`.
    pub wq: Weight,
    /// Key projection, `[n_kv_heads * head_dim, dim]`.
    pub wk: Weight,
    /// Value projection, `[n_kv_heads * head_dim, dim]`.
    pub wv: Weight,
    /// Attention output projection, `[dim, n_heads * head_dim]`.
    pub wo: Weight,
    /// Query bias, `[n_heads * head_dim]` (Qwen2).
    pub bq: Option<Vec<f32>>,
    /// Key bias, `[n_kv_heads * head_dim]`.
    pub bk: Option<Vec<f32>>,
    /// Value bias, `[n_kv_heads * head_dim]`.
    pub bv: Option<Vec<f32>>,
    /// RMSNorm weight on each query head, `[head_dim]` (Qwen3).
    pub q_norm: Option<Vec<f32>>,
    /// RMSNorm weight on each key head, `[head_dim]`.
    pub k_norm: Option<Vec<f32>>,
    /// RMSNorm weight before the feed-forward block, `[dim]`.
    pub ffn_norm: Vec<f32>,
    /// SwiGLU gate projection, `[hidden_dim, dim]`.
    pub w_gate: Weight,
    /// SwiGLU up projection, `[hidden_dim, dim]`.
    pub w_up: Weight,
    /// SwiGLU down projection, `[dim, hidden_dim]`.
    pub w_down: Weight,
}

/// Every weight of a model, under GGUF names, in its stored type.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embedding, `[vocab, dim]`.
    pub token_embd: Weight,
    /// The transformer blocks, first to last.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm weight, `[dim]`.
    pub output_norm: Vec<f32>,
    /// `None` when the classifier is tied to the embedding.
    pub output: Option<Weight>, // [vocab, dim]
    /// Per-frequency RoPE divisors (GGUF `rope_freqs.weight`, Llama 3.1 scaling).
    pub rope_freqs: Option<Vec<f32>>, // [head_dim / 2]
}

/// Where tensors come from. Every source answers GGUF names with f32 data.
pub(crate) enum Source<'a> {
    Gguf(&'a GgufFile),
    SafeTensors(&'a SafeTensorsDir, PathBuf),
    Llama2c(Llama2cFile),
}

impl Source<'_> {
    fn path(&self) -> PathBuf {
        match self {
            Source::Gguf(g) => g.path().to_path_buf(),
            Source::SafeTensors(_, p) => p.clone(),
            Source::Llama2c(f) => f.path.clone(),
        }
    }

    /// The tensor called `name` (GGUF naming), or `None` if the source has none.
    fn take(&mut self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        match self {
            Source::Gguf(g) => {
                let Some(info) = g.tensor_info(name) else {
                    return Ok(None);
                };
                let data = dequantize_to_vec(
                    info.ggml_type,
                    g.tensor_data(info),
                    info.n_elements() as usize,
                )
                .map_err(|e| ModelError::Config {
                    path: g.path().into(),
                    reason: format!("tensor `{name}`: {e}"),
                })?;
                Ok(Some((info.shape(), data)))
            }
            Source::SafeTensors(st, _) => {
                let hf = hf_name(name);
                if !st.contains(&hf) {
                    return Ok(None);
                }
                Ok(Some(st.to_f32(&hf)?))
            }
            Source::Llama2c(f) => Ok(f.tensors.remove(name)),
        }
    }

    fn require(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let path = self.path();
        let (got, data) =
            self.take(name)?
                .ok_or_else(|| nf_formats::FormatError::MissingTensor {
                    path: path.clone(),
                    name: name.into(),
                })?;
        check_shape(&path, name, shape, &got)?;
        Ok(data)
    }

    /// A `[rows, cols]` matrix, kept in its stored quantized type when the source is GGUF.
    fn matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Weight> {
        self.optional_matrix(name, rows, cols)?.ok_or_else(|| {
            nf_formats::FormatError::MissingTensor {
                path: self.path(),
                name: name.into(),
            }
            .into()
        })
    }

    fn optional_matrix(&mut self, name: &str, rows: usize, cols: usize) -> Result<Option<Weight>> {
        if let Source::Gguf(g) = self {
            let Some(info) = g.tensor_info(name) else {
                return Ok(None);
            };
            check_shape(g.path(), name, &[rows, cols], &info.shape())?;
            let w = Weight::from_quant(rows, cols, info.ggml_type, g.tensor_data(info).to_vec())
                .map_err(|e| ModelError::Config {
                    path: g.path().into(),
                    reason: format!("tensor `{name}`: {e}"),
                })?;
            return Ok(Some(w));
        }
        Ok(self
            .optional(name, &[rows, cols])?
            .map(|v| Weight::from_f32(rows, cols, v)))
    }

    fn optional(&mut self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        let path = self.path();
        match self.take(name)? {
            None => Ok(None),
            Some((got, data)) => {
                check_shape(&path, name, shape, &got)?;
                Ok(Some(data))
            }
        }
    }
}

fn check_shape(path: &Path, name: &str, expected: &[usize], got: &[usize]) -> Result<()> {
    // A 1-D tensor may be stored as [n] or [1, n]; compare element layout, not rank.
    let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    if squeeze(expected) != squeeze(got) {
        return Err(ModelError::Shape {
            path: path.into(),
            name: name.into(),
            expected: expected.to_vec(),
            got: got.to_vec(),
        });
    }
    Ok(())
}

/// Hugging Face name of a GGUF-named tensor.
pub fn hf_name(gguf: &str) -> String {
    let map: HashMap<&str, &str> = HashMap::from([
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ]);
    if let Some(n) = map.get(gguf) {
        return n.to_string();
    }
    let Some(rest) = gguf.strip_prefix("blk.") else {
        return gguf.to_string();
    };
    let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let hf_tail = match tail {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_q.bias" => "self_attn.q_proj.bias",
        "attn_k.bias" => "self_attn.k_proj.bias",
        "attn_v.bias" => "self_attn.v_proj.bias",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "attn_q_norm.weight" => "self_attn.q_norm.weight",
        "attn_k_norm.weight" => "self_attn.k_norm.weight",
        "attn_qkv.weight" => "self_attn.qkv_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        // Phi-3 stores gate and up fused in `gate_up_proj`; GGUF calls the fused one ffn_up.
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_gate_up.weight" => "mlp.gate_up_proj.weight",
        other => return format!("model.layers.{layer}.{other}"),
    };
    format!("model.layers.{layer}.{hf_tail}")
}

impl Weights {
    pub(crate) fn load(c: &Config, src: &mut Source<'_>) -> Result<Weights> {
        let (d, h, qd, kvd, hd) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim(), c.head_dim);
        let token_embd = src.matrix("token_embd.weight", c.vocab_size, d)?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            // Phi-3 fuses q, k, v into one matrix and gate, up into another; split at load so
            // the forward pass has one shape for every model.
            let fused_qkv = src.optional_matrix(&n("attn_qkv.weight"), qd + 2 * kvd, d)?;
            let (wq, wk, wv) = match fused_qkv {
                Some(m) => {
                    let mut p = m.split_rows(&[qd, kvd, kvd]).into_iter();
                    (p.next().unwrap(), p.next().unwrap(), p.next().unwrap())
                }
                None => (
                    src.matrix(&n("attn_q.weight"), qd, d)?,
                    src.matrix(&n("attn_k.weight"), kvd, d)?,
                    src.matrix(&n("attn_v.weight"), kvd, d)?,
                ),
            };
            let fused_up = if c.arch == "phi3" {
                let name = if matches!(src, Source::SafeTensors(..)) {
                    n("ffn_gate_up.weight")
                } else {
                    n("ffn_up.weight")
                };
                Some(src.matrix(&name, 2 * h, d)?)
            } else {
                None
            };
            let (w_gate, w_up) = match fused_up {
                Some(m) => {
                    let mut p = m.split_rows(&[h, h]).into_iter();
                    (p.next().unwrap(), p.next().unwrap())
                }
                None => (
                    src.matrix(&n("ffn_gate.weight"), h, d)?,
                    src.matrix(&n("ffn_up.weight"), h, d)?,
                ),
            };
            let bias = |src: &mut Source<'_>, name: &str, len: usize| -> Result<Option<Vec<f32>>> {
                if c.qkv_bias {
                    src.require(name, &[len]).map(Some)
                } else {
                    src.optional(name, &[len])
                }
            };
            let norm = |src: &mut Source<'_>, name: &str| -> Result<Option<Vec<f32>>> {
                if c.qk_norm {
                    src.require(name, &[hd]).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(LayerWeights {
                attn_norm: src.require(&n("attn_norm.weight"), &[d])?,
                bq: bias(src, &n("attn_q.bias"), qd)?,
                bk: bias(src, &n("attn_k.bias"), kvd)?,
                bv: bias(src, &n("attn_v.bias"), kvd)?,
                q_norm: norm(src, &n("attn_q_norm.weight"))?,
                k_norm: norm(src, &n("attn_k_norm.weight"))?,
                wq,
                wk,
                wv,
                wo: src.matrix(&n("attn_output.weight"), d, qd)?,
                ffn_norm: src.require(&n("ffn_norm.weight"), &[d])?,
                w_gate,
                w_up,
                w_down: src.matrix(&n("ffn_down.weight"), d, h)?,
            });
        }
        let output_norm = src.require("output_norm.weight", &[d])?;
        let output = if c.tied_embeddings {
            None
        } else {
            Some(src.matrix("output.weight", c.vocab_size, d)?)
        };
        let rope_freqs = src.optional("rope_freqs.weight", &[hd / 2])?;
        Ok(Weights {
            token_embd,
            layers,
            output_norm,
            output,
            rope_freqs,
        })
    }

    /// Every tensor under its GGUF name with its `[out, in]` shape, as f32, for export.
    pub fn named_tensors(&self, c: &Config) -> Vec<(String, Vec<usize>, Cow<'_, [f32]>)> {
        let (d, h, qd, kvd, hd) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim(), c.head_dim);
        let m = |w: &Weight| -> Cow<'_, [f32]> { Cow::Owned(w.to_f32()) };
        let mut v: Vec<(String, Vec<usize>, Cow<'_, [f32]>)> = vec![(
            "token_embd.weight".into(),
            vec![c.vocab_size, d],
            m(&self.token_embd),
        )];
        for (l, w) in self.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{l}.{s}");
            v.push((
                n("attn_norm.weight"),
                vec![d],
                Cow::Borrowed(w.attn_norm.as_slice()),
            ));
            v.push((n("attn_q.weight"), vec![qd, d], m(&w.wq)));
            v.push((n("attn_k.weight"), vec![kvd, d], m(&w.wk)));
            v.push((n("attn_v.weight"), vec![kvd, d], m(&w.wv)));
            for (name, b, len) in [
                ("attn_q.bias", &w.bq, qd),
                ("attn_k.bias", &w.bk, kvd),
                ("attn_v.bias", &w.bv, kvd),
            ] {
                if let Some(b) = b {
                    v.push((n(name), vec![len], Cow::Borrowed(b.as_slice())));
                }
            }
            for (name, nw) in [
                ("attn_q_norm.weight", &w.q_norm),
                ("attn_k_norm.weight", &w.k_norm),
            ] {
                if let Some(nw) = nw {
                    v.push((n(name), vec![hd], Cow::Borrowed(nw.as_slice())));
                }
            }
            v.push((n("attn_output.weight"), vec![d, qd], m(&w.wo)));
            v.push((
                n("ffn_norm.weight"),
                vec![d],
                Cow::Borrowed(w.ffn_norm.as_slice()),
            ));
            v.push((n("ffn_gate.weight"), vec![h, d], m(&w.w_gate)));
            v.push((n("ffn_up.weight"), vec![h, d], m(&w.w_up)));
            v.push((n("ffn_down.weight"), vec![d, h], m(&w.w_down)));
        }
        v.push((
            "output_norm.weight".into(),
            vec![d],
            Cow::Borrowed(self.output_norm.as_slice()),
        ));
        if let Some(o) = &self.output {
            v.push(("output.weight".into(), vec![c.vocab_size, d], m(o)));
        }
        v
    }
}
