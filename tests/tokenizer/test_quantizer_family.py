"""FSQ, LFQ and Gumbel-VQ layers (tokenizer.quantizer_family): codes <-> indices, their terms, gradients, and
every HQVAE layout built from them."""

import math
from pathlib import Path

import pytest
import torch

from tokenizer.model import HQVAE
from tokenizer.quantizer_family import (
    FiniteScalarQuantizer,
    GumbelQuantizer,
    LookupFreeQuantizer,
    ProductQuantizer,
    StochasticProductQuantizer,
)
from tokenizer.quantizers import Codebook, ResidualQuantizer, StochasticQuantizer

ROOT = Path(__file__).parents[2]


@pytest.mark.parametrize("levels", [[8, 5, 5, 5], [3, 4], [4, 4, 4]])
def test_fsq_indices_and_codes_round_trip_and_each_dimension_takes_exactly_its_levels(levels):
    torch.manual_seed(0)
    fsq = FiniteScalarQuantizer(levels, dim=6)
    indices = torch.arange(fsq.codebook_size)
    codes = fsq.code_vectors(indices)
    assert codes.shape == (fsq.codebook_size, len(levels)) and codes.abs().max() <= 1
    assert torch.equal(fsq._indices(codes), indices)
    wide = fsq._scaled(torch.linspace(-20, 20, 4001).unsqueeze(-1).expand(-1, len(levels)))
    assert [len(wide[:, i].unique()) for i in range(len(levels))] == levels  # even levels too (offset)


@pytest.mark.parametrize("levels", [[2, 2, 2], [8, 2], [1, 4], []])
def test_fsq_rejects_levels_below_three_and_names_them(levels):
    # L = 2: the bound's second value needs z < -3.8 (a dead dimension); binary codes are LFQ's job
    with pytest.raises(ValueError, match=r"integers >= 3, got \[.*quantizer='lfq'"):
        FiniteScalarQuantizer(levels, dim=4)


def test_fsq_reaches_every_code_from_unit_gaussian_rows_with_live_gradients():
    torch.manual_seed(0)
    fsq = FiniteScalarQuantizer([3, 4, 8], dim=3)
    z = torch.randn(20000, 3, requires_grad=True)
    codes = fsq._scaled(z)
    codes.sum().backward()
    assert fsq._indices(codes.detach()).unique().numel() == fsq.codebook_size
    assert z.grad.abs().mean() > 0.1


@pytest.mark.parametrize(
    "make", [lambda: FiniteScalarQuantizer([5, 4, 3], dim=8), lambda: LookupFreeQuantizer(16, dim=8)]
)
def test_implicit_codebooks_decode_their_own_indices_and_pass_gradients_straight_through(make):
    torch.manual_seed(0)
    layer = make()
    z = torch.randn(50, 8, requires_grad=True)
    out = layer(z)
    torch.testing.assert_close(out.quantized, layer.get_codebook().lookup(out.indices))
    assert out.indices.min() >= 0 and out.indices.max() < layer.codebook_size
    loss = out.quantized.pow(2).sum() + sum(
        t for t in (out.commitment_loss, out.codebook_loss) if t is not None
    )
    loss.backward()
    assert z.grad.abs().sum() > 0  # straight-through to the encoder
    assert layer.project_in.weight.grad.abs().sum() > 0 and layer.project_out.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="deterministic"):
        layer(z, mode="sample")


def test_lfq_terms_and_the_entropy_penalty_favours_spread_codes():
    lfq = LookupFreeQuantizer(8, dim=3)
    spread = torch.tensor([[1.0, 1, 1], [-1, -1, -1], [1, -1, 1], [-1, 1, -1]]) * 2
    same = spread[:1].expand(4, -1)
    penalty_spread, _ = lfq._entropy_penalty(spread)
    penalty_same, _ = lfq._entropy_penalty(same)
    assert penalty_spread < penalty_same  # diverse batch usage lowers the penalty (MAGVIT-v2 eq. 5)
    out = lfq(spread.clone().requires_grad_())
    assert out.commitment_loss is not None and out.codebook_loss is not None
    with torch.no_grad():
        assert lfq(spread).codebook_loss is None  # evaluation: no terms
    with pytest.raises(ValueError, match="power of 2"):
        LookupFreeQuantizer(12, dim=4)


def test_lfq_input_norm_makes_the_bits_follow_the_rows_not_the_projection_bias():
    torch.manual_seed(0)
    z = 0.1 * torch.randn(256, 64) + 0.2  # encoder-like rows: small spread around an offset
    plain, normed = LookupFreeQuantizer(512, dim=64), LookupFreeQuantizer(512, dim=64, input_norm=True)
    normed.project_in.load_state_dict(plain.project_in.state_dict())  # the same projection
    scaled = 10 * z  # the normalised path does not care about the rows' scale
    torch.testing.assert_close(normed(z).indices, normed(scaled).indices, rtol=0, atol=0)
    assert len(normed(z).indices.unique()) > 4 * len(plain(z).indices.unique())
    assert not list(normed.norm.parameters())  # no affine parameters


