#!/usr/bin/env bash
# Builds llama.cpp from the copy vendored in llama-cpp-python's PyPI sdist (GGML_NATIVE, the tools
# the README's comparisons use) and prints its source directory. Run by bench_llama_cpp.sh and
# llama_cpp_kl.sh; needs cmake (pip install cmake) and PyPI once.
set -euo pipefail
version=0.3.36
work=${LLAMA_CPP_WORK:-/tmp/llama-cpp-bench}
mkdir -p "$work"
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
if [ ! -d "$src" ]; then
    # The simple index (PEP 503) lists the sdist; the JSON API was not always reachable here.
    url=$(curl -sS "https://pypi.org/simple/llama-cpp-python/" |
          grep -o "https://files.pythonhosted.org/[^\"#]*llama_cpp_python-$version.tar.gz" | head -1)
    curl -sSL -o "$work/sdist.tar.gz" "$url"
    tar xzf "$work/sdist.tar.gz" -C "$work"
fi
if [ ! -x "$src/build/bin/llama-perplexity" ]; then
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
          -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON >&2
    cmake --build "$src/build" --target llama-bench llama-quantize llama-perplexity -j "$(nproc)" >&2
fi
echo "$src"
