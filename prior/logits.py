"""Sampling from categorical logits: temperature, top-k and top-p (nucleus) filtering, shared by both priors."""

from __future__ import annotations

import torch


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
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws one code per row of ``logits`` (..., K) -> (codes (...), log-probabilities of the filtered,
    tempered distribution (..., K)). Computed in float32 whatever the logits' dtype."""
    check_sampling_arguments(temperature, top_k, top_p)
    log_probs = filter_logits(logits.float() / temperature, top_k, top_p).log_softmax(-1)
    flat = log_probs.reshape(-1, log_probs.shape[-1]).exp()
    device = generator.device if generator is not None else flat.device
    codes = torch.multinomial(flat.to(device), 1, generator=generator).to(flat.device)
    return codes.reshape(log_probs.shape[:-1]), log_probs
