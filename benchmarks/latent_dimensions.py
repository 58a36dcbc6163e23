"""How many dimensions does each quantizer layer's input actually use, and where do its codes lie?

Per layer of a finished tokenizer run: the covariance spectrum of the rows the layer quantizes (its input
Z-tilde_l; for residual layers, what the layers above left, with argmax codes) and of its codebook, summarised as
the participation ratio (sum lambda)^2 / sum lambda^2 (1 when one direction holds all the variance, d_b when all
directions hold the same; scale-free, so SQ and VQ compare directly), the top eigenvalues, and for SQ the
number of input directions whose variance exceeds s_l^2. Soft assignment at s^2 cannot separate codes along a
direction whose spread is below s^2 (deterministic annealing: Rose et al. 1990), and the latent term charges
for whatever the codes do not follow, so such directions carry little information. Product-quantization layers
(``sq_groups`` / ``pq_groups``) also get one summary per group (its slice of the input, its own codes); LFQ
layers the state of their sign projections (how many sit near a flip, how many at the tanh bound)::

    .venv/bin/python benchmarks/latent_dimensions.py RUN [RUN ...] [--split test] [--output FILE.json]
"""

from __future__ import annotations

import argparse

import torch
from run_analysis import load_run, main_over_runs, split_images, table_header

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


def codebook_weight(module) -> torch.Tensor | None:
    """A layer's code vectors (K, d), or None for implicit (FSQ, LFQ) and product codebooks."""
    book = module.get_codebook() if hasattr(module, "get_codebook") else None
    weight = getattr(book, "weight", None)
    return None if weight is None else weight.detach().float()


def summarise(z: torch.Tensor, book: torch.Tensor | None, s2: float | None) -> dict:
    """Spectrum summary of rows ``z`` (N, d) and code vectors ``book`` (K, d); with SQ's ``s2``, the number of
    input directions whose variance exceeds it (the directions soft assignment at s^2 can split codes along)."""
    spectrum = torch.linalg.eigvalsh(torch.cov(z.T).reshape(z.shape[1], z.shape[1])).flip(0)
    summary = {
        "input_participation_ratio": participation_ratio(spectrum),
        "input_top_eigenvalues": spectrum[:4].tolist(),
        "input_total_variance": float(spectrum.sum()),
        "codebook_participation_ratio": None,
    }
    if book is not None:
        book_spectrum = torch.linalg.eigvalsh(torch.cov(book.T).reshape(book.shape[1], book.shape[1])).flip(0)
        summary["codebook_participation_ratio"] = participation_ratio(book_spectrum)
        # RMS distance of the codes from their mean: ~0 when a codebook has merged into one point
        summary["codebook_spread"] = float(book.std(0).pow(2).sum().sqrt())
    if s2 is not None:
        summary["s2"] = s2
        summary["input_directions_above_s2"] = int((spectrum > s2).sum())
    return summary


@torch.no_grad()
def sign_projections(module, z: torch.Tensor) -> dict | None:
    """An LFQ layer's projected values u (before the signs) on rows ``z``: the median |u|, the fraction near a
    sign flip (|u| < 0.1) and, with ``soft_clamp`` v, the fraction at the bound (|v tanh(u / v)| > 0.99 v, where
    the straight-through gradient is < 2 % of its value at 0). None for other quantizers."""
    if not hasattr(module, "soft_clamp"):
        return None
    u = module.project_in(module.norm(z)).float()
    summary = {"median_abs": float(u.abs().median()), "near_flip": float((u.abs() < 0.1).float().mean())}
    if module.soft_clamp is not None:
        summary["at_bound"] = float((torch.tanh(u / module.soft_clamp).abs() > 0.99).float().mean())
    return summary


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
        s2 = variances[index] if sq else None
        layer = summarise(torch.cat(parts), codebook_weight(module), s2)
        signs = sign_projections(module, torch.cat(parts))
        if signs is not None:
            layer["sign_projections"] = signs
        if hasattr(module, "part_codebooks"):  # product quantization: each group's own subspace and codes
            splits = torch.cat(parts).split(module.split_sizes, -1)
            books = module.part_codebooks()
            layer["groups"] = [
                summarise(z, book.weight.detach().float(), s2) for z, book in zip(splits, books)
            ]
        layers.append(layer)
    return {"run": str(run), "quantizer": model.config.quantizer, "images": seen, "layers": layers}


def to_markdown(results: list[dict]) -> str:
    lines = table_header(
        ["run", "quantizer", "layer", "input participation ratio", "top input eigenvalues", "input directions > s²",
         "codebook participation ratio", "code spread (RMS)", "LFQ: median abs(u), near a flip, at the bound"]
    )  # fmt: skip
    for result in results:
        for index, layer in enumerate(result["layers"]):
            named = [(str(index), layer)] + [
                (f"{index}.g{m}", g) for m, g in enumerate(layer.get("groups", []))
            ]
            for name, part in named:
                above = part.get("input_directions_above_s2", "–")
                if "s2" in part:
                    above = f"{above} (s² {part['s2']:.3g})"
                book = part["codebook_participation_ratio"]
                signs = part.get("sign_projections")
                if signs is not None:
                    at_bound = signs.get("at_bound")
                    at_bound = "–" if at_bound is None else f"{at_bound:.3f}"
                    signs = f"{signs['median_abs']:.3g}, {signs['near_flip']:.3f}, {at_bound}"
                lines.append(
                    f"| {result['run']} | {result['quantizer']} | {name} | {part['input_participation_ratio']:.2f} | "
                    f"{', '.join(f'{v:.3g}' for v in part['input_top_eigenvalues'])} | {above} | "
                    f"{'–' if book is None else f'{book:.2f}'} | {part.get('codebook_spread', float('nan')):.3g} | "
                    f"{signs or '–'} |"
                )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-images", type=int, default=2048, help="images whose rows are analysed")


def main(argv=None) -> list[dict]:
    return main_over_runs(argv, __doc__.split("\n")[0], analyse, to_markdown, add_arguments)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
