"""Faithfulness oracle: this project's single-layer SQ-VAE against sony/sqvae's reference implementation.

    .venv/bin/python benchmarks/sqvae_oracle.py --sqvae-source PATH [--steps 3000] [--seeds 0 1 2]

``PATH`` is a checkout of the reference (github.com/sony/sqvae, Takida et al. 2022); its code is never part of
this repository. Its ``vision/`` modules are copied to a temporary folder and changed in two ways only: the
device ``"cuda"`` becomes the CPU, and the 32x32 network's 3-channel input and output become 1 channel
(Fashion-MNIST zero-padded to 32x32). Two checks:

1. **The objective, term by term**: the same encoder rows, codebook, s^2, temperature and Gumbel noise through
   the reference ``GaussianVectorQuantizer`` (``gaussian_1``) and ``tokenizer.quantizers.StochasticQuantizer``
   + ``ResidualQuantizer._sq_terms`` (eq. 6's latent and KL terms): the relaxed codes, the loss (up to the
   constant d log K of the KL to the uniform prior) and the gradients with respect to the rows, the codebook
   and log s^2 must agree to float precision.
2. **Training, side by side**: the reference ``GaussianSQVAE`` (its 32x32 ResNet with BatchNorm, ``num_rb`` 2,
   N(0, 1) codes, MSE with the ML decoder variance, Adam lr 1e-3 with torch's default betas (0.9, 0.999),
   tau = exp(-r t)) and ``HQVAE(layers_per_resolution=[1])`` (this project's VDVAE-style blocks, one 8x8 layer)
   with the same K, code dimension, s^2 initialisation, temperature schedule, optimiser, batch, steps and data
   (the first 55,000 training images in a seeded order; test on the 10,000 test images with argmax
   quantization). Per run: test RMSE, perplexity and codes used over the whole test split, s^2 every 5 % of
   the budget, parameter count, training images/s. The reference's plateau LR schedule steps once per epoch
   on validation and never fires within 2 epochs (patience 3), so neither side uses one.

Results land in ``runs/benchmarks/sqvae_oracle_<steps>/`` (``results.json``, ``results.md``); finished runs
are read back when the command is run again.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from tokenizer_quality import train_or_read

from tokenizer.data import FashionMNIST
from tokenizer.quantizers import ResidualQuantizer, perplexity_from_counts


def load_reference(source: Path, workdir: Path):
    """The reference's ``model`` and ``quantizer`` modules, imported from a CPU / 1-channel copy."""
    vision = source / "vision"
    copy = workdir / "vision"
    shutil.copytree(vision, copy, ignore=shutil.ignore_patterns("configs", "*.png", "__pycache__"))
    for path in copy.rglob("*.py"):
        text = path.read_text().replace('device="cuda"', 'device="cpu"')
        if path.name == "net_32.py":
            text = text.replace("nn.Conv2d(3, dim_z // 2", "nn.Conv2d(1, dim_z // 2")
            text = text.replace("nn.ConvTranspose2d(dim_z // 2, 3,", "nn.ConvTranspose2d(dim_z // 2, 1,")
        path.write_text(text)
    sys.path.insert(0, str(copy))
    import model as reference_model  # noqa: E402  (the copied reference)
    import quantizer as reference_quantizer  # noqa: E402

    return reference_model, reference_quantizer


