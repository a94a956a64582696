#!/usr/bin/env bash
# Installs the two system libraries mambaquant links (OpenBLAS, LAPACKE) when pkg-config cannot find them.
set -euo pipefail
if pkg-config --exists openblas lapacke 2>/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing libopenblas-dev and liblapacke-dev" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev liblapacke-dev >/dev/null
