"""Single-layer quantizers and the residual container.

- ``StochasticQuantizer``: stochastic quantization (SQ) of HQ-VAE / SQ-VAE, eq. 2 of Takida et al. (2024).
- ``VectorQuantizer``: nearest-code VQ with the straight-through estimator (VQ-VAE-2, RQ-VAE baselines).
- ``ResidualQuantizer``: stacks quantizers on the residual (RQ with VQ layers, RSQ with SQ layers), optionally
  sharing one codebook (owned once, by the first layer).

All distance and logit arithmetic runs in fp32, with autocast disabled, whatever the caller's precision.
Inputs are flattened to ``(N, d)`` rows; callers reshape.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# Rows per chunk are chosen so that one chunk's (rows x K) fp32 block has at most this many elements (64 MiB).
_MAX_CHUNK_ELEMENTS = 1 << 24

SQMode = Literal["relaxed", "argmax", "sample"]


def _rows_per_chunk(num_codes: int, max_elements: int = _MAX_CHUNK_ELEMENTS) -> int:
    return max(1, max_elements // max(1, num_codes))


def _fp32_no_autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device_type=device.type, enabled=False)


def squared_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||z_i - b_k||^2 for rows z (n, d) and codes (K, d) -> (n, K), via one matmul (no (n, K, d) tensor)."""
    z_sq = z.pow(2).sum(-1, keepdim=True)  # (n, 1)
    b_sq = codebook.pow(2).sum(-1)  # (K,)
    return torch.addmm(z_sq + b_sq, z, codebook.t(), beta=1.0, alpha=-2.0).clamp_min_(0.0)


