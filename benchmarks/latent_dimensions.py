"""How many dimensions does each quantizer layer's input actually use, and where do its codes lie?

Per layer of a finished tokenizer run: the covariance spectrum of the rows the layer quantizes (its input
Z-tilde_l; for residual layers, what the layers above left, with argmax codes) and of its codebook, summarised as
the participation ratio (sum lambda)^2 / sum lambda^2 (1 when one direction holds all the variance, d_b when all
directions hold the same; scale-free, so SQ and VQ compare directly), the top eigenvalues, and for SQ the
number of input directions whose variance exceeds s_l^2. Soft assignment at s^2 cannot separate codes along a
direction whose spread is below s^2 (deterministic annealing: Rose et al. 1990), and the latent term charges
for whatever the codes do not follow, so such directions carry little information::

    .venv/bin/python benchmarks/latent_dimensions.py RUN [RUN ...] [--split test] [--output FILE.json]
"""

from __future__ import annotations

import argparse

import torch
from run_analysis import load_run, main_over_runs, split_images

from tokenizer.model import _to_rows


def participation_ratio(eigenvalues: torch.Tensor) -> float:
    eigenvalues = eigenvalues.clamp_min(0)
    return float(eigenvalues.sum() ** 2 / eigenvalues.pow(2).sum().clamp_min(1e-30))


@torch.no_grad()
def layer_inputs(model, images: torch.Tensor) -> list[torch.Tensor]:
    """The rows every layer quantizes (top layer first), with argmax codes: an injected / first layer's
    Z-tilde, a residual layer's remaining residual."""
    _, groups = model._infer(images, "argmax", model.temperature, None)
    inputs = []
    for target, codes, _ in groups:
        residual = _to_rows(target).float()
        for code in codes:
            inputs.append(residual)
            residual = residual - _to_rows(code).float()
    return inputs


def analyse(run, args: argparse.Namespace) -> dict:
    model, data = load_run(run)
    rows: list[list[torch.Tensor]] = []
    seen = 0
    for images in split_images(model, data, args.split, 64, "rows"):
        for index, part in enumerate(layer_inputs(model, images)):
            if index == len(rows):
                rows.append([])
            rows[index].append(part)
        seen += images.shape[0]
        if seen >= args.max_images:
            break
    sq = model.config.quantizer == "sq"
    variances = model.dequantization_variances().tolist()
    modules = [layer for group in model.quantizers for layer in group.layers]
    layers = []
    for index, (parts, module) in enumerate(zip(rows, modules)):
        z = torch.cat(parts)
        spectrum = torch.linalg.eigvalsh(torch.cov(z.T)).flip(0)
        book_spectrum = None  # implicit codebooks (FSQ, LFQ) and product codebooks: none
        if hasattr(module, "get_codebook"):
            weight = module.get_codebook().weight.detach().float()
            book_spectrum = torch.linalg.eigvalsh(torch.cov(weight.T)).flip(0)
        layer = {
            "input_participation_ratio": participation_ratio(spectrum),
            "input_top_eigenvalues": spectrum[:4].tolist(),
            "input_total_variance": float(spectrum.sum()),
            "codebook_participation_ratio": None
            if book_spectrum is None
            else participation_ratio(book_spectrum),
        }
        if sq:
            layer["s2"] = variances[index]
            layer["input_directions_above_s2"] = int((spectrum > variances[index]).sum())
        layers.append(layer)
    return {"run": str(run), "quantizer": model.config.quantizer, "images": seen, "layers": layers}


def to_markdown(results: list[dict]) -> str:
    lines = [
        "| run | quantizer | layer | input participation ratio | top input eigenvalues | input directions > s² "
        "| codebook participation ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for index, layer in enumerate(result["layers"]):
            above = layer.get("input_directions_above_s2", "–")
            if "s2" in layer:
                above = f"{above} (s² {layer['s2']:.3g})"
            book = layer["codebook_participation_ratio"]
            lines.append(
                f"| {result['run']} | {result['quantizer']} | {index} | {layer['input_participation_ratio']:.2f} | "
                f"{', '.join(f'{v:.3g}' for v in layer['input_top_eigenvalues'])} | {above} | "
                f"{'–' if book is None else f'{book:.2f}'} |"
            )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-images", type=int, default=2048, help="images whose rows are analysed")


def main(argv=None) -> list[dict]:
    return main_over_runs(argv, __doc__.split("\n")[0], analyse, to_markdown, add_arguments)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
