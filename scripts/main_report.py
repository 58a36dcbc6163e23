"""The main job's report: ``summary.md`` (one screen: budget, machine, results, where everything is), the
labelled figures, and the stage clock that keeps a run's real timings when the job is run again.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

TIMINGS_FILE = "timings.json"


class StageClock:
    """Wall time per stage, kept in ``<output>/timings.json`` across invocations of the job.

    The first invocation that completes a stage records its time under ``stages``; a later invocation (a rerun
    that finds the stage done, or re-evaluates it) records its own time under ``reruns`` instead, so a rerun
    never overwrites what the work took. A stage killed part-way records nothing; the invocation that
    finishes it records the time it spent (the killed part is not counted)."""

    def __init__(self, output: Path):
        self.path = Path(output) / TIMINGS_FILE
        self.record = (
            json.loads(self.path.read_text()) if self.path.exists() else {"stages": {}, "reruns": []}
        )
        self.invocation = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "stages": {}}

    def __call__(self, name: str, log):
        clock = self

        class _Stage:
            def __enter__(self):
                log.info("== %s", name)
                self.start = time.perf_counter()

            def __exit__(self, kind, *exc):
                if kind is not None:
                    return False
                seconds = round(time.perf_counter() - self.start, 1)
                clock.finish(name, seconds)
                log.info("== %s done in %.1f s", name, seconds)
                return False

        return _Stage()

    def finish(self, name: str, seconds: float) -> None:
        if name in self.record["stages"]:
            self.invocation["stages"][name] = seconds
            if self.invocation not in self.record["reruns"]:
                self.record["reruns"].append(self.invocation)
        else:
            self.record["stages"][name] = seconds
        temporary = self.path.with_name(TIMINGS_FILE + ".tmp")
        temporary.write_text(json.dumps(self.record, indent=2))
        temporary.replace(self.path)

    @property
    def stages(self) -> dict[str, float]:
        return dict(self.record["stages"])

    @property
    def reruns(self) -> list[dict]:
        return list(self.record["reruns"])


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    return info


def save_sample_grid(pipe, images, labels: list[int], path: Path, sampler: dict) -> None:
    from tokenizer.grids import class_rows, save_labelled_grid

    settings = ", ".join(f"{k} {v}" for k, v in sampler.items())
    rows, names = class_rows(images, labels, pipe.class_names())
    save_labelled_grid(path, rows, names, title=f"pipeline samples, one row per class ({settings})")


def save_test_reconstructions(tokenizer_dir: Path, path: Path, count: int = 16) -> None:
    """The first ``count`` test images above their argmax-code reconstructions."""
    import torch

    from tokenizer.data import dataset_split
    from tokenizer.grids import reconstruction_rows, save_labelled_grid
    from tokenizer.model import HQVAE
    from tokenizer.runs import tokenizer_and_data

    model_dir, data = tokenizer_and_data(tokenizer_dir)
    model = HQVAE.from_pretrained(model_dir).eval()
    test = dataset_split(data, "test", model.config.in_channels)
    images = torch.stack([test[i][0] for i in range(min(count, len(test)))])
    with torch.no_grad():
        reconstructions = model(images).sample.clamp(0, 1)
    title = f"test images (first {len(images)}) and their reconstructions from argmax codes"
    save_labelled_grid(path, *reconstruction_rows(images, reconstructions), title=title)


def twin_comparison(m: dict) -> list[str]:
    """The stochastic tokenizer against its deterministic twin, trained at the same budget, said plainly."""
    sq, vq = m["tokenizer"], m["vq_twin"]
    ratio = sq["rmse"] / vq["rmse"]
    sq_name = m["tokenizer_name"]
    verdict = (
        f"{sq_name} reconstructs better than {vq['name']} here"
        if ratio < 1
        else f"{vq['name']} reconstructs better than {sq_name} here"
    )
    regime = sq.get("rate_regime") or {}
    return [
        f"## {sq_name} against its deterministic twin {vq['name']} (same architecture, data, optimiser, steps)",
        "",
        "| tokenizer | test RMSE | perplexity per layer | codes used per layer |",
        "|---|---|---|---|",
        *[
            f"| {name} | {r['rmse']:.4f} | {', '.join(f'{p:.1f}' for p in r['perplexity'])} | {r['codes_used']} |"
            for name, r in ((sq_name, sq), (vq["name"], vq))
        ],
        "",
        f"**{verdict}: RMSE ratio {sq_name} / {vq['name']} = {ratio:.3f}** at {m['budget']['tokenizer_steps']} steps. "
        + (f"This run's rate regime: rho = (D/2) / KL_max = {regime['rho']:.2f}. " if regime else "")
        + "At small rho (few pixels per code, as on Fashion-MNIST 32x32) the ELBO keeps SQ's posteriors soft "
        "and a short CPU budget favours the deterministic quantizer; see the README section "
        "'When does stochastic quantization beat VQ?' for the measured regimes.",
        "",
    ]


def summary(m: dict) -> str:
    rec, budget, host = m["reconstruction_test"], m["budget"], m["machine"]
    lines = [
        f"# Main job report: {m['tokenizer_name']} + {m['prior_name']} on Fashion-MNIST",
        "",
        f"Budget: tokenizer and twin {budget['tokenizer_steps']} steps each, priors {budget['prior_steps']} steps "
        f"(scale {budget['scale']}). Machine: {host['cpu']}, {host['cpu_cores']} cores "
        f"({host['torch_threads']} torch threads), {host['device']}, torch {host['torch']}. "
        f"Work time {m['total_seconds']:.0f} s (stage timings at the end).",
        "",
        f"## Tokenizer: {m['tokenizer_name']} (test split, argmax codes)",
        "",
        f"RMSE {rec['rmse']:.4f}, PSNR {rec['psnr']:.2f}, SSIM {rec['ssim']:.3f}, "
        f"LPIPS {rec['lpips'] if rec['lpips'] is not None else 'not measured (no VGG16 weights)'}; "
        f"perplexity per layer {', '.join(f'{p:.1f}' for p in rec['perplexity'])}, codes used {rec['codes_used']}. "
        "`reconstructions.png`: test images above their reconstructions; `training_curves.png`: validation "
        "RMSE, rate, perplexity, s², s² / code spacing, entropy and τ over steps for both tokenizers.",
        "",
        *twin_comparison(m),
        "## Priors (validation loss, nats per code)",
        "",
        "| prior | steps | loss | log K | unigram entropy |",
        "|---|---|---|---|---|",
    ]
    for p in m["priors"]:
        name = f"{p['prior']} level {p['level']}" if p["level"] is not None else p["prior"]
        loss = p["validation"]["loss"] if p["validation"] else float("nan")
        lines.append(
            f"| {name} | {p['steps']} | {loss:.3f} | {p['uniform_loss']:.3f} | {p['unigram_entropy']:.3f} |"
        )
    fid = m["fid"] or {}
    lines += ["", "## Samples", "", f"`samples.png`: 8 samples per class, one labelled row per class; sampler {m['sampler']}.", ""]  # fmt: skip
    if "fid" in fid:
        pr = fid.get("precision_recall", {})
        lines.append(
            f"FID {fid['fid']:.1f} of {fid['num_samples']} class-balanced samples against "
            f"{fid['protocol']['reference']['items']} test images (small counts bias FID upward; compare only at "
            f"equal counts); precision {pr.get('precision', float('nan')):.2f}, "
            f"recall {pr.get('recall', float('nan')):.2f}."
        )
    else:
        lines.append(f"FID not computed: {fid.get('skipped', 'no Inception weights')}")
    lines += [
        "",
        "## Where things are",
        "",
        f"- pipeline: `{m['paths']['pipeline']}` (`HQVAEPipeline.from_pretrained(...)`)",
        f"- tokenizer run: `{m['paths']['tokenizer']}` (`HQVAE.from_pretrained(...)` takes the run folder); "
        f"its twin: `{m['paths']['vq_twin']}`",
        f"- TensorBoard: `tensorboard --logdir {m['paths']['output']}`",
        "",
        "## Stage timings (s, the invocation that did the work)",
        "",
        *[f"- {k}: {v}" for k, v in m["timings_seconds"].items()],
    ]
    for rerun in m.get("reruns", []):
        total = sum(rerun["stages"].values())
        lines.append(f"- rerun {rerun['started']}: {total:.0f} s re-evaluating {', '.join(rerun['stages'])}")
    return "\n".join(lines) + "\n"
