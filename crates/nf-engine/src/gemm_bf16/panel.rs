//! A right-hand operand packed once and read by many products through windows.
//!
//! Training attention multiplies every query block of a head by the same keys and values:
//! `Q_blk · Kᵀ`, `P · V`, and in the backward `dO_blk · Vᵀ` and `dS · K`. Packing K or V
//! for each of those products cost more than the products themselves at a head size of
//! 64. A [`Panel`] packs a matrix once per call; each product then reads the window of
//! depth rows and columns its block needs ([`Panel::view`]).

use super::{NR, Rhs, Term, check_operand, grow, pack_rhs};
use crate::cpu::Isa;
use crate::matmul::Operand;

/// Depth rows a window may start at a multiple of: 16 pairs, the AMX tile depth, so a
/// window's padded depth never runs past the panel's on any tier.
pub const WINDOW_ALIGN: usize = 32;

/// A `[depth, cols]` f32 matrix packed as the GEMM's rhs panels, `[col tile][kpt][NR]`,
/// with the depth padded to a multiple of [`WINDOW_ALIGN`] rows.
#[derive(Debug, Default)]
pub struct Panel {
    data: Vec<u32>,
    kpt: usize,
    depth: usize,
    cols: usize,
}

/// A window of a [`Panel`]: depth rows `k0..` and columns `c0..` (see [`Panel::view`]).
#[derive(Clone, Copy)]
pub struct PanelView<'a> {
    /// The panel from the window's first column tile on.
    pub(super) data: &'a [u32],
    /// Pairs per column tile of the whole panel.
    pub(super) kpt: usize,
    /// The window's first depth pair.
    pub(super) k0: usize,
    /// Depth rows and columns from the window's start to the panel's end.
    pub(super) depth: usize,
    pub(super) cols: usize,
}

impl Panel {
    /// Packs `rhs` (`[depth, cols]`, read through its strides) into this panel, reusing its
    /// memory. The layout is the same on every tier.
    pub fn pack(&mut self, isa: Isa, rhs: Operand, depth: usize, cols: usize) {
        check_operand(rhs, depth, cols);
        let kp = depth.div_ceil(2);
        let kpt = kp.next_multiple_of(WINDOW_ALIGN / 2);
        grow(&mut self.data, cols.div_ceil(NR) * kpt * NR);
        let term = Term {
            lhs: (&[], 0, 0),
            rhs: Rhs::Strided(rhs),
            depth,
        };
        pack_rhs(isa, &mut self.data, &[term], &[0], cols, (kp, kpt), 1);
        (self.kpt, self.depth, self.cols) = (kpt, depth, cols);
    }

    /// Depth rows `k0..` and columns `c0..` as a product's rhs ([`Rhs::Panel`]); the
    /// product's depth and columns say where the window ends. `k0` is a multiple of
    /// [`WINDOW_ALIGN`] and `c0` of the column tile (32).
    pub fn view(&self, k0: usize, c0: usize) -> PanelView<'_> {
        assert!(
            k0.is_multiple_of(WINDOW_ALIGN) && c0.is_multiple_of(NR),
            "Panel::view: the window is not aligned"
        );
        assert!(
            k0 <= self.depth && c0 <= self.cols,
            "Panel::view: the window starts past the panel"
        );
        PanelView {
            data: &self.data[c0 / NR * self.kpt * NR..],
            kpt: self.kpt,
            k0: k0 / 2,
            depth: self.depth - k0,
            cols: self.cols - c0,
        }
    }
}
