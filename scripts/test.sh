#!/usr/bin/env bash
# The test suite: lint, format check and the CPU-only, offline pytest run (slow/GPU tests skipped).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HQVAE_SKIP_DATA=1 bash "$ROOT/scripts/setup_env.sh"
VENV="${HQVAE_VENV:-$ROOT/.venv}"
cd "$ROOT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest "$@"
