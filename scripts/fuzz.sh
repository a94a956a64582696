#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/Package.swift, ASan + libFuzzer, linked with lld) and runs
# each on its seed corpus (fuzz/corpus/TARGET) for SECONDS (default 30). A crash, sanitizer report,
# timeout or out-of-memory leaves a reproducer in fuzz/crashes/TARGET/ and the script fails; commit
# a fixed reproducer to Tests/Fixtures/fuzz/TARGET/ so FuzzReproducerTests replays it through the CLI.
#   scripts/fuzz.sh [SECONDS] [TARGET ...]      targets: safetensors config tokenizer stats quantized-config image
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"; shift || true
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(safetensors config tokenizer stats quantized-config image)
(cd fuzz && swift build -c release -Xswiftc -sanitize=fuzzer,address -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld 2>&1 \
    | grep -v "Cannot export local symbol" | tail -3)
bin="fuzz/.build/release/mambaquant-fuzz"
# Leaks inside Foundation (FileManager.contents of an empty file) are not findings here.
export ASAN_OPTIONS="detect_leaks=0"
MQ_FUZZ_QUANTIZED_FIXTURE=$(ls -d "$PWD"/Tests/Fixtures/quantized/*/ | sed 's#/$##' | paste -sd: -)
export MQ_FUZZ_QUANTIZED_FIXTURE
status=0
for t in "${targets[@]}"; do
    mkdir -p "fuzz/crashes/$t" "fuzz/.work/$t"
    echo "== $t: $seconds s"
    maxlen=65536; [ "$t" = stats ] && maxlen=1048576   # a stats file's histograms alone are ~750 KB
    # The working corpus grows in fuzz/.work (ignored); the committed seeds stay as they are.
    if ! MQ_FUZZ_TARGET="$t" "$bin" "fuzz/.work/$t" "fuzz/corpus/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
            -max_len=$maxlen -artifact_prefix="fuzz/crashes/$t/" -print_final_stats=1 2>"fuzz/.work/$t.log"; then
        status=1
        echo "!! $t: finding, see fuzz/crashes/$t/ and fuzz/.work/$t.log"
    fi
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "fuzz/.work/$t.log" | tail -2 || true
done
exit $status
