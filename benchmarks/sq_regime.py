"""Where does stochastic quantization beat VQ? SQ-VAE-2 against its VQ-VAE-2 twins across rate regimes.

    .venv/bin/python benchmarks/sq_regime.py --steps 3000 --seeds 0 [--cells ...] [--variants ...]

The SQ objective (eq. 6) pays for information in its KL term, at most KL_max = sum_l d_l log K_l nats per image,
while an e-fold cut of the MSE is worth D/2 nats (ML decoder variance). ``rho`` = (D/2) / KL_max
(``HQVAE.rate_regime``) is changed here by real means: image size and channels (Fashion-MNIST 32x32, RGB
photograph patches at 32x32 and 64x64, from ``benchmarks/photo_patches.py``), the number of latent positions,
the codebook size and a three-level hierarchy; the ``*_8x8x4_k8_shared`` cells are residual (RSQ-VAE against
RQ-VAE) with the audio benchmark's K = 8 codebook shared by 4 depths; the ``fmnist32rgb_*`` cells repeat
Fashion-MNIST's grey value in 3 channels (same content, rho x 3: a test of the rate argument at fixed
content). Every cell trains the same architecture,
data, optimiser (Adam lr 1e-3, betas (0.9, 0.9)), batch 32, step budget and seeds for each variant:

- ``sq``: SQ-VAE-2 with N(0, 1) codes and s^2 init 3; ``sq_data``: k-means codes from the first batch and s^2
  init 0.03 (``docs/sq_vs_vq.md``); both with tau = exp(-r t) decaying to ``--final-temperature`` (0.3);
- ``vq`` / ``vq_data``: VQ-VAE-2 (eq. 7, beta 0.25, EMA 0.99) with the same two codebook initialisations;
- ``vq_reset``: VQ-VAE-2 + code reset (EMA count below 1), the strongest heuristic baseline.

Per cell the table gives the ratios of mean test RMSE SQ / VQ at each initialisation and the better SQ over
VQ + reset, then per variant the test RMSE (mean ± std over seeds), per-layer perplexity and codes used, the
measured test KL next to KL_max, and SQ's final s^2 and entropy. Results (``results.json``, ``results.md``, ``regime.png``: the ratios
against rho) land in ``runs/benchmarks/sq_regime_<steps>/``; a killed sweep resumes where it stopped, and
``--extend-from`` continues a shorter sweep's runs to a longer budget (``tokenizer_quality.seed_from_shorter``).
``--embedding-dim`` and ``--codebook-init-noise`` change the latent width d (64) and the ``*_noise`` variants'
noise std (0.1) of every run (give such a sweep its own ``--output``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import photo_patches
from tokenizer_quality import (
    _fmt,
    _mean_std,
    add_budget_arguments,
    best_validation_cell,
    train_or_read,
    warn_constant_lr,
)

from tokenizer import HQVAE

SMALL = dict(hidden_channels=64, embedding_dim=64, num_res_blocks=1)
FASHION_MNIST = {"source": "fashion_mnist", "validation_size": 5000}

# name -> data set, image size, channels, layers_per_resolution, codebook sizes, stem downsamples.
CELLS: dict[str, dict] = {
    "fmnist32_8x8+16x16_k512": dict(
        data="fashion_mnist", size=32, channels=1, layers=[1, 1], codes=512, stem=1
    ),
    "fmnist32_4x4+8x8_k512": dict(
        data="fashion_mnist", size=32, channels=1, layers=[1, 1], codes=512, stem=2
    ),
    "fmnist32_4x4+8x8_k64": dict(data="fashion_mnist", size=32, channels=1, layers=[1, 1], codes=64, stem=2),
    "fmnist32_2x2+4x4_k512": dict(
        data="fashion_mnist", size=32, channels=1, layers=[1, 1], codes=512, stem=3
    ),
    "photo32_4x4+8x8_k512": dict(data="photo", size=32, channels=3, layers=[1, 1], codes=512, stem=2),
    "photo32_2x2+4x4_k512": dict(data="photo", size=32, channels=3, layers=[1, 1], codes=512, stem=3),
    "photo64_4x4+8x8_k512": dict(data="photo", size=64, channels=3, layers=[1, 1], codes=512, stem=3),
    "photo64_4x4+8x8+16x16_k512": dict(
        data="photo", size=64, channels=3, layers=[1, 1, 1], codes=512, stem=2
    ),
    # residual (RSQ-VAE / RQ-VAE) cells with the audio benchmark's codebook: K = 8 shared by 4 depths (Table 2)
    "fmnist32_8x8x4_k8_shared": dict(
        data="fashion_mnist", size=32, channels=1, layers=[4], codes=8, stem=2, share=True
    ),
    "photo32_8x8x4_k8_shared": dict(
        data="photo", size=32, channels=3, layers=[4], codes=8, stem=2, share=True
    ),
    # the same photos and codebook at higher rho by fewer nats of code (real data, docs/sq_vs_vq.md 11c):
    # 2 depths (KL_max 266 nats, rho 5.8), or 4 depths on 4x4 positions (133 nats, rho 11.5)
    "photo32_8x8x2_k8_shared": dict(
        data="photo", size=32, channels=3, layers=[2], codes=8, stem=2, share=True
    ),
    "photo32_4x4x4_k8_shared": dict(
        data="photo", size=32, channels=3, layers=[4], codes=8, stem=3, share=True
    ),
    # Fashion-MNIST with its grey value repeated in 3 channels: the same content and positions, D tripled, so
    # rho x 3 -- for the SQ objective the same as weighting the KL by 1/3 (ML decoder variance, eq. 6)
    "fmnist32rgb_4x4+8x8_k512": dict(
        data="fashion_mnist", size=32, channels=3, layers=[1, 1], codes=512, stem=2
    ),
    "fmnist32rgb_8x8x4_k8_shared": dict(
        data="fashion_mnist", size=32, channels=3, layers=[4], codes=8, stem=2, share=True
    ),
}
VQ_EMA = {"quantizer": "vq", "commitment_cost": 0.25, "codebook_update": "ema", "ema_decay": 0.99}
WARMUP = {"rate_warmup_steps": 500}
# isotropic noise on the k-means codes, given to both twins (11e): std 0.1 = 0.58 s at SQ's s^2 0.03 (screened on
# seed 0 of the photo SQ-VAE-2 cell: 0.05 left the bottom layer 1-D at 300 steps; 0.1 and 0.17 both lifted it)
NOISE = {"codebook_init_noise": 0.1}
VARIANTS: dict[str, dict] = {
    # SQ-VAE-2 as shipped before this benchmark: N(0, 1) codes, s^2 init 3
    "sq": {"quantizer": "sq", "codebook_init": "random", "init_variance": 3.0},
    # SQ-VAE-2 with k-means codes from the first batch and s^2 init 0.03 (docs/sq_vs_vq.md)
    "sq_data": {"quantizer": "sq", "codebook_init": "data", "init_variance": 0.03},
    # k-means codes with s^2 set at the first forward so the mean posterior entropy is 0.8 log K per layer: the
    # fixed 0.03 is not scale-free (7-10x the code spacing on 4x4 positions, where it collapsed; 11c)
    "sq_data_cal": {"quantizer": "sq", "codebook_init": "data", "init_entropy_fraction": 0.8},
    # the two k-means starts above with the rate (latent + KL) weighted (t + 1) / 500 over the first 500 steps: a
    # KL warm-up, outside the paper's objective while it lasts (the start-of-training collapse at rho 11.5; 11d)
    "sq_data_cal_warm": {"quantizer": "sq", "codebook_init": "data", "init_entropy_fraction": 0.8, **WARMUP},
    "sq_data_warm": {"quantizer": "sq", "codebook_init": "data", "init_variance": 0.03, **WARMUP},
    # k-means codes spread in every direction by noise on the scale of s: the codes that share a posterior then differ
    # in every direction, and SQ's gradient to the encoder (through their covariance) is no longer 1-D (11e)
    "sq_data_noise": {"quantizer": "sq", "codebook_init": "data", "init_variance": 0.03, **NOISE},
    "vq": {**VQ_EMA, "codebook_init": "random"},
    "vq_data": {**VQ_EMA, "codebook_init": "data"},
    "vq_data_warm": {**VQ_EMA, "codebook_init": "data", **WARMUP},  # the same warm-up on the commitment term
    "vq_data_noise": {**VQ_EMA, "codebook_init": "data", **NOISE},  # the same noise on its k-means codes
    "vq_reset": {**VQ_EMA, "codebook_init": "random", "dead_code_threshold": 1.0},
}


def cell_model(
    cell: dict, variant: str, embedding_dim: int | None = None, noise: float | None = None
) -> dict:
    """The model config of ``variant`` in ``cell``; ``embedding_dim`` replaces SMALL's latent width d (64), and
    ``noise`` the codebook noise std of the ``*_noise`` variants (NOISE, 0.1)."""
    overrides = {} if embedding_dim is None else {"embedding_dim": embedding_dim}
    if noise is not None and "codebook_init_noise" in VARIANTS[variant]:
        overrides["codebook_init_noise"] = noise
    return {
        **SMALL,
        "in_channels": cell["channels"],
        "num_stem_downsamples": cell["stem"],
        "layers_per_resolution": cell["layers"],
        "codebook_sizes": cell["codes"],
        "share_codebook": cell.get("share", False),
        **VARIANTS[variant],
        **overrides,
    }


def cell_data(cell: dict, data_root: Path, fashion_mnist_path: str | None = None) -> dict:
    if cell["data"] == "fashion_mnist":
        return {**FASHION_MNIST, "image_size": cell["size"], "path": fashion_mnist_path}
    path = photo_patches.build(data_root / f"photo_patches_{cell['size']}", cell["size"])
    return {"source": "arrow", "path": str(path), "image_size": cell["size"], "validation_size": 2000}


def regime(cell: dict) -> dict:
    """rho and KL_max of a cell, from the model's own shapes (``HQVAE.rate_regime``)."""
    model = HQVAE(**cell_model(cell, "sq"))
    return model.rate_regime(cell["size"], cell["size"])


