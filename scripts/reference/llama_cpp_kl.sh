#!/usr/bin/env bash
# llama.cpp's size and KL from float on the positions `mambaquant compare --score-from 256` scores
# (README "Size against accuracy"): the first 32,768 bytes of the text, windows of 512, the second
# half of each window. Converts the float checkpoint with llama.cpp's own converter
# (llama_cpp_convert.py), quantizes it with llama-quantize, and prints each type's file size and
# llama-perplexity --kl-divergence summary.
#
#   bash scripts/reference/llama_cpp_kl.sh models/bard-hybrid calibration/shakespeare-test.txt Q8_0 Q4_K_M
#
# A byte-vocabulary file is 64 bytes larger than its tensors need (the one merge the converter adds);
# the README's sizes subtract it.
set -euo pipefail
model=${1:?checkpoint directory}
text=${2:?text file}
shift 2
types=${*:-Q8_0 Q4_K_M Q4_0}
here=$(cd "$(dirname "$0")" && pwd)
src=$(bash "$here/llama_cpp_build.sh")
work=${LLAMA_CPP_WORK:-/tmp/llama-cpp-bench}
name=$(basename "$model")
bin="$src/build/bin"
head -c 32768 "$text" > "$work/$name.text"
python3 "$here/llama_cpp_convert.py" "$src" "$model" "$work/$name-f32.gguf" f32 >&2
"$bin/llama-perplexity" -m "$work/$name-f32.gguf" -f "$work/$name.text" -c 512 \
    --kl-divergence-base "$work/$name.kld" > "$work/$name-f32.log" 2>&1
grep "Final estimate" "$work/$name-f32.log"
lscpu | grep "Model name" || true
for t in $types; do
    "$bin/llama-quantize" "$work/$name-f32.gguf" "$work/$name-$t.gguf" "$t" > /dev/null 2>&1
    "$bin/llama-perplexity" -m "$work/$name-$t.gguf" -f "$work/$name.text" -c 512 \
        --kl-divergence-base "$work/$name.kld" --kl-divergence > "$work/$name-$t.log" 2>&1
    echo "$t: $(stat -c %s "$work/$name-$t.gguf") bytes"
    grep -E "Mean    KLD|Same top p" "$work/$name-$t.log"
done
