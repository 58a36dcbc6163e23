import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_idx
from tokenizer import HQVAE
from tokenizer.data import FashionMNIST, read_idx
from tokenizer.train import main

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "configs" / "tokenizer"


def run(config: str, idx_dataset, out: Path, *overrides: str, resume: str | None = None) -> dict:
    args = ["--config", str(CONFIGS / f"{config}.yaml"), f"data.path={idx_dataset}", f"output_dir={out}"]
    if resume:
        args += ["--resume", resume]
    return main(args + list(overrides))


# ------------------------------------------------------------------------------------------------------------
# Fashion-MNIST idx files
# ------------------------------------------------------------------------------------------------------------
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
    rgb = FashionMNIST("train", root=str(idx_dataset), validation_size=16, channels=3)
    assert rgb[0][0].shape == (3, 32, 32) and all(torch.equal(c, image[0]) for c in rgb[0][0])


def test_fashion_mnist_bad_arguments(idx_dataset, tmp_path):
    with pytest.raises(ValueError, match="split must be"):
        FashionMNIST("val", root=str(idx_dataset))
    with pytest.raises(ValueError, match="image_size must be >= 28"):
        FashionMNIST("train", root=str(idx_dataset), image_size=16)
    with pytest.raises(ValueError, match="channels must be 1 or 3 .* got 4"):
        FashionMNIST("train", root=str(idx_dataset), channels=4)
    with pytest.raises(FileNotFoundError, match="idx files not found"):
        FashionMNIST("train", root=str(tmp_path))
    (tmp_path / "bad.gz").write_bytes(b"not an idx file")
    with pytest.raises((ValueError, OSError)):
        read_idx(tmp_path / "bad.gz")
    write_idx(tmp_path / "short.gz", np.zeros((2, 3), dtype=np.uint8))
    raw = (tmp_path / "short.gz").read_bytes()
    assert read_idx(tmp_path / "short.gz").shape == (2, 3) and raw


# ------------------------------------------------------------------------------------------------------------
# Training runs
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny_sqvae2", "tiny_rqvae"])
def test_training_run_writes_model_metrics_logs_checkpoints_and_grids(idx_dataset, tmp_path, name):
    out = tmp_path / name
    result = run(name, idx_dataset, out)
    for file in ("config.yaml", "history.jsonl", "validation.jsonl", "metrics.json", "reconstructions.png"):
        assert (out / file).exists(), file
    assert (out / "model" / "config.json").exists() and (out / "grids" / "00000002.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result
    assert metrics["split"] == "test" and metrics["num_images"] == 32 and metrics["steps"] == 5
    assert (metrics["relative_variances"] is None) == (name == "tiny_rqvae")
    assert 0 < metrics["rmse"] < 1 and 0 < metrics["ssim"] <= 1 and metrics["num_processes"] == 1
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]
    assert {"learning_rate", "images_per_second", "variances", "perplexity", "temperature"} <= set(history[0])
    split = {"variance_grad_decoder", "variance_grad_rate", "relative_variances"}
    if name == "tiny_sqvae2":  # which way the objective pushes each s_l^2, on every logged step
        assert all(split <= set(h) and len(h["variance_grad_rate"]) == len(h["variances"]) for h in history)
    else:
        assert not split & set(history[0])
    validations = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [v["step"] for v in validations] == [2, 4] and all("ssim" in v for v in validations)
    checkpoints = sorted(p.name for p in (out / "checkpoints").glob("step-*"))
    assert checkpoints == ["step-00000004", "step-00000005"]  # keep_checkpoints = 2
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000005"
    model = HQVAE.from_pretrained(out / "model")
    assert model.global_step.item() == 5  # the schedule's step travels with the model
    x = FashionMNIST("test", root=str(idx_dataset)).images[:4]
    with torch.no_grad():
        assert model.decode_indices(model.encode(x)).shape == x.shape


def test_training_is_reproducible_from_the_seed(idx_dataset, tmp_path):
    a = run("tiny_sqvae2", idx_dataset, tmp_path / "a")
    b = run("tiny_sqvae2", idx_dataset, tmp_path / "b")
    assert a["rmse"] == b["rmse"] and a["perplexity"] == b["perplexity"]


def _state(path: Path) -> dict:
    return HQVAE.from_pretrained(path).state_dict()


