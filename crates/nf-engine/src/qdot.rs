//! Dot products of f32 activations with quantized weight rows, without materializing the
//! dequantized row: the decode-time hot loop of a quantized model.
//!
//! Each block type has a fused kernel that keeps 16 (Q4) or 32 (Q8) lane accumulators
//! across blocks and reduces once per row, so the compiler maps it onto whole vector
//! registers. The kernels are compiled for AVX-512, AVX2+FMA and the baseline, and picked at
//! run time. Types without a fused kernel dequantize the row into a buffer first.

#[cfg(any(test, doc))]
use crate::cpu::Isa;
use crate::cpu::multiversion;
use crate::ggml::GgmlType;
use crate::linear::{Weight, WeightData};
use crate::quant::f16_at;
use crate::simd::dot_generic;

const QK: usize = 32;

/// out: [n_rows, n] (row-major, token fastest), for weight rows `r0..r0 + n_rows`;
/// x: [n, cols]. `buf` is scratch for types without a fused kernel.
pub fn dot_rows(out: &mut [f32], w: &Weight, r0: usize, x: &[f32], n: usize, buf: &mut Vec<f32>) {
    dot_rows_with(crate::cpu::isa(), out, w, r0, x, n, buf)
}

multiversion!(
    /// [`dot_rows`] compiled for `isa`, which must be one this CPU runs
    /// ([`Isa::available`]).
    pub dot_rows_with => dot_rows_generic(
        out: &mut [f32],
        w: &Weight,
        r0: usize,
        x: &[f32],
        n: usize,
        buf: &mut Vec<f32>,
    )
);

#[inline(always)]
fn dot_rows_generic(
    out: &mut [f32],
    w: &Weight,
    r0: usize,
    x: &[f32],
    n: usize,
    buf: &mut Vec<f32>,
) {
    let cols = w.cols;
    let WeightData::Quant { ty, bytes } = &w.data else {
        let WeightData::F32(v) = &w.data else {
            unreachable!()
        };
        for (i, o) in out.chunks_exact_mut(n).enumerate() {
            let row = &v[(r0 + i) * cols..(r0 + i + 1) * cols];
            for (t, ot) in o.iter_mut().enumerate() {
                *ot = dot_generic(&x[t * cols..(t + 1) * cols], row);
            }
        }
        return;
    };
    let rb = cols / ty.block_size() * ty.type_size();
    for (i, o) in out.chunks_exact_mut(n).enumerate() {
        let row = &bytes[(r0 + i) * rb..(r0 + i + 1) * rb];
        // Direct calls (not function pointers) so the fused kernels inline into, and are
        // vectorized for, the instruction set this copy was compiled for.
        for (t, ot) in o.iter_mut().enumerate() {
            let xt = &x[t * cols..(t + 1) * cols];
            *ot = match ty {
                GgmlType::Q4_0 => dot_q4_0(row, xt),
                GgmlType::Q4_1 => dot_q4_1(row, xt),
                GgmlType::Q8_0 => dot_q8_0(row, xt),
                _ => {
                    if t == 0 {
                        buf.resize(cols, 0.0);
                        w.rows_to_f32(r0 + i, buf);
                    }
                    dot_generic(xt, buf)
                }
            };
        }
    }
}

#[inline(always)]
fn hsum(acc: &[f32; 16]) -> f32 {
    acc.iter().sum()
}

/// block_q4_0: d (f16), 16 bytes of nibbles; element j = (nibble - 8) · d, low nibbles are
/// elements 0..16, high nibbles 16..32.
#[inline(always)]
fn dot_q4_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for (b, xb) in row.chunks_exact(18).zip(x.chunks_exact(QK)) {
        let d = f16_at(b, 0);
        let qs = &b[2..18];
        for j in 0..16 {
            let lo = (qs[j] & 0x0F) as i32 - 8;
            let hi = (qs[j] >> 4) as i32 - 8;
            acc[j] = (lo as f32 * xb[j] + hi as f32 * xb[j + 16]).mul_add(d, acc[j]);
        }
    }
    hsum(&acc)
}

/// block_q4_1: d, m (f16), 16 bytes of nibbles; element = nibble · d + m.
/// Σ (q d + m) x = d Σ q x + m Σ x, accumulated in separate lanes.
#[inline(always)]
fn dot_q4_1(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut acc_m = [0.0f32; 16];
    for (b, xb) in row.chunks_exact(20).zip(x.chunks_exact(QK)) {
        let (d, m) = (f16_at(b, 0), f16_at(b, 2));
        let qs = &b[4..20];
        for j in 0..16 {
            let lo = (qs[j] & 0x0F) as f32;
            let hi = (qs[j] >> 4) as f32;
            acc[j] = (lo * xb[j] + hi * xb[j + 16]).mul_add(d, acc[j]);
            acc_m[j] = (xb[j] + xb[j + 16]).mul_add(m, acc_m[j]);
        }
    }
    hsum(&acc) + hsum(&acc_m)
}

/// block_q8_0: d (f16), 32 signed bytes; element = q · d.
#[inline(always)]
fn dot_q8_0(row: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for (b, xb) in row.chunks_exact(34).zip(x.chunks_exact(QK)) {
        let d = f16_at(b, 0);
        let qs = &b[2..34];
        for j in 0..16 {
            let s = qs[j] as i8 as f32 * xb[j] + qs[j + 16] as i8 as f32 * xb[j + 16];
            acc[j] = s.mul_add(d, acc[j]);
        }
    }
    hsum(&acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{Rng, assert_close, random_weight};

    #[test]
    fn every_tier_matches_the_dequantized_dot() {
        let mut rng = Rng::new(31);
        let (rows, cols, n) = (9, 256, 3);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
        ] {
            let w = random_weight(ty, rows, cols, &mut rng);
            let wf = w.to_f32();
            let x = rng.vec(n * cols);
            let mut want = vec![0.0; (rows - 2) * n];
            for (i, o) in want.chunks_exact_mut(n).enumerate() {
                for (t, o) in o.iter_mut().enumerate() {
                    let row = &wf[(i + 2) * cols..(i + 3) * cols];
                    *o = row
                        .iter()
                        .zip(&x[t * cols..(t + 1) * cols])
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>() as f32;
                }
            }
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                dot_rows_with(isa, &mut got, &w, 2, &x, n, &mut Vec::new());
                assert_close(&got, &want, 1e-4);
            }
        }
    }
}
