import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from tokenizer import HQVAE

TINY = dict(in_channels=1, hidden_channels=16, embedding_dim=8, num_res_blocks=1, num_stem_downsamples=1)

# The whole family: (name, constructor arguments)
FAMILY = {
    "sqvae2": dict(layers_per_resolution=[1, 1], codebook_sizes=[16, 32]),
    "rsqvae": dict(layers_per_resolution=[3], codebook_sizes=8),
    "rsqvae_shared": dict(layers_per_resolution=[3], codebook_sizes=8, share_codebook=True),
    "hybrid": dict(layers_per_resolution=[2, 1], codebook_sizes=[8, 8, 16]),
    "sq_progressive": dict(layers_per_resolution=[1, 2], codebook_sizes=8, progressive_coding=True),
    "sq_learned_sigma": dict(layers_per_resolution=[1, 1], codebook_sizes=8, decoder_variance="learned"),
    "vqvae2": dict(layers_per_resolution=[1, 1], codebook_sizes=16, quantizer="vq"),
    "vqvae2_reset": dict(
        layers_per_resolution=[1, 1], codebook_sizes=16, quantizer="vq", dead_code_threshold=0.5
    ),
    "vqvae2_loss": dict(
        layers_per_resolution=[1, 1], codebook_sizes=16, quantizer="vq", codebook_update="loss"
    ),
    "rqvae": dict(layers_per_resolution=[3], codebook_sizes=8, quantizer="vq"),
    "rqvae_shared_reset": dict(
        layers_per_resolution=[3],
        codebook_sizes=8,
        quantizer="vq",
        share_codebook=True,
        dead_code_threshold=0.5,
    ),
}


def make(name, **overrides):
    torch.manual_seed(0)
    return HQVAE(**{**TINY, **FAMILY[name], **overrides})


def images(batch=3, height=16, width=16, channels=1, seed=0):
    return torch.rand(batch, channels, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(FAMILY))
def test_family_forward_backward_and_invariants(name):
    model = make(name)
    x = images()
    out = model(x, generator=torch.Generator().manual_seed(0))
    assert out.sample.shape == x.shape
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reached {missing}"
    L = model.num_layers
    for field in ("kl_losses", "commitment_losses", "codebook_losses", "perplexity", "codes_used", "entropy"):
        assert getattr(out, field).shape == (L,)
    assert (out.kl_losses >= 0).all()
    for layer, (idx, k) in enumerate(zip(out.indices, model.codebook_sizes)):
        assert idx.min() >= 0 and idx.max() < k, layer
        assert 1.0 - 1e-5 <= out.perplexity[layer] <= k + 1e-4
        assert 1 <= out.codes_used[layer] <= k


@pytest.mark.parametrize("name", list(FAMILY))
def test_decode_indices_of_encode_equals_eval_reconstruction(name):
    model = make(name).eval()
    x = images()
    with torch.no_grad():
        out = model(x)
        indices = model.encode(x)
        decoded = model.decode_indices(indices)
    for a, b in zip(indices, out.indices):
        assert torch.equal(a, b)
    torch.testing.assert_close(decoded, out.sample, rtol=0, atol=1e-6)
    # looked-up codes equal what the quantizers produced in the eval pass
    with torch.no_grad():
        _, groups = model._infer(x, "argmax", 1.0, None)
    produced = [c for _, codes, _ in groups for c in codes]
    for looked_up, quantized in zip(model.indices_to_codes(indices), produced):
        torch.testing.assert_close(looked_up, quantized, rtol=0, atol=0)


def test_eval_is_deterministic_and_training_is_stochastic_under_a_generator():
    model = make("sqvae2", init_variance=5.0)
    x = images()
    a = model(x, generator=torch.Generator().manual_seed(7)).sample
    b = model(x, generator=torch.Generator().manual_seed(7)).sample
    c = model(x, generator=torch.Generator().manual_seed(8)).sample
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x).sample, model(x).sample, rtol=0, atol=0)