@torch.no_grad()
def code_spacing(codebook: torch.Tensor) -> torch.Tensor:
    """The median over codes of the squared distance to the nearest *other* code of a (K, d) codebook: the
    scale an SQ variance s^2 is read against (eq. 2 depends on ||z - b_k||^2 / s^2 only)."""
    book = codebook.detach().float()
    distances = squared_distances(book, book).fill_diagonal_(float("inf"))
    return distances.min(-1).values.median()


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sums a statistic over processes when running distributed (no-op otherwise)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def perplexity_from_counts(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(H) of a code histogram, and the number of distinct codes used."""
    counts = counts.float()
    probs = counts / counts.sum().clamp_min(1.0)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).sum()


def perplexity_from_indices(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(H) of the empirical code distribution, and the number of distinct codes used."""
    return perplexity_from_counts(torch.bincount(indices.reshape(-1), minlength=num_codes))


@dataclass
class QuantizerOutput:
    """What one quantizer returns for rows ``z`` of shape (N, d).

    quantized: (N, d) code vectors (relaxed mixture while SQ trains; straight-through for VQ).
    indices: (N,) hard code indices (argmax of P-hat for SQ, nearest code for VQ).
    entropy: (N,) entropy H(P-hat(z_i | z~_i)) in nats; zeros for VQ (a deterministic posterior).
    kl_loss / commitment_loss / codebook_loss: a layer's own 0-d objective terms, for layers that carry them
        (``tokenizer.quantizer_family``: Gumbel-VQ's KL, LFQ's commitment and entropy penalty); None for SQ and
        VQ, whose terms ``ResidualQuantizer`` computes (they depend on the residual stack, eq. 14 / 15).
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    entropy: torch.Tensor
    kl_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None


@dataclass
class GroupOutput:
    """What a ``ResidualQuantizer`` returns for the rows (N, d) of one resolution's target: the per-layer
    outputs, the quantized sum that flows on, and this group's part of the objective (per image).

    quantized: (N, d) sum of the layers' codes (straight-through to the target for VQ while gradients flow).
    latent_loss: SQ: the latent term of eq. 6 / 14 / 26 (0-d); VQ: 0.
    kl_losses / commitment_losses / codebook_losses: (L_r,) per layer; zeros where a term is not the layers'.
    """

    layers: list[QuantizerOutput]
    quantized: torch.Tensor
    latent_loss: torch.Tensor
    kl_losses: torch.Tensor
    commitment_losses: torch.Tensor
    codebook_losses: torch.Tensor

    @property
    def loss(self) -> torch.Tensor:
        """The group's whole contribution to the objective."""
        return (
            self.latent_loss
            + self.kl_losses.sum()
            + self.commitment_losses.sum()
            + self.codebook_losses.sum()
        )


def _nearest_index(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Index of the nearest of ``codes`` (K, d) for each row of z (N, d), in chunks of bounded memory."""
    step = _rows_per_chunk(codes.shape[0])
    return torch.cat([squared_distances(c, codes).argmin(-1) for c in z.split(step)])


# k-means initialisation fits at most this many rows per code (a random subset of the batch): enough for the
# centroids, and it bounds the cost of k-means++ seeding (K sequential passes over the rows) on large batches.
_KMEANS_ROWS_PER_CODE = 16


def _kmeans(z: torch.Tensor, num_codes: int, iterations: int) -> torch.Tensor:
    """Lloyd's k-means of rows z (N, d), seeded by k-means++ (D^2 sampling from the global RNG). With N < K,
    rows are repeated with a 1 % jitter so that all K codes are distinct."""
    num_rows = z.shape[0]
    if num_rows < num_codes:
        centroids = z[torch.randint(0, num_rows, (num_codes,), device=z.device)].clone()
        return centroids + 0.01 * z.std(0, unbiased=False).clamp_min(1e-12) * torch.randn_like(centroids)
    if num_rows > _KMEANS_ROWS_PER_CODE * num_codes:
        z = z[torch.randperm(num_rows, device=z.device)[: _KMEANS_ROWS_PER_CODE * num_codes]]
        num_rows = z.shape[0]
    chosen = [int(torch.randint(0, num_rows, ()))]
    nearest = squared_distances(z, z[chosen[-1]].unsqueeze(0)).squeeze(-1)  # (N,) to the closest seed
    for _ in range(num_codes - 1):
        weights = nearest.clamp_min(0)
        index = (
            int(torch.multinomial(weights, 1)) if weights.sum() > 0 else int(torch.randint(0, num_rows, ()))
        )
        chosen.append(index)
        nearest = torch.minimum(nearest, squared_distances(z, z[index].unsqueeze(0)).squeeze(-1))
    centroids = z[torch.tensor(chosen, device=z.device)].clone()
    for _ in range(iterations):
        assignment = _nearest_index(z, centroids)
        counts = torch.bincount(assignment, minlength=num_codes).float()
        sums = torch.zeros_like(centroids).index_add_(0, assignment, z)
        used = counts > 0
        centroids[used] = sums[used] / counts[used].unsqueeze(-1)
    return centroids


class Codebook(nn.Module):
    """K code vectors of dimension d, with optional EMA statistics and dead-code reset (VQ baselines)."""

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        use_ema: bool = False,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        init_std: float = 1.0,
    ):
        super().__init__()
        if init_std <= 0:
            raise ValueError(f"init_std must be > 0, got {init_std}")
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2, got {codebook_size}")
        if not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {ema_decay}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.use_ema = use_ema
        self.ema_decay = ema_decay
        self.ema_epsilon = ema_epsilon
        # EMA codebooks are not trained by gradient; the tensor stays a Parameter so it is saved and moved
        # like every other weight.
        self.weight = nn.Parameter(torch.randn(codebook_size, dim) * init_std, requires_grad=not use_ema)
        if use_ema:
            # One pseudo-observation per code: the initial codebook is the EMA's starting point. Starting the
            # counts at zero with the sums at the codes (rosinality's / taming's EmbeddingEMA) divides every
            # code unused in the first batch by the Laplace epsilon, throwing it ~1e5 away where it can never
            # be picked again; that alone collapsed the Fashion-MNIST VQ-VAE-2 to one code per layer.
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", self.weight.detach().clone())

    @torch.no_grad()
    def init_from_data(
        self, z: torch.Tensor, iterations: int = 10, method: str = "kmeans", noise: float = 0.0
    ) -> None:
        """Data-dependent initialisation: the codes become k-means centroids of the rows z (N, d)
        (``method="kmeans"``), or K rows of z drawn at random (``"samples"``, with replacement when N < K),
        plus isotropic Gaussian noise of standard deviation ``noise`` (torch's global RNG; 0: none).

        Seeds with k-means++ (rows drawn with replacement, plus a small jitter, when N < K) and runs
        ``iterations`` Lloyd steps on at most 16 K random rows; a centroid that loses all its rows keeps its
        position. It changes where the codes start, not the objective, so it is within both the VQ and the SQ
        frameworks (lucidrains' ``kmeans_init`` does the same for VQ). Under DDP rank 0's result is broadcast.
        EMA statistics restart from the new codes (one pseudo-observation each).
        """
        z = z.detach().float().reshape(-1, self.dim)
        if z.shape[0] < 2:
            raise ValueError(f"cannot initialise a codebook from {z.shape[0]} row(s); need at least 2")
        if method not in ("kmeans", "samples"):
            raise ValueError(f"method must be 'kmeans' or 'samples', got {method!r}")
        if not noise >= 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if method == "samples":
            replace = z.shape[0] < self.codebook_size
            rows = (
                torch.randint(0, z.shape[0], (self.codebook_size,), device=z.device)
                if replace
                else torch.randperm(z.shape[0], device=z.device)[: self.codebook_size]
            )
            centroids = z[rows].clone()
        else:
            with _fp32_no_autocast(z.device):  # distances in fp32 even under a bf16 autocast
                centroids = _kmeans(z, self.codebook_size, iterations)
        if noise > 0:
            centroids = centroids + noise * torch.randn_like(centroids)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(centroids, src=0)
        self.weight.data.copy_(centroids.to(self.weight.dtype))
        if self.use_ema:
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(centroids)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for integer indices of any shape -> (*indices.shape, d), fp32."""
        return F.embedding(indices, self.weight.float())

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of z (N, d), computed in chunks."""
        with _fp32_no_autocast(z.device):
            return _nearest_index(z.float(), self.weight.float())

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """EMA codebook update (VQ-VAE appendix; decay 0.99 in the HQ-VAE baselines), synced across processes."""
        z = z.detach().float()
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, z)
        _all_reduce_sum(counts)
        _all_reduce_sum(sums)
        self.ema_cluster_size.mul_(self.ema_decay).add_(counts, alpha=1.0 - self.ema_decay)
        self.ema_embed_sum.mul_(self.ema_decay).add_(sums, alpha=1.0 - self.ema_decay)
        # Laplace smoothing keeps unused codes from dividing by zero.
        total = self.ema_cluster_size.sum()
        smoothed = (
            (self.ema_cluster_size + self.ema_epsilon)
            / (total + self.codebook_size * self.ema_epsilon)
            * total
        )
        self.weight.data.copy_(self.ema_embed_sum / smoothed.unsqueeze(-1))

    @torch.no_grad()
    def reset_dead_codes(self, z: torch.Tensor, threshold: float) -> int:
        """Replaces codes whose EMA usage fell below ``threshold`` by random rows of z ("code reset").

        Returns the number of codes reset. Every process draws the same replacement rows from rank 0's batch,
        so codebooks stay identical under DDP.
        """
        if not self.use_ema:
            raise RuntimeError("dead-code reset needs EMA usage statistics (use_ema=True)")
        dead = self.ema_cluster_size < threshold
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(dead, src=0)
        num_dead = int(dead.sum())
        if num_dead == 0:
            return 0
        z = z.detach().float()
        choice = torch.randint(0, z.shape[0], (num_dead,), device=z.device)
        replacement = z[choice]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(replacement, src=0)
        self.weight.data[dead] = replacement
        self.ema_embed_sum[dead] = replacement
        self.ema_cluster_size[dead] = 1.0
        return num_dead


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gumbel(0, 1) noise -log(-log U), U ~ Uniform(0, 1) (about 4x faster on CPU than -log of Exp(1))."""
    uniform = torch.empty_like(like).uniform_(generator=generator)
    return uniform.clamp_min_(torch.finfo(like.dtype).tiny).log_().neg_().log_().neg_()


def _sq_logits(z: torch.Tensor, codebook: torch.Tensor, inv_two_var: torch.Tensor) -> torch.Tensor:
    """-||z_i - b_k||^2 / (2 s^2) up to a per-row constant, in one matmul: (2 z.b_k - |b_k|^2) / (2 s^2).

    The dropped -|z_i|^2 / (2 s^2) is constant along each row, so softmax, log-softmax, the entropy and the
    argmax are unchanged, and so are all gradients (every row of d(loss)/d(logits) sums to zero, see backward).
    """
    scaled = z * (2.0 * inv_two_var)  # (n, d): the scalar is folded into the small operand
    return torch.addmm(codebook.pow(2).sum(-1).mul_(-inv_two_var), scaled, codebook.t())


class _StochasticQuantize(torch.autograd.Function):
    """SQ of rows z against a codebook, memory-lean (eq. 2 + Gumbel-softmax, appendix E).

    logits = -||z - b_k||^2 / (2 s^2),   s^2 = exp(log_variance)
    entropy = H(softmax(logits))                     (per row)
    relaxed: w = softmax((logits + g) / tau), z_q = w @ B   (g ~ Gumbel(0, 1))
    argmax:  z_q = B[argmax logits];  sample: z_q = B[argmax (logits + g)]

    Rows are processed in chunks of at most ``max_chunk_elements`` logits. For backward it keeps the relaxed
    weights w and, when all rows fit in one chunk, the log-probabilities; otherwise the log-probabilities are
    recomputed chunk by chunk, so the saved state is at most one N x K block plus one chunk. A plain autograd
    graph keeps distances, logits, log-probabilities, probabilities, noise and weights alive (about 10 x N x K).
    """

    @staticmethod
    def forward(ctx, z, codebook, log_variance, temperature, mode, generator, max_chunk_elements):
        num_rows, num_codes = z.shape[0], codebook.shape[0]
        step = _rows_per_chunk(num_codes, max_chunk_elements)
        inv_two_var = 0.5 * torch.exp(-log_variance)
        single_chunk = step >= num_rows
        indices, entropies, quantized, saved_log_probs = [], [], [], []
        # relaxed weights: one chunk's softmax is kept as is; several chunks fill one preallocated block
        weights = z.new_empty(num_rows, num_codes) if mode == "relaxed" and not single_chunk else None
        for start in range(0, num_rows, step):
            logits = _sq_logits(z[start : start + step], codebook, inv_two_var)  # (n, K)
            log_probs = torch.log_softmax(logits, dim=-1)
            # H = -sum_k p_k log p_k, one fused pass for the product and the sum
            entropies.append(torch.linalg.vecdot(log_probs.exp(), log_probs).neg_())
            # The hard index is the mode of P-hat (nearest code), except when sampling.
            index = log_probs.argmax(-1)
            if mode != "argmax":
                perturbed = logits.add_(gumbel_noise(logits, generator))
                if mode == "sample":
                    index = perturbed.argmax(-1)
                else:
                    w = torch.softmax(perturbed.div_(temperature), dim=-1)
                    if single_chunk:
                        weights = w
                    else:
                        weights[start : start + step] = w
                    quantized.append(w @ codebook)
            if mode != "relaxed":
                quantized.append(codebook[index])
            indices.append(index)
            if single_chunk and ctx.needs_input_grad[0:3] != (False, False, False):
                saved_log_probs.append(log_probs)
            del logits, log_probs

        def cat(parts):
            return parts[0] if len(parts) == 1 else torch.cat(parts)

        indices, entropy, quantized = cat(indices), cat(entropies), cat(quantized)
        ctx.mode = mode
        ctx.temperature = temperature
        ctx.step = step
        ctx.save_for_backward(
            z,
            codebook,
            log_variance,
            indices,
            entropy,
            weights,
            saved_log_probs[0] if saved_log_probs else None,
        )
        ctx.mark_non_differentiable(indices)
        return quantized, indices, entropy

    @staticmethod
    def backward(ctx, grad_quantized, grad_indices, grad_entropy):
        z, codebook, log_variance, indices, entropy, weights, saved_log_probs = ctx.saved_tensors
        inv_two_var = 0.5 * torch.exp(-log_variance)
        grad_codebook = torch.zeros_like(codebook)
        if grad_quantized is None:
            grad_quantized = torch.zeros(z.shape[0], codebook.shape[1], dtype=z.dtype, device=z.device)
        if grad_entropy is None:
            grad_entropy = torch.zeros_like(entropy)
        if ctx.mode != "relaxed":
            # Hard codes: gradient reaches the selected codes only (no path through argmax).
            grad_codebook.index_add_(0, indices, grad_quantized)
        grad_z_parts = []
        grad_logits_dot_log_probs = torch.zeros_like(log_variance)
        for start in range(0, z.shape[0], ctx.step):
            rows = slice(start, start + ctx.step)
            z_rows = z[rows]
            if saved_log_probs is not None:
                log_probs = saved_log_probs
            else:
                log_probs = torch.log_softmax(_sq_logits(z_rows, codebook, inv_two_var), dim=-1)
            # dH/dlogits = -p (log p + H)
            grad_logits = torch.add(log_probs, entropy[rows].unsqueeze(-1))
            grad_logits.mul_(log_probs.exp()).mul_(-grad_entropy[rows].unsqueeze(-1))
            if ctx.mode == "relaxed":
                w = weights[rows]
                grad_codebook.addmm_(w.t(), grad_quantized[rows])
                grad_w = grad_quantized[rows] @ codebook.t()  # (n, K)
                # softmax Jacobian w * (g - <g, w>), divided by the Gumbel-softmax temperature
                grad_w.sub_(torch.linalg.vecdot(grad_w, w).unsqueeze(-1))
                grad_logits.addcmul_(grad_w, w, value=1.0 / ctx.temperature)
                del grad_w
            # Every row of grad_logits sums to zero (softmax and entropy are shift-invariant), so any per-row
            # constant in the logits drops out of the sums below: logits can be replaced by log p, and the
            # |z|^2 term of the distances contributes nothing to grad_z.
            # logits = -d / (2 s^2): d(logits)/d(log s^2) = -logits
            grad_logits_dot_log_probs += torch.dot(grad_logits.flatten(), log_probs.flatten())
            del log_probs
            # logits = (2 z.b - |b|^2) / (2 s^2) (+ row constant)
            scale = 2.0 * inv_two_var
            grad_z_parts.append((grad_logits @ codebook).mul_(scale))
            grad_codebook += scale * (grad_logits.t() @ z_rows - codebook * grad_logits.sum(0).unsqueeze(-1))
            del grad_logits
        grad_z = grad_z_parts[0] if len(grad_z_parts) == 1 else torch.cat(grad_z_parts)
        return grad_z, grad_codebook, -grad_logits_dot_log_probs, None, None, None, None


_CALIBRATION_ROWS = 4096


@torch.no_grad()
def calibrate_log_variance(layer, rows: list[torch.Tensor], codebooks: list[torch.Tensor],
                           entropy_fraction: float, iterations: int = 50) -> float:  # fmt: skip
    """Sets ``layer.log_variance`` (one s^2 for independent parts: rows[m] against codebooks[m]) so that the
    summed mean posterior entropy equals ``entropy_fraction`` x log prod K_m, by bisection (see
    ``StochasticQuantizer.calibrate_variance``); broadcast from rank 0. Returns the new s^2."""
    if not 0.0 < entropy_fraction < 1.0:
        raise ValueError(f"entropy_fraction must be in (0, 1), got {entropy_fraction}")
    keep = None
    if rows[0].shape[0] > _CALIBRATION_ROWS:  # a mean entropy needs few rows; keeps the (N, K) blocks small
        keep = torch.randperm(rows[0].shape[0], device=rows[0].device)[:_CALIBRATION_ROWS]
    distances = []
    with _fp32_no_autocast(rows[0].device):
        for z, codebook in zip(rows, codebooks):
            z = z.detach().float()
            distances.append(squared_distances(z if keep is None else z[keep], codebook.detach().float()))
    target = entropy_fraction * sum(math.log(d.shape[1]) for d in distances)

    def mean_entropy(log_variance: float) -> float:
        total = 0.0
        for block in distances:
            log_probs = torch.log_softmax(block * (-0.5 * math.exp(-log_variance)), dim=-1)
            total += float(-(log_probs.exp() * log_probs).sum(-1).mean())
        return total

    spread = sum(float(d.mean()) for d in distances) / len(distances) + 1e-30
    low, high = math.log(spread) - 40.0, math.log(spread) + 10.0
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        if mean_entropy(middle) < target:
            low = middle
        else:
            high = middle
    log_variance = torch.tensor(0.5 * (low + high), device=rows[0].device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast(log_variance, src=0)
    layer.log_variance.data.fill_(float(log_variance))
    return math.exp(float(log_variance))


def stochastic_quantize(z, codebook, log_variance, temperature, mode, generator):
    """The SQ layer's map (eq. 2 and appendix E's relaxed sample) in float32 with the memory-lean backward:
    (quantized, indices, entropy) of rows z (N, d) against ``codebook`` (K, d) at s^2 = exp(log_variance)."""
    if mode not in ("relaxed", "argmax", "sample"):
        raise ValueError(f"mode must be 'relaxed', 'argmax' or 'sample', got {mode!r}")
    if mode == "relaxed" and not temperature > 0:
        raise ValueError(f"temperature must be > 0 for the relaxed sample, got {temperature}")
    with _fp32_no_autocast(z.device):
        return _StochasticQuantize.apply(z.float(), codebook.float(), log_variance.float(), float(temperature),
                                         mode, generator, _MAX_CHUNK_ELEMENTS)  # fmt: skip


class StochasticQuantizer(nn.Module):
    """Stochastic quantization with a learnable dequantization variance s^2 (eq. 2).

    P-hat(z_i = b_k | z~_i) ∝ exp(-||z~_i - b_k||^2 / (2 s^2)). Training draws a Gumbel-softmax relaxed sample
    at temperature tau (appendix E); evaluation takes the argmax, and ``mode="sample"`` draws a hard sample.
    s^2 = exp(log_variance), trained by gradient ("self-annealing": it falls during training, section 5.3).

    ``codebook``: pass another layer's ``Codebook`` to share it; it is then *not* registered here, so its
    parameters have one owner (tied tensors break ``save_pretrained``).
    """

    stochastic = True  # ResidualQuantizer: the SQ terms (eq. 6 / 14 / 26)

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        init_variance: float = 1.0,
        codebook: Codebook | None = None,
        codebook_init_std: float = 1.0,
    ):
        super().__init__()
        if init_variance <= 0:
            raise ValueError(f"init_variance must be > 0, got {init_variance}")
        if codebook is None:
            self.codebook = Codebook(codebook_size, dim, init_std=codebook_init_std)
        else:
            if codebook.codebook_size != codebook_size or codebook.dim != dim:
                raise ValueError(
                    f"shared codebook is {codebook.codebook_size}x{codebook.dim}, expected {codebook_size}x{dim}"
                )
            self._shared = (codebook,)  # a tuple hides it from nn.Module registration: one owner
        self.log_variance = nn.Parameter(torch.tensor(math.log(init_variance)))

    def get_codebook(self) -> Codebook:
        return self._shared[0] if hasattr(self, "_shared") else self.codebook

    @torch.no_grad()
    def calibrate_variance(self, z: torch.Tensor, entropy_fraction: float, iterations: int = 50) -> float:
        """Sets s^2 so that the mean entropy of P-hat_{s^2}(z_i | z~_i) over the rows z (N, d) equals
        ``entropy_fraction`` x log K, by bisection on log s^2 (the entropy grows monotonically with s^2).

        An initialisation of s^2 relative to the actual spread of the encoder outputs and codes: the objective
        is unchanged. A posterior that starts near uniform carries no information about z, so the decoder learns
        to ignore the layer (posterior collapse); one that starts nearly hard is VQ with a latent term weighted
        1 / (2 s^2), which pulls all inputs onto one code. Returns the new s^2.
        """
        if not 0.0 < entropy_fraction < 1.0:
            raise ValueError(f"entropy_fraction must be in (0, 1), got {entropy_fraction}")
        return calibrate_log_variance(self, [z], [self.get_codebook().weight], entropy_fraction, iterations)

    @property
    def variance(self) -> torch.Tensor:
        return self.log_variance.exp()

    def forward(
        self,
        z: torch.Tensor,
        mode: SQMode = "relaxed",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> QuantizerOutput:
        quantized, indices, entropy = stochastic_quantize(
            z, self.get_codebook().weight, self.log_variance, temperature, mode, generator
        )
        return QuantizerOutput(quantized=quantized, indices=indices, entropy=entropy)


class VectorQuantizer(nn.Module):
    """Nearest-code VQ with the straight-through estimator (VQ-VAE; baselines of eq. 7 and 15).

    ``codebook_update="ema"``: codes follow an EMA of their assigned vectors (decay 0.99) during training;
    ``"loss"``: codes are parameters trained by the codebook loss ||sg[z] - e||^2, which the model adds.
    The commitment loss beta ||z - sg[e]||^2 is the model's, since for residual layers it applies to the
    cumulative sum (eq. 15). ``dead_code_threshold`` > 0 enables code reset (EMA usage below it).
    """

    nearest_code = True  # ResidualQuantizer applies the straight-through estimator and eq. 7 / 15's terms

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        codebook_update: Literal["ema", "loss"] = "ema",
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        codebook: Codebook | None = None,
        codebook_init_std: float = 1.0,
    ):
        super().__init__()
        if codebook_update not in ("ema", "loss"):
            raise ValueError(f"codebook_update must be 'ema' or 'loss', got {codebook_update!r}")
        if dead_code_threshold > 0 and codebook_update != "ema":
            raise ValueError("code reset (dead_code_threshold > 0) needs codebook_update='ema'")
        self.codebook_update = codebook_update
        self.dead_code_threshold = dead_code_threshold
        if codebook is None:
            self.codebook = Codebook(
                codebook_size,
                dim,
                use_ema=codebook_update == "ema",
                ema_decay=ema_decay,
                init_std=codebook_init_std,
            )
        else:
            if codebook.codebook_size != codebook_size or codebook.dim != dim:
                raise ValueError(
                    f"shared codebook is {codebook.codebook_size}x{codebook.dim}, expected {codebook_size}x{dim}"
                )
            self._shared = (codebook,)

    def get_codebook(self) -> Codebook:
        return self._shared[0] if hasattr(self, "_shared") else self.codebook

    def forward(
        self,
        z: torch.Tensor,
        mode: SQMode = "argmax",
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> QuantizerOutput:
        """Nearest code. ``mode``, ``temperature`` and ``generator`` are SQ's; a VQ posterior is deterministic, so
        ``mode="sample"`` is an error and the others are unused."""
        if mode == "sample":
            raise ValueError("mode='sample' needs quantizer='sq'; VQ posteriors are deterministic")
        codebook = self.get_codebook()
        with _fp32_no_autocast(z.device):
            z = z.float()
            indices = codebook.nearest(z)
            # The codes this batch was assigned, looked up *before* the EMA update and any reset moves them.
            # They receive gradient (codebook loss) only when they are parameters.
            quantized = codebook.lookup(indices)
            if self.training and codebook.use_ema:
                codebook.ema_update(z, indices)
                if self.dead_code_threshold > 0:
                    codebook.reset_dead_codes(z, self.dead_code_threshold)
        return QuantizerOutput(quantized=quantized, indices=indices, entropy=torch.zeros_like(z[:, 0]))


QuantizerKind = Literal["sq", "vq", "fsq", "lfq", "gumbel", "pq"]


class ResidualQuantizer(nn.Module):
    """Applies quantizers in turn to the remaining residual (RQ / RSQ, eq. 8-9): target ≈ sum_l Z_l, and owns
    the group's part of the objective (``GroupOutput``): the SQ latent and KL terms (eq. 6 / 14 / 26) or the VQ
    commitment and codebook terms (eq. 7 / 15). A single layer is the one-layer case of the same formulas.
    Layers of ``tokenizer.quantizer_family`` (FSQ, LFQ, Gumbel-VQ; residual FSQ is Mentzer et al.'s RFSQ) carry
    their own straight-through path and terms, which are passed on per layer.

    Works on flat rows (N, d). ``residual_objective`` (SQ): "summed" (eq. 14 / 26) or "per_layer" (eq. 10);
    ``commitment_cost``: beta of eq. 7 / 15 (VQ).
    """

    def __init__(
        self,
        layers: list[StochasticQuantizer] | list[VectorQuantizer],
        residual_objective: Literal["summed", "per_layer"] = "summed",
        commitment_cost: float = 0.25,
    ):
        super().__init__()
        if len(layers) == 0:
            raise ValueError("ResidualQuantizer needs at least one layer")
        if residual_objective not in ("summed", "per_layer"):
            raise ValueError(
                f"residual_objective must be 'summed' or 'per_layer', got {residual_objective!r}"
            )
        self.layers = nn.ModuleList(layers)
        self.stochastic = getattr(layers[0], "stochastic", False)  # SQ, product SQ: eq. 6 / 14 / 26 here
        self.nearest_code = getattr(
            layers[0], "nearest_code", False
        )  # VQ, PQ: straight-through, eq. 7 / 15 here
        self.residual_objective = residual_objective
        self.commitment_cost = commitment_cost

    @classmethod
    def build(
        cls,
        kind: QuantizerKind,
        codebook_sizes: list[int],
        dim: int,
        share_codebook: bool = False,
        residual_objective: Literal["summed", "per_layer"] = "summed",
        commitment_cost: float = 0.25,
        **quantizer_kwargs,
    ) -> ResidualQuantizer:
        """Builds L layers of ``kind``; with ``share_codebook`` (SQ, VQ) all depths use the first layer's
        codebook. ``quantizer_kwargs`` go to each layer's constructor."""
        from tokenizer.quantizer_family import (
            FiniteScalarQuantizer,
            GumbelQuantizer,
            LookupFreeQuantizer,
            ProductQuantizer,
            StochasticProductQuantizer,
        )

        groups = quantizer_kwargs.pop("groups", 1) if kind == "sq" else 1  # SQ with product codebooks
        if groups > 1 and share_codebook:
            raise ValueError(f"share_codebook is not available with product codebooks (sq_groups={groups})")

        if share_codebook and len(set(codebook_sizes)) != 1:
            raise ValueError(f"a shared codebook needs equal codebook sizes, got {codebook_sizes}")
        if share_codebook and kind not in ("sq", "vq"):
            raise ValueError(
                f"share_codebook applies to learned codebooks of SQ and VQ, not quantizer={kind!r}"
            )
        layers: list = []
        for size in codebook_sizes:
            if groups > 1:
                layers.append(StochasticProductQuantizer(size, dim, groups, **quantizer_kwargs))
            elif kind in ("sq", "vq"):
                shared = layers[0].get_codebook() if (share_codebook and layers) else None
                layer_cls = StochasticQuantizer if kind == "sq" else VectorQuantizer
                layers.append(layer_cls(size, dim, codebook=shared, **quantizer_kwargs))
            elif kind == "fsq":
                layer = FiniteScalarQuantizer(dim=dim, **quantizer_kwargs)
                if layer.codebook_size != size:
                    raise ValueError(
                        f"FSQ's codebook size is prod(fsq_levels) = {layer.codebook_size} "
                        f"({layer.levels_list}); codebook_sizes says {size}: make them equal"
                    )
                layers.append(layer)
            elif kind == "lfq":
                layers.append(LookupFreeQuantizer(size, dim, **quantizer_kwargs))
            elif kind == "gumbel":
                layers.append(GumbelQuantizer(size, dim, **quantizer_kwargs))
            elif kind == "pq":
                layers.append(ProductQuantizer(size, dim, **quantizer_kwargs))
            else:
                raise ValueError(f"quantizer must be one of {list(QuantizerKind.__args__)}, got {kind!r}")
        return cls(layers, residual_objective, commitment_cost)

    def variances(self) -> torch.Tensor:
        """s_l^2 per layer (SQ); zeros for the other kinds."""
        if not self.stochastic:
            tensors = itertools.chain(self.parameters(), self.buffers())  # FSQ may have buffers only
            return torch.zeros(len(self.layers), device=next(tensors, torch.empty(0)).device)
        return torch.stack([layer.variance for layer in self.layers])

    def forward(
        self,
        target: torch.Tensor,
        init_codebooks: bool = False,
        init_entropy_fraction: float | None = None,
        batch_size: int = 1,
        init_noise: float = 0.0,
        **kwargs,
    ) -> GroupOutput:
        """Quantizes the rows ``target`` (N, d) of ``batch_size`` images; ``kwargs``: ``mode``,
        ``temperature``, ``generator`` of every layer.

        ``init_codebooks``: first set each layer's own codebook from the rows it quantizes (True / "data":
        k-means, "samples": random rows; ``Codebook.init_from_data``; a shared codebook is set once, from the
        first layer's input; ``init_noise``: the std of isotropic Gaussian noise added to the new codes), and with
        ``init_entropy_fraction`` calibrate each SQ layer's s^2 on the same rows
        (``StochasticQuantizer.calibrate_variance``)."""
        outputs = []
        residual = target
        method = "samples" if init_codebooks == "samples" else "kmeans"
        for layer in self.layers:
            if init_codebooks and not hasattr(layer, "_shared"):
                layer.get_codebook().init_from_data(residual, method=method, noise=init_noise)
            if init_codebooks and init_entropy_fraction is not None:
                layer.calibrate_variance(residual, init_entropy_fraction)
            out = layer(residual, **kwargs)
            outputs.append(out)
            residual = residual - out.quantized
        codes = [o.quantized for o in outputs]
        quantized = torch.stack(codes).sum(0)
        zeros = target.new_zeros(len(self.layers), dtype=torch.float32)
        if self.stochastic:
            latent, kl = self._sq_terms(target, codes, outputs, batch_size)
            return GroupOutput(outputs, quantized, latent, kl, zeros, zeros)
        if not self.nearest_code:  # FSQ / LFQ / Gumbel-VQ: the layers' own straight-through and terms
            no_latent = target.new_zeros((), dtype=torch.float32)

            def own(name: str) -> torch.Tensor:
                terms = [getattr(o, name) for o in outputs]
                return torch.stack([t.float() if t is not None else no_latent for t in terms])

            return GroupOutput(
                outputs, quantized, no_latent, own("kl_loss"), own("commitment_loss"), own("codebook_loss")
            )
        if torch.is_grad_enabled():
            quantized = target + (quantized - target).detach()  # straight-through estimator
        commitment, codebook = self._vq_terms(target, codes)
        return GroupOutput(
            outputs, quantized, target.new_zeros((), dtype=torch.float32), zeros, commitment, codebook
        )

    def _sq_terms(self, target, codes, outputs, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent and KL terms of eq. 6 / 14 / 26, per image.

        latent: ||target - sum_l Z_l||^2_F / (2 sum_l s_l^2) (z~ = z-hat); with residual_objective="per_layer",
        the naive eq. 10: sum_l ||residual_l - Z_l||^2 / (2 s_l^2).
        kl: sum_i (log K_l - H(P-hat(z_{l,i} | z~_{l,i}))) per layer, the true discrete KL to the uniform prior.
        """
        variances = self.variances()
        target = target.float()
        if self.residual_objective == "summed" or len(codes) == 1:
            latent = (target - torch.stack(codes).sum(0)).pow(2).sum() / batch_size / (2 * variances.sum())
        else:
            residual, latent = target, 0.0
            for code, variance in zip(codes, variances):
                latent = latent + (residual - code).pow(2).sum() / batch_size / (2 * variance)
                residual = residual - code
        kl = [
            (math.log(layer.get_codebook().codebook_size) - out.entropy).sum() / batch_size
            for out, layer in zip(outputs, self.layers)
        ]
        return latent, torch.stack(kl)

    def _vq_terms(self, target, codes) -> tuple[torch.Tensor, torch.Tensor]:
        """beta ||target - sg[sum_{l' <= l} Z_l']||^2 per layer (eq. 7 for one layer, eq. 15 for residual
        layers), plus ||sg[input_l] - Z_l||^2 when codebooks learn by loss (zeros with EMA codebooks)."""
        target = target.float()
        cumulative = torch.zeros_like(target)
        commitment, codebook = [], []
        for code, layer in zip(codes, self.layers):
            layer_input = (target - cumulative).detach()
            cumulative = cumulative + code
            commitment.append(self.commitment_cost * (target - cumulative.detach()).pow(2).mean())
            if layer.codebook_update == "loss":
                codebook.append((layer_input - code).pow(2).mean())
            else:
                codebook.append(target.new_zeros(()))
        return torch.stack(commitment), torch.stack(codebook)
