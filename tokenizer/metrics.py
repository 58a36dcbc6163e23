"""Reconstruction metrics of a tokenizer over a dataset: RMSE, PSNR and per-layer codebook usage.

Images and reconstructions are compared in the data range [0, 1], reconstructions clamped to it.
Perplexity is exp(H) of the hard-code histogram over the *whole* split (Table 1's exp(H(Q(Z_l))) with the
deterministic posterior), with the number of distinct codes used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .quantizers import perplexity_from_counts


@dataclass
class ReconstructionMetrics:
    rmse: float
    psnr: float
    perplexity: list[float]
    codes_used: list[int]
    num_images: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_reconstruction(model, loader, device=None, progress: bool = False) -> ReconstructionMetrics:
    """Runs ``model`` (an ``HQVAE``) in eval mode over ``loader`` of (image, label) batches."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    squared_error, num_values, num_images = 0.0, 0, 0
    counts = [torch.zeros(k, dtype=torch.long, device=device) for k in model.codebook_sizes]
    for images, *_ in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        images = images.to(device)
        out = model(images)
        reconstruction = out.sample.float().clamp(0.0, 1.0)
        squared_error += (reconstruction - images.float()).pow(2).sum().item()
        num_values += images.numel()
        num_images += images.shape[0]
        for count, idx in zip(counts, out.indices):
            count += torch.bincount(idx.flatten(), minlength=count.numel())
    model.train(was_training)
    mse = squared_error / max(num_values, 1)
    stats = [tuple(t.item() for t in perplexity_from_counts(c)) for c in counts]
    return ReconstructionMetrics(
        rmse=math.sqrt(mse),
        psnr=10 * math.log10(1.0 / mse) if mse > 0 else float("inf"),
        perplexity=[p for p, _ in stats],
        codes_used=[int(u) for _, u in stats],
        num_images=num_images,
    )
