//! The Llama-family configuration, read from HF `config.json`, GGUF metadata, or a llama2.c
//! header. One struct with flags covers Llama 1/2/3, TinyLlama, SmolLM, Mistral, Qwen2 (qkv
//! bias), Qwen3 (q/k RMSNorm) and Phi-3 (fused projections, split at load).

use std::path::Path;

use nf_engine::rope::{RopeScaling, RopeStyle};
use nf_formats::llama2c::Llama2cConfig;
use nf_formats::{GgufFile, MAX_LAYERS};
use serde_json::Value;

use crate::error::{ModelError, Result};

/// A model's architecture: sizes, normalization, positional encoding and the options that tell the Llama-family members apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Architecture name as the source spells it (`llama`, `qwen2`, `qwen3`, `phi3`, ...).
    pub arch: String,
    /// Model width (channels of the residual stream).
    pub dim: usize,
    /// Feed-forward width.
    pub hidden_dim: usize,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (fewer than query heads with grouped-query attention).
    pub n_kv_heads: usize,
    /// Per-head size; `dim / n_heads` except where a config says otherwise (Qwen3).
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub max_seq_len: usize,
    /// RMSNorm's epsilon.
    pub norm_eps: f32,
    /// RoPE's base frequency.
    pub rope_theta: f32,
    /// RoPE's context-extension rescaling.
    pub rope_scaling: RopeScaling,
    /// Which channels RoPE rotates together.
    pub rope_style: RopeStyle,
    /// Whether the classifier is the token embedding.
    pub tied_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    /// RMSNorm on each head of q and k before RoPE (Qwen3).
    pub qk_norm: bool,
}

impl Config {
    /// Width of the query projection (`n_heads · head_dim`).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    /// Width of the key and value projections (`n_kv_heads · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Parameter count, counting a tied classifier once.
    pub fn n_params(&self) -> usize {
        let per_layer = 2 * self.dim
            + self.dim * (self.q_dim() + 2 * self.kv_dim())
            + self.q_dim() * self.dim
            + 3 * self.dim * self.hidden_dim
            + if self.qkv_bias {
                self.q_dim() + 2 * self.kv_dim()
            } else {
                0
            }
            + if self.qk_norm { 2 * self.head_dim } else { 0 };
        let cls = if self.tied_embeddings {
            0
        } else {
            self.vocab_size * self.dim
        };
        self.vocab_size * self.dim + self.n_layers * per_layer + self.dim + cls
    }

