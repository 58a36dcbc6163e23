"""Assembles a pipeline folder from a tokenizer run and prior run(s):

    python pipelines/assemble.py --tokenizer runs/fashion_mnist_sqvae2 \\
        --priors runs/fashion_mnist_sqvae2/prior_level0 runs/fashion_mnist_sqvae2/prior_level1 \\
        --output runs/fashion_mnist_sqvae2/pipeline

Masked priors are given one per level (any order; their ``codes_meta.json`` says which); an RQ-Transformer is
one prior run. Checks that every prior was trained on codes of this tokenizer and that the levels, codebook
sizes and code shapes fit, then writes ``HQVAEPipeline.save_pretrained`` (weights, configs, model card).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipelines.pipeline_hqvae import HQVAEPipeline
from prior.contextual import ContextualRQTransformer, DraftAndReviseScheduler
from prior.masked import MaskedPriorStack, MaskedTokenTransformer
from prior.rq_transformer import RQTransformer
from prior.scheduler import MaskedTokenScheduler
from tokenizer.model import HQVAE
from tokenizer.runs import resolve_tokenizer

logger = logging.getLogger("pipelines.assemble")


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def assemble_pipeline(
    tokenizer: str | Path,
    priors: list[str | Path],
    tokenizer_weights: str = "model",
    prior_weights: str = "model",
) -> HQVAEPipeline:
    """An ``HQVAEPipeline`` from a tokenizer run (or model folder) and prior run folders."""
    model_dir, _ = resolve_tokenizer(tokenizer, tokenizer_weights)
    hqvae = HQVAE.from_pretrained(model_dir).eval()
    metas = []
    for run in map(Path, priors):
        meta = _read_json(run / "codes_meta.json")
        if meta is None:
            raise FileNotFoundError(f"{run} is not a finished prior run (no codes_meta.json)")
        if Path(meta["tokenizer"]).resolve() != Path(model_dir).resolve():
            raise ValueError(
                f"{run} was trained on codes of {meta['tokenizer']}, not of {Path(model_dir).resolve()}: "
                "its codes would mean other things"
            )
        metas.append((run, meta))
    kinds = {meta["prior"] for _, meta in metas}
    if len(kinds) != 1:
        raise ValueError(
            f"mixing prior kinds {sorted(kinds)}: give masked priors (one per level) or one (contextual) RQ prior"
        )
    if kinds == {"rq"}:
        if len(metas) != 1:
            raise ValueError(f"give one RQ-Transformer run, got {len(metas)}")
        prior = RQTransformer.from_pretrained(metas[0][0] / prior_weights)
        scheduler = None
    elif kinds == {"contextual"}:
        if len(metas) != 1:
            raise ValueError(f"give one contextual RQ-Transformer run, got {len(metas)}")
        prior = ContextualRQTransformer.from_pretrained(metas[0][0] / prior_weights)
        scheduler = DraftAndReviseScheduler.from_pretrained(metas[0][0] / "scheduler")
    else:
        metas.sort(key=lambda item: item[1]["level"])
        levels = [meta["level"] for _, meta in metas]
        if levels != list(range(hqvae.num_layers)):
            raise ValueError(
                f"need one masked prior per level 0..{hqvae.num_layers - 1}, got levels {levels}"
            )
        prior = MaskedPriorStack.from_priors(
            [MaskedTokenTransformer.from_pretrained(run / prior_weights) for run, _ in metas]
        )
        scheduler = MaskedTokenScheduler.from_pretrained(metas[0][0] / "scheduler")
    names = metas[0][1].get("label_names") or []
    root = Path(tokenizer)
    metadata = {
        "data": (_read_json(root / "codes_meta.json") or {}).get("data")
        or (json.loads(Path(metas[0][1]["codes_dir"], "meta.json").read_text()).get("data")),
        "tokenizer": {"path": str(Path(model_dir).resolve()), "metrics": _read_json(root / "metrics.json")},
        "priors": [
            {
                "path": str(run.resolve()),
                "level": meta.get("level"),
                "metrics": _read_json(run / "metrics.json"),
            }
            for run, meta in metas
        ],
        "sampling_used_in_training_grids": metas[-1][1].get("sampling"),
    }
    return HQVAEPipeline(
        hqvae=hqvae,
        prior=prior.eval(),
        scheduler=scheduler,
        id2label={i: name for i, name in enumerate(names)} or None,
        metadata=metadata,
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenizer", required=True, help="tokenizer run folder (or model folder)")
    parser.add_argument("--priors", nargs="+", required=True, help="prior run folder(s)")
    parser.add_argument("--output", required=True, help="pipeline folder to write")
    parser.add_argument("--tokenizer-weights", default="model", help="model or model_ema")
    parser.add_argument("--prior-weights", default="model", help="model or model_ema")
    return parser.parse_args(argv)


def main(argv=None) -> HQVAEPipeline:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    pipe = assemble_pipeline(args.tokenizer, args.priors, args.tokenizer_weights, args.prior_weights)
    pipe.save_pretrained(args.output)
    logger.info("wrote %s", args.output)
    return pipe


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
