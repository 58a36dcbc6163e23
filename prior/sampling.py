"""Sampling loops of the two priors (used by training grids and by ``pipelines.HQVAEPipeline``).

Classifier-free guidance follows diffusers' convention: logits = u + s (c - u) with c conditioned on the class
and u on the null class; s = 1 is plain conditional sampling (one pass), s = 0 unconditional, s > 1 guided.
Conditioning on coarser code levels is never dropped: both passes see it.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Sequence

import torch

from prior.logits import Generators, check_sampling_arguments, gumbel_rows, sample_logits, uniform_rows
from prior.masked import MaskedTokenTransformer, check_class_labels
from prior.rq_transformer import RQTransformer
from prior.scheduler import MaskedTokenScheduler
from tokenizer.console import progress_bar

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")


def guidance_at(step_index: int, num_steps: int, guidance_scale: float, schedule: str = "constant") -> float:
    """The guidance scale of step ``step_index``: 1 + (s - 1) w_i, w_i = 1 (constant), (i+1)/T (linear, Muse's
    increasing guidance) or (1 - cos(pi (i+1)/T)) / 2 (cosine)."""
    if schedule == "constant":
        weight = 1.0
    elif schedule == "linear":
        weight = (step_index + 1) / num_steps
    elif schedule == "cosine":
        weight = (1 - math.cos(math.pi * (step_index + 1) / num_steps)) / 2
    else:
        raise ValueError(f"guidance_schedule must be one of {GUIDANCE_SCHEDULES}, got {schedule!r}")
    return 1.0 + (guidance_scale - 1.0) * weight


def cached_forward(module: torch.nn.Module, inputs: torch.Tensor, cache):
    """``module(inputs_embeds=inputs)`` of a transformers decoder feeding and growing the KV ``cache`` in place.

    transformers 5.x takes the cache as ``cache`` (``past_key_values`` is deprecated there, removed in 5.40);
    4.x as ``past_key_values``. The ``DynamicCache`` is updated in place, so the output's cache field (whose
    old name also warns) is not read back."""
    return module(inputs_embeds=inputs, use_cache=True, **{_cache_argument(type(module)): cache})


@functools.cache
def _cache_argument(decoder: type) -> str:
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def check_guidance(guidance_scale: float, num_classes: int) -> None:
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0 (1 = no guidance), got {guidance_scale}")
    if guidance_scale != 1 and num_classes == 0:
        raise ValueError("guidance_scale != 1 needs a class-conditional prior (this one has num_classes=0)")


def check_decoding_settings(num_inference_steps, guidance_schedule: str) -> None:
    """MaskGIT decoding settings (one value or one per level), checked by every prior family alike, so that a
    bad value is an error even where a family does not use it."""
    steps = num_inference_steps if isinstance(num_inference_steps, (list, tuple)) else [num_inference_steps]
    for value in steps:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {value!r}")
    guidance_at(0, 1, 1.0, guidance_schedule)  # validates the schedule's name


def guided(logits_fn, batch: int, scale: float):
    """Runs ``logits_fn(doubled)`` once on [cond; uncond] when guiding and mixes the halves."""
    if scale == 1.0:
        return logits_fn(False)
    return mix_guidance(logits_fn(True), batch, scale)


def mix_guidance(logits: torch.Tensor, batch: int, scale: float) -> torch.Tensor:
    """Classifier-free guidance of logits stacked [cond; uncond] along the batch: u + s (c - u), float32."""
    conditional, unconditional = logits.float().split(batch)
    return unconditional + scale * (conditional - unconditional)


def _labels(model, class_labels: torch.Tensor | None, batch: int | None, device) -> torch.Tensor:
    if class_labels is None:
        if batch is None:
            raise ValueError("give class_labels or batch_size")
        return torch.full((batch,), model.null_class, dtype=torch.long, device=device)
    class_labels = torch.as_tensor(class_labels, device=device)
    check_class_labels(class_labels, class_labels.shape[0], model.config.num_classes)  # integers, in range
    class_labels = class_labels.long()
    return class_labels


@torch.no_grad()
def sample_masked(
    model: MaskedTokenTransformer,
    scheduler: MaskedTokenScheduler,
    class_labels: torch.Tensor | None = None,
    condition: list[torch.Tensor] | None = None,
    num_inference_steps: int = 12,
    guidance_scale: float = 1.0,
    guidance_schedule: str = "constant",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: Generators = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Codes (B, h, w) of one level by iterative parallel decoding (MaskGIT), given the class and the coarser
    levels' codes."""
    device = model.device
    check_guidance(guidance_scale, model.config.num_classes)
    check_sampling_arguments(temperature, top_k, top_p)
    guidance_at(0, 1, guidance_scale, guidance_schedule)  # validates the schedule name
    if scheduler.config.mask_token_id != model.mask_token_id:
        raise ValueError(
            f"scheduler mask_token_id {scheduler.config.mask_token_id} != the prior's {model.mask_token_id}"
        )
    labels = _labels(model, class_labels, batch_size, device)
    batch = labels.shape[0]
    condition = [c.to(device) for c in (condition or [])]
    tokens = torch.full((batch, model.num_tokens), model.mask_token_id, dtype=torch.long, device=device)
    null = torch.full_like(labels, model.null_class)
    scheduler.set_timesteps(num_inference_steps, device=device)
    for i, t in enumerate(
        progress_bar(scheduler.timesteps, desc="masked prior", disable=not progress, leave=False)
    ):
        scale = guidance_at(i, num_inference_steps, guidance_scale, guidance_schedule)

        def logits_fn(doubled: bool, tokens=tokens):
            if not doubled:
                return model(tokens, labels, condition).logits
            return model(
                torch.cat([tokens, tokens]), torch.cat([labels, null]), [torch.cat([c, c]) for c in condition]
            ).logits

        logits = guided(logits_fn, batch, scale)
        tokens = scheduler.step(logits, t, tokens, generator, temperature, top_k, top_p).prev_sample
    return tokens.reshape(batch, model.config.height, model.config.width)


