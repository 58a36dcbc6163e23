"""Sample a grid from a pipeline folder: one row per class.

    python pipelines/sample.py --pipeline runs/fashion_mnist_sqvae2/pipeline --output samples.png \\
        [--labels Sneaker Bag 3] [--per-label 8] [--guidance-scale 2] [--num-inference-steps 8 12] [--num-levels 1]

Without ``--labels`` every class is drawn (or ``--per-label`` images for an unconditional prior).

``generate_shards`` writes class-balanced samples in resumable, seed-addressed shards (what ``eval/fid.py``
scores).
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from tokenizer.console import check_counts, progress_bar


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] float images -> uint8 (round to nearest)."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def balanced_labels(num_samples: int, num_classes: int) -> list[int | None]:
    """num_samples labels, equally many per class (class-major order: 0,0,...,1,1,...)."""
    if num_classes == 0:
        return [None] * num_samples
    if num_samples % num_classes:
        raise ValueError(
            f"num_samples {num_samples} must be a multiple of the {num_classes} classes (class-balanced)"
        )
    per_class = num_samples // num_classes
    return [c for c in range(num_classes) for _ in range(per_class)]


def generate_shards(
    pipe, output: Path, num_samples: int, seed: int, shard_size: int, batch_size: int, sampler: dict
):
    """Writes samples-<k>.npz shards (uint8 images, labels, seeds); existing shards are kept (resume).
    Image i is drawn from its own generator seeded with seed * 10^9 + i: shards and processes never change it."""
    from accelerate import PartialState

    state = PartialState()
    labels = balanced_labels(num_samples, pipe.num_classes)
    num_shards = math.ceil(num_samples / shard_size)
    mine = [s for s in range(num_shards) if s % state.num_processes == state.process_index]
    todo = [s for s in mine if not (output / f"samples-{s:05d}.npz").exists()]
    output.mkdir(parents=True, exist_ok=True)
    for shard in progress_bar(todo, desc="generate shards", disable=not state.is_main_process):
        start, stop = shard * shard_size, min((shard + 1) * shard_size, num_samples)
        seeds = [seed * 10**9 + i for i in range(start, stop)]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        part = labels[start:stop]
        conditional = part[0] is not None
        out = pipe(
            class_labels=part if conditional else None,
            num_images_per_label=1 if conditional else stop - start,
            generator=generators,
            output_type="pt",
            batch_size=batch_size,
            **sampler,
        )
        tmp = output / f"samples-{shard:05d}.tmp.npz"
        np.savez(
            tmp,
            images=to_uint8(out.images).numpy(),
            labels=np.array([-1 if x is None else x for x in part]),
            seeds=np.array(seeds),
        )
        tmp.replace(output / f"samples-{shard:05d}.npz")
    state.wait_for_everyone()
    return [output / f"samples-{s:05d}.npz" for s in range(num_shards)]


def sample_grid_title(settings: dict, guidance_scale) -> str:
    shown = ", ".join(f"{k} {v}" for k, v in settings.items() if v is not None)
    return f"pipeline samples, one row per class (guidance {guidance_scale}, {shown})"


def main(argv=None) -> dict:
    from pipelines import HQVAEPipeline
    from tokenizer.grids import class_rows, save_labelled_grid

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--output", required=True, help="PNG file")
    parser.add_argument("--labels", nargs="+", default=None, help="class names or ids (default: all classes)")
    parser.add_argument("--per-label", type=int, default=8)
    parser.add_argument(
        "--num-inference-steps",
        type=int,
        nargs="+",
        default=None,
        help="masked priors: one or one per level (12)",
    )
    parser.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--guidance-schedule", default="constant")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--num-levels", type=int, default=None, help="decode from the top levels only")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_counts(parser, args, dict(per_label=1, batch_size=1, num_levels=1))
    pipe = HQVAEPipeline.from_pretrained(args.pipeline)
    if torch.cuda.is_available():
        pipe.to("cuda")
    labels = args.labels
    if labels is not None:
        labels = [int(x) if x.isdigit() else x for x in labels]
    elif pipe.num_classes:
        labels = list(range(pipe.num_classes))
    steps = args.num_inference_steps
    kwargs = {  # MaskGIT settings; the RQ-Transformer accepts and ignores them
        "num_inference_steps": steps[0] if steps and len(steps) == 1 else steps,
        "guidance_schedule": args.guidance_schedule,
    }
    scale = args.guidance_scale
    start = time.perf_counter()
    images = pipe(
        class_labels=labels,
        num_images_per_label=args.per_label,
        guidance_scale=scale[0] if len(scale) == 1 else scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_levels=args.num_levels,
        batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="pt",
        **kwargs,
    ).images
    elapsed = time.perf_counter() - start
    ids = pipe.class_ids(labels, args.per_label) or [-1] * len(images)
    names = {**pipe.class_names(), -1: "unconditional"}
    rows, row_labels = class_rows(images, ids, names)
    save_labelled_grid(args.output, rows, row_labels, title=sample_grid_title(kwargs, scale))
    result = {
        "images": len(images),
        "seconds": round(elapsed, 2),
        "images_per_second": round(len(images) / elapsed, 2),
        "rows": row_labels,
    }
    logging.getLogger("pipelines.sample").info("%s -> %s", result, args.output)
    return result


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
