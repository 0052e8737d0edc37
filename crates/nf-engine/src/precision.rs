//! The arithmetic precision of training's matrix products.

use crate::cpu::Isa;

/// How the GEMMs of a training step multiply. Master weights, gradients, optimizer moments,
/// the loss and norm and softmax statistics are f32 in both; `Bf16` rounds the two operands
/// of every GEMM to bf16 (round to nearest even) and sums the products in f32, which is what
/// `vdpbf16ps` and AMX's `tdpbf16ps` compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f32 operands and sums.
    #[default]
    F32,
    /// bf16 operands (rounded to nearest even), f32 sums.
    Bf16,
}

impl Precision {
    /// `auto`: bf16 where the CPU multiplies bf16 natively, f32 elsewhere (emulated bf16 is
    /// slower than f32).
    pub fn auto(isa: Isa) -> Precision {
        if isa.has_native_bf16() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// `f32` or `bf16`, as the CLI and the events spell it.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// Parses `f32` or `bf16`.
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "f32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
