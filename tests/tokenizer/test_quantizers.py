import math

import pytest
import torch

from tokenizer import (
    Codebook,
    ResidualQuantizer,
    StochasticQuantizer,
    VectorQuantizer,
    perplexity_from_indices,
)
from tokenizer.quantizers import _StochasticQuantize


def stochastic_quantize_reference(
    z: torch.Tensor,
    codebook: torch.Tensor,
    log_variance: torch.Tensor,
    temperature: float,
    gumbel: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Plain-autograd SQ (the readable definition), used to test the fused version. gumbel=None: argmax."""
    logits = -((z.unsqueeze(1) - codebook.unsqueeze(0)) ** 2).sum(-1) / (2 * log_variance.exp())
    log_probs = torch.log_softmax(logits, -1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    indices = logits.argmax(-1)
    if gumbel is None:
        return codebook[indices], indices, entropy
    weights = torch.softmax((logits + gumbel) / temperature, -1)
    return weights @ codebook, indices, entropy


def _inputs(n=37, k=11, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    codebook = torch.randn(k, d, generator=g, dtype=torch.float64)
    log_var = torch.tensor(math.log(0.7), dtype=torch.float64)
    return z, codebook, log_var


def _gumbel(n, k, seed):
    # The fused kernel draws its noise in one chunk here; reproduce the identical stream.
    g = torch.Generator().manual_seed(seed)
    u = torch.empty(n, k, dtype=torch.float64).uniform_(generator=g)
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))


@pytest.mark.parametrize("mode", ["relaxed", "argmax"])
def test_fused_sq_matches_reference_values_and_gradients(mode):
    z, codebook, log_var = _inputs()
    tau = 0.6
    ref_args = [t.clone().requires_grad_() for t in (z, codebook, log_var)]
    gumbel = _gumbel(z.shape[0], codebook.shape[0], seed=3) if mode == "relaxed" else None
    ref_q, ref_idx, ref_h = stochastic_quantize_reference(*ref_args, tau, gumbel)

    args = [t.clone().requires_grad_() for t in (z, codebook, log_var)]
    gen = torch.Generator().manual_seed(3)
    q, idx, h = _StochasticQuantize.apply(*args, tau, mode, gen, 1 << 24)

    torch.testing.assert_close(q, ref_q, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, ref_h, rtol=1e-10, atol=1e-10)
    assert torch.equal(idx, ref_idx)

    weights_q = torch.randn_like(q)
    weights_h = torch.randn_like(h)
    ((ref_q * weights_q).sum() + (ref_h * weights_h).sum()).backward()
    ((q * weights_q).sum() + (h * weights_h).sum()).backward()
    for got, want in zip(args, ref_args):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-8, atol=1e-10)


def test_fused_sq_chunking_does_not_change_results():
    z, codebook, log_var = _inputs(n=50, k=7)
    outs = []
    for chunk_elements in (7, 3 * 7, 1 << 24):  # 1 row, 3 rows, all rows per chunk
        args = [t.clone().requires_grad_() for t in (z, codebook, log_var)]
        q, _, h = _StochasticQuantize.apply(*args, 1.0, "argmax", None, chunk_elements)
        (q.sum() + h.sum()).backward()
        outs.append((q.detach(), h.detach(), [a.grad for a in args]))
    for q, h, grads in outs[1:]:
        torch.testing.assert_close(q, outs[0][0])
        torch.testing.assert_close(h, outs[0][1])
        for a, b in zip(grads, outs[0][2]):
            torch.testing.assert_close(a, b)


def test_sq_gradcheck_relaxed():
    z, codebook, log_var = _inputs(n=6, k=4, d=3)
    noise_seed = 5

    def fn(z, codebook, log_var):
        gen = torch.Generator().manual_seed(noise_seed)
        q, _, h = _StochasticQuantize.apply(z, codebook, log_var, 0.8, "relaxed", gen, 1 << 24)
        return q, h

    assert torch.autograd.gradcheck(fn, [t.clone().requires_grad_() for t in (z, codebook, log_var)])


def test_sq_relaxed_jacobian_is_the_code_covariance_over_tau_s2():
    """dz_q / dz~ = Cov_w(b) / (tau s^2) under the sample's own weights (benchmarks/encoder_gradients.py,
    docs/sq_vs_vq.md 11e): the decoder's gradient reaches the encoder only where the mixed codes differ."""
    z, codebook, log_var = _inputs(n=5, k=6, d=4)
    tau, seed = 0.7, 9

    def fused(z):
        gen = torch.Generator().manual_seed(seed)
        return _StochasticQuantize.apply(z, codebook, log_var, tau, "relaxed", gen, 1 << 24)[0]

    jacobian = torch.autograd.functional.jacobian(fused, z)  # (n, d, n, d)
    logits = -((z.unsqueeze(1) - codebook.unsqueeze(0)) ** 2).sum(-1) / (2 * log_var.exp())
    weights = torch.softmax((logits + _gumbel(5, 6, seed)) / tau, -1)
    for i in range(z.shape[0]):
        mean = weights[i] @ codebook
        covariance = (weights[i, :, None] * codebook).T @ codebook - torch.outer(mean, mean)
        torch.testing.assert_close(
            jacobian[i, :, i], covariance / (tau * log_var.exp()), rtol=1e-8, atol=1e-12
        )
        others = [j for j in range(z.shape[0]) if j != i]
        assert jacobian[i][:, others].abs().max() == 0  # rows are quantized independently

    # Codes on a line (they differ along the first axis only): no gradient reaches z~ along any other axis.
    line = torch.zeros(6, 4, dtype=torch.float64)
    line[:, 0] = torch.linspace(-1, 1, 6, dtype=torch.float64)
    z_line = z.clone().requires_grad_()
    gen = torch.Generator().manual_seed(seed)
    q = _StochasticQuantize.apply(z_line, line, log_var, tau, "relaxed", gen, 1 << 24)[0]
    (q * torch.randn_like(q)).sum().backward()
    assert z_line.grad[:, 1:].abs().max() < 1e-12 < z_line.grad[:, 0].abs().max()


