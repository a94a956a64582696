#!/usr/bin/env bash
# llama.cpp beside `mambaquant bench` on the same weights (README "Speed", docs/PERFORMANCE.md):
# builds llama-bench from the llama.cpp vendored in llama-cpp-python's PyPI sdist, converts a
# Hugging Face checkpoint with llama.cpp's own convert_hf_to_gguf.py (F32 and Q8_0), and times
# prefill and decode at the given thread count (llama-bench: pp = prompt tokens/s, tg = generated
# tokens/s, medians are its averages over -r runs).
#
#   bash scripts/reference/bench_llama_cpp.sh /tmp/m2-130m 2      # checkpoint dir with tokenizer.json, threads
#   LLAMA_CPP_TYPES=q8_0 bash scripts/reference/bench_llama_cpp.sh /tmp/granite-1b 1   # Q8_0 only
#
# The checkpoint: scripts/reference/make_random_sharded_checkpoint.py --preset mamba2-130m --dtype f32
# --tokenizer Tests/Fixtures/tokenizers/gpt-neox-20b/tokenizer.json --out /tmp/m2-130m (random
# weights: speed only). Needs cmake (pip install cmake) and network access to PyPI once (llama_cpp_build.sh).
set -euo pipefail
model=${1:?checkpoint directory}
threads=${2:-2}
here=$(cd "$(dirname "$0")" && pwd)
src=$(bash "$here/llama_cpp_build.sh")
work=${LLAMA_CPP_WORK:-/tmp/llama-cpp-bench}
name=$(basename "$model")
types=${LLAMA_CPP_TYPES:-f32 q8_0}
for t in $types; do
    [ -f "$work/$name-$t.gguf" ] || python3 "$here/llama_cpp_convert.py" "$src" "$model" "$work/$name-$t.gguf" "$t"
done
lscpu | grep "Model name" || true
for t in $types; do
    "$src/build/bin/llama-bench" -m "$work/$name-$t.gguf" -t "$threads" -p 512 -n 64 -r 5
done
