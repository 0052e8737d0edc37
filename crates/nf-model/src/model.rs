//! The model (config + weights + RoPE table), how to open one from a path, and the forward
//! pass with a KV cache.

use std::path::{Path, PathBuf};

use nf_engine::activation::swiglu;
use nf_engine::attention::{AttnShape, attention};
use nf_engine::linear::linear;
use nf_engine::matmul::add_bias;
use nf_engine::norm::rmsnorm;
use nf_engine::rope::Rope;
use nf_formats::GgufFile;
use nf_formats::llama2c::Llama2cFile;
use nf_formats::safetensors::SafeTensorsDir;

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::weights::{Source, Weights};

/// Which on-disk format a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A Hugging Face folder: `config.json` + safetensors.
    HfDir,
    /// One `.gguf` file.
    Gguf,
    /// A llama2.c checkpoint (`.bin`).
    Llama2c,
}

impl ModelFormat {
    /// Decides by looking at the path: a folder is HF, `.gguf` (or the GGUF magic) is GGUF,
    /// anything else that is a file is tried as llama2.c.
    pub fn detect(path: &Path) -> Result<ModelFormat> {
        let meta = std::fs::metadata(path).map_err(|e| nf_formats::FormatError::io(path, e))?;
        if meta.is_dir() {
            if path.join("config.json").is_file() {
                return Ok(ModelFormat::HfDir);
            }
            return Err(ModelError::UnknownModelPath {
                path: path.into(),
                reason: "folder has no config.json (expected a Hugging Face model folder)".into(),
            });
        }
        if nf_formats::gguf::has_gguf_magic(path)? {
            return Ok(ModelFormat::Gguf);
        }
        if path.extension().is_some_and(|e| e == "gguf") {
            return Ok(ModelFormat::Gguf); // the reader will report the bad magic
        }
        if path.extension().is_some_and(|e| e == "safetensors") {
            return Err(ModelError::UnknownModelPath {
                path: path.into(),
                reason:
                    "a lone .safetensors file has no config; pass its folder (with config.json)"
                        .into(),
            });
        }
        Ok(ModelFormat::Llama2c)
    }

    /// `hf`, `gguf` or `llama2c`, as events spell it.
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::HfDir => "hf",
            ModelFormat::Gguf => "gguf",
            ModelFormat::Llama2c => "llama2c",
        }
    }
}

/// A Llama-family model ready for inference.
#[derive(Debug, Clone)]
pub struct Model {
    /// The architecture.
    pub config: Config,
    /// The weights, as loaded.
    pub weights: Weights,
    /// RoPE's precomputed frequencies.
    pub rope: Rope,
    /// Where the model was read from.
    pub path: PathBuf,
    /// Its file format.
    pub format: ModelFormat,
}

impl Model {
    /// Opens a model directory (HF layout), a `.gguf` file, or a llama2.c `.bin`.
    pub fn open(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        match ModelFormat::detect(path)? {
            ModelFormat::Gguf => Model::from_gguf(&GgufFile::open(path)?),
            ModelFormat::HfDir => {
                let config = Config::from_hf_json(&path.join("config.json"))?;
                let st = SafeTensorsDir::open(path)?;
                let weights =
                    Weights::load(&config, &mut Source::SafeTensors(&st, path.to_path_buf()))?;
                Ok(Model::assemble(config, weights, path, ModelFormat::HfDir))
            }
            ModelFormat::Llama2c => {
                let f = Llama2cFile::open(path)?;
                let config = Config::from_llama2c(&f.config, path)?;
                let weights = Weights::load(&config, &mut Source::Llama2c(f))?;
                Ok(Model::assemble(config, weights, path, ModelFormat::Llama2c))
            }
        }
    }

    /// Loads a model from an open GGUF file (its matrices stay in their types).
    pub fn from_gguf(g: &GgufFile) -> Result<Model> {
        let config = Config::from_gguf(g)?;
        let weights = Weights::load(&config, &mut Source::Gguf(g))?;
        Ok(Model::assemble(
            config,
            weights,
            g.path(),
            ModelFormat::Gguf,
        ))
    }

    /// A model from its parts (for loaders, tests and random models).
    pub fn assemble(config: Config, weights: Weights, path: &Path, format: ModelFormat) -> Model {
        let mut rope = Rope::new(
            config.rope_style,
            config.head_dim,
            config.rope_theta,
            config.rope_scaling,
        );
        if let Some(f) = &weights.rope_freqs {
            for (inv, div) in rope.inv_freq.iter_mut().zip(f) {
                *inv /= div;
            }
        }
        Model {
            config,
            weights,
            rope,
            path: path.to_path_buf(),
            format,
        }
    }

