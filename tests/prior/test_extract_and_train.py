import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from prior.codes import CodeDataset
from prior.extract import main as extract_main
from prior.train import main as train_main
from tokenizer import HQVAE
from tokenizer.data import FashionMNIST

ROOT = Path(__file__).parents[2]


def test_extracted_codes_equal_the_tokenizer_encoding(tokenizer_runs, idx_dataset):
    run = tokenizer_runs["tiny_sqvae2"]
    meta = json.loads((run / "codes" / "meta.json").read_text())
    assert meta["codebook_sizes"] == [16, 16] and meta["latent_shapes"] == [[4, 4], [8, 8]]
    assert meta["splits"]["train"] == {"num_shards": 3, "num_items": 48, "source_items": 48}
    assert meta["splits"]["test"]["num_items"] == 32 and len(meta["label_names"]) == 10
    model = HQVAE.from_pretrained(run / "model").eval()
    images = FashionMNIST("train", root=str(idx_dataset), validation_size=16)
    expected = model.encode(torch.stack([images[i][0] for i in range(48)]))
    codes = CodeDataset(run / "codes", "train")
    lazy = CodeDataset(run / "codes", "train", in_memory=False)
    for i in (0, 19, 20, 47):
        got, label = codes[i]
        assert all(torch.equal(g, e[i]) for g, e in zip(got, expected))
        assert int(label) == int(images[i][1])
        lazy_codes, lazy_label = lazy[i]
        assert all(torch.equal(a, b) for a, b in zip(got, lazy_codes)) and int(lazy_label) == int(label)
    assert codes.codes[0].dtype == torch.int16


def test_extraction_resumes_and_refuses_a_different_plan(tokenizer_runs, tmp_path):
    run = tokenizer_runs["tiny_sqvae2"]
    out = tmp_path / "codes"
    args = ["--tokenizer", str(run), "--output", str(out), "--splits", "train", "--shard-size", "20"]
    extract_main(args)
    first = (out / "train" / "shard-00001.safetensors").read_bytes()
    (out / "train" / "shard-00001.safetensors").unlink()
    before = (out / "train" / "shard-00000.safetensors").stat().st_mtime_ns
    extract_main(args)  # only the missing shard is written again
    assert (out / "train" / "shard-00001.safetensors").read_bytes() == first
    assert (out / "train" / "shard-00000.safetensors").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="would mix shards"):
        extract_main(args[:-1] + ["16"])
    with pytest.raises(ValueError, match="unknown or missing split"):
        extract_main(["--tokenizer", str(run), "--output", str(out), "--splits", "dev"])
    with pytest.raises(FileNotFoundError, match="neither a tokenizer run"):
        extract_main(["--tokenizer", str(tmp_path), "--output", str(out)])


def train(config: str, codes: Path, out: Path, *overrides: str, resume: str | None = None) -> dict:
    args = [
        "--config",
        str(ROOT / "configs/prior" / f"{config}.yaml"),
        f"data.codes_dir={codes}",
        f"output_dir={out}",
    ]
    return train_main(args + (["--resume", resume] if resume else []) + list(overrides))


@pytest.mark.parametrize(
    "config,run,overrides",
    [
        ("tiny_masked", "tiny_sqvae2", ["level=0"]),
        ("tiny_masked", "tiny_sqvae2", ["level=1"]),
        ("tiny_rq", "tiny_rqvae", []),
        ("tiny_contextual", "tiny_rqvae", []),
    ],
)
def test_prior_training_writes_a_complete_run(tokenizer_runs, tmp_path, config, run, overrides):
    out = tmp_path / "prior"
    result = train(config, tokenizer_runs[run] / "codes", out, *overrides)
    for name in (
        "config.yaml",
        "history.jsonl",
        "validation.jsonl",
        "metrics.json",
        "codes_meta.json",
        "samples.png",
    ):
        assert (out / name).exists(), name
    assert (out / "grids" / "00000002.png").exists() and (out / "checkpoints" / "latest").exists()
    assert result["steps"] == 4 and result["uniform_loss"] == pytest.approx(torch.tensor(16.0).log().item())
    # 0 is legitimate: a 2-step VQ tokenizer may map every image to one code per depth
    assert 0 <= result["unigram_entropy"] <= result["uniform_loss"] + 1e-9
    assert result["validation"]["loss"] > 0
    model_class = {"tiny_masked": "MaskedTokenTransformer", "tiny_rq": "RQTransformer"}.get(
        config, "ContextualRQTransformer"
    )
    assert json.loads((out / "model" / "config.json").read_text())["_class_name"] == model_class
    assert (out / "scheduler").exists() == (config != "tiny_rq")
    meta = json.loads((out / "codes_meta.json").read_text())
    assert meta["num_classes"] == 10 and meta["prior"] == config.split("_")[1]


