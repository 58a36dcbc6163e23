"""The wider quantizer family as single layers with the interface of ``StochasticQuantizer`` /
``VectorQuantizer`` (rows (N, d) in, ``QuantizerOutput`` out), so that each composes with ``ResidualQuantizer``
(one layer, residual stacks) and every ``HQVAE`` layout, and the comparison with SQ and VQ is like for like:

- ``FiniteScalarQuantizer`` (FSQ; Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple"):
  project to c dimensions, bound each to its level count, round with the straight-through estimator; the
  codebook is implicit (prod levels codes), there is no auxiliary loss.
- ``LookupFreeQuantizer`` (LFQ; Yu et al. 2024, MAGVIT-v2 "Language Model Beats Diffusion"): project to
  c = log2 K dimensions, take the sign of each (straight-through); implicit codebook {-1, 1}^c; a commitment
  loss and the entropy penalty E[H(q(z))] - gamma H(E[q(z)]) (eq. 5 of MAGVIT-v2) that spreads code usage.
  Optionally a tanh bound before the signs (``soft_clamp``); bounded and with both terms off it reconstructs
  2x better here than with MAGVIT-v2's weights, which pin the signs (docs/benchmarks.md "Why LFQ trailed").
- ``ProductQuantizer`` (product quantization, Jégou et al. 2011): the d dimensions split into M groups, each
  quantized by its own VQ codebook of K^(1/M) codes; the index is the mixed-radix number of the group indices,
  so K = prod K_m codes cost M K^(1/M) code vectors. Straight-through and eq. 7's terms as for VQ.
- ``StochasticProductQuantizer``: product quantization with SQ inside (M codebooks, one s^2): eq. 2's SQ over
  the product codebook, whose posterior factorises over the groups.
- ``GumbelQuantizer`` (Gumbel-softmax VQ: DALL-E's dVAE, taming-transformers' ``GumbelQuantize``): logits
  over K codes from a learned linear head on the encoder rows, a Gumbel-softmax relaxed one-hot at the model's
  annealed temperature while training, the hard argmax at evaluation, and a KL to the uniform prior with its own
  weight.

**Gumbel-softmax VQ and SQ.** Both relax a categorical posterior with the Gumbel-softmax at an annealed
temperature and pay a KL to the uniform prior. In SQ (HQ-VAE) the posterior is *defined by the codebook*:
logits -||z - b_k||^2 / (2 s^2), with a learnable dequantization variance s^2 that sets how hard it is and a
latent term ||z - Z||^2 / (2 s^2) that ties encoder outputs to codes; the whole objective is an ELBO (Gaussian
decoder with its ML variance), so the KL's weight is 1 and s^2 anneals itself. In Gumbel-VQ the logits come
from a free linear head, unrelated to the code vectors' geometry, nothing ties z to the codes, and the KL weight
(5e-4 in taming) and the temperature schedule are hyper-parameters beside an MSE reconstruction loss.

The implicit codebooks (FSQ, LFQ) expose ``codebook_size``, ``lookup(indices)`` and a no-op
``init_from_data`` through ``get_codebook()`` (they have no code vectors to initialise), so decoding indices,
perplexities and priors treat every layer alike.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from tokenizer.quantizers import (
    Codebook,
    QuantizerOutput,
    VectorQuantizer,
    calibrate_log_variance,
    gumbel_noise,
    stochastic_quantize,
)


def _straight_through(value: torch.Tensor, hard: torch.Tensor) -> torch.Tensor:
    """``hard`` forward, identity gradient to ``value``."""
    return value + (hard - value).detach()


class _ImplicitCodebook(nn.Module):
    """What callers need of a codebook whose codes are computed, not stored: size, lookup, (no) data init."""

    codebook_size: int

    def code_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_codebook(self):
        return self

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors in the model's embedding space, (*indices.shape, d), fp32."""
        return self.project_out(self.code_vectors(indices).float()).float()

    def init_from_data(
        self, z: torch.Tensor, iterations: int = 10, method: str = "kmeans", noise: float = 0.0
    ) -> None:
        """Nothing to initialise: the codes are fixed points of the level grid (the projections learn)."""


