#!/usr/bin/env bash
# bench/run_all.sh - every number in BENCHMARKS.md, in one run, ours and the peers' side by
# side (the machines are shared and noisy: compare ratios within one run, not across runs).
#
# Needs: target/release/neuralforge (cargo build --release -p nf-cli), bench/llamacpp.sh
# build (llama.cpp peer), and for the training peer PyTorch + transformers + peft on
# PYTHONPATH (e.g. pip install --target /tmp/pyref/site torch transformers peft).
# Usage: bench/run_all.sh [section...]   sections: peak infer tok scaling ingest train
# (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
NF=target/release/neuralforge
A=../shared/assets
SMOL=$A/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
sections=("${@:-peak infer tok scaling ingest train}")
sections=(${sections[*]})
rss() { /usr/bin/time -f "peak_rss_mib %M" "$@" 2>&1 | awk '/peak_rss_mib/ {printf "peak RSS %.0f MiB\n", $2/1024; next} {print}'; }
has() { [[ " ${sections[*]} " == *" $1 "* ]]; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
if has peak; then
  echo "## f32 GEMM peak"
  for t in 1 2; do $NF --threads $t bench peak --size 1024 --reps 5; done
fi
if has infer; then
  echo "## inference: SmolLM2-135M Q4_1, pp128 / tg64"
  for t in 1 2; do $NF --threads $t bench model --model $SMOL --prompt-tokens 128 --gen-tokens 64 --reps 3; done
  bench/llamacpp.sh run $SMOL 1 2
fi
if has tok; then
  echo "## tokenizer MB/s on the corpus"
  for v in llama-bpe llama-spm; do
    for t in 1 2; do
      $NF --threads $t bench tokenizer --tokenizer $A/llamacpp-vocab/ggml-vocab-$v.gguf $A/corpus/*.txt --reps 3
    done
  done
  python3 bench/tokenizer_peer.py --reps 3 || echo "(the tokenizer peer needs the tokenizers package on PYTHONPATH)"
fi
if has scaling; then
  echo "## tokenizer cost against input size, 1 kB ... 100 MB, one thread"
  for v in llama-bpe llama-spm; do
    $NF --threads 1 bench tokenizer --tokenizer $A/llamacpp-vocab/ggml-vocab-$v.gguf $A/corpus/*.txt --scaling 100
  done
fi
if has ingest; then
  echo "## document extraction, per file"
  $NF --threads 1 bench ingest $A/docs/* examples/handbook/*.pdf examples/handbook/*.docx --reps 3
fi
if has train; then
  echo "## training: Stories110M dims, random init, full fine-tuning, seq 256, 2 threads"
  for b in 1 4; do
    rss $NF --threads 2 bench train --batch-size $b --seq-len 256 --steps 3
    python3 bench/train_peer.py --workload stories110m --threads 2 --batch $b --seq 256 --steps 3 --mode fp32 2>&1 >/dev/null | tail -2
  done
  echo "## training: LoRA r16 all projections, SmolLM2-135M, seq 256, 2 threads"
  rss $NF --threads 2 bench train --model $SMOL --lora-rank 16 --batch-size 1 --seq-len 256 --steps 3
  python3 bench/train_peer.py --workload smollm2-lora --threads 2 --batch 1 --seq 256 --steps 3 --mode fp32 2>&1 >/dev/null | tail -2
  echo "## training: stories260K LoRA (the quick-start run), seq 256, batch 4, 2 threads"
  $NF --threads 2 bench train --model $A/llama2c/stories260K.bin --tokenizer $A/llama2c/tok512.bin --lora-rank 8 --batch-size 4 --seq-len 256 --steps 5
fi