def test_lfq_soft_clamp_bounds_the_projection_and_keeps_its_gradient():
    torch.manual_seed(0)
    layer = LookupFreeQuantizer(8, dim=3, soft_clamp=1.0, commitment_weight=0.0)
    z = (1e6 * torch.randn(16, 3)).requires_grad_()  # far beyond any bound
    out = layer(z)
    assert torch.isfinite(out.codebook_loss) and torch.isfinite(out.quantized).all()
    moderate = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    layer(moderate).quantized.sum().backward()
    assert moderate.grad.abs().sum() > 0  # straight through tanh to the encoder
    torch.testing.assert_close(layer(moderate).indices, LookupFreeQuantizer(8, dim=3)(moderate).indices)
    with pytest.raises(ValueError, match="lfq_soft_clamp must be > 0"):
        LookupFreeQuantizer(8, dim=3, soft_clamp=0.0)


def test_gumbel_vq_hard_at_evaluation_relaxed_in_training_with_a_kl_to_uniform():
    torch.manual_seed(0)
    layer = GumbelQuantizer(16, dim=4, kl_weight=1.0)
    z = torch.randn(40, 4, requires_grad=True)
    hard = layer(z, mode="argmax")
    torch.testing.assert_close(hard.quantized, layer.codebook.weight[hard.indices])
    relaxed = layer(z, mode="relaxed", temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(relaxed.quantized, hard.quantized)
    (relaxed.quantized.sum() + relaxed.kl_loss).backward()
    assert layer.to_logits.weight.grad.abs().sum() > 0 and layer.codebook.weight.grad.abs().sum() > 0
    assert z.grad.abs().sum() > 0
    torch.nn.init.zeros_(layer.to_logits.weight)
    torch.nn.init.zeros_(layer.to_logits.bias)
    assert layer(z).kl_loss.abs() < 1e-6  # uniform logits: KL(q || uniform) = 0


def test_product_quantizer_combines_group_indices_and_decodes_them():
    torch.manual_seed(0)
    pq = ProductQuantizer(64, dim=7, groups=2)  # 8 codes per group, dims 4 + 3
    assert pq.split_sizes == [4, 3] and pq.sub_size == 8
    z = torch.randn(30, 7)
    pq.init_from_data(z, method="samples")
    out = pq.eval()(z)  # in training the EMA moves the codes after the lookup
    torch.testing.assert_close(out.quantized, pq.lookup(out.indices))
    assert out.indices.max() < 64
    nearest = [p.get_codebook().nearest(rows) for p, rows in zip(pq.parts, z.split([4, 3], -1))]
    assert torch.equal(out.indices, nearest[0] + 8 * nearest[1])
    with pytest.raises(ValueError, match="K = K_m\\^3"):
        ProductQuantizer(100, dim=8, groups=3)


def test_product_sq_is_sq_over_the_product_codebook():
    """One s^2 for all groups: the factorised posterior is eq. 2's over the K = prod K_m product codes."""
    torch.manual_seed(0)
    spq = StochasticProductQuantizer(64, dim=7, groups=2, init_variance=0.5)  # 8 codes per group, dims 4 + 3
    assert spq.split_sizes == [4, 3] and sum(p.numel() for p in spq.parameters()) == 8 * 7 + 1
    z = torch.randn(50, 7)
    spq.init_from_data(z, method="samples")
    full = StochasticQuantizer(64, 7, init_variance=0.5)
    full.codebook.weight.data.copy_(spq.lookup(torch.arange(64)))  # every product code, by index
    ours, reference = spq(z, mode="argmax"), full(z, mode="argmax")
    assert torch.equal(ours.indices, reference.indices)
    torch.testing.assert_close(ours.entropy, reference.entropy)  # the groups' entropies add up
    torch.testing.assert_close(ours.quantized, full.codebook.weight[reference.indices])
    relaxed = spq(
        z.requires_grad_(), mode="relaxed", temperature=0.5, generator=torch.Generator().manual_seed(1)
    )
    relaxed.quantized.sum().backward()
    assert z.grad is not None and spq.log_variance.grad is not None
    assert all(book.weight.grad is not None for book in spq.codebooks)
    s2 = spq.calibrate_variance(z.detach(), 0.4)
    entropy = spq(z.detach(), mode="argmax").entropy.mean()
    assert s2 == pytest.approx(float(spq.variance.detach())) and float(entropy) == pytest.approx(
        0.4 * math.log(64), rel=1e-3
    )
    group = ResidualQuantizer([spq])
    assert group.stochastic and group(z.detach(), mode="argmax").kl_losses.gt(0).all()  # eq. 6's KL term
    with pytest.raises(ValueError, match="sq_groups must be in"):
        StochasticProductQuantizer(16, dim=1, groups=2)


def test_samples_init_takes_random_rows_of_the_batch():
    torch.manual_seed(0)
    z = torch.randn(40, 3)
    codebook = Codebook(16, 3)
    codebook.init_from_data(z, method="samples")
    assert all((z == code).all(-1).any() for code in codebook.weight)
    small = Codebook(64, 3)
    small.init_from_data(z, method="samples")  # fewer rows than codes: drawn with replacement
    assert all((z == code).all(-1).any() for code in small.weight)
    with pytest.raises(ValueError, match="method must be"):
        codebook.init_from_data(z, method="random")


def test_build_checks_sizes_and_sharing():
    with pytest.raises(ValueError, match=r"prod\(fsq_levels\) = 60"):
        ResidualQuantizer.build("fsq", [64], 8, levels=[5, 4, 3])
    with pytest.raises(ValueError, match="share_codebook applies"):
        ResidualQuantizer.build("lfq", [16, 16], 8, share_codebook=True)
    with pytest.raises(ValueError, match="needs fsq_levels"):
        HQVAE(quantizer="fsq")


KINDS = {
    "fsq": {"quantizer": "fsq", "fsq_levels": [4, 4], "codebook_sizes": 16},
    "lfq": {"quantizer": "lfq", "codebook_sizes": 16},
    "gumbel": {"quantizer": "gumbel", "codebook_sizes": 16, "codebook_init": "data"},
    "pq": {"quantizer": "pq", "pq_groups": 2, "codebook_sizes": 16, "codebook_init": "samples"},
    "sq_product": {
        "quantizer": "sq",
        "sq_groups": 2,
        "codebook_sizes": 16,
        "codebook_init": "data",
        "init_variance": 0.03,
    },
}


@pytest.mark.parametrize("layout", [[1, 1], [3], [2, 1]])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_layout_trains_encodes_decodes_and_round_trips(kind, layout, tmp_path):
    torch.manual_seed(0)
    model = HQVAE(in_channels=1, hidden_channels=16, embedding_dim=8, num_res_blocks=1,
                  num_stem_downsamples=2, layers_per_resolution=layout, **KINDS[kind])  # fmt: skip
    images = torch.rand(4, 1, 16, 16)
    out = model(images)
    assert torch.isfinite(out.loss)
    if kind == "sq_product":  # the SQ ELBO: latent and KL terms per layer
        assert out.kl_losses.gt(0).all() and out.latent_losses.gt(0).all()
    else:
        assert out.reconstruction_loss >= 0  # MSE, not the SQ ELBO
    out.loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "encoder" in n or "stem" in n)
    if kind == "gumbel":
        assert out.kl_losses.gt(0).all() and out.temperature > 0
    if kind == "lfq":
        assert out.codebook_losses.ne(0).all() and out.commitment_losses.gt(0).all()
    model.eval()
    indices = model.encode(images)
    assert len(indices) == sum(layout)
    torch.testing.assert_close(model.decode_indices(indices), model(images).sample)
    model.save_pretrained(tmp_path)
    loaded = HQVAE.from_pretrained(tmp_path).eval()
    assert all(torch.equal(a, b) for a, b in zip(loaded.encode(images), indices))


