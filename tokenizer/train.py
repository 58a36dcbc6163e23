"""Tokenizer training: ``accelerate launch tokenizer/train.py --config configs/tokenizer/<name>.yaml [key=value ...]``.

One entry point for every variant (SQ-VAE-2, RSQ-VAE, hybrid, VQ-VAE-2, RQ-VAE): a variant is a YAML file whose
``model:`` block is ``HQVAE``'s constructor arguments. ``--resume latest`` (or a checkpoint folder) continues a
run exactly. Writes into ``output_dir``:

- ``config.yaml``        the resolved config;
- ``history.jsonl``      every ``logging.log_every`` steps: each loss term, s_l^2, entropy, perplexity and
                         codes used (over all processes' batches), tau,
                         sigma^2, LR, images/s (also to TensorBoard under ``tensorboard/``);
- ``validation.jsonl``   periodic validation: loss, RMSE, PSNR, SSIM, LPIPS (when VGG weights exist), usage;
- ``checkpoints/``       atomic, rotated training state (``latest`` names the newest complete one);
- ``grids/``             validation reconstructions (odd rows originals, even rows reconstructions);
- ``model/`` (+ ``model_ema/``)  the final model, ``HQVAE.save_pretrained``;
- ``metrics.json``       test-split metrics with the step budget, final tau and throughput.

The temperature schedule tau = exp(-r t) lives in the model (its ``global_step``). The paper's r = 1e-5 is
tuned for ~1e5+ steps; after 3,000 steps it leaves tau = 0.97. Every result records the budget and final tau.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tokenizer.config import check_kwargs
from tokenizer.data import FashionMNIST, ImageDataset, collate_images, load_hf_split
from tokenizer.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_weight,
    generator_adversarial_loss,
    hinge_discriminator_loss,
)
from tokenizer.metrics import evaluate_reconstruction
from tokenizer.model import HQVAE
from tokenizer.quantizers import perplexity_from_counts
from tokenizer.training_utils import (
    CheckpointManager,
    ResumableSampler,
    broadcast_object,
    check_finite,
    ema_model,
    flatten_scalars,
    fused_optimizer_supported,
    load_training_state,
    save_training_state,
    start_run_logs,
    to_plain,
    training_command,
    update_ema,
)

logger = logging.getLogger("tokenizer.train")


@dataclass
class DataConfig:
    # fashion_mnist: Debian's idx files (or ``path`` holding them, else the hub); hub: a dataset id;
    # imagefolder: a folder (split subfolders); parquet: ``path``/<split>*.parquet; arrow: a save_to_disk folder.
    source: Literal["fashion_mnist", "hub", "imagefolder", "parquet", "arrow"] = "fashion_mnist"
    path: str | None = None
    image_column: str = "image"
    label_column: str | None = "label"
    train_split: str = "train"
    validation_split: str | None = None  # None: the last ``validation_size`` training items (fixed split)
    test_split: str | None = "test"
    validation_size: int = 5000
    image_size: int = 32
    center_crop: bool = True
    random_flip: bool = False  # horizontal flips of training batches, drawn from the checkpointed generator
    on_bad_image: Literal["skip", "raise"] = "skip"
    min_image_size: int = 0  # smaller images count as bad (skip/raise); 0 upsamples them
    batch_size: int = 32
    eval_batch_size: int = 256
    max_eval_images: int | None = None  # cap validation/test evaluation (None: the whole split)
    num_workers: int = 0


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
class LoggingConfig:
    log_every: int = 100
    validate_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    tensorboard: bool = True
    grid_images: int = 32  # tokenizer reconstruction grids only (prior grids: sampling.samples_per_class)


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
        positive = {
            "optimizer.max_steps": self.optimizer.max_steps,
            "optimizer.gradient_accumulation_steps": self.optimizer.gradient_accumulation_steps,
            "data.batch_size": self.data.batch_size,
            "data.eval_batch_size": self.data.eval_batch_size,
            "data.image_size": self.data.image_size,
            "logging.log_every": self.logging.log_every,
            "logging.validate_every": self.logging.validate_every,
            "logging.checkpoint_every": self.logging.checkpoint_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.data.source != "fashion_mnist" and self.data.path is None:
            raise ValueError(f"data.path is required for data.source={self.data.source!r}")


# ------------------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------------------
def build_datasets(config: DataConfig, channels: int):
    """(train, validation, test) datasets of (image, label); test is None without a test split."""
    if config.source == "fashion_mnist":
        kwargs = dict(image_size=config.image_size, validation_size=config.validation_size, root=config.path)
        return (
            FashionMNIST("train", **kwargs),
            FashionMNIST("validation", **kwargs),
            FashionMNIST("test", **kwargs),
        )

    def wrap(hf):
        return ImageDataset(
            hf,
            channels=channels,
            image_size=config.image_size,
            image_column=config.image_column,
            label_column=config.label_column,
            center_crop=config.center_crop,
            on_bad_image=config.on_bad_image,
            min_image_size=config.min_image_size,
        )

    train = load_hf_split(config.source, config.path, config.train_split)
    if config.validation_split is not None:
        validation = load_hf_split(config.source, config.path, config.validation_split)
    else:
        if not 0 < config.validation_size < len(train):
            raise ValueError(
                f"data.validation_size must be in (0, {len(train)}), got {config.validation_size}"
            )
        cut = len(train) - config.validation_size
        validation = train.select(range(cut, len(train)))
        train = train.select(range(cut))
    test = load_hf_split(config.source, config.path, config.test_split) if config.test_split else None
    return wrap(train), wrap(validation), (wrap(test) if test is not None else None)


def _collate(batch):
    # FashionMNIST items are (image, label) tensors and never bad; ImageDataset items may be None.
    return collate_images(batch)


# ------------------------------------------------------------------------------------------------------------
# Logging helpers
# ------------------------------------------------------------------------------------------------------------
OUTPUT_TERMS = (
    "loss",
    "reconstruction_loss",
    "latent_losses",
    "kl_losses",
    "commitment_losses",
    "codebook_losses",
    "perplexity",
    "codes_used",
    "entropy",
    "variances",
    "decoder_variance",
    "temperature",
)


def save_reconstruction_grid(model, images: torch.Tensor, path: Path) -> None:
    from torchvision.utils import save_image

    was_training = model.training
    model.eval()
    with torch.no_grad():
        reconstruction = model(images).sample.float().clamp(0, 1)
    model.train(was_training)
    rows = [t for pair in zip(images.split(8), reconstruction.split(8)) for t in pair]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat(rows), path, nrow=8, padding=1, pad_value=1.0)


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, config: TrainConfig, resume: str | None = None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.config = config
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        torch.set_flush_denormal(True)  # Gumbel-softmax at small tau yields denormals that slow CPUs ~40%
        self.output_dir = Path(config.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.optimizer.gradient_accumulation_steps,
            log_with="tensorboard" if config.logging.tensorboard else None,
            project_dir=str(self.output_dir),
        )
        acc = self.accelerator
        set_seed(config.seed)  # identical initial weights on every process
        self.model = HQVAE(**config.model)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        set_seed(config.seed + acc.process_index)
        channels = self.model.config.in_channels
        self.train_set, self.validation_set, self.test_set = build_datasets(config.data, channels)
        self.sampler = ResumableSampler(
            len(self.train_set), config.seed, acc.process_index, acc.num_processes
        )
        per_step = config.data.batch_size * config.optimizer.gradient_accumulation_steps
        if len(self.sampler) < per_step:
            raise ValueError(
                f"each process gets {len(self.sampler)} training images, fewer than one step's "
                f"{per_step} (data.batch_size x gradient_accumulation_steps)"
            )

        self.perceptual = None
        if config.losses.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(
                pretrained_backbone=config.losses.pretrained_lpips,
                vgg16_path=config.losses.vgg16_path,
                use_pad_and_trim=config.losses.pad_and_trim,
            ).to(acc.device)
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.optimizer.learning_rate,
            betas=tuple(config.optimizer.betas),
            fused=fused_optimizer_supported(acc.device),
        )
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            mode="min",
            factor=config.optimizer.plateau_factor,
            patience=config.optimizer.plateau_patience
            - 1,  # halve on the N-th validation without improvement
        )
        self.discriminator = self.disc_optimizer = None
        if config.losses.adversarial_weight > 0:
            self.discriminator = PatchDiscriminator(
                channels, config.losses.discriminator_channels, config.losses.discriminator_layers
            )
            self.disc_optimizer = torch.optim.Adam(
                self.discriminator.parameters(),
                lr=config.losses.discriminator_learning_rate or config.optimizer.learning_rate,
                betas=tuple(config.losses.discriminator_betas),
            )
            self.discriminator, self.disc_optimizer = acc.prepare(self.discriminator, self.disc_optimizer)
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.unwrapped: HQVAE = acc.unwrap_model(self.model)
        self.ema = (
            ema_model(self.unwrapped, config.optimizer.ema_decay) if config.optimizer.ema_decay else None
        )
        # One generator for the stochastic parts of the loss (Gumbel noise, pad-and-trim windows).
        self.generator = torch.Generator(device=acc.device).manual_seed(
            config.seed * 7919 + acc.process_index
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.best_validation = float("inf")
        self.skipped_images = 0
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", config.logging.keep_checkpoints)
        if resume is not None:
            self.load_checkpoint(self.checkpoints.resolve(resume))

    # -- data ------------------------------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.config.data.batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=self.config.data.num_workers,
            collate_fn=_collate,
            # its own generator: creating an iterator must not consume the global RNG (exact resume)
            generator=torch.Generator().manual_seed(self.config.seed),
        )

    def batches(self):
        """Endless batches; (epoch, batch_in_epoch) is the exact data position saved in checkpoints."""
        batch_size = self.config.data.batch_size
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * batch_size)
            for images, _, skipped in self._loader():
                self.batch_in_epoch += 1
                self.skipped_images += skipped
                if images is None:
                    if self.accelerator.num_processes > 1:
                        raise RuntimeError("a whole batch of bad images; processes would fall out of step")
                    continue
                images = images.to(self.accelerator.device, memory_format=self.memory_format)
                if self.config.data.random_flip:
                    flip = torch.rand(images.shape[0], generator=self.generator, device=images.device) < 0.5
                    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
                yield images
            self.epoch += 1
            self.batch_in_epoch = 0

    # -- checkpoints -----------------------------------------------------------------------------------------
    def _generators(self) -> dict:
        return {"loss": self.generator}

    def _stateful(self) -> dict:
        unwrap = self.accelerator.unwrap_model
        return {
            "model": self.unwrapped,
            "optimizer": self.optimizer,
            "plateau": self.plateau,
            "ema": self.ema,
            "discriminator": unwrap(self.discriminator) if self.discriminator is not None else None,
            "disc_optimizer": self.disc_optimizer,
        }

    def save_checkpoint(self) -> None:
        progress = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_validation": self.best_validation,
            "skipped_images": self.skipped_images,
        }
        save_training_state(
            self.checkpoints, self.accelerator, self.step, self._stateful(), progress, self._generators()
        )

    def load_checkpoint(self, path: Path) -> None:
        progress = load_training_state(path, self.accelerator, self._stateful(), self._generators())
        self.step, self.epoch, self.batch_in_epoch = (
            progress["step"],
            progress["epoch"],
            progress["batch_in_epoch"],
        )
        self.best_validation, self.skipped_images = progress["best_validation"], progress["skipped_images"]

    # -- one step --------------------------------------------------------------------------------------------
    def _losses(self, images: torch.Tensor):
        """Forward pass and the generator-side loss terms (all named, for the NaN check and logging)."""
        cfg = self.config.losses
        with self.accelerator.autocast():
            out = self.model(images, generator=self.generator)
        terms = {"objective": out.loss}
        loss = out.loss
        if self.perceptual is not None:
            perceptual = self.perceptual(out.sample.float(), images.float(), self.generator)
            terms["perceptual"] = perceptual
            # LPIPS joins the squared error inside the decoder term (see HQVAE.reconstruction_term).
            final_term = (
                out.progressive_losses[-1] if out.progressive_losses is not None else out.reconstruction_loss
            )
            with_perceptual, _ = self.unwrapped.reconstruction_term(
                images, out.sample, extra_distortion=cfg.perceptual_weight * perceptual
            )
            loss = loss - final_term + with_perceptual
        if self.discriminator is not None and self.step >= cfg.adversarial_start_step:
            adversarial = generator_adversarial_loss(self.discriminator(out.sample))
            last_layer = self.unwrapped.decoder.net[-1].weight
            weight = adaptive_weight(loss, adversarial, last_layer, max_weight=cfg.adaptive_weight_max)
            terms["adversarial"] = adversarial
            terms["adaptive_weight"] = weight
            loss = loss + cfg.adversarial_weight * weight * adversarial
        terms["total"] = loss
        return out, loss, terms

    def _discriminator_step(self, images, reconstruction) -> torch.Tensor:
        with self.accelerator.autocast():
            # one forward over real and fake together (DDP expects one forward per backward)
            logits = self.discriminator(torch.cat([images, reconstruction.detach().to(images.dtype)]))
            real_logits, fake_logits = logits.split(images.shape[0])
            d_loss = hinge_discriminator_loss(real_logits, fake_logits)
        self.disc_optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(d_loss)
        self.disc_optimizer.step()
        return d_loss

    def train_step(self, batches) -> tuple:
        acc = self.accelerator
        cfg = self.config
        for _ in range(cfg.optimizer.gradient_accumulation_steps):
            images = next(batches)
            with acc.accumulate(self.model):
                out, loss, terms = self._losses(images)
                check_finite(self.step, terms)
                acc.backward(loss)
                if acc.sync_gradients and cfg.optimizer.grad_clip_norm:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optimizer.grad_clip_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            if self.discriminator is not None and self.step >= cfg.losses.adversarial_start_step:
                terms["discriminator"] = self._discriminator_step(images, out.sample)
                check_finite(self.step, {"discriminator": terms["discriminator"]})
        self.unwrapped.advance_schedule()
        if self.ema is not None:
            update_ema(self.ema, self.unwrapped)
        self.step += 1
        return out, terms, images.shape[0] * cfg.optimizer.gradient_accumulation_steps

    # -- evaluation ------------------------------------------------------------------------------------------
    def eval_model(self) -> HQVAE:
        return self.ema.module if self.ema is not None else self.unwrapped

    def _perceptual_for_metrics(self):
        if self.perceptual is not None and self.config.losses.pretrained_lpips:
            return self.perceptual
        return None

    def _eval_loader(self, dataset) -> DataLoader:
        return DataLoader(dataset, batch_size=self.config.data.eval_batch_size, collate_fn=_collate)

    def validate(self) -> dict:
        metrics = evaluate_reconstruction(
            self.eval_model(),
            self._eval_loader(self.validation_set),
            device=self.accelerator.device,
            perceptual=self._perceptual_for_metrics(),
            max_images=self.config.data.max_eval_images,
        )
        return {"step": self.step, **metrics.to_dict()}

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        acc, cfg = self.accelerator, self.config
        is_main = acc.is_main_process
        history, validation_log = start_run_logs(
            acc, self.output_dir, cfg, self.step, cfg.logging.tensorboard, cfg.optimizer.max_steps
        )
        grid_images = self.validation_set_images(cfg.logging.grid_images)
        if is_main and self.unwrapped.config.quantizer == "sq":
            regime = self.unwrapped.rate_regime(*grid_images.shape[-2:])
            logger.info(
                "rate regime: D/2 = %.0f nats per e-fold of MSE, KL_max = %.0f nats, rho = %.2f "
                "(small rho: the ELBO keeps the codes soft)",
                regime["half_dim"],
                regime["kl_max"],
                regime["rho"],
            )
        batches = self.batches()
        progress = tqdm(
            total=cfg.optimizer.max_steps,
            initial=self.step,
            desc="train",
            disable=not is_main,
            dynamic_ncols=True,
        )
        start, images_seen = time.perf_counter(), 0
        interval_start, interval_images = start, 0
        self.model.train()
        while self.step < cfg.optimizer.max_steps:
            out, terms, num_images = self.train_step(batches)
            images_seen += num_images * acc.num_processes
            interval_images += num_images * acc.num_processes
            progress.update(1)
            step = self.step
            if step % cfg.logging.log_every == 0 or step == cfg.optimizer.max_steps or step == 1:
                usage = self._global_usage(out.indices)  # a collective: every process takes part
            if is_main and (
                step % cfg.logging.log_every == 0 or step == cfg.optimizer.max_steps or step == 1
            ):
                now = time.perf_counter()
                record = {"step": step, **{k: to_plain(getattr(out, k)) for k in OUTPUT_TERMS}}
                record["perplexity"], record["codes_used"] = usage
                record["kl_total"] = to_plain(out.kl_losses.sum())
                record.update({k: to_plain(v) for k, v in terms.items() if k not in ("objective", "total")})
                record["learning_rate"] = self.optimizer.param_groups[0]["lr"]
                record["images_per_second"] = round(interval_images / max(now - interval_start, 1e-9), 1)
                record["skipped_images"] = self.skipped_images
                interval_start, interval_images = now, 0
                history.write(json.dumps(record) + "\n")
                history.flush()
                if cfg.logging.tensorboard:
                    acc.log(flatten_scalars(record, "train/"), step=step)
                progress.set_postfix(loss=f"{record['loss']:.1f}", tau=f"{record['temperature']:.3f}")
            if step % cfg.logging.validate_every == 0:
                result = self.validate() if is_main else None
                result = broadcast_object(result)
                self.plateau.step(result["loss"])
                self.best_validation = min(self.best_validation, result["loss"])
                if is_main:
                    validation_log.write(json.dumps(result) + "\n")
                    validation_log.flush()
                    if cfg.logging.tensorboard:
                        acc.log(flatten_scalars(result, "validation/"), step=step)
                    save_reconstruction_grid(
                        self.eval_model(), grid_images, self.output_dir / "grids" / f"{step:08d}.png"
                    )
            if step % cfg.logging.checkpoint_every == 0 or step == cfg.optimizer.max_steps:
                self.save_checkpoint()
        progress.close()
        elapsed = time.perf_counter() - start
        if is_main:
            history.close()
            validation_log.close()
        result = self.finish(images_seen, elapsed) if is_main else {}
        acc.wait_for_everyone()
        acc.end_training()
        return result

    def _global_usage(self, indices: list[torch.Tensor]) -> tuple[list[float], list[int]]:
        """Per-layer perplexity and distinct codes of this step's batch over *all* processes."""
        perplexity, used = [], []
        for idx, size in zip(indices, self.unwrapped.codebook_sizes):
            counts = self.accelerator.reduce(torch.bincount(idx.flatten(), minlength=size), reduction="sum")
            p, u = perplexity_from_counts(counts)
            perplexity.append(p.item())
            used.append(int(u))
        return perplexity, used

    def validation_set_images(self, count: int) -> torch.Tensor:
        items = [self.validation_set[i] for i in range(min(count, len(self.validation_set)))]
        return torch.stack([item[0] for item in items if item is not None]).to(self.accelerator.device)

    def finish(self, images_seen: int, elapsed: float) -> dict:
        cfg = self.config
        model = self.eval_model()
        split, dataset = (
            ("test", self.test_set) if self.test_set is not None else ("validation", self.validation_set)
        )
        metrics = evaluate_reconstruction(
            model,
            self._eval_loader(dataset),
            device=self.accelerator.device,
            perceptual=self._perceptual_for_metrics(),
            max_images=cfg.data.max_eval_images,
            progress=True,
        )
        result = {
            "split": split,
            **metrics.to_dict(),
            "steps": self.step,
            "batch_size": cfg.data.batch_size,
            "num_processes": self.accelerator.num_processes,
            "final_temperature": model.temperature if model.config.quantizer == "sq" else None,
            "dequantization_variances": model.dequantization_variances().tolist(),
            "rate_regime": model.rate_regime(*dataset[0][0].shape[-2:]),
            "train_images_per_second": round(images_seen / max(elapsed, 1e-9), 1),
            "train_seconds": round(elapsed, 1),
            "skipped_images": self.skipped_images,
            "weights": "ema" if self.ema is not None else "raw",
        }
        (self.output_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        self.unwrapped.save_pretrained(self.output_dir / "model")
        if self.ema is not None:
            self.ema.module.save_pretrained(self.output_dir / "model_ema")
        save_reconstruction_grid(
            model,
            self.validation_set_images(cfg.logging.grid_images),
            self.output_dir / "reconstructions.png",
        )
        logger.info(
            "%s RMSE %.4f, perplexity %s -> %s", split, result["rmse"], result["perplexity"], self.output_dir
        )
        return result


def train(config: TrainConfig, resume: str | None = None) -> dict:
    return Trainer(config, resume).fit()


def main(argv=None) -> dict:
    return training_command(TrainConfig, Trainer, __doc__, "configs/tokenizer/*.yaml", argv)


if __name__ == "__main__":
    main()
