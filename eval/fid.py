"""FID, Inception Score and precision/recall with torch-fidelity's Inception and metric code.

    # generation FID of a pipeline's samples against training-set statistics (the paper's protocol:
    # 50,000 class-balanced samples; reference = the training split)
    python eval/fid.py generation --pipeline runs/x/pipeline --data-config runs/x_tokenizer/config.yaml \\
        --split train --num-samples 50000 --output runs/x/fid_gen
    # rFID of a tokenizer: reconstructions of a split against the same split (validation in the paper)
    python eval/fid.py reconstruction --tokenizer runs/x_tokenizer --split validation --output runs/x/rfid
    # sanity checks on data alone: two halves of a split, or a split against uniform noise
    python eval/fid.py data --data-config configs/tokenizer/fashion_mnist_sqvae2.yaml --split test --against halves

Features are torch-fidelity's ``inception-v3-compat`` pool3 (and logits when the weights have them), on uint8
images resized inside the extractor to 299 x 299; the Frechet distance, Inception Score and precision/recall
are torch-fidelity's functions. Reference statistics are cached under ``$HQVAE_CACHE/fid_stats`` keyed by the
whole protocol (data config, split, image size, item count, weights hash). Samples are generated in resumable
shards (``samples-*.npz``: uint8 images, labels, per-image seeds), split across processes under
``accelerate launch``. The result JSON records the protocol.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from eval.inception import FEATURES, LOGITS, InceptionFeatures, cache_dir, resolve_inception_weights
from pipelines.sample import generate_shards, to_uint8
from tokenizer.console import check_counts, progress_bar
from tokenizer.data import dataset_split, load_data_config

logger = logging.getLogger("eval.fid")


# ------------------------------------------------------------------------------------------------------------
# Metrics (torch-fidelity's)
# ------------------------------------------------------------------------------------------------------------
def statistics(features: torch.Tensor) -> dict:
    from torch_fidelity.metric_fid import fid_features_to_statistics

    if features.shape[0] < 2:
        raise ValueError(f"FID statistics need at least 2 images, got {features.shape[0]}")
    return fid_features_to_statistics(features.double())


def frechet_distance(stats_1: dict, stats_2: dict) -> float:
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    return fid_statistics_to_metric(stats_1, stats_2, verbose=False)[KEY_METRIC_FID]


def inception_score(logits: torch.Tensor | None, splits: int = 10) -> dict:
    """torch-fidelity's IS; refuses when the weights have no logits layer (no fake number)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    if logits is None:
        raise ValueError(
            "Inception Score needs the Inception logits layer; these weights (a pool3-only TorchScript export) "
            "have none. Use torch-fidelity's weights file to compute it."
        )
    out = isc_features_to_metric(logits, splits=splits)
    return {"mean": out[KEY_METRIC_ISC_MEAN], "std": out[KEY_METRIC_ISC_STD]}


def precision_recall(features: torch.Tensor, reference: torch.Tensor, neighborhood: int = 3) -> dict:
    from torch_fidelity.metric_prc import calculate_precision_recall_full

    precision, recall = calculate_precision_recall_full(features.float(), reference.float(), neighborhood)
    return {"precision": precision, "recall": recall, "neighborhood": neighborhood}


# ------------------------------------------------------------------------------------------------------------
# Features of datasets and tensors
# ------------------------------------------------------------------------------------------------------------
def extract_features(
    extractor: InceptionFeatures, batches, total: int | None = None, desc: str = "inception"
):
    """Concatenated features and logits (None without logits) of uint8 image batches."""
    features, logits = [], []
    with progress_bar(total=total, desc=desc, unit="img") as progress:
        for images in batches:
            out = extractor(images)
            features.append(out[FEATURES])
            if out[LOGITS] is not None:
                logits.append(out[LOGITS])
            progress.update(images.shape[0])
    return torch.cat(features), (torch.cat(logits) if logits else None)


