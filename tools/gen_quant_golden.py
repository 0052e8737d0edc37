#!/usr/bin/env python3
"""Generates crates/nf-formats/tests/fixtures/quant_golden.json, the golden data that
crates/nf-formats/tests/quant.rs holds our ggml block (de)quantization to, bit for bit.

The reference is llama.cpp's own Python package, gguf-py (`gguf.quants`), whose numpy code
mirrors ggml's `dequantize_row_*` and `quantize_row_*_ref`. Versions used for the committed
fixture (also recorded inside it):

    gguf 0.19.0, numpy 2.4.6, Python 3.11.7

To regenerate (torch is not needed):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install gguf==0.19.0 numpy==2.4.6
    /tmp/venv/bin/python tools/gen_quant_golden.py [--assets ../shared/assets]

The output is deterministic for a given seed and package versions.

What it writes:
- "dequantize": for every type we decode, a few random but valid blocks (random bytes with
  the f16/f32 scale fields set to finite values of varied magnitude, including subnormal f16),
  plus a block of all-zero and one of all-one payload bits, and gguf-py's f32 output. gguf-py
  has no Q8_K, so Q8_K's expected values are numpy's `d * q` in f32 (ggml's formula).
- "quantize": inputs chosen to hit the quantizers' corners (all-zero and constant blocks,
  exact rounding ties, sign of the absolute maximum, subnormal scales) and gguf-py's bytes.
- "real_model": when the shared assets are present, gguf-py's dequantization of a few tensors
  of the SmolLM2 Q4_1 model, as a position-weighted checksum plus the first values.
"""

import argparse
import json
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

SEED = 20250101
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "crates/nf-formats/tests/fixtures/quant_golden.json"

# ggml's printed names, which GgmlType::name() also uses.
NAMES = {
    T.F32: "f32", T.F16: "f16", T.BF16: "bf16",
    T.Q4_0: "q4_0", T.Q4_1: "q4_1", T.Q5_0: "q5_0", T.Q5_1: "q5_1", T.Q8_0: "q8_0",
    T.Q2_K: "q2_K", T.Q3_K: "q3_K", T.Q4_K: "q4_K", T.Q5_K: "q5_K", T.Q6_K: "q6_K",
    T.Q8_K: "q8_K",
}

# Byte offsets of the f16 scale fields in each block (see ggml's block_* structs).
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}


def f32_hex(a: np.ndarray) -> str:
    return np.ascontiguousarray(a, dtype="<f4").tobytes().hex()


def random_scale(rng: np.random.Generator) -> float:
    """A finite scale of random sign whose magnitude spans f16's subnormals to 16."""
    return float(rng.choice([-1.0, 1.0]) * 2.0 ** rng.uniform(-20, 4))


def random_blocks(rng: np.random.Generator, qtype: T, n_random: int) -> np.ndarray:
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_random + 2, type_size), dtype=np.uint8)
    blocks[n_random, :] = 0x00
    blocks[n_random + 1, :] = 0xFF
    for block in blocks:
        if qtype == T.Q8_K:
            block[0:4] = np.frombuffer(np.float32(random_scale(rng)).tobytes(), np.uint8)
            # bsums are ignored by dequantization; keep them consistent anyway.
            qs = block[4:260].view(np.int8).astype(np.int16)
            block[260:292] = qs.reshape(16, 16).sum(axis=1).astype("<i2").view(np.uint8)
        else:
            for at in F16_FIELDS[qtype]:
                block[at:at + 2] = np.frombuffer(np.float16(random_scale(rng)).tobytes(), np.uint8)
    return blocks


def random_floats(rng: np.random.Generator, qtype: T, n: int) -> np.ndarray:
    """Random bit patterns of the element type, restricted to finite values."""
    if qtype == T.F32:
        bits = rng.integers(0, 2**32, size=n, dtype=np.uint32)
        bits = bits[(bits & 0x7F800000) != 0x7F800000]
        return bits.astype("<u4").view(np.uint8)
    bits = rng.integers(0, 2**16, size=n, dtype=np.uint16)
    exp_mask = 0x7C00 if qtype == T.F16 else 0x7F80
    bits = bits[(bits & exp_mask) != exp_mask]
    return bits.astype("<u2").view(np.uint8)


def dequantize_cases(rng: np.random.Generator) -> list:
    cases = []
    for qtype in NAMES:
        if qtype in (T.F32, T.F16, T.BF16):
            src = random_floats(rng, qtype, 64)
            reference = "gguf.quants.dequantize"
            expected = dequantize(src, qtype)
        else:
            n_random = 3 if GGML_QUANT_SIZES[qtype][0] == 256 else 6
            blocks = random_blocks(rng, qtype, n_random)
            src = blocks.reshape(-1)
            if qtype == T.Q8_K:
                reference = "numpy: d * qs (gguf-py has no Q8_K)"
                d = blocks[:, 0:4].copy().view("<f4")
                qs = blocks[:, 4:260].view(np.int8).astype(np.float32)
                expected = (d * qs).reshape(-1)
            else:
                reference = "gguf.quants.dequantize"
                expected = dequantize(src, qtype)
        expected = np.asarray(expected, dtype=np.float32).reshape(-1)
        assert np.isfinite(expected).all(), NAMES[qtype]
        cases.append({
            "type": NAMES[qtype],
            "reference": reference,
            "n_elements": int(expected.size),
            "src": src.tobytes().hex(),
            "expected_f32": f32_hex(expected),
        })
    return cases


