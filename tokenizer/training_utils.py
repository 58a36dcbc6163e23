"""Building blocks of the shared training loop (``tokenizer.trainer.BaseTrainer``).

- ``ResumableSampler``: a per-epoch seeded shuffle, sharded by rank, that can restart mid-epoch.
- ``CheckpointManager``: periodic, atomic, rotated checkpoints with a ``latest`` pointer.
- ``check_finite`` / ``check_finite_parameters``: stop a run on a NaN/inf loss term or weight, naming the step
  and the term or tensor, before anything non-finite is checkpointed.
- ``ema_model``: an exponential moving average of the weights (and buffers).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


class ResumableSampler(Sampler[int]):
    """Shuffles ``num_items`` with a generator seeded by (seed, epoch) and yields this rank's share, starting at
    ``position``. Each epoch's order depends only on (seed, epoch), so the trainer restores the data position
    exactly with ``set_position(epoch, position)``; it counts consumed items itself, since DataLoader workers
    prefetch indices ahead of what the loop has used.
    """

    def __init__(self, num_items: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if num_items < world_size:
            raise ValueError(f"{num_items} items cannot be shared by {world_size} processes")
        self.num_items, self.seed, self.shuffle = num_items, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        return self.num_items // self.world_size - self.position

    def set_position(self, epoch: int, position: int) -> None:
        self.epoch, self.position = epoch, position

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            order = list(range(self.num_items))
        else:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_items, generator=generator).tolist()
        per_rank = self.num_items // self.world_size
        mine = order[self.rank * per_rank : (self.rank + 1) * per_rank]
        return iter(mine[self.position :])


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict:
    """Python, NumPy, torch (CPU and CUDA) and named generators' states."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        # plain data, so that checkpoints load with torch.load(weights_only=True) (no pickled objects)
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in (generators or {}).items():
        generator.set_state(state["generators"][name])


def _first_sentence(error: Exception) -> str:
    """An error's first sentence (torch's weights-only errors go on to advise unpickling, which we never do)."""
    return (str(error).splitlines() or [""])[0].split(". ")[0]


class UnreadableCheckpoint(ValueError):
    """A checkpoint file that is truncated, damaged or not a checkpoint."""


