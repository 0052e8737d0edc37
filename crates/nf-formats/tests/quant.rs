//! ggml block (de)quantization: hand-computed blocks for every type, bit-exact agreement with
//! llama.cpp's gguf-py (fixtures from `tools/gen_quant_golden.py`), round-trip error bounds,
//! and refusal of bad lengths.

use nf_formats::GgmlType;
use nf_formats::quant::{
    QuantError, can_dequantize, can_quantize, dequantize, dequantize_to_vec, quantize,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn dq(ty: GgmlType, src: &[u8]) -> Vec<f32> {
    let n = src.len() / ty.type_size() * ty.block_size();
    dequantize_to_vec(ty, src, n).unwrap()
}

/// Compares bit patterns, so -0.0 differs from 0.0 and any rounding difference shows.
fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: got {g:e}, want {w:e}"
        );
    }
}

/// Asserts selected elements of a dequantized block: `(index, value)` pairs.
fn assert_at(y: &[f32], expected: &[(usize, f32)], what: &str) {
    for &(i, want) in expected {
        assert_eq!(
            y[i].to_bits(),
            want.to_bits(),
            "{what}: element {i}: got {}, want {want}",
            y[i]
        );
    }
}

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

// ---------------------------------------------------------------------------------------
// (a) Hand-computed blocks, one per type. Scales are powers of two or small integers so
// every expected value is exact and can be checked on paper.
// ---------------------------------------------------------------------------------------

#[test]
fn hand_f32_f16_bf16() {
    // F32 is the little-endian bytes as they are: 0x3FC00000 = 1.5, 0x80000000 = -0.0.
    let y = dq(
        GgmlType::F32,
        &[0x00, 0x00, 0xC0, 0x3F, 0x00, 0x00, 0x00, 0x80],
    );
    assert_bits_eq(&y, &[1.5, -0.0], "f32");

    // F16: 0x3C00 = 1.0; 0xC000 = -2.0; 0x0001 = 2^-24 (smallest subnormal);
    // 0x7BFF = 65504 (largest finite); 0x3555 = 1 + 0x155/1024 times 2^-2 = 0.333251953125.
    let y = dq(
        GgmlType::F16,
        &[0x00, 0x3C, 0x00, 0xC0, 0x01, 0x00, 0xFF, 0x7B, 0x55, 0x35],
    );
    assert_bits_eq(
        &y,
        &[1.0, -2.0, 2f32.powi(-24), 65504.0, 0.333_251_95],
        "f16",
    );

    // BF16 is the top half of an f32: 0x3F80 -> 0x3F800000 = 1.0; 0xC040 -> -3.0;
    // 0x4049 -> 0x40490000 = 2 * (1 + 0x49/128) = 3.140625.
    let y = dq(GgmlType::BF16, &[0x80, 0x3F, 0x40, 0xC0, 0x49, 0x40]);
    assert_bits_eq(&y, &[1.0, -3.0, 3.140625], "bf16");
}

#[test]
fn hand_q8_0() {
    // d = 0.5 (f16 0x3800); qs[0] = -128, qs[1] = 127, qs[j] = j - 16 for j >= 2.
    // Element j = qs[j] * 0.5: -64, 63.5, then (j - 16) / 2.
    let mut b = vec![0x00, 0x38, 0x80, 0x7F];
    b.extend((2..32).map(|j| (j as i8 - 16) as u8));
    let y = dq(GgmlType::Q8_0, &b);
    #[rustfmt::skip]
    let want = [
        -64.0, 63.5, -7.0, -6.5, -6.0, -5.5, -5.0, -4.5, -4.0, -3.5, -3.0, -2.5, -2.0, -1.5,
        -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0,
        7.5,
    ];
    assert_bits_eq(&y, &want, "q8_0");
}

#[test]
fn hand_q4_0() {
    // d = 2.0 (f16 0x4000); qs[j] = j | (15 - j) << 4.
    // Element j (low nibble j) = (j - 8) * 2; element j + 16 (high nibble 15 - j) =
    // (15 - j - 8) * 2 = (7 - j) * 2.
    let mut b = vec![0x00, 0x40];
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = dq(GgmlType::Q4_0, &b);
    #[rustfmt::skip]
    let want = [
        -16.0, -14.0, -12.0, -10.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0,
        14.0, 14.0, 12.0, 10.0, 8.0, 6.0, 4.0, 2.0, 0.0, -2.0, -4.0, -6.0, -8.0, -10.0, -12.0,
        -14.0, -16.0,
    ];
    assert_bits_eq(&y, &want, "q4_0");
}

#[test]
fn hand_q4_1() {
    // d = 0.5 (0x3800), m = -1.0 (0xBC00); qs[j] = j | (15 - j) << 4.
    // Element j = j * 0.5 - 1; element j + 16 = (15 - j) * 0.5 - 1.
    let mut b = vec![0x00, 0x38, 0x00, 0xBC];
    b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let y = dq(GgmlType::Q4_1, &b);
    #[rustfmt::skip]
    let want = [
        -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 6.5,
        6.0, 5.5, 5.0, 4.5, 4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0,
    ];
    assert_bits_eq(&y, &want, "q4_1");
}

