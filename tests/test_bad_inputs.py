"""The bad-input catalogue (issue 14): every entry is something a user can get wrong, and each must end in one
clear line that names the bad value or file and says what was expected, never a torch / library traceback.

Library calls must raise ``ValueError`` (or ``OSError`` for files) with a one-line message matching the entry;
commands must exit with status 2 and end stderr with an ``error:`` line matching it (``run_cli`` or argparse).
Add an entry whenever a new way to get it wrong is found; the README's configuration section lists what is
handled by design rather than refused.
"""

import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest
import torch

from prior import DraftAndReviseScheduler, MaskedTokenScheduler, MaskedTokenTransformer, RQTransformer
from tests.conftest import ROOT
from tests.pipelines.test_pipeline import contextual_pipeline, masked_pipeline, rq_pipeline, tiny_hqvae
from tokenizer import HQVAE
from tokenizer.config import load_config
from tokenizer.console import run_cli
from tokenizer.data import FashionMNIST
from tokenizer.train import TrainConfig

TOKENIZER_CONFIG = ROOT / "configs" / "tokenizer" / "tiny_sqvae2.yaml"
ONE = dict(class_labels=[0])


def _cfg(*overrides):
    return lambda objects: load_config(TrainConfig, TOKENIZER_CONFIG, list(overrides))


def _model(**kwargs):
    return lambda: HQVAE(**{"in_channels": 1, "hidden_channels": 8, "embedding_dim": 4, **kwargs})


