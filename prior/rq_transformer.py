"""RQ-Transformer prior over the D residual code stacks of an RSQ-VAE / RQ-VAE (Lee et al. 2022a; paper F.4).

Codes S (B, h, w, D): at every spatial position t (raster order) D codes, one per residual layer.

- Spatial transformer (causal, ``transformers``' Llama decoder: SDPA, RoPE, KV cache): input u_0 = the class
  embedding (the start token; ``num_classes`` = the learned null class for classifier-free guidance),
  u_t = sum_d e_d(S_{t-1, d}) + p_t; output h_t summarises S_<t.
- Depth transformer (causal, Llama): input v_{t,0} = h_t + q_0, v_{t,d} = sum_{d' < d} e_{d'}(S_{t,d'}) + q_d
  (the cumulative sum of the previous depths' embeddings); its output at d predicts S_{t,d} through head d.
- e_d is depth d's own embedding table (codebooks of different sizes or unshared codebooks); p and q are
  learned absolute positions on top of RoPE.

Sampling (``prior.sampling.sample_rq``) runs position by position and depth by depth, with or without the KV
cache (identical results), with temperature, top-k and top-p per depth and classifier-free guidance (the
original RQ-Transformer has none).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from prior.masked import check_class_labels, training_class_labels


@dataclass
class RQTransformerOutput(BaseOutput):
    """logits: per depth d, (B, N, K_d); loss: mean cross-entropy over positions and depths; accuracy."""

    logits: list[torch.Tensor]
    loss: torch.Tensor | None = None
    accuracy: torch.Tensor | None = None


def _llama(
    hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int, max_length: int, dropout: float
):
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(
        vocab_size=1,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_length,
        attention_dropout=dropout,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="sdpa",
    )
    model = LlamaModel(config)
    model.embed_tokens = None  # inputs come as embeddings; an unused table would break DDP
    return model


class ResidualStackPrior:
    """What the RQ-Transformer and the contextual RQ-Transformer share: per-depth code embeddings (offsets into
    one table), the class embedding with its null class, the causal depth transformer with a head per depth,
    and the checks on (B, h, w, D) code stacks."""

    def _build_stack(self, codebook_sizes, depth, height, width, num_classes, hidden_size, num_heads,
                     depth_layers, intermediate_size, dropout) -> None:  # fmt: skip
        sizes = [codebook_sizes] * depth if isinstance(codebook_sizes, int) else list(codebook_sizes)
        if depth < 1 or len(sizes) != depth or min(sizes) < 2:
            raise ValueError(
                f"need depth >= 1 and one codebook size >= 2 per depth, got depth={depth}, sizes={sizes}"
            )
        if height < 1 or width < 1 or num_classes < 0:
            raise ValueError(
                f"need height, width >= 1 and num_classes >= 0, got {height}x{width}, {num_classes}"
            )
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
        self.sizes = sizes
        self.num_tokens = height * width
        self.null_class = num_classes
        intermediate = intermediate_size or 4 * hidden_size
        self.register_buffer("offsets", torch.tensor([0, *sizes[:-1]]).cumsum(0), persistent=False)
        self.code_embedding = nn.Embedding(sum(sizes), hidden_size)
        self.class_embedding = nn.Embedding(num_classes + 1, hidden_size)
        self.depth_position = nn.Parameter(torch.zeros(depth, hidden_size))
        nn.init.normal_(self.depth_position, std=0.02)
        self.embedding_dropout = nn.Dropout(dropout)
        self.depth_transformer = _llama(hidden_size, depth_layers, num_heads, intermediate, depth, dropout)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, k) for k in sizes)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def check_codes(self, codes: torch.Tensor, depths: int | None = None) -> None:
        cfg = self.config
        depths = cfg.depth if depths is None else depths
        if codes.ndim != 4 or tuple(codes.shape[1:]) != (cfg.height, cfg.width, depths):
            raise ValueError(
                f"codes must be (B, {cfg.height}, {cfg.width}, {depths}), got {tuple(codes.shape)}"
            )
        for d in range(depths):
            layer = codes[..., d]
            if layer.numel() and (int(layer.min()) < 0 or int(layer.max()) >= self.sizes[d]):
                raise ValueError(
                    f"codes of depth {d} must lie in [0, {self.sizes[d]}), got range "
                    f"[{int(layer.min())}, {int(layer.max())}]"
                )

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., D') codes of the first D' depths -> (..., D', d) embeddings e_d(S_d)."""
        return self.code_embedding(codes.long() + self.offsets[: codes.shape[-1]])