#[test]
fn hand_q5_0() {
    // d = 1.0 (0x3C00); qh = 0xAAAA5555 (bytes 55 55 AA AA): bit j is the fifth bit of element
    // j, so elements 0..16 have it when j is even (0x5555) and elements 16..32 when j is odd
    // (0xAAAA in the high half). qs[j] = j | j << 4.
    // Element j < 16: j even -> (j + 16) - 16 = j; j odd -> j - 16.
    // Element 16 + j: j odd -> j; j even -> j - 16.
    let mut b = vec![0x00, 0x3C, 0x55, 0x55, 0xAA, 0xAA];
    b.extend((0..16u8).map(|j| j | (j << 4)));
    let y = dq(GgmlType::Q5_0, &b);
    #[rustfmt::skip]
    let want = [
        0.0, -15.0, 2.0, -13.0, 4.0, -11.0, 6.0, -9.0, 8.0, -7.0, 10.0, -5.0, 12.0, -3.0, 14.0,
        -1.0, -16.0, 1.0, -14.0, 3.0, -12.0, 5.0, -10.0, 7.0, -8.0, 9.0, -6.0, 11.0, -4.0, 13.0,
        -2.0, 15.0,
    ];
    assert_bits_eq(&y, &want, "q5_0");
}

#[test]
fn hand_q5_1() {
    // d = 0.25 (0x3400), m = 0.5 (0x3800); qh = 0xAAAA5555 as in hand_q5_0;
    // qs[j] = (15 - j) | j << 4.
    // Element j < 16: (15 - j + 16 * [j even]) * 0.25 + 0.5, e.g. j = 0: 31 * 0.25 + 0.5 = 8.25.
    // Element 16 + j: (j + 16 * [j odd]) * 0.25 + 0.5, e.g. j = 15: 31 * 0.25 + 0.5 = 8.25.
    let mut b = vec![0x00, 0x34, 0x00, 0x38, 0x55, 0x55, 0xAA, 0xAA];
    b.extend((0..16u8).map(|j| (15 - j) | (j << 4)));
    let y = dq(GgmlType::Q5_1, &b);
    #[rustfmt::skip]
    let want = [
        8.25, 4.0, 7.75, 3.5, 7.25, 3.0, 6.75, 2.5, 6.25, 2.0, 5.75, 1.5, 5.25, 1.0, 4.75, 0.5,
        0.5, 4.75, 1.0, 5.25, 1.5, 5.75, 2.0, 6.25, 2.5, 6.75, 3.0, 7.25, 3.5, 7.75, 4.0, 8.25,
    ];
    assert_bits_eq(&y, &want, "q5_1");
}

/// The 2-bit quant bytes used by Q2_K and Q3_K: within each 32-byte group, bytes 0..16 are
/// 0xE4 (= 0b11_10_01_00: the value at shift 2s is s) and bytes 16..32 are 0x1B
/// (= 0b00_01_10_11: the value at shift 2s is 3 - s); the second group swaps them.
fn two_bit_qs() -> Vec<u8> {
    let mut qs = Vec::new();
    for (first, second) in [(0xE4, 0x1B), (0x1B, 0xE4)] {
        qs.extend([first; 16]);
        qs.extend([second; 16]);
    }
    qs
}

#[test]
fn hand_q2_k() {
    // scales[i] = i | (15 - i) << 4: sub-block i (16 elements) has scale i and min 15 - i.
    // d = 1.0, dmin = 0.5. Element e: half h = e / 128, r = e % 128, shift s = r / 32,
    // byte l = r % 32 of group h, sub-block 8h + 2s + l / 16.
    // Element = 1.0 * scale * q - 0.5 * min.
    let mut b: Vec<u8> = (0..16u8).map(|i| i | ((15 - i) << 4)).collect();
    b.extend(two_bit_qs());
    b.extend(f16_bytes(1.0));
    b.extend(f16_bytes(0.5));
    assert_eq!(b.len(), 84);
    let y = dq(GgmlType::Q2K, &b);
    assert_at(
        &y,
        &[
            (0, -7.5),   // sub 0, byte 0 (0xE4) shift 0 -> q 0: 0 - 0.5 * 15
            (16, -4.0),  // sub 1, byte 16 (0x1B) shift 0 -> q 3: 1 * 3 - 0.5 * 14
            (32, -4.5),  // sub 2, byte 0 shift 2 -> q 1: 2 * 1 - 0.5 * 13
            (63, 0.0),   // sub 3, byte 31 (0x1B) shift 2 -> q 2: 3 * 2 - 0.5 * 12
            (100, 13.5), // sub 6, byte 4 shift 6 -> q 3: 6 * 3 - 0.5 * 9
            (128, 20.5), // sub 8, group 1 byte 0 (0x1B) shift 0 -> q 3: 8 * 3 - 0.5 * 7
            (200, 10.5), // sub 12, group 1 byte 8 (0x1B) shift 4 -> q 1: 12 * 1 - 0.5 * 3
            (255, 45.0), // sub 15, group 1 byte 31 (0xE4) shift 6 -> q 3: 15 * 3 - 0
        ],
        "q2_K",
    );
}

