"""Muse / MaskGIT masked-token prior over one level of an HQ-VAE's codes (paper section 5.4, appendix F.4).

Q(Z_l | Z_<l, c): a bidirectional transformer (``transformers``' BERT encoder: SDPA attention, gradient
checkpointing) over the h_l x w_l tokens of level l. Inputs per position: the token embedding (mask id K_l for
a masked token) + the embeddings of the coarser levels' codes at the same place (each coarser map upsampled by
nearest neighbour to h_l x w_l, so conditioning is spatially aligned) + a learned position; a class token is
prepended (id ``num_classes`` is the learned null class for classifier-free guidance). The coarser levels'
codes are never dropped by guidance; only the class is.

Training (``forward(..., labels=codes)``): tokens masked on the cosine schedule (``random_training_mask``),
cross-entropy on the masked positions only (MaskGIT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn


@dataclass
class MaskedPriorOutput(BaseOutput):
    """logits: (B, N, K) over the level's K codes; loss/accuracy: over the masked positions (with labels)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None


def check_class_labels(class_labels: torch.Tensor, batch: int, num_classes: int, allow_null: bool = True):
    """Labels must be (B,) integers in [0, num_classes) (or == num_classes, the null class)."""
    if class_labels.shape != (batch,) or class_labels.dtype.is_floating_point:
        raise ValueError(
            f"class_labels must be ({batch},) integers, got {tuple(class_labels.shape)} {class_labels.dtype}"
        )
    high = num_classes + 1 if allow_null else num_classes
    if class_labels.numel() and (int(class_labels.min()) < 0 or int(class_labels.max()) >= high):
        raise ValueError(
            f"class labels must lie in [0, {num_classes}) ({num_classes} = the null class), got range "
            f"[{int(class_labels.min())}, {int(class_labels.max())}]"
        )


