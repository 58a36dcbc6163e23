"""Sample a grid from a pipeline folder: one row per class.

    python pipelines/sample.py --pipeline runs/fashion_mnist_sqvae2/pipeline --output samples.png \\
        [--labels Sneaker Bag 3] [--per-label 8] [--guidance-scale 2] [--num-inference-steps 8 12] [--num-levels 1]

Without ``--labels`` every class is drawn (or ``--per-label`` images for an unconditional prior).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch


def main(argv=None) -> dict:
    from torchvision.utils import save_image

    from pipelines import HQVAEPipeline

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--output", required=True, help="PNG file")
    parser.add_argument("--labels", nargs="+", default=None, help="class names or ids (default: all classes)")
    parser.add_argument("--per-label", type=int, default=8)
    parser.add_argument(
        "--num-inference-steps",
        type=int,
        nargs="+",
        default=None,
        help="masked priors: one or one per level (12)",
    )
    parser.add_argument("--guidance-scale", type=float, nargs="+", default=[1.0])
    parser.add_argument("--guidance-schedule", default="constant")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--num-levels", type=int, default=None, help="decode from the top levels only")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pipe = HQVAEPipeline.from_pretrained(args.pipeline)
    if torch.cuda.is_available():
        pipe.to("cuda")
    labels = args.labels
    if labels is not None:
        labels = [int(x) if x.isdigit() else x for x in labels]
    elif pipe.num_classes:
        labels = list(range(pipe.num_classes))
    steps = args.num_inference_steps
    kwargs = {  # MaskGIT settings; the RQ-Transformer accepts and ignores them
        "num_inference_steps": steps[0] if steps and len(steps) == 1 else steps,
        "guidance_schedule": args.guidance_schedule,
    }
    scale = args.guidance_scale
    start = time.perf_counter()
    images = pipe(
        class_labels=labels,
        num_images_per_label=args.per_label,
        guidance_scale=scale[0] if len(scale) == 1 else scale,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        num_levels=args.num_levels,
        batch_size=args.batch_size,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="pt",
        **kwargs,
    ).images
    elapsed = time.perf_counter() - start
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    save_image(images, args.output, nrow=args.per_label, padding=1, pad_value=1.0)
    result = {
        "images": len(images),
        "seconds": round(elapsed, 2),
        "images_per_second": round(len(images) / elapsed, 2),
    }
    logging.getLogger("pipelines.sample").info("%s -> %s", result, args.output)
    return result


if __name__ == "__main__":
    main()