def float_batches(dataset, indices, batch_size: int):
    """[0, 1] float image batches of ``dataset[indices]`` (bad images skipped)."""
    from tokenizer.data import collate_images

    loader = DataLoader(
        torch.utils.data.Subset(dataset, list(indices)), batch_size=batch_size, collate_fn=collate_images
    )
    for images, _, _ in loader:
        if images is not None:
            yield images


def image_batches(dataset, indices, batch_size: int):
    for images in float_batches(dataset, indices, batch_size):
        yield to_uint8(images)


def protocol_key(protocol: dict) -> str:
    return hashlib.sha256(json.dumps(protocol, sort_keys=True, default=str).encode()).hexdigest()[:20]


def reference_features(
    extractor: InceptionFeatures,
    data_config,
    split: str,
    channels: int,
    max_items: int | None,
    batch_size: int,
    indices=None,
    tag: str = "",
) -> tuple[dict, torch.Tensor, dict]:
    """(statistics, features, protocol) of a dataset split, cached by the protocol."""
    from tokenizer.config import to_dict

    dataset = dataset_split(data_config, split, channels)
    indices = (
        list(range(len(dataset) if max_items is None else min(max_items, len(dataset))))
        if indices is None
        else list(indices)
    )
    protocol = {
        "data": to_dict(data_config),
        "split": split,
        "items": len(indices),
        "first_item": indices[0] if indices else None,
        "tag": tag,
        "image_size": data_config.image_size,
        "inception_sha256": extractor.weights.sha256,
    }
    path = cache_dir() / "fid_stats" / f"{protocol_key(protocol)}.npz"
    if path.exists():
        cached = np.load(path)
        logger.info("reference statistics from cache %s", path)
        return {"mu": cached["mu"], "sigma": cached["sigma"]}, torch.from_numpy(cached["features"]), protocol
    features, _ = extract_features(
        extractor, image_batches(dataset, indices, batch_size), len(indices), f"reference {split}"
    )
    stats = statistics(features)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, mu=stats["mu"], sigma=stats["sigma"], features=features.float().numpy())
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(protocol, indent=2, default=str))
    return stats, features, protocol


# ------------------------------------------------------------------------------------------------------------
# Generated samples in resumable shards
# ------------------------------------------------------------------------------------------------------------
def shard_batches(paths: list[Path], batch_size: int):
    for path in paths:
        images = torch.from_numpy(np.load(path)["images"])
        yield from images.split(batch_size)


# ------------------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------------------
def score_features(
    name: str,
    features: torch.Tensor,
    logits: torch.Tensor | None,
    ref_stats: dict,
    ref_features: torch.Tensor,
    protocol: dict,
    weights,
    inception_score_on: bool = True,
    precision_recall_items: int | None = 10000,
    seed: int = 0,
) -> dict:
    """The result of one FID measurement: FID against the reference statistics, optionally the Inception Score
    and precision / recall on up to ``precision_recall_items`` items per side (None: skipped), and the protocol
    (with the Inception weights used)."""
    result = {
        "metric": name,
        "fid": frechet_distance(statistics(features), ref_stats),
        "num_samples": len(features),
    }
    if inception_score_on:
        try:
            result["inception_score"] = inception_score(logits)
        except ValueError as error:
            result["inception_score"] = None
            result["inception_score_note"] = str(error)
    if precision_recall_items is not None:
        n = min(precision_recall_items, len(features), len(ref_features))
        result["precision_recall"] = {**precision_recall(features[:n], ref_features[:n]), "items": n}
    result["protocol"] = {**protocol, "inception": weights.to_dict(), "seed": seed}
    return result


def _score(name, features, logits, ref_stats, ref_features, protocol, args, weights) -> dict:
    """``score_features`` with the command line's options."""
    items = args.pr_items if args.precision_recall else None
    return score_features(
        name,
        features,
        logits,
        ref_stats,
        ref_features,
        protocol,
        weights,
        args.inception_score,
        items,
        args.seed,
    )


