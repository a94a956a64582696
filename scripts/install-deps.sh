#!/usr/bin/env bash
# Installs the system libraries mambaquant links (OpenBLAS, LAPACKE; libpng and libjpeg for image
# folders) when pkg-config cannot find them.
set -euo pipefail
if pkg-config --exists openblas lapacke libpng libjpeg 2>/dev/null; then exit 0; fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing libopenblas-dev, liblapacke-dev, libpng-dev and libjpeg-dev" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libopenblas-dev liblapacke-dev libpng-dev libjpeg-dev >/dev/null
