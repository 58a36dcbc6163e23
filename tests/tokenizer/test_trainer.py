"""The shared training loop (tokenizer.trainer): train-or-resume, the completion marker, config resolution."""

import json
import math
from pathlib import Path

import pytest

from tokenizer.config import load_config
from tokenizer.model import HQVAE
from tokenizer.train import TokenizerTrainer, TrainConfig
from tokenizer.trainer import is_finished

CONFIG = Path(__file__).parents[2] / "configs" / "tokenizer" / "tiny_sqvae2.yaml"


def tiny(idx_dataset, out: Path, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIG, [f"data.path={idx_dataset}", f"output_dir={out}", *overrides])


def test_train_or_resume_trains_then_reads_back_then_resumes_a_killed_run(idx_dataset, tmp_path):
    config = tiny(idx_dataset, tmp_path / "run", "optimizer.max_steps=4")
    first = TokenizerTrainer.train_or_resume(config)
    assert is_finished(tmp_path / "run") and first["steps"] == 4
    history = (tmp_path / "run" / "history.jsonl").read_text()
    again = TokenizerTrainer.train_or_resume(config)  # finished: read back, not trained again
    assert again == json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (tmp_path / "run" / "history.jsonl").read_text() == history
    # a run killed after its step-4 checkpoint but before metrics.json continues from that checkpoint
    (tmp_path / "run" / "metrics.json").unlink()
    longer = tiny(idx_dataset, tmp_path / "run", "optimizer.max_steps=6")
    resumed = TokenizerTrainer.train_or_resume(longer)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    ]
    assert resumed["steps"] == 6 and steps == [1, 2, 3, 4, 5, 6]


def test_metrics_json_is_written_last_so_a_failed_finish_leaves_the_run_unfinished(
    idx_dataset, tmp_path, monkeypatch
):
    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(HQVAE, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        TokenizerTrainer.train_or_resume(tiny(idx_dataset, tmp_path / "run", "optimizer.max_steps=2"))
    assert not is_finished(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "latest").exists()  # the next call resumes and finishes


def test_final_temperature_sets_the_decay_from_the_budget(tmp_path):
    config = load_config(TrainConfig, CONFIG, ["optimizer.max_steps=1000", "optimizer.final_temperature=0.3"])
    assert config.model["temperature_decay"] == pytest.approx(-math.log(0.3) / 1000)
    assert math.exp(-config.model["temperature_decay"] * 1000) == pytest.approx(0.3)
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(
            ValueError, match=f"optimizer.final_temperature must be in \\(0, 1\\], got {float(bad)}"
        ):
            load_config(TrainConfig, CONFIG, [f"optimizer.final_temperature={bad}"])


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model: {in_channels: 1\noptimizer: [")
    with pytest.raises(ValueError, match=f"{path}: not valid YAML"):
        load_config(TrainConfig, path)


def test_variance_lr_multiplier_puts_log_s2_in_its_own_group(idx_dataset, tmp_path):
    trainer = TokenizerTrainer(tiny(idx_dataset, tmp_path / "run", "optimizer.variance_lr_multiplier=30"))
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(30 * groups[0]["lr"])
    assert all(p.ndim == 0 for p in groups[1]["params"]) and len(groups[1]["params"]) == 2  # s^2 of 2 layers
    plain = TokenizerTrainer(tiny(idx_dataset, tmp_path / "plain"))
    assert len(plain.optimizer.param_groups) == 1
    with pytest.raises(ValueError, match="applies to SQ dequantization variances"):
        TokenizerTrainer(
            tiny(idx_dataset, tmp_path / "vq", "model.quantizer=vq", "optimizer.variance_lr_multiplier=3")
        )
    with pytest.raises(ValueError, match="variance_lr_multiplier must be > 0, got 0.0"):
        tiny(idx_dataset, tmp_path / "x", "optimizer.variance_lr_multiplier=0")
