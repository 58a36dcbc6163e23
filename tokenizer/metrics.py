"""Reconstruction metrics of a tokenizer over a dataset: RMSE, PSNR, SSIM, LPIPS and per-layer codebook usage.

Images and reconstructions are compared in the data range [0, 1], reconstructions clamped to it. Unbounded data
(normalised log-mel spectrograms, ``value_range=None``) is compared as it is, without clamping: PSNR and SSIM then
use the span of the originals (the split's for PSNR, the batch's for SSIM) as the data range, and LPIPS is not
measured (it is an image metric).
Perplexity is exp(H) of the hard-code histogram over the *whole* split (Table 1's exp(H(Q(Z_l))) with the
deterministic posterior), with the number of distinct codes used. SSIM is torchmetrics' (Gaussian window
11, sigma 1.5); LPIPS is reported only when a perceptual model is passed (it needs the VGG16 weights).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from tokenizer.console import progress_bar

from .quantizers import perplexity_from_counts


@dataclass
class ReconstructionMetrics:
    rmse: float
    psnr: float
    ssim: float
    lpips: float | None
    loss: float
    perplexity: list[float]
    codes_used: list[int]
    num_images: int
    # SQ: the discrete KL to the uniform prior per layer, sum_i (log K_l - H_i), nats per image (eq. 6/14);
    # VQ: zeros (a deterministic posterior). Compare with sum_l d_l log K_l (HQVAE.rate_regime).
    kl_nats: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_reconstruction(
    model,
    loader,
    device=None,
    perceptual=None,
    max_images: int | None = None,
    progress: bool = False,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> ReconstructionMetrics:
    """Runs ``model`` (an ``HQVAE``) in eval mode over ``loader`` batches ((images, labels[, skipped])).

    ``value_range``: the data's range, to which reconstructions are clamped ((0, 1) for images); None for
    unbounded data (``DataConfig.value_range``: normalised spectrograms), compared unclamped."""
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    squared_error, num_values, num_images = 0.0, 0, 0
    low, high = (math.inf, -math.inf) if value_range is None else value_range
    if value_range is None:
        perceptual = None  # LPIPS compares images; it means nothing on a spectrogram
    ssim_sum, lpips_sum, loss_sum = 0.0, 0.0, 0.0
    kl_sum = torch.zeros(model.num_layers, dtype=torch.float64)
    counts = [torch.zeros(k, dtype=torch.long, device=device) for k in model.codebook_sizes]
    for batch in progress_bar(loader, desc="evaluate", disable=not progress, leave=False):
        images = batch[0]
        if images is None:
            continue
        if max_images is not None and num_images >= max_images:
            break
        if max_images is not None:
            images = images[: max_images - num_images]
        images = images.to(device).float()
        out = model(images)
        reconstruction = out.sample.float()
        if value_range is not None:
            reconstruction = reconstruction.clamp(*value_range)
        else:
            low, high = min(low, images.min().item()), max(high, images.max().item())
        batch_size = images.shape[0]
        squared_error += (reconstruction - images).pow(2).sum().item()
        num_values += images.numel()
        num_images += batch_size
        loss_sum += out.loss.item() * batch_size
        kl_sum += out.kl_losses.detach().double().cpu() * batch_size
        span = (
            value_range[1] - value_range[0]
            if value_range is not None
            else (images.max() - images.min()).item()
        )
        ssim_sum += ssim_fn(reconstruction, images, data_range=max(span, 1e-12)).item() * batch_size
        if perceptual is not None:
            lpips_sum += perceptual(reconstruction, images, pad_and_trim=False).item() * batch_size
        for count, idx in zip(counts, out.indices):
            count += torch.bincount(idx.flatten(), minlength=count.numel())
    model.train(was_training)
    if num_images == 0:
        raise ValueError("evaluation loader yielded no images")
    mse = squared_error / num_values
    stats = [tuple(t.item() for t in perplexity_from_counts(c)) for c in counts]
    return ReconstructionMetrics(
        rmse=math.sqrt(mse),
        psnr=10 * math.log10((high - low) ** 2 / mse) if mse > 0 else float("inf"),
        ssim=ssim_sum / num_images,
        lpips=lpips_sum / num_images if perceptual is not None else None,
        loss=loss_sum / num_images,
        perplexity=[p for p, _ in stats],
        codes_used=[int(u) for _, u in stats],
        num_images=num_images,
        kl_nats=(kl_sum / num_images).tolist(),
    )
