"""Where a tokenizer's reconstruction error lies: on the background or on the content.

    .venv/bin/python benchmarks/error_split.py RUN [RUN ...] [--split test] [--output FILE.json]

Fashion-MNIST's background is exact zeros (the 28x28 items' black surround and the padding to 32x32), which
photographs and spectrograms do not have. Per tokenizer run folder this splits the test squared error
(argmax codes, reconstructions clamped to the data's range, as ``eval/reconstruction.py``) over

- ``empty``: pixels of latent positions whose whole pixel block is exactly zero (the encoder sees the same
  input there, so every such position gets the same row), block = image side / finest latent side;
- ``zero``: pixels that are exactly zero (the empty positions' pixels plus the zeros around the content);
- ``content``: every other pixel,

and prints RMSE per part, each part's share of the pixels and of the squared error. Comparing the SQ and VQ
twins' rows says whether a gap between them is made on the background or on the content (docs/sq_vs_vq.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from run_analysis import load_run, main_over_runs, split_images

PARTS = ("empty", "zero", "content")


@torch.no_grad()
def error_split(run: str | Path, split: str = "test", batch_size: int = 500) -> dict:
    """Squared error of one tokenizer run split by part (``PARTS``): RMSE, pixel share and error share."""
    model, data = load_run(run)
    if data.value_range is None:
        raise ValueError(f"{run} was trained on spectrograms: they have no exact-zero background")
    finest = max(h for h, _ in model.latent_shapes(data.image_size, data.image_size))
    block = data.image_size // finest
    squared = dict.fromkeys(PARTS, 0.0)
    counts = dict.fromkeys(PARTS, 0)
    for images in split_images(model, data, split, batch_size, f"error split {Path(run).name}"):
        reconstruction = model(images).sample.float().clamp(*data.value_range)
        error = (reconstruction - images).pow(2)
        zero = images == 0
        # a position is empty when all channels of its block x block pixels are zero
        empty_positions = torch.nn.functional.max_pool2d(images.abs().amax(1, keepdim=True), block) == 0
        empty = empty_positions.repeat_interleave(block, 2).repeat_interleave(block, 3).expand_as(images)
        masks = {"empty": empty, "zero": zero, "content": ~zero}
        for part, mask in masks.items():
            squared[part] += error[mask].sum().item()
            counts[part] += int(mask.sum().item())
    total_squared, total_count = squared["zero"] + squared["content"], counts["zero"] + counts["content"]
    row = {"run": str(run), "rmse": (total_squared / total_count) ** 0.5, "block": block}
    for part in PARTS:
        row[f"{part}_rmse"] = (squared[part] / counts[part]) ** 0.5 if counts[part] else float("nan")
        row[f"{part}_pixel_share"] = counts[part] / total_count
        row[f"{part}_error_share"] = squared[part] / total_squared if total_squared else float("nan")
    return row


def table(rows: list[dict]) -> str:
    head = "| run | RMSE | " + " | ".join(f"{p} RMSE (pixels, error share)" for p in PARTS) + " |"
    lines = [head, "|" + "---|" * (2 + len(PARTS))]
    for r in rows:
        cells = [
            f"{r[f'{p}_rmse']:.4f} ({r[f'{p}_pixel_share']:.0%}, {r[f'{p}_error_share']:.0%})" for p in PARTS
        ]
        lines.append(f"| {r['run']} | {r['rmse']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    return main_over_runs(argv, __doc__.split("\n")[0], lambda run, args: error_split(run, args.split), table)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
