"""The shared training loop (tokenizer.trainer): train-or-resume, the completion marker, config resolution."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from tokenizer.config import first_difference, load_config
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


def test_train_or_resume_refuses_a_folder_that_holds_another_run(idx_dataset, tmp_path):
    out = tmp_path / "run"
    TokenizerTrainer.train_or_resume(tiny(idx_dataset, out, "optimizer.max_steps=2"))
    metrics = (out / "metrics.json").read_text()
    # finished: another budget, seed or learning rate is another run, never the old metrics read back
    for override, key in [
        ("optimizer.max_steps=3", "optimizer.max_steps"),
        ("seed=1", "seed"),
        ("optimizer.learning_rate=0.01", "optimizer.learning_rate"),
        ("logging.validate_every=1", "logging.validate_every"),
    ]:
        with pytest.raises(ValueError, match=f"holds a finished run with {key} = .*, not .* as asked"):
            TokenizerTrainer.train_or_resume(tiny(idx_dataset, out, "optimizer.max_steps=2", override))
    assert (out / "metrics.json").read_text() == metrics
    # settings that change neither the training nor the measurement may differ, and a model key spelled out
    # at its default is the same run as one left out
    same = tiny(idx_dataset, out, "optimizer.max_steps=2", "logging.log_every=7", "logging.tensorboard=false")
    assert TokenizerTrainer.train_or_resume(same) == json.loads(metrics)
    spelled = tiny(idx_dataset, out, "optimizer.max_steps=2", "model.codebook_init=random")
    assert TokenizerTrainer.train_or_resume(spelled) == json.loads(metrics)
    with pytest.raises(ValueError, match="model.codebook_init = 'random', not 'data'"):
        TokenizerTrainer.train_or_resume(
            tiny(idx_dataset, out, "optimizer.max_steps=2", "model.codebook_init=data")
        )
    # unfinished: a longer budget resumes (test above); any other change raises before a step is taken
    (out / "metrics.json").unlink()
    with pytest.raises(ValueError, match="holds an unfinished run with optimizer.learning_rate = 0.001"):
        TokenizerTrainer.train_or_resume(
            tiny(idx_dataset, out, "optimizer.max_steps=4", "optimizer.learning_rate=0.01")
        )
    assert not is_finished(out)


def test_first_difference_names_the_first_differing_dotted_key():
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": {"f": 1}}
    assert first_difference(old, old) is None
    assert first_difference(old, {**old, "b": {"c": 3, "d": [1]}}) == ("b.c", 2, 3)
    assert first_difference(old, {**old, "b": {"c": 2, "d": [1]}}) == ("b.d", [1, 2], [1])
    assert first_difference(old, {**old, "g": 0}) == ("g", None, 0)
    assert first_difference(old, {**old, "b": {"c": 3}, "e": {"f": 2}}, ignore=("b", "e.f")) is None


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
    with pytest.raises(ValueError, match=f"{path}: not valid YAML at line 2, column 10: expected ") as error:
        load_config(TrainConfig, path)
    assert "\n" not in str(error.value)  # PyYAML's own message spans several lines


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


def test_non_finite_weights_never_reach_a_checkpoint(idx_dataset, tmp_path):
    """A learning rate of 1e39 turns finite gradients into inf weights: the run stops at that step (1-based, as
    in history.jsonl), names the tensors, and the kept checkpoint is the last finite one."""
    import torch

    out = tmp_path / "run"
    config = tiny(idx_dataset, out, "logging.checkpoint_every=1", "optimizer.max_steps=4")
    TokenizerTrainer(config).fit()  # 4 good steps, checkpoints at 1..4 (2 kept)
    (out / "metrics.json").unlink()
    trainer = TokenizerTrainer(
        tiny(idx_dataset, out, "logging.checkpoint_every=1", "optimizer.max_steps=6"), resume="latest"
    )
    for group in trainer.optimizer.param_groups:  # the resumed optimizer state carries the LR
        group["lr"] = 1e39
    with pytest.raises(
        FloatingPointError, match=r"non-finite weights after the update of step 5: \d+ of \d+ tensors"
    ):
        trainer.fit()
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest == "step-00000004"
    state = torch.load(out / "checkpoints" / latest / "model.pt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_a_nan_names_the_component_term(idx_dataset, tmp_path, monkeypatch):
    import torch

    original = HQVAE.forward

    def forward(self, images, *args, **kwargs):
        out = original(self, images, *args, **kwargs)
        out.kl_losses = out.kl_losses * torch.tensor([1.0, float("nan")])
        out.loss = out.loss + out.kl_losses.sum()
        return out

    monkeypatch.setattr(HQVAE, "forward", forward)
    with pytest.raises(FloatingPointError, match=r"step 1: .*kl_losses=\[[0-9.e+-]+, nan\]"):
        TokenizerTrainer(tiny(idx_dataset, tmp_path / "run")).fit()


def test_resume_latest_falls_back_past_a_truncated_checkpoint(idx_dataset, tmp_path, caplog):
    out = tmp_path / "run"
    config = tiny(idx_dataset, out, "logging.checkpoint_every=1", "optimizer.max_steps=4")
    TokenizerTrainer(config).fit()
    (out / "metrics.json").unlink()
    damaged = out / "checkpoints" / "step-00000004" / "optimizer.pt"
    damaged.write_bytes(damaged.read_bytes()[:100])  # a disk filled up mid-write
    with caplog.at_level("WARNING"):
        trainer = TokenizerTrainer(config, resume="latest")
    assert trainer.step == 3 and str(damaged) in caplog.text
    with pytest.raises(ValueError, match=f"cannot read checkpoint file {damaged}"):
        TokenizerTrainer(config, resume=str(out / "checkpoints" / "step-00000004"))


def test_checkpoints_hold_no_pickled_objects(idx_dataset, tmp_path):
    """Every checkpoint file loads with weights_only=True (tensors and plain data), and a file with pickled
    code is refused, not executed."""
    import pickle

    import torch

    out = tmp_path / "run"
    TokenizerTrainer(tiny(idx_dataset, out, "optimizer.max_steps=2", "optimizer.ema_decay=0.9")).fit()
    folder = out / "checkpoints" / "step-00000002"
    for file in folder.glob("*.pt"):
        torch.load(file, weights_only=True)

    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    (folder / "progress.pt").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="cannot read checkpoint file"):
        TokenizerTrainer(tiny(idx_dataset, out, "optimizer.max_steps=2"), resume=str(folder))


def test_a_failed_run_ends_with_its_error(idx_dataset, tmp_path):
    """The last line a user sees is the error, not a progress bar redrawn after the traceback."""
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    command = [sys.executable, str(root / "tokenizer" / "train.py"), "--config", str(CONFIG),
               f"data.path={idx_dataset}", f"output_dir={tmp_path / 'run'}", "optimizer.learning_rate=1e39"]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite weights after the update of step 1"), last
    assert "Traceback" not in proc.stderr and proc.returncode == 2


def test_command_line_mistakes_are_one_line_errors_also_under_accelerate_launch(idx_dataset, tmp_path):
    """A misspelt key: the error is the last line, no traceback (``accelerate launch -q`` as the README shows);
    HQVAE_TRACEBACK=1 brings the traceback back."""
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    args = [
        "tokenizer/train.py",
        "--config",
        str(CONFIG),
        f"output_dir={tmp_path / 'run'}",
        "optimizer.learning_rat=1",
    ]
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "-q", "--num_processes", "1"]
    for command in ([sys.executable, *args], [*launch, *args]):
        proc = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=300)
        assert proc.returncode != 0
        assert (
            proc.stderr.strip()
            .splitlines()[-1]
            .startswith("error: optimizer: unknown key(s) ['learning_rat']")
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        assert not (tmp_path / "run").exists()  # nothing written before the config is valid
    env = {**os.environ, "HQVAE_TRACEBACK": "1"}
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=root, env=env, timeout=300
    )
    assert "Traceback" in proc.stderr


def test_validation_metrics_are_printed_at_each_validation(idx_dataset, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        TokenizerTrainer(
            tiny(idx_dataset, tmp_path / "run", "optimizer.max_steps=2", "logging.validate_every=1")
        ).fit()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("validation at step")]
    assert len(lines) == 2 and "rmse" in lines[0] and "perplexity [" in lines[0], lines


def test_keep_best_keeps_the_weights_of_the_best_validation(idx_dataset, tmp_path):
    run = tmp_path / "run"
    settings = ("optimizer.max_steps=4", "logging.validate_every=1", "logging.keep_best=rmse")
    trainer = TokenizerTrainer(tiny(idx_dataset, run, *settings))
    model = trainer.eval_model()

    def weights():
        return {k: v.clone() for k, v in model.state_dict().items()}

    trainer.step = 1
    trainer._keep_if_best({"rmse": 0.3})
    first = weights()
    with torch.no_grad():  # a worse validation later does not replace the kept weights
        next(model.parameters()).add_(1.0)
    trainer.step = 2
    trainer._keep_if_best({"rmse": 0.4})
    kept = HQVAE.from_pretrained(run / "model_best").state_dict()
    assert all(torch.equal(v, first[k]) for k, v in kept.items())
    assert trainer.best_record() == {"step": 1, "metric": "rmse", "validation": 0.3, "path": "model_best"}
    trainer.step = 3
    trainer._keep_if_best({"rmse": 0.2})  # a better one does
    now, kept = weights(), HQVAE.from_pretrained(run / "model_best").state_dict()
    assert all(torch.equal(v, now[k]) for k, v in kept.items()) and trainer.best["step"] == 3

    # a whole run: the best step is the validation log's minimum, and its test metrics are model_best's
    shutil.rmtree(run)
    metrics = TokenizerTrainer.train_or_resume(tiny(idx_dataset, run, *settings))
    log = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    best = min(log, key=lambda r: r["rmse"])
    assert metrics["best"]["step"] == best["step"] and metrics["best"]["validation"] == best["rmse"]
    assert set(metrics["best"]["test"]) >= {"rmse", "psnr", "perplexity", "codes_used"}
    if best["step"] == 4:
        assert metrics["best"]["test"]["rmse"] == metrics["rmse"]
    # the kept best survives a resume (it is part of the checkpoint's progress)
    resumed = TokenizerTrainer(tiny(idx_dataset, run, *settings), resume="latest")
    assert resumed.best == {"step": best["step"], "value": best["rmse"]}
    shutil.rmtree(run / "model_best")  # a checkpoint without the weights it names (copied elsewhere)
    resumed = TokenizerTrainer(tiny(idx_dataset, run, *settings), resume="latest")
    assert resumed.best == {"step": None, "value": math.inf}  # later validations compete afresh
    # off by default; a metric that cannot be minimised is named
    assert (
        TokenizerTrainer.train_or_resume(tiny(idx_dataset, tmp_path / "plain", "optimizer.max_steps=2"))[
            "best"
        ]
        is None
    )
    with pytest.raises(
        ValueError, match=r"logging.keep_best: expected one of \['rmse', 'loss'\], got 'psnr'"
    ):
        tiny(idx_dataset, tmp_path / "bad", *settings[:2], "logging.keep_best=psnr")


def test_from_pretrained_takes_a_run_folder(idx_dataset, tmp_path):
    """The command-line tools take a run folder; so does HQVAE.from_pretrained (it loads model/)."""
    run = tmp_path / "run"
    TokenizerTrainer(tiny(idx_dataset, run, "optimizer.max_steps=2")).fit()
    model = HQVAE.from_pretrained(run)
    direct = HQVAE.from_pretrained(run / "model").state_dict()
    assert all(torch.equal(v, direct[k]) for k, v in model.state_dict().items())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        HQVAE.from_pretrained(tmp_path / "runz")
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        HQVAE.from_pretrained(tmp_path)


@pytest.mark.slow
def test_kill_9_at_random_moments_never_breaks_resume(idx_dataset, tmp_path):
    """Kills a tiny training run with SIGKILL at random moments (at least 10 times, some late enough to land
    in the finish phase), resumes after each, and compares the final weights with an uninterrupted run."""
    import random
    import signal
    import subprocess
    import sys
    import time

    import torch
    from safetensors.torch import load_file

    root = Path(__file__).parents[2]
    settings = [f"data.path={idx_dataset}", "optimizer.max_steps=30", "logging.checkpoint_every=1",
                "logging.validate_every=4", "data.max_eval_images=32"]  # fmt: skip

    def command(out: Path, resume: bool) -> list[str]:
        extra = ["--resume", "latest"] if resume else []
        return [sys.executable, str(root / "tokenizer" / "train.py"), "--config", str(CONFIG),
                f"output_dir={out}", *settings, *extra]  # fmt: skip

    reference = tmp_path / "reference"
    subprocess.run(command(reference, False), check=True, capture_output=True, cwd=root, timeout=600)
    run, rng, kills, finish_kills = tmp_path / "killed", random.Random(0), 0, 0
    final = run / "checkpoints" / "step-00000030"
    while not is_finished(run):
        resume = (run / "checkpoints" / "latest").exists()
        proc = subprocess.Popen(
            command(run, resume), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if kills < 10:  # anywhere: start-up, training steps, checkpoint writes
            time.sleep(rng.uniform(1.0, 8.0))
        elif finish_kills < 3:  # in the finish phase: after the last checkpoint, before metrics.json
            while proc.poll() is None and not final.exists():
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.5))
        else:
            proc.wait(timeout=600)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
            finish_kills += final.exists()
        stderr = proc.communicate()[1].decode()
        assert proc.returncode in (0, -signal.SIGKILL), stderr[-2000:]
    assert kills >= 10 and finish_kills >= 1
    ours = load_file(run / "model" / "diffusion_pytorch_model.safetensors")
    theirs = load_file(reference / "model" / "diffusion_pytorch_model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
