import math

import pytest
import torch

from prior.logits import filter_logits, sample_logits
from prior.scheduler import MaskedTokenScheduler, mask_ratio, random_training_mask


def test_mask_ratio_endpoints_and_errors():
    for schedule in ("cosine", "linear", "square"):
        assert float(mask_ratio(0.0, schedule)) == pytest.approx(1.0)
        assert float(mask_ratio(1.0, schedule)) == pytest.approx(0.0, abs=1e-12)
    assert float(mask_ratio(0.5)) == pytest.approx(math.cos(math.pi / 4))
    with pytest.raises(ValueError, match="masking schedule"):
        mask_ratio(0.5, "cubic")


def test_training_mask_counts_follow_the_cosine_schedule():
    batch, n = 64, 37
    mask = random_training_mask(batch, n, generator=torch.Generator().manual_seed(3))
    # the same generator draws r first: recompute the expected counts
    r = torch.rand(batch, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    expected = torch.ceil(n * torch.cos(math.pi / 2 * r)).clamp(1, n).long()
    assert torch.equal(mask.sum(1), expected)
    assert mask.sum(1).min() >= 1


def test_num_to_mask_schedule():
    scheduler = MaskedTokenScheduler(mask_token_id=16)
    scheduler.set_timesteps(4)
    n = 64
    unknown = torch.tensor([n])
    counts = []
    for i in range(4):
        count = int(scheduler.num_to_mask(i, n, unknown))
        counts.append(count)
        unknown = torch.tensor([count])
    assert counts == [math.floor(n * math.cos(math.pi / 2 * (i + 1) / 4)) for i in range(3)] + [0]
    # clamped to [1, unknown - 1]
    assert int(scheduler.num_to_mask(0, n, torch.tensor([5]))) == 4
    assert int(scheduler.num_to_mask(2, n, torch.tensor([1]))) == 1
    assert int(scheduler.num_to_mask(2, n, torch.tensor([0]))) == 0


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_step_keeps_known_tokens_and_decides_everything(steps):
    k, batch, n = 10, 3, 20
    scheduler = MaskedTokenScheduler(mask_token_id=k)
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.full((batch, n), k)
    known = torch.rand(batch, n, generator=generator) < 0.3
    values = torch.randint(0, k, (batch, n), generator=generator)
    tokens[known] = values[known]
    for i, t in enumerate(scheduler.timesteps):
        unknown_before = (tokens == k).sum(1)
        logits = torch.randn(batch, n, k, generator=generator)
        out = scheduler.step(logits, t, tokens, generator=generator)
        tokens = out.prev_sample
        assert torch.equal(tokens[known], values[known]), "a known token changed"
        assert torch.equal(out.pred_original_sample[known], values[known])
        assert (out.pred_original_sample < k).all()
        assert torch.equal((tokens == k).sum(1), scheduler.num_to_mask(i, n, unknown_before))
    assert (tokens < k).all(), "every token must be decided after the last step"


def test_step_without_choice_noise_remasks_the_least_confident():
    k, n = 6, 12
    scheduler = MaskedTokenScheduler(mask_token_id=k, choice_temperature=0.0)
    scheduler.set_timesteps(3)
    logits = torch.randn(1, n, k, generator=torch.Generator().manual_seed(1)) * 3
    tokens = torch.full((1, n), k)
    out = scheduler.step(logits, scheduler.timesteps[0], tokens, generator=torch.Generator().manual_seed(2))
    sampled = out.pred_original_sample
    confidence = logits.log_softmax(-1).gather(-1, sampled[..., None])[..., 0]
    masked = out.prev_sample == k
    assert masked.sum() == scheduler.num_to_mask(0, n, torch.tensor([n]))
    assert confidence[masked].max() <= confidence[~masked].min()


def test_choice_noise_scale_is_not_compounded(monkeypatch):
    import prior.scheduler as module

    scheduler = MaskedTokenScheduler(mask_token_id=4, choice_temperature=2.0)
    scheduler.set_timesteps(4)
    assert [scheduler.choice_noise_scale(i) for i in range(4)] == [1.5, 1.0, 0.5, 0.0]
    # the step adds exactly scale x noise: with noise 0, 1, 2, ... by position and flat logits, the
    # confidence order is the position order, so the lowest positions stay masked
    scales = []

    def fake_noise(like, generator=None):
        return torch.arange(like.shape[-1], dtype=like.dtype).expand_as(like).clone()

    real_scale = scheduler.choice_noise_scale

    def spy(i):
        scales.append(real_scale(i))
        return scales[-1]

    monkeypatch.setattr(module, "gumbel_rows", fake_noise)
    monkeypatch.setattr(scheduler, "choice_noise_scale", spy)
    tokens = torch.full((1, 30), 4)
    for t in scheduler.timesteps:
        out = scheduler.step(torch.zeros(1, 30, 4), t, tokens, generator=torch.Generator().manual_seed(0))
        masked = (out.prev_sample == 4).nonzero()[:, 1]
        assert torch.equal(masked, torch.arange(len(masked)))
        tokens = out.prev_sample
    assert scales == [1.5, 1.0, 0.5]


def test_scheduler_errors_and_config_round_trip(tmp_path):
    scheduler = MaskedTokenScheduler(mask_token_id=8, masking_schedule="linear", choice_temperature=3.0)
    with pytest.raises(RuntimeError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 4, 8), 0, torch.full((1, 4), 8))
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="num_inference_steps"):
            scheduler.set_timesteps(bad)
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="model_output"):
        scheduler.step(torch.zeros(1, 5, 8), 0, torch.full((1, 4), 8))
    with pytest.raises(ValueError, match="timestep"):
        scheduler.step(torch.zeros(1, 4, 8), 5, torch.full((1, 4), 8))
    with pytest.raises(ValueError, match="masking schedule"):
        MaskedTokenScheduler(mask_token_id=8, masking_schedule="cubic")
    scheduler.save_pretrained(tmp_path)
    loaded = MaskedTokenScheduler.from_pretrained(tmp_path)
    assert loaded.config.mask_token_id == 8 and loaded.config.masking_schedule == "linear"
    assert loaded.config.choice_temperature == 3.0


def test_filter_logits_top_k_and_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.75)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.85)).tolist() == [[False, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.1)).tolist() == [[False, True, True, True]]
    codes, _ = sample_logits(logits.expand(100, 4), top_k=1, generator=torch.Generator().manual_seed(0))
    assert (codes == 0).all()
    for kwargs in ({"temperature": 0.0}, {"top_k": 0}, {"top_p": 1.5}):
        with pytest.raises(ValueError):
            sample_logits(logits, **kwargs)
