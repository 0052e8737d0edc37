#!/usr/bin/env bash
# bench/llamacpp.sh - llama.cpp peer benchmark (CPU only), built from PyPI only (no GitHub).
#
# Pins: llama-cpp-python==0.3.36 sdist (PyPI), whose vendor/llama.cpp is
#       ggml-org/llama.cpp@0c1e57098 (per the sdist's CHANGELOG.md).
#       cmake + ninja come from PyPI wheels into bench/.venv (latest at install time).
# Builds: llama-bench, llama-tokenize, llama-simple (static, -DGGML_NATIVE=ON, OpenMP
#         with fallback to OFF) into bench/out/bin/. Idempotent: skipped if
#         bench/out/bin/llama-bench exists (rm -rf bench/out to rebuild).
# Usage:
#   bench/llamacpp.sh build
#   bench/llamacpp.sh run MODEL.gguf [THREADS...]    # default threads: 1 2
#     -> llama-bench -m MODEL -p 128 -n 64 -r 3 -t T -o md, per thread count
#   env: JOBS (default 2), LLAMA_BENCH_ARGS (extra args for llama-bench), PYTHON (default python3)
set -euo pipefail

LCP_VERSION=0.3.36
LLAMA_COMMIT=0c1e57098
BENCH="$(cd "$(dirname "$0")" && pwd)"
OUT="$BENCH/out"; VENV="$BENCH/.venv"; BIN="$OUT/bin"
JOBS="${JOBS:-2}"
TARGETS=(llama-bench llama-tokenize llama-simple)

build() {
  if [[ -x "$BIN/llama-bench" ]]; then echo "[llamacpp] already built: $BIN/llama-bench"; return; fi
  local t0=$SECONDS
  [[ -x "$VENV/bin/python" ]] || "${PYTHON:-python3}" -m venv "$VENV"
  # scikit-build-core lets pip read the sdist's metadata without build isolation;
  # otherwise `--no-binary :all:` would try to build cmake itself from source.
  "$VENV/bin/pip" install -q cmake ninja scikit-build-core
  local tgz="$OUT/dl/llama_cpp_python-$LCP_VERSION.tar.gz"
  if [[ ! -f "$tgz" ]]; then
    "$VENV/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation \
      -d "$OUT/dl" "llama-cpp-python==$LCP_VERSION"
  fi
  local src="$OUT/src/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
  [[ -f "$src/CMakeLists.txt" ]] || { mkdir -p "$OUT/src"; tar -xzf "$tgz" -C "$OUT/src"; }
  export PATH="$VENV/bin:$PATH"
  local common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_EXAMPLES=ON -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
    # no .git in the sdist; without these, build-info would pick up the enclosing repo's commit
    -DLLAMA_BUILD_COMMIT="$LLAMA_COMMIT" -DLLAMA_BUILD_NUMBER=0)
  local omp
  for omp in ON OFF; do
    rm -rf "$OUT/build"
    if cmake -S "$src" -B "$OUT/build" "${common[@]}" -DGGML_OPENMP=$omp \
       && cmake --build "$OUT/build" -j "$JOBS" --target "${TARGETS[@]}"; then break; fi
    [[ $omp == OFF ]] && { echo "[llamacpp] build failed" >&2; exit 1; }
    echo "[llamacpp] build with GGML_OPENMP=ON failed; retrying with OFF" >&2
  done
  mkdir -p "$BIN"
  for t in "${TARGETS[@]}"; do cp "$OUT/build/bin/$t" "$BIN/"; done
  echo "llama-cpp-python==$LCP_VERSION llama.cpp@$LLAMA_COMMIT GGML_OPENMP=$omp" > "$BIN/VERSION"
  echo "[llamacpp] built ${TARGETS[*]} in $((SECONDS - t0))s -> $BIN (GGML_OPENMP=$omp)"
}

run() {
  local model="${1:?usage: $0 run MODEL.gguf [THREADS...]}"; shift
  local threads=("$@"); [[ ${#threads[@]} -gt 0 ]] || threads=(1 2)
  build
  echo "[llamacpp] $(cat "$BIN/VERSION")"
  "$BIN/llama-bench" --version 2>&1 || true
  echo "[llamacpp] cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-) nproc=$(nproc)"
  for t in "${threads[@]}"; do
    # shellcheck disable=SC2086
    "$BIN/llama-bench" -m "$model" -p 128 -n 64 -r 3 -t "$t" -o md ${LLAMA_BENCH_ARGS:-}
  done
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
