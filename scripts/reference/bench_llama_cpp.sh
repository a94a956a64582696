#!/usr/bin/env bash
# llama.cpp beside `mambaquant bench` on the same weights (README "Decode on every core"): builds
# llama-bench from the llama.cpp vendored in llama-cpp-python's PyPI sdist, converts a Hugging Face
# checkpoint with llama.cpp's own convert_hf_to_gguf.py (F32 and Q8_0), and times prefill and decode
# at the given thread count (llama-bench: pp = prompt tokens/s, tg = generated tokens/s, medians are
# its averages over -r runs).
#
#   bash scripts/reference/bench_llama_cpp.sh /tmp/m2-130m 2      # checkpoint dir with tokenizer.json, threads
#
# The checkpoint: scripts/reference/make_random_sharded_checkpoint.py --preset mamba2-130m --dtype f32
# --tokenizer Tests/Fixtures/tokenizers/gpt-neox-20b/tokenizer.json --out /tmp/m2-130m (random
# weights: speed only). Needs cmake (pip install cmake) and network access to PyPI once.
set -euo pipefail
model=${1:?checkpoint directory}
threads=${2:-2}
version=0.3.36
work=${LLAMA_CPP_WORK:-/tmp/llama-cpp-bench}
mkdir -p "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -d "$src" ]; then
    url=$(curl -sS "https://pypi.org/pypi/llama-cpp-python/$version/json" |
          python3 -c "import json,sys; print([u['url'] for u in json.load(sys.stdin)['urls'] if u['packagetype'] == 'sdist'][0])")
    curl -sSL -o "$work/sdist.tar.gz" "$url"
    tar xzf "$work/sdist.tar.gz" -C "$work"
fi
if [ ! -x "$src/build/bin/llama-bench" ]; then
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
          -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON
    cmake --build "$src/build" --target llama-bench -j "$(nproc)"
fi
name=$(basename "$model")
# The converter reads neither transformers 5's tagged infinity in Mamba-2's time_step_limit nor
# Mamba-1's time_step_rank "auto"; it only needs the sizes, so a copy spells them as numbers.
cp "$model/config.json" "$work/$name.config.json"
python3 - "$model/config.json" <<'EOF'
import json, sys
p = sys.argv[1]
j = json.load(open(p))
if j.get("time_step_rank") == "auto":
    j["time_step_rank"] = -(-j["hidden_size"] // 16)
if isinstance(j.get("time_step_limit"), list):
    j["time_step_limit"] = [v if isinstance(v, (int, float)) else 1e30 for v in j["time_step_limit"]]
json.dump(j, open(p, "w"), indent=1)
EOF
for t in f32 q8_0; do
    [ -f "$work/$name-$t.gguf" ] || PYTHONPATH="$src/gguf-py" python3 "$src/convert_hf_to_gguf.py" "$model" --outtype "$t" --outfile "$work/$name-$t.gguf"
done
cp "$work/$name.config.json" "$model/config.json"
lscpu | grep "Model name" || true
for t in f32 q8_0; do
    "$src/build/bin/llama-bench" -m "$work/$name-$t.gguf" -t "$threads" -p 512 -n 64 -r 5
done
