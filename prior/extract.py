"""Code extraction: ``[accelerate launch] prior/extract.py --tokenizer RUN_DIR --output CODES_DIR``.

Encodes a dataset with a trained tokenizer (deterministic argmax quantization, ``HQVAE.encode``) and writes
per-layer code indices and class labels in safetensors shards (``prior.codes``), which prior training reads.

- ``--tokenizer`` is a tokenizer run folder (``config.yaml`` + ``model/``): the dataset and preprocessing come
  from its ``data:`` section, so codes match what the tokenizer was trained on. A bare model folder
  (``config.json`` + weights) needs ``--data-config`` (a YAML with a ``data:`` section).
- Resumable: shards are written atomically and existing ones are skipped; a split is recorded in meta.json
  only when all of its shards exist.
- Multi-process: under ``accelerate launch --num_processes N`` process r encodes shards r, r+N, ...
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from prior.codes import META_FORMAT, META_VERSION, code_dtype, shard_path, write_shard
from tokenizer.config import to_dict
from tokenizer.console import check_counts, progress_bar
from tokenizer.data import SPLITS, DataConfig, build_datasets, collate_images
from tokenizer.model import HQVAE
from tokenizer.runs import tokenizer_and_data

logger = logging.getLogger("prior.extract")


class _Indexed(Dataset):
    """Items start..stop-1 of a dataset with their source index (bad images come back as None)."""

    def __init__(self, dataset, start: int, stop: int):
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        item = self.dataset[self.start + i]
        return None if item is None else (item, self.start + i)


def _collate(batch):
    """-> (images, labels, source indices) of the good items (images None when none is good)."""
    kept = [b for b in batch if b is not None]
    images, labels, _ = collate_images([item for item, _ in kept])
    return images, labels, torch.tensor([i for _, i in kept], dtype=torch.long)


def _check_plan(folder: Path, plan: dict, is_main: bool) -> None:
    """A resumed split must be cut into the same shards: compare with the plan its first run recorded."""
    path = folder / "plan.json"
    if path.exists():
        recorded = json.loads(path.read_text())
        if recorded != plan:
            raise ValueError(
                f"{folder} was started with {recorded}; resuming with {plan} would mix shards "
                "(use the same --shard-size/--max-items, or a new --output)"
            )
    elif is_main:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(plan))


def label_names(data_config: DataConfig, dataset) -> list[str] | None:
    names = getattr(dataset, "label_names", None)
    if names is not None:
        return list(names)
    hf = getattr(dataset, "data", None)
    feature = (
        None if hf is None or data_config.label_column is None else hf.features.get(data_config.label_column)
    )
    return list(feature.names) if hasattr(feature, "names") else None


@torch.no_grad()
def extract(
    tokenizer: str | Path,
    output: str | Path,
    splits: list[str] = ("train", "validation", "test"),
    weights: str = "model",
    data_config: str | Path | None = None,
    shard_size: int = 10000,
    batch_size: int = 256,
    max_items: int | None = None,
    num_workers: int = 0,
) -> dict:
    """Extracts ``splits`` into ``output``; returns meta.json's content."""
    from accelerate import PartialState

    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be >= 1, got {shard_size}, {batch_size}")
    state = PartialState()
    model_dir, data = tokenizer_and_data(tokenizer, weights, data_config)
    if data.is_audio:
        # the priors' code grids, sample grids and pipeline assume square images in [0, 1] (latent shapes from
        # data.image_size, decoded outputs clamped to the image range): spectrogram codes would be mis-shaped
        raise NotImplementedError(
            f"priors on spectrogram codes are not supported yet: {tokenizer} is a tokenizer trained on audio "
            f"(data.source={data.source!r}); code extraction takes image tokenizers"
        )
    model = HQVAE.from_pretrained(model_dir).to(state.device).eval()
    datasets = dict(zip(SPLITS, build_datasets(data, model.config.in_channels)))
    unknown = [s for s in splits if s not in datasets or datasets[s] is None]
    if unknown:
        raise ValueError(
            f"unknown or missing split(s) {unknown}; available: {[k for k, v in datasets.items() if v]}"
        )
    output = Path(output)
    meta_path = output / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    shapes = model.latent_shapes(data.image_size, data.image_size)
    header = {
        "format": META_FORMAT,
        "version": META_VERSION,
        "tokenizer": str(Path(model_dir).resolve()),
        "tokenizer_config": {k: v for k, v in model.config.items() if not k.startswith("_")},
        "codebook_sizes": list(model.codebook_sizes),
        "latent_shapes": [list(s) for s in shapes],
        "layers_per_resolution": list(model.config.layers_per_resolution),
        "image_size": data.image_size,
        "data": to_dict(data),
        "label_names": label_names(data, datasets["train"]),
        "quantization": "argmax",
    }
    for key in ("codebook_sizes", "latent_shapes", "tokenizer"):
        if meta and meta.get(key) != header[key]:
            raise ValueError(
                f"{output} holds codes of another tokenizer ({key}: {meta.get(key)} != {header[key]}); "
                "use a new --output"
            )
    meta = {**header, "splits": meta.get("splits", {})}
    for split in splits:
        total = len(datasets[split]) if max_items is None else min(max_items, len(datasets[split]))
        num_shards = max(1, -(-total // shard_size))
        _check_plan(output / split, {"shard_size": shard_size, "source_items": total}, state.is_main_process)
        mine = [s for s in range(num_shards) if s % state.num_processes == state.process_index]
        todo = [s for s in mine if not shard_path(output, split, s).exists()]
        for shard in progress_bar(todo, desc=f"extract {split}", disable=not state.is_main_process):
            start, stop = shard * shard_size, min((shard + 1) * shard_size, total)
            _write_codes(model, _Indexed(datasets[split], start, stop), shard_path(output, split, shard),
                         shapes, batch_size, num_workers, state.device)  # fmt: skip
        state.wait_for_everyone()
        if state.is_main_process:
            _record_split(meta, meta_path, output, split, num_shards, total)
        state.wait_for_everyone()
    return json.loads(meta_path.read_text())


def _write_codes(model, items, path: Path, shapes, batch_size: int, num_workers: int, device) -> None:
    """Encodes ``items`` (argmax codes) and writes one shard (bad images skipped; source indices kept)."""
    loader = DataLoader(items, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    codes, labels, index = [[] for _ in shapes], [], []
    for images, batch_labels, kept in loader:
        if images is None:  # every image of the batch was bad (skipped and logged by the dataset)
            continue
        for layer, c in enumerate(model.encode(images.to(device))):
            codes[layer].append(c.cpu())
        labels.append(batch_labels.long())
        index.append(kept)
    write_shard(
        path,
        [torch.cat(c) if c else torch.zeros(0, *s, dtype=torch.long) for c, s in zip(codes, shapes)],
        torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        torch.cat(index) if index else torch.zeros(0, dtype=torch.long),
        code_dtype(model.codebook_sizes),
    )


def _record_split(meta: dict, meta_path: Path, output: Path, split: str, num_shards: int, total: int) -> None:
    """Counts a finished split's items and records it in meta.json (atomically): only complete splits appear."""
    from safetensors import safe_open

    items = 0
    for s in range(num_shards):
        with safe_open(str(shard_path(output, split, s)), "pt") as f:
            items += f.get_slice("labels").get_shape()[0]
    meta["splits"][split] = {"num_shards": num_shards, "num_items": items, "source_items": total}
    output.mkdir(parents=True, exist_ok=True)
    tmp = meta_path.with_name("meta.json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(meta_path)
    logger.info("%s: %d items in %d shards -> %s", split, items, num_shards, output / split)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokenizer", required=True, help="tokenizer run folder (or a model folder + --data-config)"
    )
    parser.add_argument("--output", required=True, help="codes folder to write (resumes if it exists)")
    parser.add_argument("--splits", nargs="+", default=["train", "validation", "test"])
    parser.add_argument(
        "--weights",
        default="model",
        help="subfolder of the run: model, model_ema or model_best (logging.keep_best)",
    )
    parser.add_argument("--data-config", default=None, help="YAML with a data: section (default: the run's)")
    parser.add_argument("--shard-size", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-items", type=int, default=None, help="encode only the first N items per split")
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    check_counts(parser, args, dict(shard_size=1, batch_size=1, max_items=1, num_workers=0))
    return args


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    return extract(
        args.tokenizer,
        args.output,
        args.splits,
        args.weights,
        args.data_config,
        args.shard_size,
        args.batch_size,
        args.max_items,
        args.num_workers,
    )


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
