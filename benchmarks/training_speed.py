"""Training throughput and peak memory of tokenizer configs (model + objective + Adam step; no data loading).

    .venv/bin/python benchmarks/training_speed.py [--configs cifar10_sqvae2 cifar10_rsqvae ...] [--steps 20]

For each config under configs/tokenizer/, builds ``HQVAE(**model)`` and times optimiser steps on random images
of the config's size and batch size, in a fresh subprocess per config (peak RSS on CPU, or
``torch.cuda.max_memory_allocated`` with ``--device cuda``). The step is the trainer's own
(``TokenizerTrainer.train_step``: objective, LPIPS / GAN when configured, accumulation, fused Adam, schedule) on
the config's memory format (``channels_last``, default on). Reports the median step time over ``--steps``
timed steps after ``--warmup`` steps, and images/s = batch / median. Pass ``--batch-size`` to override.
The table is printed and saved as markdown (``--output``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _tables import MarkdownTable

CONFIGS = Path(__file__).parents[1] / "configs" / "tokenizer"

CHILD = r"""
import itertools, json, os, resource, statistics, sys, tempfile, time, torch
path, steps, warmup, device, batch, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
if device == "cpu":
    os.environ["ACCELERATE_USE_CPU"] = "true"
from tokenizer.config import load_config
from tokenizer.train import TokenizerTrainer, TrainConfig
overrides = [f"output_dir={tempfile.mkdtemp()}", "logging.tensorboard=false", f"mixed_precision='{precision}'"]
if batch:
    overrides.append(f"data.batch_size={batch}")
config = load_config(TrainConfig, path, overrides)
batch = config.data.batch_size
size = config.data.image_size
channels = config.model.get("in_channels", 3)
shape = (batch, 1, 80, 344) if "urbansound" in path else (batch, channels, size, size)

class Random(torch.utils.data.Dataset):  # stands in for data: loading is not what is timed
    def __len__(self):
        return batch * config.optimizer.gradient_accumulation_steps
    def __getitem__(self, i):
        return torch.zeros(shape[1:]), 0

trainer = TokenizerTrainer(config, datasets=(Random(), Random(), None))
fmt = torch.channels_last if config.channels_last else torch.contiguous_format
images = torch.rand(shape, device=trainer.accelerator.device).contiguous(memory_format=fmt)
batches = itertools.repeat(images)
trainer.model.train()
def step():  # the trainer's own step: objective, accumulation, clipping, fused Adam, schedule, EMA
    trainer.train_step(batches)
for _ in range(warmup):
    step()
cuda = trainer.accelerator.device.type == "cuda"
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
times = []
for _ in range(steps):
    start = time.perf_counter(); step()
    if cuda:
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
median = statistics.median(times)
print(json.dumps({"batch": batch, "shape": list(shape), "median_step_s": median, "images_per_s": batch / median,
                  "peak_mib": peak / 2**20, "parameters": sum(p.numel() for p in trainer.unwrapped.parameters())}))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--configs",
        nargs="+",
        default=[
            "fashion_mnist_sqvae2",
            "fashion_mnist_vqvae2",
            "cifar10_sqvae2",
            "cifar10_vqvae2",
            "cifar10_rsqvae",
            "cifar10_rqvae",
        ],
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=0, help="0: the config's batch size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["no", "bf16", "fp16"], default="no")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks/training_speed.md"))
    args = parser.parse_args(argv)
    table = MarkdownTable(
        f"device={args.device} precision={args.precision} steps={args.steps} (median), warmup={args.warmup}",
        ["config", "batch", "images/s", "median step (s)", "peak memory (MiB)", "parameters"],
    )
    emit = table.emit
    for name in args.configs:
        command = [
            sys.executable,
            "-c",
            CHILD,
            str(CONFIGS / f"{name}.yaml"),
            str(args.steps),
            str(args.warmup),
        ]
        command += [args.device, str(args.batch_size), args.precision]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            emit(f"| {name} | failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]} |||||")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        emit(
            f"| {name} | {r['batch']} | {r['images_per_s']:.1f} | {r['median_step_s']:.3f} | "
            f"{r['peak_mib']:.0f} | {r['parameters'] / 1e6:.2f}M |"
        )
    table.save(args.output)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
