"""HQ-VAE (Takida et al., TMLR 2024): SQ-VAE-2, RSQ-VAE, their hybrid, and the VQ-VAE-2 / RQ-VAE baselines.

One model class covers the whole family through its constructor (= its config):

- ``layers_per_resolution`` lists, coarsest resolution first, how many top-down layers work at each
  resolution. The first layer of a resolution is the first top-down layer (r = 1) or an *injected* layer
  (Figure 1c); the others are *residual* layers (Figure 1d). ``[1, 1]`` is SQ-VAE-2 / VQ-VAE-2 with two
  resolutions, ``[4]`` is RSQ-VAE / RQ-VAE with four layers, ``[2, 2, 2]`` the hybrid of appendix F.3.
- ``quantizer="sq"`` trains by variational Bayes (eq. 6, 14, 26); ``quantizer="vq"`` is the deterministic
  baseline with EMA codebooks, commitment loss and the straight-through estimator (eq. 7, 15).

Data flow (B = batch, d_b = embedding_dim, (h_r, w_r) the latent size at resolution r):

    x (B, C, H, W) -> stem -> bottom-up -> [H^1 ... H^R]  each (B, d_b, h_r, w_r)
    r = 1:  target_1 = H^1(x);                                     state_1 = Y_1
    r > 1:  U = upsample(state_{r-1}); target_r = inject(H^r, U);  state_r = U + Y_r
    Y_r = sum of the codes of resolution r's layers (residual quantization of target_r)
    x-hat = decoder(state_R)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .blocks import BottomUp, Decoder, InjectionBlock, Stem, Upsample
from .quantizers import GroupOutput, QuantizerKind, ResidualQuantizer, code_spacing, perplexity_from_indices


@dataclass
class HQVAEOutput(BaseOutput):
    """Named output of ``HQVAE.forward``. Per-layer tensors have shape (L,), top layer first. (Fields after
    ``sample`` default to None only so that mapping utilities, e.g. accelerate's fp32 conversion, can rebuild it.)

    sample: reconstruction (B, C, H, W).
    loss: the training objective (per image, averaged over the batch).
    reconstruction_loss: SQ: (D/2) log sigma^2 + ||x - x-hat||^2 / (2 sigma^2); VQ: mean squared error (with a
        ``distortion`` given to ``forward``, e.g. LPIPS, it joins the squared error inside this term).
    latent_losses: SQ: ||target_r - Y_r||^2 / (2 sum_{l in r} s_l^2) per *resolution* (R,); VQ: zeros.
    kl_losses: SQ: discrete KL to the uniform prior per layer, sum_i (log K_l - H_i) >= 0; VQ: zeros.
    commitment_losses / codebook_losses: VQ terms per layer (beta already applied); SQ: zeros.
    progressive_losses: reconstruction loss of each resolution prefix Z_{1:L_r} (eq. 28/29), (R,), when
        progressive coding is on; ``reconstruction_loss`` is then their sum.
    perplexity / codes_used: exp(H) of the batch's hard-code histogram and the distinct codes per layer.
    entropy: mean quantization entropy H(P-hat(z | z~)) per code, per layer (Figure 4b/4d); VQ: zeros.
    variances: s_l^2 per layer (SQ); decoder_variance: sigma^2; temperature: the Gumbel-softmax tau used.
    indices: per-layer hard code indices, each (B, h_l, w_l).
    """

    sample: torch.Tensor
    loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    latent_losses: torch.Tensor | None = None
    kl_losses: torch.Tensor | None = None
    commitment_losses: torch.Tensor | None = None
    codebook_losses: torch.Tensor | None = None
    progressive_losses: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    codes_used: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    variances: torch.Tensor | None = None
    decoder_variance: torch.Tensor | None = None
    temperature: torch.Tensor | None = None
    indices: list[torch.Tensor] | None = None


def _to_rows(feature_map: torch.Tensor) -> torch.Tensor:
    return feature_map.permute(0, 2, 3, 1).reshape(-1, feature_map.shape[1])  # (B*h*w, d)


def _to_map(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    b, d, h, w = like.shape
    return rows.reshape(b, h, w, d).permute(0, 3, 1, 2)  # (B, d, h, w)


class HQVAE(ModelMixin, ConfigMixin):
    """Hierarchically quantized VAE: every variant of the paper through its constructor arguments.

    Args:
        in_channels: image channels (1 or 3; any positive count works).
        hidden_channels: width c of the residual blocks.
        embedding_dim: code dimension d_b (64 in the paper).
        num_res_blocks: ResBlocks per bottom-up resolution and in the decoder.
        mid_ratio: bottleneck ratio c_mid of the ResBlocks (0.5 in the paper).
        num_stem_downsamples: strided convolutions before the finest latent resolution.
        layers_per_resolution: top-down layers per resolution, coarsest first (see module docstring).
        codebook_sizes: K_l per layer (length L), or one int for all layers.
        quantizer: "sq" (HQ-VAE, variational Bayes) or "vq" (VQ-VAE-2 / RQ-VAE baselines); the wider family as
            baselines on the same architecture (``tokenizer.quantizer_family``): "fsq" (finite scalar
            quantization, ``fsq_levels``), "lfq" (lookup-free, K a power of 2), "gumbel" (Gumbel-softmax VQ at
            the same annealed temperature as SQ), "pq" (product quantization, ``pq_groups``). Every kind but
            "sq" trains on the MSE (eq. 7's first term).
        share_codebook: residual layers of a resolution share one codebook (RQ-VAE / RSQ-VAE option).
        codebook_init_std: codes start as N(0, std^2 I). 1.0 is the reference implementations' randn; it
            should match the scale of the encoder outputs, or every output starts far inside the codebook.
        codebook_init: "random" (N(0, codebook_init_std^2 I)), "samples" (K random encoder rows of the first
            training batch, per codebook) or "data": at the first training forward
            (global step 0) every codebook is set to k-means centroids of the rows it quantizes in that batch
            (``Codebook.init_from_data``). The objective is unchanged; it only moves where the codes start, for
            SQ and VQ alike (with random codes far from the encoder outputs, most codes never get posterior
            weight, hence no gradient, and stay dead).
        codebook_init_noise: with codebook_init "data" or "samples", add isotropic Gaussian noise of this
            standard deviation to every initialised code (0: none). The k-means codes of the first batch
            inherit the encoder outputs' anisotropy at initialisation, and SQ's relaxed sample passes the
            decoder's gradient to the encoder only through the covariance of the codes that share a posterior
            (dz_q / dz~ = Cov_w(b) / (tau s^2)), so the direction the codes already spread along grows fastest
            and an injected layer ends one-dimensional; noise of ~0.6 s (0.1 at init_variance 0.03) spreads
            the codes in every direction (measured: 0.05 too little, 0.35 = 2 s lets the posteriors collapse).
            Only where the codes start changes, for SQ and VQ alike (VQ-VAE-2 got worse with it; docs/sq_vs_vq.md
            11e). The scale is relative to s, not to d: 0.1 lifted the bottom layer at d = 16, 64 and 256 (11f).
            It helps only where the k-means codes coincide within a posterior's width (relative_variances() >> 1
            at the first step without noise: 26-162 with K = 512); where k-means already resolves them (RSQ-VAE
            with K = 8 shared, 0.75) it moved the codes off the data and cost 6 % test RMSE on every seed (11g).
        init_entropy_fraction: SQ with codebook_init="data": at the same first training forward, each s_l^2 is
            set so that the batch's mean posterior entropy is this fraction of log K_l (calibrated to the
            actual scale of codes and encoder outputs, which differs by orders of magnitude between data sets
            and layers); ``init_variance`` is then unused. None: s_l^2 = init_variance.
        init_variance: initial s_l^2 (SQ). s^2 moves slowly (Adam changes log s^2 by at most ~lr per step),
            so its initial value *relative to the scale of the codes and encoder outputs* decides short-budget
            behaviour. With codebook_init="data" the codes have the encoder outputs' scale (per-dimension
            spread ~1e-2 at initialisation): s^2 >= 0.3 keeps posteriors near uniform (a layer can stay unused),
            s^2 ~ 1e-4 makes them hard at once and collapses a layer onto one code; 0.01-0.03 worked best on
            Fashion-MNIST (docs/sq_vs_vq.md). With random codes (norm ~8), s^2 ~ 3.
        rate_warmup_steps: 0 (default) is the paper's objective. T > 0 weights the terms that pull the encoder
            onto the codes by (t + 1) / T over the first T training steps: SQ's rate (latent + KL of eq. 6 / 14 /
            26), a KL warm-up as in Bowman et al. (2016) / Sonderby et al. (2016) that *leaves the framework*
            while it lasts (a lower bound only at weight 1); VQ's commitment term (eq. 7 / 15), so a VQ twin can
            get the same schedule; the wider family's own terms. For the start-of-training collapse of SQ at high
            rho (docs/sq_vs_vq.md 11d).
        temperature_decay, min_temperature: tau = max(c_tau, exp(-r t)) with t the global training step
            (appendix E; r = 1e-5 and c_tau = 0 in the paper, tuned for ~1e5+ steps).
        residual_objective: "summed" (eq. 14/26: one error term per resolution with the summed variance) or
            "per_layer" (the naive eq. 10, unstable per the paper; for ablations only).
        decoder_variance: "ml" (closed-form maximum-likelihood sigma^2) or "learned" (a trained log sigma^2).
        progressive_coding: add a reconstruction term for every resolution prefix Z_{1:L_r} (eq. 28 for
            SQ-VAE-2, eq. 29 for the hybrid); needs at least two resolutions.
        commitment_cost: beta of eq. 7/15 (VQ).
        codebook_update: "ema" or "loss" (VQ).
        ema_decay: EMA decay of VQ codebooks (0.99).
        dead_code_threshold: VQ code reset: codes whose EMA count falls below this are re-initialised
            (counts start at 1, so a threshold of 1 resets a code after one step without assignments).
        fsq_levels: FSQ: levels per dimension (e.g. [8, 8, 8] for K = 512); prod must equal each K_l.
        lfq_entropy_weight, lfq_diversity_gamma, lfq_inv_temperature: LFQ's entropy penalty (MAGVIT-v2: 0.1,
            1.0, 100); LFQ's commitment weight is ``commitment_cost``.
        lfq_input_norm: LFQ: normalise each encoder row (zero mean, unit variance over its d values, no affine
            parameters) before the projection to the sign bits, the role of the non-affine GroupNorm that
            MAGVIT-v2's LFQ assumes in the encoder (docs/benchmarks.md: without it the bits freeze).
        lfq_soft_clamp: LFQ: v > 0 bounds the projected values, u <- v tanh(u / v), before the signs (lucidrains'
            ``soft_clamp_input_value``); None (default) leaves them unbounded, held only by the commitment term.
        gumbel_kl_weight: Gumbel-VQ: weight of KL(q || uniform) per code position (5e-4 as in taming).
        pq_groups: product quantization ("pq"): M groups of the code dimensions, each with its own VQ codebook of
            K^(1/M) codes (K must be an M-th power; the VQ options apply to each group).
        sq_groups: product quantization with SQ inside (``quantizer="sq"``): M > 1 groups of the code
            dimensions, each with its own codebook of K^(1/M) codes, one s^2 per layer (the posterior over the
            product codebook factorises; ``tokenizer.quantizer_family.StochasticProductQuantizer``). 1: plain SQ.
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        hidden_channels: int = 128,
        embedding_dim: int = 64,
        num_res_blocks: int = 2,
        mid_ratio: float = 0.5,
        num_stem_downsamples: int = 1,
        layers_per_resolution: list[int] = (1, 1),
        codebook_sizes: list[int] | int = 512,
        quantizer: QuantizerKind = "sq",
        share_codebook: bool = False,
        codebook_init_std: float = 1.0,
        codebook_init: Literal["random", "data", "samples"] = "random",
        codebook_init_noise: float = 0.0,
        init_entropy_fraction: float | None = None,
        init_variance: float = 1.0,
        rate_warmup_steps: int = 0,
        temperature_decay: float = 1e-5,
        min_temperature: float = 0.0,
        residual_objective: Literal["summed", "per_layer"] = "summed",
        decoder_variance: Literal["ml", "learned"] = "ml",
        progressive_coding: bool = False,
        commitment_cost: float = 0.25,
        codebook_update: Literal["ema", "loss"] = "ema",
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.0,
        fsq_levels: list[int] | None = None,
        lfq_entropy_weight: float = 0.1,
        lfq_diversity_gamma: float = 1.0,
        lfq_inv_temperature: float = 100.0,
        lfq_input_norm: bool = False,
        lfq_soft_clamp: float | None = None,
        gumbel_kl_weight: float = 5e-4,
        pq_groups: int = 2,
        sq_groups: int = 1,
    ):
        super().__init__()
        layers_per_resolution = list(layers_per_resolution)
        num_layers = sum(layers_per_resolution)
        if isinstance(codebook_sizes, int):
            codebook_sizes = [codebook_sizes] * num_layers
        codebook_sizes = list(codebook_sizes)
        self._validate_arguments(
            in_channels,
            layers_per_resolution,
            codebook_sizes,
            quantizer,
            residual_objective,
            decoder_variance,
        )
        sizes = dict(hidden_channels=(hidden_channels, 1), embedding_dim=(embedding_dim, 1),
                     num_res_blocks=(num_res_blocks, 0), num_stem_downsamples=(num_stem_downsamples, 0),
                     pq_groups=(pq_groups, 1), sq_groups=(sq_groups, 1))  # fmt: skip
        for name, (value, low) in sizes.items():
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        weights = dict(commitment_cost=commitment_cost, dead_code_threshold=dead_code_threshold,
                       lfq_entropy_weight=lfq_entropy_weight, gumbel_kl_weight=gumbel_kl_weight)  # fmt: skip
        for name, value in weights.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        for name, value in dict(mid_ratio=mid_ratio, codebook_init_std=codebook_init_std).items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if progressive_coding and len(layers_per_resolution) == 1:
            raise ValueError(
                "progressive_coding (eq. 28/29) adds one decoder term per resolution; this model has a single "
                "resolution, so it would change nothing"
            )
        if codebook_init not in ("random", "data", "samples"):
            raise ValueError(f"codebook_init must be 'random', 'data' or 'samples', got {codebook_init!r}")
        if not codebook_init_noise >= 0:
            raise ValueError(f"codebook_init_noise must be >= 0, got {codebook_init_noise}")
        if codebook_init_noise > 0 and codebook_init == "random":
            raise ValueError(
                "codebook_init_noise jitters data-initialised codes: it needs codebook_init 'data' or 'samples' "
                f"(random codes already have codebook_init_std), got codebook_init={codebook_init!r}"
            )
        if init_entropy_fraction is not None:
            if quantizer != "sq" or codebook_init == "random":
                raise ValueError(
                    "init_entropy_fraction calibrates SQ variances on the data-initialised codebook: it needs "
                    f"quantizer='sq' and codebook_init='data', got {quantizer!r} and {codebook_init!r}"
                )
            if not 0.0 < init_entropy_fraction < 1.0:
                raise ValueError(f"init_entropy_fraction must be in (0, 1), got {init_entropy_fraction}")
        if rate_warmup_steps < 0:
            raise ValueError(f"rate_warmup_steps must be >= 0, got {rate_warmup_steps}")
        if progressive_coding and quantizer != "sq":
            raise ValueError("progressive_coding is part of the HQ-VAE objective and needs quantizer='sq'")
        if not 0.0 <= min_temperature <= 1.0 or temperature_decay < 0:
            raise ValueError(
                f"need 0 <= min_temperature <= 1 and temperature_decay >= 0, got {min_temperature}, {temperature_decay}"
            )
        self.num_layers = num_layers
        self.num_resolutions = len(layers_per_resolution)
        self.codebook_sizes = codebook_sizes
        # layer index -> resolution index, e.g. [2, 1] -> [0, 0, 1]
        self.layer_resolution = [r for r, n in enumerate(layers_per_resolution) for _ in range(n)]

        self.stem = Stem(in_channels, hidden_channels, num_stem_downsamples)
        self.bottom_up = BottomUp(
            hidden_channels, embedding_dim, self.num_resolutions, num_res_blocks, mid_ratio
        )
        self.upsamples = nn.ModuleList(
            [Upsample(embedding_dim, hidden_channels, mid_ratio) for _ in range(self.num_resolutions - 1)]
        )
        self.injections = nn.ModuleList(
            [
                InjectionBlock(embedding_dim, hidden_channels, mid_ratio)
                for _ in range(self.num_resolutions - 1)
            ]
        )
        if sq_groups > 1 and quantizer != "sq":
            raise ValueError(
                f"sq_groups={sq_groups} splits SQ codebooks (quantizer='sq'); for VQ inside use quantizer='pq' "
                f"and pq_groups, got quantizer={quantizer!r}"
            )
        if quantizer == "fsq" and not fsq_levels:
            raise ValueError("quantizer='fsq' needs fsq_levels (e.g. [8, 8, 8] for codebook_sizes 512)")
        quantizer_kwargs = {
            "sq": {
                "init_variance": init_variance,
                "codebook_init_std": codebook_init_std,
                "groups": sq_groups,
            },
            "vq": {
                "codebook_init_std": codebook_init_std,
                "codebook_update": codebook_update,
                "ema_decay": ema_decay,
                "dead_code_threshold": dead_code_threshold,
            },
            "fsq": {"levels": list(fsq_levels or [])},
            "lfq": {
                "entropy_weight": lfq_entropy_weight,
                "diversity_gamma": lfq_diversity_gamma,
                "inv_temperature": lfq_inv_temperature,
                "input_norm": lfq_input_norm,
                "soft_clamp": lfq_soft_clamp,
                "commitment_weight": commitment_cost,
            },
            "gumbel": {"kl_weight": gumbel_kl_weight, "codebook_init_std": codebook_init_std},
            "pq": {
                "groups": pq_groups,
                "codebook_init_std": codebook_init_std,
                "codebook_update": codebook_update,
                "ema_decay": ema_decay,
                "dead_code_threshold": dead_code_threshold,
            },
        }[quantizer]
        self.quantizers = nn.ModuleList()
        first = 0
        for count in layers_per_resolution:
            self.quantizers.append(
                ResidualQuantizer.build(
                    quantizer,
                    codebook_sizes[first : first + count],
                    embedding_dim,
                    share_codebook=share_codebook and count > 1,
                    residual_objective=residual_objective,
                    commitment_cost=commitment_cost,
                    **quantizer_kwargs,
                )
            )
            first += count
        self.decoder = Decoder(
            embedding_dim,
            hidden_channels,
            in_channels,
            num_stem_downsamples,  # the state is already at the finest latent resolution
            num_res_blocks,
            mid_ratio,
        )
        if decoder_variance == "learned":
            self.log_decoder_variance = nn.Parameter(torch.zeros(()))
        # Global training step t of the temperature schedule; a buffer so that checkpoints carry it.
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long))
        # codebook_init="data" runs once, at the first training forward of step 0 (a resumed or loaded model
        # has global_step > 0 and keeps its codes).
        self._codebooks_initialized = codebook_init == "random"

    @staticmethod
    def _validate_arguments(
        in_channels, layers_per_resolution, codebook_sizes, quantizer, residual_objective, decoder_variance
    ):
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if not layers_per_resolution or any(n < 1 for n in layers_per_resolution):
            raise ValueError(
                f"layers_per_resolution must be non-empty positive counts, got {layers_per_resolution}"
            )
        if len(codebook_sizes) != sum(layers_per_resolution):
            raise ValueError(
                f"codebook_sizes has {len(codebook_sizes)} entries but layers_per_resolution "
                f"{layers_per_resolution} defines {sum(layers_per_resolution)} layers"
            )
        if quantizer not in get_args(QuantizerKind):
            raise ValueError(f"quantizer must be one of {list(get_args(QuantizerKind))}, got {quantizer!r}")
        if residual_objective not in ("summed", "per_layer"):
            raise ValueError(
                f"residual_objective must be 'summed' or 'per_layer', got {residual_objective!r}"
            )
        if decoder_variance not in ("ml", "learned"):
            raise ValueError(f"decoder_variance must be 'ml' or 'learned', got {decoder_variance!r}")

    # ----------------------------------------------------------------------------------------------------
    # Shapes, schedule, validation
    # ----------------------------------------------------------------------------------------------------
    @property
    def downsample_factor(self) -> int:
        """Total downsampling from the image to the coarsest latent grid."""
        return self.downsample_factor_of(self.config.num_stem_downsamples, self.num_resolutions)

    @staticmethod
    def downsample_factor_of(num_stem_downsamples: int, num_resolutions: int) -> int:
        """2^(num_stem_downsamples + num_resolutions - 1): image sides must be multiples of it."""
        return 2 ** (num_stem_downsamples + num_resolutions - 1)

    def latent_shapes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h_l, w_l) of every layer's code map for an image of the given size, top layer first."""
        self._check_size(height, width)
        top_h, top_w = height // self.downsample_factor, width // self.downsample_factor
        return [(top_h * 2**r, top_w * 2**r) for r in self.layer_resolution]

    def rate_regime(self, height: int, width: int) -> dict[str, float]:
        """Where a run sits on the rate/distortion trade-off of the SQ objective (eq. 6/14/26).

        ``kl_max`` = sum_l d_l log K_l nats per image: the most the discrete KL can cost (deterministic codes).
        ``half_dim`` = D/2: with the ML decoder variance, the decoder term is (D/2) log MSE + const, so halving
        the MSE is worth (D/2) ln 2 nats. ``rho`` = (D/2) / kl_max: when it is small, the ELBO-optimal posterior
        stays soft, since sharper codes cost more KL than the distortion they save.
        """
        kl_max = sum(
            h * w * math.log(k) for (h, w), k in zip(self.latent_shapes(height, width), self.codebook_sizes)
        )
        half_dim = 0.5 * self.config.in_channels * height * width
        return {"half_dim": half_dim, "kl_max": kl_max, "rho": half_dim / kl_max}

    @property
    def temperature(self) -> float:
        """tau = max(c_tau, exp(-r t)) at the current global step (appendix E)."""
        step = float(self.global_step.item())
        return max(self.config.min_temperature, math.exp(-self.config.temperature_decay * step))

    @property
    def rate_weight(self) -> float:
        """The weight of the latent, KL and commitment terms in the training loss: 1 (the paper's objectives),
        except during a ``rate_warmup_steps`` warm-up, where it is (t + 1) / T at global step t (training mode
        only; evaluation always reports the unweighted objective)."""
        warmup = self.config.rate_warmup_steps
        if not warmup or not self.training:
            return 1.0
        return min(1.0, (float(self.global_step.item()) + 1.0) / warmup)

    def advance_schedule(self, num_steps: int = 1) -> None:
        """Advances the global step t of the temperature schedule (call once per optimiser step)."""
        self.global_step += num_steps

    def _check_size(self, height: int, width: int) -> None:
        factor = self.downsample_factor
        if height % factor or width % factor or height < factor or width < factor:
            raise ValueError(
                f"image size {height}x{width} must be a positive multiple of {factor} "
                f"(2^(num_stem_downsamples + num_resolutions - 1)) on both sides"
            )

    def _check_images(self, images: torch.Tensor) -> None:
        if not torch.is_tensor(images) or not images.is_floating_point():
            kind = images.dtype if torch.is_tensor(images) else type(images).__name__
            raise ValueError(
                f"images must be a float tensor in [0, 1], got {kind} (uint8 images: divide by 255)"
            )
        if images.ndim != 4 or images.shape[0] == 0:
            raise ValueError(f"images must be (B, C, H, W) with B >= 1, got shape {tuple(images.shape)}")
        if images.shape[1] != self.config.in_channels:
            raise ValueError(
                f"images have {images.shape[1]} channels, the model expects {self.config.in_channels}"
            )
        self._check_size(images.shape[2], images.shape[3])
        finite = torch.isfinite(images).flatten(1).all(1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten().tolist()
            raise ValueError(f"images {bad[:8]} of the batch hold NaN or inf values")

    # ----------------------------------------------------------------------------------------------------
    # Top-down path
    # ----------------------------------------------------------------------------------------------------
    def _infer(self, images, mode, temperature, generator):
        """Posterior pass: per resolution, (target map, per-layer code maps, the group's ``GroupOutput``, which
        carries its part of the objective)."""
        init = self.training and not self._codebooks_initialized and int(self.global_step) == 0
        if self.training:
            self._codebooks_initialized = True
        fraction = self.config.init_entropy_fraction if init else None
        features = self.bottom_up(self.stem(images))
        state = None
        groups = []
        for resolution, feature in enumerate(features):
            upsampled = None
            if resolution == 0:
                target = feature
            else:
                upsampled = self.upsamples[resolution - 1](state)
                target = self.injections[resolution - 1](feature, upsampled)
            group: GroupOutput = self.quantizers[resolution](
                _to_rows(target),
                self.config.codebook_init if init else False,
                fraction,
                batch_size=images.shape[0],
                init_noise=self.config.codebook_init_noise,
                mode=mode,
                temperature=temperature,
                generator=generator,
            )
            codes = [_to_map(o.quantized, target) for o in group.layers]
            total = _to_map(group.quantized, target)
            state = total if upsampled is None else upsampled + total.to(upsampled.dtype)
            groups.append((target, codes, group))
        return state, groups

    def _state_from_codes(self, codes: list[torch.Tensor | None]) -> torch.Tensor:
        """Top-down state from per-layer code maps (None = a dropped layer, treated as zeros)."""
        state = None
        layer = 0
        for resolution, count in enumerate(self.config.layers_per_resolution):
            present = [c for c in codes[layer : layer + count] if c is not None]
            layer += count
            upsampled = self.upsamples[resolution - 1](state) if resolution > 0 else None
            total = torch.stack(present).sum(0) if present else None
            if upsampled is None:
                state = total
            elif total is None:
                state = upsampled
            else:
                state = upsampled + total.to(upsampled.dtype)
        return state

    # ----------------------------------------------------------------------------------------------------
    # Public API
    # ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(
        self,
        images: torch.Tensor,
        mode: Literal["argmax", "sample"] = "argmax",
        generator: torch.Generator | None = None,
    ) -> list[torch.Tensor]:
        """Per-layer code indices, each (B, h_l, w_l), top layer first.

        ``mode="argmax"`` is the deterministic mode of P-hat (code extraction); ``"sample"`` draws codes from
        P-hat (SQ only).
        """
        self._check_images(images)
        if mode not in ("argmax", "sample"):
            raise ValueError(f"mode must be 'argmax' or 'sample', got {mode!r}")
        if mode == "sample" and self.config.quantizer != "sq":
            raise ValueError("mode='sample' needs quantizer='sq'; VQ posteriors are deterministic")
        _, groups = self._infer(images, mode, 1.0, generator)
        return self._indices(groups)

    @staticmethod
    def _indices(groups) -> list[torch.Tensor]:
        indices = []
        for target, _, group in groups:
            b, _, h, w = target.shape
            indices += [o.indices.reshape(b, h, w) for o in group.layers]
        return indices

    def _codebook(self, layer: int):
        resolution = self.layer_resolution[layer]
        offset = layer - self.layer_resolution.index(resolution)
        return self.quantizers[resolution].layers[offset].get_codebook()

    def indices_to_codes(self, indices: list[torch.Tensor]) -> list[torch.Tensor]:
        """Code vectors (B, d_b, h_l, w_l) for per-layer indices."""
        return [self._codebook(i).lookup(idx).permute(0, 3, 1, 2) for i, idx in enumerate(indices)]

    def _check_indices(self, indices: list[torch.Tensor], num_layers: int) -> None:
        if not isinstance(indices, (list, tuple)) or not indices:
            raise ValueError("indices must be a non-empty list of (B, h_l, w_l) tensors, one per layer")
        if len(indices) not in (num_layers, self.num_layers):
            raise ValueError(
                f"got indices for {len(indices)} layers; expected {self.num_layers} (all) or {num_layers} (num_layers)"
            )
        first = indices[0]
        if first.ndim != 3:
            raise ValueError(f"indices must be (B, h, w) tensors, layer 0 has shape {tuple(first.shape)}")
        height = first.shape[1] * self.downsample_factor
        width = first.shape[2] * self.downsample_factor
        expected = self.latent_shapes(height, width)
        for layer, idx in enumerate(indices):
            if idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise ValueError(f"indices of layer {layer} must be integers, got {idx.dtype}")
            if idx.ndim != 3 or idx.shape[0] != first.shape[0] or tuple(idx.shape[1:]) != expected[layer]:
                raise ValueError(
                    f"indices of layer {layer} have shape {tuple(idx.shape)}, expected "
                    f"({first.shape[0]}, {expected[layer][0]}, {expected[layer][1]})"
                )
            size = self.codebook_sizes[layer]
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= size):
                raise ValueError(
                    f"indices of layer {layer} must lie in [0, {size}), got range "
                    f"[{int(idx.min())}, {int(idx.max())}]"
                )

    def decode_indices(self, indices: list[torch.Tensor], num_layers: int | None = None) -> torch.Tensor:
        """Decodes per-layer indices; with ``num_layers`` = l, only the top l layers (progressive / variable rate)."""
        num_layers = self.num_layers if num_layers is None else num_layers
        if not 1 <= num_layers <= self.num_layers:
            raise ValueError(f"num_layers must be in [1, {self.num_layers}], got {num_layers}")
        self._check_indices(indices, num_layers)
        dtype = next(self.decoder.parameters()).dtype  # codebooks may be kept in fp32 under a bf16 decoder
        codes: list[torch.Tensor | None] = [
            c.to(dtype) for c in self.indices_to_codes([i.long() for i in indices[:num_layers]])
        ]
        codes += [None] * (self.num_layers - num_layers)
        return self.decoder(self._state_from_codes(codes))

    def forward(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        temperature: float | None = None,
        distortion=None,
    ) -> HQVAEOutput:
        """Reconstruction and every loss term. SQ trains on Gumbel-softmax samples at tau (``temperature``
        overrides the schedule) and evaluates with the argmax; VQ always takes the nearest code.

        ``distortion``: an optional ``(reconstruction, images) -> 0-d tensor`` added to the squared error
        inside the decoder term of the full reconstruction (e.g. weighted LPIPS, appendix F.5;
        ``tokenizer.losses.TokenizerLoss``)."""
        self._check_images(images)
        tau = self.temperature if temperature is None else float(temperature)
        mode = "relaxed" if self.training else "argmax"
        state, groups = self._infer(images, mode, tau, generator)
        reconstruction = self.decoder(state)

        extra = None if distortion is None else distortion(reconstruction, images)
        reconstruction_loss, decoder_variance = self.reconstruction_term(images, reconstruction, extra)
        progressive = None
        if self.config.progressive_coding:
            # Eq. 28 (SQ-VAE-2) / eq. 29 (hybrid): one Gaussian decoder term per resolution prefix Z_{1:L_r},
            # each with its own ML variance sigma_r^2 (v_r = 0 as in the paper).
            all_codes = [c for _, codes, _ in groups for c in codes]
            prefix_losses = []
            for prefix in self._resolution_prefixes()[:-1]:
                codes = all_codes[:prefix] + [None] * (self.num_layers - prefix)
                prefix_recon = self.decoder(self._state_from_codes(codes))
                prefix_losses.append(self.reconstruction_term(images, prefix_recon)[0])
            progressive = torch.stack(prefix_losses + [reconstruction_loss])
            reconstruction_loss = progressive.sum()

        # Each resolution's quantizer group returns its own terms (SQ: latent + KL, eq. 6 / 14 / 26; VQ:
        # commitment + codebook, eq. 7 / 15; zeros for the other kind): the objective is their sum.
        group_outputs = [group for _, _, group in groups]
        latent_losses = torch.stack([g.latent_loss for g in group_outputs])
        kl_losses = torch.cat([g.kl_losses for g in group_outputs])
        commitment_losses = torch.cat([g.commitment_losses for g in group_outputs])
        codebook_losses = torch.cat([g.codebook_losses for g in group_outputs])
        # (rate_warmup_steps: the terms pulling the encoder onto the codes are weighted < 1 early in training)
        rate = latent_losses.sum() + kl_losses.sum() + commitment_losses.sum()
        loss = reconstruction_loss + rate * self.rate_weight + codebook_losses.sum()

        indices = self._indices(groups)
        stats = [perplexity_from_indices(idx, k) for idx, k in zip(indices, self.codebook_sizes)]
        outputs = [o for group in group_outputs for o in group.layers]
        return HQVAEOutput(
            sample=reconstruction,
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            latent_losses=latent_losses,
            kl_losses=kl_losses,
            commitment_losses=commitment_losses,
            codebook_losses=codebook_losses,
            progressive_losses=progressive,
            perplexity=torch.stack([p for p, _ in stats]),
            codes_used=torch.stack([u for _, u in stats]),
            entropy=torch.stack([o.entropy.detach().mean() for o in outputs]),
            variances=self.dequantization_variances().detach(),
            decoder_variance=decoder_variance,
            temperature=torch.tensor(tau if self.config.quantizer in ("sq", "gumbel") else 0.0),
            indices=indices,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained``, which also takes a training run folder (it loads ``model/``); a local
        path that does not exist is a ``FileNotFoundError`` naming it (``tokenizer.runs.pretrained_folder``)."""
        from tokenizer.runs import pretrained_folder

        if kwargs.get("subfolder") is None:
            pretrained_model_name_or_path = pretrained_folder(
                pretrained_model_name_or_path, "config.json", "model"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's last weight, where the adaptive GAN weight compares gradient norms."""
        return self.decoder.net[-1].weight

    def _resolution_prefixes(self) -> list[int]:
        """L_r: the number of layers down to the end of each resolution, e.g. [2, 2, 2] -> [2, 4, 6]."""
        return [sum(self.config.layers_per_resolution[: r + 1]) for r in range(self.num_resolutions)]

    def dequantization_variances(self) -> torch.Tensor:
        """s_l^2 per layer (SQ); zeros for VQ."""
        return torch.cat([group.variances() for group in self.quantizers])

    @torch.no_grad()
    def relative_variances(self) -> torch.Tensor:
        """s_l^2 / (median squared distance between neighbouring codes of layer l), per layer (SQ; product
        codebooks: the groups' mean spacing). The scale-free reading of s^2: eq. 6 / 14 / 26 are unchanged when
        the encoder's outputs and the codebooks are scaled by c, every s_l^2 by c^2 and the decoder's input by
        1/c, so s^2 alone can rise while the posterior sharpens (the latent space grew). Falling = sharper."""
        if self.config.quantizer != "sq":
            raise ValueError(f"relative_variances needs quantizer='sq', got {self.config.quantizer!r}")
        ratios = []
        for group in self.quantizers:
            for layer in group.layers:
                books = layer.part_codebooks() if hasattr(layer, "part_codebooks") else [layer.get_codebook()]
                spacing = torch.stack([code_spacing(book.weight) for book in books]).mean()
                ratios.append(layer.variance.detach().float() / spacing)
        return torch.stack(ratios)

    def variance_gradients(self, out: HQVAEOutput) -> dict[str, torch.Tensor]:
        """Which way the objective pushes each s_l^2: d J / d log s_l^2 per layer (L,), split into the decoder
        term ("decoder", eq. 6 / 14's (D/2) log sigma^2 + ||x - f||^2 / (2 sigma^2), LPIPS included) and the
        rate ("rate": the latent terms plus the KL, i.e. -ELBO's code part). Gradient descent lowers s_l^2
        where decoder + rate > 0.

        ``out`` must come from a training-mode forward whose graph is still alive (call before backward); the
        graph is kept. In exact expectation over P-hat the rate part of one layer is
        E[||z~ - z||^2] / (2 s^2) - H(P-hat) + log K = -log((1/K) sum_k exp(-||z~ - b_k||^2 / (2 s^2))),
        which falls monotonically as s^2 grows: the rate always pushes s^2 up (its gradient here is <= 0 up to
        Gumbel noise), and only the decoder term, through the relaxed sample's dependence on s^2, pulls it
        down; s^2 settles where the two balance (docs/sq_vs_vq.md 10). Read its movement against the codes'
        scale (``relative_variances``): the objective is invariant to scaling the latent space."""
        if self.config.quantizer != "sq":
            raise ValueError(f"variance_gradients needs quantizer='sq', got {self.config.quantizer!r}")
        if out.latent_losses is None or not out.loss.requires_grad:
            raise ValueError("variance_gradients needs the output of a training forward, before backward")
        params = [layer.log_variance for group in self.quantizers for layer in group.layers]
        trained = [p for p in params if p.requires_grad]  # frozen s^2 (e.g. a decoder-only stage): zeros
        rate = out.latent_losses.sum() + out.kl_losses.sum()
        split = {}
        for name, term in (("decoder", out.reconstruction_loss), ("rate", rate)):
            grads = iter(())
            if trained and term.requires_grad:
                grads = iter(torch.autograd.grad(term, trained, retain_graph=True, allow_unused=True))
            values = [next(grads) if p.requires_grad else None for p in params]
            split[name] = torch.stack(
                [p.new_zeros(()) if g is None else g.detach() for g, p in zip(values, params)]
            )
        return split

    # ----------------------------------------------------------------------------------------------------
    # Objectives
    # ----------------------------------------------------------------------------------------------------
    def reconstruction_term(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        extra_distortion: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder term of the objective and sigma^2 (detached), per image.

        ``extra_distortion`` (a per-element distortion, e.g. a weighted LPIPS) is added to the mean squared
        error: SQ-VAE uses the distortion d = mse + extra in place of ||x - x-hat||^2 / D (appendix F.5 puts
        LPIPS in place of the squared error inside the same Gaussian term); VQ adds it to the MSE.
        """
        error = (images.float() - reconstruction.float()).pow(2)
        distortion = error.mean()
        if extra_distortion is not None:
            distortion = distortion + extra_distortion.float()
        if self.config.quantizer != "sq":
            # Eq. 7 / 15: ||x - f(Z)||^2, per element (as in the reference VQ-VAE-2 / RQ-VAE code); the same
            # for the FSQ / LFQ / Gumbel-VQ baselines.
            return distortion, distortion.detach()
        dim = error[0].numel()  # D
        if self.config.decoder_variance == "ml":
            # sigma^2 = ||x - x-hat||^2 / D (batch ML estimate, Takida et al. 2022a) substituted into
            # (D/2) log sigma^2 + ||x - x-hat||^2 / (2 sigma^2) = (D/2) log sigma^2 + D/2   (eq. 6, first terms)
            variance = distortion.clamp_min(1e-12)
            return 0.5 * dim * torch.log(variance) + 0.5 * dim, variance.detach()
        variance = self.log_decoder_variance.float().exp()
        per_image = dim * distortion
        return 0.5 * dim * self.log_decoder_variance.float() + per_image / (2 * variance), variance.detach()
