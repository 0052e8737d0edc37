//! LoRA adapters in llama.cpp's GGUF format (what `convert_lora_to_gguf.py` writes and
//! `llama-cli --lora` reads).
//!
//! Metadata: `general.type = adapter`, `adapter.type = lora`, `adapter.lora.alpha`, and the
//! base's `general.architecture`. Tensors: `blk.N.attn_q.weight.lora_a` holding PEFT's
//! `A [rank, in]` (GGUF dims `[in, rank]`) and `...lora_b` holding `B [out, rank]` (dims
//! `[rank, out]`), so that llama.cpp's check `a.ne[0] == W.ne[0]`, `b.ne[1] == W.ne[1]`
//! holds. For `llama` GGUFs, whose q/k rows are interleaved, the q/k rows of `B` are in
//! that layout too (the converter permutes them like the base's).

use std::collections::HashMap;
use std::path::Path;

use nf_engine::rope::RopeStyle;
use nf_formats::quant::dequantize_to_vec;
use nf_formats::{GgmlType, GgufFile, GgufWriter, MetaValue};

use crate::config::Config;
use crate::error::{ModelError, Result};
use crate::export::gguf::gguf_arch;
use crate::export::{interleaved_rows_to_rotate_half, rotate_half_rows_to_interleaved};
use crate::train::adapter::{Adapter, target_shape};
use crate::train::{LoraConfig, Target};

fn tensor_name(l: usize, t: Target, which: &str) -> String {
    format!("blk.{l}.{}.weight.lora_{which}", t.gguf_stem())
}

/// Whether `B`'s q/k rows must change layout between the model and its GGUF.
fn permutes(c: &Config) -> bool {
    gguf_arch(&c.arch) == "llama" && c.rope_style == RopeStyle::RotateHalf
}

fn heads(c: &Config, t: Target) -> Option<usize> {
    match t {
        Target::Q => Some(c.n_heads),
        Target::K => Some(c.n_kv_heads),
        _ => None,
    }
}

/// Writes `adapter` (for a model of configuration `c`) as a GGUF LoRA at `path`,
/// atomically, with `extra` metadata (provenance).
pub fn save_gguf_lora(
    adapter: &Adapter,
    c: &Config,
    path: &Path,
    extra: Vec<(String, MetaValue)>,
) -> Result<()> {
    if c.arch == "phi3" {
        return Err(ModelError::Export(
            "llama.cpp's phi3 fuses q/k/v and gate/up, which per-projection LoRA tensors cannot address".into(),
        ));
    }
    let bad = |e: nf_formats::GgufWriteError| ModelError::Export(e.to_string());
    let mut w = GgufWriter::new();
    w.set(
        "general.architecture",
        MetaValue::String(gguf_arch(&c.arch).into()),
    )
    .map_err(bad)?;
    w.set("general.type", MetaValue::String("adapter".into()))
        .map_err(bad)?;
    w.set("adapter.type", MetaValue::String("lora".into()))
        .map_err(bad)?;
    w.set("adapter.lora.alpha", MetaValue::F32(adapter.config.alpha))
        .map_err(bad)?;
    for (k, v) in extra {
        w.set(k, v).map_err(bad)?;
    }
    let r = adapter.config.rank;
    let mut keys: Vec<&(usize, Target)> = adapter.tensors.keys().collect();
    keys.sort();
    for key in keys {
        let (l, t) = *key;
        let (a, b) = &adapter.tensors[key];
        let (rows, cols) = target_shape(c, t);
        let b = match heads(c, t).filter(|_| permutes(c)) {
            Some(h) => rotate_half_rows_to_interleaved(b, h, c.head_dim, r),
            None => b.clone(),
        };
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        w.add_tensor(
            tensor_name(l, t, "a"),
            &[cols as u64, r as u64],
            GgmlType::F32,
            bytes(a),
        )
        .map_err(bad)?;
        w.add_tensor(
            tensor_name(l, t, "b"),
            &[r as u64, rows as u64],
            GgmlType::F32,
            bytes(&b),
        )
        .map_err(bad)?;
    }
    w.write(path)?;
    Ok(())
}

/// Whether the GGUF at `g` is a LoRA adapter rather than a model.
pub fn is_gguf_lora(g: &GgufFile) -> bool {
    g.get_str("general.type") == Some("adapter")
}

/// Reads a GGUF LoRA for a model of configuration `c`, checking every shape.
pub fn load_gguf_lora(path: &Path, c: &Config) -> Result<Adapter> {
    let g = GgufFile::open(path)?;
    let bad = |reason: String| ModelError::Config {
        path: path.into(),
        reason,
    };
    if !is_gguf_lora(&g) || g.get_str("adapter.type") != Some("lora") {
        return Err(bad(
            "not a GGUF LoRA adapter (general.type = adapter, adapter.type = lora)".into(),
        ));
    }
    if let Some(arch) = g.architecture()
        && arch != gguf_arch(&c.arch)
    {
        return Err(bad(format!(
            "the adapter is for `{arch}`, the model is `{}`",
            c.arch
        )));
    }
    let mut tensors = HashMap::new();
    let mut targets = Vec::new();
    let mut rank = None;
    for l in 0..c.n_layers {
        for t in Target::ALL {
            let (na, nb) = (tensor_name(l, t, "a"), tensor_name(l, t, "b"));
            let (Some(ia), Some(ib)) = (g.tensor_info(&na), g.tensor_info(&nb)) else {
                continue;
            };
            let (rows, cols) = target_shape(c, t);
            // GGUF dims are fastest-first: A is [in, rank], B is [rank, out].
            let r = ia.dims.get(1).copied().unwrap_or(0) as usize;
            if ia.dims != [cols as u64, r as u64] || ib.dims != [r as u64, rows as u64] {
                return Err(bad(format!(
                    "layer {l} {t}: lora_a dims {:?} and lora_b dims {:?} do not fit a [{rows}, {cols}] projection",
                    ia.dims, ib.dims
                )));
            }
            if *rank.get_or_insert(r) != r || r == 0 {
                return Err(bad(format!(
                    "layer {l} {t}: rank {r} differs from the others"
                )));
            }
            let read = |info: &nf_formats::TensorInfo| {
                dequantize_to_vec(
                    info.ggml_type,
                    g.tensor_data(info),
                    info.n_elements() as usize,
                )
                .map_err(|e| bad(format!("tensor `{}`: {e}", info.name)))
            };
            let a = read(ia)?;
            let b = read(ib)?;
            let b = match heads(c, t).filter(|_| permutes(c)) {
                Some(h) => interleaved_rows_to_rotate_half(&b, h, c.head_dim, r),
                None => b,
            };
            tensors.insert((l, t), (a, b));
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    let Some(rank) = rank else {
        return Err(bad(
            "the adapter holds no LoRA tensors for this model's layers".into(),
        ));
    };
    targets.sort();
    let alpha = g.get_f64("adapter.lora.alpha").unwrap_or(rank as f64) as f32;
    Ok(Adapter {
        config: LoraConfig {
            rank,
            alpha,
            dropout: 0.0,
            targets,
        },
        tensors,
        dir: path.into(),
    })
}