def _per_depth(value, depth: int, name: str) -> list:
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != depth:
            raise ValueError(f"{name} must be one value or {depth} (one per depth), got {len(value)}")
        return list(value)
    return [value] * depth


def depth_settings(temperature, top_k, top_p, depth: int) -> tuple[list, list, list]:
    """Temperature, top-k and top-p for each of ``depth`` depths (one value or one per depth), checked."""
    values = (_per_depth(temperature, depth, "temperature"), _per_depth(top_k, depth, "top_k"),
              _per_depth(top_p, depth, "top_p"))  # fmt: skip
    for settings in zip(*values):
        check_sampling_arguments(*settings)
    return values


@torch.no_grad()
def sample_rq(
    model: RQTransformer,
    class_labels: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    temperature: float | Sequence[float] = 1.0,
    top_k: int | None | Sequence[int | None] = None,
    top_p: float | None | Sequence[float | None] = None,
    generator: Generators = None,
    use_cache: bool = True,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Codes (B, h, w, D) from the RQ-Transformer, position by position and depth by depth.

    ``use_cache=False`` recomputes every prefix (quadratic); it gives the same codes as the KV-cached loop
    under the same generator (to floating-point rounding of the logits).
    """
    from transformers import DynamicCache

    cfg = model.config
    depth = cfg.depth
    device = model.device
    check_guidance(guidance_scale, cfg.num_classes)
    temperatures, top_ks, top_ps = depth_settings(temperature, top_k, top_p, depth)
    labels = _labels(model, class_labels, batch_size, device)
    batch = labels.shape[0]
    doubled = guidance_scale != 1.0
    run_labels = torch.cat([labels, torch.full_like(labels, model.null_class)]) if doubled else labels
    runs = run_labels.shape[0]
    codes = torch.zeros(batch, model.num_tokens, depth, dtype=torch.long, device=device)
    spatial_cache = DynamicCache() if use_cache else None
    spatial_in = model.start_tokens(run_labels)  # (runs, 1, d): the inputs not yet fed
    for t in progress_bar(range(model.num_tokens), desc="RQ-Transformer", disable=not progress, leave=False):
        if use_cache:
            out = cached_forward(model.spatial, spatial_in, spatial_cache)
        else:
            out = model.spatial(inputs_embeds=spatial_in)
        context = out.last_hidden_state[:, -1]  # h_t, (runs, d)
        depth_cache = DynamicCache() if use_cache else None
        position = codes[:, t]  # (B, D), filled depth by depth
        for d in range(depth):
            known = position[:, :d].repeat(runs // batch, 1)
            inputs = model.depth_inputs(context, known)  # (runs, d+1, hidden)
            if use_cache:
                hidden = cached_forward(model.depth_transformer, inputs[:, -1:], depth_cache)
            else:
                hidden = model.depth_transformer(inputs_embeds=inputs)
            head = model.heads[d]
            scale = guidance_scale
            logits = guided(lambda _, h=hidden.last_hidden_state[:, -1], head=head: head(h), batch, scale)
            position[:, d], _ = sample_logits(logits, temperatures[d], top_ks[d], top_ps[d], generator)
        if t + 1 < model.num_tokens:
            new = model.spatial_inputs(position[:, None].repeat(runs // batch, 1, 1), t)
            spatial_in = new if use_cache else torch.cat([spatial_in, new], dim=1)
    return codes.reshape(batch, cfg.height, cfg.width, depth)


@torch.no_grad()
def sample_draft_and_revise(
    model,
    scheduler,
    class_labels: torch.Tensor | None = None,
    draft_steps: int = 8,
    revise_steps: int = 4,
    guidance_scale: float = 1.0,
    guidance_schedule: str = "constant",
    temperature: float | Sequence[float] = 1.0,
    top_k: int | None | Sequence[int | None] = None,
    top_p: float | None | Sequence[float | None] = None,
    generator: Generators = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Codes (B, h, w, D) from a ``ContextualRQTransformer`` by draft-and-revise (Lee et al. 2022b).

    Draft: T_draft steps of MaskGIT-style decoding over positions (``MaskedTokenScheduler``'s schedule and
    annealed confidence noise), each sampling the D codes of every masked position depth by depth; the
    confidence of a position is the sum of its codes' log-probabilities. Revise: ``scheduler.num_revisions``
    rounds, each a random partition of the positions (from each image's own generator) into T_revise groups,
    resampled group by group given all other positions. ``guidance_schedule`` ramps the guidance over the draft
    steps; the revision uses the full scale."""
    cfg = model.config
    depth, device, num_tokens = cfg.depth, model.device, model.num_tokens
    check_guidance(guidance_scale, cfg.num_classes)
    temperatures, top_ks, top_ps = depth_settings(temperature, top_k, top_p, depth)
    labels = _labels(model, class_labels, batch_size, device)
    batch = labels.shape[0]
    null = torch.full_like(labels, model.null_class)

    def predict(codes: torch.Tensor, masked: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Every position's D codes sampled depth by depth given the unmasked positions, and their log-prob sum."""
        doubled = scale != 1.0
        run_codes = torch.cat([codes, codes]) if doubled else codes
        run_mask = torch.cat([masked, masked]) if doubled else masked
        context = model.context(run_codes, run_mask, torch.cat([labels, null]) if doubled else labels)
        runs = context.shape[0]
        rows = context.reshape(runs * num_tokens, -1)
        # the depth transformer runs on the masked positions only (rows are independent); the other rows'
        # logits stay 0 and their draws are discarded, so every image still consumes its generator alike
        active = masked.repeat(runs // batch, 1).reshape(-1).nonzero().squeeze(1)
        sampled = torch.zeros(batch, num_tokens, depth, dtype=torch.long, device=device)
        confidence = torch.zeros(batch, num_tokens, device=device)
        for d in range(depth):
            known = sampled[..., :d].repeat(runs // batch, 1, 1).reshape(runs * num_tokens, d)
            logits = rows.new_zeros(runs * num_tokens, model.sizes[d], dtype=torch.float32)
            logits[active] = model.depth_logits(rows[active], known[active]).float()
            logits = logits.reshape(runs, num_tokens, -1)
            logits = mix_guidance(logits, batch, scale) if doubled else logits
            sampled[..., d], log_probs = sample_logits(
                logits, temperatures[d], top_ks[d], top_ps[d], generator
            )
            confidence += log_probs.gather(-1, sampled[..., d : d + 1])[..., 0]
        return sampled, confidence

    codes = torch.zeros(batch, num_tokens, depth, dtype=torch.long, device=device)
    masked = torch.ones(batch, num_tokens, dtype=torch.bool, device=device)
    draft = MaskedTokenScheduler(1, scheduler.config.masking_schedule, scheduler.config.choice_temperature)
    draft.set_timesteps(draft_steps, device=device)
    revisions = scheduler.config.num_revisions
    total = draft_steps + revisions * revise_steps
    bar = progress_bar(total=total, desc="draft-and-revise", disable=not progress, leave=False)
    for i in range(draft_steps):
        scale = guidance_at(i, draft_steps, guidance_scale, guidance_schedule)
        sampled, confidence = predict(codes, masked, scale)
        codes = torch.where(masked[..., None], sampled, codes)
        count = draft.num_to_mask(i, num_tokens, masked.sum(1))
        if int(count.max()) > 0:
            noise = draft.choice_noise_scale(i)
            if noise > 0:
                confidence = confidence + noise * gumbel_rows(confidence, generator)
            confidence = confidence.masked_fill(~masked, float("inf"))  # decided positions stay decided
            ranks = confidence.argsort(dim=1, stable=True).argsort(dim=1)
            masked = ranks < count[:, None]
        else:
            masked = torch.zeros_like(masked)
        bar.update(1)
    for _ in range(revisions):
        # a random partition of the positions per image: position n goes to group rank(n) mod T_revise
        order = uniform_rows((batch, num_tokens), generator, device).argsort(dim=1).argsort(dim=1)
        groups = order % revise_steps
        for g in range(revise_steps):
            masked = groups == g
            sampled, _ = predict(codes, masked, guidance_scale)
            codes = torch.where(masked[..., None], sampled, codes)
            bar.update(1)
    bar.close()
    return codes.reshape(batch, cfg.height, cfg.width, depth)