#[test]
fn hand_q3_k() {
    // Sixteen 6-bit scales s_j = 4j + 2 (effective s_j - 32 = -30, -26, ..., 30). Low nibbles
    // (2, 6, 10, 14 repeating) go to bytes 0..8, low nibble for j < 8, high nibble for j >= 8:
    // 22 66 AA EE 22 66 AA EE. The top two bits (j / 4 = 0, 1, 2, 3) go to byte 8 + j % 4 at
    // bits 2 * (j / 4): 0 | 1 << 2 | 2 << 4 | 3 << 6 = 0xE4 in each of bytes 8..12.
    // hmask[l] = 0x0F for l < 16 and 0xF0 for l >= 16: the third bit of the element at
    // (half h, shift s, byte l) is bit 4h + s; a clear bit subtracts 4. d = 0.5.
    let mut b = [0x0F; 16].to_vec();
    b.extend([0xF0; 16]);
    b.extend(two_bit_qs());
    b.extend([
        0x22, 0x66, 0xAA, 0xEE, 0x22, 0x66, 0xAA, 0xEE, 0xE4, 0xE4, 0xE4, 0xE4,
    ]);
    b.extend(f16_bytes(0.5));
    assert_eq!(b.len(), 110);
    let y = dq(GgmlType::Q3K, &b);
    assert_at(
        &y,
        &[
            // sub 0 (scale -30), byte 0: low 0, hmask bit 0 set -> q 0: 0.5 * -30 * 0 = -0.
            (0, -0.0),
            // sub 1 (-26), byte 16 (0x1B): low 3, bit 0 of 0xF0 clear -> q -1: -13 * -1.
            (16, 13.0),
            // sub 2 (-22), byte 8 shift 2: low 1, bit 1 of 0x0F set -> q 1: -11 * 1.
            (40, -11.0),
            // sub 7 (-2), byte 31 (0x1B) shift 6: low 0, bit 3 of 0xF0 clear -> q -4: -1 * -4.
            (127, 4.0),
            // sub 8 (2), group 1 byte 0 (0x1B): low 3, bit 4 of 0x0F clear -> q -1: 1 * -1.
            (128, -1.0),
            // sub 10 (10), group 1 byte 10 (0x1B) shift 2: low 2, bit 5 of 0x0F clear -> q -2.
            (170, -10.0),
            // sub 12 (18), group 1 byte 8 (0x1B) shift 4: low 1, bit 6 clear -> q -3: 9 * -3.
            (200, -27.0),
            // sub 15 (30), group 1 byte 31 (0xE4) shift 6: low 3, bit 7 of 0xF0 set -> q 3.
            (255, 45.0),
        ],
        "q3_K",
    );
}

/// The packed scales shared by the Q4_K and Q5_K tests: scales [1, 2, 3, 4, 17, 33, 50, 63]
/// and mins [0, 5, 10, 63, 16, 32, 48, 1].
///
/// Bytes 0..4 = scale j | (top two bits of scale j + 4) << 6: 1|1<<6, 2|2<<6, 3|3<<6, 4|3<<6.
/// Bytes 4..8 = min j | (top two bits of min j + 4) << 6: 0|1<<6, 5|2<<6, 10|3<<6, 63|0<<6.
/// Bytes 8..12 = low nibble of scale j + 4 | low nibble of min j + 4 << 4:
/// 1|0, 1|0, 2|0, 15|1<<4.
const K4_SCALES: [u8; 12] = [
    0x41, 0x82, 0xC3, 0xC4, 0x40, 0x85, 0xCA, 0x3F, 0x01, 0x01, 0x02, 0x1F,
];

/// Q4_K/Q5_K nibbles: byte l of each 32-byte group holds l % 16 low and 15 - l % 16 high.
fn k4_qs() -> Vec<u8> {
    (0..128u8)
        .map(|i| (i % 16) | ((15 - i % 16) << 4))
        .collect()
}

