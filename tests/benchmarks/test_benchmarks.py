"""Smoke tests: the benchmark scripts still run end to end (tiny budgets; their numbers are not checked)."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import photo_patches  # noqa: E402
import prior_sampling  # noqa: E402
import sq_regime  # noqa: E402
import sqvae_oracle  # noqa: E402
import tokenizer_quality  # noqa: E402
import training_speed  # noqa: E402


def test_tokenizer_quality_runs_and_writes_its_table(idx_dataset, tmp_path, capsys):
    args = [
        "--steps",
        "2",
        "--variants",
        "sqvae2",
        "rqvae_reset",
        "fsq2",
        "--probe",
        "--output",
        str(tmp_path),
    ]
    tokenizer_quality.main(args + ["--data-path", str(idx_dataset), "--validation-size", "16"])
    table = (tmp_path / "results.md").read_text()
    assert "| sqvae2 |" in table and "| rqvae_reset |" in table and "| fsq2 |" in table
    rows = json.loads((tmp_path / "results.json").read_text())
    assert all(0 <= r["probe_accuracy"] <= 1 for r in rows)  # the linear probe beside RMSE
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


def test_tokenizer_quality_extends_a_shorter_sweep_to_the_run_the_longer_budget_trains(idx_dataset, tmp_path):
    from safetensors.torch import load_file

    data = ["--data-path", str(idx_dataset), "--validation-size", "16", "--variants", "rsqvae"]
    r = 0.1  # the same Gumbel decay at both budgets: tau_end = exp(-r * steps)
    tokenizer_quality.main(
        data
        + ["--steps", "3", "--final-temperature", str(math.exp(-3 * r)), "--output", str(tmp_path / "short")]
    )
    longer = ["--steps", "6", "--final-temperature", str(math.exp(-6 * r))]
    tokenizer_quality.main(data + longer + ["--output", str(tmp_path / "fresh")])
    tokenizer_quality.main(
        data + longer + ["--output", str(tmp_path / "extended"), "--extend-from", str(tmp_path / "short")]
    )
    fresh, extended = (
        load_file(tmp_path / d / "rsqvae" / "model" / "diffusion_pytorch_model.safetensors")
        for d in ("fresh", "extended")
    )
    assert fresh.keys() == extended.keys()
    assert all(torch.equal(fresh[k], extended[k]) for k in fresh)  # steps 4-6 continued, not 1-6 retrained
    history = (tmp_path / "extended" / "rsqvae" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in history] == [
        json.loads(line)["step"]
        for line in (tmp_path / "fresh" / "rsqvae" / "history.jsonl").read_text().splitlines()
    ]
    # anything but the budget differing is refused, naming the setting
    with pytest.raises(ValueError, match="temperature_decay"):
        tokenizer_quality.main(
            data
            + ["--steps", "6", "--output", str(tmp_path / "bad"), "--extend-from", str(tmp_path / "short")]
        )
    with pytest.raises(ValueError, match="optimizer.betas"):
        tokenizer_quality.main(
            data
            + longer
            + [
                "--betas",
                "0.9",
                "0.999",
                "--output",
                str(tmp_path / "bad2"),
                "--extend-from",
                str(tmp_path / "short"),
            ]
        )
    with pytest.raises(ValueError, match="not fewer than 3"):
        tokenizer_quality.main(
            data
            + [
                "--steps",
                "3",
                "--final-temperature",
                str(math.exp(-3 * r)),
                "--output",
                str(tmp_path / "bad3"),
                "--extend-from",
                str(tmp_path / "short"),
            ]
        )
    # a floor c_tau on tau that the shorter run never reached keeps its steps: accepted; a higher one is refused
    floor = ["--output", str(tmp_path / "floor"), "--extend-from", str(tmp_path / "short")]
    tokenizer_quality.main(data + longer + floor + ["--min-temperature", str(math.exp(-3 * r))])
    config = yaml.safe_load((tmp_path / "floor" / "rsqvae" / "config.yaml").read_text())
    assert config["model"]["min_temperature"] == pytest.approx(math.exp(-3 * r))
    with pytest.raises(ValueError, match="min_temperature"):
        tokenizer_quality.main(
            data
            + longer
            + [
                "--min-temperature",
                "0.9",
                "--output",
                str(tmp_path / "bad4"),
                "--extend-from",
                str(tmp_path / "short"),
            ]
        )


def test_tokenizer_quality_gives_every_variant_the_same_adam_betas(idx_dataset, tmp_path):
    args = [
        "--steps",
        "1",
        "--variants",
        "sqvae2",
        "vqvae2",
        "--betas",
        "0.9",
        "0.999",
        "--output",
        str(tmp_path),
    ]
    tokenizer_quality.main(args + ["--data-path", str(idx_dataset), "--validation-size", "16"])
    for variant in ("sqvae2", "vqvae2"):
        config = yaml.safe_load((tmp_path / variant / "config.yaml").read_text())
        assert config["optimizer"]["betas"] == [0.9, 0.999]
    assert "Adam lr 1e-3 (0.9, 0.999)" in (tmp_path / "results.md").read_text()


def test_sqvae_oracle_names_a_source_that_is_not_the_reference(tmp_path):
    with pytest.raises(FileNotFoundError, match="no vision/model.py"):
        sqvae_oracle.main(["--sqvae-source", str(tmp_path), "--steps", "1"])


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


def _fake_photos():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=(80, 120, 3), dtype=np.uint8) for _ in range(2)]


def test_photo_patches_keep_train_and_test_regions_apart():
    photos = [
        np.broadcast_to(np.arange(200)[None, :, None], (100, 200, 3)).astype(np.uint8)
    ]  # pixel = column
    rng = np.random.default_rng(0)
    train, _ = photo_patches.sample_patches(photos, 16, 50, "train", rng)
    test, labels = photo_patches.sample_patches(photos, 16, 50, "test", rng)
    # full-resolution patches hold column indices: train ones stay left of the cut, test ones right of it
    assert train.max() < 160 and labels.tolist() == [0] * 50
    full_scale_test = [p for p in test if p.max() - p.min() == 15]
    assert full_scale_test and all(p.min() >= 160 for p in full_scale_test)
    with pytest.raises(ValueError, match="split"):
        photo_patches.sample_patches(photos, 16, 1, "validation", rng)


def test_photo_patches_build_writes_an_arrow_dataset(tmp_path, monkeypatch):
    from tokenizer.data import load_hf_split

    monkeypatch.setattr(photo_patches, "load_photos", _fake_photos)
    path = photo_patches.build(tmp_path / "patches", 16, train_count=12, test_count=4)
    assert len(load_hf_split("arrow", str(path), "train")) == 12
    assert len(load_hf_split("arrow", str(path), "test")) == 4
    assert photo_patches.build(path, 16) == path  # already there: not rebuilt


def test_sq_regime_variants_and_ratios_are_consistent():
    """Every variant builds its model on a residual and an injected cell, and every ratio names variants."""
    from tokenizer import HQVAE

    for cell in ("photo32_4x4x4_k8_shared", "photo32_4x4+8x8_k512"):
        for variant in sq_regime.VARIANTS:
            HQVAE(**sq_regime.cell_model(sq_regime.CELLS[cell], variant))
    for sq_variants, vq_variant in sq_regime.RATIOS.values():
        assert set(sq_variants) | {vq_variant} <= set(sq_regime.VARIANTS)
    assert (
        sq_regime.VARIANTS["vq_data_warm"]["rate_warmup_steps"]
        == sq_regime.VARIANTS["sq_data_warm"]["rate_warmup_steps"]
    )  # the VQ twin gets the same warm-up
    noise = sq_regime.VARIANTS["sq_data_noise"]["codebook_init_noise"]
    assert sq_regime.VARIANTS["vq_data_noise"]["codebook_init_noise"] == noise > 0  # and the same noise


def test_sq_regime_overrides_width_and_noise_of_the_noise_variants_only():
    cell = sq_regime.CELLS["photo32_4x4+8x8_k512"]
    for variant in ("sq_data_noise", "vq_data_noise"):
        model = sq_regime.cell_model(cell, variant, embedding_dim=16, noise=0.2)
        assert (model["embedding_dim"], model["codebook_init_noise"]) == (16, 0.2)
    plain = sq_regime.cell_model(cell, "sq_data", embedding_dim=16, noise=0.2)
    assert plain["embedding_dim"] == 16 and "codebook_init_noise" not in plain
    default = sq_regime.cell_model(cell, "sq_data_noise")  # the shipped sweeps' configs are unchanged
    assert (default["embedding_dim"], default["codebook_init_noise"]) == (64, 0.1)
    for flag, value in (("--embedding-dim", "0"), ("--codebook-init-noise", "-0.1")):
        with pytest.raises(SystemExit):
            sq_regime.main([flag, value])


def test_sq_regime_runs_a_cell_and_writes_its_table_and_plot(idx_dataset, tmp_path, capsys, monkeypatch):
    cell = "fmnist32_4x4+8x8_k64"
    args = ["--steps", "2", "--cells", cell, "--variants", "sq_data", "sq_data_cal", "vq_data", "--output"]
    args += [str(tmp_path)]
    args += ["--fashion-mnist-path", str(idx_dataset)]
    sq_regime.FASHION_MNIST["validation_size"] = 16
    try:
        sq_regime.main(args)
    finally:
        sq_regime.FASHION_MNIST["validation_size"] = 5000
    table = (tmp_path / "results.md").read_text()
    assert f"| {cell} | 1.54 |" in table  # rho = 512 / (16 ln 64 + 64 ln 64)
    assert "| sq_data |" in table and "| vq_data |" in table
    assert "(1 seeds)" in table  # the sq_data / vq_data ratio is filled, the others are not
    start = {r["variant"]: r["variance_start_end"][0] for r in json.loads((tmp_path / "results.json").read_text())
             if r["variant"].startswith("sq")}  # fmt: skip
    assert all(abs(v / 0.03 - 1) < 0.01 for v in start["sq_data"])  # s^2 after one step from its fixed 0.03
    assert all(abs(v / 0.03 - 1) > 0.05 for v in start["sq_data_cal"])  # set from the data instead

    assert (tmp_path / "regime.png").stat().st_size > 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert rows[0]["model"]["codebook_init"] == "data" and rows[0]["kl_nats"]

    # the same cell continued to 4 steps from the 2-step runs (tau_end 0.3^2 keeps the decay r)
    longer = ["--steps", "4", "--final-temperature", "0.09", "--extend-from", str(tmp_path)]
    monkeypatch.setitem(sq_regime.FASHION_MNIST, "validation_size", 16)
    common = ["--cells", cell, "--variants", "sq_data", "vq_data", "--fashion-mnist-path", str(idx_dataset)]
    sq_regime.main(common + longer + ["--output", str(tmp_path / "longer"), "--validate-every", "1"])
    for variant in ("sq_data", "vq_data"):
        short, extended = (d / cell / variant / "history.jsonl" for d in (tmp_path, tmp_path / "longer"))
        assert extended.read_text().startswith(short.read_text())  # steps 1-2 carried over, 3-4 trained
        validations = (tmp_path / "longer" / cell / variant / "validation.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in validations] == [2, 3, 4]  # every step from 3 on
    # periodic validations keep the best one's weights and test them: its step is among this run's (3, 4)
    rows = json.loads((tmp_path / "longer" / "results.json").read_text())
    assert all(r["best"]["step"] in (3, 4) and r["best"]["test"]["rmse"] > 0 for r in rows)
    assert "(steps " in (tmp_path / "longer" / "results.md").read_text()
    assert all(r.get("best") is None for r in json.loads((tmp_path / "results.json").read_text()))


def test_audio_quality_runs_rsq_and_rq_on_spectrograms(audio_folder, tmp_path, capsys):
    import audio_quality

    rows = audio_quality.main(["--steps", "2", "--variants", "rsq4", "rq4", "--data-path", str(audio_folder),
                               "--output", str(tmp_path), "--override", "model.hidden_channels=16",
                               "--override", "data.batch_size=4"])  # fmt: skip
    assert [r["variant"] for r in rows] == ["rsq4", "rq4"] and all(len(r["perplexity"]) == 4 for r in rows)
    assert "| rsq4 | 1 |" in (tmp_path / "results.md").read_text()


def test_contextual_prior_settings_are_draft_revise_rounds():
    import argparse

    import contextual_prior

    assert contextual_prior.parse_setting("8,4,2") == (8, 4, 2)
    assert contextual_prior.parse_setting("4,4,0") == (4, 4, 0)  # no revise rounds: draft only
    for bad in ("8,4", "8,x,2", "0,4,2", "-1,4,2"):
        with pytest.raises(argparse.ArgumentTypeError, match="T_draft"):
            contextual_prior.parse_setting(bad)


def test_sq_regime_residual_cells_share_the_audio_benchmarks_codebook():
    import math

    from tokenizer import HQVAE

    cell = sq_regime.CELLS["fmnist32_8x8x4_k8_shared"]
    model = HQVAE(**sq_regime.cell_model(cell, "vq_data"))
    assert model.config.share_codebook and list(model.codebook_sizes) == [8] * 4
    # the same rho as the 4-layer audio cell: 512 / (64 positions x 4 depths x ln 8)
    assert sq_regime.regime(cell)["rho"] == pytest.approx(512 / (256 * math.log(8)))
    assert not HQVAE(
        **sq_regime.cell_model(sq_regime.CELLS["fmnist32_4x4+8x8_k64"], "sq")
    ).config.share_codebook


def test_rgb_fashion_mnist_cell_triples_rho_and_error_split_adds_up(idx_dataset, tmp_path, capsys):
    import error_split

    grey, rgb = (sq_regime.CELLS[f"fmnist32{c}_8x8x4_k8_shared"] for c in ("", "rgb"))
    assert sq_regime.regime(rgb)["rho"] == pytest.approx(3 * sq_regime.regime(grey)["rho"])
    cell = "fmnist32rgb_8x8x4_k8_shared"
    args = ["--steps", "2", "--cells", cell, "--variants", "vq_data", "--output", str(tmp_path)]
    sq_regime.FASHION_MNIST["validation_size"] = 16
    try:
        sq_regime.main(args + ["--fashion-mnist-path", str(idx_dataset)])
    finally:
        sq_regime.FASHION_MNIST["validation_size"] = 5000
    run_dir = tmp_path / cell / "vq_data"
    (row,) = error_split.main([str(run_dir), "--output", str(tmp_path / "split.json")])
    assert "| " + str(run_dir) in capsys.readouterr().out
    assert row["block"] == 4  # 32 pixels / 8 positions
    # the test RMSE of the trainer's own evaluation, split into parts that add up to it
    test_rmse = json.loads((tmp_path / "results.json").read_text())[0]["rmse"]
    assert row["rmse"] == pytest.approx(test_rmse, rel=1e-4)
    assert row["zero_pixel_share"] + row["content_pixel_share"] == pytest.approx(1)
    assert row["zero_error_share"] + row["content_error_share"] == pytest.approx(1)
    assert 0 < row["empty_pixel_share"] <= row["zero_pixel_share"] < 1  # empty positions are zeros
    combined = (
        row["zero_pixel_share"] * row["zero_rmse"] ** 2
        + row["content_pixel_share"] * row["content_rmse"] ** 2
    )
    assert combined == pytest.approx(row["rmse"] ** 2)


def test_decode_gap_argmax_row_is_the_trainers_test_rmse_and_vq_is_refused(tokenizer_runs, tmp_path, capsys):
    import decode_gap

    run = tokenizer_runs["tiny_sqvae2"]
    (row,) = decode_gap.main([str(run), "--output", str(tmp_path / "gap.json")])
    assert "| " + str(run) in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split"] == "test" and row["rmse"]["argmax"] == pytest.approx(metrics["rmse"], rel=1e-4)
    assert row["temperature"] == pytest.approx(metrics["final_temperature"])
    assert row["rmse"]["relaxed"] != row["rmse"]["argmax"]  # a soft posterior: mixtures decode differently
    assert decode_gap.decode_gap(run) == row  # the Gumbel noise and samples are seeded
    assert json.loads((tmp_path / "gap.json").read_text()) == [row]
    with pytest.raises(ValueError, match="need 'sq'"):
        decode_gap.decode_gap(tokenizer_runs["tiny_rqvae"])


def test_decoder_finetune_trains_only_the_decoder_and_keeps_every_code(tokenizer_runs, tmp_path, capsys):
    import decoder_finetune

    from tokenizer import HQVAE

    runs = [tokenizer_runs["tiny_sqvae2"], tokenizer_runs["tiny_rqvae"]]
    rows = decoder_finetune.main([str(r) for r in runs] + ["--steps", "3", "--output", str(tmp_path)])
    assert "| sq |" in capsys.readouterr().out and "| vq |" in (tmp_path / "results.md").read_text()
    images = torch.rand(4, 1, 32, 32)
    for run, row in zip(runs, rows):
        before = HQVAE.from_pretrained(run / "model").eval()
        after = HQVAE.from_pretrained(tmp_path / run.parent.name / run.name / "model").eval()
        assert (
            row["steps"] == 3 and row["rmse_before"] == json.loads((run / "metrics.json").read_text())["rmse"]
        )
        changed = {n for n, p in after.state_dict().items() if not torch.equal(p, before.state_dict()[n])}
        assert changed and all(n.startswith("decoder.") for n in changed)  # encoder, codebooks, s^2 frozen
        assert all(torch.equal(a, b) for a, b in zip(before.encode(images), after.encode(images)))
    with pytest.raises(ValueError, match="not a finished tokenizer run folder"):
        decoder_finetune.main([str(tmp_path / "nothing"), "--output", str(tmp_path / "x")])


def test_variance_drift_reads_the_logged_gradient_split(tokenizer_runs, tmp_path, capsys):
    import variance_drift

    run = tokenizer_runs["tiny_sqvae2"]
    (result,) = variance_drift.main([str(run), "--window", "1", "--output", str(tmp_path / "drift.json"),
                                     "--plot", str(tmp_path / "drift.png")])  # fmt: skip
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [w["steps"] for w in result["windows"]] == [[0, 1], [1, 2]]
    for window, line in zip(result["windows"], history):  # one logged step per window: its own numbers
        assert (
            window["decoder"] == line["variance_grad_decoder"]
            and window["rate"] == line["variance_grad_rate"]
        )
        assert window["total"] == [
            d + r for d, r in zip(line["variance_grad_decoder"], line["variance_grad_rate"])
        ]
    assert "| tiny_sqvae2 | 1–2 |" in capsys.readouterr().out and (tmp_path / "drift.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no variance_grad_decoder"):
        variance_drift.main([str(tokenizer_runs["tiny_rqvae"])])


def test_variance_forces_probe_at_common_variances_and_restore_nothing(tokenizer_runs, tmp_path, capsys):
    import variance_forces

    run = tokenizer_runs["tiny_sqvae2"]
    argv = [str(run), "--checkpoints", "step-00000002", "final", "--factors", "0.5", "4", "--batches", "2",
            "--batch-size", "4", "--output", str(tmp_path / "forces.json")]  # fmt: skip
    rows = variance_forces.main(argv)
    assert [(r["model"], r["factor"]) for r in rows] == [("step-00000002", 0.5), ("step-00000002", 4.0),
                                                         ("final", 0.5), ("final", 4.0)]  # fmt: skip
    reference = rows[0]["own_variances"]
    assert [s2 / spacing for s2, spacing in zip(reference, rows[0]["code_spacing"])] == pytest.approx(
        rows[0]["relative_variances"]
    )
    for row in rows:  # every model is probed at the same absolute s^2: factor x the first model's
        assert row["variances"] == pytest.approx([row["factor"] * v for v in reference])
    # a softer posterior at 8x the variance: entropy rises in every layer
    assert all(high > low for low, high in zip(rows[0]["entropy"], rows[1]["entropy"]))
    assert rows == variance_forces.main(argv)  # seeded batches and noise
    assert "| final |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="step-00000099"):
        variance_forces.main([str(run), "--checkpoints", "step-00000099"])


def test_latent_dimensions_measures_each_layers_input_and_codebook(tokenizer_runs, tmp_path, capsys):
    import latent_dimensions

    rows = latent_dimensions.main([str(tokenizer_runs["tiny_sqvae2"]), str(tokenizer_runs["tiny_rqvae"]),
                                   "--max-images", "16", "--output", str(tmp_path / "dims.json")])  # fmt: skip
    sq, vq = rows
    assert len(sq["layers"]) == 2 and len(vq["layers"]) == 3  # tiny_rqvae: 3 residual layers
    for layer in sq["layers"] + vq["layers"]:
        assert 1.0 <= layer["input_participation_ratio"] <= 8.0  # embedding_dim 8
        assert layer["input_top_eigenvalues"] == sorted(layer["input_top_eigenvalues"], reverse=True)
    assert all("input_directions_above_s2" in layer for layer in sq["layers"])
    assert not any("s2" in layer for layer in vq["layers"])
    assert "| sq | 0 |" in capsys.readouterr().out


def test_encoder_gradients_straight_through_gain_is_one_and_sq_gain_measured(
    tokenizer_runs, tmp_path, capsys
):
    import encoder_gradients

    sq_run, vq_run = str(tokenizer_runs["tiny_sqvae2"]), str(tokenizer_runs["tiny_rqvae"])
    argv = ["--batches", "2", "--batch-size", "4", "--split", "train"]
    sq, vq = encoder_gradients.main([sq_run, vq_run, *argv, "--output", str(tmp_path / "grads.json")])
    assert len(sq["resolutions"]) == 2 and len(vq["resolutions"]) == 1  # tiny_rqvae: one residual group
    assert vq["resolutions"][0]["gain"] == pytest.approx(1.0)  # straight-through: the encoder gets it all
    for r in sq["resolutions"] + vq["resolutions"]:
        for part in ("asked", "decoder", "rate"):
            assert 0.0 <= r[part]["fraction_on_input_top"] <= 1.0 + 1e-9
            assert 1.0 <= r[part]["participation_ratio"] <= 8.0 + 1e-6  # embedding_dim 8
    assert all(0 < r["gain"] < float("inf") and r["s2"] > 0 for r in sq["resolutions"])
    assert encoder_gradients.main([sq_run, *argv]) == [sq]  # seeded batches and noise
    init = encoder_gradients.main([sq_run, *argv, "--checkpoint", "init"])[0]
    assert init["step"] == 0
    assert init["resolutions"][0]["s2"] == pytest.approx(sq["resolutions"][0]["s2"], rel=0.5)
    assert "| init (step 0) | 1 |" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="step-00000099"):
        encoder_gradients.main([sq_run, "--checkpoint", "step-00000099"])


def test_latent_dimensions_counts_directions_above_s2_and_code_spread():
    import latent_dimensions

    torch.manual_seed(0)
    z = torch.randn(4000, 3) * torch.tensor([1.0, 0.1, 0.01])  # variances 1, 0.01, 1e-4
    summary = latent_dimensions.summarise(z, torch.tensor([[1.0, 0, 0], [-1.0, 0, 0]]), s2=0.005)
    assert summary["input_directions_above_s2"] == 2 and summary["s2"] == 0.005
    assert summary["input_top_eigenvalues"][0] == pytest.approx(1.0, rel=0.1)
    assert summary["codebook_participation_ratio"] == pytest.approx(1.0)
    assert summary["codebook_spread"] == pytest.approx(2**0.5)  # std over the 2 codes (unbiased) along x
    assert "s2" not in latent_dimensions.summarise(z, None, None)


def test_latent_dimensions_reads_lfq_sign_projections_near_a_flip_and_at_the_bound():
    import latent_dimensions

    from tokenizer.quantizer_family import LookupFreeQuantizer

    z = torch.tensor([[0.05, -3.0, 0.5], [-0.02, 4.0, -0.5]])  # per column: near 0, saturated, in between
    bounded = latent_dimensions.sign_projections(LookupFreeQuantizer(8, dim=3, soft_clamp=1.0), z)
    assert bounded["near_flip"] == pytest.approx(2 / 6) and bounded["at_bound"] == pytest.approx(2 / 6)
    assert bounded["median_abs"] == pytest.approx(0.5)  # torch's lower median of 0.02, 0.05, 0.5, 0.5, 3, 4
    assert "at_bound" not in latent_dimensions.sign_projections(LookupFreeQuantizer(8, dim=3), z)
    assert latent_dimensions.sign_projections(torch.nn.Linear(3, 3), z) is None


def test_participation_ratio_counts_equal_directions():
    import latent_dimensions

    assert latent_dimensions.participation_ratio(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert latent_dimensions.participation_ratio(torch.tensor([2.0, 2.0, 2.0, 2.0])) == pytest.approx(4.0)


def test_long_budgets_without_validations_warn_that_the_lr_stays_constant(capsys):
    tokenizer_quality.warn_constant_lr(10_000, None)
    assert "keep the LR constant" in capsys.readouterr().err
    for steps, validate_every in [(9_999, None), (50_000, 2000)]:
        tokenizer_quality.warn_constant_lr(steps, validate_every)
        assert capsys.readouterr().err == ""
