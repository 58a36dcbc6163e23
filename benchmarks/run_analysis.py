"""What the per-run analysis scripts (``error_split.py``, ``decode_gap.py``) share: a finished tokenizer run's
model and one split's images, and the command line that analyses run folders into a printed table and JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tokenizer.console import progress_bar
from tokenizer.data import collate_images, dataset_split
from tokenizer.model import HQVAE
from tokenizer.runs import tokenizer_and_data


def load_run(run: str | Path):
    """(model in eval mode, the run's data config) of a tokenizer run folder."""
    model_dir, data = tokenizer_and_data(run)
    return HQVAE.from_pretrained(model_dir).eval(), data


def split_images(model, data, split: str, batch_size: int, desc: str) -> Iterator[torch.Tensor]:
    """The split's images as float batches (bad images already dropped), with a progress bar."""
    dataset = dataset_split(data, split, model.config.in_channels)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images)
    for images, _, _ in progress_bar(loader, desc=desc, leave=False):
        if images is not None:
            yield images.float()


def table_header(columns: list[str]) -> list[str]:
    """The first two lines of a markdown table with these column names."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def main_over_runs(
    argv,
    description: str,
    analyse: Callable[[Path, argparse.Namespace], dict],
    to_markdown: Callable[[list[dict]], str],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> list[dict]:
    """``RUN [RUN ...] [--split S] [--output FILE.json]`` (+ ``add_arguments``): one row per run folder from
    ``analyse(run, args)``, printed as ``to_markdown(rows)`` and written to ``--output`` as JSON."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("runs", nargs="+", type=Path, help="tokenizer run folders (config.yaml + model/)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows to this JSON file")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    rows = [analyse(run, args) for run in args.runs]
    print(to_markdown(rows))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(rows, indent=2))
    return rows
