"""What the encoder learns from: the decoder term's and the rate's gradients on the rows each resolution
quantizes, and how much of what the decoder asks of the quantized state reaches them.

SQ's relaxed sample is z_q = sum_k w_k b_k with w = softmax((l + g) / tau), l_k = -||z~ - b_k||^2 / (2 s^2), so
its Jacobian is dz_q / dz~ = Cov_w(b) / (tau s^2): the covariance of the codes under the sample's own weights.
The decoder's gradient reaches the encoder only along directions in which the codes sharing the posterior
differ, scaled by their spread over s^2 (the exact gradient of E_P-hat[.] has the same covariance form). VQ's
straight-through estimator passes it unchanged (Jacobian I). Per resolution of a run (its final weights, a
checkpoint, or a fresh initialisation after the first training forward's codebook initialisation), over batches of
``--split`` (default: test) in training mode at the model's own tau, with seeded Gumbel noise:

- the input rows Z-tilde: participation ratio and top eigenvalues (as ``latent_dimensions.py``), s^2 (SQ);
- the decoder term's gradient on the quantized rows (what the decoder asks for) and on Z-tilde (what the
  encoder receives): RMS, participation ratio of the second-moment matrix, and the fraction of its energy
  along the input's top principal direction; their RMS ratio is the quantizer's gain (1 for VQ);
- the rate's gradient on Z-tilde (SQ: latent + KL terms, eq. 6 / 14 / 26; VQ: commitment, eq. 7 / 15): RMS
  and the same fraction, and the decoder / rate RMS ratio (which term drives the encoder; compare within one
  model: SQ's decoder term is in nats per image, VQ's an MSE)::

    .venv/bin/python benchmarks/encoder_gradients.py RUN [RUN ...] [--checkpoint init|final|step-N] \
        [--batches 8] [--output FILE.json]
"""

from __future__ import annotations

import argparse
import itertools

import torch
from latent_dimensions import participation_ratio
from run_analysis import load_run, main_over_runs, split_images, table_header
from variance_forces import load_weights

from tokenizer.model import HQVAE


def _second_moment(rows: torch.Tensor) -> torch.Tensor:
    rows = rows.double()
    return rows.T @ rows / rows.shape[0]


def _gradient_summary(grads: torch.Tensor, top: torch.Tensor) -> dict:
    """RMS, participation ratio of E[g g^T] and the fraction of its trace along the unit vector ``top``."""
    moment = _second_moment(grads)
    trace = float(moment.trace())
    return {
        "rms": (trace / grads.shape[1]) ** 0.5,
        "participation_ratio": participation_ratio(torch.linalg.eigvalsh(moment)),
        "fraction_on_input_top": float(top @ moment @ top) / trace if trace > 0 else 0.0,
    }


def _prepare(run, checkpoint: str, seed: int):
    """(model in train mode at ``checkpoint``, data config); ``init``: a fresh model of the run's config."""
    model, data = load_run(run)
    if checkpoint == "init":
        torch.manual_seed(seed)
        model = HQVAE.from_config(model.config)
    else:
        load_weights(model, run, checkpoint, {k: v.clone() for k, v in model.state_dict().items()})
    return model.train(), data


