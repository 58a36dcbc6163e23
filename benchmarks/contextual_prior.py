"""Contextual (draft-and-revise) vs autoregressive RQ-Transformer on one residual tokenizer's codes, at equal
training steps: FID, precision / recall and sampling images/s against the sampling compute (issue 17).

    .venv/bin/python benchmarks/contextual_prior.py [--tokenizer RUN] [--prior-steps 1000]
        [--settings 4,4,0 8,4,0 8,4,2 16,4,2 8,8,4] [--samples-per-class 100] [--reference 1000]

Without ``--tokenizer`` it trains configs/tokenizer/fashion_mnist_rsqvae.yaml (3,000 steps, the shipped
RSQ-VAE) into ``<output>/tokenizer``. Both priors are the main job's size (hidden 96, 3 spatial + 1 depth layers,
batch 64, AdamW 1e-3, warm-up a tenth of the steps), trained for ``--prior-steps`` each from the same codes. A
setting "T,R,M" decodes with T draft steps, then M revise rounds of R groups each (the contextual prior does
T + M R passes of its bidirectional stack per image; the RQ-Transformer one KV-cached pass per position).
Every row samples the same class-balanced labels from the same per-image seeds, guidance 2; FID against the
first ``--reference`` test images (Inception pool features, the ``eval/fid.py`` protocol). Sampling images/s is
the wall time of generating the FID samples (batches of 64). Results: ``<output>/results.{json,md}``; a killed
run resumes (finished runs, codes and sample shards are kept).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _tables import MarkdownTable

ROOT = Path(__file__).resolve().parents[1]
PRIOR_SIZE = ["data.batch_size=64", "model.hidden_size=96", "model.spatial_layers=3", "model.depth_layers=1"]
GUIDANCE = 2.0


def parse_setting(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"a setting is T_draft,T_revise,M (e.g. 8,4,2), got {text!r}")
    draft, revise, rounds = map(int, parts)
    if draft < 1 or revise < 1:
        raise argparse.ArgumentTypeError(f"T_draft and T_revise must be >= 1, got {text!r}")
    return draft, revise, rounds


def train_tokenizer(output: Path) -> Path:
    from tokenizer.config import load_config
    from tokenizer.train import TokenizerTrainer, TrainConfig

    config = load_config(TrainConfig, ROOT / "configs/tokenizer/fashion_mnist_rsqvae.yaml",
                         [f"output_dir={output}", "logging.tensorboard=false"])  # fmt: skip
    TokenizerTrainer.train_or_resume(config)
    return output


def train_prior(kind: str, steps: int, codes: Path, output: Path) -> dict:
    from prior.train import PriorTrainConfig, PriorTrainer
    from tokenizer.config import load_config

    overrides = [f"data.codes_dir={codes}", f"output_dir={output}", f"optimizer.max_steps={steps}",
                 f"optimizer.warmup_steps={max(1, steps // 10)}", f"logging.validate_every={steps}",
                 f"logging.checkpoint_every={max(1, steps // 4)}", "logging.tensorboard=false", *PRIOR_SIZE]  # fmt: skip
    config = load_config(
        PriorTrainConfig, ROOT / f"configs/prior/fashion_mnist_rsqvae_{kind}.yaml", overrides
    )
    return PriorTrainer.train_or_resume(config)


def measure(pipe, name: str, sampler: dict, folder: Path, num_samples: int, data, extractor, weights,
            reference: int) -> dict:  # fmt: skip
    """Generates (timed, unless the shards exist from an earlier run) and scores one sampling setting."""
    from eval.fid import generation_fid
    from pipelines.sample import generate_shards

    timing = folder / "sampling_seconds.json"
    if not timing.exists():
        start = time.perf_counter()
        generate_shards(pipe, folder, num_samples, 0, num_samples, 64, sampler)
        timing.write_text(json.dumps({"seconds": time.perf_counter() - start, "images": num_samples}))
    seconds = json.loads(timing.read_text())["seconds"]
    result = generation_fid(pipe, folder, data, "test", num_samples, sampler, extractor, weights, seed=0,
                            shard_size=num_samples, batch_size=64, max_reference=reference,
                            precision_recall_items=min(num_samples, reference))  # fmt: skip
    return {"name": name, "sampler": sampler, "images_per_second": num_samples / seconds, **result}


def main(argv=None) -> list[dict]:
    from eval.inception import InceptionFeatures, resolve_inception_weights
    from pipelines.assemble import assemble_pipeline
    from prior.contextual import DraftAndReviseScheduler
    from prior.extract import extract
    from tokenizer.console import check_counts
    from tokenizer.data import load_data_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokenizer", type=Path, default=None, help="a residual tokenizer run (default: train one)"
    )
    parser.add_argument("--prior-steps", type=int, default=1000)
    parser.add_argument("--settings", type=parse_setting, nargs="+",
                        default=[parse_setting(s) for s in ("4,4,0", "8,4,0", "8,4,2", "16,4,2", "8,8,4")])  # fmt: skip
    parser.add_argument("--samples-per-class", type=int, default=100)
    parser.add_argument("--reference", type=int, default=1000, help="test images of the FID reference")
    parser.add_argument("--output", type=Path, default=Path("runs/benchmarks/contextual_prior"))
    args = parser.parse_args(argv)
    check_counts(parser, args, {"prior_steps": 1, "samples_per_class": 1, "reference": 2})
    weights = resolve_inception_weights()
    out = args.output
    tokenizer = args.tokenizer or train_tokenizer(out / "tokenizer")
    codes = out / "codes"
    if not (codes / "meta.json").exists():
        extract(tokenizer, codes, splits=["train", "validation"])
    data = load_data_config(Path(tokenizer) / "config.yaml")
    extractor = InceptionFeatures(weights)
    table = MarkdownTable(
        f"Priors on the codes of {tokenizer} ({args.prior_steps} training steps each, main-job size), guidance "
        f"{GUIDANCE}; FID of {args.samples_per_class} samples per class against {args.reference} test images",
        [
            "prior",
            "decoding",
            "spatial passes per image",
            "sampling img/s",
            "FID",
            "precision / recall",
            "validation loss (nats)",
        ],  # fmt: skip
    )
    rows = []
    for kind in ("rq", "contextual"):
        prior_dir = out / f"prior_{kind}_{args.prior_steps}"
        prior_metrics = train_prior(kind, args.prior_steps, codes, prior_dir)
        pipe = assemble_pipeline(tokenizer, [prior_dir])
        pipe.set_progress_bar_config(disable=True)
        num_samples = args.samples_per_class * pipe.num_classes
        h, w = pipe.prior.config.height, pipe.prior.config.width
        if kind == "rq":
            settings = [("autoregressive, KV cache", {"guidance_scale": GUIDANCE}, h * w, None)]
        else:
            settings = [
                (
                    f"draft {t} + {m} x revise {r}",
                    {"guidance_scale": GUIDANCE, "num_inference_steps": [t, r]},
                    t + m * r,
                    m,
                )  # fmt: skip
                for t, r, m in args.settings
            ]
        for decoding, sampler, passes, rounds in settings:
            if rounds is not None:  # scheduler settings go through its config (the diffusers way)
                pipe.scheduler = DraftAndReviseScheduler.from_config(
                    pipe.scheduler.config, num_revisions=rounds
                )
            tag = "_".join(str(v) for v in sampler.get("num_inference_steps", [])) + (
                f"_{rounds}" if rounds is not None else ""
            )
            folder = out / f"fid_{kind}_{args.prior_steps}{'_' + tag if tag else ''}"
            result = measure(
                pipe, kind, sampler, folder, num_samples, data, extractor, weights, args.reference
            )
            validation = prior_metrics.get("validation") or {}
            result.update(decoding=decoding, passes=passes, prior_steps=args.prior_steps,
                          validation_loss=validation.get("loss"), parameters=prior_metrics["parameters"])  # fmt: skip
            rows.append(result)
            loss = result["validation_loss"]
            table.emit(
                f"| {'RQ-Transformer' if kind == 'rq' else 'contextual RQ-Transformer'} | {decoding} | {passes} | "
                f"{result['images_per_second']:.1f} | {result['fid']:.1f} | "
                f"{result['precision_recall']['precision']:.2f} / {result['precision_recall']['recall']:.3f} | "
                f"{loss if loss is None else f'{loss:.3f}'} |"
            )
            (out / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    table.save(out / "results.md")
    return rows


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