    pub(crate) fn validate(self, path: &Path) -> Result<Config> {
        let bad = |reason: String| {
            Err(ModelError::Config {
                path: path.to_path_buf(),
                reason,
            })
        };
        let sizes = [
            self.dim,
            self.hidden_dim,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.vocab_size,
        ];
        // A header claiming 2^24 layers asked for 4 GB before any tensor was read (found by
        // nf-fuzz): the layer count has a cap of its own.
        if sizes.contains(&0) || sizes.iter().any(|&s| s > 1 << 24) || self.n_layers > MAX_LAYERS {
            return bad(format!(
                "implausible dimensions {sizes:?} (dim, hidden, layers, heads, kv heads, head dim, vocab)"
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} heads are not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head size {} is odd; RoPE needs pairs",
                self.head_dim
            ));
        }
        if !(self.norm_eps > 0.0 && self.rope_theta > 0.0) {
            return bad(format!(
                "norm eps {} and rope theta {} must be positive",
                self.norm_eps, self.rope_theta
            ));
        }
        Ok(self)
    }

    /// The configuration a llama2.c header describes (`path` names the file in errors).
    pub fn from_llama2c(c: &Llama2cConfig, path: &Path) -> Result<Config> {
        Config {
            arch: "llama".into(),
            dim: c.dim,
            hidden_dim: c.hidden_dim,
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.dim / c.n_heads,
            vocab_size: c.vocab_size,
            max_seq_len: c.seq_len,
            norm_eps: 1e-5,
            rope_theta: 10000.0,
            rope_scaling: RopeScaling::None,
            rope_style: RopeStyle::Interleaved,
            tied_embeddings: c.shared_classifier,
            qkv_bias: false,
            qk_norm: false,
        }
        .validate(path)
    }

    /// Reads GGUF metadata (`{arch}.embedding_length`, ...). `tied` says whether the file
    /// lacks a separate `output.weight`.
    pub fn from_gguf(g: &GgufFile) -> Result<Config> {
        let path = g.path();
        let arch = g
            .architecture()
            .ok_or_else(|| ModelError::Config {
                path: path.into(),
                reason: "no general.architecture".into(),
            })?
            .to_string();
        let (qkv_bias, qk_norm, rope_style) = match arch.as_str() {
            "llama" | "mistral" => (false, false, RopeStyle::Interleaved),
            "qwen2" => (true, false, RopeStyle::RotateHalf),
            "qwen3" => (false, true, RopeStyle::RotateHalf),
            "phi3" => (false, false, RopeStyle::RotateHalf),
            _ => {
                return Err(ModelError::UnsupportedArch {
                    path: path.into(),
                    arch,
                });
            }
        };
        let need = |key: &str| -> Result<usize> {
            g.get_u64(&format!("{arch}.{key}"))
                .map(|v| v as usize)
                .ok_or_else(|| ModelError::Config {
                    path: path.into(),
                    reason: format!("missing metadata {arch}.{key}"),
                })
        };
        let dim = need("embedding_length")?;
        let n_heads = need("attention.head_count")?;
        let vocab_size = g
            .get_u64(&format!("{arch}.vocab_size"))
            .map(|v| v as usize)
            .or_else(|| {
                g.get("tokenizer.ggml.tokens")
                    .and_then(|t| t.as_array())
                    .map(<[_]>::len)
            })
            .or_else(|| g.tensor_info("token_embd.weight").map(|t| t.shape()[0]))
            .ok_or_else(|| ModelError::Config {
                path: path.into(),
                reason: "cannot tell the vocabulary size".into(),
            })?;
        let scaling = match g.get_str(&format!("{arch}.rope.scaling.type")) {
            Some("linear") => RopeScaling::Linear {
                factor: g
                    .get_f64(&format!("{arch}.rope.scaling.factor"))
                    .unwrap_or(1.0) as f32,
            },
            // llama3-style scaling arrives as a `rope_freqs.weight` tensor, applied at load.
            _ => RopeScaling::None,
        };
        Config {
            dim,
            hidden_dim: need("feed_forward_length")?,
            n_layers: need("block_count")?,
            n_heads,
            n_kv_heads: g
                .get_u64(&format!("{arch}.attention.head_count_kv"))
                .map_or(n_heads, |v| v as usize),
            head_dim: g
                .get_u64(&format!("{arch}.attention.key_length"))
                .map_or(dim / n_heads.max(1), |v| v as usize),
            vocab_size,
            max_seq_len: need("context_length")?,
            norm_eps: g
                .get_f64(&format!("{arch}.attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f32,
            rope_theta: g
                .get_f64(&format!("{arch}.rope.freq_base"))
                .unwrap_or(10000.0) as f32,
            rope_scaling: scaling,
            rope_style,
            tied_embeddings: g.tensor_info("output.weight").is_none(),
            qkv_bias,
            qk_norm,
            arch,
        }
        .validate(path)
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| nf_formats::FormatError::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let model_type = v["model_type"].as_str().unwrap_or("").to_string();
        let (qkv_bias, qk_norm) = match model_type.as_str() {
            "llama" | "mistral" => (v["attention_bias"].as_bool().unwrap_or(false), false),
            "qwen2" => (true, false),
            "qwen3" => (v["attention_bias"].as_bool().unwrap_or(false), true),
            "phi3" => (false, false),
            _ => {
                return Err(ModelError::UnsupportedArch {
                    path: path.into(),
                    arch: model_type,
                });
            }
        };
        let need = |key: &str| -> Result<usize> {
            v[key]
                .as_u64()
                .map(|x| x as usize)
                .ok_or_else(|| ModelError::Config {
                    path: path.into(),
                    reason: format!("missing `{key}`"),
                })
        };
        if v["partial_rotary_factor"]
            .as_f64()
            .is_some_and(|f| f != 1.0)
        {
            return Err(ModelError::Config {
                path: path.into(),
                reason: "partial rotary embeddings are not supported".into(),
            });
        }
        let dim = need("hidden_size")?;
        let n_heads = need("num_attention_heads")?;
        let rope_scaling = match &v["rope_scaling"] {
            Value::Object(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let f = |k: &str, d: f64| s.get(k).and_then(Value::as_f64).unwrap_or(d) as f32;
                match kind {
                    "linear" => RopeScaling::Linear {
                        factor: f("factor", 1.0),
                    },
                    "llama3" => RopeScaling::Llama3 {
                        factor: f("factor", 8.0),
                        low_freq_factor: f("low_freq_factor", 1.0),
                        high_freq_factor: f("high_freq_factor", 4.0),
                        original_max_position: f("original_max_position_embeddings", 8192.0),
                    },
                    "default" | "" => RopeScaling::None,
                    other => {
                        return Err(ModelError::Config {
                            path: path.into(),
                            reason: format!("rope scaling `{other}` is not supported"),
                        });
                    }
                }
            }
            _ => RopeScaling::None,
        };
        Config {
            dim,
            hidden_dim: need("intermediate_size")?,
            n_layers: need("num_hidden_layers")?,
            n_heads,
            n_kv_heads: v["num_key_value_heads"]
                .as_u64()
                .map_or(n_heads, |x| x as usize),
            head_dim: v["head_dim"]
                .as_u64()
                .map_or(dim / n_heads.max(1), |x| x as usize),
            vocab_size: need("vocab_size")?,
            max_seq_len: v["max_position_embeddings"].as_u64().unwrap_or(2048) as usize,
            norm_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            rope_theta: v["rope_theta"].as_f64().unwrap_or(10000.0) as f32,
            rope_scaling,
            rope_style: RopeStyle::RotateHalf,
            tied_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
            qkv_bias,
            qk_norm,
            arch: model_type,
        }
        .validate(path)
    }

    /// The `config.json` a Hugging Face `transformers` loader expects for this model.
    pub fn to_hf_json(&self) -> Value {
        let mut v = serde_json::json!({
            "architectures": [match self.arch.as_str() {
                "qwen2" => "Qwen2ForCausalLM",
                "qwen3" => "Qwen3ForCausalLM",
                "phi3" => "Phi3ForCausalLM",
                "mistral" => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            }],
            "model_type": if self.arch == "mistral" || self.arch == "qwen2" || self.arch == "qwen3" || self.arch == "phi3" { self.arch.as_str() } else { "llama" },
            "hidden_size": self.dim,
            "intermediate_size": self.hidden_dim,
            "num_hidden_layers": self.n_layers,
            "num_attention_heads": self.n_heads,
            "num_key_value_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_seq_len,
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_theta,
            "tie_word_embeddings": self.tied_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        match self.rope_scaling {
            RopeScaling::None => {}
            RopeScaling::Linear { factor } => {
                v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position,
            } => {
                v["rope_scaling"] = serde_json::json!({
                    "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                    "high_freq_factor": high_freq_factor, "original_max_position_embeddings": original_max_position,
                })
            }
        }
        if self.arch == "llama" && self.qkv_bias {
            v["attention_bias"] = true.into();
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_claiming_millions_of_layers_is_refused_before_allocating() {
        let path = Path::new("m.gguf");
        let c = Config::from_llama2c(
            &Llama2cConfig {
                dim: 64,
                hidden_dim: 172,
                n_layers: 5,
                n_heads: 8,
                n_kv_heads: 4,
                vocab_size: 512,
                seq_len: 512,
                shared_classifier: true,
            },
            path,
        )
        .unwrap();
        let many = Config {
            n_layers: 1 << 24,
            ..c.clone()
        };
        let e = many.validate(path).unwrap_err().to_string();
        assert!(e.contains("implausible"), "{e}");
        let most = Config {
            n_layers: MAX_LAYERS,
            ..c
        };
        assert!(most.validate(path).is_ok());
    }
}
