//! Training: the Llama-family forward pass with saved activations, its hand-written
//! backward pass, and LoRA, over one flat allocation of trainable parameters.
//!
//! [`TrainModel`] is built from a loaded [`Model`] with a [`Method`]:
//! - [`Method::Full`]: every tensor becomes an f32 trainable parameter.
//! - [`Method::Lora`]: the base stays frozen as loaded (f32, bf16, or its GGUF quantized
//!   blocks, dequantized on the fly in both passes) and only the adapters train.
//!
//! [`TrainModel::forward_backward`] runs one micro-batch and accumulates gradients into
//! [`ParamStore::grad`]; the optimizer lives in `nf-train`.

mod acts;
pub mod adapter;
pub mod adapter_gguf;
pub mod lora;
pub mod params;
mod step;

use nf_engine::linear::Weight;
use nf_engine::matmul::matmul;
use nf_engine::rope::Rope;

use crate::config::Config;
use crate::model::Model;
use crate::weights::{LayerWeights, Weights};

pub use acts::Activations;
pub use lora::{LoraConfig, Target, parse_targets};
pub use params::{ParamStore, TensorId, TensorInfo};
pub use step::{BatchLoss, ComponentTimes, StepTimes};

/// How a run trains the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Every weight trains.
    Full,
    /// A LoRA adapter trains; the base is frozen.
    Lora(LoraConfig),
}

/// Shape of the micro-batches a [`TrainModel`] is sized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Keep only each layer's input and recompute the rest in the backward pass
    /// (gradient checkpointing): activation memory of one layer instead of all.
    pub recompute: bool,
}

/// A matrix the forward pass multiplies by: trainable, or frozen as loaded.
#[derive(Debug, Clone)]
pub(crate) enum Mat {
    Param(TensorId),
    Frozen(Weight),
}

/// A vector (norm weight or bias): trainable or frozen.
#[derive(Debug, Clone)]
pub(crate) enum Vector {
    Param(TensorId),
    Frozen(Vec<f32>),
}

impl Vector {
    pub(crate) fn get<'a>(&'a self, p: &'a ParamStore) -> &'a [f32] {
        match self {
            Vector::Param(id) => p.value(*id),
            Vector::Frozen(v) => v,
        }
    }
}

/// A LoRA adapter on one projection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Adapter {
    pub a: TensorId, // [rank, in]
    pub b: TensorId, // [out, rank]
    /// Index into the layer's saved adapter activations.
    pub slot: usize,
}

/// A projection `y = x · Wᵀ (+ adapter)`, `W: [rows, cols]`.
#[derive(Debug, Clone)]
pub(crate) struct Lin {
    pub base: Mat,
    pub rows: usize,
    pub cols: usize,
    pub adapter: Option<Adapter>,
}

#[derive(Debug, Clone)]
pub(crate) struct TrainLayer {
    pub attn_norm: Vector,      // [dim]
    pub q: Lin,                 // [q_dim, dim]
    pub k: Lin,                 // [kv_dim, dim]
    pub v: Lin,                 // [kv_dim, dim]
    pub o: Lin,                 // [dim, q_dim]
    pub bq: Option<Vector>,     // [q_dim]
    pub bk: Option<Vector>,     // [kv_dim]
    pub bv: Option<Vector>,     // [kv_dim]
    pub q_norm: Option<Vector>, // [head_dim]
    pub k_norm: Option<Vector>, // [head_dim]
    pub ffn_norm: Vector,       // [dim]
    pub gate: Lin,              // [hidden, dim]
    pub up: Lin,                // [hidden, dim]
    pub down: Lin,              // [dim, hidden]
}

/// A model being trained: configuration, the trainable parameters, the frozen rest, and
/// buffers for activations and gradients sized once for [`BatchShape`].
#[derive(Debug)]
pub struct TrainModel {
    /// The architecture.
    pub config: Config,
    /// What trains.
    pub method: Method,
    /// The micro-batch shape the buffers are sized for.
    pub shape: BatchShape,
    /// The trainable parameters and their gradients.
    pub params: ParamStore,
    /// How the step's GEMMs multiply (f32, or bf16 operands with f32 sums); set before
    /// training with [`TrainModel::set_precision`].
    pub precision: nf_engine::Precision,
    pub(crate) rope: Rope,
    pub(crate) embed: Mat, // [vocab, dim]
    pub(crate) layers: Vec<TrainLayer>,
    pub(crate) output_norm: Vector, // [dim]
    /// `None` when tied to the embedding.
    pub(crate) output: Option<Mat>, // [vocab, dim]
    pub(crate) rope_freqs: Option<Vec<f32>>,
    pub(crate) acts: Activations,
    /// Seed of the LoRA dropout masks; the trainer sets it per micro-batch so masks are
    /// reproducible on resume and identical between the forward and backward passes.
    pub dropout_seed: u64,
    /// Whether dropout applies (training) or not (evaluation).
    pub train_mode: bool,
    source: ModelSource,
}

