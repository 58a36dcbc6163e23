"""The one training loop of both stages: ``BaseTrainer``, subclassed by ``tokenizer.train.TokenizerTrainer``
and ``prior.train.PriorTrainer``.

The loop owns everything that does not depend on what is trained: the accelerate set-up, seeding, the
resumable data order, gradient accumulation and clipping, the finiteness check, weight EMA, the logging /
validation / checkpoint cadence, exact resume and the finish. A stage supplies a few hooks:

================================  =============================================================================
``build()``                       model, datasets, sampler and optimizer (+ its schedules and extra modules)
``device_batch(raw)``             a collated batch on the device (None skips it)
``compute_loss(batch)``           the loss of one micro-batch and its named terms (the model owns the objective)
``after_micro_step``/``after_step``  e.g. the discriminator update, the temperature or LR schedule
``log_record(out, terms)``        the scalars of a history line (runs on every process: collectives allowed)
``validate()``/``on_validation``  validation metrics (main process) and what the stage does with them
``save_grid(path)``               the periodic image grid
``finish(items, seconds)``        final artefacts; returns the result that ``metrics.json`` records
================================  =============================================================================

``metrics.json`` is written last, after every other artefact: a run folder holding it is complete
(``is_finished``), and ``train_or_resume`` reads it back instead of training again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.data import DataLoader

from tokenizer.console import progress_bar
from tokenizer.training_utils import (
    CheckpointManager,
    ResumableSampler,
    UnreadableCheckpoint,
    broadcast_object,
    check_finite,
    check_finite_parameters,
    ema_model,
    flatten_scalars,
    load_training_state,
    save_pretrained_atomically,
    save_training_state,
    start_run_logs,
    to_plain,
    update_ema,
)

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
BEST_MODEL = "model_best"  # the best-validation weights (``logging.keep_best``)


@dataclass
class LoggingConfig:
    log_every: int = 100
    validate_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    tensorboard: bool = True
    grid_images: int = 32  # tokenizer reconstruction grids only (prior grids: sampling.samples_per_class)
    # a validation metric to minimise ("rmse", "loss"): the weights (EMA when on) at its best validation are
    # kept in <output_dir>/model_best and reported in metrics.json["best"]; None keeps only the final model
    keep_best: Literal["rmse", "loss"] | None = None  # the prior takes "loss" only


def is_finished(run_dir: str | Path) -> bool:
    """Whether a run folder is complete (its ``metrics.json``, written last, exists)."""
    return (Path(run_dir) / METRICS_FILE).exists()


# settings that change neither what is trained nor what is measured
NOT_THE_RUN = (
    "output_dir", "num_threads", "data.num_workers", "logging.log_every", "logging.tensorboard",
    "logging.checkpoint_every", "logging.keep_checkpoints", "logging.grid_images",
    "logging.keep_best",  # an extra artefact; a finished run without it has no metrics.json["best"]
)  # fmt: skip
# a killed run may be resumed with a longer budget (the temperature decay r itself, in model, must match)
RESUMABLE_CHANGES = ("optimizer.max_steps", "optimizer.final_temperature")


def check_same_run(run_dir: Path, config, finished: bool, model_defaults: dict | None = None) -> None:
    """Raises ``ValueError`` naming the first setting in which ``run_dir/config.yaml`` differs from ``config``
    (both read through ``config``'s schema, so keys added since with their defaults do not count; a ``model:``
    key left out on one side reads as its value in ``model_defaults``). Settings in ``NOT_THE_RUN`` may differ;
    for an unfinished run also ``RESUMABLE_CHANGES``."""
    import yaml

    from tokenizer.config import first_difference, from_dict, to_dict

    saved = run_dir / "config.yaml"
    if not saved.exists():  # a checkpoint copied in by --extend-from, before its first step here
        return
    try:
        old = to_dict(from_dict(type(config), yaml.safe_load(saved.read_text())))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{saved} cannot be read as a {type(config).__name__}: {error}") from None
    new = to_dict(config)
    for side in (old, new):
        if isinstance(side.get("model"), dict):
            side["model"] = {**(model_defaults or {}), **side["model"]}
    ignore = NOT_THE_RUN if finished else NOT_THE_RUN + RESUMABLE_CHANGES
    difference = first_difference(old, new, ignore)
    if difference is not None:
        key, before, after = difference
        state = "a finished" if finished else "an unfinished"
        raise ValueError(
            f"{run_dir} holds {state} run with {key} = {before!r}, not {after!r} as asked: give this run its "
            "own output folder (or delete that one to train it again)"
        )


class BaseTrainer:
    """The shared loop; see the module docstring for the hooks a stage implements."""

    unit = "items"  # what a batch holds, for throughput logs ("images" for the tokenizer)
    generator_name = "train"  # the name of the loop's generator in checkpoints
    progress_desc = "train"
    selection_metrics: tuple[str, ...] = ("loss",)  # validation metrics ``logging.keep_best`` may minimise

    def __init__(self, config, resume: str | None = None, **build_kwargs):
        """``build_kwargs`` go to ``build()`` (e.g. ready-made datasets for a benchmark)."""
        from accelerate import Accelerator

        self.config = config
        metric = config.logging.keep_best
        if metric is not None and metric not in self.selection_metrics:
            raise ValueError(
                f"logging.keep_best = {metric!r}: expected one of {', '.join(map(repr, self.selection_metrics))} "
                "(a validation metric to minimise) or null"
            )
        self.best = {"step": None, "value": float("inf")}  # the kept best validation (logging.keep_best)
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.output_dir = Path(config.output_dir)
        self.accelerator = acc = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_steps=config.optimizer.gradient_accumulation_steps,
            log_with="tensorboard" if config.logging.tensorboard else None,
            project_dir=str(self.output_dir),
        )
        self.build(**build_kwargs)
        self.model, self.optimizer = acc.prepare(self.model, self.optimizer)
        self.unwrapped = acc.unwrap_model(self.model)
        decay = config.optimizer.ema_decay
        self.ema = ema_model(self.unwrapped, decay) if decay else None
        # One generator for the stochastic parts of a step (Gumbel noise, masks, class dropout, crops).
        self.generator = torch.Generator(device=acc.device).manual_seed(
            config.seed * 7919 + acc.process_index
        )
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self.checkpoints = CheckpointManager(self.output_dir / "checkpoints", config.logging.keep_checkpoints)
        if resume is not None:
            self.resume_from(resume)

    def resume_from(self, resume: str) -> None:
        """Loads ``resume`` (a checkpoint folder, or "latest"). With "latest", a newest checkpoint that cannot be
        read (e.g. a file truncated by a full disk) is reported by name and the next older one is used."""
        newest = self.checkpoints.resolve(resume)
        if resume != "latest":
            self.load_checkpoint(newest)
            return
        older = [c for c in reversed(self.checkpoints.checkpoints()) if c != newest]
        for candidate in [newest, *older]:
            try:
                self.load_checkpoint(candidate)
                return
            except UnreadableCheckpoint as error:
                logger.warning("skipping unreadable checkpoint: %s", error)
        raise UnreadableCheckpoint(f"--resume latest: no readable checkpoint under {self.checkpoints.root}")

    @classmethod
    def train_or_resume(cls, config) -> dict:
        """A finished run's metrics read back; a killed run resumed from its newest checkpoint; else trained.
        Either way the folder's ``config.yaml`` must describe the same run as ``config`` (``check_same_run``):
        a sweep re-run into an old folder with other settings raises instead of returning the old results."""
        out = Path(config.output_dir)
        defaults = cls.model_defaults(config)
        if is_finished(out):
            check_same_run(out, config, finished=True, model_defaults=defaults)
            logger.info("already trained: %s", out)
            return json.loads((out / METRICS_FILE).read_text())
        resume = "latest" if CheckpointManager(out / "checkpoints").latest() is not None else None
        if resume is not None:
            check_same_run(out, config, finished=False, model_defaults=defaults)
        return cls(config, resume).fit()

    @classmethod
    def model_defaults(cls, config) -> dict:
        """The model constructor's keyword defaults for ``config.model`` (``check_same_run`` reads a left-out key
        as its default); a stage names its model class here."""
        return {}

    # -- set-up helpers for build() --------------------------------------------------------------------------
    def seeded_model(self, factory):
        """``factory()`` under the run's seed (identical initial weights on every process); afterwards the
        global RNG is seeded per process."""
        from accelerate.utils import set_seed

        set_seed(self.config.seed)
        model = factory()
        set_seed(self.config.seed + self.accelerator.process_index)
        return model

    def make_sampler(self, num_items: int) -> ResumableSampler:
        acc, cfg = self.accelerator, self.config
        sampler = ResumableSampler(num_items, cfg.seed, acc.process_index, acc.num_processes)
        per_step = cfg.data.batch_size * cfg.optimizer.gradient_accumulation_steps
        if len(sampler) < per_step:
            raise ValueError(
                f"each process gets {len(sampler)} training {self.unit}, fewer than one step's {per_step} "
                "(data.batch_size x optimizer.gradient_accumulation_steps)"
            )
        return sampler

    # -- hooks -----------------------------------------------------------------------------------------------
    def build(self, **kwargs) -> None:
        """Sets ``model``, ``train_set``, ``validation_set``, ``sampler``, ``optimizer`` (and stage extras)."""
        raise NotImplementedError

    collate_fn = None

    def device_batch(self, raw):
        raise NotImplementedError

    def compute_loss(self, batch) -> tuple[torch.Tensor, dict, object]:
        """(loss to backpropagate, named terms for the finiteness check and logs, the model output)."""
        raise NotImplementedError

    def after_micro_step(self, batch, out, terms: dict) -> None:
        pass

    def finiteness_terms(self, out, terms: dict) -> dict:
        """The tensors checked for NaN / inf before each backward (named in the error)."""
        return terms

    def after_step(self) -> None:
        pass

    def extra_stateful(self) -> dict:
        """Stage objects with ``state_dict()`` saved in checkpoints besides model, optimizer and EMA."""
        return {}

    def extra_progress(self) -> dict:
        return {}

    def load_extra_progress(self, progress: dict) -> None:
        pass

    def log_record(self, out, terms: dict) -> dict:
        return {k: to_plain(v) for k, v in terms.items()}

    def progress_postfix(self, record: dict) -> dict:
        return {"loss": f"{record['loss']:.3f}"}

    def validates_at(self, step: int) -> bool:
        return step % self.config.logging.validate_every == 0

    def logs_at(self, step: int) -> bool:
        """Whether ``history.jsonl`` gets a line after ``step`` (counted from 1)."""
        return step % self.config.logging.log_every == 0 or step in (1, self.config.optimizer.max_steps)

    # the validation metrics printed at each validation (the full record is in validation.jsonl)
    validation_keys: tuple[str, ...] = ("loss",)

    def validation_message(self, result: dict) -> str:
        shown = []
        for key in self.validation_keys:
            value = result.get(key)
            if isinstance(value, float):
                shown.append(f"{key} {value:.4g}")
            elif isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
                shown.append(f"{key} [{', '.join(f'{v:.4g}' for v in value)}]")
            elif value is not None:
                shown.append(f"{key} {value}")
        return f"validation at step {self.step}/{self.config.optimizer.max_steps}: " + ", ".join(shown)

    def validate(self) -> dict:
        raise NotImplementedError

    def on_validation(self, result: dict) -> None:
        pass

    def save_grid(self, path: Path) -> None:
        pass

    def on_fit_start(self) -> None:
        pass

    def finish(self, items: int, elapsed: float) -> dict:
        raise NotImplementedError

    # -- data ------------------------------------------------------------------------------------------------
    def batches(self):
        """Endless device batches; (epoch, batch_in_epoch) is the exact data position saved in checkpoints."""
        cfg = self.config
        while True:
            self.sampler.set_position(self.epoch, self.batch_in_epoch * cfg.data.batch_size)
            loader = DataLoader(
                self.train_set,
                batch_size=cfg.data.batch_size,
                sampler=self.sampler,
                drop_last=True,
                num_workers=cfg.data.num_workers,
                collate_fn=self.collate_fn,
                # its own generator: creating an iterator must not consume the global RNG (exact resume)
                generator=torch.Generator().manual_seed(cfg.seed),
            )
            for raw in loader:
                self.batch_in_epoch += 1
                batch = self.device_batch(raw)
                if batch is not None:
                    yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # -- checkpoints -----------------------------------------------------------------------------------------
    def _stateful(self) -> dict:
        return {
            "model": self.unwrapped,
            "optimizer": self.optimizer,
            "ema": self.ema,
            **self.extra_stateful(),
        }

    def save_checkpoint(self) -> None:
        progress = {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
        progress.update(self.extra_progress(), best_model=self.best)
        save_training_state(
            self.checkpoints,
            self.accelerator,
            self.step,
            self._stateful(),
            progress,
            {self.generator_name: self.generator},
        )

    def load_checkpoint(self, path: Path) -> None:
        progress = load_training_state(
            path, self.accelerator, self._stateful(), {self.generator_name: self.generator}
        )
        self.step, self.epoch = progress["step"], progress["epoch"]
        self.batch_in_epoch = progress["batch_in_epoch"]
        self.best = progress.get(
            "best_model", {"step": None, "value": float("inf")}
        )  # absent: older checkpoints
        if self.best["step"] is not None and not (self.output_dir / BEST_MODEL).exists():
            # e.g. a checkpoint copied into a new folder (--extend-from): the weights it names are not here
            logger.warning("no %s for the best validation (step %d): later ones start afresh", BEST_MODEL,
                           self.best["step"])  # fmt: skip
            self.best = {"step": None, "value": float("inf")}
        self.load_extra_progress(progress)

    # -- one step --------------------------------------------------------------------------------------------
    def train_step(self, batches) -> tuple[object, dict]:
        acc, opt = self.accelerator, self.config.optimizer
        for _ in range(opt.gradient_accumulation_steps):
            batch = next(batches)
            with acc.accumulate(self.model):
                loss, terms, out = self.compute_loss(batch)
                check_finite(self.step + 1, self.finiteness_terms(out, terms))
                acc.backward(loss)
                if acc.sync_gradients and opt.grad_clip_norm:
                    acc.clip_grad_norm_(self.model.parameters(), opt.grad_clip_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            self.after_micro_step(batch, out, terms)
        check_finite_parameters(self.step + 1, self.unwrapped)
        self.after_step()
        if self.ema is not None:
            update_ema(self.ema, self.unwrapped)
        self.step += 1
        return out, terms

    def eval_model(self):
        return self.ema.module if self.ema is not None else self.unwrapped

    # -- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> dict:
        acc, cfg = self.accelerator, self.config
        is_main = acc.is_main_process
        max_steps = cfg.optimizer.max_steps
        history, validation_log = start_run_logs(
            acc, self.output_dir, cfg, self.step, cfg.logging.tensorboard, max_steps
        )
        self.on_fit_start()
        batches = self.batches()
        progress = progress_bar(
            total=max_steps,
            initial=self.step,
            desc=self.progress_desc,
            disable=not is_main,
            dynamic_ncols=True,
        )
        per_step = cfg.data.batch_size * cfg.optimizer.gradient_accumulation_steps * acc.num_processes
        start = time.perf_counter()
        self._interval = [start, 0]  # (start time, items) of the throughput in the next history line
        items = 0
        self.model.train()
        try:
            while self.step < max_steps:
                out, terms = self.train_step(batches)
                items += per_step
                self._interval[1] += per_step
                progress.update(1)
                step = self.step
                if self.logs_at(step):
                    self._log_step(out, terms, history, progress)
                if self.validates_at(step):
                    self._validate_step(validation_log)
                if step % cfg.logging.checkpoint_every == 0 or step == max_steps:
                    self.save_checkpoint()
        finally:  # a failure ends with its error, not with a progress bar drawn after it
            progress.close()
        elapsed = time.perf_counter() - start
        result = {}
        if is_main:
            history.close()
            validation_log.close()
            result = self.finish(items, elapsed)
            self.write_metrics(result)
        acc.wait_for_everyone()
        acc.end_training()
        return result

    def _log_step(self, out, terms: dict, history, progress) -> None:
        """One ``history.jsonl`` line (``log_record`` runs on every process: it may hold collectives)."""
        record = {"step": self.step, **self.log_record(out, terms)}
        if not self.accelerator.is_main_process:
            return
        now = time.perf_counter()
        record["learning_rate"] = self.optimizer.param_groups[0]["lr"]
        record[f"{self.unit}_per_second"] = round(self._interval[1] / max(now - self._interval[0], 1e-9), 1)
        self._interval = [now, 0]
        history.write(json.dumps(record) + "\n")
        history.flush()
        if self.config.logging.tensorboard:
            self.accelerator.log(flatten_scalars(record, "train/"), step=self.step)
        progress.set_postfix(**self.progress_postfix(record))

    def _validate_step(self, validation_log) -> None:
        """Validation on the main process, shared with all (``on_validation``), logged, with a grid."""
        acc = self.accelerator
        result = broadcast_object(self.validate() if acc.is_main_process else None)
        self.on_validation(result)
        self._keep_if_best(result)
        if acc.is_main_process:
            logger.info("%s", self.validation_message(result))
            validation_log.write(json.dumps(result) + "\n")
            validation_log.flush()
            if self.config.logging.tensorboard:
                acc.log(flatten_scalars(result, "validation/"), step=self.step)
            self.save_grid(self.output_dir / "grids" / f"{self.step:08d}.png")

    def _keep_if_best(self, result: dict) -> None:
        """Saves the evaluated weights to ``model_best`` when ``logging.keep_best``'s metric improved."""
        metric = self.config.logging.keep_best
        if metric is None or not result[metric] < self.best["value"]:
            return
        self.best = {"step": self.step, "value": float(result[metric])}
        if self.accelerator.is_main_process:
            save_pretrained_atomically(self.eval_model(), self.output_dir / BEST_MODEL)

    def best_record(self) -> dict | None:
        """``metrics.json["best"]``: the kept best validation's step, metric and value (None when off or no
        validation ran)."""
        if self.best["step"] is None:
            return None
        metric = self.config.logging.keep_best
        return {
            "step": self.best["step"],
            "metric": metric,
            "validation": self.best["value"],
            "path": BEST_MODEL,
        }

    def write_metrics(self, result: dict) -> None:
        """``metrics.json``, atomically and last: its presence marks the run folder complete."""
        path = self.output_dir / METRICS_FILE
        temporary = path.with_name(METRICS_FILE + ".tmp")
        temporary.write_text(json.dumps(result, indent=2))
        temporary.replace(path)