#[test]
fn hand_q4_k() {
    // d = 1.0, dmin = 0.25. Element e: group k = e / 64, r = e % 64; r < 32 takes the low
    // nibble of byte r (sub-block 2k), r >= 32 the high nibble of byte r - 32 (sub 2k + 1).
    // Element = scale * q - 0.25 * min.
    let mut b = [f16_bytes(1.0), f16_bytes(0.25)].concat();
    b.extend(K4_SCALES);
    b.extend(k4_qs());
    assert_eq!(b.len(), 144);
    let y = dq(GgmlType::Q4K, &b);
    assert_at(
        &y,
        &[
            (0, 0.0),      // sub 0: 1 * 0 - 0.25 * 0
            (5, 5.0),      // sub 0: 1 * 5 - 0
            (40, 12.75),   // sub 1, byte 8 high nibble 7: 2 * 7 - 0.25 * 5
            (81, 0.5),     // sub 2, byte 17 low nibble 1: 3 * 1 - 0.25 * 10
            (127, -15.75), // sub 3, byte 31 high nibble 0: 0 - 0.25 * 63
            (131, 47.0),   // sub 4, low nibble 3: 17 * 3 - 0.25 * 16
            (162, 421.0),  // sub 5, byte 2 high nibble 13: 33 * 13 - 0.25 * 32
            (223, 738.0),  // sub 6, byte 31 low nibble 15: 50 * 15 - 0.25 * 48
            (224, 944.75), // sub 7, byte 0 high nibble 15: 63 * 15 - 0.25 * 1
            (255, -0.25),  // sub 7, byte 31 high nibble 0: 0 - 0.25 * 1
        ],
        "q4_K",
    );
}

#[test]
fn hand_q5_k() {
    // As hand_q4_k, plus fifth bits: qh[l] = 0x99 (bits 0, 3, 4, 7) for l < 16 and 0x66
    // (bits 1, 2, 5, 6) for l >= 16. Group k's low-nibble elements use bit 2k of qh[l], its
    // high-nibble elements bit 2k + 1; a set bit adds 16.
    let mut b = [f16_bytes(1.0), f16_bytes(0.25)].concat();
    b.extend(K4_SCALES);
    b.extend([0x99; 16]);
    b.extend([0x66; 16]);
    b.extend(k4_qs());
    assert_eq!(b.len(), 176);
    let y = dq(GgmlType::Q5K, &b);
    assert_at(
        &y,
        &[
            (0, 16.0),      // k 0, byte 0: 0 + 16 (0x99 bit 0): 1 * 16 - 0
            (5, 21.0),      // k 0, byte 5: 5 + 16
            (20, 4.0),      // k 0, byte 20: 4, 0x66 bit 0 clear
            (40, 12.75),    // k 0 high, byte 8: 7, 0x99 bit 1 clear: 2 * 7 - 1.25
            (56, 44.75),    // k 0 high, byte 24: 7 + 16 (0x66 bit 1): 2 * 23 - 1.25
            (81, 48.5),     // k 1, byte 17: 1 + 16 (0x66 bit 2): 3 * 17 - 2.5
            (127, -15.75),  // k 1 high, byte 31: 0, 0x66 bit 3 clear: 0 - 15.75
            (131, 319.0),   // k 2, byte 3: 3 + 16 (0x99 bit 4): 17 * 19 - 4
            (162, 421.0),   // k 2 high, byte 2: 13, 0x99 bit 5 clear: 33 * 13 - 8
            (224, 1952.75), // k 3 high, byte 0: 15 + 16 (0x99 bit 7): 63 * 31 - 0.25
            (255, -0.25),   // k 3 high, byte 31: 0, 0x66 bit 7 clear: 0 - 0.25
        ],
        "q5_K",
    );
}

#[test]
fn hand_q6_k() {
    // ql[i] = i % 16 | (15 - i % 16) << 4 (128 bytes); qh[i] = 0xE4 (64 bytes), so the top two
    // bits are 0, 1, 2, 3 for the four 32-element groups of each 128; scales[i] = 2i - 15
    // (-15, -13, ..., 15); d = 0.5. Element = 0.5 * scale * ((low | top << 4) - 32).
    let mut b: Vec<u8> = (0..128u8)
        .map(|i| (i % 16) | ((15 - i % 16) << 4))
        .collect();
    b.extend([0xE4; 64]);
    b.extend((0..16i8).map(|i| (2 * i - 15) as u8));
    b.extend(f16_bytes(0.5));
    assert_eq!(b.len(), 210);
    let y = dq(GgmlType::Q6K, &b);
    assert_at(
        &y,
        &[
            (0, 240.0),   // ql[0] low 0, top 0 -> -32; scale[0] -15: -7.5 * -32
            (17, 201.5),  // ql[17] low 1, top 0 -> -31; scale[1] -13: -6.5 * -31
            (40, 44.0),   // ql[40] low 8, top 1 -> 24 - 32 = -8; scale[2] -11: -5.5 * -8
            (69, -35.0),  // ql[5] high 10, top 2 -> 42 - 32 = 10; scale[4] -7: -3.5 * 10
            (127, -8.0),  // ql[63] high 0, top 3 -> 48 - 32 = 16; scale[7] -1: -0.5 * 16
            (128, -16.0), // ql[64] low 0, top 0 -> -32; scale[8] 1: 0.5 * -32
            (212, 60.5),  // ql[84] high 11, top 2 -> 43 - 32 = 11; scale[13] 11: 5.5 * 11
            (255, 120.0), // ql[127] high 0, top 3 -> 16; scale[15] 15: 7.5 * 16
        ],
        "q6_K",
    );
}

