//! LoRA adapters on disk in PEFT's layout (`adapter_config.json` +
//! `adapter_model.safetensors`), so `peft` loads what we train and we load what `peft`
//! trains.
//!
//! PEFT names tensors `base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight`
//! (`[rank, in]`) and `...lora_B.weight` (`[out, rank]`), and its q/k rows are in Hugging
//! Face's rotate-half order. Models computing with interleaved RoPE (llama2.c, GGUF `llama`)
//! have their `B` rows of q and k permuted on the way out and back on the way in.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nf_engine::linear::Weight;
use nf_engine::matmul::matmul;
use nf_engine::rope::RopeStyle;
use nf_formats::atomic::write_atomic;
use nf_formats::safetensors::{SafeTensors, f32_bytes};

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::export::{
    interleaved_rows_to_rotate_half, rotate_half_rows_to_interleaved, write_f32_tensors,
};
use crate::model::Model;
use crate::train::{LoraConfig, Target, TrainModel};

/// PEFT's key of one adapter matrix.
pub fn peft_key(layer: usize, target: Target, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.lora_{which}.weight",
        target.hf_module()
    )
}

/// An adapter read from disk, in the model's own row order.
#[derive(Debug, Clone)]
pub struct Adapter {
    /// Rank, alpha, dropout and targets.
    pub config: LoraConfig,
    /// `(layer, target)` → (`A [rank, in]`, `B [out, rank]`).
    pub tensors: HashMap<(usize, Target), (Vec<f32>, Vec<f32>)>,
    /// Where it was read from.
    pub dir: PathBuf,
}

/// Rows of `target`'s B matrix moved between the model's RoPE layout and PEFT's.
pub(crate) fn permute_b(
    c: &Config,
    target: Target,
    b: &[f32],
    rank: usize,
    to_peft: bool,
) -> Vec<f32> {
    let heads = match target {
        Target::Q => c.n_heads,
        Target::K => c.n_kv_heads,
        _ => return b.to_vec(),
    };
    if c.rope_style != RopeStyle::Interleaved {
        return b.to_vec();
    }
    if to_peft {
        interleaved_rows_to_rotate_half(b, heads, c.head_dim, rank)
    } else {
        rotate_half_rows_to_interleaved(b, heads, c.head_dim, rank)
    }
}

/// Writes `m`'s adapter into `dir` (which must exist) in PEFT's layout.
pub fn save_peft(
    m: &TrainModel,
    dir: &Path,
    base_model: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let lora = m.lora().ok_or_else(|| ModelError::Config {
        path: dir.into(),
        reason: "a fully fine-tuned model has no adapter to save".into(),
    })?;
    let p = &m.params;
    let mut tensors = Vec::new();
    for (l, layer) in m.layers.iter().enumerate() {
        for (target, lin) in Target::ALL.iter().zip(layer.lins()) {
            let Some(ad) = lin.adapter else { continue };
            tensors.push((l, *target, p.value(ad.a), p.value(ad.b)));
        }
    }
    write_peft(&m.config, lora, &tensors, dir, base_model, metadata)
}

/// Writes an adapter read from disk (PEFT or GGUF LoRA) back in PEFT's layout.
pub fn save_adapter_peft(
    adapter: &Adapter,
    c: &Config,
    dir: &Path,
    base_model: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut tensors: Vec<(usize, Target, &[f32], &[f32])> = adapter
        .tensors
        .iter()
        .map(|((l, t), (a, b))| (*l, *t, a.as_slice(), b.as_slice()))
        .collect();
    tensors.sort_by_key(|t| (t.0, t.1));
    write_peft(c, &adapter.config, &tensors, dir, base_model, metadata)
}

/// `adapter_model.safetensors` and `adapter_config.json` from `(layer, target, A, B)` in the
/// model's row order.
fn write_peft(
    c: &Config,
    lora: &LoraConfig,
    tensors: &[(usize, Target, &[f32], &[f32])],
    dir: &Path,
    base_model: &str,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for &(l, target, a, b) in tensors {
        let (rows, cols) = target_shape(c, target);
        let b = permute_b(c, target, b, lora.rank, true);
        owned.push((
            peft_key(l, target, 'A'),
            vec![lora.rank, cols],
            f32_bytes(a),
        ));
        owned.push((
            peft_key(l, target, 'B'),
            vec![rows, lora.rank],
            f32_bytes(&b),
        ));
    }
    write_f32_tensors(&dir.join("adapter_model.safetensors"), &owned, metadata)?;
    let modules: Vec<String> = lora
        .targets
        .iter()
        .map(|t| {
            t.hf_module()
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
    });
    let text = serde_json::to_string_pretty(&config).expect("json serializes");
    let path = dir.join("adapter_config.json");
    write_atomic(&path, |w| std::io::Write::write_all(w, text.as_bytes()))?;
    Ok(())
}