def drop_class_labels(
    class_labels: torch.Tensor, probability: float, null_class: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replaces each label by the null class with ``probability`` (classifier-free guidance training)."""
    if probability <= 0:
        return class_labels
    drop = torch.rand(class_labels.shape, generator=generator, device=class_labels.device) < probability
    return class_labels.masked_fill(drop, null_class)


def training_class_labels(
    model, class_labels: torch.Tensor | None, batch: int, device, generator=None
) -> torch.Tensor:
    """Class labels for a training/validation batch: the null class for unconditional priors or missing labels,
    and the null class dropped in at ``model.config.class_dropout`` in train mode (classifier-free guidance)."""
    if class_labels is None or model.config.num_classes == 0:
        class_labels = torch.full((batch,), model.null_class, dtype=torch.long, device=device)
    probability = model.config.class_dropout if model.training else 0.0
    return drop_class_labels(class_labels.long(), probability, model.null_class, generator)


class MaskedTokenTransformer(ModelMixin, ConfigMixin):
    """Class-conditional masked-token transformer for one code level.

    Args:
        codebook_size: K of the modelled level; id K is the mask token.
        height, width: the level's code map (h_l, w_l).
        num_classes: class count (0: unconditional; the class token is then always the null class).
        condition_codebook_sizes / condition_shapes: K and (h, w) of each coarser level it is conditioned on
            (coarsest first); each (h, w) must divide (height, width).
        hidden_size, num_layers, num_heads, intermediate_size: the BERT encoder (intermediate 4x by default).
        dropout: hidden and attention dropout. class_dropout: p of replacing the class by the null class
            in training (Muse/MaskGIT: 0.1).
    """

    _supports_gradient_checkpointing = (
        False  # transformers' own switch is used (enable_gradient_checkpointing)
    )

    @register_to_config
    def __init__(
        self,
        codebook_size: int,
        height: int,
        width: int,
        num_classes: int = 0,
        condition_codebook_sizes: list[int] | tuple[int, ...] = (),
        condition_shapes: list[list[int]] | tuple = (),
        hidden_size: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
        class_dropout: float = 0.1,
        masking_schedule: str = "cosine",
    ):
        super().__init__()
        from transformers import BertConfig, BertModel

        if codebook_size < 2 or height < 1 or width < 1 or num_classes < 0:
            raise ValueError(
                f"need codebook_size >= 2, height/width >= 1, num_classes >= 0; got {codebook_size}, "
                f"{height}x{width}, {num_classes}"
            )
        if len(condition_codebook_sizes) != len(condition_shapes):
            raise ValueError(
                f"condition_codebook_sizes ({len(condition_codebook_sizes)}) and condition_shapes "
                f"({len(condition_shapes)}) must have one entry per conditioning level"
            )
        for shape in condition_shapes:
            if len(shape) != 2 or height % shape[0] or width % shape[1]:
                raise ValueError(f"condition shape {tuple(shape)} must divide the level's {height}x{width}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
        self.num_tokens = height * width
        self.mask_token_id = codebook_size
        self.null_class = num_classes
        config = BertConfig(
            vocab_size=codebook_size + 1,  # the BERT word embeddings are the code embeddings (+ mask)
            hidden_size=hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate_size or 4 * hidden_size,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            max_position_embeddings=self.num_tokens + 1,
            type_vocab_size=1,
            pad_token_id=None,
            attn_implementation="sdpa",
        )
        self.backbone = BertModel(config, add_pooling_layer=False)
        self.class_embedding = nn.Embedding(num_classes + 1, hidden_size)
        self.condition_embeddings = nn.ModuleList(
            nn.Embedding(k, hidden_size) for k in condition_codebook_sizes
        )
        # MaskGIT's MLM head: dense -> GELU -> LayerNorm -> logits over the K codes (never the mask id)
        self.head = nn.Sequential(
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, codebook_size),
        )

    def enable_gradient_checkpointing(self) -> None:
        self.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def disable_gradient_checkpointing(self) -> None:
        self.backbone.gradient_checkpointing_disable()

    # -- validation ------------------------------------------------------------------------------------------
    def _check_inputs(self, tokens, class_labels, condition):
        cfg = self.config
        if tokens.ndim not in (2, 3) or tokens.shape[1:] not in ((self.num_tokens,), (cfg.height, cfg.width)):
            raise ValueError(
                f"tokens must be (B, {cfg.height}, {cfg.width}) or (B, {self.num_tokens}), got {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) > self.mask_token_id):
            raise ValueError(
                f"tokens must lie in [0, {cfg.codebook_size}] ({cfg.codebook_size} = mask), got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        if class_labels is not None:
            check_class_labels(class_labels, tokens.shape[0], cfg.num_classes)
        condition = list(condition or [])
        if len(condition) != len(cfg.condition_codebook_sizes):
            raise ValueError(
                f"this prior is conditioned on {len(cfg.condition_codebook_sizes)} coarser level(s), got "
                f"{len(condition)} condition map(s)"
            )
        for i, (codes, size, shape) in enumerate(
            zip(condition, cfg.condition_codebook_sizes, cfg.condition_shapes)
        ):
            if tuple(codes.shape) != (tokens.shape[0], *shape):
                raise ValueError(
                    f"condition map {i} must be ({tokens.shape[0]}, {shape[0]}, {shape[1]}), got {tuple(codes.shape)}"
                )
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= size):
                raise ValueError(f"condition map {i} must lie in [0, {size}), got max {int(codes.max())}")
        return condition

    # -- forward ---------------------------------------------------------------------------------------------
    def embed_condition(self, condition: list[torch.Tensor]) -> torch.Tensor | None:
        """Sum of the coarser levels' code embeddings, upsampled (nearest) to this level's grid: (B, N, d)."""
        height, width = self.config.height, self.config.width
        total = None
        for codes, embedding in zip(condition, self.condition_embeddings):
            fy, fx = height // codes.shape[1], width // codes.shape[2]
            up = codes.long().repeat_interleave(fy, 1).repeat_interleave(fx, 2)
            e = embedding(up.reshape(up.shape[0], -1))
            total = e if total is None else total + e
        return total

    def forward(
        self,
        tokens: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        condition: list[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> MaskedPriorOutput | tuple:
        """Logits (B, N, K) for ``tokens`` (mask id where masked).

        Args:
            tokens: (B, h, w) or (B, N) ids in [0, K], K = masked.
            class_labels: (B,) in [0, num_classes]; ``num_classes`` (or None) is the null class.
            condition: the coarser levels' code maps, coarsest first (the same count as at construction).
            labels: the true codes; when given, the loss is the cross-entropy on masked positions.
        """
        condition = self._check_inputs(tokens, class_labels, condition)
        batch = tokens.shape[0]
        tokens = tokens.reshape(batch, -1).long()
        if class_labels is None:
            class_labels = torch.full((batch,), self.null_class, dtype=torch.long, device=tokens.device)
        x = self.backbone.embeddings.word_embeddings(tokens)
        extra = self.embed_condition(condition)
        if extra is not None:
            x = x + extra
        x = torch.cat([self.class_embedding(class_labels.long())[:, None], x], dim=1)
        hidden = self.backbone(inputs_embeds=x).last_hidden_state[:, 1:]
        logits = self.head(hidden)
        loss = accuracy = None
        if labels is not None:
            labels = labels.reshape(batch, -1).long()
            masked = tokens == self.mask_token_id
            if not masked.any():
                raise ValueError("labels were given but no token is masked")
            selected = logits[masked].float()
            loss = F.cross_entropy(selected, labels[masked])
            accuracy = (selected.argmax(-1) == labels[masked]).float().mean()
        if not return_dict:
            return (logits, loss, accuracy)
        return MaskedPriorOutput(logits=logits, loss=loss, accuracy=accuracy)

    def training_inputs(
        self,
        codes: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked tokens (B, N), class labels with the null class dropped in at ``class_dropout`` in train mode)."""
        from prior.scheduler import random_training_mask

        batch = codes.shape[0]
        codes = codes.reshape(batch, -1).long()
        mask = random_training_mask(
            batch, self.num_tokens, self.config.masking_schedule, generator=generator, device=codes.device
        )
        tokens = codes.masked_fill(mask, self.mask_token_id)
        return tokens, training_class_labels(self, class_labels, batch, codes.device, generator)

    @property
    def level(self) -> int:
        """The code level this prior models: the number of coarser levels it is conditioned on."""
        return len(self.config.condition_shapes)

    def training_batch(self, codes: list[torch.Tensor], class_labels, generator=None) -> dict:
        """``forward``'s keyword arguments for one training batch of every level's codes (coarsest first):
        this level's codes masked on the training schedule, the coarser levels as condition, class dropout."""
        target = codes[self.level]
        tokens, labels = self.training_inputs(target, class_labels, generator)
        return {"tokens": tokens, "class_labels": labels, "condition": codes[: self.level], "labels": target}

    # -- sampling --------------------------------------------------------------------------------------------
    def make_scheduler(self, choice_temperature: float | None = None):
        """The MaskGIT scheduler of this prior, on the masking schedule it was trained with (one definition)."""
        from prior.scheduler import MaskedTokenScheduler

        extra = {} if choice_temperature is None else {"choice_temperature": choice_temperature}
        return MaskedTokenScheduler(self.mask_token_id, self.config.masking_schedule, **extra)

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.Tensor | None = None,
        condition: list[torch.Tensor] | None = None,
        *,
        scheduler=None,
        num_inference_steps: int | None = None,
        guidance_scale: float = 1.0,
        guidance_schedule: str = "constant",
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        choice_temperature: float | None = None,
        generator=None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Codes (B, h, w) of this level by MaskGIT decoding, given the class and the coarser levels' codes.

        ``scheduler``: a ``MaskedTokenScheduler`` (or its config) whose settings to use (its mask token is this
        prior's); None builds ``make_scheduler()``. ``choice_temperature`` overrides the scheduler's.
        ``num_inference_steps``: None = 12."""
        from prior.sampling import sample_masked
        from prior.scheduler import MaskedTokenScheduler

        if scheduler is None:
            scheduler = self.make_scheduler(choice_temperature)
        else:
            config = scheduler.config if isinstance(scheduler, MaskedTokenScheduler) else scheduler
            overrides = {"mask_token_id": self.mask_token_id}
            if choice_temperature is not None:
                overrides["choice_temperature"] = choice_temperature
            scheduler = MaskedTokenScheduler.from_config(config, **overrides)
        return sample_masked(
            self,
            scheduler,
            class_labels,
            condition,
            num_inference_steps=12 if num_inference_steps is None else num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            batch_size=batch_size,
            progress=progress,
        )


class MaskedPriorStack(ModelMixin, ConfigMixin):
    """The masked priors of every code level, coarsest first, as one model (one ``HQVAEPipeline`` component).

    ``level_configs[l]`` is the constructor config of level l's ``MaskedTokenTransformer``; level l must be
    conditioned on exactly the levels before it. Build one from trained priors with ``from_priors``.
    """

    @register_to_config
    def __init__(self, level_configs: list[dict]):
        super().__init__()
        if not level_configs:
            raise ValueError("level_configs must hold one prior config per code level")
        self.levels = nn.ModuleList()
        for level, config in enumerate(level_configs):
            kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
            prior = MaskedTokenTransformer(**kwargs)
            previous = [(c["codebook_size"], [c["height"], c["width"]]) for c in level_configs[:level]]
            got = list(
                zip(prior.config.condition_codebook_sizes, [list(s) for s in prior.config.condition_shapes])
            )
            if got != previous:
                raise ValueError(
                    f"the level-{level} prior is conditioned on {got} (codebook size, shape); the levels before "
                    f"it are {previous}"
                )
            if prior.config.num_classes != level_configs[0].get("num_classes", 0):
                raise ValueError("every level's prior must have the same num_classes")
            self.levels.append(prior)

    @classmethod
    def from_priors(cls, priors: list[MaskedTokenTransformer]) -> MaskedPriorStack:
        configs = [{k: v for k, v in dict(p.config).items() if not k.startswith("_")} for p in priors]
        stack = cls(level_configs=configs)
        for level, prior in zip(stack.levels, priors):
            level.load_state_dict(prior.state_dict())
        return stack.to(priors[0].device)

    @property
    def num_classes(self) -> int:
        return self.levels[0].config.num_classes

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.Tensor | None = None,
        *,
        num_levels: int | None = None,
        scheduler=None,
        num_inference_steps: int | list[int] | None = None,
        guidance_scale: float | list[float] = 1.0,
        guidance_schedule: str = "constant",
        temperature: float | list[float] = 1.0,
        top_k: int | None | list[int | None] = None,
        top_p: float | None | list[float | None] = None,
        choice_temperature: float | None = None,
        generator=None,
        batch_size: int | None = None,
        use_cache: bool = True,
        progress: bool = False,
    ) -> list[torch.Tensor]:
        """Codes of the top ``num_levels`` levels (all by default), coarse to fine, each level conditioned on
        the class and the levels sampled before it. Every setting is one value or a list with one per level.
        ``use_cache`` is the RQ-Transformer's switch (accepted so both prior families share one signature; a
        masked prior has no cache)."""
        from prior.sampling import check_decoding_settings

        levels = len(self.levels)
        num_levels = levels if num_levels is None else num_levels
        if not isinstance(num_levels, int) or not 1 <= num_levels <= levels:
            raise ValueError(f"num_levels must be an integer in [1, {levels}], got {num_levels!r}")
        per_level = {
            name: per_level_values(value, levels, name)
            for name, value in (
                ("num_inference_steps", num_inference_steps),
                ("guidance_scale", guidance_scale),
                ("temperature", temperature),
                ("top_k", top_k),
                ("top_p", top_p),
            )
        }
        check_decoding_settings(num_inference_steps, guidance_schedule)
        codes: list[torch.Tensor] = []
        for level in range(num_levels):
            settings = {name: values[level] for name, values in per_level.items()}
            codes.append(
                self.levels[level].sample(
                    class_labels,
                    list(codes),
                    scheduler=scheduler,
                    guidance_schedule=guidance_schedule,
                    choice_temperature=choice_temperature,
                    generator=generator,
                    batch_size=batch_size,
                    progress=progress,
                    **settings,
                )
            )
        return codes


def per_level_values(value, levels: int, name: str) -> list:
    """``value`` for each of ``levels`` levels: a list must have one entry per level; anything else repeats."""
    if isinstance(value, (list, tuple)):
        if len(value) != levels:
            raise ValueError(f"{name} must be one value or {levels} (one per level), got {len(value)}")
        return list(value)
    return [value] * levels
