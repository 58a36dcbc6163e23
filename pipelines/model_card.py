"""The model card (README.md) that ``HQVAEPipeline.save_pretrained`` writes next to the weights."""

from __future__ import annotations

import json
from pathlib import Path

CITATION = """@article{takida2024hqvae,
  title   = {{HQ-VAE}: Hierarchical Discrete Representation Learning with Variational Bayes},
  author  = {Takida, Yuhta and Ikemiya, Yukara and Shibuya, Takashi and Shimada, Kazuki and Choi, Woosung and
             Lai, Chieh-Hsin and Murata, Naoki and Uesaka, Toshimitsu and Uchida, Kengo and Liao, Wei-Hsiang and
             Mitsufuji, Yuki},
  journal = {Transactions on Machine Learning Research},
  year    = {2024}
}"""


def _section(title: str, value) -> str:
    if value is None:
        return f"## {title}\n\nNot recorded.\n"
    return f"## {title}\n\n```json\n{json.dumps(value, indent=2, default=str)}\n```\n"


def write_model_card(pipe, path: Path) -> None:
    from prior.masked import MaskedPriorStack

    tokenizer = pipe.hqvae.config
    from prior.contextual import ContextualRQTransformer

    if isinstance(pipe.prior, MaskedPriorStack):
        prior_text = (
            f"{len(pipe.prior.levels)} Muse/MaskGIT masked-token priors (one per code level, the finer conditioned "
            "on the coarser) with `MaskedTokenScheduler`"
        )
    elif isinstance(pipe.prior, ContextualRQTransformer):
        prior_text = (
            f"a contextual RQ-Transformer over {pipe.prior.config.depth} residual code layers (draft-and-revise "
            "decoding, `DraftAndReviseScheduler`)"
        )
    else:
        prior_text = f"an RQ-Transformer over {pipe.prior.config.depth} residual code layers"
    metadata = pipe.config.get("metadata") or {}
    labels = pipe.config.get("id2label") or {}
    lines = [
        "---",
        "library_name: diffusers",
        "tags: [hqvae, image-generation, class-conditional, vq-vae, hierarchical]",
        "---",
        "",
        "# HQ-VAE two-stage image generator",
        "",
        f"- Tokenizer: HQ-VAE, `quantizer={tokenizer.quantizer}`, layers per resolution "
        f"{list(tokenizer.layers_per_resolution)}, codebook sizes {list(pipe.hqvae.codebook_sizes)}.",
        f"- Prior: {prior_text}; {pipe.num_classes} classes.",
        f"- Labels: {', '.join(f'{k}: {v}' for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))) or 'none'}.",
        "",
        "## Usage",
        "",
        "```python",
        "from pipelines import HQVAEPipeline",
        "",
        'pipe = HQVAEPipeline.from_pretrained("<this folder>")',
        "images = pipe(class_labels=[0, 1], num_images_per_label=4, guidance_scale=2.0).images",
        "```",
        "",
        _section("Training data", metadata.get("data")),
        _section("Tokenizer training and test metrics", metadata.get("tokenizer")),
        _section("Prior training and validation metrics", metadata.get("priors")),
        "Validation losses are in nats per code; `uniform_loss` = log K is the loss of a uniform guess and "
        "`unigram_entropy` the loss of a prior that knows only code frequencies.",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
