#!/usr/bin/env bash
# The README's main job on the bundled model (models/bard-mamba, the default of
# calibration/manifest.json) and corpus: installs the system libraries if missing, builds a release
# binary, then calibrate -> quantize (MambaQuant W8A8) -> generate with the int8 model, and the
# compare report of all four methods at w8a8, w4a8 and w8a6 against float32; the two profiles
# (fast: the paper's static scales; accurate: llama.cpp Q8_0's accuracy) side by side with speed;
# --profile compact and a mixed 4/8-bit checkpoint at llama.cpp Q4_0's size on the positions
# llama-perplexity scores; w4a8 with GPTQ against round-to-nearest for three methods; then the same four-method report for
# the bundled Mamba-2 (models/bard-mamba2) and the bundled hybrid (models/bard-hybrid: Mamba-2,
# attention and MLP layers); then the bundled Vision Mamba (models/mnist-vim):
# calibrate on images, quantize, classify with the int8 model, and its four-method report.
# Outputs go to demo-output/ (report.md, report.svg, report-profiles.md, report-w4.md,
# report-sizes.md, report-mamba2.md, report-mamba2.svg, report-hybrid.md, report-hybrid.svg, report-vim.md, report-vim.svg, the stats files and the quantized
# checkpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
echo "building (release)..." >&2
swift build -c release --product mambaquant 2>&1 | grep -Ev "^\[|^Building|^Compiling|^Write|^Planning" || true
BIN=.build/release/mambaquant
MODEL=$(sed -n 's/.*"default_model": *"\([^"]*\)".*/\1/p' calibration/manifest.json)
OUT=demo-output
mkdir -p "$OUT"

("$BIN" inspect "$MODEL" | head -4) || true   # head closes the pipe early: not an error
echo
"$BIN" calibrate --model "$MODEL" --out "$OUT/stats.safetensors"
"$BIN" quantize --model "$MODEL" --stats "$OUT/stats.safetensors" --method mambaquant --bits w8a8 --profile fast --out "$OUT/bard-mamba-w8a8"
"$BIN" quantize --model "$MODEL" --stats "$OUT/stats.safetensors" --method mambaquant --bits w8a8 --profile accurate --out "$OUT/bard-mamba-w8a8-accurate"
echo
echo "== float32 =="
"$BIN" generate --model "$MODEL" --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-k 40 --seed 1
echo
echo "== int8 (MambaQuant W8A8) =="
"$BIN" generate --model "$OUT/bard-mamba-w8a8" --prompt "ROMEO:" --max-new-tokens 200 --temperature 0.8 --top-k 40 --seed 1
echo
"$BIN" compare --out "$OUT/report.md" --plot "$OUT/report.svg"
cat "$OUT/report.md"
echo
echo "== the two profiles: fast and accurate ==" >&2
"$BIN" compare --quantized "$OUT/bard-mamba-w8a8" --quantized "$OUT/bard-mamba-w8a8-accurate" --task-items 0 --out "$OUT/report-profiles.md"
cat "$OUT/report-profiles.md"
echo
echo "== size against accuracy: --profile compact, and mixed 4/8-bit widths at llama.cpp Q4_0's size (README) ==" >&2
"$BIN" quantize --model "$MODEL" --stats "$OUT/stats.safetensors" --bits w8a8 --profile compact --out "$OUT/bard-mamba-w8a8-compact"
"$BIN" quantize --model "$MODEL" --stats "$OUT/stats.safetensors" --bits-per-weight 5.29 --act-scale dynamic --keep-float ssm_inputs \
    --out "$OUT/bard-mamba-mixed-5.29"
"$BIN" inspect "$OUT/bard-mamba-w8a8-compact" | sed -n 4p
"$BIN" inspect "$OUT/bard-mamba-mixed-5.29" | sed -n 4p
"$BIN" compare --quantized "$OUT/bard-mamba-w8a8-compact" --quantized "$OUT/bard-mamba-mixed-5.29" --data calibration/shakespeare-test.txt \
    --score-from 256 --task-items 0 --no-speed --out "$OUT/report-sizes.md"
cat "$OUT/report-sizes.md"
echo
echo "== 4-bit weights: GPTQ against round-to-nearest ==" >&2
"$BIN" compare --methods rtn,hadamard,mambaquant --bits w4a8 --weight-rounding rtn,gptq --task-items 0 --no-speed --out "$OUT/report-w4.md"
cat "$OUT/report-w4.md"
echo
echo "== the bundled Mamba-2 (models/bard-mamba2) ==" >&2
"$BIN" compare --model models/bard-mamba2 --out "$OUT/report-mamba2.md" --plot "$OUT/report-mamba2.svg"
cat "$OUT/report-mamba2.md"
echo
echo "== the bundled hybrid (models/bard-hybrid: Mamba-2, attention and MLP layers) ==" >&2
"$BIN" compare --model models/bard-hybrid --bits w8a8,w4a8 --out "$OUT/report-hybrid.md" --plot "$OUT/report-hybrid.svg"
cat "$OUT/report-hybrid.md"
echo
echo "== the bundled Vision Mamba (models/mnist-vim) ==" >&2
"$BIN" calibrate --model models/mnist-vim --out "$OUT/stats-vim.safetensors"
"$BIN" quantize --model models/mnist-vim --stats "$OUT/stats-vim.safetensors" --method mambaquant --bits w8a8 --out "$OUT/mnist-vim-w8a8"
"$BIN" classify --model "$OUT/mnist-vim-w8a8" --images calibration/mnist-test.safetensors --show 5
# The same model on a folder of PNG files (Vim's eval transform; README, "Vision Mamba").
"$BIN" classify --model "$OUT/mnist-vim-w8a8" --images calibration/mnist-test-png --show 3
"$BIN" compare --model models/mnist-vim --out "$OUT/report-vim.md" --plot "$OUT/report-vim.svg"
cat "$OUT/report-vim.md"
echo
echo "reports: $OUT/report.md, $OUT/report-profiles.md, $OUT/report-w4.md, $OUT/report-mamba2.md, $OUT/report-hybrid.md and $OUT/report-vim.md, plots: $OUT/report.svg, $OUT/report-mamba2.svg, $OUT/report-hybrid.svg and $OUT/report-vim.svg" >&2