def test_prior_resume_continues_exactly(tokenizer_runs, tmp_path):
    codes = tokenizer_runs["tiny_sqvae2"] / "codes"
    train("tiny_masked", codes, tmp_path / "full", "level=1")
    train("tiny_masked", codes, tmp_path / "half", "level=1", "optimizer.max_steps=2")
    train("tiny_masked", codes, tmp_path / "half", "level=1", resume="latest")

    def losses(path):
        return [json.loads(line)["loss"] for line in (path / "history.jsonl").read_text().splitlines()]

    assert losses(tmp_path / "full") == losses(tmp_path / "half")
    a = torch.load(tmp_path / "full" / "checkpoints" / "step-00000004" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "half" / "checkpoints" / "step-00000004" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_prior_keep_best_keeps_the_lowest_validation_loss(tokenizer_runs, tmp_path):
    out = tmp_path / "prior"
    codes = tokenizer_runs["tiny_rqvae"] / "codes"
    result = train("tiny_rq", codes, out, "logging.validate_every=1", "logging.keep_best=loss")
    log = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    best = min(log, key=lambda r: r["loss"])
    assert result["best"] == {"step": best["step"], "metric": "loss", "validation": best["loss"],
                              "path": "model_best"}  # fmt: skip
    assert json.loads((out / "model_best" / "config.json").read_text())["_class_name"] == "RQTransformer"
    with pytest.raises(ValueError, match="logging.keep_best = 'rmse': expected one of 'loss'"):
        train("tiny_rq", codes, tmp_path / "x", "logging.keep_best=rmse")


def test_prior_config_errors(tokenizer_runs, tmp_path):
    sq_codes = tokenizer_runs["tiny_sqvae2"] / "codes"
    with pytest.raises(ValueError, match="every code layer at one resolution"):
        train("tiny_rq", sq_codes, tmp_path / "x")
    with pytest.raises(ValueError, match="comes from the codes' meta.json"):
        train("tiny_masked", sq_codes, tmp_path / "x", "model.codebook_size=16")
    with pytest.raises(ValueError, match="level must be in"):
        train("tiny_masked", sq_codes, tmp_path / "x", "level=2")
    with pytest.raises(ValueError, match="unknown key|unexpected|not a field|has no"):
        train("tiny_masked", sq_codes, tmp_path / "x", "model.hidden=8")
    with pytest.raises(FileNotFoundError, match="extract codes first"):
        train("tiny_masked", tmp_path / "none", tmp_path / "x")
    for override, message in [
        ("sampling.top_p=1.5", "sampling.top_p must be > 0 and <= 1, got 1.5"),
        ("optimizer.weight_decay=-0.1", "optimizer.weight_decay must be >= 0, got -0.1"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate must be > 0, got 0.0"),
    ]:
        with pytest.raises(ValueError, match=message):
            train("tiny_masked", sq_codes, tmp_path / "x", override)


def test_prior_train_under_accelerate_launch(tokenizer_runs, tmp_path):
    """The documented command line, in a subprocess (the way users run it)."""
    out = tmp_path / "launched"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(ROOT / "prior" / "train.py"),
           "--config", str(ROOT / "configs/prior/tiny_rq.yaml"),
           f"data.codes_dir={tokenizer_runs['tiny_rqvae'] / 'codes'}", f"output_dir={out}"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=300)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "prior").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_prior_config_parses(path):
    from prior.train import PriorTrainConfig
    from tokenizer.config import load_config

    config = load_config(PriorTrainConfig, path, ["data.codes_dir=unused"])
    assert config.prior in ("masked", "rq", "contextual") and config.optimizer.max_steps >= 1


def test_the_saved_sampling_scheduler_uses_the_priors_own_masking_schedule(tokenizer_runs, tmp_path):
    """One definition of the masking schedule: the prior's ``model.masking_schedule`` (trained with) is also
    the schedule its saved sampling scheduler decodes with."""
    from prior.scheduler import MaskedTokenScheduler

    out = tmp_path / "prior"
    train("tiny_masked", tokenizer_runs["tiny_sqvae2"] / "codes", out, "model.masking_schedule=linear")
    assert MaskedTokenScheduler.from_pretrained(out / "scheduler").config.masking_schedule == "linear"
