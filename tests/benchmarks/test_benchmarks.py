"""Smoke tests: the benchmark scripts still run end to end (tiny budgets; their numbers are not checked)."""

import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import prior_sampling  # noqa: E402
import tokenizer_quality  # noqa: E402
import training_speed  # noqa: E402


def test_tokenizer_quality_runs_and_writes_its_table(idx_dataset, tmp_path, capsys):
    args = ["--steps", "2", "--variants", "sqvae2", "rqvae_reset", "--output", str(tmp_path)]
    tokenizer_quality.main(args + ["--data-path", str(idx_dataset), "--validation-size", "16"])
    table = (tmp_path / "results.md").read_text()
    assert "| sqvae2 |" in table and "| rqvae_reset |" in table
    assert "| sqvae2 |" in capsys.readouterr().out


def test_tokenizer_quality_summarises_seeds_and_reads_finished_runs_back(idx_dataset, tmp_path):
    args = ["--steps", "2", "--variants", "vqvae2", "--seeds", "0", "1", "--output", str(tmp_path)]
    args += ["--data-path", str(idx_dataset), "--validation-size", "16"]
    tokenizer_quality.main(args)
    table = (tmp_path / "results.md").read_text()
    assert "| vqvae2 | 2 |" in table  # one summary line over both seeds
    assert "| vqvae2 | 0 |" in table and "| vqvae2 | 1 |" in table  # and one line per run
    first = (tmp_path / "vqvae2_seed1" / "metrics.json").stat().st_mtime_ns
    rows = tokenizer_quality.run(["vqvae2"], 2, {}, [1], tmp_path, str(idx_dataset), 16)
    assert (tmp_path / "vqvae2_seed1" / "metrics.json").stat().st_mtime_ns == first  # not retrained
    assert rows[0]["seed"] == 1 and rows[0]["rmse"] > 0


def test_training_speed_runs_and_writes_its_table(tmp_path, capsys):
    output = tmp_path / "speed.md"
    training_speed.main(
        ["--configs", "tiny_sqvae2", "--steps", "1", "--warmup", "1", "--output", str(output)]
    )
    out = capsys.readouterr().out
    assert "| tiny_sqvae2 | 8 |" in out and "failed" not in out
    assert "| tiny_sqvae2 | 8 |" in output.read_text()


def test_prior_sampling_runs(tmp_path, capsys):
    rows = prior_sampling.main(
        ["--batch-size", "2", "--repeats", "1", "--steps", "2", "--tiny", "--output", str(tmp_path / "t.md")]
    )
    assert len(rows) == 3 and all(r["images_per_second"] > 0 for r in rows)
    assert "KV cache off" in (tmp_path / "t.md").read_text()
