"""RGB photograph patches that work offline: a real-image data set for the SQ-vs-VQ regime benchmark.

    .venv/bin/python benchmarks/photo_patches.py --size 32 --output runs/data/photo_patches_32

The colour photographs bundled with scikit-image (astronaut, chelsea, coffee, hubble_deep_field,
immunohistochemistry, retina, rocket) and scikit-learn (china, flower) are cut into random square patches at
three scales (the photo itself and 2x, 4x downsampled, so patches hold fine texture and whole objects). Train
and test patches come from disjoint regions of every photo: the left 80 % of its columns for training, the right
20 % for testing, so no test pixel is ever seen in training. Labels are the photo's index. The set is written with
``datasets``' ``save_to_disk`` (``data.source: arrow``), deterministic for a seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PHOTOS = (
    "skimage:astronaut",
    "skimage:chelsea",
    "skimage:coffee",
    "skimage:hubble_deep_field",
    "skimage:immunohistochemistry",
    "skimage:retina",
    "skimage:rocket",
    "sklearn:china.jpg",
    "sklearn:flower.jpg",
)
TRAIN_FRACTION = 0.8  # of every photo's columns; the rest is the test region


def load_photos() -> list[np.ndarray]:
    """The bundled colour photographs as (H, W, 3) uint8 arrays (needs scikit-image and scikit-learn)."""
    try:
        import skimage.data
        from sklearn.datasets import load_sample_image
    except ImportError as error:
        raise ImportError(
            "photo patches need scikit-image and scikit-learn (pip install scikit-image scikit-learn)"
        ) from error
    photos = []
    for name in PHOTOS:
        package, item = name.split(":")
        array = getattr(skimage.data, item)() if package == "skimage" else load_sample_image(item)
        photos.append(np.ascontiguousarray(array[..., :3]).astype(np.uint8))
    return photos


def _pyramid(photo: np.ndarray, levels: int = 3) -> list[np.ndarray]:
    """The photo and its 2x, 4x, ... box-downsampled versions."""
    out = [photo]
    for _ in range(levels - 1):
        h, w = (out[-1].shape[0] // 2) * 2, (out[-1].shape[1] // 2) * 2
        x = out[-1][:h, :w].astype(np.float32)
        out.append(
            ((x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2]) / 4).round().astype(np.uint8)
        )
    return out


def sample_patches(
    photos: list[np.ndarray], size: int, count: int, split: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` (size, size, 3) patches from the ``split`` region ("train" or "test") of each photo's pyramid,
    spread evenly over photos and scales (scales too small for a patch are skipped)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    regions = []  # (photo index, region array)
    for index, photo in enumerate(photos):
        for level in _pyramid(photo):
            cut = int(level.shape[1] * TRAIN_FRACTION)
            region = level[:, :cut] if split == "train" else level[:, cut:]
            if region.shape[0] >= size and region.shape[1] >= size:
                regions.append((index, region))
    if not regions:
        raise ValueError(f"no photo region is at least {size}x{size}")
    patches = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = np.empty(count, dtype=np.int64)
    for i in range(count):
        label, region = regions[i % len(regions)]
        top = rng.integers(0, region.shape[0] - size + 1)
        left = rng.integers(0, region.shape[1] - size + 1)
        patches[i] = region[top : top + size, left : left + size]
        labels[i] = label
    order = rng.permutation(count)
    return patches[order], labels[order]


def build(output: Path, size: int, train_count: int = 20000, test_count: int = 2000, seed: int = 0) -> Path:
    """Writes the train/test ``DatasetDict`` to ``output`` (skipped when it is already there)."""
    import datasets
    from PIL import Image

    if (output / "dataset_dict.json").exists():
        return output
    rng = np.random.default_rng(seed)
    photos = load_photos()
    splits = {}
    for split, count in (("train", train_count), ("test", test_count)):
        patches, labels = sample_patches(photos, size, count, split, rng)
        features = datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=len(PHOTOS))}
        )
        splits[split] = datasets.Dataset.from_dict(
            {"image": [Image.fromarray(p) for p in patches], "label": labels.tolist()}, features=features
        )
    tmp = output.with_name(output.name + ".tmp")
    datasets.DatasetDict(splits).save_to_disk(str(tmp))
    tmp.rename(output)  # a killed build leaves only the .tmp folder
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--train-count", type=int, default=20000)
    parser.add_argument("--test-count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    print(build(args.output, args.size, args.train_count, args.test_count, args.seed))


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
