"""Rate-distortion curves: RMSE / SSIM / LPIPS against codebook size or layer count (paper Figures 2, 3, 5).

    # run a sweep (one tokenizer run per value) and plot it
    python eval/rate_distortion.py sweep --config configs/tokenizer/fashion_mnist_rsqvae.yaml \\
        --codebook-sizes 16 32 64 128 --output runs/rd/rsqvae [key=value overrides, e.g. optimizer.max_steps=1000]
    python eval/rate_distortion.py sweep --config configs/tokenizer/fashion_mnist_rsqvae.yaml --layers 2 4 8 ...
    # or collect finished tokenizer runs (their config.yaml + metrics.json) into one figure
    python eval/rate_distortion.py collect --runs runs/rd/rsqvae/* runs/rd/rqvae/* --output runs/rd/figure

Writes ``rate_distortion.png`` (one panel per metric, one line per model family), ``results.md`` and
``results.json`` (the table behind the figure). The x axis is the codebook size K (codebook sweeps) or the
number of layers L (layer sweeps); every row also records the rate in bits per image, sum_l h_l w_l log2 K_l,
and the step budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import yaml

logger = logging.getLogger("eval.rate_distortion")
METRICS = ("rmse", "ssim", "lpips")


def layout_model(model_kwargs: dict):
    """The run's ``HQVAE`` built on the meta device (no memory, no weights): its own latent shapes, codebook
    sizes and defaults, never re-derived here."""
    import torch

    from tokenizer.model import HQVAE

    with torch.device("meta"):
        return HQVAE(**model_kwargs)


def describe_run(run: Path) -> dict:
    """One row of the table from a finished tokenizer run."""
    config = yaml.safe_load((run / "config.yaml").read_text())
    metrics_path = run / "metrics.json"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{run} has no metrics.json (unfinished run?)")
    metrics = json.loads(metrics_path.read_text())
    model = layout_model(config["model"])
    layers = list(model.config.layers_per_resolution)
    sizes = list(model.codebook_sizes)
    image_size = config.get("data", {}).get("image_size", 32)
    shapes = [h * w for h, w in model.latent_shapes(image_size, image_size)]
    quantizer = model.config.quantizer
    injected = all(c == 1 for c in layers)
    family = {
        ("sq", True): "SQ-VAE-2" if len(layers) > 1 else "SQ-VAE",
        ("sq", False): "RSQ-VAE",
        ("vq", True): "VQ-VAE-2" if len(layers) > 1 else "VQ-VAE",
        ("vq", False): "RQ-VAE",
    }.get((quantizer, injected)) or f"{quantizer.upper()} ({'injected' if injected else 'residual'})"
    if model.config.share_codebook:
        family += " (shared)"
    if quantizer == "vq" and model.config.dead_code_threshold > 0:
        family += " + reset"
    return {
        "run": str(run),
        "family": family,
        "codebook_size": sizes[0] if len(set(sizes)) == 1 else sizes,
        "layers": sum(layers),
        "bits_per_image": sum(n * math.log2(k) for n, k in zip(shapes, sizes)),
        "steps": metrics.get("steps"),
        **{m: metrics.get(m) for m in METRICS},
        "psnr": metrics.get("psnr"),
        "perplexity": metrics.get("perplexity"),
    }


def plot(rows: list[dict], x: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [m for m in METRICS if any(r[m] is not None for r in rows)]
    fig, axes = plt.subplots(1, len(present), figsize=(4.2 * len(present), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], present):
        for family in sorted({r["family"] for r in rows}):
            points = sorted(
                (r[x], r[metric]) for r in rows if r["family"] == family and r[metric] is not None
            )
            if points:
                ax.plot(*zip(*points), marker="o", label=family)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("codebook size K" if x == "codebook_size" else "number of layers L")
        ax.set_ylabel(metric.upper())
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    steps = sorted({r["steps"] for r in rows if r["steps"] is not None})
    fig.suptitle(f"test-set distortion against {x.replace('_', ' ')} (budget: {steps} steps)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(rows: list[dict], output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    x = "layers" if len({r["layers"] for r in rows}) > 1 else "codebook_size"
    rows = sorted(rows, key=lambda r: (r["family"], r[x] if isinstance(r[x], int) else 0))
    (output / "results.json").write_text(json.dumps(rows, indent=2))
    lines = [
        "| family | K | L | bits/image | steps | RMSE | PSNR | SSIM | LPIPS | perplexity |",
        "|---" * 10 + "|",
    ]

    def fmt(v, spec=".4f"):
        return "–" if v is None else format(v, spec)

    for r in rows:
        ppl = ", ".join(f"{p:.1f}" for p in r["perplexity"] or [])
        lines.append(
            f"| {r['family']} | {r['codebook_size']} | {r['layers']} | {r['bits_per_image']:.0f} | {r['steps']} | "
            f"{fmt(r['rmse'])} | {fmt(r['psnr'], '.2f')} | {fmt(r['ssim'], '.3f')} | {fmt(r['lpips'])} | {ppl} |"
        )
    (output / "results.md").write_text("\n".join(lines) + "\n")
    plot(rows, x, output / "rate_distortion.png")
    logger.info("wrote %s", output)


def sweep(config: str, output: Path, codebook_sizes=None, layers=None, overrides=()) -> list[dict]:
    """Trains one run per value (skipping finished ones, resuming killed ones) and returns the rows."""
    from tokenizer.config import load_config
    from tokenizer.train import TokenizerTrainer, TrainConfig

    if bool(codebook_sizes) == bool(layers):
        raise ValueError("give exactly one of --codebook-sizes and --layers")
    rows = []
    for value in codebook_sizes or layers:
        name = f"K{value}" if codebook_sizes else f"L{value}"
        run = output / name
        change = (
            [f"model.codebook_sizes={value}"]
            if codebook_sizes
            else [f"model.layers_per_resolution=[{value}]"]
        )
        TokenizerTrainer.train_or_resume(
            load_config(TrainConfig, config, [f"output_dir={run}", *change, *overrides])
        )
        rows.append(describe_run(run))
    return rows


def main(argv=None) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("sweep")
    run.add_argument("--config", required=True)
    run.add_argument("--codebook-sizes", type=int, nargs="+")
    run.add_argument("--layers", type=int, nargs="+")
    run.add_argument("--output", required=True)
    run.add_argument("overrides", nargs="*", help="tokenizer config overrides, last on the line")
    collect = sub.add_parser("collect")
    collect.add_argument("--runs", nargs="+", required=True)
    collect.add_argument("--output", required=True)
    args = parser.parse_args(argv)  # overrides (key=value) go last
    output = Path(args.output)
    if args.command == "sweep":
        rows = sweep(args.config, output, args.codebook_sizes, args.layers, args.overrides)
    else:
        rows = [describe_run(Path(r)) for r in args.runs]
    write_outputs(rows, output)
    return rows


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