/// What is needed to rebuild an inference [`Model`] from the trained weights.
#[derive(Debug, Clone)]
struct ModelSource {
    path: std::path::PathBuf,
    format: crate::model::ModelFormat,
}

/// Deterministic LoRA `A` initialization: Kaiming-uniform with `a = sqrt(5)` as PEFT (through
/// `nn.Linear`'s default) does, bound `1 / sqrt(in)`, from a SplitMix64 stream.
fn lora_a_init(rank: usize, cols: usize, seed: u64) -> Vec<f32> {
    let bound = 1.0 / (cols as f64).sqrt();
    let mut s = seed;
    (0..rank * cols)
        .map(|_| {
            let u = (splitmix64(&mut s) >> 11) as f64 / (1u64 << 53) as f64;
            ((u * 2.0 - 1.0) * bound) as f32
        })
        .collect()
}

pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl TrainModel {
    /// Prepares `model` for training with `method`, with buffers for micro-batches of
    /// `shape`. `seed` drives the LoRA `A` initialization.
    pub fn new(model: Model, method: Method, shape: BatchShape, seed: u64) -> TrainModel {
        let Model {
            config: c,
            weights,
            rope,
            path,
            format,
        } = model;
        let Weights {
            token_embd,
            layers,
            output_norm,
            output,
            rope_freqs,
        } = weights;
        let full = method == Method::Full;
        let mut items: Vec<(String, Vec<usize>, Vec<f32>, bool)> = Vec::new();
        // Registers a trainable tensor and returns its id.
        let mut add = |name: String, shape: Vec<usize>, v: Vec<f32>, decay: bool| {
            items.push((name, shape, v, decay));
            items.len() - 1
        };
        let mat =
            |name: String,
             w: Weight,
             add: &mut dyn FnMut(String, Vec<usize>, Vec<f32>, bool) -> TensorId| {
                if full {
                    let shape = vec![w.rows, w.cols];
                    Mat::Param(add(name, shape, w.to_f32(), true))
                } else {
                    Mat::Frozen(w)
                }
            };
        let vector =
            |name: String,
             v: Vec<f32>,
             add: &mut dyn FnMut(String, Vec<usize>, Vec<f32>, bool) -> TensorId| {
                if full {
                    let n = v.len();
                    Vector::Param(add(name, vec![n], v, false))
                } else {
                    Vector::Frozen(v)
                }
            };
        let embed = mat("token_embd.weight".into(), token_embd, &mut add);
        let lora = match &method {
            Method::Lora(l) => Some(l.clone()),
            Method::Full => None,
        };
        let mut train_layers = Vec::with_capacity(layers.len());
        let mut lora_seed = seed ^ 0x4C6F_5241; // "LoRA"
        for (l, lw) in layers.into_iter().enumerate() {
            let LayerWeights {
                attn_norm,
                wq,
                wk,
                wv,
                wo,
                bq,
                bk,
                bv,
                q_norm,
                k_norm,
                ffn_norm,
                w_gate,
                w_up,
                w_down,
            } = lw;
            let n = |s: &str| format!("blk.{l}.{s}");
            let mut slot = 0;
            let mut lin = |target: Target, w: Weight, add: &mut dyn FnMut(String, Vec<usize>, Vec<f32>, bool) -> TensorId| {
                let (rows, cols) = (w.rows, w.cols);
                let stem = target.gguf_stem();
                let adapter = lora.as_ref().filter(|l| l.targets.contains(&target)).map(|cfg| {
                    let r = cfg.rank;
                    let a = add(
                        n(&format!("{stem}.lora_a")),
                        vec![r, cols],
                        lora_a_init(r, cols, splitmix64(&mut lora_seed)),
                        true,
                    );
                    let b = add(n(&format!("{stem}.lora_b")), vec![rows, r], vec![0.0; rows * r], true);
                    slot += 1;
                    Adapter { a, b, slot: slot - 1 }
                });
                let base = if full {
                    Mat::Param(add(n(&format!("{stem}.weight")), vec![rows, cols], w.to_f32(), true))
                } else {
                    Mat::Frozen(w)
                };
                Lin { base, rows, cols, adapter }
            };
            let q = lin(Target::Q, wq, &mut add);
            let k = lin(Target::K, wk, &mut add);
            let v = lin(Target::V, wv, &mut add);
            let o = lin(Target::O, wo, &mut add);
            let gate = lin(Target::Gate, w_gate, &mut add);
            let up = lin(Target::Up, w_up, &mut add);
            let down = lin(Target::Down, w_down, &mut add);
            let opt = |name: &str, v: Option<Vec<f32>>, add: &mut dyn FnMut(String, Vec<usize>, Vec<f32>, bool) -> TensorId| {
                v.map(|v| vector(n(name), v, add))
            };
            train_layers.push(TrainLayer {
                attn_norm: vector(n("attn_norm.weight"), attn_norm, &mut add),
                bq: opt("attn_q.bias", bq, &mut add),
                bk: opt("attn_k.bias", bk, &mut add),
                bv: opt("attn_v.bias", bv, &mut add),
                q_norm: opt("attn_q_norm.weight", q_norm, &mut add),
                k_norm: opt("attn_k_norm.weight", k_norm, &mut add),
                ffn_norm: vector(n("ffn_norm.weight"), ffn_norm, &mut add),
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
            });
        }
        let output_norm = vector("output_norm.weight".into(), output_norm, &mut add);
        let output = output.map(|w| mat("output.weight".into(), w, &mut add));
        let params = ParamStore::from_tensors(items);
        let n_slots = lora.as_ref().map_or(0, |l| l.targets.len());
        let rank = lora.as_ref().map_or(0, |l| l.rank);
        let acts = Activations::new(&c, shape, n_slots, rank);
        TrainModel {
            config: c,
            method,
            shape,
            params,
            precision: nf_engine::Precision::F32,
            rope,
            embed,
            layers: train_layers,
            output_norm,
            output,
            rope_freqs,
            acts,
            dropout_seed: 0,
            train_mode: true,
            source: ModelSource { path, format },
        }
    }

    /// The LoRA configuration, when training adapters.
    /// Sets how the step's GEMMs multiply. Results of a step are a pure function of the
    /// inputs within one precision; switching precision mid-run changes the trajectory.
    ///
    /// In bf16 the trainable matrices of the linears and the classifier are kept packed in
    /// bf16 beside their f32 values (see [`ParamStore`]), which the optimizer refreshes.
    pub fn set_precision(&mut self, precision: nf_engine::Precision) {
        self.precision = precision;
        let mut ids = Vec::new();
        if precision == nf_engine::Precision::Bf16 {
            let lins = self.layers.iter().flat_map(|l| {
                [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down].map(|lin| &lin.base)
            });
            let cls = self.output.as_ref().unwrap_or(&self.embed);
            for m in lins.chain([cls]) {
                if let Mat::Param(id) = m {
                    ids.push(*id);
                }
            }
        }
        self.params.set_packed(&ids);
    }

    /// The LoRA settings, for a LoRA model.
    pub fn lora(&self) -> Option<&LoraConfig> {
        match &self.method {
            Method::Lora(l) => Some(l),
            Method::Full => None,
        }
    }

    /// Tokens per micro-batch.
    pub fn tokens_per_batch(&self) -> usize {
        self.shape.batch * self.shape.seq_len
    }

    /// Floating-point operations of one forward + backward pass over a micro-batch, for
    /// throughput reporting: `6 · N · tokens` for the matrix products (2 forward, 4
    /// backward; 2 backward when the matrix is frozen, which needs no weight gradient) plus
    /// the attention score and value products.
    pub fn flops_per_batch(&self) -> f64 {
        let c = &self.config;
        let n = self.tokens_per_batch() as f64;
        let per_layer = (c.dim * (c.q_dim() + 2 * c.kv_dim())
            + c.q_dim() * c.dim
            + 3 * c.dim * c.hidden_dim) as f64;
        let trainable_base = matches!(self.method, Method::Full);
        let mult = if trainable_base { 6.0 } else { 4.0 };
        let cls = (c.vocab_size * c.dim) as f64;
        let t = self.shape.seq_len as f64;
        // Causal attention: q·k and p·v over half the positions on average, forward (2 products)
        // and backward (4 products plus the recomputed scores).
        let attn = c.n_layers as f64 * n * t * c.q_dim() as f64 * 2.0 * 0.5 * 7.0;
        let lora = self.lora().map_or(0.0, |l| {
            let per_tok: usize = self.layers[0]
                .lins()
                .iter()
                .filter(|lin| lin.adapter.is_some())
                .map(|lin| l.rank * (lin.rows + lin.cols))
                .sum();
            6.0 * per_tok as f64 * c.n_layers as f64 * n
        });
        mult * (per_layer * c.n_layers as f64 + cls) * n + attn + lora
    }

    /// An inference [`Model`] with the trained weights (adapters merged into their base
    /// matrices, as f32), for sampling and export.
    pub fn to_model(&self) -> Model {
        let p = &self.params;
        let scale = self.lora().map_or(0.0, |l| l.scale());
        let mat = |m: &Mat| -> Weight {
            match m {
                Mat::Param(id) => {
                    let t = &p.tensors[*id];
                    Weight::from_f32(t.shape[0], t.shape[1], p.value(*id).to_vec())
                }
                Mat::Frozen(w) => w.clone(),
            }
        };
        let lin = |l: &Lin| -> Weight {
            let Some(ad) = l.adapter else {
                return mat(&l.base);
            };
            let mut w = mat(&l.base).to_f32();
            let r = p.tensors[ad.a].shape[0];
            // delta[rows, cols] = B[rows, r] · A[r, cols] = B · (Aᵀ)ᵀ.
            let a_t = transpose(p.value(ad.a), r, l.cols);
            let mut delta = vec![0.0; l.rows * l.cols];
            matmul(&mut delta, p.value(ad.b), &a_t, l.rows, r, l.cols);
            w.iter_mut().zip(&delta).for_each(|(w, d)| *w += scale * d);
            Weight::from_f32(l.rows, l.cols, w)
        };
        let vector = |v: &Vector| v.get(p).to_vec();
        let layers = self
            .layers
            .iter()
            .map(|tl| LayerWeights {
                attn_norm: vector(&tl.attn_norm),
                wq: lin(&tl.q),
                wk: lin(&tl.k),
                wv: lin(&tl.v),
                wo: lin(&tl.o),
                bq: tl.bq.as_ref().map(vector),
                bk: tl.bk.as_ref().map(vector),
                bv: tl.bv.as_ref().map(vector),
                q_norm: tl.q_norm.as_ref().map(vector),
                k_norm: tl.k_norm.as_ref().map(vector),
                ffn_norm: vector(&tl.ffn_norm),
                w_gate: lin(&tl.gate),
                w_up: lin(&tl.up),
                w_down: lin(&tl.down),
            })
            .collect();
        let weights = Weights {
            token_embd: mat(&self.embed),
            layers,
            output_norm: vector(&self.output_norm),
            output: self.output.as_ref().map(mat),
            rope_freqs: self.rope_freqs.clone(),
        };
        Model {
            config: self.config.clone(),
            weights,
            rope: self.rope.clone(),
            path: self.source.path.clone(),
            format: self.source.format,
        }
    }
}

