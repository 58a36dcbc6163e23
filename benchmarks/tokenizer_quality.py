"""Quality at an equal step budget, same architecture: SQ-VAE-2 vs VQ-VAE-2 and RSQ-VAE vs RQ-VAE, and the
wider family (FSQ, LFQ, Gumbel-VQ) in both layouts at the same bits per image.

    .venv/bin/python benchmarks/tokenizer_quality.py --steps 3000 [--variants sqvae2 vqvae2 ...] [--seeds 0 1 2]
        [--probe]   # + linear-probe accuracy of each run's codes (eval/linear_probe.py, 10,000 train images)

SQ variants use a budget-matched temperature decay r = -ln(tau_end) / steps (default tau_end = 0.3) and
s^2 init 3; the ``*_paper_tau`` variants keep the paper's r = 1e-5 (tau_end = 0.97 at 3,000 steps).
Trains each variant at each seed with ``tokenizer.train.train`` on Fashion-MNIST (32x32), then prints and saves
a table over seeds (mean ± std of test RMSE, SSIM, PSNR; per-layer perplexity; codes used, with the minimum
over seeds, which shows collapse) and one line per run (with throughput and the start -> end trajectory of
s_l^2 and the mean quantization entropy: self-annealing, paper Figure 4b/4d). Results land in
``runs/benchmarks/tokenizer_quality_<steps>/`` (``results.json``, ``results.md``, one run folder per variant
and seed). Runs are sequential in this process; a killed sweep resumes: finished runs are read back from their
``metrics.json`` and an unfinished one continues from its last checkpoint. ``--extend-from <shorter sweep>``
continues each run of a finished sweep to a longer ``--steps`` without repeating the steps it already trained
(``seed_from_shorter``: the same settings are required; bit-identical to training the longer budget at once).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from tokenizer.config import from_dict
from tokenizer.train import TokenizerTrainer, TrainConfig

# Injected layout: (4^2, 512), (8^2, 512), as the reference VQ-VAE-2 measurement. Residual layout: 8^2 x 4
# layers of K = 64 (Figure 3a sweeps K = 16..256 at L = 4).
ARCH = dict(in_channels=1, hidden_channels=64, embedding_dim=64, num_res_blocks=1, num_stem_downsamples=2)
INJECTED = dict(layers_per_resolution=[1, 1], codebook_sizes=[512, 512])
RESIDUAL = dict(layers_per_resolution=[4], codebook_sizes=64)
RESIDUAL_K8 = dict(layers_per_resolution=[4], codebook_sizes=8)
VQ = dict(quantizer="vq", commitment_cost=0.25, codebook_update="ema", ema_decay=0.99)
RESET = dict(dead_code_threshold=1.0)

# SQ variants use the budget-matched schedule from the command line (--final-temperature, --init-variance);
# the "_paper_tau" ones keep the paper's r = 1e-5 whatever the budget.
PAPER_TAU = dict(temperature_decay=1e-5)
NO_AUX = dict(commitment_cost=0.0, lfq_entropy_weight=0.0)  # LFQ without its commitment and entropy terms

VARIANTS: dict[str, dict] = {
    "sqvae2": {**INJECTED, "quantizer": "sq"},
    "sqvae2_paper_tau": {**INJECTED, "quantizer": "sq", **PAPER_TAU},
    "vqvae2": {**INJECTED, **VQ},
    "vqvae2_reset": {**INJECTED, **VQ, **RESET},
    "rsqvae": {**RESIDUAL, "quantizer": "sq"},
    "rsqvae_paper_tau": {**RESIDUAL, "quantizer": "sq", **PAPER_TAU},
    "rqvae": {**RESIDUAL, **VQ},
    "rqvae_reset": {**RESIDUAL, **VQ, **RESET},
    "rsqvae_shared": {**RESIDUAL, "quantizer": "sq", "share_codebook": True},
    "rqvae_shared": {**RESIDUAL, **VQ, "share_codebook": True},
    "rqvae_shared_reset": {**RESIDUAL, **VQ, **RESET, "share_codebook": True},
    # the audio benchmark's codebook (Table 2: K = 8 shared by the 4 depths) on images, ρ ≈ 0.96 as there:
    # does the small shared codebook, not the domain, decide RSQ-VAE vs RQ-VAE? (docs/sq_vs_vq.md 9b)
    "rsqvae_k8_shared": {**RESIDUAL_K8, "quantizer": "sq", "share_codebook": True},
    "rqvae_k8_shared": {**RESIDUAL_K8, **VQ, "share_codebook": True},
    "rqvae_k8_shared_reset": {**RESIDUAL_K8, **VQ, **RESET, "share_codebook": True},
    "rsqvae_k8": {**RESIDUAL_K8, "quantizer": "sq"},
    "rqvae_k8": {**RESIDUAL_K8, **VQ},
    # the wider family at the same implicit or learned K (equal bits per image): tokenizer/quantizer_family.py
    "fsq2": {**INJECTED, "quantizer": "fsq", "fsq_levels": [8, 8, 8]},
    "lfq2": {**INJECTED, "quantizer": "lfq"},
    "lfq2_norm": {**INJECTED, "quantizer": "lfq", "lfq_input_norm": True},  # standardised rows into the bits
    # + a soft entropy penalty (inverse temperature 1 instead of 100): its batch-entropy gradient stays alive
    "lfq2_norm_soft": {**INJECTED, "quantizer": "lfq", "lfq_input_norm": True, "lfq_inv_temperature": 1.0},
    # why LFQ trails (docs/benchmarks.md "Why LFQ trailed"): without its auxiliary terms (commitment, then the
    # entropy penalty too), and FSQ with 3 levels per dimension (3^6 = 729 codes, 9.5 bits) between FSQ [8, 8, 8]
    # and LFQ's 2 levels
    "lfq2_nocommit": {**INJECTED, "quantizer": "lfq", "commitment_cost": 0.0},
    "lfq2_plain": {**INJECTED, "quantizer": "lfq", **NO_AUX},
    "fsq2_ternary": {**INJECTED, "quantizer": "fsq", "fsq_levels": [3] * 6, "codebook_sizes": [729, 729]},
    # the projected values bounded by tanh before the signs (lfq_soft_clamp 1): entropy penalty only; MAGVIT-v2's
    # two terms; neither (the bounded plain sign, the recommended LFQ here); a 10x weaker entropy penalty
    "lfq2_clamp": {**INJECTED, "quantizer": "lfq", "lfq_soft_clamp": 1.0, "commitment_cost": 0.0},
    "lfq2_clamp_commit": {**INJECTED, "quantizer": "lfq", "lfq_soft_clamp": 1.0},
    "lfq2_clamp_plain": {**INJECTED, "quantizer": "lfq", "lfq_soft_clamp": 1.0, **NO_AUX},
    "lfq2_clamp_e001": {
        **INJECTED,
        "quantizer": "lfq",
        "lfq_soft_clamp": 1.0,
        **NO_AUX,
        "lfq_entropy_weight": 0.01,
    },
    "gumbel2": {**INJECTED, "quantizer": "gumbel"},
    "pq2": {**INJECTED, **VQ, "quantizer": "pq", "pq_groups": 3},  # 512 = 8^3: three 8-code EMA codebooks
    "rfsq": {**RESIDUAL, "quantizer": "fsq", "fsq_levels": [4, 4, 4]},
    "rlfq": {**RESIDUAL, "quantizer": "lfq"},
    "rlfq_norm": {**RESIDUAL, "quantizer": "lfq", "lfq_input_norm": True},
    "rlfq_clamp_plain": {**RESIDUAL, "quantizer": "lfq", "lfq_soft_clamp": 1.0, **NO_AUX},
    "rgumbel": {**RESIDUAL, "quantizer": "gumbel"},
    "rpq": {**RESIDUAL, **VQ, "quantizer": "pq", "pq_groups": 2},  # 64 = 8^2
    # product quantization with SQ inside: the same groups, one s^2 per layer (StochasticProductQuantizer)
    "sqpq2": {**INJECTED, "quantizer": "sq", "sq_groups": 3},
    "rsqpq": {**RESIDUAL, "quantizer": "sq", "sq_groups": 2},
}


def _trajectory(history_path: Path, key: str) -> tuple[list[float], list[float]] | None:
    """(first, last) logged value of ``key``; None when the history does not log it (an older run)."""
    lines = [json.loads(line) for line in history_path.read_text().splitlines()]
    lines = [line for line in lines if key in line]
    return (lines[0][key], lines[-1][key]) if lines else None


def _fmt(values, digits=2) -> str:
    return ", ".join(f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in values)


def train_or_read(
    model: dict,
    data: dict,
    steps: int,
    seed: int,
    run_dir: Path,
    final_temperature: float | None = 0.3,
    optimizer: dict | None = None,
    probe: bool = False,
    extend_from: Path | None = None,
    validate_every: int | None = None,
) -> dict:
    """Trains one tokenizer (batch 32, Adam lr 1e-3 with the trainer's betas), resumes an unfinished run from
    its checkpoint, or reads a finished run's ``metrics.json`` back; returns the metrics (+ s^2 and entropy
    start -> end for SQ). tau ends at ``final_temperature`` unless ``model`` sets ``temperature_decay``;
    ``optimizer``: further ``optimizer:`` settings (e.g. ``variance_lr_multiplier``). ``extend_from``: a
    shorter run of the same configuration whose last checkpoint this run starts from (``seed_from_shorter``).
    ``validate_every``: steps between validations (default: once, at the end); each validation also feeds the
    plateau scheduler (LR halved after ``plateau_patience`` validations without improvement, appendix F), and
    the weights at the lowest validation RMSE are kept and tested too (``best_validation``)."""
    if "temperature_decay" in model:
        final_temperature = None
    config = from_dict(
        TrainConfig,
        {
            "model": model,
            "data": {"batch_size": 32, "eval_batch_size": 500, **data},
            "optimizer": {
                "learning_rate": 1e-3,
                "max_steps": steps,
                "final_temperature": final_temperature,
                **(optimizer or {}),
            },
            "output_dir": str(run_dir),
            "seed": seed,
            "logging": {
                "log_every": max(1, steps // 20),
                "validate_every": validate_every or steps,
                # with periodic validations, the best one's weights too (the swing of SQ at low tau, 11b)
                "keep_best": "rmse" if validate_every else None,
                "checkpoint_every": max(1, steps // 3),
                "tensorboard": False,
            },
        },
    )
    if extend_from is not None:
        seed_from_shorter(Path(extend_from), config)
    result = TokenizerTrainer.train_or_resume(config)
    if probe:
        probe_file = run_dir / "probe.json"
        if not probe_file.exists():
            from eval.linear_probe import linear_probe

            probe_file.write_text(json.dumps(linear_probe(run_dir, train_items=10000, seed=seed), indent=2))
        result["probe_accuracy"] = json.loads(probe_file.read_text())["test_accuracy"]
    if model.get("quantizer", "sq") == "sq":
        result["variance_start_end"] = _trajectory(run_dir / "history.jsonl", "variances")
        result["entropy_start_end"] = _trajectory(run_dir / "history.jsonl", "entropy")
        result["relative_variance_start_end"] = _trajectory(run_dir / "history.jsonl", "relative_variances")
    return result


def seed_from_shorter(source: Path, config) -> bool:
    """Starts ``config``'s run from the last checkpoint of ``source``, a shorter run of the same configuration
    (a 30,000-step run extended to 50,000 steps without repeating its first 30,000); returns whether it did.

    Nothing is done when the new run already has a checkpoint or is finished. Everything but the budget must be
    the same: model (the Gumbel decay r within 1e-6 relative, so the extended tau = exp(-r t) continues the
    same curve: choose ``final_temperature`` accordingly), data, seed and optimiser settings; a mismatch raises
    ``ValueError`` naming the first differing setting. The continuation is the run the longer budget would
    have trained, except that the plateau scheduler also saw the shorter run's final validation.
    """
    import shutil

    import yaml

    from tokenizer.config import first_difference, to_dict
    from tokenizer.trainer import is_finished
    from tokenizer.training_utils import CheckpointManager

    target = Path(config.output_dir)
    if is_finished(target) or CheckpointManager(target / "checkpoints").latest() is not None:
        return False
    checkpoint = CheckpointManager(source / "checkpoints").latest()
    if checkpoint is None or not (source / "config.yaml").exists():
        raise ValueError(f"extend from {source}: no complete checkpoint and config.yaml there")
    old, new = yaml.safe_load((source / "config.yaml").read_text()), to_dict(config)
    old_steps, new_steps = old["optimizer"]["max_steps"], new["optimizer"]["max_steps"]
    if old_steps >= new_steps:
        raise ValueError(f"extend from {source}: it ran {old_steps} steps, not fewer than {new_steps}")
    decays = (old["model"].pop("temperature_decay", None), new["model"].pop("temperature_decay", None))
    if (None in decays and decays[0] != decays[1]) or (
        None not in decays and abs(decays[0] - decays[1]) > 1e-6 * abs(decays[1])
    ):
        raise ValueError(f"extend from {source}: model.temperature_decay {decays[0]} there, {decays[1]} here")
    # a floor c_tau on tau = max(c_tau, exp(-r t)) may differ if the shorter run never reached either floor
    floors = (old["model"].pop("min_temperature", 0.0), new["model"].pop("min_temperature", 0.0))
    if floors[0] != floors[1]:
        reached = math.exp(-(decays[0] or 0.0) * old_steps) * (1 + 1e-6)
        if max(floors) > reached:
            raise ValueError(
                f"extend from {source}: model.min_temperature {floors[0]} there, {floors[1]} here, and its "
                f"tau reached {reached:.6g}: the first {old_steps} steps would differ"
            )
    # not logging: the validation cadence (the plateau schedule) may change
    sections = ("model", "data", "optimizer", "seed", "losses")
    difference = first_difference(
        {k: old[k] for k in sections},
        {k: new[k] for k in sections},
        ignore=("optimizer.max_steps", "optimizer.final_temperature"),
    )
    if difference is not None:
        key, before, after = difference
        raise ValueError(f"extend from {source}: {key} is {before!r} there, {after!r} here")
    (target / "checkpoints").mkdir(parents=True, exist_ok=True)
    for log in ("history.jsonl", "validation.jsonl"):  # the s^2 / entropy trajectories start at step 0
        if (source / log).exists():
            shutil.copyfile(source / log, target / log)
    # copied under a temporary name and renamed last: a copy killed half-way is never taken for a checkpoint
    temporary = target / "checkpoints" / f".tmp-{checkpoint.name}"
    shutil.rmtree(temporary, ignore_errors=True)
    shutil.copytree(checkpoint, temporary)
    temporary.replace(target / "checkpoints" / checkpoint.name)
    (target / "checkpoints" / "latest").write_text(checkpoint.name + "\n")
    return True


def run_one(
    name: str,
    steps: int,
    sq_overrides: dict,
    seed: int,
    run_dir: Path,
    data_path: str | None = None,
    validation_size: int = 5000,
    common: dict | None = None,
    final_temperature: float = 0.3,
    probe: bool = False,
    optimizer: dict | None = None,
    extend_from: Path | None = None,
    validate_every: int | None = None,
) -> dict:
    """One variant at one seed on Fashion-MNIST; returns its row. ``common``: model arguments given to every
    variant alike (e.g. ``codebook_init``), SQ and VQ; ``optimizer``: ``optimizer:`` settings for all alike;
    ``extend_from``: the same run at a shorter budget, continued from its last checkpoint."""
    model = {**ARCH, **(common or {}), **VARIANTS[name]}
    if model.get("quantizer") == "sq":
        model.update({k: v for k, v in sq_overrides.items() if k not in VARIANTS[name]})
    data = {"path": data_path, "validation_size": validation_size}
    return {
        "variant": name,
        "seed": seed,
        "model": model,
        **train_or_read(
            model,
            data,
            steps,
            seed,
            run_dir,
            final_temperature,
            optimizer,
            probe,
            extend_from,
            validate_every,
        ),
    }


def run(
    variants: list[str],
    steps: int,
    sq_overrides: dict,
    seeds: list[int],
    out_root: Path,
    data_path: str | None = None,
    validation_size: int = 5000,
    common: dict | None = None,
    final_temperature: float = 0.3,
    probe: bool = False,
    optimizer: dict | None = None,
    extend_root: Path | None = None,
    validate_every: int | None = None,
) -> list[dict]:
    """Every variant at every seed (seed-major, so a partial sweep already covers all variants once);
    ``extend_root``: a sweep at a shorter budget whose runs of the same names these continue."""
    rows = []
    for seed in seeds:
        for name in variants:
            run_dir = out_root / (name if seed == 0 else f"{name}_seed{seed}")
            rows.append(
                run_one(
                    name,
                    steps,
                    sq_overrides,
                    seed,
                    run_dir,
                    data_path,
                    validation_size,
                    common,
                    final_temperature,
                    probe,
                    optimizer,
                    None if extend_root is None else extend_root / run_dir.name,
                    validate_every,
                )
            )
            (out_root / "results.json").write_text(json.dumps(rows, indent=2))
    return rows


def best_validation(row: dict) -> tuple[float, int] | None:
    """(test RMSE, step) of the weights kept at the lowest validation RMSE (runs with ``--validate-every``)."""
    best = row.get("best")
    return None if not best else (best["test"]["rmse"], best["step"])


def best_validation_cell(group: list[dict]) -> str:
    """Mean ± std of the best-validation test RMSE over ``group``'s runs, with each run's step; '-' if any lacks
    it."""
    best = [best_validation(r) for r in group]
    if not best or None in best:
        return "-"
    return f"{_mean_std([b[0] for b in best], 4)} (steps {_fmt([b[1] for b in best])})"


def _mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def summary_markdown(rows: list[dict]) -> str:
    """One line per variant over its seeds: mean ± sample std, and the smallest per-layer usage seen."""
    lines = [
        "| variant | seeds | test RMSE | SSIM | PSNR | perplexity per layer (mean) | codes used per layer "
        "(mean; min over seeds) | linear probe | train img/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["variant"] for r in rows):
        group = [r for r in rows if r["variant"] == name]
        layers = range(len(group[0]["perplexity"]))
        perplexity = [statistics.mean(r["perplexity"][i] for r in group) for i in layers]
        used_mean = [statistics.mean(r["codes_used"][i] for r in group) for i in layers]
        used_min = [min(r["codes_used"][i] for r in group) for i in layers]
        ssim = [r["ssim"] for r in group if r.get("ssim") is not None]
        probe = [r["probe_accuracy"] for r in group if r.get("probe_accuracy") is not None]
        speed = statistics.median(r["train_images_per_second"] for r in group)
        lines.append(
            f"| {name} | {len(group)} | {_mean_std([r['rmse'] for r in group], 4)} | "
            f"{_mean_std(ssim, 3) if ssim else '-'} | {_mean_std([r['psnr'] for r in group], 2)} | "
            f"{_fmt(perplexity, 1)} | {_fmt([round(u) for u in used_mean])}; {_fmt(used_min)} | "
            f"{_mean_std(probe, 3) if probe else '-'} | {speed:.0f} |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(rows: list[dict], steps: int, betas: tuple[float, float] = (0.9, 0.9)) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        f"Fashion-MNIST 32x32, batch 32, {steps} steps, Adam lr 1e-3 {tuple(betas)}, test split (10,000 images), "
        f"deterministic quantization at test; seeds {', '.join(map(str, seeds))}.",
        "",
        "Over seeds (mean ± sample standard deviation):",
        "",
        summary_markdown(rows),
        "Every run:",
        "",
        "| variant | seed | test RMSE | best-validation test RMSE | SSIM | PSNR | perplexity per layer |"
        " codes used per layer | train img/s | final tau | s^2 start -> end | s^2 / code spacing start -> end |"
        " entropy start -> end (nats) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def start_end(row: dict, key: str, digits: int = 2) -> str:
        values = row.get(key)
        return "-" if values is None else f"{_fmt(values[0], digits)} -> {_fmt(values[1], digits)}"

    for r in rows:
        variance, entropy = start_end(r, "variance_start_end"), start_end(r, "entropy_start_end")
        relative = start_end(r, "relative_variance_start_end", 3)
        tau = "-" if r["final_temperature"] is None else f"{r['final_temperature']:.3f}"
        ssim = "-" if r.get("ssim") is None else f"{r['ssim']:.3f}"
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r['rmse']:.4f} | {best_validation_cell([r])} | {ssim} | "
            f"{r['psnr']:.2f} | "
            f"{_fmt(r['perplexity'], 1)} | {_fmt(r['codes_used'])} | {r['train_images_per_second']:.0f} | "
            f"{tau} | {variance} | {relative} | {entropy} |"
        )
    return "\n".join(lines) + "\n"


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """``--extend-from`` (``seed_from_shorter`` does the work) and ``--validate-every``, shared with
    ``sq_regime.py``."""
    parser.add_argument(
        "--extend-from",
        type=Path,
        default=None,
        help="a sweep folder at a shorter budget: each run starts from its namesake's last checkpoint there "
        "(same settings; keep the Gumbel decay r by choosing --final-temperature exp(-r * steps))",
    )
    parser.add_argument(
        "--validate-every",
        type=int,
        default=None,
        help="steps between validations (default: once, at the end); each one also feeds the plateau "
        "scheduler that halves the LR after 3 validations without improvement (appendix F)",
    )


def warn_constant_lr(steps: int, validate_every: int | None) -> None:
    """Long budgets validated only at the end train at a constant LR: appendix F's plateau halving never acts,
    which cost RSQ-VAE 9.4 % and RQ-VAE 2.0 % test RMSE at 50,000 steps (docs/sq_vs_vq.md 11b)."""
    if validate_every is None and steps >= 10_000:
        print(
            f"warning: {steps} steps validated only at the end keep the LR constant (the plateau schedule never "
            "acts; docs/sq_vs_vq.md 11b); --validate-every ~2000 (about one Fashion-MNIST epoch) runs it",
            file=sys.stderr,
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="one run per variant and seed (seed 0: <variant>/)"
    )
    parser.add_argument("--init-variance", type=float, default=3.0, help="SQ s^2 at initialisation")
    parser.add_argument(
        "--min-temperature",
        type=float,
        default=None,
        help="SQ: the floor c_tau of tau = max(c_tau, exp(-r t)) (model.min_temperature; the paper's 0)",
    )
    parser.add_argument(
        "--final-temperature",
        type=float,
        default=0.3,
        help="tau at the last step (optimizer.final_temperature: r = -ln(tau) / steps)",
    )
    parser.add_argument(
        "--codebook-init",
        choices=["random", "data"],
        default="random",
        help="codebook initialisation of every variant, SQ and VQ alike (data: k-means of the first batch)",
    )
    parser.add_argument(
        "--init-entropy-fraction",
        type=float,
        default=None,
        help="SQ with data codebook init: calibrate s^2 so the first batch's posterior entropy is this x log K",
    )
    parser.add_argument("--probe", action="store_true", help="linear-probe accuracy of each run's codes")
    parser.add_argument(
        "--betas",
        type=float,
        nargs=2,
        default=(0.9, 0.9),
        help="Adam betas of every variant (the trainer's default (0.9, 0.9), appendix F; torch's (0.9, 0.999))",
    )
    parser.add_argument("--output", type=Path, default=None)
    add_budget_arguments(parser)
    parser.add_argument("--validation-size", type=int, default=5000, help="training images held out")
    parser.add_argument(
        "--data-path", default=None, help="folder with Fashion-MNIST idx files (default: Debian's)"
    )
    args = parser.parse_args(argv)
    sq_overrides = {"init_variance": args.init_variance}
    if args.min_temperature is not None:
        sq_overrides["min_temperature"] = args.min_temperature
    if args.init_entropy_fraction is not None:
        sq_overrides["init_entropy_fraction"] = args.init_entropy_fraction
    warn_constant_lr(args.steps, args.validate_every)
    suffix = "" if args.codebook_init == "random" else f"_{args.codebook_init}_init"
    if tuple(args.betas) != (0.9, 0.9):
        suffix += f"_betas{args.betas[0]:g}_{args.betas[1]:g}"
    out_root = args.output or Path("runs/benchmarks") / f"tokenizer_quality_{args.steps}{suffix}"
    out_root.mkdir(parents=True, exist_ok=True)
    rows = run(
        args.variants,
        args.steps,
        sq_overrides,
        args.seeds,
        out_root,
        args.data_path,
        args.validation_size,
        {"codebook_init": args.codebook_init},
        args.final_temperature,
        args.probe,
        {"betas": tuple(args.betas)},
        args.extend_from,
        args.validate_every,
    )
    table = to_markdown(rows, args.steps, args.betas)
    (out_root / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
