import logging
import warnings

import pytest
import torch

import prior.sampling as sampling
from prior import MaskedTokenScheduler, MaskedTokenTransformer, RQTransformer, sample_masked, sample_rq


def masked_prior(**kwargs) -> MaskedTokenTransformer:
    torch.manual_seed(0)
    defaults = dict(
        codebook_size=16, height=4, width=4, num_classes=5, condition_codebook_sizes=[8],
        condition_shapes=[[2, 2]], hidden_size=32, num_layers=2, num_heads=2, dropout=0.0,
    )  # fmt: skip
    return MaskedTokenTransformer(**{**defaults, **kwargs}).eval()


def rq_prior(**kwargs) -> RQTransformer:
    torch.manual_seed(0)
    defaults = dict(
        codebook_sizes=[8, 6, 5], depth=3, height=3, width=2, num_classes=4, hidden_size=32, num_heads=2,
        spatial_layers=2, depth_layers=2, dropout=0.0,
    )  # fmt: skip
    return RQTransformer(**{**defaults, **kwargs}).eval()


# ------------------------------------------------------------------------------------------------------------
# Masked-token prior
# ------------------------------------------------------------------------------------------------------------
def test_masked_prior_shapes_loss_and_conditioning():
    model = masked_prior()
    codes = torch.randint(0, 16, (3, 4, 4))
    condition = [torch.randint(0, 8, (3, 2, 2))]
    model.train()
    tokens, labels = model.training_inputs(codes, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(0))
    out = model(tokens, labels, condition, labels=codes)
    assert out.logits.shape == (3, 16, 16) and out.loss.ndim == 0 and 0 <= out.accuracy <= 1
    out.loss.backward()
    assert model.condition_embeddings[0].weight.grad is not None
    # the loss only looks at masked positions: changing the targets elsewhere leaves it unchanged
    model.eval()
    other = codes.reshape(3, -1).clone()
    unmasked = tokens != 16
    other[unmasked] = (other[unmasked] + 1) % 16
    a = model(tokens, labels, condition, labels=codes).loss
    b = model(tokens, labels, condition, labels=other.reshape(3, 4, 4)).loss
    assert torch.allclose(a, b)