def test_gradients_reach_every_dequantization_variance_and_codebook():
    model = make("hybrid")
    model(images(), generator=torch.Generator().manual_seed(0)).loss.backward()
    for group in model.quantizers:
        for layer in group.layers:
            assert layer.log_variance.grad is not None and layer.log_variance.grad.abs() > 0
            assert layer.get_codebook().weight.grad.abs().sum() > 0
    for module in (model.stem, model.bottom_up, model.decoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("name", ["sqvae2", "rsqvae", "hybrid", "sq_learned_sigma"])
def test_variance_gradients_split_the_total_gradient_of_every_log_variance(name):
    model = make(name)
    out = model(images(), generator=torch.Generator().manual_seed(0))
    split = model.variance_gradients(out)
    assert split["decoder"].shape == split["rate"].shape == (model.num_layers,)
    out.loss.backward()  # the graph was kept
    total = torch.stack([layer.log_variance.grad for group in model.quantizers for layer in group.layers])
    torch.testing.assert_close(split["decoder"] + split["rate"], total, rtol=1e-4, atol=1e-6)
    assert (split["decoder"] != 0).all() and (split["rate"] != 0).all()


def test_objective_is_invariant_to_the_latent_scale_and_relative_variances_read_it():
    """Eq. 14 is unchanged when the encoder's outputs and codes are scaled by c, s^2 by c^2 and the decoder's
    input by 1/c: s^2 alone is not identifiable; s^2 / code spacing is."""
    import copy

    model = make("rsqvae")
    x = images()
    model(x)  # any first-forward initialisation happens here
    scaled, c = copy.deepcopy(model), 3.0
    with torch.no_grad():
        scaled.bottom_up.heads[0].weight.mul_(c)
        scaled.bottom_up.heads[0].bias.mul_(c)
        for layer in scaled.quantizers[0].layers:
            layer.get_codebook().weight.mul_(c)
            layer.log_variance.add_(2 * math.log(c))
        scaled.decoder.net[0].weight.div_(c)
    a = model(x, generator=torch.Generator().manual_seed(1))
    b = scaled(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(b.sample, a.sample, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scaled.dequantization_variances(), c**2 * model.dequantization_variances())
    torch.testing.assert_close(scaled.relative_variances(), model.relative_variances())
    with pytest.raises(ValueError, match="quantizer='sq'"):
        make("rqvae").relative_variances()


def test_variance_gradients_refuse_vq_and_an_evaluation_output():
    with pytest.raises(ValueError, match="quantizer='sq'"):
        vq = make("vqvae2")
        vq.variance_gradients(vq(images()))
    model = make("sqvae2")
    model.eval()
    with torch.no_grad():
        out = model(images())
    with pytest.raises(ValueError, match="before backward"):
        model.variance_gradients(out)


def test_temperature_schedule_follows_the_global_step_and_is_saved(tmp_path):
    model = make("sqvae2", temperature_decay=1e-3, min_temperature=0.1)
    assert model.temperature == 1.0
    model.advance_schedule(1000)
    assert math.isclose(model.temperature, math.exp(-1.0))
    model.advance_schedule(10_000)
    assert model.temperature == 0.1
    model.save_pretrained(tmp_path)
    assert HQVAE.from_pretrained(tmp_path).global_step.item() == 11_000


@pytest.mark.parametrize("name", ["sqvae2", "rsqvae_shared", "hybrid", "rqvae_shared_reset", "vqvae2_loss"])
def test_save_pretrained_round_trip_gives_identical_outputs(tmp_path, name):
    model = make(name)
    model(images(), generator=torch.Generator().manual_seed(0))  # move EMA statistics off their init
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = HQVAE.from_pretrained(tmp_path).eval()
    x = images(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).sample, model(x).sample, rtol=0, atol=0)
        assert all(torch.equal(a, b) for a, b in zip(loaded.encode(x), model.encode(x)))


def test_from_pretrained_in_a_fresh_process(tmp_path):
    model = make("rsqvae_shared").eval()
    model.save_pretrained(tmp_path)
    x = images()
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model.encode(x), tmp_path / "want.pt")
    script = (
        "import torch, sys; from tokenizer import HQVAE; d = sys.argv[1];"
        "m = HQVAE.from_pretrained(d); x = torch.load(d + '/x.pt'); want = torch.load(d + '/want.pt');"
        "assert all(torch.equal(a, b) for a, b in zip(m.encode(x), want))"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True)


# ----------------------------------------------------------------------------------------------------------
# Objectives against hand computation (eval mode: deterministic argmax, so every term is exact)
# ----------------------------------------------------------------------------------------------------------
def _hand_targets_and_codes(model, x):
    """Recomputes the top-down path from the blocks with nearest-code quantization written out by hand."""
    features = model.bottom_up(model.stem(x))
    state, groups, layer = None, [], 0
    for r, count in enumerate(model.config.layers_per_resolution):
        if r == 0:
            target, up = features[0], None
        else:
            up = model.upsamples[r - 1](state)
            target = model.injections[r - 1](features[r], up)
        residual, codes, inputs = target, [], []
        for _ in range(count):
            weight = model._codebook(layer).weight
            rows = residual.permute(0, 2, 3, 1)  # (B, h, w, d)
            dist = ((rows.unsqueeze(-2) - weight) ** 2).sum(-1)  # (B, h, w, K)
            code = weight[dist.argmin(-1)].permute(0, 3, 1, 2)
            inputs.append(residual)
            codes.append(code)
            residual = residual - code
            layer += 1
        total = sum(codes)
        state = total if up is None else up + total
        groups.append((target, inputs, codes))
    return model.decoder(state), groups


