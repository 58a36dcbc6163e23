"""Datasets for tokenizer training and evaluation.

Fashion-MNIST (the default, offline-capable dataset) is read from Debian's ``dataset-fashion-mnist`` idx files
when present, else from the Hugging Face hub (``zalando-datasets/fashion_mnist``). Images are float tensors in
[0, 1], zero-padded from 28x28 to ``image_size`` (32 by default, as in the reference measurements).
"""

from __future__ import annotations

import gzip
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from tokenizer.audio import AudioConfig

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


@dataclass
class DataConfig:
    """The ``data:`` block of a tokenizer config (and of a run's ``config.yaml``)."""

    # fashion_mnist: Debian's idx files (or ``path`` holding them, else the hub); hub: a dataset id;
    # imagefolder: a folder (split subfolders); parquet: ``path``/<split>*.parquet; arrow: a save_to_disk folder;
    # audiofolder: ``path``/<split>/<class>/*.wav clips as normalised log-mel spectrograms (``audio:``).
    source: Literal["fashion_mnist", "hub", "imagefolder", "parquet", "arrow", "audiofolder"] = (
        "fashion_mnist"
    )
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
    audio: AudioConfig = field(default_factory=AudioConfig)  # audio sources (tokenizer/audio.py)
    # hub / parquet / arrow sources with an audio column: clips as log-mel spectrograms (``audio:``)
    audio_column: str | None = None

    def __post_init__(self):
        if self.source != "fashion_mnist" and self.path is None:
            raise ValueError(f"data.path is required for data.source={self.source!r}")
        if self.audio_column is not None and self.source not in ("hub", "parquet", "arrow"):
            raise ValueError(
                f"data.audio_column needs a hub, parquet or arrow source, got data.source={self.source!r} "
                "(audio files in folders: data.source=audiofolder)"
            )

    @property
    def is_audio(self) -> bool:
        """Clips turned into log-mel spectrograms (``tokenizer/audio.py``) rather than images."""
        return self.source == "audiofolder" or self.audio_column is not None

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The range of the model's inputs, to which evaluation clamps reconstructions: (0, 1) for images,
        None for normalised log-mel spectrograms (unbounded above; compared unclamped)."""
        return None if self.is_audio else (0.0, 1.0)


def load_data_config(path: str | os.PathLike) -> DataConfig:
    """The ``data:`` section of a YAML file (a tokenizer config or a run's ``config.yaml``)."""
    from tokenizer.config import from_dict, read_yaml

    return from_dict(DataConfig, read_yaml(path).get("data", {}), "data")


def build_datasets(config: DataConfig, channels: int):
    """(train, validation, test) datasets of (image, label); test is None without a test split."""
    if config.is_audio:
        from tokenizer.audio import build_audio_datasets

        return build_audio_datasets(config)
    if config.source == "fashion_mnist":
        kwargs = dict(
            image_size=config.image_size,
            validation_size=config.validation_size,
            root=config.path,
            channels=channels,
        )
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

    train, validation, test = hf_splits(config)
    return wrap(train), wrap(validation), (wrap(test) if test is not None else None)


def hf_splits(config: DataConfig):
    """(train, validation, test) ``datasets`` splits of a hub / imagefolder / parquet / arrow source; without a
    validation split, the last ``validation_size`` training items (a fixed split)."""
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
    return train, validation, test


def dataset_split(config: DataConfig, split: str, channels: int):
    """One split of ``build_datasets`` by name, or a clear error naming the available ones."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    datasets = dict(zip(SPLITS, build_datasets(config, channels)))
    if datasets[split] is None:
        raise ValueError(
            f"split {split!r} is not available; choose from {[k for k, v in datasets.items() if v]}"
        )
    return datasets[split]


DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_HUB_ID = "zalando-datasets/fashion_mnist"
FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an (optionally gzipped) idx file of unsigned bytes (the MNIST format)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an idx file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {array.size} values")
    return array.reshape(shape)


def _load_fashion_mnist_arrays(split: str, root: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    folder = Path(root) if root is not None else DEBIAN_FASHION_MNIST
    images_path = folder / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = folder / f"{prefix}-labels-idx1-ubyte.gz"
    if images_path.exists() and labels_path.exists():
        return read_idx(images_path), read_idx(labels_path)
    if root is not None:
        raise FileNotFoundError(
            f"Fashion-MNIST idx files not found in {folder} (expected {images_path.name})"
        )
    logger.info(
        "Debian's dataset-fashion-mnist not found in %s; loading %s from the hub",
        folder,
        FASHION_MNIST_HUB_ID,
    )
    try:
        from datasets import load_dataset

        hub = load_dataset(FASHION_MNIST_HUB_ID, split=split)
    except Exception as error:  # noqa: BLE001 - re-raised with the remedy
        raise RuntimeError(
            "Fashion-MNIST is unavailable: install Debian's dataset-fashion-mnist "
            f"(apt-get install dataset-fashion-mnist) or go online for {FASHION_MNIST_HUB_ID}"
        ) from error
    images = np.stack([np.asarray(img, dtype=np.uint8) for img in hub["image"]])
    return images, np.asarray(hub["label"], dtype=np.int64)


class FashionMNIST(Dataset):
    """Fashion-MNIST as (image, label): image (C, S, S) float in [0, 1], zero-padded to S = ``image_size``;
    ``channels`` 1 (as stored) or 3 (the grey value repeated, as ``ImageDataset`` converts grey images to RGB).

    ``split``: "train" (the first ``60000 - validation_size`` training images), "validation" (the last
    ``validation_size`` training images, a fixed split) or "test" (the 10,000 test images).
    """

    label_names = FASHION_MNIST_LABELS

    def __init__(
        self,
        split: str = "train",
        image_size: int = 32,
        validation_size: int = 5000,
        root: str | None = None,
        channels: int = 1,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3 for Fashion-MNIST (grey images), got {channels}")
        self.channels = channels
        if split not in ("train", "validation", "test"):
            raise ValueError(f"split must be 'train', 'validation' or 'test', got {split!r}")
        if image_size < 28:
            raise ValueError(f"image_size must be >= 28 (Fashion-MNIST is 28x28), got {image_size}")
        images, labels = _load_fashion_mnist_arrays("test" if split == "test" else "train", root)
        if split != "test":
            if not 0 <= validation_size < len(images):
                raise ValueError(f"validation_size must be in [0, {len(images)}), got {validation_size}")
            cut = len(images) - validation_size
            images, labels = (
                (images[:cut], labels[:cut]) if split == "train" else (images[cut:], labels[cut:])
            )
        pad = image_size - 28
        tensor = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
        self.images = torch.nn.functional.pad(tensor, (pad // 2, pad - pad // 2, pad // 2, pad - pad // 2))
        self.labels = torch.from_numpy(labels.astype(np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].expand(self.channels, -1, -1), self.labels[index]


# --------------------------------------------------------------------------------------------------------------
# Generic image datasets through Hugging Face `datasets`
# --------------------------------------------------------------------------------------------------------------
BAD_IMAGE_ERRORS = (OSError, ValueError, SyntaxError)  # what PIL raises on corrupt or truncated files


def check_columns(hf_dataset, **columns: str | None) -> None:
    """Each named column (e.g. ``image_column="image"``; None = not used) must be in the dataset."""
    for name, column in columns.items():
        if column is not None and column not in hf_dataset.column_names:
            raise ValueError(f"{name} {column!r} not in the dataset's columns {hf_dataset.column_names}")


def load_hf_split(source: str, path: str, split: str):
    """One split of a hub dataset, an image folder, parquet files or a ``save_to_disk`` folder."""
    import datasets

    if source == "hub":
        return datasets.load_dataset(path, split=split)
    if source == "imagefolder":
        return datasets.load_dataset("imagefolder", data_dir=path, split=split)
    if source == "parquet":
        files = sorted(str(p) for p in Path(path).glob(f"{split}*.parquet"))
        if not files:
            raise FileNotFoundError(f"no {split}*.parquet files in {path}")
        return datasets.load_dataset("parquet", data_files={split: files}, split=split)
    if source == "arrow":
        loaded = datasets.load_from_disk(path)
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path} has splits {list(loaded)}, not {split!r}")
            return loaded[split]
        return loaded
    raise ValueError(f"unknown data source {source!r}")


def to_tensor_image(
    image, channels: int, image_size: int, center_crop: bool = True, min_image_size: int = 0
) -> torch.Tensor:
    """PIL image -> (channels, S, S) float in [0, 1]: grayscale/RGBA converted (alpha composited on white),
    shorter side resized to S (bicubic), then center-cropped (or squashed to S x S without ``center_crop``)."""
    from PIL import Image

    if min(image.size) < min_image_size:
        raise ValueError(
            f"image of size {image.size[0]}x{image.size[1]} is below min_image_size={min_image_size}"
        )
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if channels == 1 else "RGB")
    width, height = image.size
    if center_crop:
        scale = image_size / min(width, height)
        new_size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
        image = image.resize(new_size, Image.BICUBIC)
        left, top = (new_size[0] - image_size) // 2, (new_size[1] - image_size) // 2
        image = image.crop((left, top, left + image_size, top + image_size))
    else:
        image = image.resize((image_size, image_size), Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    tensor = torch.from_numpy(array.copy()).float().div_(255.0)
    if tensor.ndim == 2:
        tensor = tensor.unsqueeze(-1)
    tensor = tensor.permute(2, 0, 1)
    if tensor.shape[0] != channels:  # e.g. channels = 2 or 4: repeat/trim the gray or RGB planes
        tensor = tensor.repeat(math.ceil(channels / tensor.shape[0]), 1, 1)[:channels]
    return tensor


class ImageDataset(Dataset):
    """(image, label) from a Hugging Face dataset whose ``image_column`` holds images (decoded here, so that a
    corrupt file can be skipped and counted, or stop the run naming it).

    ``on_bad_image="skip"`` returns None for a bad record (``collate_images`` drops and counts it);
    ``"raise"`` raises ``ValueError`` naming the record and its file.
    """

    def __init__(
        self,
        hf_dataset,
        channels: int,
        image_size: int,
        image_column: str = "image",
        label_column: str | None = "label",
        center_crop: bool = True,
        on_bad_image: str = "skip",
        min_image_size: int = 0,
    ):
        import datasets

        check_columns(hf_dataset, image_column=image_column, label_column=label_column)
        if on_bad_image not in ("skip", "raise"):
            raise ValueError(f"on_bad_image must be 'skip' or 'raise', got {on_bad_image!r}")
        self.data = hf_dataset.cast_column(image_column, datasets.Image(decode=False))
        self.channels, self.image_size = channels, image_size
        self.image_column, self.label_column = image_column, label_column
        self.center_crop = center_crop
        self.on_bad_image, self.min_image_size = on_bad_image, min_image_size

    def __len__(self) -> int:
        return len(self.data)

    def _open(self, record):
        import io

        from PIL import Image

        if record.get("bytes"):
            image = Image.open(io.BytesIO(record["bytes"]))
        else:
            image = Image.open(record["path"])
        image.load()  # decode now: truncated files fail here
        return image

    def __getitem__(self, index: int):
        row = self.data[index]
        record = row[self.image_column]
        try:
            image = to_tensor_image(
                self._open(record), self.channels, self.image_size, self.center_crop, self.min_image_size
            )
        except BAD_IMAGE_ERRORS as error:
            where = record.get("path") or f"record {index}"
            if self.on_bad_image == "raise":
                raise ValueError(f"cannot use image {where} (index {index}): {error}") from error
            logger.warning("skipping image %s (index %d): %s", where, index, error)
            return None
        label = int(row[self.label_column]) if self.label_column is not None else -1
        return image, torch.tensor(label)


def collate_images(batch):
    """Stacks (image, label) pairs, dropping the ``None`` of skipped images: -> (images, labels, num_skipped)."""
    kept = [item for item in batch if item is not None]
    skipped = len(batch) - len(kept)
    if not kept:
        return None, None, skipped
    images, labels = zip(*kept)
    return torch.stack(images), torch.stack(labels), skipped
