"""Reconstruction metrics of a tokenizer over a dataset split (the paper's Table 1 columns):

    python eval/reconstruction.py --tokenizer runs/fashion_mnist_sqvae2 --split test --output runs/x/recon.json

RMSE, PSNR, SSIM, LPIPS (when the VGG16 weights exist; see README) and, per layer, the codebook perplexity
exp(H(Q(Z_l))) of the argmax codes over the whole split and the number of distinct codes used
(``tokenizer.metrics.evaluate_reconstruction``). The data and preprocessing come from the run's config.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tokenizer.console import check_counts

logger = logging.getLogger("eval.reconstruction")


def evaluate_tokenizer(
    tokenizer: str | Path,
    split: str = "test",
    weights: str = "model",
    data_config: str | Path | None = None,
    batch_size: int = 256,
    max_images: int | None = None,
    lpips: bool = True,
    vgg16_path: str | None = None,
) -> dict:
    from tokenizer.data import collate_images, dataset_split
    from tokenizer.losses import PerceptualLoss
    from tokenizer.metrics import evaluate_reconstruction
    from tokenizer.model import HQVAE
    from tokenizer.runs import tokenizer_and_data

    model_dir, data = tokenizer_and_data(tokenizer, weights, data_config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = HQVAE.from_pretrained(model_dir).to(device).eval()
    dataset = dataset_split(data, split, model.config.in_channels)
    perceptual, lpips_note = None, None
    if lpips:
        try:
            perceptual = PerceptualLoss(vgg16_path=vgg16_path).to(device)
        except (FileNotFoundError, RuntimeError, OSError) as error:
            lpips_note = f"LPIPS not measured: {error}"
    metrics = evaluate_reconstruction(
        model,
        DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images),
        device=device,
        perceptual=perceptual,
        max_images=max_images,
        progress=True,
        value_range=data.value_range,
    )
    result = {
        "tokenizer": str(Path(model_dir).resolve()),
        "split": split,
        **metrics.to_dict(),
        "codebook_sizes": list(model.codebook_sizes),
        "latent_shapes": model.latent_shapes(data.image_size, data.image_size),
        "quantization": "argmax",
    }
    if lpips_note:
        result["lpips_note"] = lpips_note
    return result


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tokenizer", required=True, help="tokenizer run folder (or model folder + --data-config)"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--weights", default="model", help="model, model_ema or model_best (logging.keep_best)"
    )
    parser.add_argument("--data-config", default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--no-lpips", action="store_true")
    parser.add_argument("--vgg16-path", default=None)
    parser.add_argument("--output", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    check_counts(parser, args, dict(batch_size=1, max_images=1))
    result = evaluate_tokenizer(
        args.tokenizer, args.split, args.weights, args.data_config, args.batch_size, args.max_images,
        not args.no_lpips, args.vgg16_path,
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
