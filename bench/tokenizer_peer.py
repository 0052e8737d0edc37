#!/usr/bin/env python3
"""bench/tokenizer_peer.py - HF `tokenizers` (Python) throughput peer for our Rust tokenizer.

Encodes each corpus file (a) whole, with Tokenizer.encode, and (b) per line
(splitlines(keepends=True)) with Tokenizer.encode_batch, both without special tokens,
serially (TOKENIZERS_PARALLELISM=false) and with the library's default rayon
parallelism. Reports MB/s (1e6 bytes of UTF-8 input per second, best of --reps) and
token counts.
Pins: tokenizers==0.23.3 (PyPI), installed into bench/.venv.
Run:
  bench/.venv/bin/pip install tokenizers==0.23.3
  bench/.venv/bin/python bench/tokenizer_peer.py [--tokenizer JSON] [--reps N] [FILES...]
Defaults: /work/shared/assets/hf-tokenizers/llama3-tokenizer.json and
/work/shared/assets/corpus/*.txt.
"""
import argparse, glob, os, platform, sys, time

import tokenizers
from tokenizers import Tokenizer

A = "/work/shared/assets"
ap = argparse.ArgumentParser()
ap.add_argument("--tokenizer", default=f"{A}/hf-tokenizers/llama3-tokenizer.json")
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("files", nargs="*")
args = ap.parse_args()
files = args.files or sorted(glob.glob(f"{A}/corpus/*.txt"))
tok = Tokenizer.from_file(args.tokenizer)
print(f"tokenizers=={tokenizers.__version__} python=={platform.python_version()} "
      f"cpus={os.cpu_count()} tokenizer={os.path.basename(args.tokenizer)} reps={args.reps}")


def best(fn):
    t = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter(); r = fn(); t = min(t, time.perf_counter() - t0)
    return t, r


def set_par(on):  # read by the Rust side on every call
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if on else "false"


modes = [("whole", False), ("lines", False), ("lines", True)]
tot = {m: [0, 0.0] for m in modes}
print(f"{'file':34} {'MB':>7} {'tokens':>9} {'whole MB/s':>11} {'lines MB/s':>11} {'lines-par MB/s':>15}")
for f in files:
    text = open(f, encoding="utf-8").read()
    nbytes = len(text.encode("utf-8"))
    lines = text.splitlines(keepends=True)
    row = []
    for kind, par in modes:
        set_par(par)
        if kind == "whole":
            t, enc = best(lambda: tok.encode(text, add_special_tokens=False))
            ntok = len(enc.ids)
        else:
            t, encs = best(lambda: tok.encode_batch(lines, add_special_tokens=False))
            nl = sum(len(e.ids) for e in encs)
        tot[(kind, par)][0] += nbytes; tot[(kind, par)][1] += t
        row.append(nbytes / 1e6 / t)
    print(f"{os.path.basename(f):34} {nbytes/1e6:7.3f} {ntok:9d} {row[0]:11.2f} {row[1]:11.2f} {row[2]:15.2f}"
          f"   (per-line tokens: {nl})")
agg = [b / 1e6 / t for b, t in tot.values()]
print(f"{'TOTAL (bytes/sum of times)':34} {tot[modes[0]][0]/1e6:7.3f} {'':9} {agg[0]:11.2f} {agg[1]:11.2f} {agg[2]:15.2f}")