def objective_check(reference_quantizer, seed: int = 0) -> dict:
    """Max |difference| of codes, loss and gradients between the reference SQ layer and ours, same inputs."""
    import tokenizer.quantizers as ours

    generator = torch.Generator().manual_seed(seed)
    batch, dim, side, codes, variance, temperature = 4, 16, 8, 32, 0.7, 0.5
    z0 = torch.randn(batch, dim, side, side, generator=generator, dtype=torch.float32)
    book0 = torch.randn(codes, dim, generator=generator, dtype=torch.float32)
    noise = -torch.log(
        -torch.log(torch.rand(batch * side * side, codes, generator=generator, dtype=torch.float32))
    )

    # reference: rows (B, h, w, d) in row-major order, loss = sum p log p / B + ||z - z_q||^2 / (2 s^2) per image
    z_ref, book_ref = z0.clone().requires_grad_(), book0.clone().requires_grad_()
    log_var_ref = torch.tensor(math.log(variance), requires_grad=True)
    sample_gumbel = reference_quantizer.sample_gumbel
    reference_quantizer.sample_gumbel = lambda shape, eps=1e-10: noise.clone()
    try:
        layer = reference_quantizer.GaussianVectorQuantizer(codes, dim, temperature, "gaussian_1")
        q_ref, loss_ref, _ = layer._quantize(z_ref, log_var_ref.exp(), book_ref, flg_train=True)
    finally:
        reference_quantizer.sample_gumbel = sample_gumbel
    loss_ref.backward()

    # ours: the same rows, the same noise (gumbel_noise patched), eq. 6's latent + KL from ResidualQuantizer
    z_ours = z0.clone().requires_grad_()
    rows = z_ours.permute(0, 2, 3, 1).reshape(-1, dim)
    group = ResidualQuantizer.build("sq", [codes], dim, init_variance=variance)
    group.layers[0].get_codebook().weight.data.copy_(book0)
    saved = ours.gumbel_noise
    ours.gumbel_noise = lambda like, generator=None: noise.to(like.dtype)
    try:
        out = group(rows, batch_size=batch, mode="relaxed", temperature=temperature)
    finally:
        ours.gumbel_noise = saved
    constant = batch * side * side * math.log(codes) / batch  # KL to uniform = sum p log p + log K per row
    loss_ours = out.latent_loss + out.kl_losses.sum() - constant
    loss_ours.backward()
    q_ours = out.quantized.reshape(batch, side, side, dim).permute(0, 3, 1, 2)
    layer_ours = group.layers[0]

    def gap(a, b):  # max |a - b| relative to max |a|
        a, b = a.detach().double(), b.detach().double()
        return float((a - b).abs().max() / a.abs().max())

    return {
        "relaxed codes": gap(q_ref, q_ours),
        "loss": gap(loss_ref, loss_ours),
        "d loss / d z": gap(z_ref.grad, z_ours.grad),
        "d loss / d codebook": gap(book_ref.grad, layer_ours.get_codebook().weight.grad),
        "d loss / d log s^2": gap(log_var_ref.grad, layer_ours.log_variance.grad),
    }


def _data():
    return FashionMNIST("train", 32, 5000), FashionMNIST("test", 32, 5000)


