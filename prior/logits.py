"""Sampling from categorical logits: temperature, top-k and top-p (nucleus) filtering, shared by both priors.

Random draws take one ``torch.Generator`` for the whole batch or a list with one generator per row (per
image): with a list, row b's draws come from generator b alone, so an image does not depend on which other
images share its batch (``HQVAEPipeline`` uses this to make chunked sampling equal to one batch).
"""

from __future__ import annotations

import torch

Generators = torch.Generator | list[torch.Generator] | None


def uniform_rows(shape: tuple[int, ...], generator: Generators, device: torch.device | str) -> torch.Tensor:
    """U[0, 1) float32 of ``shape`` (B, ...); row b from ``generator[b]`` when a list is given."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(
                f"got {len(generator)} generators for a batch of {shape[0]} (one per row expected)"
            )
        rows = [torch.rand(shape[1:], generator=g, device=g.device).to(device) for g in generator]
        return torch.stack(rows) if rows else torch.empty(shape, device=device)
    source = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=source).to(device)


def gumbel_rows(like: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Gumbel(0, 1) noise shaped like ``like`` (float32), drawn row by row as in ``uniform_rows``."""
    u = uniform_rows(tuple(like.shape), generator, like.device).clamp_min(torch.finfo(torch.float32).tiny)
    return -(-u.log()).log()


def check_sampling_arguments(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Sets logits outside the top-k and outside the smallest set of probability mass >= top_p to -inf.

    The most likely code always survives, so a row is never left empty.
    """
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # drop a code when the mass strictly before it already reaches top_p
        drop_sorted = (cumulative - sorted_logits.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Generators = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws one code per position of ``logits`` (B, ..., K) by inverse-CDF sampling (one uniform per
    position) -> (codes (B, ...), log-probabilities of the filtered, tempered distribution (B, ..., K)).
    Computed in float32 whatever the logits' dtype; a code of probability 0 is never drawn."""
    check_sampling_arguments(temperature, top_k, top_p)
    log_probs = filter_logits(logits.float() / temperature, top_k, top_p).log_softmax(-1)
    cdf = log_probs.exp().cumsum(-1)
    u = uniform_rows(tuple(log_probs.shape[:-1]), generator, log_probs.device)
    u = (u * cdf[..., -1]).clamp_min(torch.finfo(torch.float32).tiny)
    codes = (cdf < u[..., None]).sum(-1).clamp_max(log_probs.shape[-1] - 1)
    return codes, log_probs