# (id, what is called (given the shared objects), the one-line message it must give: a regex)
# fmt: off
API = [
    # images into the tokenizer
    ("images 3-d", lambda o: o["sq"](torch.rand(1, 32, 32)), r"\(B, C, H, W\).*\(1, 32, 32\)"),
    ("images empty batch", lambda o: o["sq"](torch.rand(0, 1, 32, 32)), r"B >= 1, got shape \(0, 1, 32, 32\)"),
    ("images channels", lambda o: o["sq"](torch.rand(1, 3, 32, 32)), "3 channels, the model expects 1"),
    ("images size", lambda o: o["sq"](torch.rand(1, 1, 30, 30)), "30x30 must be a positive multiple of 8"),
    ("images uint8", lambda o: o["sq"](torch.zeros(1, 1, 32, 32, dtype=torch.uint8)), "torch.uint8 .*divide by 255"),
    ("images bool", lambda o: o["sq"](torch.zeros(1, 1, 32, 32, dtype=torch.bool)), "got torch.bool"),
    ("images list", lambda o: o["sq"]([[0.0]]), "float tensor in \\[0, 1\\], got list"),
    ("images NaN", lambda o: o["sq"](torch.full((2, 1, 32, 32), float("nan"))), r"images \[0, 1\] .* NaN or inf"),
    ("encode inf", lambda o: o["sq"].encode(torch.full((1, 1, 32, 32), float("inf"))), "NaN or inf"),
    # indices into the decoder
    ("indices >= K", lambda o: o["sq"].decode_indices([o["idx"][0] + 16, o["idx"][1]]), r"layer 0 must lie in \[0, 16\)"),
    ("indices negative", lambda o: o["sq"].decode_indices([o["idx"][0] - 100, o["idx"][1]]), r"must lie in \[0, 16\), got range \[-"),
    ("indices float", lambda o: o["sq"].decode_indices([o["idx"][0].float(), o["idx"][1]]), "must be integers, got torch.float32"),
    ("indices count", lambda o: o["sq"].decode_indices([o["idx"][0]]), "got indices for 1 layers; expected 2"),
    ("indices shape", lambda o: o["sq"].decode_indices([o["idx"][0], o["idx"][1][:, :4]]), "layer 1 have shape"),
    ("indices batch", lambda o: o["sq"].decode_indices([o["idx"][0][:1], o["idx"][1]]), r"expected \(1, 8, 8\)"),
    ("indices num_layers", lambda o: o["sq"].decode_indices(o["idx"], num_layers=3), "num_layers must be in"),
    # tokenizer construction
    ("model K 1", lambda o: _model(codebook_sizes=1)(), "codebook_size must be >= 2, got 1"),
    ("model hidden", lambda o: _model(hidden_channels=-1)(), "hidden_channels must be >= 1, got -1"),
    ("model embedding_dim", lambda o: _model(embedding_dim=0)(), "embedding_dim must be >= 1, got 0"),
    ("model in_channels", lambda o: _model(in_channels=0)(), "in_channels must be >= 1, got 0"),
    ("model stem", lambda o: _model(num_stem_downsamples=-1)(), "num_stem_downsamples must be >= 0, got -1"),
    ("model layers empty", lambda o: _model(layers_per_resolution=[])(), "non-empty positive counts, got \\[\\]"),
    ("model layers zero", lambda o: _model(layers_per_resolution=[0, 1])(), "got \\[0, 1\\]"),
    ("model sizes mismatch", lambda o: _model(layers_per_resolution=[1, 1], codebook_sizes=[8, 8, 8])(), "3 entries"),
    ("model quantizer", lambda o: _model(quantizer="opq")(), "quantizer must be one of .* got 'opq'"),
    ("model s2 init", lambda o: _model(init_variance=0.0)(), "init_variance must be > 0, got 0.0"),
    ("model decay", lambda o: _model(temperature_decay=-1.0)(), "temperature_decay >= 0, got 0.0, -1.0"),
    ("model commitment", lambda o: _model(quantizer="vq", commitment_cost=-1.0)(), "commitment_cost must be >= 0"),
    ("model ema", lambda o: _model(quantizer="vq", ema_decay=1.5)(), r"ema_decay must be in \(0, 1\), got 1.5"),
    ("model dead codes", lambda o: _model(quantizer="vq", dead_code_threshold=-1.0)(), "dead_code_threshold must be >= 0"),
    ("model sq groups", lambda o: _model(sq_groups=0)(), "sq_groups must be >= 1, got 0"),
    ("model sq groups on vq", lambda o: _model(quantizer="vq", sq_groups=2)(), r"sq_groups=2 splits SQ codebooks .* got quantizer='vq'"),
    ("model sq groups size", lambda o: _model(sq_groups=2, codebook_sizes=10)(), r"sq_groups=2 needs a codebook size K = K_m\^2, K_m >= 2; got K = 10"),
    ("model sq groups shared", lambda o: _model(sq_groups=2, codebook_sizes=16, layers_per_resolution=[2], share_codebook=True)(), r"share_codebook is not available with product codebooks \(sq_groups=2\)"),
    ("model codebook_init", lambda o: _model(codebook_init="kmeans")(), "codebook_init must be .* got 'kmeans'"),
    ("model rate warm-up", lambda o: _model(rate_warmup_steps=-1)(), "rate_warmup_steps must be >= 0, got -1"),
    ("model codebook noise", lambda o: _model(codebook_init="data", codebook_init_noise=-0.1)(), "codebook_init_noise must be >= 0, got -0.1"),
    ("model codebook noise random", lambda o: _model(codebook_init_noise=0.1)(), "codebook_init_noise jitters data-initialised codes: .* got codebook_init='random'"),
    ("model residual objective", lambda o: _model(residual_objective="mean")(), "residual_objective must be"),
    ("model from_pretrained missing", lambda o: HQVAE.from_pretrained(str(ROOT / "no_such_model")), "no_such_model"),
    # sampling through the pipeline (masked stack, RQ-Transformer, contextual)
    ("pipe label name", lambda o: o["masked"](class_labels=["three"]), "unknown label name"),
    ("pipe label range", lambda o: o["masked"](class_labels=[3]), "class id 3 is out of range"),
    ("pipe label float", lambda o: o["masked"](class_labels=[1.5]), "integer ids or names, got 1.5"),
    ("pipe labels empty", lambda o: o["masked"](class_labels=[]), "class_labels is empty"),
    ("pipe labels missing", lambda o: o["masked"](), "class_labels is required"),
    ("pipe per label", lambda o: o["masked"](**ONE, num_images_per_label=1.5), "num_images_per_label must be an integer >= 1, got 1.5"),
    ("pipe steps", lambda o: o["masked"](**ONE, num_inference_steps=0), "num_inference_steps must be an integer >= 1, got 0"),
    ("pipe steps per level", lambda o: o["masked"](**ONE, num_inference_steps=[2, 2, 2]), "one value or 2 \\(one per level\\), got 3"),
    ("pipe guidance", lambda o: o["masked"](**ONE, guidance_scale=-0.5), "guidance_scale must be >= 0"),
    ("pipe guidance schedule", lambda o: o["masked"](**ONE, guidance_scale=2.0, guidance_schedule="exp"), "guidance_schedule"),
    ("pipe temperature", lambda o: o["masked"](**ONE, temperature=0.0), "temperature must be > 0, got 0.0"),
    ("pipe top_k", lambda o: o["masked"](**ONE, top_k=0), "top_k must be >= 1 or None, got 0"),
    ("pipe top_p", lambda o: o["masked"](**ONE, top_p=1.5), r"top_p must be in \(0, 1\] or None, got 1.5"),
    ("pipe choice temperature", lambda o: o["masked"](**ONE, choice_temperature=-1.0), "choice_temperature must be >= 0"),
    ("pipe output type", lambda o: o["masked"](**ONE, output_type="jpeg"), "output_type must be one of"),
    ("pipe num_levels", lambda o: o["masked"](**ONE, num_levels=0), "num_levels"),
    ("pipe batch size", lambda o: o["masked"](**ONE, batch_size=0), "batch_size"),
    ("pipe generator type", lambda o: o["masked"](**ONE, generator="abc"), "generator must be a torch.Generator.*'abc'"),
    ("pipe generator count", lambda o: o["masked"](class_labels=[0, 1], generator=[torch.Generator()]), "one per image"),
    ("rq temperature per depth", lambda o: o["rq"](**ONE, temperature=[1.0, 1.0]), "one value or 3 \\(one per depth\\), got 2"),
    ("rq top_p", lambda o: o["rq"](**ONE, top_p=0.0), r"top_p must be in \(0, 1\]"),
    ("contextual steps", lambda o: o["contextual"](**ONE, num_inference_steps=[2, 2, 2]), "T_draft or \\[T_draft, T_revise\\]"),
    ("contextual revise steps", lambda o: o["contextual"](**ONE, num_inference_steps=[2, 0]), "must be an integer >= 1, got 0"),
    # prior and scheduler construction
    ("prior K", lambda o: MaskedTokenTransformer(0, 4, 4), "codebook_size >= 2"),
    ("prior heads", lambda o: MaskedTokenTransformer(16, 4, 4, hidden_size=16, num_heads=3), "multiple of num_heads 3"),
    ("prior grid", lambda o: MaskedTokenTransformer(16, 0, 4), "height/width >= 1"),
    ("rq prior depth", lambda o: RQTransformer(8, 0, 4, 4), "need depth >= 1"),
    ("scheduler mask id", lambda o: MaskedTokenScheduler(0), "mask_token_id must be >= 1"),
    ("draft-and-revise revisions", lambda o: DraftAndReviseScheduler(num_revisions=-1), "num_revisions >= 0"),
    # training configs (tokenizer)
    ("config missing file", lambda o: load_config(TrainConfig, ROOT / "configs" / "nope.yaml"), "config file not found"),
    ("config override syntax", _cfg("optimizer.learning_rate"), "must look like key.path=value"),
    ("config unknown key", _cfg("optimizer.lr=1"), r"optimizer: unknown key\(s\) \['lr'\]"),
    ("config unknown section", _cfg("foo.bar=1"), r"unknown key\(s\) \['foo'\]"),
    ("config float word", _cfg("optimizer.learning_rate=fast"), "expected float, got str 'fast'"),
    ("config lr zero", _cfg("optimizer.learning_rate=0"), "optimizer.learning_rate must be > 0, got 0.0"),
    ("config lr negative", _cfg("optimizer.learning_rate=-1e-3"), "optimizer.learning_rate must be > 0"),
    ("config betas length", _cfg("optimizer.betas=[0.9, 0.9, 0.9]"), "optimizer.betas: expected 2 values, got 3"),
    ("config betas range", _cfg("optimizer.betas=[0.9, 1.0]"), r"optimizer.betas\[1\] must be >= 0 and < 1"),
    ("config ema", _cfg("optimizer.ema_decay=1.5"), "optimizer.ema_decay must be >= 0 and < 1, got 1.5"),
    ("config clip", _cfg("optimizer.grad_clip_norm=0"), "optimizer.grad_clip_norm must be > 0"),
    ("config steps", _cfg("optimizer.max_steps=0"), "optimizer.max_steps must be >= 1, got 0"),
    ("config accumulation", _cfg("optimizer.gradient_accumulation_steps=0"), "gradient_accumulation_steps must be >= 1"),
    ("config final temperature", _cfg("optimizer.final_temperature=2"), r"final_temperature must be in \(0, 1\]"),
    ("config batch", _cfg("data.batch_size=0"), "data.batch_size must be >= 1, got 0"),
    ("config image size", _cfg("data.image_size=30"), "data.image_size=30 must be a multiple of 8 .* e.g. 24 or 32"),
    ("config checkpoints", _cfg("logging.checkpoint_every=0"), "logging.checkpoint_every must be >= 1"),
    ("config keep best", _cfg("logging.keep_best=psnr"), r"logging.keep_best: expected one of \['rmse', 'loss'\]"),
    ("config seed", _cfg("seed=-1"), "seed must be >= 0, got -1"),
    ("config precision", _cfg("mixed_precision=fp8"), "mixed_precision: expected one of"),
    ("config model type", _cfg("model.hidden_channels=abc"), "model.hidden_channels: expected int, got str 'abc'"),
    ("config model key", _cfg("model.hidden=8"), r"model: unknown key\(s\) \['hidden'\]"),
    ("config perceptual", _cfg("losses.perceptual_weight=-1"), "losses.perceptual_weight must be >= 0"),
    ("config gan start", _cfg("losses.adversarial_start_step=-5"), "losses.adversarial_start_step must be >= 0"),
    ("config bad-image policy", _cfg("data.on_bad_image=ignore"), "data.on_bad_image: expected one of"),
    ("fashion-mnist channels", lambda o: FashionMNIST("train", channels=2), "channels must be 1 or 3 .* got 2"),
]
# fmt: on