def test_sq_layer_modes_and_fp32_under_autocast():
    torch.manual_seed(0)
    sq = StochasticQuantizer(16, 8, init_variance=0.5)
    z = torch.randn(20, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sq(z, mode="relaxed", temperature=0.5)
    assert out.quantized.dtype == torch.float32 and out.entropy.dtype == torch.float32
    hard = sq(z, mode="argmax")
    torch.testing.assert_close(hard.quantized, sq.codebook.lookup(hard.indices))
    assert torch.equal(hard.indices, sq.codebook.nearest(z))
    assert ((hard.entropy >= 0) & (hard.entropy <= math.log(16) + 1e-5)).all()
    sample = sq(z, mode="sample", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(sample.quantized, sq.codebook.lookup(sample.indices))
    with pytest.raises(ValueError, match="mode"):
        sq(z, mode="soft")
    with pytest.raises(ValueError, match="temperature"):
        sq(z, temperature=0.0)


def test_sq_relaxed_is_stochastic_and_reproducible_with_a_generator():
    sq = StochasticQuantizer(16, 8, init_variance=4.0)
    z = torch.randn(20, 8)
    a = sq(z, generator=torch.Generator().manual_seed(1)).quantized
    b = sq(z, generator=torch.Generator().manual_seed(1)).quantized
    c = sq(z, generator=torch.Generator().manual_seed(2)).quantized
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def _copy_codebook(weight):
    codebook = Codebook(weight.shape[0], weight.shape[1])
    codebook.weight.data.copy_(weight)
    return codebook


def test_vq_straight_through_inputs_and_ema_update():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 4, codebook_update="ema", ema_decay=0.5)
    z = torch.randn(64, 4)
    before = vq.codebook.weight.detach().clone()
    out = vq(z)
    assert torch.equal(out.indices, _copy_codebook(before).nearest(z))
    # the batch gets the codes it was assigned, as they were before this step's EMA update
    torch.testing.assert_close(out.quantized, before[out.indices])
    assert not torch.equal(before, vq.codebook.weight)
    used = torch.unique(out.indices)
    # with decay 0.5 from one pseudo-observation per code (count 1, sum = the code), a used code moves
    # towards its members' mean
    for k in used.tolist():
        members = z[out.indices == k]
        count = members.shape[0]
        ema_n = 0.5 * 1.0 + 0.5 * count
        ema_sum = 0.5 * before[k] + 0.5 * members.sum(0)
        total = vq.codebook.ema_cluster_size.sum()
        smoothed = (ema_n + 1e-5) / (total + 8 * 1e-5) * total
        torch.testing.assert_close(vq.codebook.weight[k], ema_sum / smoothed, rtol=1e-5, atol=1e-5)
    # codes nobody picked stay where they were (up to the Laplace smoothing), instead of being divided by eps
    unused = torch.ones(8, dtype=torch.bool)
    unused[used] = False
    torch.testing.assert_close(vq.codebook.weight[unused], before[unused], rtol=1e-4, atol=1e-4)
    vq.eval()
    frozen = vq.codebook.weight.detach().clone()
    vq(z)
    assert torch.equal(frozen, vq.codebook.weight)


def test_code_reset_replaces_unused_codes_with_inputs():
    torch.manual_seed(0)
    # EMA counts start at 1 and decay to 0.99 when unused: below a threshold of 1 after one step
    vq = VectorQuantizer(32, 4, dead_code_threshold=1.0)
    z = torch.randn(8, 4) + 100.0  # far from every code: only one code can be nearest
    vq(z)
    weight = vq.codebook.weight
    reset = [k for k in range(32) if any(torch.allclose(weight[k], row) for row in z)]
    assert len(reset) >= 30


def test_residual_quantizer_shared_codebook_has_one_owner():
    rq = ResidualQuantizer.build("sq", [16, 16, 16], 8, share_codebook=True)
    names = [n for n, _ in rq.named_parameters()]
    assert sum("codebook.weight" in n for n in names) == 1
    assert len([n for n in names if "log_variance" in n]) == 3
    assert all(layer.get_codebook() is rq.layers[0].codebook for layer in rq.layers)
    with pytest.raises(ValueError, match="equal codebook sizes"):
        ResidualQuantizer.build("vq", [16, 8], 8, share_codebook=True)


def test_residual_quantizer_reduces_error_with_depth():
    torch.manual_seed(0)
    rq = ResidualQuantizer.build("vq", [64] * 4, 4)
    rq.eval()
    z = torch.randn(256, 4)
    outs = rq(z).layers
    errors, total = [], torch.zeros_like(z)
    for o in outs:
        total = total + o.quantized
        errors.append((z - total).pow(2).mean().item())
    assert errors == sorted(errors, reverse=True)


def test_perplexity_bounds():
    idx = torch.tensor([0, 0, 1, 3])
    p, used = perplexity_from_indices(idx, 5)
    assert 1.0 <= p.item() <= 5.0 and used.item() == 3
    p_uniform, _ = perplexity_from_indices(torch.arange(5), 5)
    torch.testing.assert_close(p_uniform, torch.tensor(5.0))
    p_one, _ = perplexity_from_indices(torch.zeros(9, dtype=torch.long), 5)
    torch.testing.assert_close(p_one, torch.tensor(1.0))


def test_codebook_rejects_bad_sizes():
    with pytest.raises(ValueError, match="codebook_size"):
        Codebook(1, 4)
    with pytest.raises(ValueError, match="init_variance"):
        StochasticQuantizer(4, 4, init_variance=0.0)


def test_codebook_init_std_scales_the_codes():
    torch.manual_seed(0)
    small = Codebook(4096, 16, init_std=0.1)
    torch.testing.assert_close(small.weight.std().item(), 0.1, rtol=0.05, atol=0)
    with pytest.raises(ValueError, match="init_std"):
        Codebook(4, 4, init_std=0.0)


def test_vector_quantizer_uses_codebook_init_std():
    torch.manual_seed(0)
    layer = VectorQuantizer(4096, 16, codebook_init_std=0.1)
    torch.testing.assert_close(layer.codebook.weight.std().item(), 0.1, rtol=0.05, atol=0)


@pytest.mark.parametrize("use_ema", [False, True])
def test_codebook_init_from_data_places_codes_at_kmeans_centroids(use_ema):
    torch.manual_seed(0)
    centres = torch.randn(8, 4) * 10
    z = centres.repeat_interleave(50, 0) + 0.01 * torch.randn(400, 4)  # 8 tight clusters
    codebook = Codebook(8, 4, use_ema=use_ema)
    codebook.init_from_data(z)
    # every cluster gets a code at its mean, up to Lloyd's local optimum on these well-separated clusters
    nearest = torch.cdist(centres, codebook.weight).min(-1).values
    assert (nearest < 0.1).sum() >= 7
    if use_ema:
        torch.testing.assert_close(codebook.ema_embed_sum, codebook.weight.detach())
        assert torch.all(codebook.ema_cluster_size == 1)


def test_codebook_init_from_data_adds_isotropic_noise_reproducibly():
    z = torch.randn(2000, 16) * torch.logspace(0, -3, 16)  # an anisotropic cloud: one direction dominates
    books = []
    for noise in (0.0, 0.1, 0.1):
        torch.manual_seed(0)
        codebook = Codebook(64, 16, use_ema=True)
        torch.manual_seed(1)
        codebook.init_from_data(z, noise=noise)
        books.append(codebook)
    offset = books[1].weight.detach() - books[0].weight.detach()  # same k-means, then the noise
    torch.testing.assert_close(offset.std().item(), 0.1, rtol=0.1, atol=0)
    assert offset.std(0).min() > 0.07  # every direction, the weak ones included
    assert torch.equal(books[1].weight, books[2].weight)  # reproducible from torch's seed
    # EMA restarts from the codes
    torch.testing.assert_close(books[1].ema_embed_sum, books[1].weight.detach())
    with pytest.raises(ValueError, match="noise must be >= 0"):
        books[0].init_from_data(z, noise=-1.0)


def test_codebook_init_from_data_with_fewer_rows_than_codes_gives_distinct_codes():
    torch.manual_seed(0)
    codebook = Codebook(64, 4)
    z = torch.randn(10, 4)
    codebook.init_from_data(z)
    assert torch.unique(codebook.weight.detach(), dim=0).shape[0] == 64
    assert torch.cdist(codebook.weight.detach(), z).min(-1).values.max() < 0.5  # all near a data row
    with pytest.raises(ValueError, match="at least 2"):
        codebook.init_from_data(z[:1])


def test_residual_quantizer_data_init_sets_each_own_codebook_once():
    torch.manual_seed(0)
    group = ResidualQuantizer.build("sq", [16, 16], 4, init_variance=0.01)
    z = torch.randn(300, 4) * 0.01
    group(z, init_codebooks=True)
    codes = [layer.codebook.weight.detach().clone() for layer in group.layers]
    assert codes[0].abs().max() < 0.1  # at the scale of z, not of the N(0, 1) initialisation
    assert codes[1].abs().max() < codes[0].abs().max()  # the second layer fits the smaller residual
    group(z)  # without init_codebooks nothing is re-initialised
    assert all(torch.equal(a, layer.codebook.weight) for a, layer in zip(codes, group.layers))


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.9])
def test_calibrate_variance_hits_the_target_entropy(fraction):
    torch.manual_seed(0)
    layer = StochasticQuantizer(64, 8)
    z = torch.randn(500, 8) * 1e-3  # outputs far smaller than the N(0, 1) codes: a fixed s^2 is meaningless
    layer.get_codebook().init_from_data(z)
    variance = layer.calibrate_variance(z, fraction)
    assert variance == pytest.approx(layer.variance.item(), rel=1e-5)
    entropy = layer(z, mode="argmax").entropy.mean().item()
    assert entropy == pytest.approx(fraction * math.log(64), abs=1e-3)
    with pytest.raises(ValueError, match="entropy_fraction"):
        layer.calibrate_variance(z, 1.0)


