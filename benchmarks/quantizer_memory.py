"""Peak memory and time of one SQ / VQ forward + backward against codebook size and token count.

    .venv/bin/python benchmarks/quantizer_memory.py [--codebook-sizes 512 4096 16384] [--tokens 8192 32768]

Each measurement runs in a fresh subprocess and reports the growth of the peak resident set size over the
process's baseline (CPU), or ``torch.cuda.max_memory_allocated`` with ``--device cuda``. ``sq`` is the fused
StochasticQuantizer (relaxed Gumbel-softmax, training mode), ``sq_naive`` the plain-autograd definition
(matmul distances, log-softmax, softmax and entropy as ordinary ops), ``vq`` the VectorQuantizer with EMA;
``fsq`` (levels of 8, then 4 and 2, whose product is K), ``lfq`` (log2 K signs, with its entropy penalty over
all K codes), ``gumbel`` (relaxed, training mode) and ``pq`` (the fewest groups M >= 2 with K an M-th power,
EMA codebooks) from tokenizer/quantizer_family.py (K a power of 2).
d = 64 throughout. Peak: the first step; time: the median of the next three.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _tables import MarkdownTable

KINDS = ["sq", "sq_naive", "vq", "fsq", "lfq", "gumbel", "pq"]

CHILD = r"""
import json, resource, sys, time, torch
from tokenizer.quantizers import StochasticQuantizer, VectorQuantizer, squared_distances, gumbel_noise
from tokenizer.quantizer_family import FiniteScalarQuantizer, GumbelQuantizer, LookupFreeQuantizer, ProductQuantizer
kind, k, n, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
z = torch.randn(n, 64, device=device, requires_grad=True)
def fsq_levels(k):
    levels = []
    while k > 1:
        level = 8 if k % 8 == 0 and k != 16 else 4  # FSQ needs every level >= 3
        if k % level:
            raise ValueError(f"FSQ levels need K = 4^a 8^b here, got {k}")
        levels.append(level); k //= level
    return levels
layer = {
    "sq": lambda: StochasticQuantizer(k, 64, init_variance=4.0), "sq_naive": lambda: StochasticQuantizer(k, 64, init_variance=4.0),
    "vq": lambda: VectorQuantizer(k, 64), "fsq": lambda: FiniteScalarQuantizer(fsq_levels(k), 64),
    "lfq": lambda: LookupFreeQuantizer(k, 64), "gumbel": lambda: GumbelQuantizer(k, 64),
    "pq": lambda: ProductQuantizer(k, 64, groups=next(m for m in range(2, 7) if round(k ** (1 / m)) ** m == k)),
}[kind]().to(device)
def step():
    if kind in ("fsq", "lfq", "gumbel"):
        out = layer(z, mode="relaxed", temperature=0.5)
        terms = [t for t in (out.kl_loss, out.commitment_loss, out.codebook_loss) if t is not None]
        loss = out.quantized.square().sum() + sum(terms)
    elif kind == "pq":
        out = layer(z)
        loss = (z + (out.quantized - z).detach()).square().sum()
    elif kind == "sq":
        out = layer(z, mode="relaxed", temperature=0.5)
        loss = out.quantized.square().sum() + out.entropy.sum()
    elif kind == "sq_naive":
        # the same maths in plain autograd (matmul distances; no (N, K, d) tensor)
        codebook = layer.codebook.weight
        logits = -squared_distances(z, codebook) / (2 * layer.log_variance.exp())
        log_probs = torch.log_softmax(logits, -1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        weights = torch.softmax((logits + gumbel_noise(logits)) / 0.5, -1)
        loss = (weights @ codebook).square().sum() + entropy.sum()
    else:
        out = layer(z)
        loss = (z + (out.quantized - z).detach()).square().sum()
    loss.backward()
# peak: the first step, against the baseline after set-up (ru_maxrss is a lifetime maximum)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
step()
if device == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
times = []
for _ in range(3):
    start = time.perf_counter(); step()
    if device == "cuda":
        torch.cuda.synchronize()
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": sorted(times)[1], "peak_bytes": peak}))
"""


def measure(kind: str, codebook_size: int, tokens: int, device: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(codebook_size), str(tokens), device],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or [
            f"exit code {proc.returncode} (killed: out of memory?)"
        ]
        return {"error": tail[0][:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codebook-sizes", type=int, nargs="+", default=[512, 4096, 16384])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192])
    parser.add_argument(
        "--kinds",
        nargs="+",
        default=KINDS,
        choices=KINDS,
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks/quantizer_memory.md"))
    args = parser.parse_args(argv)
    table = MarkdownTable(
        f"d = 64, device {args.device}; peak: the first forward+backward, time: median of the next three",
        ["kind", "K", "tokens N", "N x K fp32 (MiB)", "peak growth (MiB)", "fwd+bwd (s)"],
    )
    emit = table.emit
    for tokens in args.tokens:
        for k in args.codebook_sizes:
            for kind in args.kinds:
                r = measure(kind, k, tokens, args.device)
                nk = tokens * k * 4 / 2**20
                if "error" in r:
                    emit(f"| {kind} | {k} | {tokens} | {nk:.0f} | failed: {r['error']} | - |")
                else:
                    emit(
                        f"| {kind} | {k} | {tokens} | {nk:.0f} | {r['peak_bytes'] / 2**20:.0f} | {r['seconds']:.3f} |"
                    )
    table.save(args.output)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