class CheckpointManager:
    """``<root>/step-<N>/`` folders written atomically (to a temporary folder, then renamed), the newest
    ``keep`` kept, and ``<root>/latest`` (a one-line file, replaced atomically) naming the newest complete one.

    A run killed while saving leaves at most a ``.tmp-*`` folder, which the next save removes; earlier
    checkpoints and the ``latest`` pointer are never touched before the new checkpoint is complete.
    """

    def __init__(self, root: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.root = Path(root)
        self.keep = keep

    def save(self, step: int, state: dict) -> Path:
        """``state``: name -> object for ``torch.save`` (one file each)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        final = self.root / f"step-{step:08d}"
        temporary = self.root / f".tmp-step-{step:08d}"
        temporary.mkdir()
        for name, value in state.items():
            torch.save(value, temporary / f"{name}.pt")
        (temporary / "COMPLETE").write_text(json.dumps({"step": step}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        pointer = self.root / ".latest.tmp"
        pointer.write_text(final.name + "\n")
        os.replace(pointer, self.root / "latest")
        for old in self.checkpoints()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        return sorted(p for p in self.root.glob("step-*") if (p / "COMPLETE").exists())

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if pointer.exists():
            candidate = self.root / pointer.read_text().strip()
            if (candidate / "COMPLETE").exists():
                return candidate
        complete = self.checkpoints()
        return complete[-1] if complete else None

    def resolve(self, resume: str) -> Path:
        """``"latest"`` or a checkpoint folder -> a complete checkpoint folder (or a clear error)."""
        path = self.latest() if resume == "latest" else Path(resume)
        if path is None:
            raise FileNotFoundError(f"--resume latest: no complete checkpoint under {self.root}")
        if not (path / "COMPLETE").exists():
            raise FileNotFoundError(f"--resume {resume}: {path} is not a complete checkpoint")
        return path

    @staticmethod
    def load(path: Path, name: str):
        """One file of a checkpoint, read with ``weights_only=True``: tensors and plain data only, never
        pickled code. A file that is truncated or not a checkpoint raises ``ValueError`` naming it."""
        file = path / f"{name}.pt"
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise
        except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged or foreign file
            hint = ""
            if "numpy" in str(error):  # written before checkpoints held plain data only
                hint = " (a checkpoint from hqvae before weights-only loading: finish that run with the version that wrote it)"
            reason = _first_sentence(error)
            raise UnreadableCheckpoint(
                f"cannot read checkpoint file {file}: {type(error).__name__}: {reason}{hint}"
            ) from None


def save_pretrained_atomically(model, path: str | os.PathLike) -> None:
    """``model.save_pretrained(path)`` through a temporary folder renamed into place: a run killed while
    saving leaves the previous ``path`` (or none), never a half-written one."""
    path = Path(path)
    temporary, previous = path.with_name(f".tmp-{path.name}"), path.with_name(f".old-{path.name}")
    for stale in (temporary, previous):
        shutil.rmtree(stale, ignore_errors=True)
    model.save_pretrained(temporary)
    if path.exists():
        os.replace(path, previous)
    os.replace(temporary, path)
    shutil.rmtree(previous, ignore_errors=True)


def check_finite(step: int, terms: dict[str, torch.Tensor]) -> None:
    """Raises ``FloatingPointError`` naming the step (1-based, as ``history.jsonl`` numbers it) and every
    non-finite loss term (and per-layer entry)."""
    bad = [name for name, value in terms.items() if value is not None and not torch.isfinite(value).all()]
    if bad:
        values = {name: terms[name].detach().flatten().tolist() for name in bad}
        raise FloatingPointError(
            f"non-finite loss at step {step}: {', '.join(f'{k}={v}' for k, v in values.items())}; "
            "the run stops here and keeps its last good checkpoint"
        )


def check_finite_parameters(step: int, module: torch.nn.Module, what: str = "weights") -> None:
    """Raises ``FloatingPointError`` naming the step and the parameters that are not finite (e.g. after an
    optimiser step with a far too large learning rate), so that such weights never reach a checkpoint.
    One device sync for the whole module."""
    named = [(n, p) for n, p in module.named_parameters()]
    if not named:
        return
    finite = torch.stack([torch.isfinite(p).all() for _, p in named])
    if bool(finite.all()):
        return
    bad = [n for (n, _), ok in zip(named, finite.tolist()) if not ok]
    shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
    raise FloatingPointError(
        f"non-finite {what} after the update of step {step}: {len(bad)} of {len(named)} tensors ({shown}); "
        "the run stops here and keeps its last good checkpoint (lower optimizer.learning_rate or set "
        "optimizer.grad_clip_norm)"
    )


def ema_model(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """EMA of the weights and buffers: w_ema <- decay w_ema + (1 - decay) w after every optimiser step."""
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema decay must be in (0, 1), got {decay}")
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True
    )


@torch.no_grad()
def update_ema(ema: torch.optim.swa_utils.AveragedModel, model: torch.nn.Module) -> None:
    """One EMA step. Integer buffers (e.g. the temperature schedule's step) are copied, not averaged:
    AveragedModel would average and truncate them."""
    ema.update_parameters(model)
    for averaged, current in zip(ema.module.buffers(), model.buffers()):
        if not (averaged.is_floating_point() or averaged.is_complex()):
            averaged.copy_(current)


# ------------------------------------------------------------------------------------------------------------
# Logging and multi-process helpers shared by tokenizer and prior training
# ------------------------------------------------------------------------------------------------------------
def to_plain(value: torch.Tensor):
    """A tensor as a float (0-d) or a list of floats, for JSON logs."""
    value = value.detach().float().cpu()
    return value.item() if value.ndim == 0 else value.tolist()


def flatten_scalars(record: dict, prefix: str = "") -> dict:
    """Flattens per-layer lists into name/layerN scalars for TensorBoard."""
    flat = {}
    for key, value in record.items():
        if isinstance(value, list):
            flat.update({f"{prefix}{key}/layer{i}": v for i, v in enumerate(value)})
        elif isinstance(value, (int, float)):
            flat[f"{prefix}{key}"] = value
    return flat


def truncate_logs(
    output_dir: str | os.PathLike, step: int, names=("history.jsonl", "validation.jsonl")
) -> None:
    """On resume, drops JSONL log lines that a killed run wrote after its last checkpoint (``step``)."""
    for name in names:
        path = Path(output_dir) / name
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
            path.write_text("".join(line + "\n" for line in kept))


def broadcast_object(value):
    """``value`` of process 0 on every process (a picklable object)."""
    from accelerate.utils import broadcast_object_list

    holder = [value]
    broadcast_object_list(holder, from_process=0)
    return holder[0]


def gather_rng_states(generators: dict[str, torch.Generator] | None = None) -> list:
    """Every process's RNG state (index = process index), for an exact resume."""
    from accelerate.utils import gather_object

    return gather_object([rng_state(generators)])


def parse_training_args(description: str, config_help: str, argv=None):
    """``--config``, ``--resume`` and dotted overrides, the command line of both training scripts."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("--resume", default=None, help="'latest' or a checkpoint folder to continue from")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optimizer.max_steps=500")
    return parser.parse_intermixed_args(argv)


def training_command(schema: type, trainer_class: type, doc: str, config_glob: str, argv=None) -> dict:
    """The whole ``main`` of a training script: parse the command line, load the strict config, train."""
    from tokenizer.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_training_args(doc.split("\n")[0], f"YAML config ({config_glob})", argv)
    config = load_config(schema, args.config, args.overrides)
    return trainer_class(config, args.resume).fit()


def fused_optimizer_supported(device: torch.device) -> bool:
    """Whether torch's fused Adam/AdamW kernels run on ``device`` (1.04x faster tokenizer steps on CPU)."""
    return torch.device(device).type in ("cpu", "cuda")


def save_training_state(
    manager: CheckpointManager,
    accelerator,
    step: int,
    stateful: dict,
    progress: dict,
    generators: dict[str, torch.Generator] | None = None,
) -> None:
    """Checkpoint of a training run (call on every process): ``stateful`` maps names to objects with
    ``state_dict()`` (None entries skipped); the grad scaler, every process's RNG state and ``progress``
    (with the process count) are added."""
    rng_states = gather_rng_states(generators)  # every rank's, for an exact resume
    if accelerator.is_main_process:
        state = {name: obj.state_dict() for name, obj in stateful.items() if obj is not None}
        if accelerator.scaler is not None:
            state["scaler"] = accelerator.scaler.state_dict()
        state["rng"] = rng_states
        state["progress"] = {**progress, "num_processes": accelerator.num_processes}
        logger.info("saved checkpoint %s", manager.save(step, state))
    accelerator.wait_for_everyone()


def load_training_state(
    path: Path, accelerator, stateful: dict, generators: dict[str, torch.Generator] | None = None
) -> dict:
    """Restores what ``save_training_state`` wrote into ``stateful``'s objects; returns ``progress``. Every
    file is read before any object changes, so an unreadable file (``UnreadableCheckpoint``) leaves the run
    as it was."""
    progress = CheckpointManager.load(path, "progress")
    if progress["num_processes"] != accelerator.num_processes:
        raise ValueError(
            f"checkpoint {path} was written by {progress['num_processes']} processes; resuming with "
            f"{accelerator.num_processes} would change the data order (resume with the same number)"
        )
    names = [name for name, obj in stateful.items() if obj is not None]
    names += ["scaler"] if accelerator.scaler is not None else []
    states = {name: CheckpointManager.load(path, name) for name in [*names, "rng"]}
    for name, obj in stateful.items():
        if obj is not None:
            obj.load_state_dict(states[name])
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(states["scaler"])
    set_rng_state(states["rng"][accelerator.process_index], generators)
    logger.info("resumed from %s at step %d", path, progress["step"])
    return progress


def start_run_logs(accelerator, output_dir: Path, config, step: int, tensorboard: bool, max_steps: int):
    """Opens a run folder for the training loop: writes the resolved ``config.yaml``, starts TensorBoard, and
    opens ``history.jsonl`` / ``validation.jsonl`` (appending on resume, after dropping the lines a killed
    run wrote past its checkpoint). Returns the two files on the main process, (None, None) elsewhere."""
    import yaml

    from tokenizer.config import to_dict

    is_main = accelerator.is_main_process
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
    if tensorboard:
        accelerator.init_trackers("tensorboard", config={"seed": config.seed, "max_steps": max_steps})
    if not is_main:
        return None, None
    if step > 0:
        truncate_logs(output_dir, step)
    mode = "a" if step > 0 else "w"
    return open(output_dir / "history.jsonl", mode), open(output_dir / "validation.jsonl", mode)  # noqa: SIM115


def check_weights_file(path: str | os.PathLike, what: str) -> dict:
    """Loads an externally supplied weights file with ``weights_only=True`` (tensors and plain data; pickled
    code is refused, never run) and returns its state dict. Libraries that later read the same file with
    ``weights_only=False`` then only meet what this check allowed. A garbage, truncated or code-carrying file
    raises ``ValueError`` naming it and ``what`` it should have been."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged or foreign file
        reason = _first_sentence(error)
        raise ValueError(
            f"{path} is not a {what} weights file (a torch state dict of tensors): {type(error).__name__}: {reason}"
        ) from None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path} is not a {what} weights file: expected a dict of tensors")
    return state
