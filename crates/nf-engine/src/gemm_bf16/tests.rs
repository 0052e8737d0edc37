use super::pack::transpose_pairs;
use super::*;
use crate::cpu;
use crate::ggml::GgmlType;
use crate::linear::WeightData;
use crate::linear::linear_naive;
use crate::testutil::{Rng, assert_close, random_weight};

/// Every tier this machine can run, plus a note for the ones it cannot.
fn tiers() -> Vec<Isa> {
    let avail = Isa::available();
    for isa in Isa::ALL {
        if !avail.contains(&isa) {
            eprintln!("note: skipping the {isa} GEMM path: this CPU (or OS) lacks it");
        }
    }
    avail
}

#[test]
fn bf16_rounding_is_nearest_even() {
    assert_eq!(bf16_bits(1.0), 0x3f80);
    assert_eq!(bf16_bits(-2.0), 0xc000);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0).
    assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
    // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: rounds up to even.
    assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
    assert_eq!(bf16_bits(1.0 + 1.5 / 256.0), 0x3f81);
    assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
    assert_eq!(bf16_to_f32(bf16_bits(f32::INFINITY)), f32::INFINITY);
    assert_eq!(bf16_to_f32(bf16_bits(f32::MAX)), f32::INFINITY);
    assert_eq!(bf16_to_f32(bf16_bits(-0.0)).to_bits(), (-0.0f32).to_bits());
    for x in [0.1f32, 2.71, -1e-20, 65504.0] {
        let r = round_bf16(x);
        assert!((r - x).abs() <= x.abs() / 256.0, "{x} -> {r}");
    }
}

/// (rows, cols, depth): edge tiles in both directions, odd depths, depth above one cache
/// block (KC pairs), and one-element shapes.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 5, 3),
    (3, 17, 5),
    (12, 32, 64),
    (13, 33, 65),
    (40, 100, 96),
    (7, 64, 600),
    (64, 130, 17),
    (100, 70, 1030),
];

