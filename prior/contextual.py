"""Contextual RQ-Transformer (draft-and-revise; Lee et al. 2022b, "Draft-and-Revise: Effective Image Generation
with Contextual RQ-Transformer"), the paper's best FFHQ prior (Table 3), for the stacked codes of an RSQ-VAE /
RQ-VAE.

Codes S (B, h, w, D): D residual codes at every spatial position.

- Bidirectional spatial transformer (``transformers``' BERT encoder, SDPA): input at position t the sum of its
  D code embeddings sum_d e_d(S_{t,d}), or a learned mask embedding where the position is masked; a class token
  is prepended (``num_classes`` = the learned null class for classifier-free guidance); output h_t is the
  context of position t given every unmasked position.
- Depth transformer (causal, Llama), as in the RQ-Transformer: v_{t,0} = h_t + q_0,
  v_{t,d} = sum_{d' < d} e_{d'}(S_{t,d'}) + q_d; its output at d predicts S_{t,d} through head d.

Training (``forward(codes, mask, class_labels)``): a random fraction of positions per sample is masked on the
cosine schedule (MaskGIT's, as the paper's "mask-and-predict" pre-training), and the loss is the cross-entropy
of every depth's code at the masked positions only.

Sampling (``sample``, ``DraftAndReviseScheduler``): *draft* -- from all positions masked, T_draft steps each
sample the D codes of every masked position (depth by depth) and keep the most confident positions on the
cosine schedule (confidence: the sum over depths of log p of the sampled codes, plus annealed Gumbel noise); then
*revise* -- M rounds, each a random partition of the positions into T_revise groups; group by group, its
positions are re-masked and resampled given all the others. Classifier-free guidance mixes the logits of every
depth (u + s (c - u)); every image draws from its own generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from torch import nn

from prior.masked import check_class_labels, training_class_labels
from prior.rq_transformer import ResidualStackPrior
from prior.scheduler import MASKING_SCHEDULES


@dataclass
class ContextualRQOutput(BaseOutput):
    """logits: per depth d, (B, N, K_d); loss / accuracy: over the masked positions' codes (with a mask)."""

    logits: list[torch.Tensor]
    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None


class DraftAndReviseScheduler(SchedulerMixin, ConfigMixin):
    """The decoding settings of the contextual RQ-Transformer (a pipeline component, saved with it).

    Args:
        masking_schedule: the fraction of positions still masked after draft step i of T: ``mask_ratio``.
        num_revisions: M, the revise rounds (the paper's default setting uses 2).
        choice_temperature: tau_choice of the draft's confidence noise (annealed linearly to 0).
        draft_steps, revise_steps: T_draft and T_revise when ``num_inference_steps`` does not give them.
    """

    config_name = "scheduler_config.json"

    @register_to_config
    def __init__(
        self,
        masking_schedule: str = "cosine",
        num_revisions: int = 2,
        choice_temperature: float = 4.5,
        draft_steps: int = 8,
        revise_steps: int = 4,
    ):
        if masking_schedule not in MASKING_SCHEDULES:
            raise ValueError(f"masking_schedule must be one of {MASKING_SCHEDULES}, got {masking_schedule!r}")
        if num_revisions < 0 or draft_steps < 1 or revise_steps < 1 or choice_temperature < 0:
            raise ValueError(
                "need num_revisions >= 0, draft_steps >= 1, revise_steps >= 1 and choice_temperature >= 0, got "
                f"{num_revisions}, {draft_steps}, {revise_steps}, {choice_temperature}"
            )

    def steps(self, num_inference_steps: int | list[int] | None) -> tuple[int, int]:
        """(T_draft, T_revise) from ``num_inference_steps``: None, T_draft, or [T_draft, T_revise]."""
        if num_inference_steps is None:
            return self.config.draft_steps, self.config.revise_steps
        if isinstance(num_inference_steps, int):
            return num_inference_steps, self.config.revise_steps
        if len(num_inference_steps) != 2:
            raise ValueError(
                f"num_inference_steps for draft-and-revise is T_draft or [T_draft, T_revise], got {num_inference_steps}"
            )
        return int(num_inference_steps[0]), int(num_inference_steps[1])