class RQTransformer(ResidualStackPrior, ModelMixin, ConfigMixin):
    """Class-conditional RQ-Transformer.

    Args:
        codebook_sizes: K_d per depth (or one int for all D).
        depth: D, the number of residual layers.
        height, width: the code map (h, w).
        num_classes: class count (0: unconditional, the start token is the null class).
        hidden_size, num_heads, spatial_layers, depth_layers, intermediate_size: the two Llama stacks.
        dropout: embedding and attention dropout. class_dropout: p of the null class in training.
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
    ):
        super().__init__()
        self._build_stack(codebook_sizes, depth, height, width, num_classes, hidden_size, num_heads, depth_layers,
                          intermediate_size, dropout)  # fmt: skip
        self.spatial_position = nn.Parameter(torch.zeros(self.num_tokens, hidden_size))
        nn.init.normal_(self.spatial_position, std=0.02)
        intermediate = intermediate_size or 4 * hidden_size
        self.spatial = _llama(hidden_size, spatial_layers, num_heads, intermediate, self.num_tokens, dropout)

    def enable_gradient_checkpointing(self) -> None:
        for stack in (self.spatial, self.depth_transformer):
            stack.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    def disable_gradient_checkpointing(self) -> None:
        for stack in (self.spatial, self.depth_transformer):
            stack.gradient_checkpointing_disable()

    # -- pieces shared by training and sampling ----------------------------------------------------------------
    def start_tokens(self, class_labels: torch.Tensor) -> torch.Tensor:
        """u_0: the class (start) embedding + p_0, (B, 1, d)."""
        return self.class_embedding(class_labels.long())[:, None] + self.spatial_position[:1]

    def spatial_inputs(self, codes: torch.Tensor, start: int) -> torch.Tensor:
        """u_t for t = start+1 .. start+n from the codes of positions start .. start+n-1, (B, n, D) -> (B, n, d)."""
        n = codes.shape[1]
        return self.embed_codes(codes).sum(-2) + self.spatial_position[start + 1 : start + 1 + n]

    def depth_inputs(self, context: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
        """v_{t,0..d'} from h_t (..., d) and the codes of the first d' depths (..., d'): (..., d'+1, d)."""
        parts = [context[..., None, :]]
        if codes is not None and codes.shape[-1]:
            parts.append(self.embed_codes(codes).cumsum(-2))
        x = torch.cat(parts, dim=-2)
        return x + self.depth_position[: x.shape[-2]]

    def training_batch(self, codes: list[torch.Tensor], class_labels, generator=None) -> dict:
        """``forward``'s keyword arguments for one training batch of every level's codes: the stacked residual
        codes (B, h, w, D) and the class labels with class dropout."""
        stacked, labels = self.training_inputs(torch.stack(codes, dim=-1), class_labels, generator)
        return {"codes": stacked, "class_labels": labels}

    @torch.no_grad()
    def sample(
        self,
        class_labels: torch.Tensor | None = None,
        condition: list[torch.Tensor] | None = None,
        *,
        num_levels: int | None = None,
        guidance_scale: float = 1.0,
        temperature: float | list[float] = 1.0,
        top_k: int | None | list[int | None] = None,
        top_p: float | None | list[float | None] = None,
        generator=None,
        batch_size: int | None = None,
        use_cache: bool = True,
        progress: bool = False,
        scheduler=None,
        num_inference_steps: int | list[int] | None = None,
        guidance_schedule: str = "constant",
        choice_temperature: float | None = None,
    ) -> list[torch.Tensor]:
        """Codes of every depth, (B, h, w) each (the top ``num_levels`` kept), sampled position by position and
        depth by depth; ``temperature``/``top_k``/``top_p`` are one value or one per depth.

        The RQ-Transformer models every level at once, so ``condition`` must be empty; ``scheduler``,
        ``num_inference_steps``, ``guidance_schedule`` and ``choice_temperature`` are masked-prior settings,
        accepted so both prior families share one signature, checked, and unused."""
        from prior.sampling import check_decoding_settings, sample_rq

        check_decoding_settings(num_inference_steps, guidance_schedule)
        if condition:
            raise ValueError("the RQ-Transformer samples every level itself; condition must be empty")
        depth = self.config.depth
        num_levels = depth if num_levels is None else num_levels
        if not isinstance(num_levels, int) or not 1 <= num_levels <= depth:
            raise ValueError(f"num_levels must be an integer in [1, {depth}], got {num_levels!r}")
        if isinstance(guidance_scale, (list, tuple)):  # one value per level, as for masked priors
            if len(set(guidance_scale)) != 1:
                raise ValueError(f"the RQ-Transformer takes one guidance_scale, got {list(guidance_scale)}")
            guidance_scale = guidance_scale[0]
        codes = sample_rq(
            self,
            class_labels,
            guidance_scale=guidance_scale,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            generator=generator,
            use_cache=use_cache,
            batch_size=batch_size,
            progress=progress,
        )
        return list(codes.unbind(-1))[:num_levels]

    # -- training forward ------------------------------------------------------------------------------------
    def forward(
        self,
        codes: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> RQTransformerOutput | tuple:
        """Teacher-forced logits for every code, and the loss on all of them.

        Args:
            codes: (B, h, w, D) code indices.
            class_labels: (B,) in [0, num_classes]; ``num_classes`` (or None) is the null class.
        """
        self.check_codes(codes)
        batch = codes.shape[0]
        if class_labels is None:
            class_labels = torch.full((batch,), self.null_class, dtype=torch.long, device=codes.device)
        check_class_labels(class_labels, batch, self.config.num_classes)
        flat = codes.reshape(batch, self.num_tokens, self.config.depth).long()
        spatial_in = torch.cat([self.start_tokens(class_labels), self.spatial_inputs(flat[:, :-1], 0)], dim=1)
        context = self.spatial(
            inputs_embeds=self.embedding_dropout(spatial_in)
        ).last_hidden_state  # (B, N, d)
        depth_in = self.depth_inputs(context, flat[..., :-1])  # (B, N, D, d)
        hidden = self.depth_transformer(
            inputs_embeds=self.embedding_dropout(
                depth_in.reshape(batch * self.num_tokens, self.config.depth, -1)
            )
        ).last_hidden_state.reshape(batch, self.num_tokens, self.config.depth, -1)
        logits = [head(hidden[:, :, d]) for d, head in enumerate(self.heads)]
        losses = [
            F.cross_entropy(lg.float().flatten(0, 1), flat[..., d].flatten()) for d, lg in enumerate(logits)
        ]
        correct = [(lg.argmax(-1) == flat[..., d]).float().mean() for d, lg in enumerate(logits)]
        loss = torch.stack(losses).mean()
        accuracy = torch.stack(correct).mean()
        if not return_dict:
            return (logits, loss, accuracy)
        return RQTransformerOutput(logits=logits, loss=loss, accuracy=accuracy)

    def training_inputs(
        self,
        codes: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes, class labels with the null class dropped in at ``class_dropout`` in train mode)."""
        return codes, training_class_labels(self, class_labels, codes.shape[0], codes.device, generator)