    /// A cache for up to `capacity` positions (clamped to the model's context length).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        let capacity = capacity.min(self.config.max_seq_len).max(1);
        let n = capacity * self.config.kv_dim();
        KvCache {
            k: (0..self.config.n_layers).map(|_| vec![0.0; n]).collect(),
            v: (0..self.config.n_layers).map(|_| vec![0.0; n]).collect(),
            len: 0,
            capacity,
        }
    }

    /// Runs `tokens` through the model at positions `cache.len..`, appends their keys and
    /// values to the cache, and returns logits: `[n, vocab]` when `all_logits`, else the
    /// last token's `[vocab]`.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>> {
        // One job on the kernel pool, so its parallel loops start from a pool thread.
        nf_engine::cpu::on_pool(|| self.forward_on_pool(cache, tokens, all_logits))
    }

    fn forward_on_pool(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        all_logits: bool,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let w = &self.weights;
        let n = tokens.len();
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= c.vocab_size) {
            return Err(ModelError::BadToken {
                id,
                vocab: c.vocab_size,
            });
        }
        let pos0 = cache.len;
        if pos0 + n > cache.capacity {
            return Err(ModelError::ContextFull {
                needed: pos0 + n,
                capacity: cache.capacity,
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let (d, h, qd, kvd, hd) = (c.dim, c.hidden_dim, c.q_dim(), c.kv_dim(), c.head_dim);
        let shape = AttnShape {
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: hd,
        };
        let mut x = vec![0.0; n * d]; // [n, dim] residual stream
        let mut xb = vec![0.0; n * d]; // [n, dim] normed input / projection output
        let mut q = vec![0.0; n * qd]; // [n, q_dim]
        let mut k = vec![0.0; n * kvd]; // [n, kv_dim]
        let mut v = vec![0.0; n * kvd]; // [n, kv_dim]
        let mut att = vec![0.0; n * qd]; // [n, q_dim]
        let mut gate = vec![0.0; n * h]; // [n, hidden]
        let mut up = vec![0.0; n * h]; // [n, hidden]
        for (row, &t) in x.chunks_exact_mut(d).zip(tokens) {
            w.token_embd.rows_to_f32(t as usize, row);
        }
        for (l, lw) in w.layers.iter().enumerate() {
            rmsnorm(&mut xb, &x, &lw.attn_norm, c.norm_eps);
            linear(&mut q, &xb, &lw.wq);
            linear(&mut k, &xb, &lw.wk);
            linear(&mut v, &xb, &lw.wv);
            for (out, b) in [(&mut q, &lw.bq), (&mut k, &lw.bk), (&mut v, &lw.bv)] {
                if let Some(b) = b {
                    add_bias(out, b);
                }
            }
            if let (Some(qn), Some(kn)) = (&lw.q_norm, &lw.k_norm) {
                let q_in = q.clone();
                rmsnorm(&mut q, &q_in, qn, c.norm_eps);
                let k_in = k.clone();
                rmsnorm(&mut k, &k_in, kn, c.norm_eps);
            }
            self.rope.apply(&mut q, pos0, c.n_heads, hd);
            self.rope.apply(&mut k, pos0, c.n_kv_heads, hd);
            cache.k[l][pos0 * kvd..(pos0 + n) * kvd].copy_from_slice(&k);
            cache.v[l][pos0 * kvd..(pos0 + n) * kvd].copy_from_slice(&v);
            let used = (pos0 + n) * kvd;
            attention(
                &mut att,
                &q,
                &cache.k[l][..used],
                &cache.v[l][..used],
                pos0,
                shape,
            );
            linear(&mut xb, &att, &lw.wo);
            x.iter_mut().zip(&xb).for_each(|(a, b)| *a += b);

            rmsnorm(&mut xb, &x, &lw.ffn_norm, c.norm_eps);
            linear(&mut gate, &xb, &lw.w_gate);
            linear(&mut up, &xb, &lw.w_up);
            let g = gate.clone();
            swiglu(&mut gate, &g, &up);
            linear(&mut xb, &gate, &lw.w_down);
            x.iter_mut().zip(&xb).for_each(|(a, b)| *a += b);
        }
        cache.len += n;
        let rows = if all_logits { n } else { 1 };
        let last = &x[(n - rows) * d..];
        let mut normed = vec![0.0; rows * d];
        rmsnorm(&mut normed, last, &w.output_norm, c.norm_eps);
        let cls = w.output.as_ref().unwrap_or(&w.token_embd);
        let mut logits = vec![0.0; rows * c.vocab_size];
        linear(&mut logits, &normed, cls);
        Ok(logits)
    }
}

/// Keys and values of every layer for the positions seen so far.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Keys, `[n_layers][capacity, kv_dim]`.
    pub k: Vec<Vec<f32>>, // [n_layers][capacity, kv_dim]
    /// Values, `[n_layers][capacity, kv_dim]`.
    pub v: Vec<Vec<f32>>, // [n_layers][capacity, kv_dim]
    /// Positions filled.
    pub len: usize,
    /// Positions the cache holds.
    pub capacity: usize,
}

impl KvCache {
    /// Forgets everything after `len` positions (to rewind a conversation).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}
