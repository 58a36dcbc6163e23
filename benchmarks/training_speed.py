"""Training throughput and peak memory of tokenizer configs (model + objective + Adam step; no data loading).

    .venv/bin/python benchmarks/training_speed.py [--configs cifar10_sqvae2 cifar10_rsqvae ...] [--steps 20]

For each config under configs/tokenizer/, builds ``HQVAE(**model)`` and times optimiser steps on random images
of the config's size and batch size, in a fresh subprocess per config (peak RSS on CPU, or
``torch.cuda.max_memory_allocated`` with ``--device cuda``). The step is the trainer's: the config's memory
format (``channels_last``, default on) and torch's fused Adam. Reports the median step time over ``--steps``
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
import json, resource, statistics, sys, time, torch
from tokenizer.config import load_config
from tokenizer.model import HQVAE
from tokenizer.train import TrainConfig
from tokenizer.training_utils import fused_optimizer_supported
path, steps, warmup, device, batch, precision = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
torch.set_flush_denormal(True)
config = load_config(TrainConfig, path)
torch.manual_seed(0)
fmt = torch.channels_last if config.channels_last else torch.contiguous_format
model = HQVAE(**config.model).to(device, memory_format=fmt)
batch = batch or config.data.batch_size
size = config.data.image_size
if "urbansound" in path:
    shape = (batch, 1, 80, 344)
else:
    shape = (batch, model.config.in_channels, size, size)
images = torch.rand(shape, device=device).contiguous(memory_format=fmt)
optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.9),
                             fused=fused_optimizer_supported(torch.device(device)))
generator = torch.Generator(device=device).manual_seed(0)
dtype = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
def step():
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype, enabled=dtype is not None):
        out = model(images, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    model.advance_schedule()
for _ in range(warmup):
    step()
if device.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
times = []
for _ in range(steps):
    start = time.perf_counter(); step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
if device.startswith("cuda"):
    peak = torch.cuda.max_memory_allocated()
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
median = statistics.median(times)
print(json.dumps({"batch": batch, "shape": list(shape), "median_step_s": median, "images_per_s": batch / median,
                  "peak_mib": peak / 2**20, "parameters": sum(p.numel() for p in model.parameters())}))
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
    main()