def analyse(run, args: argparse.Namespace) -> dict:
    model, data = _prepare(run, args.checkpoint, args.seed)
    images = split_images(model, data, args.split, args.batch_size, "batches")
    batches = list(itertools.islice(images, args.batches + 1))
    if len(batches) < 2:
        raise ValueError(f"{run}: need at least 2 training batches of {args.batch_size}, got {len(batches)}")
    generator = torch.Generator().manual_seed(args.seed)
    model(batches[0], generator=generator)  # a fresh model initialises its codebooks here (codebook_init)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    inputs: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []
    hooks = [
        group.register_forward_pre_hook(lambda _, a: inputs.append(a[0])) for group in model.quantizers
    ] + [
        group.register_forward_hook(lambda _, a, out: outputs.append(out.quantized))
        for group in model.quantizers
    ]
    collected = {name: [[] for _ in model.quantizers] for name in ("z", "asked", "decoder", "rate")}
    try:
        for images in batches[1:]:
            inputs.clear()
            outputs.clear()
            out = model(images, generator=generator)
            rate = out.latent_losses.sum() + out.kl_losses.sum() + out.commitment_losses.sum()
            tensors = inputs + outputs
            decoder = torch.autograd.grad(
                out.reconstruction_loss, tensors, retain_graph=True, allow_unused=True
            )
            rates = (
                torch.autograd.grad(rate, inputs, allow_unused=True)
                if rate.requires_grad
                else [None] * len(inputs)
            )
            n = len(inputs)
            for index, z in enumerate(inputs):
                parts = {"z": z, "decoder": decoder[index], "asked": decoder[n + index], "rate": rates[index]}
                for name, value in parts.items():
                    value = torch.zeros_like(z) if value is None else value
                    collected[name][index].append(value.detach().float().reshape(-1, z.shape[-1]))
            # training forwards move EMA codebooks: keep the probed weights fixed
            model.load_state_dict(state)
    finally:
        for hook in hooks:
            hook.remove()
    variances = model.dequantization_variances().tolist()
    first_layer = list(itertools.accumulate([0] + list(model.config.layers_per_resolution)))[:-1]
    resolutions = []
    for index in range(len(model.quantizers)):
        z = torch.cat(collected["z"][index])
        eigenvalues, vectors = torch.linalg.eigh(torch.cov(z.T.double()))
        top = vectors[:, -1]
        summary = {
            "input_participation_ratio": participation_ratio(eigenvalues),
            "input_top_eigenvalues": eigenvalues.flip(0)[:3].tolist(),
            "s2": variances[first_layer[index]] if model.config.quantizer == "sq" else None,
        }
        for name in ("asked", "decoder", "rate"):
            summary[name] = _gradient_summary(torch.cat(collected[name][index]), top)
        asked, received, rate = (summary[k]["rms"] for k in ("asked", "decoder", "rate"))
        summary["gain"] = received / asked if asked > 0 else float("nan")
        summary["decoder_over_rate"] = received / rate if rate > 0 else float("inf")
        resolutions.append(summary)
    return {
        "run": str(run),
        "checkpoint": args.checkpoint,
        "quantizer": model.config.quantizer,
        "step": int(model.global_step),
        "temperature": model.temperature,
        "resolutions": resolutions,
    }


def to_markdown(results: list[dict]) -> str:
    lines = table_header(
        ["run", "at", "resolution", "input PR; top eigenvalues", "s²", "decoder asks: PR, on input top",
         "encoder receives: PR, on input top", "gain", "decoder / rate (RMS)", "rate: PR, on input top"]
    )  # fmt: skip
    for result in results:
        for index, r in enumerate(result["resolutions"]):
            s2 = "–" if r["s2"] is None else f"{r['s2']:.3g}"
            eig = ", ".join(f"{v:.2g}" for v in r["input_top_eigenvalues"])

            def pair(part: dict) -> str:
                return f"{part['participation_ratio']:.2f}, {part['fraction_on_input_top']:.2f}"

            lines.append(
                f"| {result['run']} | {result['checkpoint']} (step {result['step']}) | {index} | "
                f"{r['input_participation_ratio']:.2f}; {eig} | {s2} | {pair(r['asked'])} | {pair(r['decoder'])} | "
                f"{r['gain']:.3g} | {r['decoder_over_rate']:.3g} | {pair(r['rate'])} |"
            )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="final", help="'final', 'init' (a fresh model) or step-<N>")
    parser.add_argument("--batches", type=int, default=8, help="training batches averaged")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="Gumbel noise (and a fresh model's weights)")


def main(argv=None) -> list[dict]:
    return main_over_runs(argv, __doc__.split("\n")[0], analyse, to_markdown, add_arguments)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
