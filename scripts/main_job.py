"""The main job: the whole two-stage system on Fashion-MNIST, on CPU, in one command (``bash scripts/main.sh``).

    tokenizer -> codes -> prior(s) -> HQVAEPipeline -> samples of every class -> evaluation -> report/

``--model sqvae2`` (default): SQ-VAE-2 (4x4 + 8x8, K 512) + one Muse prior per level.
``--model rsqvae``: RSQ-VAE (8x8 x 4, K 64) + an RQ-Transformer.
Beside the stochastic tokenizer it trains its deterministic twin (VQ-VAE-2 / RQ-VAE, same architecture, data,
optimiser, steps and seed) and the report says which reconstructs better at this budget.

Every stage is skipped when its output exists and resumes from its last checkpoint when it was killed, so
rerunning the command after an interruption continues where it stopped; ``<output>/timings.json`` keeps the
time of the invocation that did each stage's work (a rerun's time is recorded separately). Budgets are sized
for ~20 minutes on 2 idle cores (state them with any result); ``--scale`` multiplies every step budget and
the FID sample and reference counts (e.g. 0.01 for a smoke run). Writes ``<output>/report/``:
``summary.md`` (one screen), ``metrics.json``, ``samples.png`` (a labelled row per class),
``reconstructions.png`` (test images above their reconstructions), ``training_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # main_report, also when imported by the tests

from main_report import StageClock, machine, save_sample_grid, save_test_reconstructions, summary  # noqa: E402

logger = logging.getLogger("main_job")

# step budgets and sizes chosen so that the whole job fits ~20 minutes on 2 CPU cores (19 min 42 s measured)
PLANS = {
    "sqvae2": {
        "names": ("SQ-VAE-2", "Muse priors (one per level)"),
        "tokenizer": ("configs/tokenizer/fashion_mnist_sqvae2.yaml", 3000),
        # the config's own slow tau (the paper's r = 1e-5), with which its k-means + noise codes were measured over
        # 3 seeds (docs/sq_vs_vq.md 11e)
        "final_temperature": None,
        # the deterministic twin (same architecture, data, optimiser, steps, seed, k-means codes; the codebook
        # noise that helps SQ-VAE-2 makes VQ-VAE-2 worse, so the twin keeps its best start)
        "twin": ("configs/tokenizer/fashion_mnist_vqvae2.yaml", "VQ-VAE-2"),
        "priors": [
            ("configs/prior/fashion_mnist_sqvae2_level0.yaml", 800, ["data.batch_size=128"]),
            (
                "configs/prior/fashion_mnist_sqvae2_level1.yaml",
                800,
                ["data.batch_size=64", "model.num_layers=3"],
            ),
        ],
        "sampler": {"num_inference_steps": [8, 12], "guidance_scale": 2.0, "guidance_schedule": "linear"},
    },
    "rsqvae": {
        "names": ("RSQ-VAE", "RQ-Transformer"),
        "tokenizer": ("configs/tokenizer/fashion_mnist_rsqvae.yaml", 3000),
        "final_temperature": 0.3,  # the setting behind the README's RSQ-VAE main-job numbers
        "twin": ("configs/tokenizer/fashion_mnist_rqvae.yaml", "RQ-VAE"),
        "priors": [
            (
                "configs/prior/fashion_mnist_rsqvae_rq.yaml",
                500,
                [
                    "data.batch_size=64",
                    "model.hidden_size=96",
                    "model.spatial_layers=3",
                    "model.depth_layers=1",
                ],
            ),
        ],  # fmt: skip
        "sampler": {"guidance_scale": 2.0},
    },
}
# --prior contextual (RSQ-VAE only): the contextual (draft-and-revise) RQ-Transformer at the RQ-Transformer's size
# and budget, 8 draft steps and 2 revise rounds of 4 groups
CONTEXTUAL = {
    "names": ("RSQ-VAE", "contextual RQ-Transformer"),
    "priors": [("configs/prior/fashion_mnist_rsqvae_contextual.yaml", 500, PLANS["rsqvae"]["priors"][0][2])],
    "sampler": {"guidance_scale": 2.0, "num_inference_steps": [8, 4]},
}


def plan_of(model: str, prior: str) -> dict:
    if prior == "default":
        return PLANS[model]
    if model != "rsqvae":
        raise ValueError(f"--prior {prior} models residual code stacks: it needs --model rsqvae, got {model}")
    return {**PLANS[model], **CONTEXTUAL}


def tokenizer_config(config: str, steps: int, out: Path, extra: list[str], final_temperature: float | None):
    """The strict tokenizer config of a stage (``final_temperature``: tau's value at the last step whatever the
    budget; None keeps the config's own decay): a bad override fails here."""
    from tokenizer.config import load_config
    from tokenizer.train import TrainConfig

    overrides = [f"output_dir={out}", f"optimizer.max_steps={steps}"]
    if final_temperature is not None:
        overrides.append(f"optimizer.final_temperature={final_temperature}")
    return load_config(TrainConfig, ROOT / config, overrides + list(extra))


def train_tokenizer(
    config: str, steps: int, out: Path, extra: list[str], final_temperature: float | None
) -> None:
    """Trains (or resumes, or reads back) a tokenizer."""
    from tokenizer.train import TokenizerTrainer

    TokenizerTrainer.train_or_resume(tokenizer_config(config, steps, out, extra, final_temperature))


def train_prior(config: str, steps: int, overrides: list[str], codes: Path, out: Path) -> None:
    from prior.train import PriorTrainConfig, PriorTrainer
    from tokenizer.config import load_config

    overrides = [f"data.codes_dir={codes}", f"output_dir={out}", f"optimizer.max_steps={steps}",
                 f"optimizer.warmup_steps={max(1, steps // 10)}", f"logging.validate_every={steps}",
                 f"logging.checkpoint_every={max(1, steps // 4)}", *overrides]  # fmt: skip
    PriorTrainer.train_or_resume(load_config(PriorTrainConfig, ROOT / config, overrides))


def run(
    model: str,
    output: Path,
    scale: float = 1.0,
    samples_per_class: int | None = None,
    fid_items: int | None = None,
    tokenizer_overrides: list[str] = (),
    prior_overrides: list[str] = (),
    prior: str = "default",
) -> dict:
    import torch

    from eval.reconstruction import evaluate_tokenizer
    from eval.training_curves import plot_training_curves
    from pipelines import HQVAEPipeline
    from pipelines.assemble import assemble_pipeline
    from prior.extract import extract

    if not scale > 0:
        raise ValueError(f"--scale must be > 0, got {scale}")
    plan = plan_of(model, prior)
    for config_file in (
        plan["tokenizer"][0],
        plan["twin"][0],
    ):  # bad overrides fail before anything is written
        tokenizer_config(
            config_file, 2, output / "check", list(tokenizer_overrides), plan["final_temperature"]
        )
    output.mkdir(parents=True, exist_ok=True)
    stage = StageClock(output)
    report = output / "report"
    report.mkdir(exist_ok=True)
    # FID counts follow the budget (at least 2 samples per class, 20 reference images) unless given
    samples_per_class = samples_per_class or max(2, round(50 * scale))
    fid_items = fid_items or max(20, round(500 * scale))

    def steps(n: int) -> int:
        return max(2, int(round(n * scale)))

    config, tokenizer_steps = plan["tokenizer"]
    tokenizer_dir = output / "tokenizer"
    with stage("tokenizer", logger):
        train_tokenizer(
            config,
            steps(tokenizer_steps),
            tokenizer_dir,
            list(tokenizer_overrides),
            plan["final_temperature"],
        )
    twin_config, twin_name = plan["twin"]
    twin_dir = output / "vq_twin"
    with stage("VQ twin tokenizer", logger):
        # Same budget and overrides: the report states plainly which of the two reconstructs better here.
        train_tokenizer(
            twin_config,
            steps(tokenizer_steps),
            twin_dir,
            list(tokenizer_overrides),
            plan["final_temperature"],
        )
    codes = output / "codes"
    with stage("extract codes", logger):
        extract(tokenizer_dir, codes, splits=["train", "validation"])
    prior_dirs = []
    for level, (prior_config, prior_steps, overrides) in enumerate(plan["priors"]):
        prior_dir = output / f"prior_{level}"
        with stage(f"prior {level}", logger):
            extra = [*overrides, *prior_overrides] + ([f"level={level}"] if model == "sqvae2" else [])
            train_prior(prior_config, steps(prior_steps), extra, codes, prior_dir)
        prior_dirs.append(prior_dir)
    with stage("assemble pipeline", logger):
        pipe = assemble_pipeline(tokenizer_dir, prior_dirs)
        pipe.save_pretrained(output / "pipeline")
        pipe = HQVAEPipeline.from_pretrained(output / "pipeline")
        pipe.set_progress_bar_config(disable=True)
    with stage("sample every class", logger):
        labels = list(range(pipe.num_classes))
        grid = pipe(class_labels=labels, num_images_per_label=8, generator=torch.Generator().manual_seed(0),
                    output_type="pt", **plan["sampler"]).images  # fmt: skip
        save_sample_grid(pipe, grid, pipe.class_ids(labels, 8), report / "samples.png", plan["sampler"])
    with stage("reconstruction metrics", logger):
        reconstruction = evaluate_tokenizer(tokenizer_dir, "test", lpips=True)
        save_test_reconstructions(tokenizer_dir, report / "reconstructions.png")
        names = {plan["names"][0]: tokenizer_dir, twin_name: twin_dir}
        plot_training_curves(names, report / "training_curves.png")
    with stage("FID", logger):
        fid = sample_fid(pipe, output, plan["sampler"], samples_per_class, fid_items)
    metrics = {
        "model": model,
        "tokenizer_name": plan["names"][0],
        "prior_name": plan["names"][1],
        "budget": {
            "tokenizer_steps": steps(tokenizer_steps),
            "prior_steps": [steps(p[1]) for p in plan["priors"]],
            "scale": scale,
            "fid_samples_per_class": samples_per_class,
            "fid_reference_items": fid_items,
        },
        "machine": machine(),
        "tokenizer": json.loads((tokenizer_dir / "metrics.json").read_text()),
        "vq_twin": {"name": twin_name, **json.loads((twin_dir / "metrics.json").read_text())},
        "reconstruction_test": reconstruction,
        "priors": [json.loads((d / "metrics.json").read_text()) for d in prior_dirs],
        "sampler": plan["sampler"],
        "fid": fid,
        "timings_seconds": stage.stages,
        "total_seconds": round(sum(stage.stages.values()), 1),
        "reruns": stage.reruns,
        "paths": {
            "output": str(output),
            "pipeline": str(output / "pipeline"),
            "tokenizer": str(tokenizer_dir),
            "vq_twin": str(twin_dir),
            "report": str(report),
        },
    }
    (report / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    (report / "summary.md").write_text(summary(metrics))
    return metrics


def sample_fid(pipe, output: Path, sampler: dict, samples_per_class: int, items: int) -> dict | None:
    """FID of class-balanced samples against the first ``items`` test images, when Inception weights exist."""
    from eval.fid import generation_fid
    from eval.inception import InceptionFeatures, resolve_inception_weights
    from tokenizer.data import load_data_config

    try:
        weights = resolve_inception_weights()
    except FileNotFoundError as error:
        logger.warning("FID skipped: %s", error)
        return {"skipped": str(error)}
    num = samples_per_class * max(pipe.num_classes, 1)
    data = load_data_config(output / "tokenizer" / "config.yaml")
    return generation_fid(
        pipe, output / "fid_samples", data, "test", num, sampler, InceptionFeatures(weights), weights, seed=0,
        shard_size=num, batch_size=64, max_reference=items, precision_recall_items=min(num, items),
    )  # fmt: skip


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(PLANS), default="sqvae2")
    parser.add_argument(
        "--prior",
        choices=["default", "contextual"],
        default="default",
        help="contextual: the draft-and-revise RQ-Transformer (with --model rsqvae)",
    )
    parser.add_argument("--output", default=None, help="default runs/main_<model>[_contextual]")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiplies every step budget and the FID counts"
    )
    parser.add_argument(
        "--samples-per-class", type=int, default=None, help="samples per class for FID (50 x scale, >= 2)"
    )
    parser.add_argument(
        "--fid-items", type=int, default=None, help="test images for the FID reference (500 x scale, >= 20)"
    )
    parser.add_argument(
        "--tokenizer-override", action="append", default=[], help="key=value for the tokenizer"
    )
    parser.add_argument("--prior-override", action="append", default=[], help="key=value for every prior")
    args = parser.parse_args(argv)
    for name in ("samples_per_class", "fid_items"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    plan_of(args.model, args.prior)  # a bad combination fails before anything is written
    suffix = "" if args.prior == "default" else f"_{args.prior}"
    output = Path(args.output or f"runs/main_{args.model}{suffix}")
    metrics = run(
        args.model, output, args.scale, args.samples_per_class, args.fid_items,
        args.tokenizer_override, args.prior_override, args.prior,
    )  # fmt: skip
    logging.shutdown()  # flush the log first: the report's path is the last line
    print(
        f"[main] done in {metrics['total_seconds']:.0f} s of work: the report is {Path(metrics['paths']['report']).resolve()}/summary.md"
    )
    return metrics


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
