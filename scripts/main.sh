#!/usr/bin/env bash
# The main job: the whole two-stage system on Fashion-MNIST on this machine (CPU, ~20 minutes on 2 idle cores):
# SQ-VAE-2 tokenizer -> codes -> Muse priors -> HQVAEPipeline -> samples -> evaluation -> runs/main_sqvae2/report/.
# Flags go to scripts/main_job.py: --model rsqvae (RSQ-VAE + RQ-Transformer), --scale 0.1 (shorter budgets), --output DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
VENV="${HQVAE_VENV:-$ROOT/.venv}"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
# One process using every core (the stages run in-process; see scripts/main_job.py for the stage commands).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"
"$VENV/bin/python" scripts/main_job.py "$@"