def generation_fid(
    pipe,
    output: Path,
    data,
    split: str,
    num_samples: int,
    sampler: dict,
    extractor,
    weights,
    seed: int = 0,
    shard_size: int = 1000,
    batch_size: int = 64,
    max_reference: int | None = None,
    inception_score_on: bool = True,
    precision_recall_items: int | None = 10000,
) -> dict:
    """Generation FID of a pipeline: class-balanced samples (``pipelines.sample.generate_shards``, resumable
    shards under ``output``) against the statistics of ``split`` of the data config ``data``."""
    paths = generate_shards(pipe, Path(output), num_samples, seed, shard_size, batch_size, sampler)
    features, logits = extract_features(extractor, shard_batches(paths, batch_size), num_samples, "samples")
    ref_stats, ref_features, ref_protocol = reference_features(
        extractor, data, split, pipe.hqvae.config.in_channels, max_reference, batch_size
    )
    protocol = {
        "kind": "generation FID: pipeline samples against the reference split's statistics",
        "reference": ref_protocol,
        "samples": num_samples,
        "class_balanced": pipe.num_classes > 0,
        "sampler": sampler,
        "resize": f"generated at the tokenizer's resolution, {data.image_size}x{data.image_size} for the reference; "
        "both resized to 299x299 by torch-fidelity's TF-compatible bilinear resize",
    }
    return score_features(
        "generation", features, logits, ref_stats, ref_features, protocol, weights, inception_score_on,
        precision_recall_items, seed,
    )  # fmt: skip


def run_generation(args, extractor, weights) -> dict:
    from pipelines import HQVAEPipeline

    pipe = HQVAEPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    sampler = {
        k: v
        for k, v in {
            "num_inference_steps": args.num_inference_steps,
            "guidance_scale": args.guidance_scale,
            "guidance_schedule": args.guidance_schedule,
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
        }.items()
        if v is not None
    }
    result = generation_fid(
        pipe, Path(args.output) / "samples", load_data_config(args.data_config), args.split, args.num_samples,
        sampler, extractor, weights, args.seed, args.shard_size, args.batch_size, args.max_reference,
        args.inception_score, args.pr_items if args.precision_recall else None,
    )  # fmt: skip
    result["protocol"]["pipeline"] = str(Path(args.pipeline).resolve())
    return result


def run_reconstruction(args, extractor, weights) -> dict:
    from tokenizer.model import HQVAE
    from tokenizer.runs import tokenizer_and_data

    model_dir, data = tokenizer_and_data(args.tokenizer, args.weights, args.data_config)
    model = HQVAE.from_pretrained(model_dir).eval()
    dataset = dataset_split(data, args.split, model.config.in_channels)
    count = len(dataset) if args.max_reference is None else min(args.max_reference, len(dataset))

    def reconstructions():
        for images in float_batches(dataset, range(count), args.batch_size):
            with torch.no_grad():
                yield to_uint8(model(images).sample)

    features, logits = extract_features(extractor, reconstructions(), count, "reconstructions")
    ref_stats, ref_features, ref_protocol = reference_features(
        extractor, data, args.split, model.config.in_channels, args.max_reference, args.batch_size
    )
    protocol = {
        "kind": "rFID: reconstructions (argmax codes) of the split against the same split",
        "tokenizer": str(Path(model_dir).resolve()),
        "reference": ref_protocol,
        "resize": f"{data.image_size}x{data.image_size}, resized to 299x299 by torch-fidelity",
    }
    return _score("reconstruction", features, logits, ref_stats, ref_features, protocol, args, weights)


