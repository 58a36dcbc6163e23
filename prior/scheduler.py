"""MaskGIT / Muse iterative parallel decoding as a diffusers scheduler (``set_timesteps`` / ``step``).

Why not diffusers' ``AmusedScheduler``: it gives already-known tokens a finite confidence (log of the largest
float), so with Gumbel noise a known token can be re-masked; it selects ``confidence < cutoff``, so ties mask
fewer tokens than the schedule says; its choice temperature is a fixed linear ramp; and it has no sampling
temperature, top-k or top-p. This scheduler keeps the MaskGIT rules exactly:

- step i of T (i = 0 .. T-1) samples every unknown token, then re-masks the ``n_i`` least confident of the
  newly sampled ones, n_i = floor(N cos(pi/2 (i+1)/T)) clamped to [1, unknown - 1] (MaskGIT), and n = 0 at the
  last step, so every token is decided after T steps;
- confidence = log p(sampled code) + tau_choice (1 - (i+1)/T) g, g ~ Gumbel(0, 1): the noise scale is
  recomputed from the base tau_choice at every step (never compounded);
- tokens known on entry (not the mask id) are never re-masked and keep their value.

Training uses the same schedule: ``mask_ratio(r)`` with r ~ U(0, 1) gives the fraction of tokens to mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

from prior.logits import Generators, gumbel_rows, sample_logits

MASKING_SCHEDULES = ("cosine", "linear", "square")


def mask_ratio(progress: torch.Tensor | float, schedule: str = "cosine") -> torch.Tensor:
    """Fraction of tokens still masked at ``progress`` in [0, 1] (1 at 0, 0 at 1)."""
    progress = torch.as_tensor(progress, dtype=torch.float64)
    if schedule == "cosine":
        return torch.cos(math.pi / 2 * progress)
    if schedule == "linear":
        return 1 - progress
    if schedule == "square":
        return 1 - progress**2
    raise ValueError(f"masking schedule must be one of {MASKING_SCHEDULES}, got {schedule!r}")


def random_training_mask(
    batch_size: int,
    num_tokens: int,
    schedule: str = "cosine",
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(B, N) bool mask for training: per sample r ~ U(0, 1), ceil(N * mask_ratio(r)) tokens (at least 1)
    chosen uniformly at random."""
    r = torch.rand(batch_size, generator=generator, device=device, dtype=torch.float64)
    counts = torch.ceil(num_tokens * mask_ratio(r, schedule).to(device)).clamp(1, num_tokens).long()
    scores = torch.rand(batch_size, num_tokens, generator=generator, device=device)
    ranks = scores.argsort(dim=1).argsort(dim=1)
    return ranks < counts[:, None]


@dataclass
class MaskedTokenSchedulerOutput(BaseOutput):
    """prev_sample: tokens after this step (mask id where still masked); pred_original_sample: the sampled
    tokens before re-masking (a preview of the final image)."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


class MaskedTokenScheduler(SchedulerMixin, ConfigMixin):
    """Iterative parallel decoding of masked tokens (MaskGIT, Chang et al. 2022; Muse, Chang et al. 2023).

    Args:
        mask_token_id: the id that marks a masked token (the prior's codebook size K).
        masking_schedule: ``"cosine"`` (MaskGIT's choice), ``"linear"`` or ``"square"``.
        choice_temperature: tau_choice, the scale of the Gumbel noise added to the confidence at step 0
            (MaskGIT uses 4.5); it decays linearly to 0 at the last step.
    """

    order = 1

    @register_to_config
    def __init__(
        self,
        mask_token_id: int,
        masking_schedule: Literal["cosine", "linear", "square"] = "cosine",
        choice_temperature: float = 4.5,
    ):
        if mask_token_id < 1:
            raise ValueError(f"mask_token_id must be >= 1 (the codebook size), got {mask_token_id}")
        mask_ratio(0.0, masking_schedule)  # validates the name
        if choice_temperature < 0:
            raise ValueError(f"choice_temperature must be >= 0, got {choice_temperature}")
        self.timesteps: torch.Tensor | None = None
        self.num_inference_steps: int | None = None

    def set_timesteps(self, num_inference_steps: int, device: torch.device | str | None = None) -> None:
        """Timesteps count down T-1 .. 0 (diffusers' convention); timestep 0 is the last step."""
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        self.num_inference_steps = num_inference_steps
        self.timesteps = torch.arange(num_inference_steps, device=device).flip(0)

    def num_to_mask(self, step_index: int, num_tokens: int, unknown: torch.Tensor) -> torch.Tensor:
        """Tokens left masked after step ``step_index`` (0-based), per sample; ``unknown`` counts masked
        tokens on entry."""
        if step_index == self.num_inference_steps - 1:
            return torch.zeros_like(unknown)
        ratio = mask_ratio((step_index + 1) / self.num_inference_steps, self.config.masking_schedule)
        scheduled = torch.full_like(unknown, int(math.floor(num_tokens * float(ratio))))
        count = torch.minimum(scheduled, unknown - 1).clamp_min(1)
        return torch.minimum(count, unknown)  # nothing to mask when nothing is unknown

    def choice_noise_scale(self, step_index: int) -> float:
        """tau_choice (1 - (i+1)/T): recomputed from the base at every step (not compounded)."""
        return self.config.choice_temperature * (1.0 - (step_index + 1) / self.num_inference_steps)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: Generators = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        return_dict: bool = True,
    ) -> MaskedTokenSchedulerOutput | tuple:
        """One decoding step.

        Args:
            model_output: logits (B, N, K) over the K codes (guidance already applied).
            timestep: an element of ``self.timesteps``.
            sample: (B, N) or (B, H, W) tokens, ``mask_token_id`` where masked.
            generator: one generator, or one per sample (see ``prior.logits``).
            temperature, top_k, top_p: how codes are drawn from the logits.
        """
        if self.timesteps is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        timestep = int(timestep)
        if not 0 <= timestep < self.num_inference_steps:
            raise ValueError(f"timestep must be in [0, {self.num_inference_steps}), got {timestep}")
        step_index = self.num_inference_steps - 1 - timestep
        shape = sample.shape
        tokens = sample.reshape(shape[0], -1)
        batch, num_tokens = tokens.shape
        if model_output.shape[:2] != (batch, num_tokens):
            raise ValueError(
                f"model_output must be (B, N, K) = ({batch}, {num_tokens}, K), got {tuple(model_output.shape)}"
            )
        mask_id = self.config.mask_token_id
        unknown = tokens == mask_id
        sampled, log_probs = sample_logits(model_output, temperature, top_k, top_p, generator)
        sampled = torch.where(unknown, sampled, tokens)
        count = self.num_to_mask(step_index, num_tokens, unknown.sum(1))
        if int(count.max()) == 0:
            prev = sampled
        else:
            confidence = log_probs.gather(-1, sampled.clamp_max(log_probs.shape[-1] - 1)[..., None])[..., 0]
            scale = self.choice_noise_scale(step_index)
            if scale > 0:
                confidence = confidence + scale * gumbel_rows(confidence, generator)
            confidence = confidence.masked_fill(~unknown, float("inf"))  # known tokens are never re-masked
            ranks = confidence.argsort(dim=1, stable=True).argsort(dim=1)
            prev = torch.where(ranks < count[:, None], torch.full_like(sampled, mask_id), sampled)
        prev, sampled = prev.reshape(shape), sampled.reshape(shape)
        if not return_dict:
            return prev, sampled
        return MaskedTokenSchedulerOutput(prev_sample=prev, pred_original_sample=sampled)
