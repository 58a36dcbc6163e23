"""The main job end to end at a tiny budget (its real budget is measured by running scripts/main.sh)."""

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import main_job  # noqa: E402


@pytest.mark.parametrize(
    "model,prior", [("sqvae2", "default"), ("rsqvae", "default"), ("rsqvae", "contextual")]
)
def test_main_job_writes_a_report_and_resumes(model, prior, idx_dataset, tmp_path, monkeypatch, capsys):
    import eval.inception as inception

    def no_weights(path=None):
        raise FileNotFoundError("no FID Inception weights found (test)")

    monkeypatch.setattr(inception, "resolve_inception_weights", no_weights)
    args = ["--model", model, "--prior", prior, "--output", str(tmp_path / "run"), "--scale", "0.0001",
            "--samples-per-class", "1",
            "--tokenizer-override", f"data.path={idx_dataset}", "--tokenizer-override", "data.validation_size=16",
            "--prior-override", "data.batch_size=8"]  # fmt: skip
    metrics = main_job.main(args)
    report = tmp_path / "run" / "report"
    for name in ("metrics.json", "summary.md", "samples.png", "reconstructions.png", "training_curves.png"):
        assert (report / name).exists(), name
    # the last line names the real report folder (not a placeholder), also with --output elsewhere
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(f"{report.resolve()}/summary.md")
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["budget"]["tokenizer_steps"] == 2 and saved["fid"]["skipped"].startswith("no FID")
    assert len(saved["priors"]) == (2 if model == "sqvae2" else 1)
    summary = (report / "summary.md").read_text()
    assert "FID not computed" in summary
    assert "deterministic twin" in summary and "RMSE ratio" in summary
    assert saved["vq_twin"]["name"] == ("VQ-VAE-2" if model == "sqvae2" else "RQ-VAE")
    assert set(metrics["timings_seconds"]) >= {
        "tokenizer",
        "VQ twin tokenizer",
        "extract codes",
        "prior 0",
        "FID",
    }
    assert saved["budget"]["fid_samples_per_class"] == 1 and saved["budget"]["fid_reference_items"] == 20
    assert "Machine:" in summary and str(tmp_path / "run" / "pipeline") in summary
    # a rerun finds every stage done and only re-evaluates; the first run's stage timings stay, the rerun is
    # recorded separately
    again = main_job.main(args)
    assert again["tokenizer"] == metrics["tokenizer"] and again["priors"] == metrics["priors"]
    assert again["timings_seconds"] == metrics["timings_seconds"]
    assert len(again["reruns"]) == 1 and set(again["reruns"][0]["stages"]) == set(metrics["timings_seconds"])
    assert "rerun" in (report / "summary.md").read_text()


def test_a_bad_override_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="data.image_size=30 must be a multiple of 8"):
        main_job.main(["--output", str(tmp_path / "run"), "--tokenizer-override", "data.image_size=30"])
    with pytest.raises(ValueError, match="needs --model rsqvae"):
        main_job.main(["--output", str(tmp_path / "run"), "--prior", "contextual"])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_kill_9_anywhere_in_the_main_job_never_stops_it_from_continuing(idx_dataset, tmp_path):
    """Kills the whole main job (tiny budgets) with SIGKILL at random moments, at least 10 times, reruns the
    same command after each, and checks that it finishes with a complete report and the stages' outputs of an
    uninterrupted run's shape."""
    import random
    import signal
    import subprocess
    import time

    args = ["--model", "sqvae2", "--output", str(tmp_path / "run"), "--scale", "0.002", "--samples-per-class", "2",
            "--fid-items", "20", "--tokenizer-override", f"data.path={idx_dataset}",
            "--tokenizer-override", "data.validation_size=16", "--tokenizer-override", "logging.checkpoint_every=1",
            "--prior-override", "data.batch_size=8"]  # fmt: skip
    command = [sys.executable, str(ROOT / "scripts" / "main_job.py"), *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    rng, kills = random.Random(0), 0
    report = tmp_path / "run" / "report" / "summary.md"
    for _ in range(40):
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 10:
            time.sleep(rng.uniform(2.0, 20.0))
        if proc.poll() is None and kills < 10:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        stderr = proc.communicate(timeout=900)[1].decode()
        assert proc.returncode in (0, -signal.SIGKILL), stderr[-3000:]
        if proc.returncode == 0 and report.exists():
            break
    assert kills >= 10 and report.exists()
    metrics = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert metrics["tokenizer"]["steps"] == 6 and len(metrics["priors"]) == 2
