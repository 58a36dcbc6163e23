"""Why s_l^2 falls (self-annealing) or rises: the two forces on each dequantization variance over a run.

Reads the ``variance_grad_decoder`` / ``variance_grad_rate`` lines that SQ training writes into
``history.jsonl`` (``HQVAE.variance_gradients``: d J / d log s_l^2 from the decoder term and from the rate,
latent + KL). The rate always pushes s^2 up (negative gradient: in expectation it is
-log((1/K) sum_k exp(-d_k / 2 s^2)), which falls as s^2 grows); the decoder term pulls it down through the
relaxed sample. Per window of steps and layer this prints the medians of both (one batch per logged step, so
noisy), their sum, and how s^2 actually moved, and plots the trajectories (s^2, s^2 / code spacing, both
parts)::

    .venv/bin/python benchmarks/variance_drift.py RUN [RUN ...] --window 1000 \
        --output runs/benchmarks/variance_drift.json --plot docs/variance_drift.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

KEYS = ("variance_grad_decoder", "variance_grad_rate", "variances")


def read_history(run: Path) -> list[dict]:
    """The SQ lines of a run's ``history.jsonl`` (those with the gradient split)."""
    path = run / "history.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: expected a tokenizer run folder")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [line for line in lines if all(key in line for key in KEYS)]
    if not lines:
        raise ValueError(
            f"{path} has no variance_grad_decoder / variance_grad_rate lines: an SQ run trained before they "
            "were logged, or not an SQ run"
        )
    return lines


def windows(history: list[dict], window: int) -> list[dict]:
    """Per window of ``window`` steps: the last s^2 per layer and the medians of both gradient parts."""
    rows, start = [], 0
    last_step = history[-1]["step"]
    while start < last_step:
        part = [h for h in history if start < h["step"] <= start + window]
        if part:
            layers = len(part[0]["variances"])
            decoder = [statistics.median(h["variance_grad_decoder"][i] for h in part) for i in range(layers)]
            rate = [statistics.median(h["variance_grad_rate"][i] for h in part) for i in range(layers)]
            rows.append(
                {
                    "steps": [start, min(start + window, last_step)],
                    "variances": part[-1]["variances"],
                    "decoder": decoder,
                    "rate": rate,
                    "total": [d + r for d, r in zip(decoder, rate)],
                    "temperature": part[-1].get("temperature"),
                }
            )
        start += window
    return rows


def analyse(run: Path, window: int) -> dict:
    history = read_history(run)
    rows = windows(history, window)
    previous = history[0]["variances"]
    for row in rows:  # how s^2 moved in the window; gradient descent moves it against the total's sign
        row["s2_change"] = [v / p for v, p in zip(row["variances"], previous)]
        previous = row["variances"]
    return {"run": str(run), "windows": rows, "history": history}


def to_markdown(results: list[dict]) -> str:
    lines = [
        "| run | steps | tau | layer | s² at end | × in window | decoder | rate | total (> 0: s² falls) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        name = Path(result["run"]).name
        for row in result["windows"]:
            for layer, s2 in enumerate(row["variances"]):
                lines.append(
                    f"| {name} | {row['steps'][0]}–{row['steps'][1]} | {row['temperature']:.3f} | {layer} | "
                    f"{s2:.4g} | {row['s2_change'][layer]:.3f} | {row['decoder'][layer]:.4g} | "
                    f"{row['rate'][layer]:.4g} | {row['total'][layer]:.4g} |"
                )
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 3, figsize=(16, 3.2 * len(results)), squeeze=False)
    for (left, middle, right), result in zip(axes, results):
        history = result["history"]
        steps = [h["step"] for h in history]
        relative = [h for h in history if "relative_variances" in h]  # logged since s^2 / spacing existed
        for layer in range(len(history[0]["variances"])):
            left.plot(steps, [h["variances"][layer] for h in history], label=f"layer {layer}")
            middle.plot([h["step"] for h in relative], [h["relative_variances"][layer] for h in relative],
                        label=f"layer {layer}")  # fmt: skip
            mids = [sum(r["steps"]) / 2 for r in result["windows"]]
            right.plot(
                mids, [r["decoder"][layer] for r in result["windows"]], f"C{layer}-", label=f"decoder {layer}"
            )
            right.plot(
                mids, [-r["rate"][layer] for r in result["windows"]], f"C{layer}--", label=f"−rate {layer}"
            )
        left.set_yscale("log")
        left.set_title(f"{Path(result['run']).name}: s² per layer")
        middle.set_yscale("log")
        middle.set_title("s² / code spacing (scale-free; not logged before it existed)")
        middle.set_xlabel("step")
        right.set_title("d J / d log s²: decoder (pulls s² down) vs −rate (pushes up)")
        left.set_xlabel("step")
        right.set_xlabel("step")
        left.legend(fontsize=7)
        right.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="SQ tokenizer run folders (history.jsonl)")
    parser.add_argument("--window", type=int, default=1000, help="steps per row (medians over the window)")
    parser.add_argument("--output", type=Path, default=None, help="also write the windows to this JSON file")
    parser.add_argument("--plot", type=Path, default=None, help="a PNG of s² and both gradient parts")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window must be >= 1, got {args.window}")
    results = [analyse(run, args.window) for run in args.runs]
    print(to_markdown(results))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps([{k: r[k] for k in ("run", "windows")} for r in results], indent=2))
    if args.plot:
        plot(results, args.plot)
    return results


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