@pytest.mark.parametrize(
    "extra", [[], ["data.random_flip=true", "model.quantizer=vq", "model.dead_code_threshold=2.0"]]
)
def test_resume_reproduces_an_uninterrupted_run(idx_dataset, tmp_path, extra):
    common = ["optimizer.max_steps=4", "logging.validate_every=1000", "data.batch_size=4", *extra]
    run("tiny_sqvae2", idx_dataset, tmp_path / "full", *common)
    # 2 steps, stop (a final checkpoint at step 2), then resume for 2 more
    run("tiny_sqvae2", idx_dataset, tmp_path / "split", *common, "optimizer.max_steps=2")
    run("tiny_sqvae2", idx_dataset, tmp_path / "split", *common, resume="latest")
    full, split = _state(tmp_path / "full" / "model"), _state(tmp_path / "split" / "model")
    assert full.keys() == split.keys()
    for key in full:
        torch.testing.assert_close(split[key], full[key], rtol=0, atol=0, msg=key)
    history = [
        json.loads(line)["step"] for line in (tmp_path / "split" / "history.jsonl").read_text().splitlines()
    ]
    assert history == [1, 2, 3, 4]


def test_resume_errors_name_the_problem(idx_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        run("tiny_sqvae2", idx_dataset, tmp_path / "none", resume="latest")
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        run("tiny_sqvae2", idx_dataset, tmp_path / "none", resume=str(tmp_path))


def test_nan_loss_stops_naming_step_and_term_and_keeps_the_last_checkpoint(
    idx_dataset, tmp_path, monkeypatch
):
    original = HQVAE.forward

    def forward(self, images, *args, **kwargs):
        out = original(self, images, *args, **kwargs)
        if self.training and self.global_step.item() >= 3:
            out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(HQVAE, "forward", forward)
    out = tmp_path / "nan"
    with pytest.raises(FloatingPointError, match=r"non-finite loss at step 4: objective=\[nan\]"):
        run("tiny_sqvae2", idx_dataset, out, "logging.validate_every=1000")
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000002"
    monkeypatch.setattr(HQVAE, "forward", original)
    result = run("tiny_sqvae2", idx_dataset, out, "logging.validate_every=1000", resume="latest")
    assert result["steps"] == 5


@pytest.mark.parametrize(
    "overrides, history_keys",
    [
        (["losses.perceptual_weight=1.0", "losses.pretrained_lpips=false"], {"perceptual"}),
        (
            [
                "losses.adversarial_weight=0.5",
                "losses.adversarial_start_step=2",
                "losses.discriminator_channels=8",
            ],
            {"adversarial", "adaptive_weight", "discriminator"},
        ),
        (
            [
                "optimizer.ema_decay=0.9",
                "optimizer.gradient_accumulation_steps=2",
                "optimizer.grad_clip_norm=1.0",
            ],
            set(),
        ),
        (["logging.tensorboard=true"], set()),
    ],
)
def test_training_options_run(idx_dataset, tmp_path, overrides, history_keys):
    out = tmp_path / "options"
    result = run("tiny_sqvae2", idx_dataset, out, *overrides)
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert history_keys <= set(history[-1])
    assert np.isfinite(result["rmse"])
    if "logging.tensorboard=true" in overrides:
        assert list((out / "tensorboard").rglob("events.out.tfevents.*"))
    if "optimizer.ema_decay=0.9" in overrides:
        assert result["weights"] == "ema" and (out / "model_ema" / "config.json").exists()
        assert HQVAE.from_pretrained(out / "model_ema").global_step.item() == 5  # copied, not averaged


def test_bf16_mixed_precision_run(idx_dataset, tmp_path):
    # accelerate fixes the precision once per process, so this runs as its own process, like a user's run
    out = tmp_path / "bf16"
    command = [
        sys.executable,
        str(ROOT / "tokenizer" / "train.py"),
        "--config",
        str(CONFIGS / "tiny_sqvae2.yaml"),
    ]
    command += [f"data.path={idx_dataset}", f"output_dir={out}", "mixed_precision=bf16"]
    proc = subprocess.run(
        command, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["rmse"])


# ------------------------------------------------------------------------------------------------------------
# Two processes (gloo on CPU)
# ------------------------------------------------------------------------------------------------------------
def test_two_process_training_with_accelerate_launch(idx_dataset, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(ROOT / "tokenizer" / "train.py"),
        "--config",
        str(CONFIGS / "tiny_rqvae.yaml"),
        f"data.path={idx_dataset}",
        f"output_dir={out}",
        "optimizer.max_steps=3",
    ]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["steps"] == 3