def run_data(args, extractor, weights) -> dict:
    data = load_data_config(args.data_config)
    channels = args.channels
    dataset = dataset_split(data, args.split, channels)
    count = len(dataset) if args.max_reference is None else min(args.max_reference, len(dataset))
    if args.against == "halves":
        half = count // 2
        first = reference_features(
            extractor, data, args.split, channels, None, args.batch_size, range(half), ""
        )
        second = reference_features(
            extractor, data, args.split, channels, None, args.batch_size, range(half, 2 * half), "second half"
        )
        features, logits = second[1], None
        ref_stats, ref_features, ref_protocol = first
        kind = f"data: second half of {args.split} ({half}) against its first half ({half})"
    else:
        ref_stats, ref_features, ref_protocol = reference_features(
            extractor, data, args.split, channels, count, args.batch_size
        )
        generator = torch.Generator().manual_seed(args.seed)
        noise = torch.randint(
            0,
            256,
            (count, channels, data.image_size, data.image_size),
            generator=generator,
            dtype=torch.uint8,
        )
        features, logits = extract_features(extractor, noise.split(args.batch_size), count, "noise")
        kind = f"data: uniform noise ({count}) against {args.split} ({count})"
    protocol = {"kind": kind, "reference": ref_protocol}
    return _score("data", features, logits, ref_stats, ref_features, protocol, args, weights)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output", required=True, help="folder for result.json (and samples)")
    common.add_argument("--inception-weights", default=None, help="torch-fidelity .pth or TorchScript export")
    common.add_argument("--split", default="train", help="reference split (train / validation / test)")
    common.add_argument(
        "--max-reference", type=int, default=None, help="use only the first N reference items"
    )
    common.add_argument("--batch-size", type=int, default=64)
    common.add_argument("--seed", type=int, default=0)
    common.add_argument("--inception-score", action=argparse.BooleanOptionalAction, default=True)
    common.add_argument("--precision-recall", action=argparse.BooleanOptionalAction, default=True)
    common.add_argument("--pr-items", type=int, default=10000, help="items per side for precision/recall")
    gen = sub.add_parser("generation", parents=[common], help="FID of a pipeline's samples")
    gen.add_argument("--pipeline", required=True)
    gen.add_argument("--data-config", required=True, help="YAML with the reference data: section")
    gen.add_argument("--num-samples", type=int, default=50000)
    gen.add_argument("--shard-size", type=int, default=1000)
    gen.add_argument("--num-inference-steps", type=int, nargs="+", default=None)
    gen.add_argument("--guidance-scale", type=float, nargs="+", default=None)
    gen.add_argument("--guidance-schedule", default=None)
    gen.add_argument("--temperature", type=float, default=None)
    gen.add_argument("--top-k", type=int, default=None)
    gen.add_argument("--top-p", type=float, default=None)
    rec = sub.add_parser("reconstruction", parents=[common], help="rFID of a tokenizer")
    rec.add_argument(
        "--tokenizer", required=True, help="tokenizer run folder (or model folder + --data-config)"
    )
    rec.add_argument("--weights", default="model", help="model, model_ema or model_best (logging.keep_best)")
    rec.add_argument("--data-config", default=None)
    data = sub.add_parser("data", parents=[common], help="sanity checks: split halves, or noise")
    data.add_argument("--data-config", required=True)
    data.add_argument("--against", choices=["halves", "noise"], default="halves")
    data.add_argument("--channels", type=int, choices=[1, 3], default=1)
    args = parser.parse_args(argv)
    check_counts(
        parser,
        args,
        dict.fromkeys(("max_reference", "batch_size", "pr_items", "num_samples", "shard_size"), 1),
    )
    for name in ("num_inference_steps", "guidance_scale"):
        value = getattr(args, name, None)
        if isinstance(value, list) and len(value) == 1:
            setattr(args, name, value[0])
    return args


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    weights = resolve_inception_weights(args.inception_weights)
    extractor = InceptionFeatures(weights)
    run = {"generation": run_generation, "reconstruction": run_reconstruction, "data": run_data}[args.command]
    result = run(args, extractor, weights)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "result.json").write_text(json.dumps(result, indent=2, default=str))
    logger.info(
        "%s FID %.3f over %d samples -> %s",
        args.command,
        result["fid"],
        result["num_samples"],
        output / "result.json",
    )
    return result


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