impl TrainLayer {
    pub(crate) fn lins(&self) -> [&Lin; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

/// m: [rows, cols] → [cols, rows].
pub(crate) fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; m.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = m[i * cols + j];
        }
    }
    t
}

impl TrainModel {
    /// Bytes of saved activations and gradient scratch (parameters and gradients excluded).
    pub fn activation_bytes(&self) -> usize {
        self.acts.bytes()
    }

    /// Bytes of the frozen weights as stored (a LoRA run's base: f32, bf16 or quantized
    /// blocks, and its f32 norm vectors); 0 for full fine-tuning, where every weight is a
    /// trainable parameter counted in [`TrainModel::params`].
    pub fn frozen_bytes(&self) -> usize {
        let mat = |m: &Mat| match m {
            Mat::Frozen(w) => w.size_bytes(),
            Mat::Param(_) => 0,
        };
        let vector = |v: &Vector| match v {
            Vector::Frozen(v) => v.len() * 4,
            Vector::Param(_) => 0,
        };
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let vectors = [&l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm]
                    .into_iter()
                    .flatten()
                    .chain([&l.attn_norm, &l.ffn_norm])
                    .map(vector)
                    .sum::<usize>();
                l.lins().iter().map(|lin| mat(&lin.base)).sum::<usize>() + vectors
            })
            .sum();
        mat(&self.embed) + self.output.as_ref().map_or(0, mat) + vector(&self.output_norm) + layers
    }
}