def run(
    cells: list[str],
    variants: list[str],
    steps: int,
    seeds: list[int],
    out_root: Path,
    final_temperature: float,
    data_root: Path,
    fashion_mnist_path: str | None = None,
    variance_lr_multiplier: float = 1.0,
    extend_root: Path | None = None,
    validate_every: int | None = None,
    embedding_dim: int | None = None,
    noise: float | None = None,
) -> list[dict]:
    """Every cell x variant x seed (seed-major, then cell), saving ``results.json`` after each run;
    ``extend_root``: a sweep at a shorter budget whose runs of the same names these continue;
    ``embedding_dim`` / ``noise``: ``cell_model``'s overrides."""
    rows = []
    for seed in seeds:
        for name in cells:
            cell = CELLS[name]
            data = cell_data(cell, data_root, fashion_mnist_path)
            for variant in variants:
                model = cell_model(cell, variant, embedding_dim, noise)
                run_name = Path(name) / (variant if seed == 0 else f"{variant}_seed{seed}")
                run_dir = out_root / run_name
                sq_only = (
                    {"variance_lr_multiplier": variance_lr_multiplier} if model["quantizer"] == "sq" else {}
                )
                extend_from = None if extend_root is None else extend_root / run_name
                result = train_or_read(
                    model, data, steps, seed, run_dir, final_temperature, sq_only,
                    extend_from=extend_from, validate_every=validate_every,
                )  # fmt: skip
                rows.append(
                    {"cell": name, "variant": variant, "seed": seed, "model": model, **regime(cell), **result}
                )
                (out_root / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


def _mean(rows: list[dict], key: str) -> float:
    return statistics.mean(r[key] for r in rows)


RATIOS = {  # name -> (SQ variants, the best of which is compared; VQ twin)
    "sq / vq (N(0,1) codes)": (("sq",), "vq"),
    "sq_data / vq_data (k-means codes)": (("sq_data",), "vq_data"),
    "sq_data_cal / vq_data (k-means, s² calibrated)": (("sq_data_cal",), "vq_data"),
    "sq_data_cal_warm / vq_data (k-means, s² calibrated, rate warm-up)": (("sq_data_cal_warm",), "vq_data"),
    "sq_data_warm / vq_data (k-means, s² 0.03, rate warm-up)": (("sq_data_warm",), "vq_data"),
    "best SQ warm-up / vq_data_warm (both warmed up)": (("sq_data_cal_warm", "sq_data_warm"), "vq_data_warm"),
    "sq_data_noise / vq_data_noise (k-means + noise, both)": (("sq_data_noise",), "vq_data_noise"),
    "sq_data_noise / vq_data (k-means + noise / k-means)": (("sq_data_noise",), "vq_data"),
    "best SQ / vq_reset": (
        ("sq", "sq_data", "sq_data_cal", "sq_data_cal_warm", "sq_data_warm", "sq_data_noise"),
        "vq_reset",
    ),
}


def summary(rows: list[dict]) -> list[dict]:
    """One entry per cell: rho, KL_max and the RMSE ratios of ``RATIOS`` (means over the seeds all runs share)."""
    out = []
    for cell in dict.fromkeys(r["cell"] for r in rows):
        group = [r for r in rows if r["cell"] == cell]
        entry = {"cell": cell, "rho": group[0]["rho"], "kl_max": group[0]["kl_max"], "ratios": {}}
        for name, (sq_variants, twin) in RATIOS.items():
            present = [v for v in (*sq_variants, twin) if any(r["variant"] == v for r in group)]
            if twin not in present or len(present) < 2:
                continue
            seeds = set.intersection(*({r["seed"] for r in group if r["variant"] == v} for v in present))
            if not seeds:
                continue

            def mean_rmse(variant, seeds=seeds, group=group):
                return statistics.mean(
                    r["rmse"] for r in group if r["variant"] == variant and r["seed"] in seeds
                )

            best_sq = min(mean_rmse(v) for v in present if v != twin)
            entry["ratios"][name] = (best_sq / mean_rmse(twin), len(seeds))
        out.append(entry)
    return out


def _table(columns: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def to_markdown(rows: list[dict], steps: int) -> str:
    seeds = sorted({r["seed"] for r in rows})
    head = (
        f"batch 32, {steps} steps, Adam lr 1e-3 betas (0.9, 0.9), test split, deterministic quantization at test; "
        f"seeds {', '.join(map(str, seeds))}.\n\n"
    )
    ratio_rows, detail_rows = [], []
    for e in summary(rows):
        cells = []
        for name in RATIOS:
            ratio = e["ratios"].get(name)
            cells.append("-" if ratio is None else f"{ratio[0]:.3f} ({ratio[1]} seeds)")
        ratio_rows.append([e["cell"], f"{e['rho']:.2f}", f"{e['kl_max']:.0f}", *cells])
    for cell in dict.fromkeys(r["cell"] for r in rows):
        for variant in dict.fromkeys(r["variant"] for r in rows if r["cell"] == cell):
            group = [r for r in rows if r["cell"] == cell and r["variant"] == variant]
            layers = range(len(group[0]["perplexity"]))
            kl = group[0].get("kl_nats")
            detail_rows.append(
                [
                    cell,
                    variant,
                    str(len(group)),
                    _mean_std([r["rmse"] for r in group], 4),
                    best_validation_cell(group),
                    _fmt([statistics.mean(r["perplexity"][i] for r in group) for i in layers], 1),
                    _fmt([min(r["codes_used"][i] for r in group) for i in layers]),
                    _fmt([statistics.mean(r["kl_nats"][i] for r in group) for i in layers], 0)
                    if VARIANTS.get(variant, {}).get("quantizer") == "sq" and kl
                    else "-",
                    _fmt(group[0]["variance_start_end"][1], 3) if "variance_start_end" in group[0] else "-",
                    _fmt(group[0]["entropy_start_end"][1]) if "entropy_start_end" in group[0] else "-",
                ]
            )
    ratio_columns = ["cell", "rho", "KL_max (nats)", *RATIOS]
    detail_columns = [
        "cell",
        "variant",
        "seeds",
        "test RMSE",
        "best-validation test RMSE",
        "perplexity per layer",
        "codes used per layer (min over seeds)",
        "test KL per layer (nats)",
        "s^2 end",
        "entropy end (nats)",
    ]
    return head + _table(ratio_columns, ratio_rows) + "\n" + _table(detail_columns, detail_rows)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = summary(rows)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, marker in zip(RATIOS, itertools.cycle("osD^vPX*")):  # every ratio, however many
        points = sorted((e["rho"], e["ratios"][name][0]) for e in entries if name in e["ratios"])
        if points:
            ax.plot(*zip(*points), marker=marker, ls="none", label=name)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("rho = (D/2) / KL_max")
    ax.set_ylabel("test RMSE ratio (< 1: SQ better)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--final-temperature", type=float, default=0.3, help="tau at the last step")
    parser.add_argument("--output", type=Path, default=None)
    add_budget_arguments(parser)
    parser.add_argument("--data-root", type=Path, default=Path("runs/data"), help="photo patch sets")
    parser.add_argument("--fashion-mnist-path", default=None, help="idx files (default: Debian's)")
    parser.add_argument(
        "--variance-lr-multiplier",
        type=float,
        default=1.0,
        help="SQ log s^2 LR / learning rate (SQ variants)",
    )
    parser.add_argument(
        "--embedding-dim", type=int, default=None, help="latent width d of every cell (default 64)"
    )
    parser.add_argument(
        "--codebook-init-noise",
        type=float,
        default=None,
        help=f"std of the *_noise variants' codebook noise (default {NOISE['codebook_init_noise']})",
    )
    args = parser.parse_args(argv)
    if args.embedding_dim is not None and args.embedding_dim < 1:
        parser.error(f"--embedding-dim must be >= 1, got {args.embedding_dim}")
    if args.codebook_init_noise is not None and not args.codebook_init_noise >= 0:
        parser.error(f"--codebook-init-noise must be >= 0, got {args.codebook_init_noise}")
    warn_constant_lr(args.steps, args.validate_every)
    out_root = args.output or Path("runs/benchmarks") / f"sq_regime_{args.steps}"
    out_root.mkdir(parents=True, exist_ok=True)
    rows = run(
        args.cells,
        args.variants,
        args.steps,
        args.seeds,
        out_root,
        args.final_temperature,
        args.data_root,
        args.fashion_mnist_path,
        args.variance_lr_multiplier,
        args.extend_from,
        args.validate_every,
        args.embedding_dim,
        args.codebook_init_noise,
    )
    table = to_markdown(rows, args.steps)
    (out_root / "results.md").write_text(table)
    plot(rows, out_root / "regime.png")
    print(table)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