#[test]
fn hand_q8_k() {
    // d = 0.125 as f32 (0x3E000000); qs[j] = j as a byte, read as i8 (128..256 wrap to
    // -128..0); bsums are not used by dequantization. Element = 0.125 * q.
    let mut b = 0.125f32.to_le_bytes().to_vec();
    b.extend((0..=255u8).collect::<Vec<_>>());
    b.extend([0u8; 32]);
    assert_eq!(b.len(), 292);
    let y = dq(GgmlType::Q8K, &b);
    assert_at(
        &y,
        &[
            (0, 0.0),
            (1, 0.125),
            (127, 15.875),
            (128, -16.0),
            (255, -0.125),
        ],
        "q8_K",
    );
}

// ---------------------------------------------------------------------------------------
// (b) Golden data from gguf-py (tools/gen_quant_golden.py).
// ---------------------------------------------------------------------------------------

struct Golden(serde_json::Value);

fn golden() -> Golden {
    let text = include_str!("fixtures/quant_golden.json");
    Golden(serde_json::from_str(text).expect("quant_golden.json parses"))
}

impl Golden {
    fn cases(&self, key: &str) -> &Vec<serde_json::Value> {
        self.0[key].as_array().expect("case list")
    }
}

fn hex(s: &serde_json::Value) -> Vec<u8> {
    let s = s.as_str().expect("hex string");
    assert!(s.len().is_multiple_of(2));
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hex_f32(s: &serde_json::Value) -> Vec<f32> {
    hex(s)
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn type_named(name: &serde_json::Value) -> GgmlType {
    let name = name.as_str().expect("type name");
    (0..64)
        .filter_map(GgmlType::from_id)
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("unknown type {name}"))
}

#[test]
fn golden_fixture_records_its_tool_versions() {
    let g = golden();
    for key in ["gguf", "numpy", "python", "generator"] {
        assert!(g.0[key].is_string(), "fixture lacks `{key}`");
    }
}

#[test]
fn golden_dequantize_matches_gguf_py_bit_for_bit() {
    let g = golden();
    let mut seen = Vec::new();
    for case in g.cases("dequantize") {
        let ty = type_named(&case["type"]);
        let src = hex(&case["src"]);
        let want = hex_f32(&case["expected_f32"]);
        assert_eq!(case["n_elements"].as_u64(), Some(want.len() as u64));
        let got = dequantize_to_vec(ty, &src, want.len()).unwrap();
        assert_bits_eq(&got, &want, &format!("golden dequantize {ty}"));
        seen.push(ty);
    }
    // Every type we claim to decode has golden coverage.
    for id in 0..64 {
        if let Some(ty) = GgmlType::from_id(id).filter(|&t| can_dequantize(t)) {
            assert!(seen.contains(&ty), "no golden dequantize case for {ty}");
        }
    }
}

#[test]
fn golden_quantize_matches_gguf_py_bit_for_bit() {
    let g = golden();
    let mut seen = Vec::new();
    for case in g.cases("quantize") {
        let ty = type_named(&case["type"]);
        let input = hex_f32(&case["input_f32"]);
        let want = hex(&case["expected"]);
        let mut got = Vec::new();
        quantize(ty, &input, &mut got).unwrap();
        assert_eq!(got.len(), want.len(), "{ty}: byte count");
        let bs = ty.type_size();
        for (i, (g, w)) in got.chunks(bs).zip(want.chunks(bs)).enumerate() {
            assert_eq!(
                g,
                w,
                "golden quantize {ty}: block {i} of input {:?}",
                &input[i * ty.block_size()..(i + 1) * ty.block_size()]
            );
        }
        seen.push(ty);
    }
    for id in 0..64 {
        if let Some(ty) = GgmlType::from_id(id).filter(|&t| can_quantize(t)) {
            assert!(seen.contains(&ty), "no golden quantize case for {ty}");
        }
    }
}

/// The checksum the generator records: sum of bits(x_i) * (i + 1), modulo 2^64.
fn checksum(values: &[f32]) -> u64 {
    values.iter().enumerate().fold(0u64, |acc, (i, v)| {
        acc.wrapping_add(u64::from(v.to_bits()).wrapping_mul(i as u64 + 1))
    })
}

#[test]
fn golden_real_model_tensors_match_gguf_py() {
    let assets = nf_testkit::require_assets!();
    let g = golden();
    let real = &g.0["real_model"];
    let path = assets.join(real["file"].as_str().unwrap());
    let file = nf_formats::GgufFile::open(&path).unwrap();
    let tensors = real["tensors"].as_array().unwrap();
    assert!(tensors.len() >= 3);
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let (info, data) = file.tensor(name).unwrap();
        assert_eq!(info.ggml_type, type_named(&t["type"]), "{name}: type");
        let values = dequantize_to_vec(info.ggml_type, data, info.n_elements() as usize).unwrap();
        assert_eq!(Some(values.len() as u64), t["n_elements"].as_u64());
        assert_bits_eq(&values[..16], &hex_f32(&t["first_f32"]), name);
        let want = u64::from_str_radix(t["checksum"].as_str().unwrap(), 16).unwrap();
        assert_eq!(checksum(&values), want, "{name}: checksum of all values");
    }
}