#[test]
fn every_tier_matches_the_reference_on_every_layout() {
    let mut rng = Rng::new(21);
    for isa in tiers() {
        for &(rows, cols, depth) in SHAPES {
            let lhs_rm = rng.vec(rows * depth);
            let lhs_cm = rng.vec(rows * depth);
            let rhs_rm = rng.vec(depth * cols);
            let rhs_cm = rng.vec(depth * cols);
            // Row-major and column-major of each operand: the four ways training reads them.
            let lhs_cases = [(&lhs_rm[..], depth, 1), (&lhs_cm[..], 1, rows)];
            let rhs_cases = [(&rhs_rm[..], cols, 1), (&rhs_cm[..], 1, depth)];
            for lhs in lhs_cases {
                for rhs in rhs_cases {
                    for accumulate in [false, true] {
                        for threads in [1, 2] {
                            let start = rng.vec(rows * cols);
                            let mut fast = start.clone();
                            let mut slow = start.clone();
                            gemm_bf16(
                                isa,
                                &mut fast,
                                rows,
                                cols,
                                depth,
                                lhs,
                                Rhs::Strided(rhs),
                                accumulate,
                                threads,
                            );
                            gemm_bf16_naive(&mut slow, rows, cols, depth, lhs, rhs, accumulate);
                            assert_close(&fast, &slow, 2e-6 * (depth as f32).sqrt() + 1e-6);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_general_stride_and_a_strided_submatrix_work() {
    // Operands that are neither row- nor column-contiguous: every other element of a
    // larger buffer, and a column block of a wider matrix (dy[:, r0..] in training).
    let mut rng = Rng::new(22);
    let (rows, cols, depth) = (9, 35, 21);
    let lhs_buf = rng.vec(rows * depth * 2);
    let rhs_buf = rng.vec(depth * cols * 2);
    let lhs = (&lhs_buf[..], depth * 2, 2);
    let rhs = (&rhs_buf[..], 2, depth * 2);
    let wide = rng.vec(rows * (depth + 7));
    let block = (&wide[3..], depth + 7, 1);
    for isa in tiers() {
        let mut fast = vec![f32::NAN; rows * cols];
        let mut slow = vec![0.0; rows * cols];
        gemm_bf16(
            isa,
            &mut fast,
            rows,
            cols,
            depth,
            lhs,
            Rhs::Strided(rhs),
            false,
            2,
        );
        gemm_bf16_naive(&mut slow, rows, cols, depth, lhs, rhs, false);
        assert_close(&fast, &slow, 2e-5);
        gemm_bf16(
            isa,
            &mut fast,
            rows,
            cols,
            depth,
            block,
            Rhs::Strided(rhs),
            false,
            1,
        );
        gemm_bf16_naive(&mut slow, rows, cols, depth, block, rhs, false);
        assert_close(&fast, &slow, 2e-5);
    }
}

#[test]
fn weights_of_every_type_pack_as_w_and_as_w_transposed() {
    let mut rng = Rng::new(23);
    for isa in tiers() {
        for ty in [
            GgmlType::F32,
            GgmlType::BF16,
            GgmlType::F16,
            GgmlType::Q8_0,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
        ] {
            // An odd row count (a zero-padded last pair) and, for types without blocks, a
            // last column tile that is partly padding.
            let shapes: &[(usize, usize, usize)] = match ty {
                GgmlType::F32 | GgmlType::BF16 | GgmlType::F16 => &[(19, 70, 96), (5, 71, 100)],
                _ => &[(19, 70, 96), (5, 71, 64)],
            };
            for &(n, rows, cols) in shapes {
                let w = random_weight(ty, rows, cols, &mut rng);
                let wf = w.to_f32();
                // Forward: out = x · Wᵀ.
                let x = rng.vec(n * cols);
                let mut fast = vec![f32::NAN; n * rows];
                let mut slow = vec![0.0; n * rows];
                gemm_bf16(
                    isa,
                    &mut fast,
                    n,
                    rows,
                    cols,
                    (&x, cols, 1),
                    Rhs::WeightT(&w),
                    false,
                    2,
                );
                gemm_bf16_naive(
                    &mut slow,
                    n,
                    rows,
                    cols,
                    (&x, cols, 1),
                    (&wf, 1, cols),
                    false,
                );
                assert_close(&fast, &slow, 2e-5);
                // dx += dy · W.
                let dy = rng.vec(n * rows);
                let start = rng.vec(n * cols);
                let (mut fast, mut slow) = (start.clone(), start.clone());
                gemm_bf16(
                    isa,
                    &mut fast,
                    n,
                    cols,
                    rows,
                    (&dy, rows, 1),
                    Rhs::Weight(&w),
                    true,
                    2,
                );
                gemm_bf16_naive(
                    &mut slow,
                    n,
                    cols,
                    rows,
                    (&dy, rows, 1),
                    (&wf, cols, 1),
                    true,
                );
                assert_close(&fast, &slow, 2e-5);
            }
        }
    }
}

/// A sum of products packed along one depth equals the sum of the products: every rhs
/// kind, odd depths (each term pads its own last pair), an empty term, accumulate or not.
#[test]
fn a_sum_of_terms_matches_the_sum_of_its_products() {
    let mut rng = Rng::new(26);
    let (rows, cols) = (29, 70);
    let (d1, d2, d3, d4) = (64, 5, 33, 17);
    // x · W₁ᵀ (quantized, as the forward reads it), h · B (a LoRA's strided B [cols, d2]
    // read transposed), dy · W₃ (f16, as dx reads a frozen weight), and a row-major strided rhs.
    let w1 = random_weight(GgmlType::Q4_1, cols, d1, &mut rng);
    let w3 = random_weight(GgmlType::F16, d3, cols, &mut rng);
    let (w1f, w3f) = (w1.to_f32(), w3.to_f32());
    let (x, h, dy, z) = (
        rng.vec(rows * d1),
        rng.vec(rows * d2),
        rng.vec(rows * d3),
        rng.vec(d4 * rows),
    );
    let (bm, r4) = (rng.vec(cols * d2), rng.vec(d4 * cols));
    let terms = [
        Term {
            lhs: (&x, d1, 1),
            rhs: Rhs::WeightT(&w1),
            depth: d1,
        },
        Term {
            lhs: (&h, d2, 1),
            rhs: Rhs::Strided((&bm, 1, d2)),
            depth: d2,
        },
        Term {
            lhs: (&h, d2, 1),
            rhs: Rhs::Strided((&bm, 1, d2)),
            depth: 0,
        },
        Term {
            lhs: (&dy, d3, 1),
            rhs: Rhs::Weight(&w3),
            depth: d3,
        },
        // A transposed lhs: z is [d4, rows].
        Term {
            lhs: (&z, 1, rows),
            rhs: Rhs::Strided((&r4, cols, 1)),
            depth: d4,
        },
    ];
    let reference = [
        ((&x[..], d1, 1), (&w1f[..], 1, d1), d1),
        ((&h[..], d2, 1), (&bm[..], 1, d2), d2),
        ((&dy[..], d3, 1), (&w3f[..], cols, 1), d3),
        ((&z[..], 1, rows), (&r4[..], cols, 1), d4),
    ];
    for isa in tiers() {
        for accumulate in [false, true] {
            for threads in [1, 2] {
                let start = rng.vec(rows * cols);
                let mut fast = start.clone();
                gemm_bf16_sum(isa, &mut fast, rows, cols, &terms, accumulate, threads);
                let mut slow = if accumulate {
                    start
                } else {
                    vec![0.0; rows * cols]
                };
                for (lhs, rhs, depth) in reference {
                    gemm_bf16_naive(&mut slow, rows, cols, depth, lhs, rhs, true);
                }
                assert_close(&fast, &slow, 5e-5);
            }
        }
    }
}

#[test]
fn public_products_match_f32_within_bf16_rounding() {
    // Against the f32 reference: inputs in [-1, 1) rounded to bf16 each carry a relative
    // error of at most 2^-9, so a product of two is off by at most about 2^-8 of its size
    // and a depth-k sum by 2^-8 · Σ|a·b|, which for these inputs is below 2^-8 · k / 3 · 1.5.
    let mut rng = Rng::new(24);
    let (n, k, m) = (37, 150, 45);
    let (x, w, dy) = (rng.vec(n * k), rng.vec(m * k), rng.vec(n * m));
    let bound = |depth: usize| depth as f32 / 3.0 * 1.5 / 256.0;
    let mut out = vec![0.0; n * m];
    let mut reference = vec![0.0; n * m];
    matmul_bf16(&mut out, &x, &w, n, k, m);
    crate::matmul::matmul_naive(&mut reference, &x, &w, n, k, m);
    for (a, b) in out.iter().zip(&reference) {
        assert!((a - b).abs() <= bound(k), "{a} vs {b}");
    }
    // And the bf16 products are not simply the f32 ones: rounding shows.
    assert!(out.iter().zip(&reference).any(|(a, b)| a != b));
    let (mut dx, mut dw) = (vec![0.0; n * k], vec![0.0; m * k]);
    let (mut dx_ref, mut dw_ref) = (vec![0.0; n * k], vec![0.0; m * k]);
    matmul_backward_bf16(Some(&mut dx), Some(&mut dw), &dy, &x, &w, n, k, m);
    crate::matmul::matmul_backward_naive(
        Some(&mut dx_ref),
        Some(&mut dw_ref),
        &dy,
        &x,
        &w,
        n,
        k,
        m,
    );
    for (a, b) in dx.iter().zip(&dx_ref) {
        assert!((a - b).abs() <= bound(m), "dx {a} vs {b}");
    }
    for (a, b) in dw.iter().zip(&dw_ref) {
        assert!((a - b).abs() <= bound(n), "dw {a} vs {b}");
    }
    // linear_bf16 on an f32 weight is matmul_bf16.
    let wt = Weight::from_f32(m, k, w.clone());
    let mut lin = vec![0.0; n * m];
    linear_bf16(&mut lin, &x, &wt);
    assert_eq!(lin, out);
    let mut dx2 = vec![0.0; n * k];
    linear_backward_dx_bf16(&mut dx2, &dy, &wt);
    assert_eq!(dx2, dx);
    let mut lin_ref = vec![0.0; n * m];
    linear_naive(&mut lin_ref, &x, &wt);
    assert_eq!(lin_ref, reference);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(25);
    let (rows, cols, depth) = (200, 300, 700);
    let (a, b) = (rng.vec(rows * depth), rng.vec(depth * cols));
    let isa = cpu::isa();
    let mut one = vec![0.0; rows * cols];
    let mut two = vec![0.0; rows * cols];
    gemm_bf16(
        isa,
        &mut one,
        rows,
        cols,
        depth,
        (&a, depth, 1),
        Rhs::Strided((&b, cols, 1)),
        false,
        1,
    );
    gemm_bf16(
        isa,
        &mut two,
        rows,
        cols,
        depth,
        (&a, depth, 1),
        Rhs::Strided((&b, cols, 1)),
        false,
        2,
    );
    assert_eq!(one, two);
}

#[test]
fn a_packed_weight_gives_the_bits_of_packing_per_product() {
    // Shapes with partial tiles, odd row and column counts, several packing blocks.
    let mut rng = Rng::new(24);
    for isa in tiers() {
        for &(rows, cols) in &[(1, 1), (5, 7), (33, 17), (64, 96), (70, 130)] {
            let n = 9;
            let w = rng.vec(rows * cols);
            let mut pw = PackedWeight::for_isa(isa, rows, cols);
            pw.pack(&w);
            let x = rng.vec(n * cols);
            let (mut want, mut got) = (vec![0.0; n * rows], vec![0.0; n * rows]);
            let strided_t = Rhs::Strided((&w[..], 1, cols));
            gemm_bf16(
                isa,
                &mut want,
                n,
                rows,
                cols,
                (&x, cols, 1),
                strided_t,
                false,
                2,
            );
            gemm_bf16(
                isa,
                &mut got,
                n,
                rows,
                cols,
                (&x, cols, 1),
                Rhs::PackedT(&pw),
                false,
                2,
            );
            assert!(got == want, "forward {rows}x{cols} on {isa}");
            let dy = rng.vec(n * rows);
            let start = rng.vec(n * cols);
            let (mut want, mut got) = (start.clone(), start);
            let strided = Rhs::Strided((&w[..], cols, 1));
            gemm_bf16(
                isa,
                &mut want,
                n,
                cols,
                rows,
                (&dy, rows, 1),
                strided,
                true,
                2,
            );
            gemm_bf16(
                isa,
                &mut got,
                n,
                cols,
                rows,
                (&dy, rows, 1),
                Rhs::Packed(&pw),
                true,
                2,
            );
            assert!(got == want, "dx {rows}x{cols} on {isa}");
        }
    }
}

#[test]
fn the_fused_optimizer_step_repacks_what_it_updates() {
    use crate::optim::{AdamWParams, adamw_step, adamw_step_repack};
    let h = AdamWParams {
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let mut rng = Rng::new(25);
    let (rows, cols, n) = (70, 45, 5);
    let w0 = rng.vec(rows * cols);
    let g = rng.vec(rows * cols);
    let (mut w1, mut m1, mut v1) = (w0.clone(), vec![0.0; w0.len()], vec![0.0; w0.len()]);
    let (mut w2, mut m2, mut v2) = (w0.clone(), m1.clone(), v1.clone());
    let mut pw = PackedWeight::new(rows, cols);
    pw.pack(&w0);
    for step in 1..=3 {
        adamw_step(&mut w1, &mut m1, &mut v1, &g, step, h);
        adamw_step_repack(&mut w2, &mut m2, &mut v2, &g, step, h, &mut pw);
    }
    assert!(w1 == w2 && m1 == m2 && v1 == v2, "the update changed");
    let x = rng.vec(n * cols);
    let (mut want, mut got) = (vec![0.0; n * rows], vec![0.0; n * rows]);
    matmul_bf16(&mut want, &x, &w1, n, cols, rows);
    linear_packed(&mut got, &x, &pw);
    assert!(got == want, "the packed copy is stale");
    let dy = rng.vec(n * rows);
    let (mut want, mut got) = (vec![0.0; n * cols], vec![0.0; n * cols]);
    matmul_backward_bf16(Some(&mut want), None, &dy, &x, &w1, n, cols, rows);
    linear_backward_dx_packed(&mut got, &dy, &pw);
    assert!(got == want, "the packed copy is stale for dx");
}

/// The register-block transpose of packing against the plain loop: whole 16 × 16 blocks and
/// the edges past them, on every width the machine has.
#[test]
fn pair_transposes_agree_with_the_plain_loop() {
    let wide_ok = Isa::available().contains(&Isa::Avx512);
    if !wide_ok {
        eprintln!("note: skipping the AVX-512 transpose: this CPU lacks AVX-512");
    }
    for (kp, nj) in [(16, 16), (48, 32), (37, 29), (5, 32), (16, 3), (300, 17)] {
        let pairs: Vec<u32> = (0..nj * kp).map(|i| i as u32 * 2_654_435_761).collect();
        let mut want = vec![u32::MAX; kp * NR];
        for p in 0..kp {
            for jj in 0..nj {
                want[p * NR + jj] = pairs[jj * kp + p];
            }
        }
        for wide in [false, wide_ok] {
            let mut got = vec![u32::MAX; kp * NR];
            transpose_pairs(&mut got, &pairs, kp, nj, wide);
            assert_eq!(got, want, "kp {kp}, nj {nj}, wide {wide}");
        }
    }
}

/// The block decoder that packs Q4_0, Q4_1 and Q8_0 tiles of `Wᵀ` in registers writes the
/// same bits as decoding to f32 and packing that, on every tier (the lower tiers take the
/// general path), including values that round up, an infinite scale and a NaN one whose
/// payload would carry into the sign if it were rounded like a number. The same for the
/// tiles of `W` itself, decoded one block of two rows at a time.
#[test]
fn block_tiles_have_the_bits_of_the_general_packer() {
    let mut rng = Rng::new(29);
    for isa in tiers() {
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            // Two whole column tiles and a partial one (which takes the general path).
            let (rows, cols) = (70, 96);
            let mut w = random_weight(ty, rows, cols, &mut rng);
            let WeightData::Quant { bytes, .. } = &mut w.data else {
                unreachable!()
            };
            // Row 3's first block gets a NaN scale, row 17's second an infinite one.
            let block = bytes.len() / (rows * cols / 32);
            bytes[3 * block * cols / 32..][..2].copy_from_slice(&0x7fffu16.to_le_bytes());
            bytes[(17 * cols / 32 + 1) * block..][..2].copy_from_slice(&0x7c00u16.to_le_bytes());
            let f = w.to_f32();
            let kp = cols / 2;
            let panel = |rhs: Rhs| {
                let term = Term {
                    lhs: (&[], 0, 0),
                    rhs,
                    depth: cols,
                };
                let mut b = vec![0u32; rows.div_ceil(NR) * kp * NR];
                pack_rhs(isa, &mut b, &[term], &[0], rows, (kp, kp), 2);
                b
            };
            let (blocks, general) = (panel(Rhs::WeightT(&w)), panel(Rhs::Strided((&f, 1, cols))));
            assert!(blocks == general, "{isa} {ty:?}: the block tiles differ");

            // W itself (the input gradient's rhs), an odd row count, packed a column tile
            // at a time where the tier allows it, against f32 rows paired two by two.
            let w = w.split_rows(&[rows - 1, 1]).swap_remove(0);
            let f = w.to_f32();
            let kp = (rows - 1).div_ceil(2);
            let mut general = vec![0u32; cols / NR * kp * NR];
            let term = |rhs| Term {
                lhs: (&[], 0, 0),
                rhs,
                depth: rows - 1,
            };
            let strided = [term(Rhs::Strided((&f, cols, 1)))];
            pack_rhs(isa, &mut general, &strided, &[0], cols, (kp, kp), 1);
            let weight = [term(Rhs::Weight(&w))];
            let mut tiles = vec![0u32; general.len()];
            if tile_packs(isa, weight[0].rhs) {
                let mut scratch = Scratch::default();
                for (ct, tile) in tiles.chunks_exact_mut(kp * NR).enumerate() {
                    pack_column_tile(isa, tile, &weight, &[0], ct, (cols, kp), true, &mut scratch);
                }
            } else {
                pack_rhs(isa, &mut tiles, &weight, &[0], cols, (kp, kp), 1);
            }
            assert!(tiles == general, "{isa} {ty:?}: the W tiles differ");
        }
    }
}

/// A deep product runs as depth slices (2 and 1 threads here); with 3 threads the same
/// product is too narrow to slice and runs whole. Both give the same bits, for a strided rhs
/// and for a quantized W, accumulating or not, and agree with the reference.
#[test]
fn deep_products_in_depth_slices_have_the_bits_of_whole_ones() {
    let mut rng = Rng::new(31);
    for isa in tiers() {
        let (rows, cols, depth) = (20, 128, 2001);
        let lhs = rng.vec(rows * depth);
        let rhs = rng.vec(depth * cols);
        let w = random_weight(GgmlType::Q8_0, depth, cols, &mut rng);
        let wf = w.to_f32();
        let start = rng.vec(rows * cols);
        for (rhs, f) in [
            (Rhs::Strided((&rhs, cols, 1)), &rhs),
            (Rhs::Weight(&w), &wf),
        ] {
            for accumulate in [false, true] {
                let run = |threads| {
                    let mut out = start.clone();
                    let lhs = (&lhs[..], depth, 1);
                    gemm_bf16(
                        isa, &mut out, rows, cols, depth, lhs, rhs, accumulate, threads,
                    );
                    out
                };
                let whole = run(3);
                assert!(run(2) == whole && run(1) == whole, "{isa}: slices differ");
                let mut slow = start.clone();
                let (l, r) = ((&lhs[..], depth, 1), (&f[..], cols, 1));
                gemm_bf16_naive(&mut slow, rows, cols, depth, l, r, accumulate);
                assert_close(&whole, &slow, 2e-6 * (depth as f32).sqrt() + 1e-6);
            }
        }
    }
}

#[test]
#[cfg(target_arch = "x86_64")]
fn each_avx512_kernel_matches_the_portable_one() {
    use kernel::Avx512Kernel;
    let f = cpu::features();
    if !f.avx512 {
        eprintln!("note: skipping the AVX-512 kernels: this CPU lacks AVX-512");
        return;
    }
    let mut kernels = vec![Avx512Kernel::Fma];
    if f.avx512bf16 {
        kernels.push(Avx512Kernel::Dot);
    } else {
        eprintln!("note: skipping the vdpbf16ps kernel: this CPU lacks AVX512_BF16");
    }
    let mut rng = Rng::new(77);
    // Depths below, at and past one widened chunk (64 pairs), with a ragged tail.
    for kc in [1, 15, 16, 64, 100, KC] {
        let lda = kc + 3;
        let a: Vec<u32> = (0..MR * lda)
            .map(|_| pair(rng.next_f32() * 2.0, rng.next_f32() * 2.0))
            .collect();
        let b: Vec<u32> = (0..kc * NR)
            .map(|_| pair(rng.next_f32() * 2.0, rng.next_f32() * 2.0))
            .collect();
        let mut want = vec![0.0f32; MR * NR];
        kernel::kernel(Isa::Baseline, &mut want, MR, &a, lda, &b, kc);
        for &k in &kernels {
            for add in [false, true] {
                let ldd = NR + 5;
                let start = rng.vec(MR * ldd);
                let mut got = start.clone();
                // The FMA kernel reads the lhs widened, as products hand it over.
                let mut wide = vec![0u32; 2 * a.len()];
                kernel::widen_lhs(Isa::Avx512, &mut wide, &a);
                let (a, lda) = match k {
                    Avx512Kernel::Dot => (&a, lda),
                    Avx512Kernel::Fma => (&wide, 2 * lda),
                };
                assert!(a.len() >= kernel::lhs_len(Some(k), MR, lda, kc));
                // SAFETY: the kernel's instructions were checked above; got holds MR rows of
                // ldd ≥ NR floats, a MR rows of at least lhs_len, b kc × NR pairs.
                unsafe { k.run::<MR>(got.as_mut_ptr(), ldd, add, a, lda, &b, kc) };
                for i in 0..MR {
                    for j in 0..NR {
                        let base = if add { start[i * ldd + j] } else { 0.0 };
                        let (g, w) = (got[i * ldd + j], base + want[i * NR + j]);
                        match k {
                            // The FMA kernel sums in the portable kernel's order: same bits.
                            Avx512Kernel::Fma => assert_eq!(g.to_bits(), w.to_bits()),
                            Avx512Kernel::Dot => assert!(
                                (g - w).abs() <= 1e-5 * (1.0 + w.abs()) * (kc as f32).sqrt(),
                                "{} kc {kc} ({i}, {j}): {g} vs {w}",
                                k.name()
                            ),
                        }
                    }
                    // Columns past NR stay as they were.
                    assert_eq!(
                        got[i * ldd + NR..i * ldd + ldd],
                        start[i * ldd + NR..i * ldd + ldd]
                    );
                }
            }
        }
    }
}
