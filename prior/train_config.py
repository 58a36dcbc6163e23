"""The prior training config (``configs/prior/*.yaml``): typed and strict (``tokenizer.config``).

``model:`` holds only the architecture; the code shapes, codebook sizes and class count come from the codes
folder's ``meta.json`` (``DERIVED``, filled in by ``prior.codes.derived_kwargs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from prior.contextual import ContextualRQTransformer
from prior.masked import MaskedTokenTransformer
from prior.rq_transformer import RQTransformer
from tokenizer.config import TRAINING_BOUNDS, check_bounds, check_kwargs, check_positive
from tokenizer.trainer import LoggingConfig

# constructor arguments filled in from the codes' meta.json (not to be set in ``model:``)
DERIVED = {
    "masked": (
        "codebook_size",
        "height",
        "width",
        "num_classes",
        "condition_codebook_sizes",
        "condition_shapes",
    ),
    "rq": ("codebook_sizes", "depth", "height", "width", "num_classes"),
    "contextual": ("codebook_sizes", "depth", "height", "width", "num_classes"),
}
# the model class of each ``prior:`` kind
PRIOR_CLASSES = {"masked": MaskedTokenTransformer, "rq": RQTransformer, "contextual": ContextualRQTransformer}


@dataclass
class PriorDataConfig:
    codes_dir: str = ""  # a folder written by prior/extract.py
    train_split: str = "train"
    validation_split: str | None = "validation"
    batch_size: int = 64
    eval_batch_size: int = 256
    max_eval_items: int | None = None  # cap validation (None: the whole split)
    in_memory: bool = True  # False: read items from memory-mapped shards
    num_workers: int = 0


@dataclass
class PriorOptimizerConfig:
    learning_rate: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.96)  # MaskGIT
    weight_decay: float = 0.045  # MaskGIT
    warmup_steps: int = 500
    min_learning_rate_ratio: float = 0.0  # cosine decay to this fraction of the peak
    max_steps: int = 5000
    grad_clip_norm: float | None = 1.0
    gradient_accumulation_steps: int = 1
    ema_decay: float | None = None
    gradient_checkpointing: bool = False


@dataclass
class SamplingConfig:
    """Settings of the sample grids (and the defaults recorded for the pipeline)."""

    num_inference_steps: int = 12  # masked prior; contextual: the draft steps (revise: 4 steps, 2 rounds)
    guidance_scale: float = 1.0  # 1: no guidance
    guidance_schedule: Literal["constant", "linear", "cosine"] = "constant"
    temperature: float = 1.0
    choice_temperature: float = 4.5  # masked prior (MaskGIT)
    top_k: int | None = None
    top_p: float | None = None
    samples_per_class: int = 8
    max_classes: int = 10  # rows of the grid


@dataclass
class PriorTrainConfig:
    prior: Literal["masked", "rq", "contextual"] = "masked"
    level: int = 0  # masked prior: which code layer (0 = top) it models
    model: dict = field(default_factory=dict)
    data: PriorDataConfig = field(default_factory=PriorDataConfig)
    optimizer: PriorOptimizerConfig = field(default_factory=PriorOptimizerConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    tokenizer: str | None = None  # model folder for decoding grids (None: the tokenizer named in meta.json)
    output_dir: str = "runs/prior"
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    num_threads: int | None = None

    def __post_init__(self):
        if not self.data.codes_dir:
            raise ValueError("data.codes_dir is required (a folder written by prior/extract.py)")
        check_kwargs(PRIOR_CLASSES[self.prior].__init__, self.model, "model")
        derived = [k for k in DERIVED[self.prior] if k in self.model]
        if derived:
            raise ValueError(f"model.{derived[0]} comes from the codes' meta.json; remove it from the config")
        check_positive(self, ["optimizer.max_steps", "optimizer.gradient_accumulation_steps", "data.batch_size",
                              "data.eval_batch_size", "logging.log_every", "logging.validate_every",
                              "logging.checkpoint_every", "sampling.num_inference_steps"])  # fmt: skip
        check_bounds(self, {**TRAINING_BOUNDS, "optimizer.warmup_steps": ">= 0", "optimizer.weight_decay": ">= 0",
                            "optimizer.min_learning_rate_ratio": ">= 0, <= 1", "level": ">= 0",
                            "sampling.guidance_scale": ">= 0", "sampling.temperature": "> 0",
                            "sampling.choice_temperature": ">= 0", "sampling.top_k": ">= 1",
                            "sampling.top_p": "> 0, <= 1", "sampling.samples_per_class": ">= 1",
                            "sampling.max_classes": ">= 1"})  # fmt: skip