// ---------------------------------------------------------------------------------------
// (c) Round trips: quantize then dequantize random data and bound the error per element.
// ---------------------------------------------------------------------------------------

/// The workspace's test generator, with the distributions this test draws from.
struct Rng(nf_engine::rng::XorShift64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Roughly normal (sum of four uniforms), times a scale between 1e-3 and 1e2, plus an
    /// offset in some blocks so the min/max types see data away from zero too.
    fn block(&mut self, n: usize) -> Vec<f32> {
        let scale = 10f32.powf(self.uniform() * 5.0 - 3.0);
        let offset = if self.uniform() < 0.25 {
            scale * (self.uniform() * 8.0 - 4.0)
        } else {
            0.0
        };
        (0..n)
            .map(|_| {
                let s: f32 = (0..4).map(|_| self.uniform()).sum::<f32>() - 2.0;
                offset + scale * s
            })
            .collect()
    }
}

/// f16 rounds to within half an ulp: a relative 2^-11 for normal values, and 2^-25 absolute
/// in the subnormal range.
fn f16_err(x: f32) -> f32 {
    x.abs() * 2f32.powi(-11) + 2f32.powi(-25)
}

/// The largest error we allow for element `x` of `block` after a round trip through `ty`.
///
/// - F32: exact. F16: half an f16 ulp. BF16: half a bf16 ulp (relative 2^-8).
/// - Q8_0: d = amax / 127; rounding to the nearest quant costs d/2, and storing d as f16 costs
///   up to 127 * f16_err(d): bound 0.5 d + 127 f16_err(d).
/// - Q4_0 / Q5_0: d = amax / 8 (or 16), signed so the absmax maps exactly to the most negative
///   quant; elements beyond 7.5 d (15.5 d) on the other side clamp to 7 d (15 d) and may be off
///   by a full d. Bound: 0.5 d (d when clamped) + 8 (16) f16_err(d).
/// - Q4_1 / Q5_1: d = (max - min) / 15 (31); rounding costs d/2, storing d and min as f16
///   costs 15 (31) f16_err(d) + f16_err(min).
///
/// Each bound also allows a few f32 ulps of the block's magnitude for the f32 arithmetic.
fn bound(ty: GgmlType, block: &[f32], x: f32) -> f32 {
    let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
    let (min, max) = block
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    // The absmax element with its sign, as the symmetric quantizers pick it.
    let signed_max = *block
        .iter()
        .find(|v| v.abs() == amax)
        .expect("non-empty block");
    let slack = amax * 8.0 * f32::EPSILON;
    let symmetric = |levels: f32| {
        let d = amax / levels;
        let clamped = x * signed_max.signum() <= -(levels - 0.5) * d;
        let rounding = if clamped { d } else { 0.5 * d };
        rounding + levels * f16_err(d) + slack
    };
    let asymmetric = |levels: f32| {
        let d = (max - min) / levels;
        0.5 * d + levels * f16_err(d) + f16_err(min) + slack
    };
    match ty {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => f16_err(x),
        GgmlType::BF16 => x.abs() * 2f32.powi(-8),
        GgmlType::Q8_0 => 0.5 * amax / 127.0 + 127.0 * f16_err(amax / 127.0) + slack,
        GgmlType::Q4_0 => symmetric(8.0),
        GgmlType::Q5_0 => symmetric(16.0),
        GgmlType::Q4_1 => asymmetric(15.0),
        GgmlType::Q5_1 => asymmetric(31.0),
        other => panic!("no bound for {other}"),
    }
}

#[test]
fn round_trip_error_within_bounds() {
    let mut rng = Rng(nf_engine::rng::XorShift64::new(1));
    let types = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
    ];
    for ty in types {
        let mut worst = 0f32; // largest error as a fraction of its bound, for the message
        for _ in 0..500 {
            let x = rng.block(32);
            let mut q = Vec::new();
            quantize(ty, &x, &mut q).unwrap();
            assert_eq!(q.len(), ty.bytes_for(32).unwrap() as usize);
            let y = dequantize_to_vec(ty, &q, 32).unwrap();
            let per_block = if ty.block_size() == 32 { 32 } else { 1 };
            for (i, (&xi, &yi)) in x.iter().zip(&y).enumerate() {
                let block = &x[i / per_block * per_block..][..per_block];
                let b = bound(ty, block, xi);
                let err = (xi - yi).abs();
                assert!(
                    err <= b,
                    "{ty}: element {i}: {xi} came back as {yi} (error {err:e} > bound {b:e})"
                );
                if b > 0.0 {
                    worst = worst.max(err / b);
                }
            }
        }
        // The bounds are meant to be tight: some element should come close to its bound.
        if ty != GgmlType::F32 {
            assert!(worst > 0.3, "{ty}: bound is loose (worst ratio {worst})");
        }
    }
}

