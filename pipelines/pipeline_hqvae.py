"""``HQVAEPipeline``: class-conditional sampling from a trained HQ-VAE tokenizer and its prior(s).

Three pairings:

- SQ-VAE-2 (or any injected/hybrid HQ-VAE) + ``MaskedPriorStack`` (one Muse prior per code level, the finer
  conditioned on the coarser) + ``MaskedTokenScheduler``;
- RSQ-VAE / RQ-VAE + ``RQTransformer`` (no scheduler);
- RSQ-VAE / RQ-VAE + ``ContextualRQTransformer`` + ``DraftAndReviseScheduler`` (``num_inference_steps``:
  T_draft or [T_draft, T_revise]; the revise rounds are the scheduler's ``num_revisions``).

Sampling is chunk-invariant: each image draws from its own generator (seeded from ``generator``, or given as a
list of one generator per image), so ``batch_size`` changes speed and memory, never the images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from prior.contextual import ContextualRQTransformer
from prior.masked import MaskedPriorStack
from prior.rq_transformer import RQTransformer
from prior.scheduler import MaskedTokenScheduler
from tokenizer.console import progress_bar as console_progress_bar
from tokenizer.model import HQVAE

OUTPUT_TYPES = ("pil", "np", "pt", "codes")


@dataclass
class HQVAEPipelineOutput(BaseOutput):
    """images: PIL images, a (B, H, W, C) array in [0, 1] or a (B, C, H, W) tensor in [0, 1] (None for
    ``output_type="codes"``); codes: per-layer (B, h_l, w_l) code indices, top layer first (when asked)."""

    images: list | np.ndarray | torch.Tensor | None = None
    codes: list[torch.Tensor] | None = None


def check_components(hqvae: HQVAE, prior, scheduler) -> None:
    """Raises ValueError unless the prior models exactly the tokenizer's codes (levels, sizes, shapes)."""
    sizes = list(hqvae.codebook_sizes)
    if isinstance(prior, MaskedPriorStack):
        levels = [p.config for p in prior.levels]
        if len(levels) != hqvae.num_layers:
            raise ValueError(
                f"the tokenizer has {hqvae.num_layers} code layers; the prior stack models {len(levels)}"
            )
        got_sizes = [c.codebook_size for c in levels]
        top = (levels[0].height, levels[0].width)
        factor = hqvae.downsample_factor
        expected_shapes = hqvae.latent_shapes(top[0] * factor, top[1] * factor)
        got_shapes = [(c.height, c.width) for c in levels]
        if scheduler is None:
            raise ValueError("masked priors need a MaskedTokenScheduler (scheduler=None)")
    elif isinstance(prior, (RQTransformer, ContextualRQTransformer)):
        if list(hqvae.config.layers_per_resolution) != [prior.config.depth]:
            raise ValueError(
                f"a {type(prior).__name__} of depth {prior.config.depth} needs a tokenizer with "
                f"layers_per_resolution=[{prior.config.depth}], got {list(hqvae.config.layers_per_resolution)}"
            )
        got_sizes = list(prior.sizes)
        factor = hqvae.downsample_factor
        expected_shapes = hqvae.latent_shapes(prior.config.height * factor, prior.config.width * factor)
        got_shapes = [(prior.config.height, prior.config.width)] * prior.config.depth
    else:
        raise ValueError(
            "prior must be a MaskedPriorStack, an RQTransformer or a ContextualRQTransformer, got "
            f"{type(prior).__name__}"
        )
    if got_sizes != sizes:
        raise ValueError(f"the prior's codebook sizes {got_sizes} differ from the tokenizer's {sizes}")
    if [tuple(s) for s in expected_shapes] != got_shapes:
        raise ValueError(
            f"the prior's code shapes {got_shapes} differ from the tokenizer's {expected_shapes}"
        )


