"""Prior sampling speed: images/s of the Muse masked prior per number of decoding steps, and of the
RQ-Transformer with and without its KV cache.

    .venv/bin/python benchmarks/prior_sampling.py [--batch-size 32] [--repeats 3] [--device cpu|cuda]

The priors have the architecture of the Fashion-MNIST configs (configs/prior/fashion_mnist_*.yaml, random
weights: speed does not depend on them): masked level 0 (4x4, K 512) and level 1 (8x8, K 512, conditioned on
level 0), and the RQ-Transformer over 8x8 x 4 codes (K 64). Guidance doubles every forward (scale 2 here).
Median of ``--repeats`` timed runs after one warm-up; the table is printed and saved as markdown.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from prior import MaskedTokenScheduler, MaskedTokenTransformer, RQTransformer, sample_masked, sample_rq


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 12, 16])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default="runs/benchmarks/prior_sampling.md")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a smoke test of the script)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device, batch = torch.device(args.device), args.batch_size
    arch = dict(hidden_size=32 if args.tiny else 128, num_heads=4, dropout=0.1)
    layers, side = (1, 2) if args.tiny else (4, 4)
    level0 = MaskedTokenTransformer(512, side, side, num_classes=10, num_layers=layers, **arch)
    level1 = MaskedTokenTransformer(512, 2 * side, 2 * side, num_classes=10, condition_codebook_sizes=[512],
                                    condition_shapes=[[side, side]], num_layers=layers, **arch)  # fmt: skip
    rq = RQTransformer(64, 4, 2 * side, 2 * side, num_classes=10, spatial_layers=layers, depth_layers=min(layers, 2),
                       **arch)  # fmt: skip
    level0, level1, rq = (m.to(device).eval() for m in (level0, level1, rq))
    labels = torch.arange(batch, device=device) % 10
    rows = []
    for steps in args.steps:

        def masked(steps=steps):
            top = sample_masked(level0, MaskedTokenScheduler(512), labels, None, steps, guidance_scale=2.0,
                                generator=torch.Generator(device).manual_seed(0))  # fmt: skip
            sample_masked(level1, MaskedTokenScheduler(512), labels, [top], steps, guidance_scale=2.0,
                          generator=torch.Generator(device).manual_seed(0))  # fmt: skip

        seconds = timed(masked, args.repeats)
        rows.append(
            {
                "prior": f"Muse, 2 levels, {steps} steps per level",
                "seconds": seconds,
                "images_per_second": batch / seconds,
            }
        )
    for cache in (True, False):
        seconds = timed(lambda cache=cache: sample_rq(rq, labels, guidance_scale=2.0, use_cache=cache,
                                                      generator=torch.Generator(device).manual_seed(0)), args.repeats)  # fmt: skip
        rows.append(
            {
                "prior": f"RQ-Transformer {2 * side}x{2 * side}x4, KV cache {'on' if cache else 'off'}",
                "seconds": seconds,
                "images_per_second": batch / seconds,
            }
        )
    lines = [f"batch {batch}, guidance 2.0, device {args.device}, torch threads {torch.get_num_threads()}, median of {args.repeats}", "",
             "| prior | s per batch | images/s |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {r['prior']} | {r['seconds']:.2f} | {r['images_per_second']:.1f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text + "\n")
    return rows


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
