//! LoRA configuration: which projections get adapters, their rank and scale, and dropout.
//!
//! As in PEFT, each adapted projection `W [out, in]` gains `A [rank, in]` (random) and
//! `B [out, rank]` (zero), and computes `y = W·x + (alpha / rank) · B·A·dropout(x)`. With
//! `B = 0` the adapted model starts out equal to the base.

use std::fmt;
use std::str::FromStr;

/// A projection LoRA can adapt, named as PEFT's `target_modules` short names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// SwiGLU gate projection.
    Gate,
    /// SwiGLU up projection.
    Up,
    /// SwiGLU down projection.
    Down,
}

impl Target {
    /// Every projection, in layer order.
    pub const ALL: [Target; 7] = [
        Target::Q,
        Target::K,
        Target::V,
        Target::O,
        Target::Gate,
        Target::Up,
        Target::Down,
    ];

    /// The short name users type (`q`, `gate`, ...).
    pub fn short(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    /// The GGUF tensor stem (`attn_q`, `ffn_gate`, ...).
    pub fn gguf_stem(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// PEFT's module path inside a layer (`self_attn.q_proj`).
    pub fn hf_module(self) -> &'static str {
        match self {
            Target::Q => "self_attn.q_proj",
            Target::K => "self_attn.k_proj",
            Target::V => "self_attn.v_proj",
            Target::O => "self_attn.o_proj",
            Target::Gate => "mlp.gate_proj",
            Target::Up => "mlp.up_proj",
            Target::Down => "mlp.down_proj",
        }
    }

    /// The target's position in [`Target::ALL`].
    pub fn index(self) -> usize {
        Target::ALL.iter().position(|&t| t == self).unwrap()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

impl FromStr for Target {
    type Err = String;

    /// Accepts the short names and PEFT's module names (`q_proj`, `gate_proj`, ...).
    fn from_str(s: &str) -> Result<Target, String> {
        let s = s.trim();
        let s = s.strip_suffix("_proj").unwrap_or(s);
        Target::ALL
            .iter()
            .copied()
            .find(|t| t.short() == s)
            .ok_or_else(|| format!("unknown LoRA target `{s}` (expected q,k,v,o,gate,up,down)"))
    }
}

/// Parses a comma-separated target list; `all` means every projection.
pub fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    if list.trim() == "all" {
        return Ok(Target::ALL.to_vec());
    }
    let mut v: Vec<Target> = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    v.sort();
    v.dedup();
    if v.is_empty() {
        return Err("no LoRA targets given".into());
    }
    Ok(v)
}

/// A LoRA adapter's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The rank of the low-rank update.
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f32,
    /// Probability of zeroing an input element of the adapter path during training.
    pub dropout: f32,
    /// The projections adapted.
    pub targets: Vec<Target>,
}

impl LoraConfig {
    /// `alpha / rank`, PEFT's scaling without rsLoRA.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_short_and_peft_names() {
        assert_eq!(
            parse_targets("q,v_proj, gate").unwrap(),
            vec![Target::Q, Target::V, Target::Gate]
        );
        assert_eq!(parse_targets("all").unwrap().len(), 7);
        assert!(parse_targets("q,attention").is_err());
        assert!(parse_targets("").is_err());
    }
}