def _entropy(rows_map, weight, variance):
    rows = rows_map.permute(0, 2, 3, 1)
    logits = -((rows.unsqueeze(-2) - weight) ** 2).sum(-1) / (2 * variance)
    p = logits.softmax(-1)
    return -(p * logits.log_softmax(-1)).sum(-1)  # (B, h, w)


@pytest.mark.parametrize(
    "name, objective", [("sqvae2", "eq6"), ("rsqvae", "eq14"), ("hybrid", "eq26"), ("rsqvae", "eq10")]
)
def test_sq_objectives_equal_hand_computation(name, objective):
    overrides = {"residual_objective": "per_layer"} if objective == "eq10" else {}
    model = make(name, **overrides).eval()
    x = images(batch=2)
    with torch.no_grad():
        out = model(x)
        recon, groups = _hand_targets_and_codes(model, x)
        B, D = x.shape[0], x[0].numel()
        sigma2 = ((x - recon) ** 2).sum() / (B * D)
        want = D / 2 * torch.log(sigma2) + ((x - recon) ** 2).sum() / B / (2 * sigma2)
        layer = 0
        for target, inputs, codes in groups:
            variances = [model.dequantization_variances()[layer + i] for i in range(len(codes))]
            if objective == "eq10":
                want += sum(((i - c) ** 2).sum() / B / (2 * v) for i, c, v in zip(inputs, codes, variances))
            else:
                want += ((target - sum(codes)) ** 2).sum() / B / (2 * sum(variances))
            for i, v in zip(inputs, variances):
                k = model.codebook_sizes[layer]
                want += (math.log(k) - _entropy(i, model._codebook(layer).weight, v)).sum() / B
                layer += 1
    torch.testing.assert_close(out.sample, recon, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["vqvae2", "rqvae"])
def test_vq_objectives_equal_hand_computation(name):
    model = make(name).eval()
    x = images(batch=2)
    with torch.no_grad():
        out = model(x)
        recon, groups = _hand_targets_and_codes(model, x)
        want = F.mse_loss(recon, x)  # eq. 7 / 15, per element
        for target, _, codes in groups:
            cumulative = 0
            for code in codes:
                cumulative = cumulative + code
                want += 0.25 * F.mse_loss(target, cumulative)
    torch.testing.assert_close(out.loss, want, rtol=1e-5, atol=1e-6)


def test_progressive_coding_sums_every_resolution_prefix():
    model = make("sq_progressive").eval()  # layers_per_resolution [1, 2]: prefixes Z_1 and Z_1:3 (eq. 29)
    x = images()
    with torch.no_grad():
        out = model(x)
        indices = model.encode(x)
        D = x[0].numel()
        assert out.progressive_losses.shape == (2,)
        for term, prefix in zip(out.progressive_losses, (1, 3)):
            recon = model.decode_indices(indices, num_layers=prefix)
            mse = ((x - recon) ** 2).mean()
            torch.testing.assert_close(term, D / 2 * torch.log(mse) + D / 2)
    torch.testing.assert_close(out.reconstruction_loss, out.progressive_losses.sum())


def test_progressive_coding_needs_two_resolutions_and_sq():
    with pytest.raises(ValueError, match="single resolution"):
        HQVAE(**TINY, layers_per_resolution=[3], codebook_sizes=8, progressive_coding=True)
    with pytest.raises(ValueError, match="needs quantizer='sq'"):
        HQVAE(**TINY, layers_per_resolution=[1, 1], quantizer="vq", progressive_coding=True)


def test_decode_from_top_layers_only():
    model = make("rsqvae").eval()
    x = images()
    with torch.no_grad():
        indices = model.encode(x)
        full = model.decode_indices(indices)
        top1_from_all = model.decode_indices(indices, num_layers=1)
        top1_from_one = model.decode_indices(indices[:1], num_layers=1)
    torch.testing.assert_close(top1_from_all, top1_from_one)
    assert not torch.allclose(full, top1_from_all)