class HQVAEPipeline(DiffusionPipeline):
    """Two-stage class-conditional generation: prior -> codes -> HQ-VAE decoder.

    Args:
        hqvae: the tokenizer (``tokenizer.HQVAE``).
        prior: a ``MaskedPriorStack`` or an ``RQTransformer``.
        scheduler: a ``MaskedTokenScheduler`` for masked priors (None for the RQ-Transformer).
        id2label: class id -> name(s) (comma-separated synonyms allowed, as in ``DiTPipeline``).
        metadata: training data, settings and metrics, written into the model card by ``save_pretrained``.
    """

    model_cpu_offload_seq = "prior->hqvae"
    _optional_components = ["scheduler"]

    def __init__(
        self,
        hqvae: HQVAE,
        prior: MaskedPriorStack | RQTransformer,
        scheduler: MaskedTokenScheduler | None = None,
        id2label: dict | None = None,
        metadata: dict | None = None,
    ):
        super().__init__()
        check_components(hqvae, prior, scheduler)
        self.register_modules(hqvae=hqvae, prior=prior, scheduler=scheduler)
        id2label = {int(k): v for k, v in (id2label or {}).items()}
        self.register_to_config(id2label=id2label or None, metadata=metadata or None)
        self.labels = {}
        for key, value in sorted(id2label.items()):
            for name in value.split(","):
                self.labels[name.strip()] = key

    # -- labels ----------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.prior.num_classes

    def get_label_ids(self, label: str | list[str]) -> list[int]:
        """Class ids of label names (``id2label``'s names and synonyms)."""
        names = [label] if isinstance(label, str) else list(label)
        unknown = [n for n in names if n not in self.labels]
        if unknown:
            raise ValueError(f"unknown label name(s) {unknown}; known names: {sorted(self.labels)}")
        return [self.labels[n] for n in names]

    def class_names(self) -> dict[int, str]:
        """Class id -> its first name (``id2label``), for labelling grids."""
        return {int(k): v.split(",")[0].strip() for k, v in (self.config.id2label or {}).items()}

    def class_ids(self, class_labels, num_images_per_label: int) -> list[int] | None:
        """The class id of every image ``__call__`` draws (names resolved, each repeated per image)."""
        if not isinstance(num_images_per_label, int) or num_images_per_label < 1:
            raise ValueError(f"num_images_per_label must be an integer >= 1, got {num_images_per_label!r}")
        if class_labels is None:
            if self.num_classes:
                raise ValueError(
                    f"class_labels is required: this pipeline is conditional ({self.num_classes} classes)"
                )
            return None
        if isinstance(class_labels, (int, str)) or torch.is_tensor(class_labels) and class_labels.ndim == 0:
            class_labels = [class_labels]
        if len(class_labels) == 0:
            raise ValueError("class_labels is empty: give at least one class id or name")
        ids = []
        for label in class_labels:
            label = label.item() if torch.is_tensor(label) else label
            if isinstance(label, bool) or not isinstance(label, (str, int, np.integer)):
                raise ValueError(f"class labels must be integer ids or names, got {label!r}")
            (value,) = self.get_label_ids(label) if isinstance(label, str) else (int(label),)
            if not 0 <= value < self.num_classes:
                raise ValueError(
                    f"class id {value} is out of range: this pipeline has {self.num_classes} classes"
                )
            ids.append(value)
        return [i for i in ids for _ in range(num_images_per_label)]

    # -- sampling --------------------------------------------------------------------------------------------
    def _generators(self, generator, total: int) -> list[torch.Generator]:
        given = list(generator) if isinstance(generator, (list, tuple)) else [generator]
        bad = [g for g in given if not isinstance(g, torch.Generator) and (g is not None or len(given) > 1)]
        if bad:
            raise ValueError(f"generator must be a torch.Generator, a list of them or None, got {bad[0]!r}")
        if isinstance(generator, (list, tuple)):
            if len(generator) != total:
                raise ValueError(
                    f"got {len(generator)} generators for {total} images (one per image expected)"
                )
            return given
        device = generator.device if generator is not None else "cpu"  # CUDA generators draw on CUDA
        seeds = torch.randint(0, 2**62, (total,), generator=generator, device=device).cpu()
        return [torch.Generator().manual_seed(int(s)) for s in seeds]

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        num_images_per_label: int = 1,
        num_inference_steps: int | list[int] | None = None,
        guidance_scale: float | list[float] = 1.0,
        guidance_schedule: str = "constant",
        temperature: float | list[float] = 1.0,
        top_k: int | None | list[int | None] = None,
        top_p: float | None | list[float | None] = None,
        choice_temperature: float | None = None,
        num_levels: int | None = None,
        batch_size: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_codes: bool = False,
        use_cache: bool = True,
        return_dict: bool = True,
    ) -> HQVAEPipelineOutput | tuple:
        """Samples ``num_images_per_label`` images of each class in ``class_labels``.

        Args:
            class_labels: class ids or names (``get_label_ids``); None for an unconditional prior
                (then ``num_images_per_label`` images are drawn).
            num_inference_steps: MaskGIT decoding steps, one value or one per level (masked priors; None: 12).
            guidance_scale: classifier-free guidance s >= 0 (1 = none, 0 = unconditional), one value or one per
                level; ``guidance_schedule``: "constant", "linear" (Muse) or "cosine" ramp to s (masked priors).
            temperature, top_k, top_p: code sampling, one value or one per level (per depth for RQ).
            choice_temperature: overrides the scheduler's tau_choice (masked priors).
            num_levels: sample and decode only the top ``num_levels`` levels (the paper's Figure 17).
            batch_size: images per forward pass (default: all at once); the images do not depend on it.
            generator: a generator (per-image seeds are drawn from it) or one generator per image.
            output_type: "pil", "np", "pt" or "codes" (no decoding).
            return_codes: also return the codes.
            use_cache: the RQ-Transformer's KV cache (results are the same without it, only slower).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        labels = self.class_ids(class_labels, num_images_per_label)
        total = len(labels) if labels is not None else num_images_per_label
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
        settings = dict(
            num_levels=num_levels,
            scheduler=self.scheduler,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_schedule=guidance_schedule,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            choice_temperature=choice_temperature,
            use_cache=use_cache,
        )
        generators = self._generators(generator, total)
        chunk = batch_size or total
        codes: list[list[torch.Tensor]] = []
        with self.progress_bar(total=total) as progress:
            for start in range(0, total, chunk):
                stop = min(start + chunk, total)
                part = (
                    None
                    if labels is None
                    else torch.tensor(labels[start:stop], device=self._execution_device)
                )
                # one call: the prior family owns its decoding (MaskGIT schedule per level, or the RQ stack)
                codes.append(
                    self.prior.sample(
                        part, generator=generators[start:stop], batch_size=stop - start, **settings
                    )
                )
                progress.update(stop - start)
        codes = [torch.cat(layer) for layer in zip(*codes)]
        num_levels = len(codes)

        images = None
        if output_type != "codes":
            decoded = [
                self.hqvae.decode_indices([c[start : start + chunk] for c in codes], num_layers=num_levels)
                for start in range(0, total, chunk)
            ]
            images = torch.cat(decoded).float().clamp(0, 1).cpu()
            if output_type in ("np", "pil"):
                images = images.permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        returned_codes = codes if (return_codes or output_type == "codes") else None
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, returned_codes)
        return HQVAEPipelineOutput(images=images, codes=returned_codes)

    def progress_bar(self, iterable=None, total=None):
        """diffusers' progress bar (``set_progress_bar_config`` applies) that does not flood a log file."""
        return console_progress_bar(iterable, total=total, **getattr(self, "_progress_bar_config", {}))

    # -- loading and saving ------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``, which also takes the main job's output folder (it loads ``pipeline/``);
        a local path that does not exist is a ``FileNotFoundError`` naming it, without a hub lookup."""
        from tokenizer.runs import pretrained_folder

        path = pretrained_folder(pretrained_model_name_or_path, "model_index.json", "pipeline")
        return super().from_pretrained(path, **kwargs)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> None:
        """Saves the components (safetensors + configs) and a model card (README.md)."""
        super().save_pretrained(save_directory, **kwargs)
        from pipelines.model_card import write_model_card

        write_model_card(self, Path(save_directory) / "README.md")