def train_reference(reference_model, args, seed: int, run_dir: Path) -> dict:
    """The reference GaussianSQVAE trained for ``args.steps`` (its own loop, on the CPU); metrics on test."""
    result_file = run_dir / "metrics.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    torch.manual_seed(seed)
    cfgs = SimpleNamespace(
        dataset=SimpleNamespace(name="CIFAR10", dim_x=32 * 32),  # CIFAR10: the reference's 32x32 network
        network=SimpleNamespace(name="resnet", num_rb=2),
        model=SimpleNamespace(param_var_q="gaussian_1", log_param_q_init=math.log(args.init_variance)),
        quantization=SimpleNamespace(
            size_dict=args.codebook_size, dim_dict=64, temperature=SimpleNamespace(init=1.0)
        ),
    )
    flgs = SimpleNamespace(arelbo=True, bn=True, var_q=False)
    model = reference_model.GaussianSQVAE(cfgs, flgs)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train, test = _data()
    loader = torch.utils.data.DataLoader(
        train, batch_size=32, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed)
    )
    variances, step, start = [], 0, time.perf_counter()
    model.train()
    while step < args.steps:
        for images, _ in loader:
            step += 1
            model.quantizer.set_temperature(max(math.exp(-args.temperature_decay * step), 0.0))
            _, _, loss = model(images, flg_train=True, flg_quant_det=False)
            optimizer.zero_grad()
            loss["all"].backward()
            optimizer.step()
            if step % max(1, args.steps // 20) == 0 or step == 1:
                variances.append(float(model.log_param_q_scalar.detach().exp()))
            if step == args.steps:
                break
    seconds = time.perf_counter() - start
    model.eval()
    squared, values, counts = 0.0, 0, torch.zeros(args.codebook_size, dtype=torch.long)
    with torch.no_grad():
        for images, _ in torch.utils.data.DataLoader(test, batch_size=500):
            z = model.encoder(images).permute(0, 2, 3, 1).reshape(-1, 64)
            index = torch.cdist(z, model.codebook).argmin(-1)  # argmax of the posterior (isotropic s^2)
            quantized = model.codebook[index].reshape(images.shape[0], 8, 8, 64).permute(0, 3, 1, 2)
            squared += (model.decoder(quantized).clamp(0, 1) - images).pow(2).sum().item()
            values += images.numel()
            counts += torch.bincount(index, minlength=args.codebook_size)
    perplexity, used = perplexity_from_counts(counts)
    result = {
        "rmse": math.sqrt(squared / values),
        "perplexity": [float(perplexity)],
        "codes_used": [int(used)],
        "variances": variances,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_images_per_second": args.steps * 32 / seconds,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def train_ours(args, seed: int, run_dir: Path) -> dict:
    model = dict(
        in_channels=1,
        hidden_channels=64,
        embedding_dim=64,
        num_res_blocks=2,
        num_stem_downsamples=2,
        layers_per_resolution=[1],
        codebook_sizes=args.codebook_size,
        quantizer="sq",
        codebook_init="random",
        init_variance=args.init_variance,
        temperature_decay=args.temperature_decay,
    )
    data = {"validation_size": 5000}
    result = train_or_read(model, data, args.steps, seed, run_dir, None, {"betas": (0.9, 0.999)})
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    from tokenizer import HQVAE

    result["variances"] = [h["variances"][0] for h in history]
    result["parameters"] = sum(p.numel() for p in HQVAE.from_pretrained(run_dir / "model").parameters())
    return result


def _mean_std(values: list[float], digits: int) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def to_markdown(check: dict, rows: list[dict], args) -> str:
    lines = [
        "Objective check (float32 rows, K = 32, d = 16, s^2 0.7, tau 0.5, shared Gumbel noise): max |reference "
        "- ours| / max |reference|",
        "",
        "| quantity | relative difference |",
        "|---|---|",
        *[f"| {k} | {v:.3g} |" for k, v in check.items()],
        "",
        f"Training: Fashion-MNIST 32x32, one 8x8 layer, K = {args.codebook_size}, d = 64, s^2 init "
        f"{args.init_variance:g}, tau = exp(-{args.temperature_decay:g} t), batch 32, {args.steps} steps, Adam lr "
        "1e-3 betas (0.9, 0.999), test split, argmax quantization.",
        "",
        "| implementation | seeds | parameters | test RMSE | perplexity | codes used (min) | s^2 start -> 25 % -> "
        "end (seed 0) | train img/s (median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("reference", "ours"):
        group = [r for r in rows if r["implementation"] == name]
        if not group:
            continue
        s2 = group[0]["variances"]
        lines.append(
            f"| {name} | {len(group)} | {group[0]['parameters']:,} | {_mean_std([r['rmse'] for r in group], 4)} | "
            f"{_mean_std([r['perplexity'][0] for r in group], 1)} | {min(r['codes_used'][0] for r in group)} | "
            f"{s2[0]:.2f} -> {s2[len(s2) // 4]:.2f} -> {s2[-1]:.2f} | "
            f"{statistics.median(r['train_images_per_second'] for r in group):.0f} |"
        )
    lines += ["", "| implementation | seed | test RMSE | perplexity | codes used |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['implementation']} | {r['seed']} | {r['rmse']:.4f} | {r['perplexity'][0]:.1f} | "
            f"{r['codes_used'][0]} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sqvae-source", type=Path, required=True, help="a sony/sqvae checkout")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--codebook-size", type=int, default=512)
    parser.add_argument(
        "--init-variance", type=float, default=10.0, help="s^2 at init (reference: log_param_q)"
    )
    parser.add_argument("--temperature-decay", type=float, default=1e-5, help="r of tau = exp(-r t)")
    parser.add_argument("--implementations", nargs="+", default=["reference", "ours"])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if not (args.sqvae_source / "vision" / "model.py").is_file():
        raise FileNotFoundError(
            f"--sqvae-source {args.sqvae_source} has no vision/model.py (a sony/sqvae checkout?)"
        )
    out_root = args.output or Path("runs/benchmarks") / f"sqvae_oracle_{args.steps}"
    out_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        reference_model, reference_quantizer = load_reference(args.sqvae_source.resolve(), Path(workdir))
        check = objective_check(reference_quantizer)
        print(json.dumps(check, indent=2), flush=True)
        rows = []
        for seed in args.seeds:
            for name in args.implementations:
                run_dir = out_root / f"{name}_seed{seed}"
                if name == "reference":
                    result = train_reference(reference_model, args, seed, run_dir)
                else:
                    result = train_ours(args, seed, run_dir)
                rows.append({"implementation": name, "seed": seed, **result})
                print(
                    f"{name} seed {seed}: rmse {result['rmse']:.4f}, codes {result['codes_used']}", flush=True
                )
                (out_root / "results.json").write_text(
                    json.dumps({"objective": check, "runs": rows}, indent=2)
                )
    table = to_markdown(check, rows, args)
    (out_root / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    from tokenizer.console import run_cli

    run_cli(main)
