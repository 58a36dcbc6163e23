"""Tokenizer training: ``accelerate launch tokenizer/train.py --config configs/tokenizer/<name>.yaml [key=value ...]``.

One entry point for every variant (SQ-VAE-2, RSQ-VAE, hybrid, VQ-VAE-2, RQ-VAE): a variant is a YAML file whose
``model:`` block is ``HQVAE``'s constructor arguments. ``--resume latest`` (or a checkpoint folder) continues a
run exactly. Writes into ``output_dir``:

- ``config.yaml``        the resolved config;
- ``history.jsonl``      every ``logging.log_every`` steps: each loss term, s_l^2, entropy, perplexity and
                         codes used (over all processes' batches), tau,
                         sigma^2, LR, images/s (also to TensorBoard under ``tensorboard/``); for SQ also
                         d J / d log s_l^2 split into the decoder term and the rate
                         (``variance_grad_decoder``, ``variance_grad_rate``; ``HQVAE.variance_gradients``) and
                         s_l^2 / code spacing (``relative_variances``, scale-free);
- ``validation.jsonl``   periodic validation: loss, RMSE, PSNR, SSIM, LPIPS (when VGG weights exist), usage;
- ``checkpoints/``       atomic, rotated training state (``latest`` names the newest complete one);
- ``grids/``             validation reconstructions (odd rows originals, even rows reconstructions);
- ``model/`` (+ ``model_ema/``)  the final model, ``HQVAE.save_pretrained``;
- ``metrics.json``       test-split metrics with the step budget, final tau and throughput.

The temperature schedule tau = exp(-r t) lives in the model (its ``global_step``). The paper's r = 1e-5 is
tuned for ~1e5+ steps; after 3,000 steps it leaves tau = 0.97. Every result records the budget and final tau.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tokenizer.audio import write_listening_samples
from tokenizer.config import constructor_defaults
from tokenizer.data import build_datasets, collate_images
from tokenizer.grids import reconstruction_rows, save_labelled_grid
from tokenizer.losses import PatchDiscriminator, PerceptualLoss, TokenizerLoss
from tokenizer.metrics import evaluate_reconstruction
from tokenizer.model import HQVAE
from tokenizer.quantizers import perplexity_from_counts
from tokenizer.train_config import TrainConfig
from tokenizer.trainer import BaseTrainer
from tokenizer.training_utils import (
    check_finite,
    check_finite_parameters,
    fused_optimizer_supported,
    to_plain,
    training_command,
)

logger = logging.getLogger("tokenizer.train")


# history.jsonl: these fields of HQVAEOutput at every logged step
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


def _display(images: torch.Tensor, *others: torch.Tensor, spectrogram: bool = False) -> list[torch.Tensor]:
    """``images`` and ``others`` in [0, 1] for a grid: values outside [0, 1] (e.g. normalised log-mel
    spectrograms) are shown on the originals' range; a spectrogram is drawn with its low mel bands at the bottom."""
    low, high = float(images.min()), float(images.max())
    tensors = [images, *others]
    if low < 0 or high > 1:
        tensors = [(x - low) / max(high - low, 1e-12) for x in tensors]
    if spectrogram:
        tensors = [x.flip(-2) for x in tensors]
    return [x.clamp(0, 1) for x in tensors]


def save_reconstruction_grid(
    model, images: torch.Tensor, path: Path, title: str, spectrogram: bool = False
) -> None:
    """Originals above their reconstructions (argmax codes, eval mode), rows labelled, ``title`` on top."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        reconstruction = model(images).sample.float()
    model.train(was_training)
    rows = _display(images, reconstruction, spectrogram=spectrogram)
    save_labelled_grid(path, *reconstruction_rows(*rows), title=title)


def save_layer_grid(model, images: torch.Tensor, path: Path, title: str, spectrogram: bool = False) -> None:
    """Originals, then their reconstructions from the top 1, 2, ..., L layers' argmax codes (the lower layers
    left out, as in the paper's Figures 4 and 13): what each layer adds."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        indices = model.encode(images)
        counts = range(1, model.num_layers + 1)
        partial = [model.decode_indices(indices, num_layers=n).float() for n in counts]
    model.train(was_training)
    labels = ["original"] + [f"top {n} layer{'s' if n > 1 else ''}" for n in counts]
    save_labelled_grid(path, _display(images, *partial, spectrogram=spectrogram), labels, title=title)