def test_masked_condition_is_spatially_aligned():
    model = masked_prior()
    condition = torch.randint(0, 8, (2, 2, 2))
    embedded = model.embed_condition([condition])  # (B, 16, d)
    table = model.condition_embeddings[0].weight
    for y in range(4):
        for x in range(4):
            expected = table[condition[:, y // 2, x // 2]]
            assert torch.equal(embedded[:, y * 4 + x], expected)


def test_class_dropout_only_in_training():
    model = masked_prior(class_dropout=0.5)
    codes = torch.randint(0, 16, (400, 4, 4))
    labels = torch.zeros(400, dtype=torch.long)
    model.train()
    _, dropped = model.training_inputs(codes, labels, torch.Generator().manual_seed(0))
    assert 150 < int((dropped == 5).sum()) < 250
    model.eval()
    _, kept = model.training_inputs(codes, labels, torch.Generator().manual_seed(0))
    assert (kept == 0).all()


def test_masked_prior_rejects_bad_inputs():
    model = masked_prior()
    ok = torch.zeros(2, 4, 4, dtype=torch.long)
    cond = [torch.zeros(2, 2, 2, dtype=torch.long)]
    with pytest.raises(ValueError, match="tokens must lie"):
        model(ok + 17, None, cond)
    with pytest.raises(ValueError, match="tokens must be"):
        model(torch.zeros(2, 5, 4, dtype=torch.long), None, cond)
    with pytest.raises(ValueError, match="coarser level"):
        model(ok, None, [])
    with pytest.raises(ValueError, match="condition map 0 must be"):
        model(ok, None, [torch.zeros(2, 4, 4, dtype=torch.long)])
    with pytest.raises(ValueError, match="class labels must lie"):
        model(ok, torch.tensor([0, 6]), cond)
    with pytest.raises(ValueError, match="must divide"):
        masked_prior(condition_shapes=[[3, 3]])


def test_masked_sampling_determinism_guidance_and_errors():
    model = masked_prior()
    scheduler = MaskedTokenScheduler(mask_token_id=16)
    labels = torch.tensor([0, 1, 4])
    cond = [torch.randint(0, 8, (3, 2, 2))]

    def draw(seed, **kwargs):
        return sample_masked(model, scheduler, labels, cond, num_inference_steps=4,
                             generator=torch.Generator().manual_seed(seed), **kwargs)  # fmt: skip

    a, b = (
        draw(0, guidance_scale=3.0, guidance_schedule="linear"),
        draw(0, guidance_scale=3.0, guidance_schedule="linear"),
    )
    assert torch.equal(a, b) and a.shape == (3, 4, 4) and a.max() < 16
    # guidance 0 is unconditional sampling: the same as asking for the null class
    uncond = draw(1, guidance_scale=0.0)
    null = sample_masked(model, scheduler, torch.full((3,), 5), cond, num_inference_steps=4,
                         generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert torch.equal(uncond, null)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        draw(0, guidance_scale=-1.0)
    with pytest.raises(ValueError, match="guidance_schedule"):
        draw(0, guidance_scale=2.0, guidance_schedule="exp")
    with pytest.raises(ValueError, match="num_inference_steps"):
        sample_masked(model, scheduler, labels, cond, num_inference_steps=0)
    with pytest.raises(ValueError, match="mask_token_id"):
        sample_masked(model, MaskedTokenScheduler(mask_token_id=8), labels, cond)
    with pytest.raises(ValueError, match=r"class_labels must be \(3,\) integers, got \(3,\) torch.float32"):
        sample_masked(model, scheduler, torch.tensor([0.0, 1.5, 4.0]), cond)  # not silently truncated


def test_guidance_keeps_the_coarse_condition_in_both_passes(monkeypatch):
    model = masked_prior()
    seen = []
    real_forward = model.forward

    def spy(tokens, class_labels=None, condition=None, **kwargs):
        seen.append((class_labels.clone(), [c.clone() for c in condition]))
        return real_forward(tokens, class_labels, condition, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    cond = [torch.randint(0, 8, (2, 2, 2))]
    sample_masked(model, MaskedTokenScheduler(16), torch.tensor([1, 2]), cond, num_inference_steps=2,
                  guidance_scale=2.0, generator=torch.Generator().manual_seed(0))  # fmt: skip
    labels, condition = seen[0]
    assert labels.tolist() == [1, 2, 5, 5]  # conditional then null class
    assert torch.equal(condition[0], torch.cat([cond[0], cond[0]]))


def test_masked_save_load_round_trip(tmp_path):
    model = masked_prior()
    model.save_pretrained(tmp_path)
    loaded = MaskedTokenTransformer.from_pretrained(tmp_path).eval()
    tokens = torch.randint(0, 17, (2, 4, 4))
    cond = [torch.randint(0, 8, (2, 2, 2))]
    assert torch.equal(model(tokens, None, cond).logits, loaded(tokens, None, cond).logits)
    assert loaded.config.condition_shapes == [[2, 2]]


# ------------------------------------------------------------------------------------------------------------
# RQ-Transformer
# ------------------------------------------------------------------------------------------------------------
def test_rq_forward_is_causal_over_positions_and_depths():
    model = rq_prior().double()
    codes = torch.stack([torch.randint(0, k, (2, 3, 2)) for k in (8, 6, 5)], dim=-1)
    labels = torch.tensor([1, 3])
    base = model(codes, labels)
    assert [tuple(lg.shape) for lg in base.logits] == [(2, 6, 8), (2, 6, 6), (2, 6, 5)]
    t, d = 2, 1  # change the code at position 2 (raster), depth 1
    changed = codes.clone().reshape(2, 6, 3)
    changed[:, t, d] = (changed[:, t, d] + 1) % 6
    out = model(changed.reshape(2, 3, 2, 3), labels)
    for depth, (a, b) in enumerate(zip(base.logits, out.logits)):
        for position in range(6):
            same = torch.allclose(a[:, position], b[:, position])
            may_change = position > t or (position == t and depth > d)
            assert same or may_change, f"logits at ({position}, {depth}) saw a later code"
            if position == t and depth > d:
                assert not same, "depth d+1 must see depth d's code"


def test_rq_kv_cached_sampling_equals_uncached():
    model = rq_prior().double()
    labels = torch.tensor([0, 3, 2])
    for kwargs in (
        {},
        {"guidance_scale": 2.5, "temperature": [1.0, 0.7, 1.3], "top_k": [None, 3, None], "top_p": 0.9},
    ):
        a = sample_rq(model, labels, generator=torch.Generator().manual_seed(5), use_cache=True, **kwargs)
        b = sample_rq(model, labels, generator=torch.Generator().manual_seed(5), use_cache=False, **kwargs)
        assert a.shape == (3, 3, 2, 3) and torch.equal(a, b)


def test_kv_cache_is_passed_by_the_installed_transformers_name_without_deprecation(monkeypatch):
    # transformers 4.x: ``past_key_values=``; 5.x: ``cache=`` (the old name warns, removed in 5.40)
    class OldDecoder(torch.nn.Module):
        def forward(self, inputs_embeds, use_cache=False, past_key_values=None):
            past_key_values.append(inputs_embeds.shape[1])
            return inputs_embeds

    grown = []
    sampling.cached_forward(OldDecoder(), torch.zeros(1, 2, 4), grown)
    assert grown == [2]

    from transformers import DynamicCache

    logged = []
    monkeypatch.setattr(logging.Logger, "warning_once", lambda self, *args, **kw: logged.append(args))
    monkeypatch.setattr(logging.Logger, "warning", lambda self, *args, **kw: logged.append(args))
    model, cache = rq_prior(), DynamicCache()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for length in (3, 1):
            sampling.cached_forward(model.spatial, torch.zeros(2, length, 32), cache)
        sample_rq(model, torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert cache.get_seq_length() == 4, "the cache must grow in place"
    messages = [str(w.message) for w in caught] + [" ".join(map(str, args)) for args in logged]
    assert not [m for m in messages if "deprecat" in m.lower()], messages


def test_rq_sampling_logits_match_teacher_forcing(monkeypatch):
    model = rq_prior().double()
    recorded = []
    real = sampling.sample_logits

    def spy(logits, *args, **kwargs):
        recorded.append(logits.clone())
        return real(logits, *args, **kwargs)

    monkeypatch.setattr(sampling, "sample_logits", spy)
    labels = torch.tensor([2, 1])
    codes = sample_rq(model, labels, generator=torch.Generator().manual_seed(0))
    forced = model(codes, labels).logits
    for i, logits in enumerate(recorded):
        position, depth = divmod(i, 3)
        assert torch.allclose(logits, forced[depth][:, position], atol=1e-9)


def test_rq_errors_and_save_load(tmp_path):
    model = rq_prior()
    with pytest.raises(ValueError, match="codes must be"):
        model(torch.zeros(2, 3, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="codes of depth 2"):
        model(torch.full((2, 3, 2, 3), 5))
    with pytest.raises(ValueError, match="one value or 3"):
        sample_rq(model, torch.tensor([0]), temperature=[1.0, 1.0])
    with pytest.raises(ValueError, match="num_classes=0"):
        sample_rq(rq_prior(num_classes=0), batch_size=2, guidance_scale=2.0)
    model.save_pretrained(tmp_path)
    loaded = RQTransformer.from_pretrained(tmp_path).eval()
    codes = torch.stack([torch.randint(0, k, (2, 3, 2)) for k in (8, 6, 5)], dim=-1)
    assert all(torch.equal(a, b) for a, b in zip(model(codes).logits, loaded(codes).logits))
    a = sample_rq(model, torch.tensor([1]), generator=torch.Generator().manual_seed(0))
    b = sample_rq(loaded, torch.tensor([1]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_gradient_checkpointing_gives_the_same_gradients():
    for build, make_inputs in (
        (masked_prior, lambda m: (torch.randint(0, 17, (2, 4, 4)), None, [torch.randint(0, 8, (2, 2, 2))])),
        (rq_prior, lambda m: (torch.stack([torch.randint(0, k, (2, 3, 2)) for k in (8, 6, 5)], -1),)),
    ):
        grads = []
        for checkpointing in (False, True):
            model = build().train()
            if checkpointing:
                model.enable_gradient_checkpointing()
            torch.manual_seed(1)
            inputs = make_inputs(model)
            out = model(*inputs)
            logits = (
                out.logits
                if isinstance(out.logits, torch.Tensor)
                else torch.cat([x.flatten() for x in out.logits])
            )
            logits.square().mean().backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        assert torch.allclose(grads[0], grads[1], atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# One sample() per prior family
# ------------------------------------------------------------------------------------------------------------
def test_masked_sample_uses_its_own_schedule_and_equals_the_sampling_loop():
    model = masked_prior(masking_schedule="linear")
    labels, cond = torch.tensor([0, 3]), [torch.randint(0, 8, (2, 2, 2))]
    assert model.make_scheduler().config.masking_schedule == "linear"
    assert model.make_scheduler(choice_temperature=1.5).config.choice_temperature == 1.5
    a = model.sample(labels, cond, num_inference_steps=3, generator=torch.Generator().manual_seed(0))
    b = sample_masked(model, MaskedTokenScheduler(16, "linear"), labels, cond, num_inference_steps=3,
                      generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert a.shape == (2, 4, 4) and torch.equal(a, b)


def test_stack_and_rq_share_one_sample_signature():
    from prior import MaskedPriorStack

    top = masked_prior(condition_codebook_sizes=[], condition_shapes=[], height=2, width=2, codebook_size=8)
    stack = MaskedPriorStack.from_priors([top, masked_prior()])
    rq = rq_prior()
    settings = dict(num_inference_steps=[2, 3], guidance_scale=2.0, temperature=[1.0, 0.5], batch_size=2)
    codes = stack.sample(torch.tensor([1, 2]), generator=torch.Generator().manual_seed(0), **settings)
    assert [tuple(c.shape) for c in codes] == [(2, 2, 2), (2, 4, 4)]
    one = stack.sample(
        torch.tensor([1, 2]), num_levels=1, generator=torch.Generator().manual_seed(0), **settings
    )
    # the top level does not depend on the levels below
    assert len(one) == 1 and torch.equal(one[0], codes[0])
    with pytest.raises(ValueError, match="num_inference_steps must be one value or 2"):
        stack.sample(torch.tensor([1]), num_inference_steps=[2, 3, 4])
    with pytest.raises(ValueError, match="num_levels must be an integer in \\[1, 2\\]"):
        stack.sample(torch.tensor([1]), num_levels=3)
    settings["temperature"] = [1.0, 0.5, 1.0]  # one per depth; the masked-prior settings are accepted, unused
    depths = rq.sample(torch.tensor([1, 2]), generator=torch.Generator().manual_seed(0), **settings)
    reference = sample_rq(rq, torch.tensor([1, 2]), guidance_scale=2.0, temperature=[1.0, 0.5, 1.0],
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert len(depths) == 3 and torch.equal(torch.stack(depths, -1), reference)
    assert len(rq.sample(torch.tensor([1]), num_levels=2)) == 2
    with pytest.raises(ValueError, match="condition must be empty"):
        rq.sample(torch.tensor([1]), [torch.zeros(1, 3, 2, dtype=torch.long)])
