#!/usr/bin/env bash
# bench/precision_parity.sh - does bf16 training end where f32 training ends?
#
# Trains the same 200-step LoRA (r16, all projections) on SmolLM2-135M-Instruct's Q4_1 GGUF
# twice, with --precision f32 and --precision bf16, same seed and data, and prints both runs'
# final validation loss and their relative difference (the mixed-precision issue asks for
# at most 2%). Not a timing: other work on the machine does not change the result.
#
# Usage: bench/precision_parity.sh [STEPS]   (from the repository root; ../shared beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-200}
assets=${NF_ASSETS:-../shared/assets}
bin=target/release/neuralforge
cargo build --release -q -p nf-cli
out=$(mktemp -d /tmp/nf-parity.XXXXXX)
for p in f32 bf16; do
  "$bin" --threads 2 train --json --home "$out/home" --out "$out/$p" \
    --model "$assets/gguf/SmolLM2-135M-Instruct.Q4_1.gguf" \
    --data "$assets/corpus/tinystories_sample_197k.txt" \
    --val "$assets/corpus/tinystories_valid_sample_30k.txt" \
    --lora-rank 16 --lora-targets all --steps "$steps" --seq-len 128 --batch-size 2 \
    --lr 1e-3 --warmup 10 --eval-every "$steps" --eval-batches 16 --sample-every 0 \
    --save-every "$steps" --seed 7 --precision "$p" > "$out/$p.ndjson"
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
val = {}
for p in ("f32", "bf16"):
    evals = [e for e in map(json.loads, open(f"{out}/{p}.ndjson")) if e.get("type") == "train.eval"]
    val[p] = evals[-1]["val_loss"]
    print(f"{p:5} final val loss {val[p]:.4f}  ({len(evals)} evals)")
rel = abs(val["bf16"] - val["f32"]) / val["f32"]
print(f"relative difference {100 * rel:.2f}% (limit 2%)")
sys.exit(0 if rel <= 0.02 else 1)
PY
