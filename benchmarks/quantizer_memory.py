"""Peak memory and time of one SQ / VQ forward + backward against codebook size and token count.

    .venv/bin/python benchmarks/quantizer_memory.py [--codebook-sizes 512 4096 16384] [--tokens 8192 32768]

Each measurement runs in a fresh subprocess and reports the growth of the peak resident set size over the
process's baseline (CPU), or ``torch.cuda.max_memory_allocated`` with ``--device cuda``. ``sq`` is the fused
StochasticQuantizer (relaxed Gumbel-softmax, training mode), ``sq_naive`` the plain-autograd definition
(``stochastic_quantize_reference``), ``vq`` the VectorQuantizer with EMA. d = 64 throughout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from tokenizer.quantizers import StochasticQuantizer, VectorQuantizer, stochastic_quantize_reference, gumbel_noise
kind, k, n, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.manual_seed(0)
z = torch.randn(n, 64, device=device, requires_grad=True)
layer = (StochasticQuantizer(k, 64, init_variance=4.0) if kind.startswith("sq") else VectorQuantizer(k, 64)).to(device)
def step():
    if kind == "sq":
        out = layer(z, mode="relaxed", temperature=0.5)
        loss = out.quantized.square().sum() + out.entropy.sum()
    elif kind == "sq_naive":
        codebook = layer.codebook.weight
        q, _, h = stochastic_quantize_reference(z, codebook, layer.log_variance, 0.5, gumbel_noise(torch.empty(n, k, device=device)))
        loss = q.square().sum() + h.sum()
    else:
        out = layer(z)
        loss = (z + (out.quantized - z).detach()).square().sum()
    loss.backward()
step()  # warm-up (allocator, kernels)
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
step()
if device == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({"seconds": time.perf_counter() - start, "peak_bytes": peak}))
"""


def measure(kind: str, codebook_size: int, tokens: int, device: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(codebook_size), str(tokens), device],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codebook-sizes", type=int, nargs="+", default=[512, 4096, 16384])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192])
    parser.add_argument("--kinds", nargs="+", default=["sq", "sq_naive", "vq"])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    print("| kind | K | tokens N | N x K fp32 (MiB) | peak growth (MiB) | fwd+bwd (s) |")
    print("|---|---|---|---|---|---|")
    for tokens in args.tokens:
        for k in args.codebook_sizes:
            for kind in args.kinds:
                r = measure(kind, k, tokens, args.device)
                nk = tokens * k * 4 / 2**20
                if "error" in r:
                    print(f"| {kind} | {k} | {tokens} | {nk:.0f} | failed: {r['error']} | - |")
                else:
                    print(
                        f"| {kind} | {k} | {tokens} | {nk:.0f} | {r['peak_bytes'] / 2**20:.0f} | {r['seconds']:.2f} |"
                    )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
