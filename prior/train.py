"""Prior training: ``accelerate launch prior/train.py --config configs/prior/<name>.yaml [key=value ...]``.

Trains one prior on codes written by ``prior/extract.py``:

- ``prior: masked``: a Muse/MaskGIT masked-token transformer for code level ``level``, conditioned on the
  class and on all coarser levels (for SQ-VAE-2: level 0 is Q(Z_1 | c), level 1 is Q(Z_2 | Z_1, c));
- ``prior: rq``: an RQ-Transformer over all levels of a single-resolution (RSQ-VAE / RQ-VAE) tokenizer;
- ``prior: contextual``: the contextual (draft-and-revise) RQ-Transformer over the same stacks.

The code shapes, codebook sizes and class count come from the codes folder's meta.json; ``model:`` holds only
the architecture. The same standards as tokenizer training (shared helpers in ``tokenizer.training_utils``):
strict YAML config + dotted overrides, ``--resume latest``, atomic rotated checkpoints, JSONL + TensorBoard logs,
mixed precision, weight EMA. AdamW with linear warmup and cosine decay. Writes into ``output_dir``:

- ``config.yaml``, ``history.jsonl`` (loss, masked-token accuracy, LR, items/s), ``validation.jsonl``
  (validation loss next to log K, the loss of a uniform guess, and the codes' unigram entropy);
- ``grids/<step>.png``: class-conditional samples decoded by the tokenizer, one row per class (a level-l
  masked prior is shown on the validation set's real coarser codes, decoded from the top l+1 levels);
- ``checkpoints/``, ``model/`` (+ ``model_ema/``), ``scheduler/`` (masked, contextual), ``codes_meta.json``, ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from prior.codes import CodeDataset, collate_codes, count_classes, derived_kwargs, read_meta, unigram_entropy
from prior.train_config import PRIOR_CLASSES, PriorTrainConfig
from tokenizer.config import constructor_defaults, to_dict
from tokenizer.trainer import BaseTrainer
from tokenizer.training_utils import fused_optimizer_supported, training_command

logger = logging.getLogger("prior.train")


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------
class PriorTrainer(BaseTrainer):
    """Prior training on the shared loop (``tokenizer.trainer.BaseTrainer``): the prior's cross-entropy,
    AdamW with linear warmup and cosine decay, sample grids decoded by the tokenizer."""

    progress_desc = "train prior"
    collate_fn = staticmethod(collate_codes)

    @classmethod
    def model_defaults(cls, config) -> dict:
        return constructor_defaults(PRIOR_CLASSES[config.prior])

    def build(self) -> None:
        from transformers import get_cosine_with_min_lr_schedule_with_warmup

        config, data, opt = self.config, self.config.data, self.config.optimizer
        self.progress_desc = f"train {config.prior} prior"
        self.meta = read_meta(data.codes_dir)
        self.train_set = CodeDataset(data.codes_dir, data.train_split, data.in_memory)
        self.validation_set = (
            CodeDataset(data.codes_dir, data.validation_split, data.in_memory)
            if data.validation_split
            else None
        )
        self.num_classes = count_classes(self.meta, self.train_set)
        self.model_kwargs = {
            **config.model,
            **derived_kwargs(config.prior, config.level, self.meta, self.num_classes),
        }
        self.layers = (
            [config.level] if config.prior == "masked" else list(range(len(self.meta["codebook_sizes"])))
        )
        model_class = PRIOR_CLASSES[config.prior]
        self.model = self.seeded_model(lambda: model_class(**self.model_kwargs))
        if opt.gradient_checkpointing:
            self.model.enable_gradient_checkpointing()
        self.sampler = self.make_sampler(len(self.train_set))
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in name or "position" in name else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=opt.learning_rate,
            betas=tuple(opt.betas),
            fused=fused_optimizer_supported(self.accelerator.device),
        )
        self.lr_scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=opt.warmup_steps,
            num_training_steps=opt.max_steps,
            min_lr_rate=opt.min_learning_rate_ratio,
        )
        self.last_validation = None

    # -- data ------------------------------------------------------------------------------------------------
    def device_batch(self, raw):
        codes, labels = raw
        device = self.accelerator.device
        return [c.to(device) for c in codes], labels.to(device)

    def _labels(self, labels: torch.Tensor) -> torch.Tensor | None:
        """Unlabelled items (-1) and unconditional priors get the null class."""
        if self.num_classes == 0:
            return None
        return labels.masked_fill(labels < 0, self.num_classes)

    # -- one step --------------------------------------------------------------------------------------------
    def loss(self, model, codes: list[torch.Tensor], labels: torch.Tensor, generator: torch.Generator):
        """The training objective on one batch: masked-token or next-code cross-entropy (nats per token)."""
        inner = self.accelerator.unwrap_model(model)
        batch = inner.training_batch(codes, self._labels(labels), generator)  # the family's own inputs
        with self.accelerator.autocast():
            out = model(**batch)
        return out.loss, out.accuracy

    def compute_loss(self, batch):
        loss, accuracy = self.loss(self.model, *batch, self.generator)
        return loss, {"loss": loss, "accuracy": accuracy}, None

    def after_step(self) -> None:
        self.lr_scheduler.step()

    def progress_postfix(self, record: dict) -> dict:
        return {"loss": f"{record['loss']:.3f}", "acc": f"{record['accuracy']:.3f}"}

    def extra_stateful(self) -> dict:
        return {"lr_scheduler": self.lr_scheduler}

    # -- evaluation ------------------------------------------------------------------------------------------
    validation_keys = ("loss", "uniform_loss", "accuracy")

    @torch.no_grad()
    def validate(self) -> dict:
        """Loss on the validation split with a fixed generator (the same masks at every validation), eval mode
        (no dropout, no class dropout)."""
        model = self.eval_model()
        was_training = model.training
        model.eval()
        generator = torch.Generator(device=self.accelerator.device).manual_seed(self.config.seed + 12345)
        loader = DataLoader(
            self.validation_set, batch_size=self.config.data.eval_batch_size, collate_fn=collate_codes
        )
        total_loss = total_accuracy = count = 0.0
        limit = self.config.data.max_eval_items
        for codes, labels in loader:
            if limit is not None and count >= limit:
                break
            codes = [c.to(self.accelerator.device) for c in codes]
            loss, accuracy = self.loss(model, codes, labels.to(self.accelerator.device), generator)
            total_loss += float(loss) * len(labels)
            total_accuracy += float(accuracy) * len(labels)
            count += len(labels)
        model.train(was_training)
        sizes = self.meta["codebook_sizes"]
        return {
            "step": self.step,
            "loss": total_loss / count,
            "accuracy": total_accuracy / count,
            "uniform_loss": sum(math.log(sizes[layer]) for layer in self.layers) / len(self.layers),
            "items": int(count),
        }

    def validates_at(self, step: int) -> bool:
        every = self.config.logging.validate_every
        return self.validation_set is not None and (
            step % every == 0 or step == self.config.optimizer.max_steps
        )

    def on_validation(self, result: dict) -> None:
        self.last_validation = result

    # -- samples ---------------------------------------------------------------------------------------------
    def tokenizer_model(self):
        from tokenizer.model import HQVAE

        if not hasattr(self, "_tokenizer"):
            path = self.config.tokenizer or self.meta["tokenizer"]
            self._tokenizer = HQVAE.from_pretrained(path).to(self.accelerator.device).eval()
        return self._tokenizer

    def grid_conditions(self, classes: list[int], per_class: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Class labels of the grid and, for a level-l masked prior, real coarser codes of items of each class
        from the validation (else training) split."""
        labels = torch.tensor([c for c in classes for _ in range(per_class)], dtype=torch.long)
        level = self.config.level if self.config.prior == "masked" else 0
        if level == 0:
            return labels, []
        dataset = self.validation_set or self.train_set
        if dataset.in_memory:
            labels_of = dataset.labels
        else:  # scanning a huge split item by item is slow: the first 20,000 items are enough for a grid
            labels_of = torch.stack([dataset[i][1] for i in range(min(len(dataset), 20000))])
        chosen = []
        for c in classes:
            found = (labels_of == c).nonzero().flatten()[:per_class].tolist()
            if not found:  # no item of this class (or unlabelled codes): any items
                found = list(range(per_class))
            chosen += (found * per_class)[:per_class]
        condition = [torch.stack([dataset[i][0][layer] for i in chosen]) for layer in range(level)]
        return labels, condition

    @torch.no_grad()
    def sample_codes(self, model, labels: torch.Tensor, condition: list[torch.Tensor], generator) -> list:
        """Codes of the grid's images, top level first (the modelled level last for a masked prior)."""
        s = self.config.sampling
        device = self.accelerator.device
        condition = [c.to(device) for c in condition]
        labels = labels.to(device) if self.num_classes else None
        batch = len(condition[0]) if condition else None
        batch = batch or (labels.shape[0] if labels is not None else s.samples_per_class)
        sampled = model.sample(
            labels,
            condition,
            num_inference_steps=s.num_inference_steps,
            guidance_scale=s.guidance_scale if self.num_classes else 1.0,
            guidance_schedule=s.guidance_schedule,
            temperature=s.temperature,
            top_k=s.top_k,
            top_p=s.top_p,
            choice_temperature=s.choice_temperature,
            generator=generator,
            batch_size=batch,
        )
        return sampled if isinstance(sampled, list) else condition + [sampled]

    def save_grid(self, path: Path) -> None:
        from tokenizer.grids import class_rows, save_labelled_grid

        s = self.config.sampling
        classes = list(range(min(self.num_classes, s.max_classes))) or [self.num_classes]
        labels, condition = self.grid_conditions(classes, s.samples_per_class)
        model = self.eval_model()
        was_training = model.training
        model.eval()
        generator = torch.Generator(device=self.accelerator.device).manual_seed(self.config.seed + 2024)
        codes = self.sample_codes(model, labels, condition, generator)
        model.train(was_training)
        tokenizer = self.tokenizer_model()
        images = tokenizer.decode_indices(codes, num_layers=len(codes)).float().clamp(0, 1)
        names = {**dict(enumerate(self.meta.get("label_names") or [])), self.num_classes: "unconditional"}
        given = f"level {len(condition)} given real coarser codes, " if len(condition) else ""
        title = f"prior samples at step {self.step} ({given}one row per class)"
        save_labelled_grid(path, *class_rows(images, labels.tolist(), names), title=title)

    def finish(self, items: int, elapsed: float) -> dict:
        cfg, validation = self.config, self.last_validation
        self.unwrapped.save_pretrained(self.output_dir / "model")
        if self.ema is not None:
            self.ema.module.save_pretrained(self.output_dir / "model_ema")
        if cfg.prior in (
            "masked",
            "contextual",
        ):  # the sampling scheduler, on the prior's own masking schedule
            scheduler = self.unwrapped.make_scheduler(cfg.sampling.choice_temperature)
            scheduler.save_pretrained(self.output_dir / "scheduler")
        codes_meta = {
            "codes_dir": str(Path(cfg.data.codes_dir).resolve()),
            "prior": cfg.prior,
            "level": cfg.level if cfg.prior == "masked" else None,
            "layers": self.layers,
            **{
                k: self.meta[k]
                for k in ("tokenizer", "codebook_sizes", "latent_shapes", "label_names", "image_size")
            },
            "num_classes": self.num_classes,
            "sampling": to_dict(cfg.sampling),
        }
        (self.output_dir / "codes_meta.json").write_text(json.dumps(codes_meta, indent=2))
        sizes = self.meta["codebook_sizes"]
        result = {
            "prior": cfg.prior,
            "level": cfg.level if cfg.prior == "masked" else None,
            "steps": self.step,
            "batch_size": cfg.data.batch_size,
            "train_items": len(self.train_set),
            "parameters": sum(p.numel() for p in self.unwrapped.parameters()),
            "validation": validation,
            "uniform_loss": sum(math.log(sizes[layer]) for layer in self.layers) / len(self.layers),
            "unigram_entropy": unigram_entropy(self.train_set, self.layers, sizes),
            "train_items_per_second": round(items / max(elapsed, 1e-9), 1),
            "train_seconds": round(elapsed, 1),
            "weights": "ema" if self.ema is not None else "raw",
            "sampling": to_dict(cfg.sampling),
            "best": self.best_record(),
        }
        self.save_grid(self.output_dir / "samples.png")
        logger.info(
            "validation loss %s (uniform %.3f, unigram %.3f) -> %s",
            None if validation is None else round(validation["loss"], 4),
            result["uniform_loss"],
            result["unigram_entropy"],
            self.output_dir,
        )
        return result


def train(config: PriorTrainConfig, resume: str | None = None) -> dict:
    return PriorTrainer(config, resume).fit()


def main(argv=None) -> dict:
    return training_command(PriorTrainConfig, PriorTrainer, __doc__, "configs/prior/*.yaml", argv)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
