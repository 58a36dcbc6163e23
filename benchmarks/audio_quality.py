"""RSQ-VAE vs RQ-VAE on log-mel spectrograms at an equal step budget (the paper's Table 2 setting: K_l = 8,
shared codebook, 4 and 8 layers), on the offline spoken-words dataset (scripts/make_speech_words.py) or any
audio folder.

    .venv/bin/python benchmarks/audio_quality.py --steps 1000 --seeds 0 1 2 [--variants rsq4 rq4 rsq8 rq8]
        [--data-path data/speech_words]

Each variant is configs/tokenizer/speech_rsqvae.yaml or speech_rqvae.yaml (same architecture, data, optimiser,
steps, seed; both start from k-means codes; SQ s^2 0.03 and tau ending at 0.3), with 4 or 8 layers; rq4_reset and
rq8_reset add VQ code reset (dead codes re-initialised from encoder outputs) to the RQ-VAE twin. The table
reports the test RMSE on the normalised log-mel (Table 2's metric), per-layer perplexity and codes used, over
seeds; results land in ``runs/benchmarks/audio_quality_<steps>/`` and a killed sweep resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizer_quality import summary_markdown

from tokenizer.config import load_config
from tokenizer.train import TokenizerTrainer, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RESET = ["model.dead_code_threshold=1.0"]  # VQ code reset: the strongest heuristic baseline (issue 12)
VARIANTS = {
    "rsq4": ("speech_rsqvae.yaml", 4, []),
    "rq4": ("speech_rqvae.yaml", 4, []),
    "rsq8": ("speech_rsqvae.yaml", 8, []),
    "rq8": ("speech_rqvae.yaml", 8, []),
    "rq4_reset": ("speech_rqvae.yaml", 4, RESET),
    "rq8_reset": ("speech_rqvae.yaml", 8, RESET),
}
DEFAULT_VARIANTS = ["rsq4", "rq4", "rsq8", "rq8"]


def run_one(name: str, steps: int, seed: int, run_dir: Path, data_path: str | None, extra: list[str]) -> dict:
    config_file, layers, variant_overrides = VARIANTS[name]
    overrides = [f"model.layers_per_resolution=[{layers}]", f"optimizer.max_steps={steps}", f"seed={seed}",
                 f"output_dir={run_dir}", f"logging.validate_every={steps}", "logging.tensorboard=false",
                 f"logging.checkpoint_every={max(1, steps // 3)}", f"logging.log_every={max(1, steps // 20)}"]  # fmt: skip
    overrides += [f"data.path={data_path}"] if data_path else []
    overrides += variant_overrides
    config = load_config(TrainConfig, ROOT / "configs" / "tokenizer" / config_file, overrides + extra)
    return {"variant": name, "seed": seed, **TokenizerTrainer.train_or_resume(config)}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument(
        "--data-path", default=None, help="audio folder (default: the configs' data/speech_words)"
    )
    parser.add_argument("--override", action="append", default=[], help="key=value for every variant")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.output or Path("runs/benchmarks") / f"audio_quality_{args.steps}"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:  # seed-major: a partial sweep already covers every variant once
        for name in args.variants:
            run_dir = out / (name if seed == 0 else f"{name}_seed{seed}")
            rows.append(run_one(name, args.steps, seed, run_dir, args.data_path, args.override))
            (out / "results.json").write_text(json.dumps(rows, indent=2))
    table = (
        f"Log-mel spectrograms 80 x 88 ({args.data_path or 'data/speech_words'}), batch 32, {args.steps} steps, "
        f"K_l = 8 shared, test RMSE on the normalised log-mel; seeds {', '.join(map(str, args.seeds))}.\n\n"
        + summary_markdown(rows)
    )
    (out / "results.md").write_text(table)
    print(table)
    return rows


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
