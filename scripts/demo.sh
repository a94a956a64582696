#!/usr/bin/env bash
# The README's main job: installs the system libraries if missing, builds a release binary and runs
# the bundled model (models/bard-mamba, the default of calibration/manifest.json).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
swift build -c release --product mambaquant 2>&1 | grep -v "^\[" || true
BIN=.build/release/mambaquant
MODEL=${MODEL:-$(sed -n 's/.*"default_model": *"\([^"]*\)".*/\1/p' calibration/manifest.json)}
"$BIN" inspect "$MODEL"
echo
"$BIN" generate --model "$MODEL" --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 1