class TokenizerTrainer(BaseTrainer):
    """HQ-VAE training on the shared loop (``tokenizer.trainer.BaseTrainer``): the model's objective (eq. 6,
    14 or 26, assembled by ``HQVAE.forward``), optional LPIPS inside the decoder term and a PatchGAN loss,
    Adam with the plateau LR schedule of appendix F, test-split metrics at the end."""

    unit = "images"
    generator_name = "loss"
    collate_fn = staticmethod(collate_images)

    @classmethod
    def model_defaults(cls, config) -> dict:
        return constructor_defaults(HQVAE)

    def build(self, datasets: tuple | None = None) -> None:
        """``datasets``: (train, validation, test) to use instead of ``data:``'s (benchmarks)."""
        config, acc = self.config, self.accelerator
        torch.set_flush_denormal(True)  # Gumbel-softmax at small tau yields denormals that slow CPUs ~40%
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = self.seeded_model(lambda: HQVAE(**config.model).to(memory_format=self.memory_format))
        channels = self.model.config.in_channels
        self.train_set, self.validation_set, self.test_set = datasets or build_datasets(config.data, channels)
        self.sampler = self.make_sampler(len(self.train_set))
        self.perceptual = None
        if config.losses.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(
                pretrained_backbone=config.losses.pretrained_lpips,
                vgg16_path=config.losses.vgg16_path,
                use_pad_and_trim=config.losses.pad_and_trim,
            ).to(acc.device)
        self.optimizer = torch.optim.Adam(
            self._parameter_groups(),
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
        losses = config.losses
        self.objective = TokenizerLoss(
            self.perceptual,
            losses.perceptual_weight,
            self.discriminator,
            losses.adversarial_weight,
            losses.adversarial_start_step,
            losses.adaptive_weight_max,
        )
        self.best_validation = float("inf")
        self.skipped_images = 0
        self._variance_gradients = None  # set by compute_loss on logged steps (SQ), read by log_record

    def _parameter_groups(self) -> list:
        """One group; with ``optimizer.variance_lr_multiplier`` != 1 the SQ log s^2 parameters form a second
        group at that multiple of the learning rate."""
        opt = self.config.optimizer
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if opt.variance_lr_multiplier == 1.0:
            return [p for _, p in params]
        variances = [p for n, p in params if n.endswith(".log_variance")]
        if not variances:
            raise ValueError(
                "optimizer.variance_lr_multiplier applies to SQ dequantization variances; this model has none"
            )
        rest = [p for n, p in params if not n.endswith(".log_variance")]
        return [{"params": rest}, {"params": variances, "lr": opt.learning_rate * opt.variance_lr_multiplier}]

    # -- data ------------------------------------------------------------------------------------------------
    def device_batch(self, raw):
        images, _, skipped = raw
        self.skipped_images += skipped
        if images is None:
            if self.accelerator.num_processes > 1:
                raise RuntimeError("a whole batch of bad images; processes would fall out of step")
            return None
        images = images.to(self.accelerator.device, memory_format=self.memory_format)
        if self.config.data.random_flip:
            flip = torch.rand(images.shape[0], generator=self.generator, device=images.device) < 0.5
            images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        return images

    # -- checkpoints -----------------------------------------------------------------------------------------
    def extra_stateful(self) -> dict:
        unwrap = self.accelerator.unwrap_model
        return {
            "plateau": self.plateau,
            "discriminator": unwrap(self.discriminator) if self.discriminator is not None else None,
            "disc_optimizer": self.disc_optimizer,
        }

    def extra_progress(self) -> dict:
        return {"best_validation": self.best_validation, "skipped_images": self.skipped_images}

    def load_extra_progress(self, progress: dict) -> None:
        self.best_validation, self.skipped_images = progress["best_validation"], progress["skipped_images"]

    # -- one step --------------------------------------------------------------------------------------------
    def compute_loss(self, images: torch.Tensor):
        """The model's objective with LPIPS inside its decoder term and the GAN term (``TokenizerLoss``)."""
        last_layer = self.unwrapped.last_layer_weight
        acc = self.accelerator
        loss, terms, out = self.objective(
            self.model, last_layer, images, self.generator, self.step, acc.autocast
        )
        if self.unwrapped.config.quantizer == "sq" and self.logs_at(self.step + 1):
            # which way the ELBO pushes each s_l^2 (decoder term vs rate), logged with this step's line
            self._variance_gradients = self.unwrapped.variance_gradients(out)
        return loss, terms, out

    def after_micro_step(self, images, out, terms: dict) -> None:
        if not self.objective.adversarial_active(self.step):
            return
        d_loss = self.objective.discriminator_loss(images, out.sample, self.accelerator.autocast)
        self.disc_optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(d_loss)
        self.disc_optimizer.step()
        terms["discriminator"] = d_loss
        check_finite(self.step + 1, {"discriminator": d_loss})
        check_finite_parameters(
            self.step + 1, self.accelerator.unwrap_model(self.discriminator), "discriminator weights"
        )

    def finiteness_terms(self, out, terms: dict) -> dict:
        """The loss terms and the objective's components per layer, so a NaN names where it arose."""
        components = (
            "reconstruction_loss",
            "latent_losses",
            "kl_losses",
            "commitment_losses",
            "codebook_losses",
        )
        return {**terms, **{name: getattr(out, name) for name in components}}

    def after_step(self) -> None:
        self.unwrapped.advance_schedule()

    # -- logs ------------------------------------------------------------------------------------------------
    def log_record(self, out, terms: dict) -> dict:
        record = {k: to_plain(getattr(out, k)) for k in OUTPUT_TERMS}
        record["perplexity"], record["codes_used"] = self._global_usage(out.indices)
        record["kl_total"] = to_plain(out.kl_losses.sum())
        if self.unwrapped.config.quantizer == "sq":  # s^2 read against its codebook's scale (scale-free)
            record["relative_variances"] = to_plain(self.unwrapped.relative_variances())
        split = self._variance_gradients
        if split is not None:
            record["variance_grad_decoder"] = to_plain(split["decoder"])
            record["variance_grad_rate"] = to_plain(split["rate"])
            self._variance_gradients = None
        record.update({k: to_plain(v) for k, v in terms.items() if k not in ("objective", "total")})
        record["skipped_images"] = self.skipped_images
        return record

    def progress_postfix(self, record: dict) -> dict:
        # 4 significant digits: a VQ loss (an MSE ~1e-3) and an SQ ELBO (~-1e3) both stay readable; tau only where
        # a Gumbel-softmax relaxation uses it
        postfix = {"loss": f"{record['loss']:.4g}"}
        if self.unwrapped.config.quantizer in ("sq", "gumbel"):
            postfix["tau"] = f"{record['temperature']:.3f}"
        return postfix

    def _global_usage(self, indices: list[torch.Tensor]) -> tuple[list[float], list[int]]:
        """Per-layer perplexity and distinct codes of this step's batch over *all* processes (a collective)."""
        perplexity, used = [], []
        for idx, size in zip(indices, self.unwrapped.codebook_sizes):
            counts = self.accelerator.reduce(torch.bincount(idx.flatten(), minlength=size), reduction="sum")
            p, u = perplexity_from_counts(counts)
            perplexity.append(p.item())
            used.append(int(u))
        return perplexity, used

    def on_fit_start(self) -> None:
        if self.accelerator.is_main_process and self.unwrapped.config.quantizer == "sq":
            regime = self.unwrapped.rate_regime(*self.validation_set[0][0].shape[-2:])
            logger.info(
                "rate regime: D/2 = %.0f nats per e-fold of MSE, KL_max = %.0f nats, rho = %.2f "
                "(small rho: the ELBO keeps the codes soft)",
                regime["half_dim"],
                regime["kl_max"],
                regime["rho"],
            )

    # -- evaluation ------------------------------------------------------------------------------------------
    def _perceptual_for_metrics(self):
        if self.perceptual is not None and self.config.losses.pretrained_lpips:
            return self.perceptual
        return None

    def _evaluate(self, dataset, progress: bool = False, model=None):
        return evaluate_reconstruction(
            model or self.eval_model(),
            DataLoader(dataset, batch_size=self.config.data.eval_batch_size, collate_fn=collate_images),
            device=self.accelerator.device,
            perceptual=self._perceptual_for_metrics(),
            max_images=self.config.data.max_eval_images,
            progress=progress,
            value_range=self.config.data.value_range,
        )

    validation_keys = ("loss", "rmse", "psnr", "perplexity", "codes_used")
    selection_metrics = ("rmse", "loss")

    def validate(self) -> dict:
        return {"step": self.step, **self._evaluate(self.validation_set).to_dict()}

    def on_validation(self, result: dict) -> None:
        self.plateau.step(result["loss"])
        self.best_validation = min(self.best_validation, result["loss"])

    def validation_set_images(self, count: int) -> torch.Tensor:
        items = [self.validation_set[i] for i in range(min(count, len(self.validation_set)))]
        return torch.stack([item[0] for item in items if item is not None]).to(self.accelerator.device)

    def save_grid(self, path: Path) -> None:
        weights = "EMA weights" if self.ema is not None else "weights"
        save_reconstruction_grid(
            self.eval_model(),
            self.validation_set_images(self.config.logging.grid_images),
            path,
            title=f"validation images and their reconstructions (argmax codes, {weights} at step {self.step})",
            spectrogram=self.config.data.is_audio,
        )

    def _best_on(self, split: str, dataset) -> dict | None:
        """``best_record`` with the kept best-validation weights' metrics on ``split`` (``logging.keep_best``)."""
        record = self.best_record()
        if record is None:
            return None
        best = HQVAE.from_pretrained(self.output_dir / record["path"]).to(self.accelerator.device)
        return {**record, split: self._evaluate(dataset, model=best).to_dict()}

    def finish(self, images_seen: int, elapsed: float) -> dict:
        cfg = self.config
        model = self.eval_model()
        split, dataset = (
            ("test", self.test_set) if self.test_set is not None else ("validation", self.validation_set)
        )
        metrics = self._evaluate(dataset, progress=True)
        result = {
            "split": split,
            **metrics.to_dict(),
            "steps": self.step,
            "batch_size": cfg.data.batch_size,
            "num_processes": self.accelerator.num_processes,
            "final_temperature": model.temperature if model.config.quantizer in ("sq", "gumbel") else None,
            "dequantization_variances": model.dequantization_variances().tolist(),
            "relative_variances": model.relative_variances().tolist()
            if model.config.quantizer == "sq"
            else None,
            "rate_regime": model.rate_regime(*dataset[0][0].shape[-2:]),
            "train_images_per_second": round(images_seen / max(elapsed, 1e-9), 1),
            "train_seconds": round(elapsed, 1),
            "skipped_images": self.skipped_images,
            "weights": "ema" if self.ema is not None else "raw",
            "best": self._best_on(split, dataset),
        }
        self.unwrapped.save_pretrained(self.output_dir / "model")
        if self.ema is not None:
            self.ema.module.save_pretrained(self.output_dir / "model_ema")
        self.save_grid(self.output_dir / "reconstructions.png")
        images = self.validation_set_images(8)
        if model.num_layers > 1:
            save_layer_grid(model, images, self.output_dir / "reconstructions_by_layers.png",
                            title=f"validation images decoded from their top layers only (step {self.step})",
                            spectrogram=cfg.data.is_audio)  # fmt: skip
        if cfg.data.is_audio:  # listening aid: Griffin-Lim of originals and reconstructions, same inversion
            write_listening_samples(model, images[:4], cfg.data.audio, self.output_dir / "listening")
        logger.info(
            "%s RMSE %.4f, perplexity %s -> %s", split, result["rmse"], result["perplexity"], self.output_dir
        )
        return result


def train(config: TrainConfig, resume: str | None = None) -> dict:
    return TokenizerTrainer(config, resume).fit()


def main(argv=None) -> dict:
    return training_command(TrainConfig, TokenizerTrainer, __doc__, "configs/tokenizer/*.yaml", argv)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