@pytest.mark.parametrize("name", ["tiny_rfsq", "tiny_rlfq", "tiny_rgumbel", "tiny_rpq", "tiny_rsqpq"])
def test_tiny_configs_train_through_the_trainer(name, idx_dataset, tmp_path):
    import json

    from tokenizer.config import load_config
    from tokenizer.train import TokenizerTrainer, TrainConfig

    config = load_config(TrainConfig, ROOT / "configs" / "tokenizer" / f"{name}.yaml",
                         [f"data.path={idx_dataset}", f"output_dir={tmp_path}", "optimizer.max_steps=3"])  # fmt: skip
    TokenizerTrainer(config).fit()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["rmse"] < 1 and len(metrics["perplexity"]) == 3


def _lfq_worker(rank, world_size, store_path, data, result_path):
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", store=dist.FileStore(store_path, world_size), rank=rank, world_size=world_size
    )
    lfq = LookupFreeQuantizer(8, dim=3)
    shard = data[rank::world_size].clone().requires_grad_()
    penalty, per_row = lfq._entropy_penalty(shard)
    penalty.backward()
    torch.save(
        {"penalty": penalty.detach(), "per_row": per_row.detach().mean(), "grad": shard.grad},
        f"{result_path}.{rank}",
    )
    dist.destroy_process_group()


def test_lfq_batch_entropy_is_over_all_processes(tmp_path):
    """Under DDP the penalty's batch entropy uses the code distribution of every process's rows."""
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    data = torch.randn(16, 3) * 0.05
    mp.spawn(_lfq_worker, args=(2, str(tmp_path / "store"), data, str(tmp_path / "out")), nprocs=2, join=True)
    results = [torch.load(f"{tmp_path / 'out'}.{r}") for r in range(2)]
    single, _ = LookupFreeQuantizer(8, dim=3)._entropy_penalty(data)
    mean_penalty = sum(r["penalty"] for r in results) / 2  # per-row parts average to the global mean
    torch.testing.assert_close(mean_penalty, single)
