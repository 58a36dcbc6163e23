"""HQ-VAE tokenizers: ``from tokenizer import HQVAE``.

Stage one of hqvae: SQ-VAE-2, RSQ-VAE and their hybrid (Takida et al., TMLR 2024), with VQ-VAE-2 and RQ-VAE
baselines on the same architecture, and the single-layer quantizers they are built from.
"""

from .model import HQVAE, HQVAEOutput
from .quantizers import (
    Codebook,
    GroupOutput,
    QuantizerOutput,
    ResidualQuantizer,
    StochasticQuantizer,
    VectorQuantizer,
    perplexity_from_indices,
)

__all__ = [
    "HQVAE",
    "HQVAEOutput",
    "Codebook",
    "GroupOutput",
    "QuantizerOutput",
    "ResidualQuantizer",
    "StochasticQuantizer",
    "VectorQuantizer",
    "perplexity_from_indices",
]