/// Reads a PEFT adapter folder for a model of configuration `c`, checking every shape.
pub fn load_peft(dir: &Path, c: &Config) -> Result<Adapter> {
    let bad = |reason: String| ModelError::Config {
        path: dir.into(),
        reason,
    };
    let cfg_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| nf_formats::FormatError::io(&cfg_path, e))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("adapter_config.json: {e}")))?;
    if v["peft_type"].as_str().is_some_and(|t| t != "LORA") {
        return Err(bad(format!("peft_type {} is not LORA", v["peft_type"])));
    }
    let rank = v["r"]
        .as_u64()
        .ok_or_else(|| bad("adapter_config.json has no `r`".into()))? as usize;
    let alpha = v["lora_alpha"].as_f64().unwrap_or(rank as f64) as f32;
    if v["use_rslora"].as_bool() == Some(true) || v["use_dora"].as_bool() == Some(true) {
        return Err(bad("rsLoRA and DoRA adapters are not supported".into()));
    }
    let st = SafeTensors::open(dir.join("adapter_model.safetensors"))?;
    let mut tensors = HashMap::new();
    let mut targets = Vec::new();
    for l in 0..c.n_layers {
        for t in Target::ALL {
            let (ka, kb) = (peft_key(l, t, 'A'), peft_key(l, t, 'B'));
            if st.get(&ka).is_none() && st.get(&kb).is_none() {
                continue;
            }
            let (rows, cols) = target_shape(c, t);
            let (sa, a) = st.to_f32(&ka)?;
            let (sb, b) = st.to_f32(&kb)?;
            if sa != [rank, cols] || sb != [rows, rank] {
                return Err(bad(format!(
                    "layer {l} {t}: A {sa:?} and B {sb:?} do not fit a rank-{rank} adapter of a [{rows}, {cols}] projection"
                )));
            }
            let b = permute_b(c, t, &b, rank, false);
            tensors.insert((l, t), (a, b));
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    if tensors.is_empty() {
        return Err(bad(
            "adapter_model.safetensors holds no LoRA tensors for this model's layers".into(),
        ));
    }
    targets.sort();
    Ok(Adapter {
        config: LoraConfig {
            rank,
            alpha,
            dropout: v["lora_dropout"].as_f64().unwrap_or(0.0) as f32,
            targets,
        },
        tensors,
        dir: dir.into(),
    })
}

/// `[out, in]` of a projection.
pub fn target_shape(c: &Config, t: Target) -> (usize, usize) {
    match t {
        Target::Q => (c.q_dim(), c.dim),
        Target::K | Target::V => (c.kv_dim(), c.dim),
        Target::O => (c.dim, c.q_dim()),
        Target::Gate | Target::Up => (c.hidden_dim, c.dim),
        Target::Down => (c.dim, c.hidden_dim),
    }
}

/// Folds the adapter into the model: `W += (alpha / rank) · B · A` (the adapted matrices
/// become f32).
pub fn merge_adapter(model: &mut Model, adapter: &Adapter) {
    let scale = adapter.config.scale();
    let r = adapter.config.rank;
    for ((l, t), (a, b)) in &adapter.tensors {
        let lw = &mut model.weights.layers[*l];
        let w = match t {
            Target::Q => &mut lw.wq,
            Target::K => &mut lw.wk,
            Target::V => &mut lw.wv,
            Target::O => &mut lw.wo,
            Target::Gate => &mut lw.w_gate,
            Target::Up => &mut lw.w_up,
            Target::Down => &mut lw.w_down,
        };
        let (rows, cols) = (w.rows, w.cols);
        // delta = B · A = B · (Aᵀ)ᵀ, with matmul's [out, in] convention on Aᵀ.
        let a_t = crate::train::transpose(a, r, cols);
        let mut delta = vec![0.0; rows * cols];
        matmul(&mut delta, b, &a_t, rows, r, cols);
        let mut merged = w.to_f32();
        merged
            .iter_mut()
            .zip(&delta)
            .for_each(|(w, d)| *w += scale * d);
        *w = Weight::from_f32(rows, cols, merged);
    }
}

impl TrainModel {
    /// Replaces the adapter weights with `adapter`'s (same rank and targets), e.g. to
    /// continue training a PEFT adapter or to check gradients against PEFT.
    pub fn load_adapter(&mut self, adapter: &Adapter) -> Result<()> {
        let mine = self.lora().cloned();
        let bad = |reason: String| ModelError::Config {
            path: adapter.dir.clone(),
            reason,
        };
        let Some(mine) = mine else {
            return Err(bad("the model is not set up for LoRA".into()));
        };
        if mine.rank != adapter.config.rank || mine.targets != adapter.config.targets {
            return Err(bad(format!(
                "adapter has rank {} on {:?}, the run expects rank {} on {:?}",
                adapter.config.rank, adapter.config.targets, mine.rank, mine.targets
            )));
        }
        for l in 0..self.layers.len() {
            for (t, lin) in Target::ALL.iter().zip(self.layers[l].lins()) {
                let Some(ad) = lin.adapter else { continue };
                let (a, b) = adapter
                    .tensors
                    .get(&(l, *t))
                    .ok_or_else(|| bad(format!("no tensors for layer {l} {t}")))?;
                self.params.value_mut(ad.a).copy_from_slice(a);
                self.params.value_mut(ad.b).copy_from_slice(b);
            }
        }
        Ok(())
    }
}
