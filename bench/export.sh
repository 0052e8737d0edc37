#!/bin/sh
# Export time, size, measured logit deviation and held-out perplexity per format for a short SmolLM2-135M LoRA
# fine-tune (BENCHMARKS.md, "Export"). Usage: bench/export.sh [ASSETS] (default ../shared/assets).
set -e
A=${1:-../shared/assets}
NF=${NF:-target/release/neuralforge}
W=$(mktemp -d /tmp/nf-export-bench.XXXXXX)
export NEURALFORGE_HOME=$W/home
head -c 20000 "$A/corpus/tinystories_valid_sample_30k.txt" > "$W/data.txt"
# Held-out text for the perplexity column: the rest of that sample, never trained on.
tail -c +20001 "$A/corpus/tinystories_valid_sample_30k.txt" > "$W/val.txt"
$NF --threads 2 train --model "$A/gguf/SmolLM2-135M-Instruct.Q4_1.gguf" --data "$W/data.txt" \
    --steps 10 --batch-size 1 --seq-len 64 --lora-rank 8 --eval-every 0 --out "$W/run" 2>&1 | tail -1
for spec in hf: peft: gguf-lora: gguf:f32 gguf:f16 gguf:bf16 gguf:q8_0 gguf:q4_1 gguf:q4_0 ollama:q8_0; do
    f=${spec%%:*}; q=${spec#*:}
    out="$W/out-$f${q:+-$q}"
    case $f in gguf|gguf-lora) out="$out.gguf" ;; esac
    echo "== $f ${q:-}"
    $NF --threads 2 export "$W/run" --format "$f" ${q:+--quant $q} --out "$out" 2>&1 | grep -E "verified|exported|error|note"
    case $f in gguf) $NF --threads 2 eval --model "$out" --data "$W/val.txt" --seq-len 128 --max-windows 16 ;; esac
done
echo "== the fine-tuned run itself, and the base"
$NF --threads 2 eval --model "$W/run" --data "$W/val.txt" --seq-len 128 --max-windows 16
$NF --threads 2 eval --model "$A/gguf/SmolLM2-135M-Instruct.Q4_1.gguf" --data "$W/val.txt" --seq-len 128 --max-windows 16
rm -rf "$W"
