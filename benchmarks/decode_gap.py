"""How much of an SQ tokenizer's test error is the gap between how it is trained and how it is tested.

    .venv/bin/python benchmarks/decode_gap.py RUN [RUN ...] [--split test] [--output FILE.json]

SQ trains its decoder on Gumbel-softmax relaxed samples sum_k w_k b_k at the annealed temperature tau
(eq. 6 / 14), but is tested (and its codes extracted) with the argmax of the posterior. Per SQ run folder this
decodes the same test images three ways, with the run's final tau and one seeded generator:

- ``argmax``: the deterministic codes (the test RMSE the benchmarks report);
- ``sample``: hard codes drawn from the posterior (stochastic quantization at test time);
- ``relaxed``: the training-time relaxed sample at the final tau (not a discrete code: the decoder's training
  input, so its RMSE is what the model fits, not what it can transmit).

``argmax / relaxed`` > 1 is the price of discretising a decoder that learnt to decode mixtures; a VQ twin's
train and test inputs are the same nearest codes, so it pays none. Reconstructions are clamped to the data's
range as in ``eval/reconstruction.py``; RMSE is over all pixels of the split (``docs/sq_vs_vq.md`` 9d).
"""

from __future__ import annotations

from pathlib import Path

import torch
from run_analysis import load_run, main_over_runs, split_images

MODES = ("argmax", "sample", "relaxed")


@torch.no_grad()
def decode_gap(run: str | Path, split: str = "test", batch_size: int = 500, seed: int = 0) -> dict:
    """Test RMSE of one SQ run's decoder fed argmax codes, posterior samples and relaxed samples."""
    model, data = load_run(run)
    if model.config.quantizer != "sq":
        raise ValueError(f"{run}: quantizer {model.config.quantizer!r} has no posterior to sample; need 'sq'")
    tau = model.temperature
    generator = torch.Generator().manual_seed(seed)
    squared, count = dict.fromkeys(MODES, 0.0), 0
    for images in split_images(model, data, split, batch_size, f"decode gap {Path(run).name}"):
        for mode in MODES:
            state, _ = model._infer(images, mode, tau, generator)
            reconstruction = model.decoder(state).float()
            if data.value_range is not None:
                reconstruction = reconstruction.clamp(*data.value_range)
            squared[mode] += (reconstruction - images).pow(2).sum().item()
        count += images.numel()
    if count == 0:
        raise ValueError(f"{run}: the {split} split has no images")
    rmse = {mode: (squared[mode] / count) ** 0.5 for mode in MODES}
    return {
        "run": str(run),
        "split": split,
        "temperature": tau,
        "rmse": rmse,
        "argmax / relaxed": rmse["argmax"] / rmse["relaxed"],
        "sample / argmax": rmse["sample"] / rmse["argmax"],
    }


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "| run | final tau | argmax (test) | posterior sample | relaxed (training input) | argmax / relaxed |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        rmse = r["rmse"]
        lines.append(
            f"| {r['run']} | {r['temperature']:.3f} | {rmse['argmax']:.4f} | {rmse['sample']:.4f} | "
            f"{rmse['relaxed']:.4f} | {r['argmax / relaxed']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    def seed_argument(parser):
        parser.add_argument(
            "--seed", type=int, default=0, help="seed of the Gumbel noise and posterior samples"
        )

    def analyse(run, args):
        return decode_gap(run, args.split, seed=args.seed)

    return main_over_runs(argv, __doc__.split("\n")[0], analyse, to_markdown, seed_argument)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
