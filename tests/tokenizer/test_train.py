import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_idx
from tokenizer import HQVAE
from tokenizer.data import FashionMNIST, read_idx
from tokenizer.train import main

CONFIGS = Path(__file__).parents[2] / "configs" / "tokenizer"


def test_idx_reader_and_fashion_mnist_splits(idx_dataset):
    assert read_idx(idx_dataset / "train-images-idx3-ubyte.gz").shape == (64, 28, 28)
    train = FashionMNIST("train", root=str(idx_dataset), validation_size=16)
    validation = FashionMNIST("validation", root=str(idx_dataset), validation_size=16)
    test = FashionMNIST("test", root=str(idx_dataset))
    assert (len(train), len(validation), len(test)) == (48, 16, 32)
    image, label = train[0]
    assert image.shape == (1, 32, 32) and image.min() >= 0 and image.max() <= 1
    assert image[0, :2].abs().sum() == 0  # zero padding of 2 pixels on each side
    assert 0 <= int(label) < 10


def test_fashion_mnist_bad_arguments(idx_dataset, tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        FashionMNIST("val", root=str(idx_dataset))
    with pytest.raises(ValueError, match="image_size must be >= 28"):
        FashionMNIST("train", root=str(idx_dataset), image_size=16)
    with pytest.raises(FileNotFoundError, match="idx files not found"):
        FashionMNIST("train", root=str(tmp_path))
    (tmp_path / "bad.gz").write_bytes(b"not an idx file")
    write_idx(tmp_path / "ok.gz", np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises((ValueError, OSError)):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("name", ["tiny_sqvae2", "tiny_rqvae"])
def test_training_run_writes_model_metrics_history_and_grid(idx_dataset, tmp_path, name):
    out = tmp_path / name
    result = main(
        [
            "--config",
            str(CONFIGS / f"{name}.yaml"),
            f"data.root={idx_dataset}",
            "data.validation_size=16",
            f"output_dir={out}",
        ]
    )
    for file in ("config.yaml", "history.jsonl", "metrics.json", "reconstructions.png", "model/config.json"):
        assert (out / file).exists(), file
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result
    assert metrics["num_images"] == 32 and metrics["steps"] == 5 and 0 < metrics["rmse"] < 1
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 1, 2, 3, 4]
    model = HQVAE.from_pretrained(out / "model")
    assert model.global_step.item() == 5  # the schedule's step travels with the model
    x = FashionMNIST("test", root=str(idx_dataset)).images[:4]
    with torch.no_grad():
        assert model.decode_indices(model.encode(x)).shape == x.shape


def test_training_is_reproducible_from_the_seed(idx_dataset, tmp_path):
    results = []
    for run in ("a", "b"):
        args = ["--config", str(CONFIGS / "tiny_sqvae2.yaml"), f"data.root={idx_dataset}"]
        results.append(main(args + ["data.validation_size=16", f"output_dir={tmp_path / run}"]))
    assert results[0]["rmse"] == results[1]["rmse"]