impl TrainModel {
    /// Re-stores every frozen f32 matrix (a LoRA run's base) as `ty` blocks: `BF16` halves
    /// the base's memory, `Q8_0` quarters it, and both passes dequantize on the fly.
    /// Trainable tensors and matrices already stored quantized are left as they are.
    pub fn store_frozen_as(
        &mut self,
        ty: nf_engine::ggml::GgmlType,
    ) -> Result<(), nf_engine::quant::QuantError> {
        let convert = |m: &mut Mat| -> Result<(), nf_engine::quant::QuantError> {
            if let Mat::Frozen(w) = m
                && w.ggml_type() == nf_engine::ggml::GgmlType::F32
            {
                let mut bytes = Vec::new();
                nf_engine::quant::quantize(ty, &w.to_f32(), &mut bytes)?;
                *w = Weight::from_quant(w.rows, w.cols, ty, bytes)?;
            }
            Ok(())
        };
        convert(&mut self.embed)?;
        if let Some(o) = &mut self.output {
            convert(o)?;
        }
        for l in &mut self.layers {
            for lin in [
                &mut l.q,
                &mut l.k,
                &mut l.v,
                &mut l.o,
                &mut l.gate,
                &mut l.up,
                &mut l.down,
            ] {
                convert(&mut lin.base)?;
            }
        }
        Ok(())
    }
}
