"""Arranges a downloaded UrbanSound8K (Salamon et al. 2014) into the layout ``data.source: audiofolder`` reads,
with the paper's split (appendix F.2.3: folds 1-8 train, 9 validation, 10 test), as symbolic links:

    .venv/bin/python scripts/prepare_urbansound8k.py --source /data/UrbanSound8K --output data/urbansound8k

``--source`` is the folder with ``audio/fold1..fold10/*.wav`` and ``metadata/UrbanSound8K.csv`` (the official
archive). Writes ``<output>/<split>/<class>/<file>.wav``; then train with
``configs/tokenizer/urbansound_rsqvae.yaml`` / ``urbansound_rqvae.yaml``. Not available offline here.
"""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

SPLIT_OF_FOLD = {**{fold: "train" for fold in range(1, 9)}, 9: "validation", 10: "test"}


def prepare(source: Path, output: Path) -> dict[str, int]:
    metadata = source / "metadata" / "UrbanSound8K.csv"
    if not metadata.exists():
        raise FileNotFoundError(
            f"{metadata} not found: --source must be the UrbanSound8K folder (audio/, metadata/)"
        )
    counts: dict[str, int] = {}
    with metadata.open() as f:
        for row in csv.DictReader(f):
            clip = source / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
            if not clip.exists():
                raise FileNotFoundError(f"{clip} is listed in {metadata.name} but missing")
            split = SPLIT_OF_FOLD[int(row["fold"])]
            link = output / split / row["class"] / row["slice_file_name"]
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(clip.resolve())
            counts[split] = counts.get(split, 0) + 1
    return counts


def main(argv=None) -> dict[str, int]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=Path("data/urbansound8k"))
    args = parser.parse_args(argv)
    counts = prepare(args.source, args.output)
    logging.getLogger("prepare_urbansound8k").info("%s clips per split -> %s", counts, args.output)
    return counts


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