def block_quant_inputs(rng: np.random.Generator) -> np.ndarray:
    """32-element blocks that exercise the quantizers' corners."""
    ties = np.arange(-16, 16, dtype=np.float32) + 0.5
    ties[0] = 127.0  # amax 127 makes Q8_0's d and id exactly 1, so x.5 are exact ties
    ties[1] = -8.0  # ... and within the Q4/Q5 ranges, integer-and-a-half steps
    blocks = [
        *rng.normal(0, 1, size=(4, 32)),
        *rng.normal(0, 0.02, size=(2, 32)),  # like a model's weights
        rng.uniform(-1, 1, 32),
        np.zeros(32),  # d = 0: every quant on the zero point
        np.full(32, 0.37),  # Q4_1/Q5_1 with max == min
        np.full(32, -2.5),
        rng.uniform(0.1, 3, 32),  # one sign only
        -rng.uniform(0.1, 3, 32),
        np.where(np.arange(32) == 7, 5.0, rng.normal(0, 0.01, 32)),  # one outlier
        ties,
        np.concatenate([[-3.0], rng.uniform(-2, 2, 30), [3.0]]),  # |max| tie: first wins
        np.concatenate([[3.0], rng.uniform(-2, 2, 30), [-3.0]]),
        rng.normal(0, 1e-6, 32),  # scales in f16's subnormal range
        rng.normal(0, 1000, 32),
        np.concatenate([np.zeros(16), rng.normal(0, 1, 16)]),
    ]
    return np.concatenate(blocks).astype(np.float32)


def float_quant_inputs(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Values around f16/bf16 rounding corners: exact ties, overflow, subnormals, signed zero."""
    u = np.uint32
    bits = [
        0x3F800000, 0x80000000, 0x00000000,
        0x3F801000, 0x3F803000,  # f16 ties (1 + 2^-11, 1 + 3 * 2^-11): to even
        0x3F808000, 0x3F818000,  # bf16 ties: to even
        0x3F808001, 0x3F807FFF,  # just above / below a bf16 tie
        0x477FF000, 0x477FEFFF,  # f16: 65520 rounds to inf, just below stays finite
        0x7F7FFFFF, 0xFF7FFFFF,  # f32 max: inf in f16 and bf16
        0x7F800000, 0xFF800000,  # +-inf
        0x33800000, 0x33000000, 0x33000001,  # f16 subnormal min, its half (tie to 0), above
        0x00000001, 0x807FFFFF,  # f32 subnormals
    ]
    if qtype == T.BF16:
        bits += [0x7FC00000, 0x7F800001, 0xFFA00000]  # NaNs: bf16 quiets them
    specials = np.array(bits, dtype=u).view(np.float32)
    normal = rng.normal(0, 1, 40).astype(np.float32)
    wide = (rng.choice([-1, 1], 40) * 2.0 ** rng.uniform(-30, 20, 40)).astype(np.float32)
    return np.concatenate([specials, normal, wide]).astype(np.float32)


def quantize_cases(rng: np.random.Generator) -> list:
    cases = []
    block_inputs = block_quant_inputs(rng)
    for qtype in (T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        x = block_inputs if qtype not in (T.F32, T.F16, T.BF16) else float_quant_inputs(rng, qtype)
        with np.errstate(over="ignore", invalid="ignore"):
            out = quantize(x, qtype)
        cases.append({
            "type": NAMES[qtype],
            "reference": "gguf.quants.quantize",
            "input_f32": f32_hex(x),
            "expected": np.ascontiguousarray(out).view(np.uint8).tobytes().hex(),
        })
    return cases


def checksum(values: np.ndarray) -> int:
    """sum over i of bits(values[i]) * (i + 1), modulo 2^64: position- and bit-sensitive,
    and cheap in numpy and in Rust."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4").astype(np.uint64)
    weights = np.arange(1, bits.size + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * weights, dtype=np.uint64))


def real_model_checks(assets: Path) -> dict | None:
    rel = "gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
    path = assets / rel
    if not path.is_file():
        print(f"note: {path} not found; skipping real-model checks", file=sys.stderr)
        return None
    reader = GGUFReader(path)
    wanted = ["token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight",
              "blk.29.ffn_down.weight", "blk.17.attn_v.weight"]
    tensors = []
    for t in reader.tensors:
        if t.name not in wanted:
            continue
        values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(-1)
        tensors.append({
            "name": t.name,
            "type": NAMES[t.tensor_type],
            "n_elements": int(values.size),
            "checksum": f"{checksum(values):016x}",
            "first_f32": f32_hex(values[:16]),
        })
    return {"file": rel, "tensors": tensors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--assets", type=Path, default=ROOT.parent / "shared/assets")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    rng = np.random.default_rng(SEED)
    golden = {
        "about": "Golden ggml (de)quantization data for crates/nf-formats/tests/quant.rs. "
                 "Hex strings are little-endian bytes; *_f32 fields are f32 arrays.",
        "generator": "tools/gen_quant_golden.py",
        "gguf": version("gguf"),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "seed": SEED,
        "dequantize": dequantize_cases(rng),
        "quantize": quantize_cases(rng),
    }
    real = real_model_checks(args.assets)
    if real is not None:
        golden["real_model"] = real
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