def test_non_square_and_rgb_inputs():
    model = HQVAE(**{**TINY, "in_channels": 3, "layers_per_resolution": [1, 1], "codebook_sizes": 8})
    x = torch.rand(2, 3, 16, 24)
    out = model(x)
    assert out.sample.shape == x.shape
    assert [tuple(i.shape) for i in out.indices] == [(2, 4, 6), (2, 8, 12)]
    assert model.latent_shapes(16, 24) == [(4, 6), (8, 12)]


# ----------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------
def test_bad_images_raise_value_errors():
    model = make("sqvae2")
    with pytest.raises(ValueError, match="3 channels, the model expects 1"):
        model(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of 4"):
        model(torch.rand(1, 1, 18, 16))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(torch.rand(1, 16, 16))
    with pytest.raises(ValueError, match=r"B >= 1, got shape \(0, 1, 16, 16\)"):
        model(torch.rand(0, 1, 16, 16))


def test_bad_indices_raise_value_errors():
    model = make("sqvae2").eval()
    idx = model.encode(images())
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\)"):
        model.decode_indices([idx[0] + 16, idx[1]])
    with pytest.raises(ValueError, match="layer 1 have shape"):
        model.decode_indices([idx[0], idx[1][:, :4]])
    with pytest.raises(ValueError, match="indices for 3 layers"):
        model.decode_indices([idx[0], idx[1], idx[1]])
    with pytest.raises(ValueError, match="num_layers must be in"):
        model.decode_indices(idx, num_layers=3)
    with pytest.raises(ValueError, match="integers"):
        model.decode_indices([idx[0].float(), idx[1]])