class FiniteScalarQuantizer(_ImplicitCodebook):
    """FSQ: rows (N, d) -> c = len(levels) bounded scalars, each rounded to one of ``levels[i]`` values.

    bound(z) = tanh(z + shift) * h - offset with h = (L - 1)(1 + eps) / 2, offset 0.5 for even L (so that
    rounding gives exactly L values), then round (straight-through) and divide by L // 2 to land in [-1, 1]
    (Mentzer et al. 2023, section 3 and appendix A; their code has (1 - eps), which makes shift = atanh(offset
    / h) undefined for L = 2; (1 + eps), as in lucidrains' vector-quantize-pytorch, keeps L values for every L). Index = sum_i digit_i * prod_{j < i} L_j.
    """

    def __init__(self, levels: list[int], dim: int, eps: float = 1e-3):
        super().__init__()
        levels = [int(v) for v in levels]
        if not levels or any(v < 3 for v in levels):
            # L = 2 is degenerate under this bound: bound(0) = 0 is the top of its range (-1, 0], so the second
            # value needs z < -atanh(1 / (1 + eps)) = -3.8, where the gradient is ~1 % of other L's (measured on
            # N(0, 1) rows: 4 of 8 codes for [2, 2, 2], mean |grad| 0.006 against 0.44-0.61 for L = 3, 4, 8)
            raise ValueError(
                f"fsq_levels must be a non-empty list of integers >= 3, got {levels} "
                "(for binary codes use quantizer='lfq', which takes the sign at 0)"
            )
        self.levels_list = levels
        self.codebook_size = math.prod(levels)
        self.eps = eps
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32), persistent=False)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.long), 0)
        self.register_buffer("basis", basis, persistent=False)
        self.project_in = nn.Linear(dim, len(levels)) if dim != len(levels) else nn.Identity()
        self.project_out = nn.Linear(len(levels), dim) if dim != len(levels) else nn.Identity()

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        half = (self.levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _scaled(self, z: torch.Tensor) -> torch.Tensor:
        """Rows in level space -> codes in [-1, 1] (straight-through rounding)."""
        bounded = self._bound(z)
        return _straight_through(bounded, bounded.round()) / (self.levels // 2)

    def _indices(self, codes: torch.Tensor) -> torch.Tensor:
        half_width = self.levels // 2
        digits = (codes * half_width + half_width).round().long()
        return (digits * self.basis).sum(-1)

    def code_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        """Indices -> codes in [-1, 1]^c (before ``project_out``)."""
        half_width = self.levels // 2
        digits = (indices.long().unsqueeze(-1) // self.basis) % self.levels.long()
        return (digits.float() - half_width) / half_width

    def forward(self, z: torch.Tensor, mode: str = "argmax", temperature: float = 1.0, generator=None):
        """``mode`` / ``temperature`` / ``generator`` are SQ's: FSQ is deterministic (``"sample"`` is an error)."""
        if mode == "sample":
            raise ValueError("mode='sample' needs quantizer='sq'; FSQ is deterministic")
        codes = self._scaled(self.project_in(z.float()).float())
        indices = self._indices(codes.detach())
        quantized = self.project_out(codes).float()
        return QuantizerOutput(quantized=quantized, indices=indices, entropy=torch.zeros_like(z[:, 0]))


class LookupFreeQuantizer(_ImplicitCodebook):
    """LFQ: rows (N, d) -> c = log2 K signs in {-1, 1} (straight-through); index = sum_i [q_i > 0] 2^i.

    Its own terms (per element, like VQ's): ``commitment_weight`` ||z - sg[q]||^2 and the entropy penalty
    ``entropy_weight`` (mean_i H(p_i) - ``diversity_gamma`` H(mean_i p_i)), p_i = softmax over the K codes of
    -||z_i - c_k||^2 * ``inv_temperature`` (MAGVIT-v2 eq. 5; the batch mean is over all processes under DDP).

    ``soft_clamp``: v > 0 bounds the projected values, u <- v tanh(u / v), before the signs and both terms (the
    ``soft_clamp_input_value`` of lucidrains' LFQ). Without a bound only the commitment term keeps u finite:
    with both terms 0 the straight-through gradient grew u until the loss was NaN (Fashion-MNIST, step 958).
    With the bound, either term drives u into tanh's saturation, where the straight-through gradient vanishes.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        entropy_weight: float = 0.1,
        diversity_gamma: float = 1.0,
        inv_temperature: float = 100.0,
        commitment_weight: float = 0.25,
        input_norm: bool = False,
        soft_clamp: float | None = None,
    ):
        super().__init__()
        if soft_clamp is not None and not soft_clamp > 0:
            raise ValueError(f"lfq_soft_clamp must be > 0 (or None for no bound), got {soft_clamp}")
        bits = int(round(math.log2(codebook_size))) if codebook_size >= 2 else 0
        if codebook_size < 2 or 2**bits != codebook_size:
            raise ValueError(f"LFQ needs a codebook size that is a power of 2 (>= 2), got {codebook_size}")
        if bits > 16:
            raise ValueError(f"LFQ's entropy penalty enumerates all 2^c codes: c <= 16, got K = 2^{bits}")
        self.codebook_size = codebook_size
        self.bits = bits
        self.entropy_weight = entropy_weight
        self.diversity_gamma = diversity_gamma
        self.inv_temperature = inv_temperature
        self.commitment_weight = commitment_weight
        self.soft_clamp = soft_clamp
        self.register_buffer("powers", 2 ** torch.arange(bits), persistent=False)
        # ``input_norm``: rows standardised over their d values (no affine parameters) before the projection
        self.norm = nn.LayerNorm(dim, elementwise_affine=False) if input_norm else nn.Identity()
        self.project_in = nn.Linear(dim, bits) if dim != bits else nn.Identity()
        self.project_out = nn.Linear(bits, dim) if dim != bits else nn.Identity()

    def code_vectors(self, indices: torch.Tensor) -> torch.Tensor:
        bits = (indices.long().unsqueeze(-1) // self.powers) % 2
        return bits.float() * 2 - 1

    def _entropy_penalty(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penalty, per-row entropy) over all K codes; ||z - c||^2 = const - 2 z.c for c in {-1, 1}^c."""
        codes = self.code_vectors(torch.arange(self.codebook_size, device=z.device))  # (K, c)
        log_probs = torch.log_softmax(2 * self.inv_temperature * (z @ codes.t()), dim=-1)
        probs = log_probs.exp()
        per_row = -(probs * log_probs).sum(-1)
        mean_probs = probs.mean(0)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            from torch.distributed.nn.functional import all_reduce

            mean_probs = all_reduce(mean_probs) / dist.get_world_size()  # differentiable
        batch_entropy = -(mean_probs * mean_probs.clamp_min(1e-12).log()).sum()
        return per_row.mean() - self.diversity_gamma * batch_entropy, per_row

    def forward(self, z: torch.Tensor, mode: str = "argmax", temperature: float = 1.0, generator=None):
        if mode == "sample":
            raise ValueError("mode='sample' needs quantizer='sq'; LFQ is deterministic")
        projected = self.project_in(self.norm(z.float())).float()
        if self.soft_clamp is not None:
            projected = self.soft_clamp * torch.tanh(projected / self.soft_clamp)
        hard = torch.where(projected > 0, 1.0, -1.0)
        codes = _straight_through(projected, hard)
        indices = ((hard > 0).long() * self.powers).sum(-1)
        quantized = self.project_out(codes).float()
        output = QuantizerOutput(quantized=quantized, indices=indices, entropy=torch.zeros_like(z[:, 0]))
        if torch.is_grad_enabled():
            penalty, entropy = self._entropy_penalty(projected)
            output.entropy = entropy.detach()
            output.commitment_loss = self.commitment_weight * (projected - hard).pow(2).mean()
            output.codebook_loss = self.entropy_weight * penalty
        return output


class GumbelQuantizer(nn.Module):
    """Gumbel-softmax VQ: logits = W z + b over K codes (a learned head), relaxed one-hot
    w = softmax((logits + g) / tau) while training (z_q = w B), argmax at evaluation (z_q = B[argmax]), and
    ``kl_weight`` * KL(softmax(logits) || uniform) per row (taming-transformers' GumbelQuantize, DALL-E's dVAE).
    tau is the model's annealed temperature (the same schedule as SQ's)."""

    def __init__(self, codebook_size: int, dim: int, kl_weight: float = 5e-4, codebook_init_std: float = 1.0):
        super().__init__()
        if kl_weight < 0:
            raise ValueError(f"gumbel_kl_weight must be >= 0, got {kl_weight}")
        self.codebook = Codebook(codebook_size, dim, init_std=codebook_init_std)
        self.to_logits = nn.Linear(dim, codebook_size)
        self.kl_weight = kl_weight

    def get_codebook(self) -> Codebook:
        return self.codebook

    def forward(self, z: torch.Tensor, mode: str = "argmax", temperature: float = 1.0, generator=None):
        if mode not in ("relaxed", "argmax", "sample"):
            raise ValueError(f"mode must be 'relaxed', 'argmax' or 'sample', got {mode!r}")
        codebook = self.codebook.weight.float()
        logits = self.to_logits(z.float()).float()
        log_probs = torch.log_softmax(logits, dim=-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        if mode == "relaxed":
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0 for the relaxed sample, got {temperature}")
            weights = torch.softmax((logits + gumbel_noise(logits, generator)) / temperature, dim=-1)
            quantized = weights @ codebook
            indices = logits.argmax(-1)
        else:
            indices = (
                (logits + gumbel_noise(logits, generator)).argmax(-1)
                if mode == "sample"
                else logits.argmax(-1)
            )
            quantized = F.embedding(indices, codebook)
        output = QuantizerOutput(quantized=quantized, indices=indices, entropy=entropy.detach())
        # KL(q || uniform) = log K - H(q), mean over rows (per element like the VQ terms), its own weight
        output.kl_loss = self.kl_weight * (math.log(codebook.shape[0]) - entropy).mean()
        return output


class _ProductCodebook(nn.Module):
    """The part shared by both product quantizers: d dimensions split into M groups (``torch.tensor_split``),
    K = K_m^M codes as mixed-radix indices (i = sum_m i_m K_m^m), lookup and data initialisation per group."""

    def _split(self, codebook_size: int, dim: int, groups: int, option: str) -> None:
        if groups < 1 or dim < groups:
            raise ValueError(f"{option} must be in [1, embedding_dim={dim}], got {groups}")
        sub_size = round(codebook_size ** (1 / groups))
        if sub_size < 2 or sub_size**groups != codebook_size:
            raise ValueError(
                f"product quantization with {option}={groups} needs a codebook size K = K_m^{groups}, "
                f"K_m >= 2; got K = {codebook_size}"
            )
        self.codebook_size = codebook_size
        self.sub_size = sub_size
        self.split_sizes = [len(part) for part in torch.arange(dim).tensor_split(groups)]
        self.register_buffer("radix", sub_size ** torch.arange(groups), persistent=False)

    def part_codebooks(self) -> list[Codebook]:
        raise NotImplementedError

    def get_codebook(self):
        return self

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        digits = (indices.long().unsqueeze(-1) // self.radix) % self.sub_size
        return torch.cat([book.lookup(digits[..., m]) for m, book in enumerate(self.part_codebooks())], -1)

    def init_from_data(
        self, z: torch.Tensor, iterations: int = 10, method: str = "kmeans", noise: float = 0.0
    ) -> None:
        for book, rows in zip(self.part_codebooks(), z.split(self.split_sizes, -1)):
            book.init_from_data(rows, iterations, method, noise)

    def _index(self, indices: list[torch.Tensor]) -> torch.Tensor:
        return sum(i * self.radix[m] for m, i in enumerate(indices))


class ProductQuantizer(_ProductCodebook):
    """Product quantization with VQ inside: rows (N, d) split into ``groups`` parts (``torch.tensor_split``),
    part m quantized by its own ``VectorQuantizer`` of K_m = K^(1/M) codes (EMA, code reset and the codebook
    loss as configured for VQ); index = sum_m i_m K_m^m. ``ResidualQuantizer`` applies the straight-through
    estimator and the commitment / codebook terms (eq. 7 / 15) to the concatenated code, as for VQ."""

    nearest_code = True

    def __init__(self, codebook_size: int, dim: int, groups: int = 2, **vq_kwargs):
        super().__init__()
        self._split(codebook_size, dim, groups, "pq_groups")
        self.parts = nn.ModuleList(VectorQuantizer(self.sub_size, n, **vq_kwargs) for n in self.split_sizes)

    @property
    def codebook_update(self) -> str:
        return self.parts[0].codebook_update

    def part_codebooks(self) -> list[Codebook]:
        return [part.get_codebook() for part in self.parts]

    def forward(self, z: torch.Tensor, mode: str = "argmax", temperature: float = 1.0, generator=None):
        if mode == "sample":
            raise ValueError("mode='sample' needs quantizer='sq'; PQ posteriors are deterministic")
        outputs = [part(rows) for part, rows in zip(self.parts, z.split(self.split_sizes, -1))]
        quantized = torch.cat([o.quantized for o in outputs], -1)
        indices = self._index([o.indices for o in outputs])
        return QuantizerOutput(quantized=quantized, indices=indices, entropy=torch.zeros_like(z[:, 0]))


class StochasticProductQuantizer(_ProductCodebook):
    """Product quantization with SQ inside (``HQVAE(quantizer="sq", sq_groups=M)``): M codebooks of
    K_m = K^(1/M) codes over the groups of dimensions and *one* dequantization variance s^2 for the layer.

    With one s^2 the SQ posterior over the product codebook, P-hat(z_i = b_k | z~_i) ∝
    exp(-||z~_i - b_k||^2 / (2 s^2)) with ||z~ - b_k||^2 = sum_m ||z~_m - b_{m, k_m}||^2, factorises into M
    independent categorical posteriors, so the layer *is* eq. 2's SQ with K = prod K_m codes at M K^(1/M)
    code vectors' cost: each group draws its own Gumbel-softmax relaxed sample, the entropy is the sum of the
    groups' entropies, and ``ResidualQuantizer`` applies eq. 6 / 14 / 26 unchanged (latent term
    ||z - Z||^2 / (2 s^2), KL = log K - H = sum_m (log K_m - H_m)).
    """

    stochastic = True

    def __init__(
        self, codebook_size: int, dim: int, groups: int = 2, init_variance: float = 1.0,
        codebook_init_std: float = 1.0,
    ):  # fmt: skip
        super().__init__()
        if init_variance <= 0:
            raise ValueError(f"init_variance must be > 0, got {init_variance}")
        self._split(codebook_size, dim, groups, "sq_groups")
        self.codebooks = nn.ModuleList(
            Codebook(self.sub_size, n, init_std=codebook_init_std) for n in self.split_sizes
        )
        self.log_variance = nn.Parameter(torch.tensor(math.log(init_variance)))

    @property
    def variance(self) -> torch.Tensor:
        return self.log_variance.exp()

    def part_codebooks(self) -> list[Codebook]:
        return list(self.codebooks)

    def calibrate_variance(self, z: torch.Tensor, entropy_fraction: float, iterations: int = 50) -> float:
        """``StochasticQuantizer.calibrate_variance`` on the product posterior (its entropy is the groups' sum)."""
        books = [book.weight for book in self.codebooks]
        return calibrate_log_variance(
            self, list(z.split(self.split_sizes, -1)), books, entropy_fraction, iterations
        )

    def forward(self, z: torch.Tensor, mode: str = "relaxed", temperature: float = 1.0, generator=None):
        parts = [
            stochastic_quantize(rows, book.weight, self.log_variance, temperature, mode, generator)
            for book, rows in zip(self.codebooks, z.split(self.split_sizes, -1))
        ]
        quantized = torch.cat([q for q, _, _ in parts], -1)
        indices = self._index([i for _, i, _ in parts])
        entropy = torch.stack([h for _, _, h in parts]).sum(0)
        return QuantizerOutput(quantized=quantized, indices=indices, entropy=entropy)
