"""The main job end to end at a tiny budget (its real budget is measured by running scripts/main.sh)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import main_job  # noqa: E402


@pytest.mark.parametrize("model", ["sqvae2", "rsqvae"])
def test_main_job_writes_a_report_and_resumes(model, idx_dataset, tmp_path, monkeypatch):
    import eval.inception as inception

    def no_weights(path=None):
        raise FileNotFoundError("no FID Inception weights found (test)")

    monkeypatch.setattr(inception, "resolve_inception_weights", no_weights)
    args = ["--model", model, "--output", str(tmp_path / "run"), "--scale", "0.0001", "--samples-per-class", "1",
            "--tokenizer-override", f"data.path={idx_dataset}", "--tokenizer-override", "data.validation_size=16",
            "--prior-override", "data.batch_size=8"]  # fmt: skip
    metrics = main_job.main(args)
    report = tmp_path / "run" / "report"
    for name in ("metrics.json", "summary.md", "samples.png", "reconstructions.png"):
        assert (report / name).exists(), name
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
    # a rerun finds every stage done and only re-evaluates
    again = main_job.main(args)
    assert again["tokenizer"] == metrics["tokenizer"] and again["priors"] == metrics["priors"]
