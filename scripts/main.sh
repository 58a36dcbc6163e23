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
# accelerate launch gives each CPU process one thread unless told otherwise: use every core.
"$VENV/bin/accelerate" launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    --num_cpu_threads_per_process "$(nproc)" \
    tokenizer/train.py --config configs/tokenizer/fashion_mnist_sqvae2.yaml "$@"
echo "[main] done: metrics.json, history.jsonl, validation.jsonl, reconstructions.png and model/ are in the output_dir (default runs/fashion_mnist_sqvae2/)"
