"""The contextual (draft-and-revise) RQ-Transformer: masking, the loss on masked positions only, sampling."""

import pytest
import torch
import torch.nn.functional as F

from prior.contextual import ContextualRQTransformer, DraftAndReviseScheduler
from prior.sampling import mix_guidance


def tiny(num_classes: int = 3) -> ContextualRQTransformer:
    torch.manual_seed(0)
    return ContextualRQTransformer([8, 6, 4], 3, 4, 4, num_classes=num_classes, hidden_size=32, num_heads=2,
                                   spatial_layers=1, depth_layers=1, dropout=0.0)  # fmt: skip


def codes_of(batch: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.stack([torch.randint(0, k, (batch, 4, 4)) for k in (8, 6, 4)], dim=-1)


def test_the_loss_is_the_cross_entropy_of_the_masked_positions_only():
    model, codes = tiny().eval(), codes_of(5)
    mask = torch.zeros(5, 16, dtype=torch.bool)
    mask[:, :6] = True
    out = model(codes, mask, torch.tensor([0, 1, 2, 0, 3]))
    flat = codes.reshape(5, 16, 3)
    manual = torch.stack(
        [F.cross_entropy(lg[mask], flat[..., d][mask]) for d, lg in enumerate(out.logits)]
    ).mean()
    torch.testing.assert_close(out.loss, manual)
    assert [tuple(lg.shape) for lg in out.logits] == [(5, 16, 8), (5, 16, 6), (5, 16, 4)]
    with pytest.raises(ValueError, match="no position is masked"):
        model(codes, torch.zeros(5, 16, dtype=torch.bool))


def test_masked_positions_codes_never_reach_the_context():
    model, codes = tiny().eval(), codes_of(2)
    mask = torch.rand(2, 16, generator=torch.Generator().manual_seed(0)) < 0.5
    flat = codes.reshape(2, 16, 3)
    changed = flat.clone()
    changed[mask] = (changed[mask] + 1) % 4  # new values (still in range for every depth) where masked
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(model.context(flat, mask, labels), model.context(changed, mask, labels))
    assert not torch.allclose(model.context(flat, ~mask, labels), model.context(changed, ~mask, labels))


def test_training_batches_mask_at_least_one_position_and_train():
    model, codes = tiny().train(), codes_of(6)
    batch = model.training_batch(
        list(codes.unbind(-1)), torch.arange(6) % 3, torch.Generator().manual_seed(0)
    )
    assert batch["mask"].shape == (6, 16) and batch["mask"].sum(1).min() >= 1
    out = model(**batch)
    out.loss.backward()
    assert model.mask_embedding.grad is not None and model.heads[2].weight.grad.abs().sum() > 0


def test_sampling_is_deterministic_from_a_generator_and_fills_every_position():
    model = tiny().eval()
    labels = torch.tensor([0, 2])

    def draw(**kwargs):
        return model.sample(
            labels, generator=torch.Generator().manual_seed(3), num_inference_steps=[4, 2], **kwargs
        )

    first, again = draw(guidance_scale=2.0), draw(guidance_scale=2.0)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert [tuple(c.shape) for c in first] == [(2, 4, 4)] * 3
    assert all(int(c.max()) < k for c, k in zip(first, (8, 6, 4)))
    no_revision = model.sample(labels, generator=torch.Generator().manual_seed(3), num_inference_steps=[4, 2],
                               guidance_scale=2.0, scheduler=DraftAndReviseScheduler(num_revisions=0))  # fmt: skip
    assert not all(torch.equal(a, b) for a, b in zip(first, no_revision))  # the revise rounds resample
    assert len(draw(num_levels=2)) == 2


def test_guidance_scale_one_is_the_conditional_model():
    conditional, unconditional = torch.randn(3, 5, 8), torch.randn(3, 5, 8)
    torch.testing.assert_close(mix_guidance(torch.cat([conditional, unconditional]), 3, 1.0), conditional)
    torch.testing.assert_close(mix_guidance(torch.cat([conditional, unconditional]), 3, 0.0), unconditional)


def test_unconditional_prior_and_bad_settings():
    model = tiny(num_classes=0).eval()
    codes = model.sample(
        None, batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=2
    )
    assert codes[0].shape == (2, 4, 4)
    with pytest.raises(ValueError, match="guidance_scale != 1 needs a class-conditional prior"):
        model.sample(None, batch_size=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="condition must be empty"):
        model.sample(None, [torch.zeros(2, 4, 4)], batch_size=2)
    with pytest.raises(ValueError, match=r"T_draft or \[T_draft, T_revise\]"):
        model.sample(None, batch_size=2, num_inference_steps=[2, 2, 2])
    with pytest.raises(ValueError, match="num_revisions >= 0"):
        DraftAndReviseScheduler(num_revisions=-1)
