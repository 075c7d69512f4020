#!/usr/bin/env bash
# The accelerator benchmark with its table kept: runs benchmarks/gpu_bench.py (arguments passed
# on, e.g. --peak-tflops 989 or --smoke) from the repository root and writes what it prints to
# ${OUT:-.}/gpu_bench.md as well as to the terminal; progress goes to ${OUT:-.}/gpu_bench.log.
# Needs jax (with its CUDA plugin), flax, optax and numpy; no TensorFlow. Under 8 minutes.
set -eo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
mkdir -p "$out"
python benchmarks/gpu_bench.py "$@" 2> >(tee "$out/gpu_bench.log" >&2) | tee "$out/gpu_bench.md"