def test_codebook_init_from_data_stays_fp32_under_autocast():
    torch.manual_seed(0)
    # four tight clusters 0.1 apart, far from the origin: bf16 distances (|z|^2 ~ 400, ulp 2) cannot tell them apart
    centres = 10 + 0.1 * torch.randn(4, 4)
    z = centres.repeat_interleave(32, 0) + 1e-4 * torch.randn(128, 4)
    codebook = Codebook(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codebook.init_from_data(z)
    assert codebook.weight.dtype == torch.float32
    assert torch.cdist(centres, codebook.weight.detach()).min(-1).values.max() < 0.01


def test_groups_own_their_part_of_the_objective():
    """SQ: latent term ||target - sum Z||^2 / (2 sum s^2) and KL sum (log K - H) per image (eq. 14 / 26);
    VQ: beta ||target - sg[cumulative]||^2 per layer (eq. 15) and no SQ terms."""
    torch.manual_seed(0)
    target, batch = torch.randn(40, 4), 5
    sq = ResidualQuantizer.build("sq", [8, 8], 4, init_variance=0.5).eval()
    out = sq(target, batch_size=batch, mode="argmax")
    total = out.layers[0].quantized + out.layers[1].quantized
    expected = (target - total).pow(2).sum() / batch / (2 * (0.5 + 0.5))
    torch.testing.assert_close(out.latent_loss, expected)
    kl = torch.stack([(math.log(8) - o.entropy).sum() / batch for o in out.layers])
    torch.testing.assert_close(out.kl_losses, kl)
    assert not out.commitment_losses.any() and not out.codebook_losses.any()
    torch.testing.assert_close(out.loss, expected + kl.sum())

    vq = ResidualQuantizer.build("vq", [8, 8], 4, commitment_cost=0.3).eval()
    out = vq(target.requires_grad_(), batch_size=batch)
    first = out.layers[0].quantized
    torch.testing.assert_close(out.commitment_losses[0], 0.3 * (target - first).pow(2).mean())
    assert out.latent_loss == 0 and not out.kl_losses.any()
    out.quantized.sum().backward()  # straight-through: the code sum passes the gradient to the target
    torch.testing.assert_close(target.grad, torch.ones_like(target))
    with pytest.raises(ValueError, match="VQ posteriors are deterministic"):
        vq(target, mode="sample")
