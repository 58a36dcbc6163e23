"""Fingerprints of tiny fixed-seed runs, to show that a refactor changes no behaviour by accident.

    .venv/bin/python scripts/capture_tiny_runs.py capture runs/refactor/before     # on the old commit
    .venv/bin/python scripts/capture_tiny_runs.py capture runs/refactor/after      # on the new one
    .venv/bin/python scripts/capture_tiny_runs.py compare runs/refactor/before runs/refactor/after

Trains (Fashion-MNIST from Debian's files, seconds each): a tiny SQ-VAE-2 with gradient accumulation, EMA,
LPIPS (random backbone), a GAN from step 2 and flips; a tiny RQ-VAE (shared codebook, code reset); a masked
prior (level 1, EMA) and an RQ-Transformer (accumulation) on their codes. ``digest.json`` holds the sha256 of
every final weights file, ``metrics.json`` and the history / validation logs (throughput fields dropped);
``compare`` prints every difference (nothing but "compared" means bit-identical).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

TIMING = ("images_per_second", "items_per_second", "train_images_per_second", "train_seconds",
          "train_items_per_second", "codes_dir")  # fmt: skip


def _digest(run: Path) -> dict:
    weights = {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        for p in sorted(run.rglob("*.safetensors"))
        if "checkpoints" not in p.parts
    }

    def lines(name):
        path = run / name
        rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]

    metrics = {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k not in TIMING}
    return {"weights": weights, "metrics": metrics, "history": lines("history.jsonl"),
            "validation": lines("validation.jsonl")}  # fmt: skip


def capture(out: Path) -> None:
    from prior.extract import main as extract
    from prior.train import main as prior
    from tokenizer.train import main as tokenizer

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    configs = Path(__file__).parents[1] / "configs"
    common = ["data.max_eval_images=64", "data.validation_size=64"]
    tokenizer(["--config", str(configs / "tokenizer/tiny_sqvae2.yaml"), f"output_dir={out}/sq", "optimizer.max_steps=6",
               "optimizer.gradient_accumulation_steps=2", "optimizer.ema_decay=0.9", "losses.adversarial_weight=0.1",
               "losses.adversarial_start_step=2", "losses.perceptual_weight=0.5", "losses.pretrained_lpips=false",
               "data.random_flip=true", *common])  # fmt: skip
    tokenizer(["--config", str(configs / "tokenizer/tiny_rqvae.yaml"), f"output_dir={out}/rq",
               "optimizer.max_steps=5", *common])  # fmt: skip
    for name in ("sq", "rq"):
        extract(["--tokenizer", f"{out}/{name}", "--output", f"{out}/{name}/codes", "--max-items", "2000"])
    prior(["--config", str(configs / "prior/tiny_masked.yaml"), f"data.codes_dir={out}/sq/codes", "level=1",
           f"output_dir={out}/pm", "optimizer.max_steps=6", "optimizer.ema_decay=0.9"])  # fmt: skip
    prior(["--config", str(configs / "prior/tiny_rq.yaml"), f"data.codes_dir={out}/rq/codes", f"output_dir={out}/pr",
           "optimizer.max_steps=6", "optimizer.gradient_accumulation_steps=2"])  # fmt: skip
    digest = {name: _digest(out / name) for name in ("sq", "rq", "pm", "pr")}
    (out / "digest.json").write_text(json.dumps(digest, indent=1, sort_keys=True))


def compare(a, b, path: str = "") -> int:
    """Prints every difference between two digests; returns how many."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sum(
            compare(a[k], b[k], f"{path}/{k}")
            if k in a and k in b
            else print(f"only in one: {path}/{k}") or 1
            for k in sorted(set(a) | set(b))
        )
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return sum(compare(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    if a != b:
        print(f"differs: {path}: {a} != {b}")
        return 1
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "capture":
        capture(Path(argv[1]))
        return 0
    if len(argv) == 3 and argv[0] == "compare":
        digests = [json.loads((Path(p) / "digest.json").read_text()) for p in argv[1:]]
        differences = compare(*digests)
        print("compared:", differences, "differences")
        return 1 if differences else 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    raise SystemExit(main())
