import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

ROOT = Path(__file__).parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def write_idx(path, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", n) for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="session")
def idx_dataset(tmp_path_factory):
    """A small folder in Fashion-MNIST's idx format: 64 train and 32 test images of simple shapes."""
    root = tmp_path_factory.mktemp("fashion_mnist_idx")
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 64), ("t10k", 32)):
        labels = rng.integers(0, 10, size=count)
        images = np.zeros((count, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            top, left = rng.integers(2, 12, size=2)
            images[i, top : top + 8 + label, left : left + 10] = 40 + 20 * label
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="session")
def tokenizer_runs(idx_dataset, tmp_path_factory):
    """Tiny SQ-VAE-2 (4x4 + 8x8) and RQ-VAE (4x4 x 3) runs and their codes (shard size 20: several shards)."""
    from prior.extract import main as extract_main
    from tokenizer.train import main as tokenizer_main

    root = tmp_path_factory.mktemp("prior_runs")
    runs = {}
    for name in ("tiny_sqvae2", "tiny_rqvae"):
        run = root / name
        tokenizer_main(["--config", str(ROOT / "configs" / "tokenizer" / f"{name}.yaml"), f"data.path={idx_dataset}",
                        f"output_dir={run}", "optimizer.max_steps=2"])  # fmt: skip
        extract_main(["--tokenizer", str(run), "--output", str(run / "codes"), "--shard-size", "20"])
        runs[name] = run
    return runs


def tone(frequency: float, seconds: float = 0.3, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


@pytest.fixture(scope="session")
def audio_folder(tmp_path_factory):
    """Two classes of tones (low / high) per split, one clip at 16 kHz (resampled), one silent, one garbage."""
    root = tmp_path_factory.mktemp("audio")
    for split, count in (("train", 6), ("validation", 2), ("test", 2)):
        for name, base in (("high", 2000.0), ("low", 300.0)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                soundfile.write(folder / f"{i}.wav", tone(base * (1 + 0.1 * i)), 22050)
    soundfile.write(root / "train" / "low" / "resampled.wav", tone(300.0, rate=16000), 16000)
    soundfile.write(root / "train" / "low" / "silent.wav", np.zeros(4000, dtype=np.float32), 22050)
    (root / "train" / "high" / "garbage.wav").write_bytes(b"not a wav file at all")
    return root