#[test]
fn round_trip_of_special_blocks() {
    for ty in [
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
    ] {
        // An all-zero block has d = 0 and comes back as exact zeros.
        let mut q = Vec::new();
        quantize(ty, &[0.0; 32], &mut q).unwrap();
        let y = dequantize_to_vec(ty, &q, 32).unwrap();
        assert!(y.iter().all(|&v| v == 0.0), "{ty}: zeros -> {y:?}");

        // A constant block: the symmetric types map it to their extreme quant with
        // d = 0.5 / 8 or 0.5 / 16 (exact in f16) and the min types store it as the min with
        // d = 0, so all come back exact; Q8_0's d = 0.5 / 127 is not an f16, so 127 * d
        // is off by at most 127 rounding errors of d.
        let mut q = Vec::new();
        quantize(ty, &[0.5; 32], &mut q).unwrap();
        let y = dequantize_to_vec(ty, &q, 32).unwrap();
        let tolerance = if ty == GgmlType::Q8_0 {
            127.0 * f16_err(0.5 / 127.0)
        } else {
            0.0
        };
        assert!(
            y.iter().all(|&v| (v - 0.5).abs() <= tolerance),
            "{ty}: 0.5s -> {y:?}"
        );
    }
}

#[test]
fn quantize_appends_to_dst() {
    // The caller's existing bytes are kept, so rows can be written one after another.
    // (Q4_0 stores a constant block exactly: d = c / -8 is exact in f16.)
    let mut dst = vec![0xAA];
    quantize(GgmlType::Q4_0, &[1.0; 32], &mut dst).unwrap();
    quantize(GgmlType::Q4_0, &[2.0; 32], &mut dst).unwrap();
    assert_eq!(dst.len(), 1 + 2 * 18);
    assert_eq!(dst[0], 0xAA);
    let y = dequantize_to_vec(GgmlType::Q4_0, &dst[1..], 64).unwrap();
    assert!(y[..32].iter().all(|&v| v == 1.0) && y[32..].iter().all(|&v| v == 2.0));
}

/// ggml's `ggml_compute_fp32_to_bf16`, transcribed, to hold `half`'s conversion to it.
fn ggml_fp32_to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16; // NaN: keep the payload's top, force quiet
    }
    ((u + (0x7fff + ((u >> 16) & 1))) >> 16) as u16
}

#[test]
fn bf16_rounding_matches_ggml_formula() {
    // Every 16-bit high half with a spread of low halves, including the exact tie 0x8000 and
    // its neighbours, covers both rounding directions, ties to even, overflow and NaNs.
    let lows = [
        0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF, 0x1234, 0xC000,
    ];
    let mut input = Vec::new();
    for high in 0..=0xFFFFu32 {
        input.extend(lows.iter().map(|&low| f32::from_bits((high << 16) | low)));
    }
    let mut out = Vec::new();
    quantize(GgmlType::BF16, &input, &mut out).unwrap();
    for (x, b) in input.iter().zip(out.chunks_exact(2)) {
        let got = u16::from_le_bytes([b[0], b[1]]);
        assert_eq!(got, ggml_fp32_to_bf16(*x), "bf16 of {:#010x}", x.to_bits());
    }
}

#[test]
fn bf16_dequantize_keeps_signalling_nan_bits() {
    // ggml widens bf16 by a plain shift; 0x7F81 is a signalling NaN and must stay one.
    let y = dq(GgmlType::BF16, &[0x81, 0x7F]);
    assert_eq!(y[0].to_bits(), 0x7F81_0000);
}

// ---------------------------------------------------------------------------------------
// Bad requests are errors, not panics.
// ---------------------------------------------------------------------------------------

#[test]
fn partial_blocks_are_refused() {
    let mut dst = vec![0f32; 33];
    let err = dequantize(GgmlType::Q4_0, &[0; 36], &mut dst).unwrap_err();
    assert!(matches!(err, QuantError::NotWholeBlocks { .. }), "{err}");
    assert!(err.to_string().contains("q4_0"), "{err}");

    let err = quantize(GgmlType::Q8_0, &[0.0; 31], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, QuantError::NotWholeBlocks { .. }), "{err}");
}