class ContextualRQTransformer(ResidualStackPrior, ModelMixin, ConfigMixin):
    """Class-conditional contextual RQ-Transformer (bidirectional over positions, causal over depths).

    Args:
        codebook_sizes: K_d per depth (or one int). depth: D. height, width: the code map.
        num_classes: class count (0: unconditional). hidden_size, num_heads, spatial_layers (BERT),
        depth_layers (Llama), intermediate_size (4x by default), dropout, class_dropout (p of the null class in
        training), masking_schedule (training masks; also the draft's default schedule).
    """

    @register_to_config
    def __init__(
        self,
        codebook_sizes: list[int] | int,
        depth: int,
        height: int,
        width: int,
        num_classes: int = 0,
        hidden_size: int = 256,
        num_heads: int = 4,
        spatial_layers: int = 4,
        depth_layers: int = 2,
        intermediate_size: int | None = None,
        dropout: float = 0.1,
        class_dropout: float = 0.1,
        masking_schedule: str = "cosine",
    ):
        super().__init__()
        from transformers import BertConfig, BertModel

        if masking_schedule not in MASKING_SCHEDULES:
            raise ValueError(f"masking_schedule must be one of {MASKING_SCHEDULES}, got {masking_schedule!r}")
        self._build_stack(codebook_sizes, depth, height, width, num_classes, hidden_size, num_heads, depth_layers,
                          intermediate_size, dropout)  # fmt: skip
        intermediate = intermediate_size or 4 * hidden_size
        self.mask_embedding = nn.Parameter(torch.zeros(hidden_size))
        nn.init.normal_(self.mask_embedding, std=0.02)
        bert = BertConfig(
            vocab_size=1,
            hidden_size=hidden_size,
            num_hidden_layers=spatial_layers,
            num_attention_heads=num_heads,
            intermediate_size=intermediate,
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
            max_position_embeddings=self.num_tokens + 1,
            type_vocab_size=1,
            pad_token_id=None,
            attn_implementation="sdpa",
        )
        self.spatial = BertModel(bert, add_pooling_layer=False)
        # inputs come as embeddings; an unused table would break DDP
        self.spatial.embeddings.word_embeddings = None

    # -- pieces of training and sampling (check_codes, embed_codes: ResidualStackPrior) ------------------------
    def context(self, flat: torch.Tensor, mask: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        """h (B, N, d): the bidirectional context of every position; ``flat`` (B, N, D), ``mask`` (B, N)."""
        x = self.embed_codes(flat).sum(-2)
        x = torch.where(mask[..., None], self.mask_embedding.to(x.dtype), x)
        x = torch.cat([self.class_embedding(class_labels.long())[:, None], x], dim=1)
        return self.spatial(inputs_embeds=self.embedding_dropout(x)).last_hidden_state[:, 1:]

    def depth_logits(self, context: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Logits of depth d' = known.shape[-1] for rows ``context`` (R, d) given their first d' codes (R, d')."""
        parts = [context[:, None]]
        if known.shape[-1]:
            parts.append(self.embed_codes(known).cumsum(-2))
        x = torch.cat(parts, dim=1) + self.depth_position[: known.shape[-1] + 1]
        hidden = self.depth_transformer(inputs_embeds=x).last_hidden_state[:, -1]
        return self.heads[known.shape[-1]](hidden)

    # -- training ----------------------------------------------------------------------------------------------
    def forward(
        self,
        codes: torch.Tensor,
        mask: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> ContextualRQOutput | tuple:
        """Logits of every depth at every position (teacher-forced over depths), given the unmasked positions;
        the loss and accuracy are over the masked positions' codes only.

        Args:
            codes: (B, h, w, D) code indices (the masked positions' values are the targets).
            mask: (B, h, w) or (B, N) bool, True where a position is masked (at least one per batch).
            class_labels: (B,) in [0, num_classes]; ``num_classes`` (or None) is the null class.
        """
        self.check_codes(codes)
        batch, depth = codes.shape[0], self.config.depth
        mask = mask.reshape(batch, -1).bool()
        if mask.shape[1] != self.num_tokens:
            raise ValueError(f"mask must have {self.num_tokens} positions per item, got {mask.shape[1]}")
        if not mask.any():
            raise ValueError("no position is masked: the loss is over masked positions")
        if class_labels is None:
            class_labels = torch.full((batch,), self.null_class, dtype=torch.long, device=codes.device)
        check_class_labels(class_labels, batch, self.config.num_classes)
        flat = codes.reshape(batch, self.num_tokens, depth).long()
        context = self.context(flat, mask, class_labels)  # (B, N, d)
        depth_in = torch.cat([context[:, :, None], self.embed_codes(flat[..., :-1]).cumsum(-2)], dim=2)
        depth_in = depth_in + self.depth_position
        hidden = self.depth_transformer(
            inputs_embeds=self.embedding_dropout(depth_in.reshape(batch * self.num_tokens, depth, -1))
        ).last_hidden_state.reshape(batch, self.num_tokens, depth, -1)
        logits = [head(hidden[:, :, d]) for d, head in enumerate(self.heads)]
        losses = [F.cross_entropy(lg[mask].float(), flat[..., d][mask]) for d, lg in enumerate(logits)]
        correct = [(lg[mask].argmax(-1) == flat[..., d][mask]).float().mean() for d, lg in enumerate(logits)]
        loss, accuracy = torch.stack(losses).mean(), torch.stack(correct).mean()
        if not return_dict:
            return (logits, loss, accuracy)
        return ContextualRQOutput(logits=logits, loss=loss, accuracy=accuracy)

    def training_inputs(self, codes: torch.Tensor, class_labels=None, generator=None):
        """(mask (B, N) on the training schedule, class labels with class dropout in train mode)."""
        from prior.scheduler import random_training_mask

        batch = codes.shape[0]
        mask = random_training_mask(
            batch, self.num_tokens, self.config.masking_schedule, generator=generator, device=codes.device
        )
        return mask, training_class_labels(self, class_labels, batch, codes.device, generator)

    def training_batch(self, codes: list[torch.Tensor], class_labels, generator=None) -> dict:
        """``forward``'s keyword arguments for one training batch: the stacked residual codes (B, h, w, D), a
        training mask and the class labels with class dropout."""
        stacked = torch.stack(codes, dim=-1)
        mask, labels = self.training_inputs(stacked, class_labels, generator)
        return {"codes": stacked, "mask": mask, "class_labels": labels}

    # -- sampling ----------------------------------------------------------------------------------------------
    def make_scheduler(self, choice_temperature: float | None = None) -> DraftAndReviseScheduler:
        extra = {} if choice_temperature is None else {"choice_temperature": choice_temperature}
        return DraftAndReviseScheduler(self.config.masking_schedule, **extra)

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.Tensor | None = None,
        condition: list[torch.Tensor] | None = None,
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
        """Codes of every depth, (B, h, w) each (the top ``num_levels`` kept), by draft-and-revise decoding.

        ``scheduler``: a ``DraftAndReviseScheduler`` (None: ``make_scheduler()``); ``num_inference_steps``:
        T_draft or [T_draft, T_revise]; ``temperature`` / ``top_k`` / ``top_p``: one value or one per depth.
        The prior models every level at once, so ``condition`` must be empty; ``guidance_schedule`` ramps the
        guidance over the draft steps; ``use_cache`` is the autoregressive RQ-Transformer's switch (checked,
        unused: a bidirectional pass has no cache)."""
        from prior.sampling import check_decoding_settings, sample_draft_and_revise

        if condition:
            raise ValueError(
                "the contextual RQ-Transformer samples every level itself; condition must be empty"
            )
        depth = self.config.depth
        num_levels = depth if num_levels is None else num_levels
        if not isinstance(num_levels, int) or not 1 <= num_levels <= depth:
            raise ValueError(f"num_levels must be an integer in [1, {depth}], got {num_levels!r}")
        if isinstance(guidance_scale, (list, tuple)):
            if len(set(guidance_scale)) != 1:
                raise ValueError(
                    f"the contextual RQ-Transformer takes one guidance_scale, got {list(guidance_scale)}"
                )
            guidance_scale = guidance_scale[0]
        if scheduler is None:
            scheduler = self.make_scheduler(choice_temperature)
        elif choice_temperature is not None:
            scheduler = DraftAndReviseScheduler.from_config(
                scheduler.config, choice_temperature=choice_temperature
            )
        draft_steps, revise_steps = scheduler.steps(num_inference_steps)
        check_decoding_settings([draft_steps, revise_steps], guidance_schedule)
        codes = sample_draft_and_revise(
            self,
            scheduler,
            class_labels,
            draft_steps=draft_steps,
            revise_steps=revise_steps,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            batch_size=batch_size,
            progress=progress,
        )
        return list(codes.unbind(-1))[:num_levels]
