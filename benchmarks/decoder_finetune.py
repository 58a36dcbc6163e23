"""Are SQ's codes worse than VQ's, or only its decoder? Retrain a finished run's decoder on its argmax codes.

    .venv/bin/python benchmarks/decoder_finetune.py RUN [RUN ...] --steps 3000 [--output DIR]

``benchmarks/decode_gap.py`` shows that an SQ run's argmax codes decode no worse than the relaxed samples its
decoder was trained on, so discretising costs nothing and SQ's deficit against VQ is in what it fits. This
separates the two parts of that fit: with the encoder, the top-down path and the codebooks frozen (every code
the run extracts stays the same), only the decoder is trained further, on the argmax codes, with the plain
MSE, for ``--steps`` more steps (the run's own data, batch, Adam settings and seed; the shared training loop,
so the run is resumable and ends with the same test metrics). Give the VQ twin the same steps: its decoder
keeps the inputs it always had, so it only gets the extra budget.

If the SQ run then matches or beats its VQ twin, the Bayesian quantizer learnt codes at least as informative,
and its deficit was its decoder's training on noisy relaxed samples (eq. 6's stochastic decoder input); if not,
the codes themselves carry less. This is a post-hoc step outside the paper's objective: a diagnostic, and an
option for a user who only needs the codes (e.g. for a prior), not a change of the SQ method. Each result
lands in ``<output>/<run's parent>/<run>`` with ``metrics.json``; a table is printed and saved.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from tokenizer.config import from_dict
from tokenizer.model import HQVAE
from tokenizer.train import TokenizerTrainer, TrainConfig
from tokenizer.trainer import METRICS_FILE, is_finished
from tokenizer.training_utils import CheckpointManager, fused_optimizer_supported


class DecoderFinetuneTrainer(TokenizerTrainer):
    """The tokenizer trainer with everything but ``model.decoder`` frozen, fed argmax codes, MSE loss."""

    progress_desc = "decoder"

    def build(self, datasets=None, source: Path | None = None) -> None:
        super().build(datasets)
        config = self.config
        self.model.load_state_dict(HQVAE.from_pretrained(source / "model").state_dict())
        for name, parameter in self.model.named_parameters():
            parameter.requires_grad_(name.startswith("decoder."))
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.optimizer.learning_rate,
            betas=tuple(config.optimizer.betas),
            fused=fused_optimizer_supported(self.accelerator.device),
        )
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer,
            factor=config.optimizer.plateau_factor,
            patience=config.optimizer.plateau_patience - 1,
        )

    def compute_loss(self, images: torch.Tensor):
        model = self.unwrapped
        model.eval()  # argmax codes, no codebook statistics or initialisation, no Gumbel noise
        model.decoder.train()
        with torch.no_grad():
            state, _ = model._infer(images, "argmax", model.temperature, self.generator)
        loss = F.mse_loss(model.decoder(state).float(), images.float())
        return loss, {"loss": loss}, None

    def finiteness_terms(self, out, terms: dict) -> dict:
        return terms

    def log_record(self, out, terms: dict) -> dict:
        return {"loss": terms["loss"].item(), "skipped_images": self.skipped_images}

    def progress_postfix(self, record: dict) -> dict:
        return {"mse": f"{record['loss']:.3g}"}

    def after_step(self) -> None:
        pass  # the codes are fixed: the Gumbel schedule does not advance

    def on_fit_start(self) -> None:
        pass


def finetune(source: Path, steps: int, output_dir: Path) -> dict:
    """Decoder-only training of the run folder ``source`` for ``steps`` steps into ``output_dir`` (resumed when
    killed, read back when finished); returns its ``metrics.json`` plus the source's test RMSE."""
    if not (source / "config.yaml").exists() or not (source / "model").is_dir():
        raise ValueError(f"{source} is not a finished tokenizer run folder (config.yaml and model/ expected)")
    raw = yaml.safe_load((source / "config.yaml").read_text())
    raw["optimizer"] = {**raw["optimizer"], "max_steps": steps, "final_temperature": None}
    raw["logging"] = {
        **raw["logging"],
        "log_every": max(1, steps // 20),
        "validate_every": steps,
        "checkpoint_every": max(1, steps // 3),
        "tensorboard": False,
    }
    raw["output_dir"] = str(output_dir)
    config = from_dict(TrainConfig, raw)
    if is_finished(output_dir):
        result = json.loads((output_dir / METRICS_FILE).read_text())
    else:
        resume = "latest" if CheckpointManager(output_dir / "checkpoints").latest() is not None else None
        result = DecoderFinetuneTrainer(config, resume, source=source).fit()
    before = json.loads((source / METRICS_FILE).read_text())
    return {"run": str(source), "steps": steps, "rmse_before": before["rmse"], **result}


def to_markdown(rows: list[dict]) -> str:
    lines = [
        "| run | quantizer | test RMSE before | + decoder steps on argmax codes | after | change | codes used |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        quantizer = json.loads((Path(r["run"]) / "model" / "config.json").read_text())["quantizer"]
        change = r["rmse"] / r["rmse_before"] - 1
        lines.append(
            f"| {r['run']} | {quantizer} | {r['rmse_before']:.4f} | {r['steps']} | {r['rmse']:.4f} | "
            f"{change:+.1%} | {', '.join(map(str, r['codes_used']))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished tokenizer run folders (SQ and VQ twins)")
    parser.add_argument("--steps", type=int, default=3000, help="decoder-only training steps")
    parser.add_argument(
        "--output", type=Path, default=None, help="default runs/benchmarks/decoder_ft_<steps>"
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    out_root = args.output or Path("runs/benchmarks") / f"decoder_ft_{args.steps}"
    rows = []
    for run in args.runs:
        rows.append(finetune(run, args.steps, out_root / run.parent.name / run.name))
        out_root.mkdir(parents=True, exist_ok=True)
        (out_root / "results.json").write_text(json.dumps(rows, indent=2))
    table = to_markdown(rows)
    (out_root / "results.md").write_text(table)
    print(table)
    return rows


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
