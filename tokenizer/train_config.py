"""The tokenizer training config (``configs/tokenizer/*.yaml``): typed and strict (``tokenizer.config``).

``model:`` holds ``HQVAE``'s constructor arguments (checked against its signature and annotations);
``optimizer.final_temperature`` is resolved here into ``model.temperature_decay``.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Literal

from tokenizer.config import TRAINING_BOUNDS, check_bounds, check_kwargs, check_positive
from tokenizer.data import DataConfig
from tokenizer.model import HQVAE
from tokenizer.trainer import LoggingConfig

logger = logging.getLogger("tokenizer.train")

__all__ = ["DataConfig", "LoggingConfig", "LossConfig", "OptimizerConfig", "TrainConfig"]


@dataclass
class OptimizerConfig:
    learning_rate: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.9)  # appendix F
    max_steps: int = 3000
    grad_clip_norm: float | None = None
    gradient_accumulation_steps: int = 1
    plateau_patience: int = 3  # halve the LR after this many validations without improvement (appendix F)
    plateau_factor: float = 0.5
    ema_decay: float | None = None  # EMA of the weights (None: off)
    # The budget-matched Gumbel temperature: sets (replaces) model.temperature_decay r = -ln(tau_end) / max_steps
    # so that tau = exp(-r t) ends at this value whatever the budget (None: model.temperature_decay as given).
    final_temperature: float | None = None
    # LR of the SQ dequantization variances' log s^2 relative to learning_rate. Adam moves log s^2 by at most
    # ~lr per step, so s^2 anneals slowly at short budgets (docs/sq_vs_vq.md); the objective is unchanged.
    variance_lr_multiplier: float = 1.0


@dataclass
class LossConfig:
    perceptual_weight: float = 0.0  # LPIPS weight (0: off); needs VGG16 weights unless pretrained_lpips=false
    pretrained_lpips: bool = True
    vgg16_path: str | None = None
    pad_and_trim: bool = True  # appendix F.5
    adversarial_weight: float = 0.0  # PatchGAN hinge loss weight (0: off)
    adversarial_start_step: int = 0
    adaptive_weight_max: float = 1e4
    discriminator_learning_rate: float | None = None  # None: optimizer.learning_rate
    discriminator_betas: tuple[float, float] = (0.5, 0.9)
    discriminator_channels: int = 64
    discriminator_layers: int = 3


@dataclass
class TrainConfig:
    model: dict = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output_dir: str = "runs/tokenizer"
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    num_threads: int | None = None  # torch CPU threads; None keeps torch's default
    # Conv weights and batches in channels_last (NHWC): 1.08x faster steps on CPU (benchmarks/training_speed.py);
    # the quantizer's (B*h*w, d) rows are then views. Numerics differ from NCHW at float rounding level only.
    channels_last: bool = True

    def __post_init__(self):
        check_kwargs(HQVAE.__init__, self.model, "model")
        check_positive(self, ["optimizer.max_steps", "optimizer.gradient_accumulation_steps", "data.batch_size",
                              "data.eval_batch_size", "data.image_size", "logging.log_every",
                              "logging.validate_every", "logging.checkpoint_every"])  # fmt: skip
        check_bounds(self, {**TRAINING_BOUNDS, "optimizer.plateau_factor": "> 0, <= 1",
                            "optimizer.plateau_patience": ">= 0", "optimizer.variance_lr_multiplier": "> 0",
                            "losses.perceptual_weight": ">= 0", "losses.adversarial_weight": ">= 0",
                            "losses.adversarial_start_step": ">= 0", "losses.adaptive_weight_max": "> 0",
                            "losses.discriminator_learning_rate": "> 0", "losses.discriminator_betas": ">= 0, < 1",
                            "losses.discriminator_channels": ">= 1", "losses.discriminator_layers": ">= 1"})  # fmt: skip
        self._check_image_size()
        self._resolve_temperature_decay()

    def _check_image_size(self) -> None:
        """data.image_size (spectrograms: n_mels and frames) must divide into the coarsest latent grid: checked
        here, before a run folder exists."""
        defaults = inspect.signature(HQVAE.__init__).parameters
        stem = self.model.get("num_stem_downsamples", defaults["num_stem_downsamples"].default)
        resolutions = len(self.model.get("layers_per_resolution", defaults["layers_per_resolution"].default))
        factor = HQVAE.downsample_factor_of(stem, resolutions)
        if self.data.is_audio:  # spectrograms: (n_mels, frames)
            sizes = dict(zip(("data.audio.n_mels", "data.audio.frames"), self.data.audio.shape))
        else:
            sizes = {"data.image_size": self.data.image_size}
        for name, size in sizes.items():
            if size % factor:
                below, above = size // factor * factor, (size // factor + 1) * factor
                hint = " (set data.audio.num_frames)" if name == "data.audio.frames" else ""
                raise ValueError(
                    f"{name}={size} must be a multiple of {factor} (the model downsamples by "
                    f"2^(num_stem_downsamples + resolutions - 1) = 2^({stem} + {resolutions} - 1)); "
                    f"e.g. {below or above} or {above}{hint}"
                )

    def _resolve_temperature_decay(self) -> None:
        final = self.optimizer.final_temperature
        if final is None:
            return
        if not 0.0 < final <= 1.0:
            raise ValueError(f"optimizer.final_temperature must be in (0, 1], got {final}")
        decay = -math.log(final) / self.optimizer.max_steps
        given = self.model.get("temperature_decay")
        if given is not None and not math.isclose(given, decay, rel_tol=1e-9):
            logger.info(
                "optimizer.final_temperature=%s replaces model.temperature_decay=%s by %s",
                final,
                given,
                decay,
            )
        self.model["temperature_decay"] = decay
