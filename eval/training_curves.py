"""Training curves of tokenizer runs from their ``history.jsonl`` / ``validation.jsonl``: validation RMSE, the
rate (KL, nats per image), per-layer perplexity, and SQ's self-annealing picture (paper Figure 4): per-layer
dequantization variance s_l^2, s_l^2 / code spacing, quantization entropy and the Gumbel temperature tau over
steps.

    python eval/training_curves.py --runs runs/main_sqvae2/tokenizer runs/main_sqvae2/vq_twin --output curves.png
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

# (panel title, file, key, per-layer?, log scale?)
PANELS = [
    ("validation RMSE", "validation.jsonl", "rmse", False, False),
    ("rate: KL to the uniform prior (nats / image)", "history.jsonl", "kl_total", False, False),
    ("perplexity per layer (training batches)", "history.jsonl", "perplexity", True, False),
    ("dequantization variance s_l^2 (SQ)", "history.jsonl", "variances", True, True),
    # s^2 alone is not identifiable (the objective is invariant to the latent scale): read it against the codes
    ("s_l^2 / code spacing (SQ, scale-free)", "history.jsonl", "relative_variances", True, True),
    ("quantization entropy per layer, nats (SQ)", "history.jsonl", "entropy", True, False),
    ("Gumbel temperature tau (SQ)", "history.jsonl", "temperature", False, False),
]


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _series(records: list[dict], key: str, per_layer: bool) -> dict[str, tuple[list, list]]:
    """{series name: (steps, values)}; SQ-only keys are all zero in VQ runs and give no series."""
    rows = [r for r in records if r.get(key) is not None]
    if not rows:
        return {}
    if not per_layer:
        values = [float(r[key]) for r in rows]
        return {"": ([r["step"] for r in rows], values)} if any(values) else {}
    layers = len(rows[-1][key])
    series = {}
    for layer in range(layers):
        values = [float(r[key][layer]) for r in rows if len(r[key]) == layers]
        if any(values):
            series[f" layer {layer}"] = ([r["step"] for r in rows if len(r[key]) == layers], values)
    return series


def plot_training_curves(runs: dict[str, str | Path], output: str | Path) -> Path:
    """One figure, a panel per ``PANELS`` entry, a line per run (and per layer); panels no run has are
    left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("plot_training_curves needs at least one run")
    logs = {}
    for name, folder in runs.items():
        folder = Path(folder)
        if not (folder / "history.jsonl").exists():
            raise FileNotFoundError(f"{folder} has no history.jsonl (expected a tokenizer run folder)")
        logs[name] = {file: read_jsonl(folder / file) for file in ("history.jsonl", "validation.jsonl")}
    panels = []
    for title, file, key, per_layer, log in PANELS:
        lines = {
            f"{name}{suffix}": data
            for name, files in logs.items()
            for suffix, data in _series(files[file], key, per_layer).items()
        }
        if lines:
            panels.append((title, lines, log))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, lines, log) in zip(axes.flat, panels):
        for label, (steps, values) in lines.items():
            ax.plot(steps, values, label=label, linewidth=1.2)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def main(argv=None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, help="tokenizer run folders (with history.jsonl)")
    parser.add_argument("--names", nargs="+", default=None, help="legend names (default: folder names)")
    parser.add_argument("--output", required=True, help="PNG file")
    args = parser.parse_args(argv)
    names = args.names or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        raise ValueError(f"--names gives {len(names)} names for {len(args.runs)} runs")
    path = plot_training_curves(dict(zip(names, args.runs)), args.output)
    logging.getLogger("eval.training_curves").info("-> %s", path)
    return path


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
