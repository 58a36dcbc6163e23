"""Tokenizer run folders, as ``tokenizer/train.py`` writes them: ``config.yaml`` (the resolved config, whose
``data:`` section says what the tokenizer was trained on), ``model/`` (+ ``model_ema/``) and ``metrics.json``
(written last: see ``tokenizer.trainer.is_finished``). Code extraction, evaluation and pipeline assembly find
a tokenizer's weights and data through these two functions.
"""

from __future__ import annotations

import os
from pathlib import Path

from tokenizer.data import DataConfig, load_data_config


def pretrained_folder(path: str | os.PathLike, marker: str, inner: str) -> str | os.PathLike:
    """What ``from_pretrained`` should load for ``path``: a folder holding ``marker`` as is; a run folder whose
    ``inner/`` holds it (a tokenizer run's ``model/``, the main job's ``pipeline/``) -> that sub-folder; a local
    path without either -> ``FileNotFoundError`` naming what was expected (no hub lookup that fails later with
    a connection message); anything else (a hub id such as ``owner/name``) unchanged."""
    text = os.path.expanduser(str(path))
    folder = Path(text)
    if (folder / marker).is_file():
        return path
    if (folder / inner / marker).is_file():
        return str(folder / inner)
    first = text.replace("\\", "/").split("/")[0]
    looks_local = (
        folder.exists()
        or text.startswith((".", "/", "~"))
        or text.count("/") >= 2
        or "\\" in text
        or (first != text and os.path.isdir(first))  # "runs/x" where runs/ is a local folder
    )
    if looks_local:
        found = "does not exist" if not folder.exists() else f"holds no {marker} (nor {inner}/{marker})"
        raise FileNotFoundError(
            f"{path} {found}: expected a folder written by save_pretrained ({marker}) or a run folder with "
            f"{inner}/{marker}"
        )
    return path


def resolve_tokenizer(path: str | Path, weights: str = "model") -> tuple[Path, Path | None]:
    """(model folder, run ``config.yaml`` or None) for a run folder or a bare model folder."""
    path = Path(path)
    if (path / "config.yaml").exists() and (path / weights / "config.json").exists():
        return path / weights, path / "config.yaml"
    if (path / "config.json").exists():
        return path, None
    raise FileNotFoundError(
        f"{path} is neither a tokenizer run folder (config.yaml + {weights}/) nor a model folder (config.json)"
    )


def tokenizer_and_data(
    tokenizer: str | Path, weights: str = "model", data_config: str | Path | None = None
) -> tuple[Path, DataConfig]:
    """(model folder, data config): the run's own ``data:`` section unless ``data_config`` (a YAML with a
    ``data:`` section) is given; a bare model folder needs ``data_config``."""
    model_dir, run_config = resolve_tokenizer(tokenizer, weights)
    config_file = data_config if data_config is not None else run_config
    if config_file is None:
        raise ValueError(
            f"{tokenizer} is a bare model folder: pass --data-config (a YAML with a data: section)"
        )
    return model_dir, load_data_config(config_file)
