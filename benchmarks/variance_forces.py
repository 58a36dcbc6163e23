"""The two forces on s_l^2 as functions of s^2, at fixed weights: where a model's s^2 wants to settle.

During training s_l^2 sits where the decoder term's pull (d J / d log s^2 > 0: lower s^2 sharpens the relaxed
sample the decoder sees) balances the rate's push (< 0: latent + KL always fall as s^2 grows;
``HQVAE.variance_gradients``). This probe freezes a model (a run's final weights or any of its checkpoints),
sets every layer's s^2 to ``factor`` x a common reference (the first model's s^2, so all models are probed at
the same absolute values) and averages both parts over ``--batches`` seeded training batches at the model's
own tau. Comparing checkpoints tells *why* s^2 moved: the decoder's pull at a given s^2 weakened, or the rate's
push strengthened::

    .venv/bin/python benchmarks/variance_forces.py RUN --checkpoints step-00003333 final \
        --factors 0.5 1 2 4 --batches 16 --output runs/benchmarks/variance_forces.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import torch
from run_analysis import load_run, split_images

from tokenizer.training_utils import CheckpointManager


def sq_layers(model) -> list:
    return [layer for group in model.quantizers for layer in group.layers]


def load_weights(model, run: Path, checkpoint: str, final: dict) -> None:
    """``final``: the run's saved model (``final``, its state as loaded); otherwise
    ``checkpoints/<checkpoint>``'s model state."""
    if checkpoint == "final":
        model.load_state_dict(final)
        return
    folder = run / "checkpoints" / checkpoint
    if not folder.is_dir():
        available = sorted(p.name for p in (run / "checkpoints").glob("step-*"))
        raise FileNotFoundError(f"{folder} does not exist; this run has {available} (or 'final')")
    model.load_state_dict(CheckpointManager.load(folder, "model"))


def forces(model, batches: list[torch.Tensor], variances: list[float], seed: int) -> dict:
    """Mean decoder and rate parts of d J / d log s_l^2 at the given s_l^2, over the batches (train mode, the
    model's tau, seeded Gumbel noise), plus the mean posterior entropy per layer."""
    layers = sq_layers(model)
    with torch.no_grad():
        for layer, variance in zip(layers, variances):
            layer.log_variance.fill_(math.log(variance))
    generator = torch.Generator().manual_seed(seed)
    decoder = torch.zeros(len(layers))
    rate = torch.zeros(len(layers))
    entropy = torch.zeros(len(layers))
    decoder_value = rate_value = 0.0
    for images in batches:
        out = model(images, generator=generator)
        split = model.variance_gradients(out)
        decoder += split["decoder"] / len(batches)
        rate += split["rate"] / len(batches)
        entropy += out.entropy.detach() / len(batches)
        decoder_value += float(out.reconstruction_loss.detach()) / len(batches)
        rate_value += float((out.latent_losses.sum() + out.kl_losses.sum()).detach()) / len(batches)
    return {"decoder": decoder.tolist(), "rate": rate.tolist(), "entropy": entropy.tolist(),
            "decoder_value": decoder_value, "rate_value": rate_value}  # fmt: skip


def _round(values: list[float]) -> list[float]:
    return [round(v, 5) for v in values]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an SQ tokenizer run folder")
    parser.add_argument(
        "--checkpoints", nargs="+", default=["final"], help="step-<N> folder names or 'final'"
    )
    parser.add_argument("--factors", nargs="+", type=float, default=[0.5, 1.0, 2.0, 4.0],
                        help="s^2 = factor x the first model's s^2, every layer")  # fmt: skip
    parser.add_argument("--batches", type=int, default=16, help="training batches averaged per point")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.batches < 1 or args.batch_size < 1 or any(f <= 0 for f in args.factors):
        parser.error(f"--batches and --batch-size must be >= 1 and --factors > 0, got {args.batches}, "
                     f"{args.batch_size}, {args.factors}")  # fmt: skip
    model, data = load_run(args.run)
    if model.config.quantizer != "sq":
        parser.error(f"{args.run} is a quantizer={model.config.quantizer!r} run; the probe needs SQ")
    torch.manual_seed(args.seed)
    images = split_images(model, data, "train", args.batch_size, "batches")
    batches = [b for b in itertools.islice(images, args.batches)]
    final = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    reference = None
    rows = []
    header = (
        "| model | tau | s² factor | decoder term | rate | layer | s² | entropy (nats) | d decoder / d log s² "
        "| d rate / d log s² | total (> 0: s² falls) |\n|" + "---|" * 11
    )
    for checkpoint in args.checkpoints:
        load_weights(model, args.run, checkpoint, final)
        model.train()
        own = [float(layer.variance.detach()) for layer in sq_layers(model)]
        relative = model.relative_variances().tolist()
        spacing = [v / r for v, r in zip(own, relative)]
        print(
            f"\n{checkpoint}: own s² {_round(own)}, code spacing {_round(spacing)}, own s² / spacing "
            f"{_round(relative)}; the decoder term and the rate are nats per image (mean over the batches)\n",
            header,
            sep="\n",
            flush=True,
        )
        reference = reference or own
        for factor in args.factors:
            variances = [factor * v for v in reference]
            result = forces(model, batches, variances, args.seed)
            rows.append({"model": checkpoint, "own_variances": own, "code_spacing": spacing,
                         "relative_variances": relative, "factor": factor,
                         "variances": variances, "temperature": model.temperature, **result})  # fmt: skip
            for layer, variance in enumerate(variances):
                d, r = result["decoder"][layer], result["rate"][layer]
                values = f"{result['decoder_value']:.1f} | {result['rate_value']:.1f}"
                print(f"| {checkpoint} | {model.temperature:.3f} | {factor:g} | {values} | {layer} | {variance:.4g} | "
                      f"{result['entropy'][layer]:.2f} | {d:.4g} | {r:.4g} | {d + r:.4g} |", flush=True)  # fmt: skip
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
