"""Linear probe of a tokenizer's codes (the VQ notes' "downstream task performance"): the classification
accuracy of a linear (softmax regression) classifier trained on the frozen code embeddings of the argmax
codes, every layer's code vectors concatenated, reported beside the reconstruction metrics.

    python eval/linear_probe.py --tokenizer runs/main_sqvae2/tokenizer --train-items 10000 --output probe.json

The classifier is trained on ``--train-items`` images of the train split (features standardised with the
training statistics; AdamW, full passes, a fixed seed) and scored on the test split. The same protocol for every
tokenizer makes the accuracies comparable; they are not comparable with probes on continuous features.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from tokenizer.console import check_counts

logger = logging.getLogger("eval.linear_probe")


@torch.no_grad()
def code_features(model, dataset, batch_size: int = 256, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, sum_l d_b h_l w_l), labels (N,)): every layer's argmax code vectors, flattened."""
    from tokenizer.console import progress_bar
    from tokenizer.data import collate_images

    features, labels = [], []
    for batch in progress_bar(DataLoader(dataset, batch_size=batch_size, collate_fn=collate_images),
                              desc="code features", leave=False):  # fmt: skip
        images, targets = batch[0].to(device), batch[1]
        codes = model.indices_to_codes(model.encode(images))
        features.append(torch.cat([c.flatten(1) for c in codes], 1).float().cpu())
        labels.append(torch.as_tensor(targets).long())
    return torch.cat(features), torch.cat(labels)


def train_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    epochs: int = 30,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor]:
    """Softmax regression on standardised features: (classifier, mean, std)."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    x = (train_x - mean) / std
    classifier = torch.nn.Linear(x.shape[1], num_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        classifier.reset_parameters()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=learning_rate, weight_decay=weight_decay)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            loss = torch.nn.functional.cross_entropy(classifier(x[rows]), train_y[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return classifier, mean, std


def linear_probe(
    tokenizer: str | Path,
    train_items: int = 10000,
    test_items: int | None = None,
    weights: str = "model",
    epochs: int = 30,
    seed: int = 0,
) -> dict:
    from tokenizer.data import dataset_split
    from tokenizer.model import HQVAE
    from tokenizer.runs import tokenizer_and_data

    if train_items < 2 or epochs < 1:
        raise ValueError(f"need --train-items >= 2 and --epochs >= 1, got {train_items}, {epochs}")
    model_dir, data = tokenizer_and_data(tokenizer, weights)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = HQVAE.from_pretrained(model_dir).to(device).eval()
    splits = {}
    for split, count in (("train", train_items), ("test", test_items)):
        dataset = dataset_split(data, split, model.config.in_channels)
        if count is not None:
            dataset = Subset(dataset, range(min(count, len(dataset))))
        splits[split] = code_features(model, dataset, device=device)
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    if (train_y < 0).any() or (test_y < 0).any():
        raise ValueError(f"{tokenizer}: the linear probe needs labelled train and test splits")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    shapes = model.latent_shapes(data.image_size, data.image_size)
    classifier, mean, std = train_probe(train_x, train_y, num_classes, epochs=epochs, seed=seed)
    with torch.no_grad():
        train_accuracy = (classifier((train_x - mean) / std).argmax(-1) == train_y).float().mean()
        test_accuracy = (classifier((test_x - mean) / std).argmax(-1) == test_y).float().mean()
    return {
        "tokenizer": str(Path(model_dir).resolve()),
        "test_accuracy": round(float(test_accuracy), 4),
        "train_accuracy": round(float(train_accuracy), 4),
        "chance": round(1 / num_classes, 4),
        "feature_dim": train_x.shape[1],
        "train_items": len(train_x),
        "test_items": len(test_x),
        "epochs": epochs,
        "seed": seed,
        "bits_per_image": round(
            sum(h * w * math.log2(k) for (h, w), k in zip(shapes, model.codebook_sizes)), 1
        ),
    }


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="tokenizer run folder")
    parser.add_argument(
        "--weights", default="model", help="model, model_ema or model_best (logging.keep_best)"
    )
    parser.add_argument("--train-items", type=int, default=10000)
    parser.add_argument("--test-items", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    check_counts(parser, args, dict(test_items=1, epochs=1))
    result = linear_probe(
        args.tokenizer, args.train_items, args.test_items, args.weights, args.epochs, args.seed
    )
    logger.info("linear probe test accuracy %.4f (chance %.2f)", result["test_accuracy"], result["chance"])
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