@pytest.fixture(scope="module")
def objects():
    sq = tiny_hqvae([1, 1], [16, 12])
    return {
        "sq": sq,
        "idx": sq.encode(torch.rand(2, 1, 32, 32)),
        "masked": masked_pipeline(),
        "rq": rq_pipeline(),
        "contextual": contextual_pipeline(),
    }


@pytest.mark.parametrize("call, message", [case[1:] for case in API], ids=[case[0] for case in API])
def test_a_bad_library_input_is_one_clear_line(objects, call, message):
    with pytest.raises((ValueError, OSError), match=message) as error:
        call(objects)
    assert "\n" not in str(error.value).strip()


def _commands(run, codes, tmp):
    """(id, module, argv, message) of each command-line case; ``run`` is a finished tiny tokenizer run."""
    none = str(tmp / "none")
    return [
        ("train config", "tokenizer.train", ["--config", none + ".yaml"], "config file not found"),
        ("train data path", "tokenizer.train", ["--config", str(TOKENIZER_CONFIG), f"data.path={none}",
                                                f"output_dir={tmp / 't'}"], "idx files not found in"),
        ("train resume", "tokenizer.train", ["--config", str(TOKENIZER_CONFIG), f"output_dir={tmp / 't'}",
                                             "--resume", none], "is not a complete checkpoint"),
        ("extract tokenizer", "prior.extract", ["--tokenizer", none, "--output", none], "neither a tokenizer run"),
        ("extract split", "prior.extract", ["--tokenizer", str(run), "--output", str(tmp / "c"), "--splits", "bogus"],
         r"unknown or missing split\(s\) \['bogus'\]"),
        ("extract weights", "prior.extract", ["--tokenizer", str(run), "--output", str(tmp / "c"), "--weights",
                                              "model_ema"], r"model_ema/\)"),
        ("extract shard size", "prior.extract", ["--tokenizer", str(run), "--output", none, "--shard-size", "0"],
         "--shard-size must be >= 1, got 0"),
        ("prior codes", "prior.train", ["--config", str(ROOT / "configs/prior/tiny_masked.yaml"),
                                        f"data.codes_dir={none}"], "extract codes first"),
        ("prior level", "prior.train", ["--config", str(ROOT / "configs/prior/tiny_masked.yaml"),
                                        f"data.codes_dir={codes}", "level=5"], "level must be in"),
        ("prior top_p", "prior.train", ["--config", str(ROOT / "configs/prior/tiny_masked.yaml"),
                                        f"data.codes_dir={codes}", "sampling.top_p=2"], "sampling.top_p must be"),
        ("reconstruction tokenizer", "eval.reconstruction", ["--tokenizer", none], "neither a tokenizer run"),
        ("reconstruction split", "eval.reconstruction", ["--tokenizer", str(run), "--split", "bogus"],
         "split must be one of .* got 'bogus'"),
        ("reconstruction bare model", "eval.reconstruction", ["--tokenizer", str(run / "model")], "--data-config"),
        ("probe items", "eval.linear_probe", ["--tokenizer", str(run), "--train-items", "1"], "--train-items >= 2"),
        ("curves run", "eval.training_curves", ["--runs", none, "--output", str(tmp / "c.png")], "no history.jsonl"),
        ("curves names", "eval.training_curves", ["--runs", str(run), "--names", "a", "b", "--output",
                                                  str(tmp / "c.png")], "2 names for 1 runs"),
        ("sample pipeline", "pipelines.sample", ["--pipeline", none, "--output", str(tmp / "s.png")], "does not exist"),
        ("sample not a pipeline", "pipelines.sample", ["--pipeline", str(run), "--output", str(tmp / "s.png")],
         "holds no model_index.json"),
        ("assemble prior", "pipelines.assemble", ["--tokenizer", str(run), "--priors", none, "--output",
                                                  str(tmp / "p")], "not a finished prior run"),
        ("fid inception", "eval.fid", ["data", "--data-config", str(run / "config.yaml"), "--output", str(tmp / "f"),
                                       "--inception-weights", str(tmp / "garbage.pth")],
         "is not a FID Inception weights file"),
        ("fid data config", "eval.fid", ["data", "--data-config", none, "--output", str(tmp / "f")],
         "config file not found"),
        ("fid pipeline", "eval.fid", ["generation", "--pipeline", none, "--data-config", str(run / "config.yaml"),
                                      "--output", str(tmp / "f")], "does not exist"),
        ("fid samples", "eval.fid", ["generation", "--pipeline", none, "--data-config", none, "--output", none,
                                     "--num-samples", "-10"], "--num-samples must be >= 1, got -10"),
        ("fid split", "eval.fid", ["data", "--data-config", str(run / "config.yaml"), "--output", str(tmp / "f"),
                                   "--split", "bogus"], "split must be one of"),
    ]  # fmt: skip


COMMAND_IDS = [case[0] for case in _commands(Path("run"), Path("codes"), Path("tmp"))]


@pytest.mark.parametrize("index", range(len(COMMAND_IDS)), ids=COMMAND_IDS)
def test_a_bad_command_line_ends_with_one_error_line_and_status_2(
    index, tokenizer_runs, tmp_path, monkeypatch
):
    monkeypatch.delenv("HQVAE_TRACEBACK", raising=False)
    (tmp_path / "garbage.pth").write_bytes(b"garbage, not weights")
    run = tokenizer_runs["tiny_sqvae2"]
    _, module, argv, message = _commands(run, run / "codes", tmp_path)[index]
    stderr = io.StringIO()
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(stderr):
        run_cli(importlib.import_module(module).main, argv)
    assert exit_info.value.code == 2
    last = stderr.getvalue().strip().splitlines()[-1]
    assert "error: " in last
    assert re.search(message, last), last
