#!/usr/bin/env bash
# The main job: trains the Fashion-MNIST SQ-VAE-2 tokenizer on this machine's CPU (a few minutes on 2 cores)
# and writes the model, test metrics, training history and a reconstruction grid to runs/fashion_mnist_sqvae2/.
# Extra arguments are config overrides, e.g.: bash scripts/main.sh optimizer.max_steps=500
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
VENV="${HQVAE_VENV:-$ROOT/.venv}"
cd "$ROOT"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
"$VENV/bin/accelerate" launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    tokenizer/train.py --config configs/tokenizer/fashion_mnist_sqvae2.yaml "$@"
echo "[main] results in runs/fashion_mnist_sqvae2/: metrics.json, history.jsonl, reconstructions.png, model/"
