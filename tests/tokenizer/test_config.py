from pathlib import Path

import pytest

from tokenizer.config import load_config
from tokenizer.model import HQVAE
from tokenizer.train import TrainConfig

CONFIGS = sorted((Path(__file__).parents[2] / "configs" / "tokenizer").glob("*.yaml"))


def test_there_are_shipped_configs():
    names = {p.stem for p in CONFIGS}
    assert {
        "cifar10_sqvae2",
        "cifar10_rsqvae",
        "imagenet_sqvae2",
        "ffhq1024_sqvae2",
        "ffhq256_rsqvae",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads_and_builds(path):
    config = load_config(TrainConfig, path)
    model = HQVAE(**config.model)
    size = config.data.image_size
    if "urbansound" in path.stem:
        model.latent_shapes(80, 344)  # the audio setting of Table 2
    else:
        assert model.latent_shapes(size, size)


def test_overrides_apply_and_are_typed(tmp_path):
    path = CONFIGS[0]
    config = load_config(
        TrainConfig, path, ["optimizer.max_steps=7", "model.codebook_sizes=[8, 8]", "seed=3"]
    )
    assert config.optimizer.max_steps == 7 and config.seed == 3
    assert config.model["codebook_sizes"] == [8, 8]
    assert isinstance(config.optimizer.learning_rate, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("optimizer.learning_rat=0.1", r"optimizer: unknown key\(s\) \['learning_rat'\]"),
        ("optimizer.learning_rate=fast", "optimizer.learning_rate: expected float, got str 'fast'"),
        ("optimizer.max_steps=1.5", "optimizer.max_steps: expected int, got float"),
        ("data.source=mnist", "data.source: expected one of"),
        ("model.codebook_size=8", r"model: unknown key\(s\) \['codebook_size'\]"),
        ("mixed_precision=fp8", "mixed_precision: expected one of"),
        ("optimizer.max_steps=0", "optimizer.max_steps must be >= 1"),
        ("bogus=1", r"unknown key\(s\) \['bogus'\]"),
        ("data.path=null", "data.path is required"),
        ("logging.validate_every=0", "logging.validate_every must be >= 1"),
        ("losses.adversarial_weight=high", "losses.adversarial_weight: expected float"),
        ("model.hidden_channels=abc", "model.hidden_channels: expected int, got str 'abc'"),
        ("data.image_size=30", r"data.image_size=30 must be a multiple of 16 .* e.g. 16 or 32"),
        (
            "model.codebook_sizes=[8, x]",
            r"model.codebook_sizes: \[8, 'x'\] matches none of list\[int\] \| int",
        ),
        ("optimizer.learning_rate=0", r"optimizer.learning_rate must be > 0, got 0.0"),
        ("optimizer.betas=[0.9, 0.9, 0.9]", r"optimizer.betas: expected 2 values, got 3"),
        ("optimizer.betas=[1.5, 0.9]", r"optimizer.betas\[0\] must be >= 0 and < 1, got 1.5"),
        ("optimizer.ema_decay=1.5", "optimizer.ema_decay must be >= 0 and < 1, got 1.5"),
        ("optimizer.plateau_factor=2", "optimizer.plateau_factor must be > 0 and <= 1, got 2.0"),
        ("losses.perceptual_weight=-1", "losses.perceptual_weight must be >= 0, got -1.0"),
        ("seed=-1", "seed must be >= 0, got -1"),
        (
            "model.quantizer=opq",
            "model.quantizer: expected one of \\['sq', 'vq', 'fsq', 'lfq', 'gumbel', 'pq'\\]",
        ),
    ],
)
def test_bad_configs_fail_at_load_time_naming_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(TrainConfig, CONFIGS[0], [override])


def test_exponent_floats_without_a_dot_are_read_as_floats():
    """YAML 1.1 reads 1e-3 as a string; a float field accepts it (and still rejects words)."""
    config = load_config(
        TrainConfig, CONFIGS[0], ["optimizer.learning_rate=1e-3", "losses.perceptual_weight=2E1"]
    )
    assert config.optimizer.learning_rate == 1e-3 and config.losses.perceptual_weight == 20.0
    with pytest.raises(ValueError, match="expected float, got str '1e-3x'"):
        load_config(TrainConfig, CONFIGS[0], ["optimizer.learning_rate=1e-3x"])


def test_missing_config_file():
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(TrainConfig, "configs/tokenizer/nope.yaml")