#[test]
fn wrong_byte_counts_are_refused() {
    let mut dst = vec![0f32; 256];
    for (ty, good) in [(GgmlType::Q4K, 144), (GgmlType::F16, 512)] {
        for len in [0, good - 1, good + 1] {
            let err = dequantize(ty, &vec![0; len], &mut dst).unwrap_err();
            assert_eq!(
                err,
                QuantError::LengthMismatch {
                    ty,
                    n_elements: 256,
                    expected: good,
                    actual: len,
                }
            );
        }
    }
}

#[test]
fn absurd_element_count_fails_before_allocating() {
    // A corrupt header could ask for more elements than memory holds; the length check
    // must come before the output vector is allocated.
    let n = usize::MAX / 64 * 32;
    let err = dequantize_to_vec(GgmlType::Q4_0, &[0; 18], n).unwrap_err();
    assert!(matches!(err, QuantError::LengthMismatch { .. }), "{err}");
}

#[test]
fn unsupported_types_are_refused() {
    let mut dst = vec![0f32; 32];
    for ty in [GgmlType::Q8_1, GgmlType::I32, GgmlType::F64] {
        assert!(!can_dequantize(ty));
        let n = ty.bytes_for(32).unwrap() as usize;
        let err = dequantize(ty, &vec![0; n], &mut dst).unwrap_err();
        assert_eq!(
            err,
            QuantError::Unsupported {
                ty,
                op: "dequantization"
            }
        );
    }
    for ty in [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Q8K, GgmlType::I8] {
        assert!(!can_quantize(ty));
        let err = quantize(ty, &[0.0; 256], &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }
}

#[test]
fn empty_input_is_fine() {
    for id in 0..64 {
        if let Some(ty) = GgmlType::from_id(id).filter(|&t| can_dequantize(t)) {
            assert_eq!(dequantize_to_vec(ty, &[], 0).unwrap(), Vec::<f32>::new());
        }
    }
}

/// Quantization of hand-worked blocks, byte for byte (ggml's `quantize_row_*_ref`).
#[test]
fn hand_quantize_q8_0() {
    // amax 127 makes d = 1 and id = 1 exactly, so each quant is C's roundf(x): halves
    // round away from zero.
    let mut x = [0.0f32; 32];
    x[..8].copy_from_slice(&[127.0, -127.0, 0.5, -0.5, 2.5, 1.49, -126.6, 63.5]);
    let mut q = Vec::new();
    quantize(GgmlType::Q8_0, &x, &mut q).unwrap();
    assert_eq!(&q[..2], &[0x00, 0x3c], "d = 1.0 as f16");
    let qs: Vec<i8> = q[2..10].iter().map(|&b| b as i8).collect();
    assert_eq!(qs, [127, -127, 1, -1, 3, 1, -127, 64]);
    assert!(q[10..].iter().all(|&b| b == 0));
}

#[test]
fn hand_quantize_q4_0() {
    // x = i - 16: the signed absmax is -16, so d = -16 / -8 = 2 and id = 0.5 exactly;
    // q = min(15, trunc(x / 2 + 8.5)), low nibbles from x[j], high from x[j + 16].
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
    let mut q = Vec::new();
    quantize(GgmlType::Q4_0, &x, &mut q).unwrap();
    assert_eq!(q.len(), 18);
    assert_eq!(&q[..2], &[0x00, 0x40], "d = 2.0 as f16");
    // x[0] = -16 → 0, x[16] = 0 → 8; x[1] = -15 → 1, x[17] = 1 → 9; x[15] = -1 → 8,
    // x[31] = 15 → 16 clamped to 15.
    assert_eq!(q[2], 0x80);
    assert_eq!(q[3], 0x91);
    assert_eq!(q[17], 0xf8);
    // Dequantized: (q - 8) * 2, so 15 clamps to 14 and every even x comes back exactly.
    let y = dq(GgmlType::Q4_0, &q);
    assert_eq!((y[0], y[16], y[31]), (-16.0, 0.0, 14.0));
}

#[test]
fn hand_quantize_q4_1() {
    // x = i - 16: min -16, max 15, d = 31/15; q = min(15, trunc((x + 16) / d + 0.5)).
    let x: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
    let mut q = Vec::new();
    quantize(GgmlType::Q4_1, &x, &mut q).unwrap();
    assert_eq!(q.len(), 20);
    assert_eq!(&q[..2], &f16_bytes(31.0 / 15.0), "d");
    assert_eq!(&q[2..4], &[0x00, 0xcc], "m = -16.0 as f16");
    // x[0] → 0, x[16] → trunc(8.24) = 8; x[1] → trunc(0.98) = 0, x[17] → trunc(8.73) = 8;
    // x[15] → trunc(7.76) = 7, x[31] → trunc(15.5) = 15.
    assert_eq!(q[4], 0x80);
    assert_eq!(q[5], 0x80);
    assert_eq!(q[19], 0xf7);
    let y = dq(GgmlType::Q4_1, &q);
    assert_eq!(y[0], -16.0);
    assert!((y[31] - 15.0).abs() < 0.01, "{}", y[31]);
}