def test_bad_constructor_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="codebook_sizes has 3 entries"):
        HQVAE(**TINY, layers_per_resolution=[1, 1], codebook_sizes=[8, 8, 8])
    with pytest.raises(ValueError, match="quantizer must be"):
        HQVAE(**TINY, quantizer="opq")
    with pytest.raises(ValueError, match="code reset"):
        HQVAE(**TINY, quantizer="vq", codebook_update="loss", dead_code_threshold=1.0)
    bad = [
        (dict(hidden_channels=-1), "hidden_channels must be >= 1, got -1"),
        (dict(embedding_dim=0), "embedding_dim must be >= 1, got 0"),
        (dict(num_stem_downsamples=-1), "num_stem_downsamples must be >= 0, got -1"),
        (dict(num_res_blocks=-2), "num_res_blocks must be >= 0, got -2"),
        (dict(quantizer="vq", commitment_cost=-0.25), "commitment_cost must be >= 0, got -0.25"),
        (dict(quantizer="vq", dead_code_threshold=-1.0), "dead_code_threshold must be >= 0, got -1.0"),
        (dict(mid_ratio=0.0), "mid_ratio must be > 0, got 0.0"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            HQVAE(**{**TINY, **kwargs})


@pytest.mark.parametrize("name", ["sqvae2", "rsqvae_shared", "vqvae2", "rqvae"])
def test_data_codebook_init_runs_once_at_the_first_training_forward(name):
    model = make(name, codebook_init="data")
    random_codes = [p.detach().clone() for n, p in model.named_parameters() if "codebook" in n]
    model.eval()
    model(images())  # an eval forward does not initialise
    assert all(
        torch.equal(a, p)
        for a, p in zip(random_codes, [p for n, p in model.named_parameters() if "codebook" in n])
    )
    model.train()
    out = model(images())
    data_codes = [p.detach().clone() for n, p in model.named_parameters() if "codebook" in n]
    assert not any(torch.equal(a, b) for a, b in zip(random_codes, data_codes))
    # k-means codes sit among the encoder outputs, so the first layer uses several of them
    assert out.codes_used[0] >= 2
    model(images(seed=1))  # the second training forward does not re-initialise (EMA codebooks still move)
    if FAMILY[name].get("quantizer", "sq") == "sq":
        assert all(
            torch.equal(a, p)
            for a, p in zip(data_codes, [p for n, p in model.named_parameters() if "codebook" in n])
        )


@pytest.mark.parametrize("name", ["sqvae2", "rsqvae_shared", "vqvae2"])
def test_codebook_init_noise_jitters_the_data_codes_of_every_layer(name):
    codes = []
    for noise in (0.0, 0.5):
        torch.manual_seed(0)
        model = make(name, codebook_init="data", codebook_init_noise=noise).train()
        model(images())
        codes.append([p.detach().clone() for n, p in model.named_parameters() if "codebook.weight" in n])
    for plain, noisy in zip(*codes):  # the same k-means codes, then N(0, 0.5^2) in every dimension
        torch.testing.assert_close((noisy - plain).std().item(), 0.5, rtol=0.25, atol=0)
    with pytest.raises(ValueError, match="codebook_init_noise jitters data-initialised codes"):
        make(name, codebook_init_noise=0.1)


def test_data_codebook_init_skips_a_resumed_model():
    model = make("sqvae2", codebook_init="data")
    model.global_step += 5  # a resumed or loaded model
    codes = model.quantizers[0].layers[0].codebook.weight.detach().clone()
    model.train()
    model(images())
    assert torch.equal(codes, model.quantizers[0].layers[0].codebook.weight)


def test_bad_codebook_init_raises():
    with pytest.raises(ValueError, match="codebook_init"):
        make("sqvae2", codebook_init="kmeans")


def test_rate_regime_matches_hand_computation():
    model = make("sqvae2")  # TINY: 1 stem downsample; layers at 4x4 (K=16) and 8x8 (K=32) for 16x16 inputs
    regime = model.rate_regime(16, 16)
    kl_max = 16 * math.log(16) + 64 * math.log(32)
    assert regime["kl_max"] == pytest.approx(kl_max)
    assert regime["half_dim"] == 128
    assert regime["rho"] == pytest.approx(128 / kl_max)


def test_init_entropy_fraction_calibrates_every_sq_layer_at_the_first_training_forward():
    model = make("rsqvae", codebook_init="data", init_entropy_fraction=0.5)
    model.train()
    out = model(images())
    # the relaxed pass reports the entropy of P-hat at the calibrated s^2: half of log K in every layer
    torch.testing.assert_close(out.entropy, torch.full((3,), 0.5 * math.log(8)), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="codebook_init='data'"):
        make("sqvae2", init_entropy_fraction=0.5)
    with pytest.raises(ValueError, match="quantizer='sq'"):
        make("vqvae2", codebook_init="data", init_entropy_fraction=0.5)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        make("sqvae2", codebook_init="data", init_entropy_fraction=1.5)


@pytest.mark.parametrize("name", ["rsqvae", "rqvae"])
def test_rate_warmup_weights_the_rate_terms_in_training_only(name):
    """rate_warmup_steps=T: the training loss is recon + (t + 1) / T x (SQ: latent + KL; VQ: commitment) for
    t < T, then the paper's objective; evaluation always reports the unweighted objective."""
    model = make(name, rate_warmup_steps=4)
    x = images()

    def rate(out):
        return out.latent_losses.sum() + out.kl_losses.sum() + out.commitment_losses.sum()

    for step, weight in ((0, 0.25), (2, 0.75), (3, 1.0), (10, 1.0)):
        model.global_step.fill_(step)
        model.train()
        out = model(x, generator=torch.Generator().manual_seed(0))
        assert rate(out).item() > (1.0 if name == "rsqvae" else 1e-4)
        torch.testing.assert_close(out.loss, out.reconstruction_loss + weight * rate(out))
    model.global_step.zero_()
    model.eval()
    out = model(x)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + rate(out))


@pytest.mark.parametrize("name", ["sqvae2", "vqvae2"])
def test_extra_distortion_joins_the_decoder_term(name):
    """Appendix F.5: a perceptual distortion d_p enters the decoder term beside the squared error (SQ:
    (D/2) log sigma^2 + D/2 with sigma^2 = mse + d_p; VQ: mse + d_p), not as a separate loss."""
    model = make(name).eval()
    x = images(batch=2)
    with torch.no_grad():
        plain = model(x)
        extra = torch.tensor(0.01)
        out = model(x, distortion=lambda reconstruction, reference: extra)
    mse = (x - plain.sample).pow(2).mean()
    D = x[0].numel()
    want = 0.5 * D * torch.log(mse + extra) + 0.5 * D if name == "sqvae2" else mse + extra
    torch.testing.assert_close(out.reconstruction_loss, want)
    torch.testing.assert_close(out.loss - out.reconstruction_loss, plain.loss - plain.reconstruction_loss)


def test_bad_images_are_clear_errors(tmp_path):
    model = make("sqvae2").eval()
    x = images(batch=3)
    x[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match=r"images \[1\] of the batch hold NaN or inf values"):
        model.encode(x)
    with pytest.raises(ValueError, match="images must be a float tensor in \\[0, 1\\], got torch.uint8"):
        model.encode((images(batch=2) * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="images must be a float tensor"):
        model(images(batch=2).numpy())
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'} does not exist"):
        HQVAE.from_pretrained(tmp_path / "missing")
