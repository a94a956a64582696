#!/usr/bin/env bash
# The README's test command: installs the system libraries if they are missing, then runs the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
"$(dirname "$0")/install-deps.sh"
swift build --build-tests
swift test --skip-build
